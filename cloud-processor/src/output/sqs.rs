//! SQS adapter for the output queue: its limits, and SendMessageBatch with
//! retries of exactly the entries that failed; and any queue's attributes,
//! as `check` reports them. The notification queue is `ingest::sqs`.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};
use relay_shared::retry::{Class, classify_code};
use sha2::{Digest, Sha256};

use crate::output::sink::{BatchOutcome, MessageSink};
use crate::sqs::{SqsError, call_error};

use crate::output::batch::{
    ATTR_CHUNK, ATTR_EXTENDED_PAYLOAD_SIZE, ATTR_RECORDS, ATTR_SOURCE_KEY, sqs_text,
};
use crate::pipeline::body::Chunk;

/// Sends to SQS give up after this many attempts of one batch; the object is
/// then retried as a whole by its event, which resumes (see the README).
const MAX_ATTEMPTS: usize = 8;

/// Whether SQS refused a message for its size (`BatchRequestTooLong`,
/// `MessageTooLong`, or "must be shorter than" in an entry's message).
fn is_size_refusal(code: &str, message: &str) -> bool {
    code.contains("TooLong") || message.contains("shorter than")
}

/// Where packed messages go.
#[derive(Debug, Clone)]
pub struct Output {
    client: Client,
    queue_url: String,
    fifo: bool,
    group_id: String,
    /// The queue's MaximumMessageSize (or a lower configured cap). Re-read
    /// when SQS refuses a message for its size: queues are reconfigured.
    max_message_bytes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    cap: Option<usize>,
}

impl Output {
    /// Reads the queue's size limit and type at start-up.
    /// As [`Output::connect`], with a client built from `sdk`.
    pub async fn open(
        sdk: &relay_shared::client::SdkConfig,
        queue_url: &str,
        group_id: &str,
        cap: Option<usize>,
    ) -> Result<Self, SqsError> {
        Self::connect(
            relay_shared::client::sqs_client(sdk),
            queue_url,
            group_id,
            cap,
        )
        .await
    }

    pub async fn connect(
        client: Client,
        queue_url: &str,
        group_id: &str,
        cap: Option<usize>,
    ) -> Result<Self, SqsError> {
        let (queue_max, fifo) = read_limits(&client, queue_url).await?;
        Ok(Self {
            client,
            queue_url: queue_url.to_owned(),
            fifo: fifo || queue_url.ends_with(".fifo"),
            group_id: group_id.to_owned(),
            max_message_bytes: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(
                cap.map_or(queue_max, |c| c.min(queue_max)),
            )),
            cap,
        })
    }

    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads the queue's size limit again, after SQS refused a message for
    /// its size; returns the limit now packed for.
    async fn refresh_limit(&self) -> Result<usize, SqsError> {
        let (queue_max, _) = read_limits(&self.client, &self.queue_url).await?;
        let limit = self.cap.map_or(queue_max, |c| c.min(queue_max));
        self.max_message_bytes
            .store(limit, std::sync::atomic::Ordering::Relaxed);
        Ok(limit)
    }

    fn entry(
        &self,
        source_key: &str,
        dedup_base: &str,
        chunk: &Chunk,
    ) -> Result<SendMessageBatchRequestEntry, SqsError> {
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
            .id(format!("c{}", chunk.index))
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
                // A claim check: the Extended Client resolves the pointer.
                .chain(
                    chunk
                        .payload_size
                        .map(|n| (ATTR_EXTENDED_PAYLOAD_SIZE.to_owned(), number(n))),
                )
                .filter_map(|(k, v)| v.ok().map(|v| (k, v)))
                .collect(),
            ));
        if self.fifo {
            e = e
                .message_group_id(&self.group_id)
                .message_deduplication_id(dedup_id(dedup_base, chunk.index));
        }
        e.build().map_err(|err| SqsError::Call {
            queue: self.queue_url.clone(),
            op: "SendMessageBatch",
            message: err.to_string(),
            class: Class::Permanent,
        })
    }

    async fn too_large(&self, message: String) -> SqsError {
        match self.refresh_limit().await {
            Ok(limit) => SqsError::TooLarge {
                queue: self.queue_url.clone(),
                message,
                limit,
            },
            Err(e) => e,
        }
    }
}

