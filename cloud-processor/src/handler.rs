//! The handler: one event in, every object it names processed. Shared by the
//! Lambda, `poll` and tests; the clients are built once in `main`.
//!
//! The pipeline is synchronous (decoding and parsing are CPU work), so it runs
//! on the blocking pool, reading the object through a bridge from the async
//! GetObject stream and handing full chunks back over a small channel. Memory
//! stays at a few chunks whatever the object's size.

use std::ops::ControlFlow;
use std::time::Instant;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use relay_shared::s3::{Bucket, PutMode, PutOptions};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{Instrument, error, info, warn};

use crate::config::{Aws, Config};
use crate::event::{EventError, Incoming, ObjectRef, classify, from_sqs_body};
use crate::metrics as m;
use crate::pack::{Batcher, Chunk, DEFAULT_MAX_BATCH_BYTES, attributes_size};
use crate::pipeline::{self, Report, Settings, Unreadable};
use crate::sqs::{Output, SendError};

/// Everything a handler needs, built once per process.
#[derive(Debug, Clone)]
pub struct App {
    pub config: Config,
    pub aws: Aws,
    pub s3: aws_sdk_s3::Client,
    pub output: Output,
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every record that could be read went to SQS.
    Sent {
        chunks: u32,
        records: u64,
        rejected: u64,
    },
    /// The object cannot be read at all; a quarantine record says why.
    Quarantined { reason: String },
    /// Not ours: outside the raw prefix.
    Ignored,
    /// The object no longer exists.
    Missing,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("s3://{bucket}/{key}: {op} failed: {message}")]
    S3 {
        bucket: String,
        key: String,
        op: &'static str,
        message: String,
    },
    #[error("s3://{bucket}/{key}: sending to SQS: {source}")]
    Send {
        bucket: String,
        key: String,
        source: SendError,
    },
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("s3://{bucket}/{key}: the pipeline task failed: {message}")]
    Task {
        bucket: String,
        key: String,
        message: String,
    },
}

fn s3_error<
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
>(
    obj: &ObjectRef,
    op: &'static str,
    e: &SdkError<E, R>,
) -> ProcessError {
    ProcessError::S3 {
        bucket: obj.bucket.clone(),
        key: obj.key.clone(),
        op,
        message: match (e.code(), e.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            _ => aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
        },
    }
}

impl App {
    fn settings_for(&self, key: &str) -> Settings {
        Settings {
            projection: self.config.projection.clone(),
            format: self.config.body_format,
            max_body_bytes: self
                .output
                .max_message_bytes
                .saturating_sub(attributes_size(key)),
            max_record_bytes: crate::config::DEFAULT_MAX_RECORD_BYTES,
            max_decompressed_bytes: self.config.max_decompressed_bytes,
            records_pointer: self.config.records_pointer.clone(),
        }
    }

    /// Where reports about a raw object go: the same path under the state prefix.
    fn state_key(&self, kind: &str, key: &str) -> String {
        let rel = key.strip_prefix(&self.config.raw_prefix).unwrap_or(key);
        format!("{}{kind}/{rel}.json", self.aws.state_prefix)
    }

    async fn put_json(&self, bucket: &str, key: &str, value: &Value) -> Result<(), ProcessError> {
        let body = serde_json::to_vec_pretty(value).unwrap_or_default();
        let options = PutOptions {
            content_type: Some("application/json".into()),
            ..PutOptions::default()
        };
        Bucket::new(self.s3.clone(), bucket)
            .put(key, body, &PutMode::Overwrite, &options)
            .await
            .map(drop)
            .map_err(|e| ProcessError::S3 {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                op: "PutObject",
                message: e.to_string(),
            })
    }

    /// Processes one raw object: stream, decode, project, pack, send.
    pub async fn process_object(&self, obj: &ObjectRef) -> Result<Outcome, ProcessError> {
        if !obj.key.starts_with(&self.config.raw_prefix) {
            return Ok(Outcome::Ignored);
        }
        let span = tracing::info_span!("object", bucket = %obj.bucket, key = %obj.key);
        let started = Instant::now();
        let result = self.process_inner(obj).instrument(span).await;
        let outcome = match &result {
            Ok(Outcome::Sent { .. }) => "sent",
            Ok(Outcome::Quarantined { .. }) => "quarantined",
            Ok(Outcome::Missing) => "missing",
            Ok(Outcome::Ignored) => "ignored",
            Err(_) => "failed",
        };
        metrics::counter!(m::OBJECTS, "outcome" => outcome).increment(1);
        metrics::histogram!(m::OBJECT_SECONDS).record(started.elapsed().as_secs_f64());
        result
    }

