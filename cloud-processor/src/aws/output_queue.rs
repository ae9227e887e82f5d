//! SQS adapter for the output queue: its limits, read at start-up and again
//! after a size refusal, and each batch of chunks as SendMessageBatch
//! entries with their attributes, through the one batch loop
//! ([`super::sqs::send_batch`]). The notification queue is
//! [`super::notification_queue`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, MessageAttributeValue, MessageSystemAttributeNameForSends,
    MessageSystemAttributeValue, SendMessageBatchRequestEntry,
};
use relay_shared::retry::{Class, classify_code};

use super::queue_facts::read_limits;
use super::sqs::{BatchResult, Unsent, Verdict, send_batch};
use crate::output::batch::{
    ATTR_CHUNK, ATTR_EXTENDED_PAYLOAD_SIZE, ATTR_RECORDS, ATTR_SOURCE_KEY, ATTR_TRACEPARENT,
    sqs_text,
};
use crate::output::{BatchOutcome, MessageSink, Origin, QueueError, dedup_id};
use crate::pipeline::body::Chunk;

/// Whether SQS refused a message for its size (`BatchRequestTooLong`,
/// `MessageTooLong`, or "must be shorter than" in an entry's message).
fn is_size_refusal(code: &str, message: &str) -> bool {
    code.contains("TooLong") || message.contains("shorter than")
}

/// The queue packed messages go to.
#[derive(Debug, Clone)]
pub struct SqsOutput {
    client: Client,
    queue_url: String,
    fifo: bool,
    group_id: String,
    /// The queue's MaximumMessageSize (or a lower configured cap). Re-read
    /// when SQS refuses a message for its size: queues are reconfigured.
    max_message_bytes: Arc<AtomicUsize>,
    cap: Option<usize>,
}

impl SqsOutput {
    /// As [`SqsOutput::connect`], with a client built from `sdk`.
    pub async fn open(
        sdk: &relay_shared::client::SdkConfig,
        queue_url: &str,
        group_id: &str,
        cap: Option<usize>,
    ) -> Result<Self, QueueError> {
        Self::connect(
            relay_shared::client::sqs_client(sdk),
            queue_url,
            group_id,
            cap,
        )
        .await
    }

    /// Reads the queue's size limit and type at start-up.
    pub async fn connect(
        client: Client,
        queue_url: &str,
        group_id: &str,
        cap: Option<usize>,
    ) -> Result<Self, QueueError> {
        let (queue_max, fifo) = read_limits(&client, queue_url).await?;
        Ok(Self {
            client,
            queue_url: queue_url.to_owned(),
            fifo: fifo || queue_url.ends_with(".fifo"),
            group_id: group_id.to_owned(),
            max_message_bytes: Arc::new(AtomicUsize::new(
                cap.map_or(queue_max, |c| c.min(queue_max)),
            )),
            cap,
        })
    }

    /// Reads the queue's size limit again, after SQS refused a message for
    /// its size; returns the limit now packed for.
    async fn refresh_limit(&self) -> Result<usize, QueueError> {
        let (queue_max, _) = read_limits(&self.client, &self.queue_url).await?;
        let limit = self.cap.map_or(queue_max, |c| c.min(queue_max));
        self.max_message_bytes.store(limit, Ordering::Relaxed);
        Ok(limit)
    }

