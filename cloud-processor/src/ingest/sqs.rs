//! SQS adapter for the notification queue: receiving S3 notifications (in
//! `poll`), deleting them once done, making a failed one visible again
//! early, and sending replayed events. The output queue is `output::sqs`.

use std::time::Duration;

use aws_sdk_sqs::Client;

use crate::sqs::{SqsError, call_error};

/// The queue notifications are received from (in Lambda, through its
/// event source mapping), so a failed one can come back early.
#[derive(Debug, Clone)]
pub struct Notifications {
    client: Client,
    queue_url: String,
}

/// One notification received: its body and the handle that deletes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub body: String,
    pub receipt: String,
}

/// How long a receive waits for messages (SQS's longest long poll).
pub const LONG_POLL_SECS: i32 = 20;

impl Notifications {
    pub fn new(client: Client, queue_url: String) -> Self {
        Self { client, queue_url }
    }

    /// The queue at `queue_url`, through a client built from `sdk`.
    pub fn connect(sdk: &relay_shared::client::SdkConfig, queue_url: String) -> Self {
        Self::new(relay_shared::client::sqs_client(sdk), queue_url)
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Asks for the queue's ARN: whether it exists and this role may use
    /// it, before the first receive.
    pub async fn probe(&self) -> Result<(), SqsError> {
        self.client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .map(drop)
            .map_err(|e| call_error(&self.queue_url, "GetQueueAttributes", e))
    }

    /// A long poll is silent for up to [`LONG_POLL_SECS`] by design: its
    /// timeouts are the client's plus that wait.
    fn long_poll_timeouts(&self) -> aws_sdk_sqs::config::Builder {
        let wait = Duration::from_secs(LONG_POLL_SECS as u64);
        let base = self
            .client
            .config()
            .timeout_config()
            .cloned()
            .unwrap_or_else(|| aws_sdk_sqs::config::timeout::TimeoutConfig::builder().build());
        let extend = |t: Option<Duration>| t.map(|t| t + wait);
        let mut timeouts = base.to_builder();
        timeouts
            .set_operation_attempt_timeout(extend(base.operation_attempt_timeout()))
            .set_operation_timeout(extend(base.operation_timeout()));
        aws_sdk_sqs::config::Builder::default().timeout_config(timeouts.build())
    }

    /// Long-polls for up to ten notifications, each hidden from other
    /// receivers for `visibility_secs`.
    pub async fn receive(&self, visibility_secs: u32) -> Result<Vec<Received>, SqsError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(LONG_POLL_SECS)
            .visibility_timeout(i32::try_from(visibility_secs).unwrap_or(43_200))
            .customize()
            .config_override(self.long_poll_timeouts())
            .send()
            .await
            .map_err(|e| call_error(&self.queue_url, "ReceiveMessage", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(Received {
                    body: m.body?,
                    receipt: m.receipt_handle?,
                })
            })
            .collect())
    }

    /// Sends one notification (a replayed S3 event).
    pub async fn send(&self, body: String) -> Result<(), SqsError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map(drop)
            .map_err(|e| call_error(&self.queue_url, "SendMessage", e))
    }

    /// Sends up to ten notifications in one SendMessageBatch (replay),
    /// retrying the entries SQS failed on its side, with backoff. Returns
    /// the requests made.
    pub async fn send_batch(&self, bodies: &[String]) -> Result<u64, SqsError> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        const ATTEMPTS: u32 = 6;
        let mut backoff =
            relay_shared::retry::backoff(Duration::from_millis(100), Duration::from_secs(5));
        let mut pending: Vec<usize> = (0..bodies.len()).collect();
        let mut requests = 0;
        let gave_up = |failed: usize, last: String| SqsError::GaveUp {
            queue: self.queue_url.clone(),
            failed,
            last,
        };
        for _ in 0..ATTEMPTS {
            let entries = pending.iter().map(|&i| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&bodies[i])
                    .build()
            });
            let entries = entries
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| gave_up(pending.len(), e.to_string()))?;
            requests += 1;
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| call_error(&self.queue_url, "SendMessageBatch", e))?;
            let mut retry = Vec::new();
            for f in out.failed() {
                if f.sender_fault {
                    return Err(SqsError::Refused {
                        queue: self.queue_url.clone(),
                        id: f.id.clone(),
                        code: f.code.clone(),
                        message: f.message.clone().unwrap_or_default(),
                    });
                }
                retry.extend(f.id.parse::<usize>().ok());
            }
            if retry.is_empty() {
                return Ok(requests);
            }
            pending = retry;
            tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(5))).await;
        }
        Err(gave_up(
            pending.len(),
            "SQS kept failing entries on its side".into(),
        ))
    }

    /// Deletes a processed notification.
    pub async fn delete(&self, receipt: &str) -> Result<(), SqsError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(drop)
            .map_err(|e| call_error(&self.queue_url, "DeleteMessage", e))
    }

    /// Makes a received message visible again `after` from now
    /// (ChangeMessageVisibility through its receipt handle): a failed
    /// notification comes back when retrying makes sense, not after the
    /// queue's whole visibility timeout.
    pub async fn show_again(&self, receipt: &str, after: Duration) -> Result<(), SqsError> {
        let secs = i32::try_from(after.as_secs().clamp(1, 43_200)).unwrap_or(43_200);
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(secs)
            .send()
            .await
            .map(drop)
            .map_err(|e| call_error(&self.queue_url, "ChangeMessageVisibility", e))
    }
}
