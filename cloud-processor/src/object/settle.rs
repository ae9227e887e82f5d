//! Settling a claim once its run is over: released for the next attempt
//! after a failure, abandoned for an object that vanished, quarantined for
//! one that cannot be read or that SQS refused in part, or finished: its
//! counts checked and published, its rejects reported, and its done marker
//! written. A report or marker that cannot be written leaves the lease to
//! expire, and the retry resumes.

use relay_shared::store::ObjectStore;
use tracing::{error, info};

use crate::metrics as m;
use crate::object::claim::{Claim, now_ms};
use crate::object::error::Failure;
use crate::object::lease::MAX_CHECKSUM_FAILURES;
use crate::object::marker::DoneMarker;
use crate::object::plan::Attempt;
use crate::object::processor::Outcome;
use crate::object::provenance::Provenance;
use crate::object::run::Ran;
use crate::object::{canary, reports};
use crate::output::{MessageSink, Route};
use crate::pipeline::rules::RULES;
use crate::pipeline::{Report, Stats, Unreadable};

impl<S: ObjectStore, Q: MessageSink> Attempt<'_, S, Q> {
    /// Settles the claim once the run is over. Whatever fails on the way
    /// (a report, the marker), the claim is released before the error is
    /// returned: the next attempt resumes at once.
    pub(super) async fn settle(
        &self,
        mut claim: Claim<'_, S>,
        ran: Result<Ran, Failure>,
    ) -> Result<Outcome, Failure> {
        let settled = self.conclude(&mut claim, ran).await;
        if settled.is_err() {
            claim.release().await;
        }
        settled
    }

    async fn conclude(
        &self,
        claim: &mut Claim<'_, S>,
        ran: Result<Ran, Failure>,
    ) -> Result<Outcome, Failure> {
        // The run ends with its last message accepted by SQS: the file's
        // latency ends here, not after the marker and the lease's delete.
        let sent_at_ms = now_ms();
        let (report, sent, etag, provenance) = match ran {
            Err(e) => return Err(e),
            Ok(Ran::Missing) => {
                claim.abandon().await;
                return Ok(Outcome::Missing);
            }
            Ok(Ran::Read {
                report,
                sent,
                etag,
                provenance,
            }) => (*report, sent, etag, provenance),
        };
        let mut marker = DoneMarker::new(
            self.owner,
            &self.plan.fingerprint,
            &etag,
            claim.resumed_from(),
        );
        marker.trace_id = provenance.trace_id();
        match report {
            Ok(report) => {
                let outcome = self.finish(claim, marker, &report, sent).await?;
                if matches!(outcome, Outcome::Sent { .. }) && self.plan.canary.is_none() {
                    note_latency(&provenance, sent_at_ms);
                }
                Ok(outcome)
            }
            // The object's stream broke (a network fault), which says nothing
            // about its bytes: retry, resuming after the chunks already sent.
            Err(Unreadable::Io(e)) => Err(Failure::Read {
                sent,
                message: e.to_string(),
            }),
            // Other bytes than S3 stored: read again, unless it kept
            // happening, which is a fact about the object.
            Err(Unreadable::Checksum(e)) => {
                let reads = claim.note_checksum_failure();
                metrics::counter!(m::CHECKSUM_FAILURES).increment(1);
                if reads < MAX_CHECKSUM_FAILURES {
                    return Err(Failure::Checksum {
                        reads,
                        sent,
                        message: e.to_string(),
                    });
                }
                let reason = format!(
                    "its bytes did not match the CRC32C S3 stored with them on {reads} reads: {e}"
                );
                self.quarantine(claim, marker, &reason, sent).await
            }
            Err(unreadable) => {
                let reason = unreadable.to_string();
                self.quarantine(claim, marker, &reason, sent).await
            }
        }
    }

    /// Records why the object is quarantined, and marks it done so: it is
    /// not retried forever.
    async fn quarantine(
        &self,
        claim: &mut Claim<'_, S>,
        mut marker: DoneMarker,
        reason: &str,
        sent: u32,
    ) -> Result<Outcome, Failure> {
        let q = &self.plan.keys.quarantine;
        let reason = reports::quarantine(&self.store, self.obj, q, &marker, reason, sent).await?;
        marker.outcome = "quarantined".into();
        marker.finished_at_ms = now_ms();
        marker.elapsed_ms = self.started.elapsed().as_millis() as u64;
        claim.finish(&marker).await?;
        Ok(Outcome::Quarantined { reason })
    }

    /// Every chunk is sent and settled: the object's counts are published,
    /// its rejects reported, and its marker written. A chunk SQS refused
    /// for good now quarantines the object, with SQS's reasons.
    async fn finish(
        &self,
        claim: &mut Claim<'_, S>,
        mut marker: DoneMarker,
        report: &Report,
        sent: u32,
    ) -> Result<Outcome, Failure> {
        let s = &report.stats;
        check_accounting(s);
        let is_canary = self.plan.canary.is_some();
        // Canaries are not data: they have counters of their own.
        if !is_canary {
            count(s, sent);
        }
        if !report.rejects.is_empty() {
            let key = &self.plan.keys.rejects;
            reports::rejects(&self.store, self.obj, key, &marker, report).await?;
        }
        self.fill(&mut marker, s, is_canary);
        marker.elapsed_ms = self.started.elapsed().as_millis() as u64;
        let refused =
            (claim.lease().refused_count > 0).then(|| reports::refused_reason(claim.lease()));
        if let Some(reason) = &refused {
            let q = &self.plan.keys.quarantine;
            reports::quarantine(&self.store, self.obj, q, &marker, reason, sent).await?;
            marker.outcome = "quarantined".into();
        }
        claim.finish(&marker).await?;
        if let Some(reason) = refused {
            return Ok(Outcome::Quarantined { reason });
        }
        if let Some(c) = &self.plan.canary {
            let queued = matches!(self.plan.route, Route::Queue(_));
            canary::note(self.newest_canary, c, queued, s.records_out);
        }
        info!(
            bytes = s.bytes_decompressed,
            preamble_lines = s.preamble_lines,
            preamble_bytes = s.preamble_bytes,
            record_bytes = s.record_bytes,
            rejected_bytes = s.rejected_bytes,
            separator_bytes = s.separator_bytes,
            records_in = s.records_in,
            records_out = s.records_out,
            rejected = s.rejected,
            messages = s.chunks,
            earlier = s.earlier,
            sent_now = sent,
            resumed_from = marker.resumed_from_chunk,
            elapsed_ms = marker.elapsed_ms,
            "processed"
        );
        Ok(Outcome::Sent {
            chunks: s.chunks,
            records: s.records_out,
            rejected: s.rejected,
        })
    }

    /// The marker's counts, and the fields records lacked (also counted per
    /// field, for data).
    fn fill(&self, marker: &mut DoneMarker, s: &Stats, is_canary: bool) {
        marker.finished_at_ms = now_ms();
        marker.records_in = s.records_in;
        marker.records_out = s.records_out;
        marker.rejected = s.rejected;
        marker.messages = s.chunks;
        marker.bytes_decompressed = s.bytes_decompressed;
        marker.preamble_bytes = s.preamble_bytes;
        marker.record_bytes = s.record_bytes;
        marker.rejected_bytes = s.rejected_bytes;
        marker.separator_bytes = s.separator_bytes;
        marker.offloaded = s.offloaded;
        marker.earlier = s.earlier;
        // The canary's own fields, for a canary.
        let projection = &self.plan.settings.projection;
        for (name, &missing) in projection.names().iter().zip(&s.field_missing) {
            if !is_canary {
                metrics::counter!(m::FIELD_MISSING, "field" => name.clone()).increment(missing);
            }
            if missing > 0 {
                marker.field_missing.insert(name.clone(), missing);
            }
        }
        for (field, counts) in projection.fields().iter().zip(&s.schema_rejects) {
            for (rule, &n) in RULES.iter().zip(counts).filter(|(_, n)| **n > 0) {
                if !is_canary {
                    metrics::counter!(m::SCHEMA_REJECTS, "field" => field.name.clone(), "rule" => *rule)
                        .increment(n);
                }
                marker
                    .schema_rejects
                    .entry(field.name.clone())
                    .or_default()
                    .insert((*rule).to_owned(), n);
            }
        }
    }
}

