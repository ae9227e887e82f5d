//! The handler: one event in, every object it names processed. Shared by the
//! Lambda, `poll` and tests; the clients are built once in `main`.
//!
//! The pipeline is synchronous (decoding and parsing are CPU work), so it runs
//! on the blocking pool, reading the object through a bridge from the async
//! GetObject stream and handing full chunks back over a small channel. Memory
//! stays at a few chunks whatever the object's size.

use std::ops::ControlFlow;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub mod lease;
pub mod marker;
pub mod reports;

use sha2::Digest;

use relay_shared::keys::{Canary, canary_of};
use relay_shared::s3::Bucket;
use relay_shared::store::{Body, ObjectStore, S3Error};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{Instrument, error, info, warn};

use crate::cli::{Config, Protocol};
pub use crate::error::ProcessError;
use crate::ingest::event::{EventError, Incoming, Notice, ObjectRef, classify, from_text};
use crate::metrics as m;
use crate::pipeline::body::Chunk;
use crate::pipeline::project::{Field, Missing, Projection};
use crate::pipeline::{self, Report, Settings, Unreadable};

use self::lease::{Acquired, Held};
use self::marker::{DoneMarker, StateKeys};
use crate::ingest::sqs::Notifications;
use crate::output::send::{self, Stopped};
use crate::output::sink::MessageSink;
use crate::output::sqs::Output;

/// Everything a handler needs, built once per process: the object store
/// (S3 in production, in memory in unit tests) and the message sink.
#[derive(Debug, Clone)]
pub struct App<S = Bucket, Q = Output> {
    pub config: Config,
    pub protocol: Protocol,
    /// The store; each object's bucket is addressed through it.
    pub store: S,
    pub output: Q,
    /// Names this process in leases and markers.
    pub owner: String,
    /// In Lambda, the queue the notifications come from, so a failed one
    /// can come back early (see [`ProcessError::retry_after`]).
    pub notifications: Option<Notifications>,
    /// Where canaries' messages go (`RELAY_CANARY_QUEUE_URL`); without it a
    /// canary is processed and counted, and nothing is sent.
    pub canary: Option<Q>,
    /// A canary's record, cut to what it holds.
    canary_projection: Projection,
    /// Per source, the newest canary's creation time processed here
    /// (canaries that waited may come out of order).
    newest_canary: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, f64>>>,
}

/// Where one object's chunks go: its queue, or nowhere (a canary with no
/// canary queue), which takes every batch as sent.
enum Route<'a, Q> {
    Queue(&'a Q),
    Discard { max_message_bytes: usize },
}

impl<Q: MessageSink> MessageSink for Route<'_, Q> {
    async fn send(
        &self,
        source_key: &str,
        dedup_base: &str,
        batch: &[Chunk],
        until: Instant,
    ) -> crate::output::sink::BatchOutcome {
        match self {
            Self::Queue(q) => q.send(source_key, dedup_base, batch, until).await,
            Self::Discard { .. } => crate::output::sink::BatchOutcome {
                accepted: batch.iter().map(|c| c.index).collect(),
                refused: Vec::new(),
                failed: None,
            },
        }
    }

    fn max_message_bytes(&self) -> usize {
        match self {
            Self::Queue(q) => q.max_message_bytes(),
            Self::Discard { max_message_bytes } => *max_message_bytes,
        }
    }

    fn is_fifo(&self) -> bool {
        matches!(self, Self::Queue(q) if q.is_fifo())
    }

    fn queue_url(&self) -> &str {
        match self {
            Self::Queue(q) => q.queue_url(),
            Self::Discard { .. } => "",
        }
    }
}

/// A pipeline run that read the object to its end (or found it unreadable)
/// with every chunk sent; the lease is still ours.
struct Piped {
    report: Result<Report, Unreadable>,
    /// Chunks SQS stored in this run.
    sent: u32,
    held: Held,
}

/// A pipeline run that stopped early; `held` is the lease while it is still
/// ours, to be released so that the next attempt need not wait for it.
struct Failed {
    error: ProcessError,
    held: Option<Held>,
}

/// One object's run, as `run_pipeline` needs it.
struct Run<'a, S, Q> {
    obj: &'a ObjectRef,
    store: &'a S,
    keys: &'a StateKeys,
    settings: Settings,
    dedup_base: String,
    stop_at: Option<Instant>,
    route: &'a Route<'a, Q>,
}

/// A canary went through: its lag from creation (by the agent's clock) to
/// now, when SQS has it (or, with no canary queue, when it is processed),
/// and the newest creation time per source.
fn note_canary(
    newest: &std::sync::Mutex<std::collections::BTreeMap<String, f64>>,
    c: &Canary,
    sent: bool,
    records: u64,
) {
    let lag = now_ms().saturating_sub(c.created_ms) as f64 / 1000.0;
    let outcome = match (sent, records) {
        (_, 0) => "empty",
        (true, _) => "sent",
        (false, _) => "discarded",
    };
    metrics::counter!(m::CANARIES, "outcome" => outcome).increment(1);
    metrics::gauge!(m::CANARY_LAG, "source" => c.source_id.clone()).set(lag);
    // Canaries that waited may be processed out of order: keep the newest.
    let created = metrics::gauge!(m::CANARY_CREATED, "source" => c.source_id.clone());
    let made = c.created_ms as f64 / 1000.0;
    let newest = newest.lock().map(|mut seen| {
        let slot = seen.entry(c.source_id.clone()).or_insert(made);
        *slot = slot.max(made);
        *slot
    });
    created.set(newest.unwrap_or(made));
    info!(source = %c.source_id, lag_secs = lag, outcome, "canary");
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every record that could be read went to SQS. `chunks` counts the
    /// object's chunks; after a resume, fewer were sent by this run.
    Sent {
        chunks: u32,
        records: u64,
        rejected: u64,
    },
    /// The done marker exists: the event was a duplicate and nothing was sent.
    Duplicate,
    /// The object cannot be read at all; a quarantine record says why.
    Quarantined { reason: String },
    /// Not ours: outside the raw prefix.
    Ignored,
    /// The object no longer exists.
    Missing,
}

