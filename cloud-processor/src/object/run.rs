//! Running a claimed object: the pipeline is synchronous (decoding and
//! parsing are CPU work), so it runs on the blocking pool, reading the
//! object through a bridge from the async GetObject stream and handing full
//! chunks over a small channel to the send loop beside it. Memory stays at a
//! few chunks whatever the object's size.

use std::ops::ControlFlow;
use std::time::Instant;

use relay_shared::checksum::ChecksumMismatch;
use relay_shared::store::{Body, Download, ObjectStore, S3Error};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tracing::{Instrument, warn};

use crate::cli::RECORD_WINDOW_BYTES;
use crate::object::claim::Claim;
use crate::object::error::Failure;
use crate::object::plan::Attempt;
use crate::object::provenance::Provenance;
use crate::output::{MessageSink, Origin, Payloads, Target, dedup_base, send_all};
use crate::pipeline::body::Chunk;
use crate::pipeline::{self, Report, Settings, Unreadable};

/// How a run ended when every chunk it read was sent.
pub(super) enum Ran {
    /// The object no longer exists.
    Missing,
    /// Read to its end, or found unreadable, with `sent` chunks stored by
    /// SQS in this run; `etag` is the object as it was read.
    Read {
        report: Box<Result<Report, Unreadable>>,
        sent: u32,
        etag: String,
        provenance: Provenance,
    },
}

impl<S: ObjectStore, Q: MessageSink> Attempt<'_, S, Q> {
    /// Reads the object and sends the chunks `claim` does not record as
    /// settled. A broken pipeline task leaves the claim to expire.
    pub(super) async fn run(
        &self,
        claim: &mut Claim<'_, S>,
        stop_at: Option<Instant>,
    ) -> Result<Ran, Failure> {
        let obj = self.obj;
        let download = tracing::info_span!("download", bytes = tracing::field::Empty);
        let got = match self
            .store
            .get(&obj.key, obj.version_id.as_deref())
            .instrument(download.clone())
            .await
        {
            Ok(g) => g,
            Err(S3Error::NotFound { .. }) => {
                warn!("the object no longer exists; nothing to do");
                return Ok(Ran::Missing);
            }
            Err(e) => return Err(e.into()),
        };
        download.record("bytes", got.head.size);
        let etag = got.head.etag.clone().unwrap_or_default();
        let resume = claim.lease().resume();
        let version = got.head.version_id.as_deref();
        let dedup_base = dedup_base(&obj.bucket, &obj.key, version, &etag, resume.first_chunk);
        let provenance = Provenance::of(&got.head.metadata, &dedup_base, &self.plan.source);
        self.note_trace(&got.head.metadata, &provenance);
        let body = match verified_first(got).instrument(download).await {
            Ok(body) => body,
            Err(unreadable) => {
                return Ok(Ran::Read {
                    report: Box::new(Err(unreadable)),
                    sent: 0,
                    etag,
                    provenance,
                });
            }
        };
        let settings = Settings {
            resume,
            ..self.plan.settings.clone()
        };
        let pipeline_span = tracing::info_span!(
            "pipeline",
            records = tracing::field::Empty,
            rejected = tracing::field::Empty
        );
        let (task, mut rx) = spawn_pipeline(body, settings, pipeline_span.clone());
        let payload_store = match &self.protocol.payload_bucket {
            Some(bucket) => self.store.in_bucket(bucket),
            None => self.store.clone(),
        };
        let target = Target {
            origin: Origin {
                source_key: &obj.key,
                dedup_base: &dedup_base,
                trace: provenance.trace.filter(|_| self.plan.traced),
            },
            sink: &self.plan.route,
            stop_at,
            payloads: Some(Payloads {
                store: &payload_store,
                prefix: &self.protocol.payload_prefix,
            }),
        };
        let sent = send_all(&target, &mut rx, claim).await;
        drop(rx);
        let report = match task.await {
            Ok(report) => report,
            Err(e) => {
                // The pipeline panicked, which is a bug: the lease is left
                // to expire, and the retry resumes from its last record.
                claim.leave();
                return Err(Failure::Task(e.to_string()));
            }
        };
        if let Ok(r) = &report {
            pipeline_span.record("records", r.stats.records_out);
            pipeline_span.record("rejected", r.stats.rejected);
        }
        drop(pipeline_span);
        Ok(Ran::Read {
            report: Box::new(report),
            sent: sent?,
            etag,
            provenance,
        })
    }
}

impl<S: ObjectStore, Q: MessageSink> Attempt<'_, S, Q> {
    /// Names the file's trace on the object's span: its id for the log
    /// lines, and the context the agent stored and this processor's span id,
    /// which the exported spans (`spans`) are built from.
    fn note_trace(&self, metadata: &std::collections::HashMap<String, String>, p: &Provenance) {
        let Some(trace) = p.trace.filter(|_| self.plan.traced) else {
            return;
        };
        let span = tracing::Span::current();
        span.record("trace_id", trace.trace_id_hex());
        span.record(
            crate::spans::SPAN_ID_FIELD,
            format!("{:016x}", trace.parent_id),
        );
        if let Some(incoming) = metadata.get(relay_shared::meta::TRACEPARENT) {
            span.record(crate::spans::TRACEPARENT_FIELD, incoming.as_str());
        }
    }
}

/// Runs the pipeline over `body` on the blocking pool, inside `span`: its
/// task, and the chunks it hands over.
fn spawn_pipeline(
    body: Body,
    settings: Settings,
    span: tracing::Span,
) -> (
    tokio::task::JoinHandle<Result<Report, Unreadable>>,
    mpsc::Receiver<Chunk>,
) {
    let (tx, rx) = mpsc::channel::<Chunk>(4);
    let reader = tokio_util::io::SyncIoBridge::new(body);
    let task = tokio::task::spawn_blocking(move || {
        span.in_scope(|| {
            pipeline::run(reader, &settings, |chunk| {
                // A closed channel means sending failed: stop reading.
                match tx.blocking_send(chunk) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                }
            })
        })
    });
    (task, rx)
}

/// Objects up to this size (as stored, compressed) are read whole and
/// their checksum verified before any of their records is sent; larger
/// ones are verified as they stream, at their end.
pub const VERIFY_BEFORE_SEND_BYTES: u64 = RECORD_WINDOW_BYTES as u64;

/// The object's body to run the pipeline over: read whole first, so that
/// S3's checksum is verified before anything is sent, when the object fits
/// [`VERIFY_BEFORE_SEND_BYTES`]; streamed otherwise.
async fn verified_first(got: Download) -> Result<Body, Unreadable> {
    if got.head.size > VERIFY_BEFORE_SEND_BYTES {
        return Ok(got.body);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(got.head.size).unwrap_or(0));
    let mut body = got.body;
    match body.read_to_end(&mut bytes).await {
        Ok(_) => Ok(Box::new(std::io::Cursor::new(bytes))),
        Err(e) if ChecksumMismatch::is(&e) => Err(Unreadable::Checksum(e)),
        Err(e) => Err(Unreadable::Io(e)),
    }
}