    fn entry(
        &self,
        origin: &Origin<'_>,
        chunk: &Chunk,
    ) -> Result<SendMessageBatchRequestEntry, QueueError> {
        let Origin {
            source_key,
            dedup_base,
            trace,
        } = *origin;
        let string = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
        };
        let number = |v: u64| {
            MessageAttributeValue::builder()
                .data_type("Number")
                .string_value(v.to_string())
                .build()
        };
        let mut e = SendMessageBatchRequestEntry::builder()
            .id(entry_id(chunk.index))
            // Bodies are projections of validated records, so UTF-8, with
            // the characters SQS refuses already escaped.
            .message_body(String::from_utf8_lossy(&chunk.body))
            .set_message_attributes(Some(
                [
                    (ATTR_SOURCE_KEY.to_owned(), string(&sqs_text(source_key))),
                    (ATTR_CHUNK.to_owned(), number(chunk.index.into())),
                    (ATTR_RECORDS.to_owned(), number(chunk.records.into())),
                ]
                .into_iter()
                .chain(trace.map(|t| (ATTR_TRACEPARENT.to_owned(), string(&t.to_string()))))
                // A claim check: the Extended Client resolves the pointer.
                .chain(
                    chunk
                        .payload_size
                        .map(|n| (ATTR_EXTENDED_PAYLOAD_SIZE.to_owned(), number(n))),
                )
                .filter_map(|(k, v)| v.ok().map(|v| (k, v)))
                .collect(),
            ));
        if let Some(t) = trace {
            // X-Ray and Lambda read the trace from this system attribute,
            // which does not count towards the message's size.
            let header = MessageSystemAttributeValue::builder()
                .data_type("String")
                .string_value(t.xray_header())
                .build();
            if let Ok(header) = header {
                e = e.message_system_attributes(
                    MessageSystemAttributeNameForSends::AwsTraceHeader,
                    header,
                );
            }
        }
        if self.fifo {
            e = e
                .message_group_id(&self.group_id)
                .message_deduplication_id(dedup_id(dedup_base, chunk.index));
        }
        e.build().map_err(|err| QueueError::Call {
            queue: self.queue_url.clone(),
            op: "SendMessageBatch",
            message: err.to_string(),
            class: Class::Permanent,
            cause: relay_shared::retry::Cause::Other,
        })
    }

    async fn too_large(&self, message: String) -> QueueError {
        match self.refresh_limit().await {
            Ok(limit) => QueueError::TooLarge {
                queue: self.queue_url.clone(),
                message,
                limit,
            },
            Err(e) => e,
        }
    }

    /// What the batch loop's result says of the chunks: stored, refused for
    /// good, and why the rest were not sent.
    async fn outcome(&self, result: BatchResult) -> BatchOutcome {
        let index = |id: &str| id.strip_prefix('c').and_then(|n| n.parse::<u32>().ok());
        let mut outcome = BatchOutcome {
            accepted: result.stored.iter().filter_map(|id| index(id)).collect(),
            refused: result
                .refused
                .into_iter()
                .filter_map(|f| Some((index(&f.id)?, f.reason)))
                .collect(),
            failed: None,
        };
        let failed = match result.unsent {
            None => return outcome,
            Some(Unsent::Stopped(f)) => self.too_large(f.reason).await,
            Some(Unsent::UnknownId(f)) => QueueError::Refused {
                queue: self.queue_url.clone(),
                id: f.id,
                code: "UnknownEntryId".into(),
                message: format!(
                    "SQS reported a failure for an entry not in the batch ({})",
                    f.reason
                ),
            },
            Some(Unsent::Call(QueueError::Call { message, .. }))
                if is_size_refusal(&message, &message) =>
            {
                self.too_large(message).await
            }
            Some(Unsent::Call(e)) => e,
            Some(Unsent::GaveUp { failed, last }) => QueueError::GaveUp {
                queue: self.queue_url.clone(),
                failed,
                last,
            },
        };
        outcome.failed = Some(failed);
        outcome
    }
}

/// A chunk's entry id in its batch.
fn entry_id(chunk: u32) -> String {
    format!("c{chunk}")
}

/// What to do with an entry SQS failed: re-pack after a size refusal,
/// never resend one it refused as the sender's fault, retry the rest.
fn judge(f: &BatchResultErrorEntry) -> Verdict {
    let message = f.message.as_deref().unwrap_or_default();
    let throttled = classify_code(None, &f.code) != Class::Permanent;
    if is_size_refusal(&f.code, message) {
        Verdict::Stop
    } else if f.sender_fault && !throttled {
        Verdict::Refused
    } else {
        Verdict::Retry
    }
}

impl MessageSink for SqsOutput {
    /// Sends one batch; entries that fail for a transient reason (throttling,
    /// a service error) are retried, alone, with backoff. Says which chunks
    /// SQS stored and which it refused, so that no retry resends a stored one.
    async fn send(
        &self,
        origin: &Origin<'_>,
        batch: &[Chunk],
        until: std::time::Instant,
    ) -> BatchOutcome {
        let entries = batch
            .iter()
            .map(|c| self.entry(origin, c))
            .collect::<Result<Vec<_>, _>>();
        let entries = match entries {
            Ok(entries) => entries,
            Err(e) => return BatchOutcome::default().failing(e),
        };
        // Past `until` the lease may end while we send; a takeover would then
        // send the same batch. The object is retried and resumes instead.
        let result = send_batch(&self.client, &self.queue_url, entries, Some(until), judge).await;
        self.outcome(result).await
    }

    fn max_message_bytes(&self) -> usize {
        self.max_message_bytes.load(Ordering::Relaxed)
    }

    fn is_fifo(&self) -> bool {
        self.fifo
    }

    fn queue_url(&self) -> &str {
        &self.queue_url
    }
}