    async fn process_inner(&self, obj: &ObjectRef) -> Result<Outcome, ProcessError> {
        let started = Instant::now();
        let mut get = self.s3.get_object().bucket(&obj.bucket).key(&obj.key);
        if let Some(v) = &obj.version_id {
            get = get.version_id(v);
        }
        let got = match get.send().await {
            Ok(g) => g,
            Err(e) if e.code() == Some("NoSuchKey") => {
                warn!("the object no longer exists; nothing to do");
                return Ok(Outcome::Missing);
            }
            Err(e) => return Err(s3_error(obj, "GetObject", &e)),
        };
        let etag = got.e_tag.clone().unwrap_or_default();
        let dedup_base = format!(
            "{}/{}\0{}",
            obj.bucket,
            obj.key,
            obj.version_id.as_deref().unwrap_or(&etag)
        );
        let (report, sent) = self.run_pipeline(obj, got.body, &dedup_base).await?;
        let report = match report {
            Ok(r) => r,
            Err(unreadable) => return self.quarantine(obj, &etag, &unreadable, sent).await,
        };
        let s = &report.stats;
        metrics::counter!(m::RECORDS_IN).increment(s.records_in);
        metrics::counter!(m::RECORDS_OUT).increment(s.records_out);
        metrics::counter!(m::REJECTED).increment(s.rejected);
        metrics::counter!(m::MESSAGES).increment(u64::from(s.chunks));
        metrics::counter!(m::BYTES).increment(s.bytes_decompressed);
        if !report.rejects.is_empty() {
            let key = self.state_key("rejects", &obj.key);
            let doc = json!({
                "source": format!("s3://{}/{}", obj.bucket, obj.key),
                "etag": etag,
                "rejected": s.rejected,
                "reported": report.rejects.len(),
                "rejects": report.rejects,
            });
            self.put_json(&obj.bucket, &key, &doc).await?;
            warn!(rejected = s.rejected, report = %key, "some records were rejected");
        }
        info!(
            bytes = s.bytes_decompressed,
            preamble_lines = s.preamble_lines,
            records_in = s.records_in,
            records_out = s.records_out,
            rejected = s.rejected,
            messages = s.chunks,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "processed"
        );
        Ok(Outcome::Sent {
            chunks: s.chunks,
            records: s.records_out,
            rejected: s.rejected,
        })
    }

    /// Runs the pipeline over the object's stream and sends its chunks.
    /// Returns the pipeline's result and how many chunks were sent.
    async fn run_pipeline(
        &self,
        obj: &ObjectRef,
        body: ByteStream,
        dedup_base: &str,
    ) -> Result<(Result<Report, Unreadable>, u32), ProcessError> {
        let settings = self.settings_for(&obj.key);
        let (tx, mut rx) = mpsc::channel::<Chunk>(4);
        let reader = tokio_util::io::SyncIoBridge::new(body.into_async_read());
        let task = tokio::task::spawn_blocking(move || {
            pipeline::run(reader, &settings, |chunk| {
                // A closed channel means sending failed: stop reading.
                match tx.blocking_send(chunk) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                }
            })
        });
        let mut batcher = Batcher::new(DEFAULT_MAX_BATCH_BYTES, &obj.key);
        let mut sent = 0u32;
        let mut failure = None;
        while let Some(chunk) = rx.recv().await {
            if let Some(batch) = batcher.push(chunk) {
                if let Err(e) = self.output.send(&obj.key, dedup_base, &batch).await {
                    failure = Some(e);
                    break;
                }
                sent += batch.len() as u32;
            }
        }
        drop(rx);
        let result = task.await.map_err(|e| ProcessError::Task {
            bucket: obj.bucket.clone(),
            key: obj.key.clone(),
            message: e.to_string(),
        })?;
        if failure.is_none()
            && let Some(batch) = batcher.take()
        {
            match self.output.send(&obj.key, dedup_base, &batch).await {
                Ok(()) => sent += batch.len() as u32,
                Err(e) => failure = Some(e),
            }
        }
        if let Some(source) = failure {
            return Err(ProcessError::Send {
                bucket: obj.bucket.clone(),
                key: obj.key.clone(),
                source,
            });
        }
        Ok((result, sent))
    }

    async fn quarantine(
        &self,
        obj: &ObjectRef,
        etag: &str,
        why: &Unreadable,
        sent: u32,
    ) -> Result<Outcome, ProcessError> {
        let reason = why.to_string();
        let key = self.state_key("quarantine", &obj.key);
        let doc = json!({
            "source": format!("s3://{}/{}", obj.bucket, obj.key),
            "etag": etag,
            "reason": reason,
            "messages_sent_before_the_error": sent,
        });
        self.put_json(&obj.bucket, &key, &doc).await?;
        error!(%reason, record = %key, messages_sent = sent, "quarantined: the object cannot be read");
        Ok(Outcome::Quarantined { reason })
    }

    /// Processes every object an SQS message body names.
    pub async fn process_message_body(&self, body: &str) -> Result<Vec<Outcome>, ProcessError> {
        let mut outcomes = Vec::new();
        for obj in from_sqs_body(body)? {
            outcomes.push(self.process_object(&obj).await?);
        }
        Ok(outcomes)
    }

    /// The Lambda entry point's logic. S3 and EventBridge events fail as a
    /// whole (Lambda retries them); SQS batches report per-message failures.
    pub async fn handle(&self, event: Value) -> Result<Value, ProcessError> {
        match classify(&event)? {
            Incoming::Objects(objects) => {
                for obj in &objects {
                    self.process_object(obj).await?;
                }
                Ok(Value::Null)
            }
            Incoming::Sqs(messages) => {
                let mut failures = Vec::new();
                for m in messages {
                    if let Err(e) = self.process_message_body(&m.body).await {
                        error!(message_id = %m.message_id, error = %e, "message failed; SQS will redeliver it");
                        failures.push(json!({ "itemIdentifier": m.message_id }));
                    }
                }
                Ok(json!({ "batchItemFailures": failures }))
            }
        }
    }
}