impl Output {
    /// What a SendMessageBatch answer says of the entries sent: the ones
    /// SQS stored go into `outcome`, as do those it refused as the
    /// sender's fault; the others, to retry, are returned. `last` is the
    /// last failure's text. A size refusal (the queue's limit was lowered
    /// since it was read) or a failure naming an entry we did not send ends
    /// the batch.
    async fn answered<'c>(
        &self,
        pending: &[&'c Chunk],
        failed: &[aws_sdk_sqs::types::BatchResultErrorEntry],
        outcome: &mut BatchOutcome,
        last: &mut String,
    ) -> Result<Vec<&'c Chunk>, SqsError> {
        let mut retry = Vec::new();
        for f in failed {
            let message = f.message.clone().unwrap_or_default();
            *last = format!("{}: {message}", f.code);
            // An id we did not send would leave us unable to tell which
            // chunk failed; never guess, never drop.
            let Some(chunk) = pending
                .iter()
                .copied()
                .find(|c| format!("c{}", c.index) == f.id)
            else {
                return Err(SqsError::Refused {
                    queue: self.queue_url.clone(),
                    id: f.id.clone(),
                    code: "UnknownEntryId".into(),
                    message: format!(
                        "SQS reported a failure for an entry not in the batch ({last})"
                    ),
                });
            };
            let throttled = classify_code(None, &f.code) != Class::Permanent;
            if is_size_refusal(&f.code, &message) {
                // Re-pack with the new limit.
                outcome.note_accepted(pending, failed);
                return Err(self.too_large(last.clone()).await);
            } else if f.sender_fault && !throttled {
                outcome.refused.push((chunk.index, last.clone()));
            } else {
                retry.push(chunk);
            }
        }
        outcome.note_accepted(pending, failed);
        Ok(retry)
    }
}

impl MessageSink for Output {
    /// Sends one batch; entries that fail for a transient reason (throttling,
    /// a service error) are retried, alone, with backoff. Says which chunks
    /// SQS stored and which it refused, so that no retry resends a stored one.
    async fn send(
        &self,
        source_key: &str,
        dedup_base: &str,
        batch: &[Chunk],
        until: std::time::Instant,
    ) -> BatchOutcome {
        let mut outcome = BatchOutcome::default();
        let mut pending: Vec<&Chunk> = batch.iter().collect();
        let mut backoff =
            relay_shared::retry::backoff(Duration::from_millis(100), Duration::from_secs(10));
        let mut last = String::new();
        for _ in 0..MAX_ATTEMPTS {
            let entries = match pending
                .iter()
                .map(|c| self.entry(source_key, dedup_base, c))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(entries) => entries,
                Err(e) => return outcome.failing(e),
            };
            match self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => {
                    let answered = self
                        .answered(&pending, &out.failed, &mut outcome, &mut last)
                        .await;
                    let retry = match answered {
                        Ok(retry) => retry,
                        Err(e) => return outcome.failing(e),
                    };
                    if retry.is_empty() {
                        return outcome;
                    }
                    tracing::warn!(failed = retry.len(), of = pending.len(), %last, "SendMessageBatch partly failed; retrying those entries");
                    metrics::counter!(crate::metrics::SEND_RETRIES).increment(1);
                    pending = retry;
                }
                Err(e) => match call_error(&self.queue_url, "SendMessageBatch", e) {
                    SqsError::Call { class, message, .. } if class.is_retryable() => {
                        tracing::warn!(%message, "SendMessageBatch failed; retrying");
                        metrics::counter!(crate::metrics::SEND_RETRIES).increment(1);
                        last = message;
                    }
                    SqsError::Call { message, .. } if is_size_refusal(&message, &message) => {
                        return outcome.failing(self.too_large(message).await);
                    }
                    permanent => return outcome.failing(permanent),
                },
            }
            let delay = backoff.next().unwrap_or(Duration::from_secs(10));
            if std::time::Instant::now() + delay > until {
                // Past this, the lease may end while we send; a takeover
                // would then send the same batch. Give up; the attempt is
                // retried and resumes.
                last.push_str(" (stopped retrying while the lease lasts)");
                break;
            }
            tokio::time::sleep(delay).await;
        }
        outcome.failing(SqsError::GaveUp {
            queue: self.queue_url.clone(),
            failed: pending.len(),
            last,
        })
    }

    fn max_message_bytes(&self) -> usize {
        Output::max_message_bytes(self)
    }

    fn is_fifo(&self) -> bool {
        self.fifo
    }

    fn queue_url(&self) -> &str {
        &self.queue_url
    }
}