/// Every byte is counted once by construction, and tests and fuzzing hold
/// it to that; should it ever fail, say so loudly.
fn check_accounting(s: &Stats) {
    if !s.accounted() {
        metrics::counter!(m::ACCOUNTING_ERRORS).increment(1);
        error!(
            bytes = s.bytes_decompressed,
            preamble_bytes = s.preamble_bytes,
            record_bytes = s.record_bytes,
            rejected_bytes = s.rejected_bytes,
            separator_bytes = s.separator_bytes,
            "the byte accounting does not add up: some input bytes are not accounted for"
        );
    }
}

/// Publishes a data object's input and output counts.
fn count(s: &Stats, sent: u32) {
    for (kind, bytes) in [
        ("preamble", s.preamble_bytes),
        ("record", s.record_bytes),
        ("rejected", s.rejected_bytes),
        ("separator", s.separator_bytes),
    ] {
        metrics::counter!(m::INPUT_BYTES, "kind" => kind).increment(bytes);
    }
    metrics::counter!(m::RECORDS_IN).increment(s.records_in);
    metrics::counter!(m::RECORDS_OUT).increment(s.records_out);
    metrics::counter!(m::REJECTED).increment(s.rejected);
    metrics::counter!(m::MESSAGES).increment(u64::from(sent));
    metrics::counter!(m::BYTES).increment(s.bytes_decompressed);
}

/// The file's latency, from its last write on the host to its last message
/// accepted by SQS (`sent_at_ms`), per source.
fn note_latency(p: &Provenance, sent_at_ms: u64) {
    if let Some(secs) = p.latency_secs(sent_at_ms) {
        metrics::histogram!(m::FILE_LATENCY, "source" => p.source.clone()).record(secs);
    }
}