impl<S: ObjectStore, Q: MessageSink> App<S, Q> {
    pub fn new(config: Config, protocol: Protocol, store: S, output: Q) -> Self {
        let owner = format!(
            "{}-{}-{:x}",
            std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_else(|_| "processor".into()),
            std::process::id(),
            now_ms()
        );
        Self {
            config,
            protocol,
            store,
            output,
            owner,
            notifications: None,
            canary: None,
            canary_projection: Projection::new(
                &["source", "seq", "created_ms"].map(|f| Field {
                    name: f.to_owned(),
                    path: vec![f.to_owned()],
                }),
                Missing::Omit,
            ),
            newest_canary: std::sync::Arc::default(),
        }
    }

    /// Sends canaries' messages to `queue` instead of nowhere.
    #[must_use]
    pub fn with_canary_queue(mut self, queue: Q) -> Self {
        self.canary = Some(queue);
        self
    }

    /// Where an object's chunks go, and with what settings: a canary's
    /// record is projected to its own fields and goes to the canary queue.
    fn route(&self, obj: &ObjectRef) -> (Route<'_, Q>, Settings, Option<Canary>) {
        let canary = canary_of(&self.config.raw_prefix, &obj.key);
        let route = match (&canary, &self.canary) {
            (None, _) => Route::Queue(&self.output),
            (Some(_), Some(q)) => Route::Queue(q),
            (Some(_), None) => Route::Discard {
                max_message_bytes: self.output.max_message_bytes(),
            },
        };
        let mut settings = self.config.settings(route.max_message_bytes(), &obj.key);
        if canary.is_some() {
            settings.projection = self.canary_projection.clone();
        }
        (route, settings, canary)
    }

    /// How long before an invocation's deadline sending stops: one AWS call
    /// at its operation timeout, plus time to release the lease and make the
    /// notification visible again.
    pub fn stop_margin(&self) -> Duration {
        self.protocol.timeouts.operation + Duration::from_secs(5)
    }

    /// Lets failed SQS-delivered notifications come back early: the queue
    /// they come from (`RELAY_NOTIFICATION_QUEUE_URL` in Lambda).
    pub fn with_notification_queue(mut self, queue: Notifications) -> Self {
        self.notifications = Some(queue);
        self
    }

    /// Everything that decides how an object is cut into chunks and where
    /// they go. A lease left under another fingerprint is not resumed.
    fn fingerprint(&self, settings: &Settings, queue_url: &str) -> String {
        let fields: Vec<String> = self
            .config
            .fields
            .iter()
            .map(|f| format!("{}={}", f.name, f.path.join("\u{1}")))
            .collect();
        // v2: records with none of the fields may be rejected (v1 sent them).
        // v3: records too large for a message may be offloaded, and where.
        // v4: records over the window are offloaded up to a limit.
        let text = format!(
            "v4\0{}\0{:?}\0{:?}\0{:?}\0{:?}\0{}\0{}\0{}\0{:?}\0{:?}\0{}\0{}",
            fields.join("\u{2}"),
            self.config.missing,
            self.config.empty_records,
            settings.format,
            settings.records_pointer,
            settings.max_body_bytes,
            settings.max_record_bytes,
            queue_url,
            settings.large_records,
            self.protocol.payload_bucket,
            self.protocol.payload_prefix,
            settings.max_large_record_bytes,
        );
        let digest = sha2::Sha256::digest(text.as_bytes());
        format!("{digest:x}")[..16].to_owned()
    }

    /// Processes one raw object: stream, decode, project, pack, send.
    pub async fn process_object(&self, obj: &ObjectRef) -> Result<Outcome, ProcessError> {
        self.process_object_until(obj, None).await
    }

    /// As [`App::process_object`], but starts no batch after `stop_at`: the
    /// attempt then fails cleanly, with its progress recorded and its lease
    /// released, instead of being killed mid-send (a Lambda's deadline).
    pub async fn process_object_until(
        &self,
        obj: &ObjectRef,
        stop_at: Option<Instant>,
    ) -> Result<Outcome, ProcessError> {
        if !obj.key.starts_with(&self.config.raw_prefix) {
            return Ok(Outcome::Ignored);
        }
        let span = tracing::info_span!("object", bucket = %obj.bucket, key = %obj.key);
        let started = Instant::now();
        let result = self.process_inner(obj, stop_at).instrument(span).await;
        let outcome = match &result {
            Ok(Outcome::Sent { .. }) => "sent",
            Ok(Outcome::Quarantined { .. }) => "quarantined",
            Ok(Outcome::Missing) => "missing",
            Ok(Outcome::Duplicate) => "duplicate",
            Ok(Outcome::Ignored) => "ignored",
            Err(_) => "failed",
        };
        metrics::counter!(m::OBJECTS, "outcome" => outcome).increment(1);
        metrics::histogram!(m::OBJECT_SECONDS).record(started.elapsed().as_secs_f64());
        result
    }