/// What `check` reports about a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFacts {
    pub fifo: bool,
    pub max_message_bytes: usize,
    pub visibility_timeout_secs: u32,
    /// Deliveries before the dead-letter queue, if the queue has one.
    pub max_receive_count: Option<u32>,
}

/// Reads the attributes `check` reports on.
/// Any queue, as `check` sees it.
#[derive(Debug, Clone)]
pub struct Queues {
    client: Client,
}

impl Queues {
    pub fn connect(sdk: &relay_shared::client::SdkConfig) -> Self {
        Self {
            client: relay_shared::client::sqs_client(sdk),
        }
    }

    /// The queue's attributes, as `check` reports them.
    pub async fn facts(&self, queue_url: &str) -> Result<QueueFacts, SqsError> {
        queue_facts(&self.client, queue_url).await
    }
}

async fn queue_facts(client: &Client, queue_url: &str) -> Result<QueueFacts, SqsError> {
    let attrs = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(|e| call_error(queue_url, "GetQueueAttributes", e))?
        .attributes
        .unwrap_or_default();
    let number = |name: QueueAttributeName| attrs.get(&name).and_then(|v| v.parse::<u32>().ok());
    let max_receive_count = attrs
        .get(&QueueAttributeName::RedrivePolicy)
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        .and_then(|p| match &p["maxReceiveCount"] {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        })
        .and_then(|n| u32::try_from(n).ok());
    Ok(QueueFacts {
        fifo: attrs
            .get(&QueueAttributeName::FifoQueue)
            .is_some_and(|v| v == "true"),
        max_message_bytes: number(QueueAttributeName::MaximumMessageSize)
            .map_or(262_144, |n| n as usize),
        visibility_timeout_secs: number(QueueAttributeName::VisibilityTimeout).unwrap_or(30),
        max_receive_count,
    })
}

/// The queue's MaximumMessageSize and whether it is FIFO.
async fn read_limits(client: &Client, queue_url: &str) -> Result<(usize, bool), SqsError> {
    let attrs = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::MaximumMessageSize)
        .attribute_names(QueueAttributeName::FifoQueue)
        .send()
        .await
        .map_err(|e| call_error(queue_url, "GetQueueAttributes", e))?;
    let attrs = attrs.attributes.unwrap_or_default();
    let queue_max = attrs
        .get(&QueueAttributeName::MaximumMessageSize)
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(262_144);
    let fifo = attrs
        .get(&QueueAttributeName::FifoQueue)
        .is_some_and(|v| v == "true");
    Ok((queue_max, fifo))
}

/// What every FIFO deduplication id of an object is derived from: the
/// object as it was read (its version id in a versioned bucket, else its
/// ETag), never what the event said. A live event carries `versionId` and a
/// replayed one does not; taking the id from the event gave a resume driven
/// by replay other deduplication ids, so FIFO could not drop its resent batch.
pub fn dedup_base(bucket: &str, key: &str, read_version: Option<&str>, read_etag: &str) -> String {
    format!("{bucket}/{key}\0{}", read_version.unwrap_or(read_etag))
}

/// A deterministic MessageDeduplicationId: the same object version and chunk
/// always give the same id, so a resend inside FIFO's 5-minute window is
/// dropped by SQS.
pub fn dedup_id(dedup_base: &str, chunk: u32) -> String {
    let digest = Sha256::digest(format!("{dedup_base}\0{chunk}").as_bytes());
    hex::encode(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_ids_are_deterministic_distinct_and_short() {
        let a = dedup_id("b/raw/k\0etag1", 0);
        assert_eq!(a, dedup_id("b/raw/k\0etag1", 0));
        assert_ne!(a, dedup_id("b/raw/k\0etag1", 1));
        assert_ne!(a, dedup_id("b/raw/k\0etag2", 0));
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