    async fn process_inner(
        &self,
        obj: &ObjectRef,
        stop_at: Option<Instant>,
    ) -> Result<Outcome, ProcessError> {
        let started = Instant::now();
        let state_err = |source| ProcessError::state(obj, source);
        let (route, settings, canary) = self.route(obj);
        let fingerprint = self.fingerprint(&settings, route.queue_url());
        let keys = StateKeys::new(
            &self.protocol.state_prefix,
            &self.config.raw_prefix,
            &obj.key,
        );
        let store = self.store.in_bucket(&obj.bucket);
        let ttl_ms = u64::try_from(self.protocol.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        let held = match lease::acquire(&store, &keys, &self.owner, &fingerprint, ttl_ms, now_ms())
            .await
            .map_err(state_err)?
        {
            Acquired::Ours(held) => held,
            Acquired::Done => {
                info!("already processed (done marker exists); skipping the duplicate event");
                return Ok(Outcome::Duplicate);
            }
            Acquired::Busy {
                owner,
                expires_in_ms,
            } => {
                return Err(ProcessError::Busy {
                    bucket: obj.bucket.clone(),
                    key: obj.key.clone(),
                    owner,
                    expires_in_ms,
                });
            }
            Acquired::ConfigChanged {
                owner,
                next_chunk,
                theirs,
                ours,
            } => {
                return Err(ProcessError::ConfigChanged {
                    bucket: obj.bucket.clone(),
                    key: obj.key.clone(),
                    owner,
                    next_chunk,
                    theirs,
                    ours,
                    lease: keys.lease.clone(),
                });
            }
        };
        let resumed_from = held.lease.next_chunk;
        if let Some(age_ms) = held.taken_over_after_ms
            && route.is_fifo()
            && lease::outside_fifo_window(age_ms)
        {
            metrics::counter!(m::FIFO_WINDOW_EXCEEDED).increment(1);
            warn!(
                age_ms,
                resumed_from,
                "taking over an object whose previous holder last recorded progress over 5 minutes ago: \
                 a batch it sent unrecorded, if any, is outside SQS FIFO's deduplication window and arrives twice"
            );
        }
        if resumed_from > 0 {
            warn!(
                resumed_from,
                "resuming an object another processor left unfinished"
            );
        }

        let got = match store.get(&obj.key, obj.version_id.as_deref()).await {
            Ok(g) => g,
            Err(S3Error::NotFound { .. }) => {
                warn!("the object no longer exists; nothing to do");
                lease::abandon(&store, &keys, &held).await;
                return Ok(Outcome::Missing);
            }
            Err(e) => {
                self.release(&store, &keys, held).await;
                return Err(e.into());
            }
        };
        let etag = got.head.etag.clone().unwrap_or_default();
        let dedup_base = dedup_base(&obj.bucket, &obj.key, got.head.version_id.as_deref(), &etag);
        let run = Run {
            obj,
            store: &store,
            keys: &keys,
            settings,
            dedup_base,
            stop_at,
            route: &route,
        };
        let Piped { report, sent, held } = match self.run_pipeline(run, got.body, held).await {
            Ok(piped) => piped,
            Err(Failed { error, held }) => {
                if let Some(held) = held {
                    self.release(&store, &keys, held).await;
                }
                return Err(error);
            }
        };
        let mut marker = DoneMarker::new(&self.owner, &fingerprint, &etag, resumed_from);
        let report = match report {
            Ok(r) => r,
            // The object's stream broke (a network fault), which says nothing
            // about its bytes: retry, resuming after the chunks already sent.
            Err(Unreadable::Io(e)) => {
                self.release(&store, &keys, held).await;
                return Err(ProcessError::Read {
                    bucket: obj.bucket.clone(),
                    key: obj.key.clone(),
                    sent,
                    message: e.to_string(),
                });
            }
            Err(unreadable) => {
                let reason = reports::quarantine(
                    &store,
                    obj,
                    &keys.quarantine,
                    &etag,
                    &unreadable.to_string(),
                    sent,
                )
                .await?;
                marker.outcome = "quarantined".into();
                marker.finished_at_ms = now_ms();
                marker.elapsed_ms = started.elapsed().as_millis() as u64;
                lease::finish(&store, &keys, &held, &marker)
                    .await
                    .map_err(state_err)?;
                return Ok(Outcome::Quarantined { reason });
            }
        };
        let s = &report.stats;
        if !s.accounted() {
            // Every byte is counted once by construction, and tests and
            // fuzzing hold it to that; should it ever fail, say so loudly.
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
        // Canaries are not data: they have counters of their own.
        if canary.is_none() {
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
        if !report.rejects.is_empty() {
            reports::rejects(&store, obj, &keys.rejects, &etag, &report).await?;
        }
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
        let projection = if canary.is_some() {
            &self.canary_projection
        } else {
            &self.config.projection
        };
        for (name, &missing) in projection.names().iter().zip(&s.field_missing) {
            if canary.is_none() {
                metrics::counter!(m::FIELD_MISSING, "field" => name.clone()).increment(missing);
            }
            if missing > 0 {
                marker.field_missing.insert(name.clone(), missing);
            }
        }
        marker.elapsed_ms = started.elapsed().as_millis() as u64;
        // Everything else is sent and settled: a chunk SQS refused for good
        // now quarantines the object, with SQS's reasons.
        let refused = (held.lease.refused_count > 0).then(|| reports::refused_reason(&held.lease));
        if let Some(reason) = &refused {
            reports::quarantine(&store, obj, &keys.quarantine, &etag, reason, sent).await?;
            marker.outcome = "quarantined".into();
        }
        lease::finish(&store, &keys, &held, &marker)
            .await
            .map_err(state_err)?;
        if let Some(reason) = refused {
            return Ok(Outcome::Quarantined { reason });
        }
        if let Some(c) = &canary {
            note_canary(
                &self.newest_canary,
                c,
                matches!(route, Route::Queue(_)),
                s.records_out,
            );
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
            sent_now = sent,
            resumed_from,
            elapsed_ms = marker.elapsed_ms,
            "processed"
        );
        Ok(Outcome::Sent {
            chunks: s.chunks,
            records: s.records_out,
            rejected: s.rejected,
        })
    }

    /// After a clean failure, lets the next attempt resume at once instead of
    /// waiting for the lease to expire. Best effort: expiry does the same.
    async fn release(&self, store: &S, keys: &StateKeys, mut held: Held) {
        if let Err(e) = lease::release(store, keys, &mut held, now_ms()).await {
            warn!(error = %e, "could not release the lease; the next attempt waits for it to expire");
        }
    }

    /// Runs the pipeline over the object's stream and sends the chunks the
    /// lease does not record as settled (see [`send::send_all`]). Returns
    /// the pipeline's result and the chunks sent now; on a failure that
    /// leaves the lease ours, the lease too, so it can be released.
    async fn run_pipeline(
        &self,
        run: Run<'_, S, Q>,
        body: Body,
        mut held: Held,
    ) -> Result<Piped, Failed> {
        let Run {
            obj,
            store,
            keys,
            settings,
            dedup_base,
            stop_at,
            route,
        } = run;
        let (tx, mut rx) = mpsc::channel::<Chunk>(4);
        let reader = tokio_util::io::SyncIoBridge::new(body);
        let task = tokio::task::spawn_blocking(move || {
            pipeline::run(reader, &settings, |chunk| {
                // A closed channel means sending failed: stop reading.
                match tx.blocking_send(chunk) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                }
            })
        });
        let payload_store = match &self.protocol.payload_bucket {
            Some(bucket) => store.in_bucket(bucket),
            None => store.clone(),
        };
        let target = send::Target {
            store,
            keys,
            sink: route,
            source_key: &obj.key,
            dedup_base: &dedup_base,
            stop_at,
            payloads: Some(crate::output::payload::Payloads {
                store: &payload_store,
                prefix: &self.protocol.payload_prefix,
            }),
        };
        let sent = send::send_all(&target, &mut rx, &mut held).await;
        drop(rx);
        let (bucket, key) = (obj.bucket.clone(), obj.key.clone());
        let result = task.await.map_err(|e| Failed {
            error: ProcessError::Task {
                bucket: bucket.clone(),
                key: key.clone(),
                message: e.to_string(),
            },
            // The pipeline panicked, which is a bug: the lease is left to
            // expire, and the retry resumes from its last record.
            held: None,
        })?;
        match sent {
            Ok(sent) => Ok(Piped {
                report: result,
                sent,
                held,
            }),
            Err(Stopped::Send(source)) => Err(Failed {
                error: ProcessError::Send {
                    bucket,
                    key,
                    source,
                },
                held: Some(held),
            }),
            // A lost lease is someone else's now.
            Err(Stopped::State(e)) => Err(Failed {
                error: ProcessError::state(obj, e),
                held: None,
            }),
            Err(Stopped::Payload(source)) => Err(Failed {
                error: ProcessError::Payload {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    source,
                },
                held: Some(held),
            }),
            Err(Stopped::Deadline { sent }) => Err(Failed {
                error: ProcessError::Deadline { bucket, key, sent },
                held: Some(held),
            }),
        }
    }

    /// Processes every object one notification names, or counts it as
    /// ignored on purpose.
    async fn process_notice(
        &self,
        notice: Notice,
        stop_at: Option<Instant>,
    ) -> Result<Vec<Outcome>, ProcessError> {
        match notice {
            Notice::Objects(objects) => {
                let mut outcomes = Vec::new();
                for obj in &objects {
                    match self.process_object_until(obj, stop_at).await {
                        Ok(o) => outcomes.push(o),
                        Err(e) => {
                            metrics::counter!(m::EVENTS, "outcome" => "failed").increment(1);
                            return Err(e);
                        }
                    }
                }
                metrics::counter!(m::EVENTS, "outcome" => "processed").increment(1);
                Ok(outcomes)
            }
            Notice::Ignored(reason) => {
                info!(reason, "notification ignored on purpose");
                metrics::counter!(m::EVENTS, "outcome" => "ignored").increment(1);
                Ok(Vec::new())
            }
        }
    }

    /// Processes an SQS message body (or an SNS message) holding a
    /// notification. A body of no known shape is an error, so it is never
    /// acknowledged and reaches the dead-letter queue.
    pub async fn process_message_body(&self, body: &str) -> Result<Vec<Outcome>, ProcessError> {
        self.process_message_body_until(body, None).await
    }

    async fn process_message_body_until(
        &self,
        body: &str,
        stop_at: Option<Instant>,
    ) -> Result<Vec<Outcome>, ProcessError> {
        let notice = from_text(body).map_err(unknown)?;
        self.process_notice(notice, stop_at).await
    }

    /// The Lambda entry point's logic. Direct S3, SNS and EventBridge
    /// events fail as a whole (Lambda retries them, then its on-failure
    /// destination has them); SQS batches report per-message failures.
    pub async fn handle(&self, event: Value) -> Result<Value, ProcessError> {
        self.handle_until(event, None).await
    }

    /// As [`App::handle`], for an invocation that ends at `deadline` (the
    /// Lambda's). Sending stops early enough for the last call to finish
    /// and the lease to be released ([`App::stop_margin`]), so a long object
    /// fails cleanly and resumes in the next invocation, instead of the
    /// invocation being killed mid-send (a crash, retried only after the
    /// visibility timeout).
    pub async fn handle_until(
        &self,
        event: Value,
        deadline: Option<Instant>,
    ) -> Result<Value, ProcessError> {
        // A short invocation keeps half its time for sending.
        let stop_at = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            d.checked_sub(self.stop_margin().min(left / 2)).unwrap_or(d)
        });
        match classify(&event).map_err(unknown)? {
            Incoming::Notice(notice) => {
                self.process_notice(notice, stop_at).await?;
                Ok(Value::Null)
            }
            Incoming::Sns(notices) => {
                for notice in notices {
                    self.process_notice(notice, stop_at).await?;
                }
                Ok(Value::Null)
            }
            Incoming::Sqs(messages) => {
                let mut failures = Vec::new();
                for m in messages {
                    if let Err(e) = self.process_message_body_until(&m.body, stop_at).await {
                        error!(message_id = %m.message_id, error = %e, "message failed; SQS will redeliver it, then move it to the dead-letter queue");
                        if let (Some(queue), Some(after)) = (&self.notifications, e.retry_after()) {
                            show_again(queue, &m.receipt_handle, after).await;
                        }
                        failures.push(json!({ "itemIdentifier": m.message_id }));
                    }
                }
                Ok(json!({ "batchItemFailures": failures }))
            }
        }
    }
}

/// What every FIFO deduplication id of an object is derived from: the
/// object as it was read (its version id in a versioned bucket, else its
/// ETag), never what the event said. A live event carries `versionId` and a
/// replayed one does not; taking the id from the event gave a resume driven
/// by replay other deduplication ids, so FIFO could not drop its resent batch.
pub fn dedup_base(bucket: &str, key: &str, read_version: Option<&str>, read_etag: &str) -> String {
    format!("{bucket}/{key}\0{}", read_version.unwrap_or(read_etag))
}

/// Makes a failed notification visible again `after` from now. Should that
/// fail, it comes back after the queue's visibility timeout: later, not lost.
pub(crate) async fn show_again(queue: &Notifications, receipt: &str, after: Duration) {
    if let Err(e) = queue.show_again(receipt, after).await {
        warn!(error = %e, "shortening a failed notification's visibility failed; it comes back after the full timeout");
    }
}

/// Counts and logs a payload of no known shape, and turns it into an error.
fn unknown(e: EventError) -> ProcessError {
    if let EventError::Unknown { why, excerpt } = &e {
        metrics::counter!(m::EVENTS, "outcome" => "unknown").increment(1);
        warn!(%why, %excerpt, "an event of no known shape; it is not acknowledged, so it ends in the dead-letter queue");
    }
    ProcessError::Event(e)
}

/// The handler over the in-memory store and queue: the once-only protocol's
/// hard cases, with no emulator.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::{CrashAfter, FakeQueue, SendFault, until_crash};
    use clap::Parser;
    use relay_shared::store::{PutMode, PutOptions};
    use relay_shared::testing::{Fault, MemStore};
    use std::collections::BTreeMap;

    const KEY: &str = "raw/e/2026/11/21/22/1763800000000.json.zst";
    // About 30 messages of 1 KiB once projected: three batches.
    const RECORDS: usize = 3000;

    fn app<Q: MessageSink>(store: &MemStore, queue: Q) -> App<MemStore, Q> {
        app_with(store, queue, "id")
    }

    fn app_with<Q: MessageSink>(store: &MemStore, queue: Q, fields: &str) -> App<MemStore, Q> {
        let cli = crate::cli::Cli::try_parse_from(["cloud-processor", "--fields", fields]).unwrap();
        let protocol = Protocol::new("state/", 60, crate::cli::AwsTimeouts::default());
        App::new(
            Config::from_common(&cli.common).unwrap(),
            protocol,
            store.in_bucket("elsewhere"),
            queue,
        )
    }

    /// A store holding one raw object of [`RECORDS`] records, with a junk
    /// preamble, and its reference.
    async fn object() -> (MemStore, ObjectRef) {
        let mut text = String::from("# written by the container\n");
        for i in 0..RECORDS {
            text.push_str(&format!("{{\"id\":{i},\"pad\":\"{}\"}}\n", "x".repeat(40)));
        }
        object_of(&text).await
    }

    /// A store holding `text` as the raw object, and its reference.
    /// A processor over `fields` that dies once SQS took `batches` batches
    /// of `obj`, its lease left to expire.
    async fn crash_after(
        store: &MemStore,
        obj: &ObjectRef,
        queue: &FakeQueue,
        fields: &str,
        batches: u32,
    ) {
        let crashing = app_with(store, CrashAfter::new(queue.clone(), batches), fields);
        let done = until_crash(crashing.process_object(obj), &crashing.output).await;
        assert!(done.is_none(), "finished without crashing: {done:?}");
    }

    /// S3's clock moves past the end of a 60 s lease.
    fn past_the_lease(store: &MemStore) {
        store.at(i64::try_from(now_ms()).unwrap() + 65_000);
    }

    /// Replaces the payload at `key` with other bytes and removes the
    /// object's done marker, so the next run meets the clash.
    async fn put_other_bytes_and_forget_done(store: &MemStore, key: &str) {
        store.delete(key, None).await.unwrap();
        store
            .put(
                key,
                b"other".to_vec(),
                &PutMode::Create,
                &PutOptions::default(),
            )
            .await
            .unwrap();
        let done = StateKeys::new("state/", "raw/", KEY).done;
        store.delete(&done, None).await.unwrap();
    }

    /// Stores `text`, compressed, at `key`.
    async fn put_text(store: &MemStore, key: &str, text: &str) {
        let body = zstd::encode_all(text.as_bytes(), 3).unwrap();
        store
            .put(key, body, &PutMode::Create, &PutOptions::default())
            .await
            .unwrap();
    }

    async fn object_of(text: &str) -> (MemStore, ObjectRef) {
        let store = MemStore::new("b");
        put_text(&store, KEY, text).await;
        let obj = ObjectRef {
            bucket: "b".into(),
            key: KEY.into(),
            etag: None,
            version_id: None,
            size: None,
        };
        (store, obj)
    }

    /// What a consumer gets for a body: the body, or for a claim check the
    /// payload it points to, as the Extended Client resolves it.
    fn resolved(store: &MemStore, body: Vec<u8>) -> Vec<u8> {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(a)) if a[0] == crate::output::batch::PAYLOAD_POINTER_CLASS => {
                let (bucket, key) = (a[1]["s3BucketName"].as_str(), a[1]["s3Key"].as_str());
                store
                    .in_bucket(bucket.unwrap())
                    .bytes(key.unwrap())
                    .expect("the payload")
            }
            _ => body,
        }
    }

    /// How often each record id reached the queue.
    fn delivered(queue: &FakeQueue) -> BTreeMap<u64, usize> {
        delivered_via(&MemStore::new("none"), queue)
    }

    /// How often each record id reached a consumer that resolves claim
    /// checks from `store`.
    fn delivered_via(store: &MemStore, queue: &FakeQueue) -> BTreeMap<u64, usize> {
        let mut seen = BTreeMap::new();
        for body in queue.bodies() {
            let body = resolved(store, body);
            for line in body.split(|b| *b == b'\n') {
                let v: Value = serde_json::from_slice(line).unwrap();
                *seen.entry(v["id"].as_u64().unwrap()).or_default() += 1;
            }
        }
        seen
    }

    fn marker(store: &MemStore) -> DoneMarker {
        let keys = StateKeys::new("state/", "raw/", KEY);
        serde_json::from_slice(&store.bytes(&keys.done).expect("a done marker")).unwrap()
    }

    #[tokio::test]
    async fn every_record_once_and_the_marker_accounts_for_the_object() {
        let (store, obj) = object().await;
        let queue = FakeQueue::default();
        let outcome = app(&store, queue.clone())
            .process_object(&obj)
            .await
            .unwrap();
        assert!(
            matches!(outcome, Outcome::Sent { records, rejected: 0, .. } if records == RECORDS as u64),
            "{outcome:?}"
        );
        let seen = delivered(&queue);
        assert_eq!(seen.len(), RECORDS);
        assert!(seen.values().all(|n| *n == 1));
        let m = marker(&store);
        assert_eq!(
            (m.records_out, m.messages as usize),
            (RECORDS as u64, queue.bodies().len())
        );
        // A repeated event sends nothing.
        let again = app(&store, queue.clone())
            .process_object(&obj)
            .await
            .unwrap();
        assert_eq!(again, Outcome::Duplicate);
        assert_eq!(delivered(&queue).values().sum::<usize>(), RECORDS);
    }

    /// A processor dies between a batch SQS took and its progress write.
    /// Its lease binds others until it ends by S3's clock; the taker then
    /// resumes after the last recorded batch: nothing is lost, and only
    /// the unrecorded batch can arrive twice.
    #[tokio::test]
    async fn a_crash_after_k_batches_is_taken_over_and_resumed() {
        let (store, obj) = object().await;
        let queue = FakeQueue::default();
        crash_after(&store, &obj, &queue, "id", 2).await;
        let sent_before = queue.bodies().len();

        let retry = app(&store, queue.clone());
        let busy = retry.process_object(&obj).await.unwrap_err();
        assert!(matches!(busy, ProcessError::Busy { .. }), "{busy}");

        past_the_lease(&store);
        let outcome = retry.process_object(&obj).await.unwrap();
        assert!(matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");
        let seen = delivered(&queue);
        assert_eq!(seen.len(), RECORDS, "every record arrived");
        let twice = queue.resent();
        assert!(
            !twice.is_empty() && twice.len() <= sent_before,
            "only the unrecorded batch is resent: {twice:?} of {sent_before}"
        );
        assert_eq!(
            marker(&store).resumed_from_chunk as usize + twice.len(),
            sent_before
        );
    }

    /// The done marker's write takes effect but its answer is lost: the
    /// attempt fails, and the retry finds the marker and sends nothing.
    #[tokio::test]
    async fn a_lost_answer_to_the_done_marker_sends_nothing_twice() {
        let (store, obj) = object().await;
        store.fail_on("PutObject", "state/done/", Fault::LoseResponse);
        let queue = FakeQueue::default();
        let first = app(&store, queue.clone()).process_object(&obj).await;
        assert!(first.is_err(), "{first:?}");
        let sent = queue.bodies().len();
        let retry = app(&store, queue.clone())
            .process_object(&obj)
            .await
            .unwrap();
        assert_eq!(retry, Outcome::Duplicate);
        assert_eq!(queue.bodies().len(), sent, "nothing was sent again");
        assert!(delivered(&queue).values().all(|n| *n == 1));
    }

    /// A batch stored but its answer lost: the attempt fails with the lease
    /// released, and the retry resends only what was not recorded.
    #[tokio::test]
    async fn a_lost_send_answer_is_retried_at_once_without_waiting_for_the_lease() {
        let (store, obj) = object().await;
        let queue = FakeQueue::scripted(&[SendFault::None, SendFault::LoseAnswer]);
        let err = app(&store, queue.clone())
            .process_object(&obj)
            .await
            .unwrap_err();
        assert!(matches!(err, ProcessError::Send { .. }), "{err}");
        let outcome = app(&store, queue.clone())
            .process_object(&obj)
            .await
            .unwrap();
        assert!(matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");
        assert_eq!(delivered(&queue).len(), RECORDS);
    }

    /// Processors racing on one object: exactly one sends it, the others
    /// wait or find it done, and every record arrives once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_processors_send_each_record_once() {
        let (store, obj) = object().await;
        let queue = FakeQueue::default().slow(Duration::from_millis(2));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (app, obj) = (app(&store, queue.clone()), obj.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    match app.process_object(&obj).await {
                        Err(ProcessError::Busy { .. }) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        other => return other.unwrap(),
                    }
                }
            }));
        }
        let mut sent = 0;
        for t in tasks {
            match t.await.unwrap() {
                Outcome::Sent { .. } => sent += 1,
                Outcome::Duplicate => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(sent, 1);
        assert!(delivered(&queue).values().all(|n| *n == 1));
        assert_eq!(delivered(&queue).len(), RECORDS);
    }

    /// A canary (a heartbeat object on the data's path) goes through the
    /// once-only protocol like any object, projected to its own fields, to
    /// the canary queue and never to the consumers'; with no canary queue it
    /// is processed and nothing is sent. A data object beside it is untouched.
    #[tokio::test]
    async fn canaries_go_to_the_canary_queue_never_to_the_consumers() {
        let canary_key = "raw/edge-1/2026/11/27/22/1795816800123.canary.json.zst";
        let record = r#"{"source":"edge-1","seq":7,"created_ms":1795816800123}"#;
        let (store, data) = object_of("{\"id\":1,\"x\":2}\n").await;
        put_text(&store, canary_key, &format!("{record}\n")).await;
        let canary = ObjectRef {
            key: canary_key.into(),
            ..data.clone()
        };
        let (output, canaries) = (FakeQueue::default(), FakeQueue::default());
        let relay = app(&store, output.clone()).with_canary_queue(canaries.clone());
        for obj in [&canary, &data] {
            let outcome = relay.process_object(obj).await.unwrap();
            assert!(
                matches!(
                    outcome,
                    Outcome::Sent {
                        records: 1,
                        rejected: 0,
                        ..
                    }
                ),
                "{outcome:?}"
            );
        }
        assert_eq!(canaries.bodies(), [record.as_bytes().to_vec()]);
        assert_eq!(output.bodies(), [b"{\"id\":1}".to_vec()]);
        // Once only, as for data: a second event finds the done marker.
        assert_eq!(
            relay.process_object(&canary).await.unwrap(),
            Outcome::Duplicate
        );
        assert_eq!(canaries.bodies().len(), 1);

        // No canary queue: processed, marked done, nothing sent anywhere.
        let (store, data) = object_of("{\"id\":1}\n").await;
        put_text(&store, canary_key, &format!("{record}\n")).await;
        let output = FakeQueue::default();
        let quiet = app(&store, output.clone());
        let canary = ObjectRef {
            key: canary_key.into(),
            ..data
        };
        let outcome = quiet.process_object(&canary).await.unwrap();
        assert!(
            matches!(outcome, Outcome::Sent { records: 1, .. }),
            "{outcome:?}"
        );
        assert!(output.bodies().is_empty());
        assert_eq!(
            quiet.process_object(&canary).await.unwrap(),
            Outcome::Duplicate
        );
    }

    /// Records too large for a message go to S3 under deterministic keys,
    /// and a crash between the payload write and the send reuses the
    /// payload on resume: one object per record, every record delivered.
    #[tokio::test]
    async fn large_records_are_offloaded_once_across_a_crash() {
        let mut text = String::from("# junk\n");
        let mut large = Vec::new();
        for i in 0..400 {
            let blob = if i % 40 == 0 {
                "y".repeat(3000)
            } else {
                String::new()
            };
            if !blob.is_empty() {
                large.push(format!("{{\"id\":{i},\"blob\":\"{blob}\"}}"));
            }
            text.push_str(&format!("{{\"id\":{i},\"blob\":\"{blob}\",\"n\":1}}\n"));
        }
        let (store, obj) = object_of(&text).await;
        let queue = FakeQueue::default();
        crash_after(&store, &obj, &queue, "id,blob", 1).await;
        past_the_lease(&store);
        let outcome = app_with(&store, queue.clone(), "id,blob")
            .process_object(&obj)
            .await
            .unwrap();
        assert!(
            matches!(outcome, Outcome::Sent { records: 400, .. }),
            "{outcome:?}"
        );
        let payloads = store.list("payloads/", 1000).await.unwrap();
        assert_eq!(
            payloads.len(),
            large.len(),
            "one payload object per large record"
        );
        let mut stored: Vec<Vec<u8>> = payloads
            .iter()
            .map(|l| store.bytes(&l.key).unwrap())
            .collect();
        stored.sort();
        let mut want: Vec<Vec<u8>> = large.iter().map(|r| r.as_bytes().to_vec()).collect();
        want.sort();
        assert_eq!(
            stored, want,
            "each payload is its record's exact projection"
        );
        let seen = delivered_via(&store, &queue);
        assert_eq!(seen.len(), 400, "every record reached the consumer");
        assert_eq!(marker(&store).offloaded, large.len() as u64);
    }

    /// Records over the 1 MiB window are checked and projected as they
    /// stream, and their payloads stored from spools (the 9 MB one in parts):
    /// byte for byte the projection, once each across a crash, with no
    /// upload left open. A payload key holding other bytes fails the object.
    #[tokio::test]
    async fn records_over_the_window_are_offloaded_from_spools_once_across_a_crash() {
        let big = |i: usize, n: usize| {
            let blob = format!("{}\\n\\u00e9", "é".repeat(n));
            (
                format!("{{\"id\":{i},\"skip\":[{{}}],\"blob\":\"{blob}\"}}\n"),
                format!("{{\"id\":{i},\"blob\":\"{blob}\"}}"),
            )
        };
        let (one, one_out) = big(1, 750_000);
        let (three, three_out) = big(3, 4_600_000);
        let text = format!("# junk\n{{\"id\":0}}\n{one}{{\"id\":2}}\n{three}{{\"id\":4}}\n");
        let (store, obj) = object_of(&text).await;
        let queue = FakeQueue::default();
        crash_after(&store, &obj, &queue, "id,blob", 1).await;
        past_the_lease(&store);
        let app = app_with(&store, queue.clone(), "id,blob");
        let outcome = app.process_object(&obj).await.unwrap();
        assert!(
            matches!(
                outcome,
                Outcome::Sent {
                    records: 5,
                    rejected: 0,
                    ..
                }
            ),
            "{outcome:?}"
        );
        let payloads = store.list("payloads/", 10).await.unwrap();
        let mut stored: Vec<Vec<u8>> = payloads
            .iter()
            .map(|l| store.bytes(&l.key).unwrap())
            .collect();
        stored.sort_by_key(Vec::len);
        assert!(
            stored == [one_out.into_bytes(), three_out.into_bytes()],
            "each payload is its record's exact projection"
        );
        assert_eq!(store.open_uploads(), 0, "no multipart upload left open");
        assert_eq!(delivered_via(&store, &queue).len(), 5);
        assert_eq!(marker(&store).offloaded, 2);

        let key = payloads.iter().max_by_key(|l| l.size).unwrap().key.clone();
        put_other_bytes_and_forget_done(&store, &key).await;
        let err = app.process_object(&obj).await.unwrap_err();
        assert!(err.to_string().contains(&key), "{err}");
        assert_eq!(store.bytes(&key), Some(b"other".to_vec()));
    }

    /// A payload key that holds other bytes is never overwritten, and the
    /// object fails with the key named, its lease released.
    #[tokio::test]
    async fn a_payload_key_holding_other_bytes_fails_the_object() {
        let text = format!("{{\"id\":1,\"blob\":\"{}\"}}\n", "z".repeat(3000));
        let (store, obj) = object_of(&text).await;
        let queue = FakeQueue::default();
        let app = app_with(&store, queue.clone(), "id,blob");
        // Learn the key from a first run, then put other bytes there.
        app.process_object(&obj).await.unwrap();
        let key = store.list("payloads/", 10).await.unwrap().remove(0).key;
        put_other_bytes_and_forget_done(&store, &key).await;
        let err = app.process_object(&obj).await.unwrap_err();
        assert!(
            matches!(&err, ProcessError::Payload { .. }) && err.to_string().contains(&key),
            "{err}"
        );
        assert_eq!(store.bytes(&key), Some(b"other".to_vec()));
        // Released, not left to expire: a retry meets the same clash at once.
        let again = app.process_object(&obj).await.unwrap_err();
        assert!(matches!(again, ProcessError::Payload { .. }), "{again}");
    }

    /// An object that is gone is not an error, and leaves no lease behind.
    #[tokio::test]
    async fn a_missing_object_is_counted_missing_and_leaves_no_lease() {
        let (store, obj) = object().await;
        store.delete(KEY, None).await.unwrap();
        let outcome = app(&store, FakeQueue::default())
            .process_object(&obj)
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Missing);
        assert_eq!(store.keys(), Vec::<String>::new());
    }
}
