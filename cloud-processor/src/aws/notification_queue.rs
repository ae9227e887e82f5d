//! SQS adapter for the notification queue: receiving S3 notifications (in
//! `poll`), deleting them once done, making a failed one visible again
//! early, and sending replayed events. The output queue is
//! [`super::output_queue`].

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use super::sqs::{Unsent, Verdict, call_error, send_batch};
use crate::ingest::NotificationQueue;
use crate::output::QueueError;

/// The queue notifications are received from (in Lambda, through its
/// event source mapping), so a failed one can come back early.
#[derive(Debug, Clone)]
pub struct SqsNotifications {
    client: Client,
    queue_url: String,
}

/// One notification received: its body, the handle that deletes it, and
/// how many times it was handed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub body: String,
    pub receipt: String,
    pub handoffs: u32,
}

/// How long a receive waits for messages (SQS's longest long poll).
pub const LONG_POLL_SECS: i32 = 20;

impl SqsNotifications {
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
    pub async fn probe(&self) -> Result<(), QueueError> {
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
    pub async fn receive(&self, visibility_secs: u32) -> Result<Vec<Received>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(LONG_POLL_SECS)
            .visibility_timeout(i32::try_from(visibility_secs).unwrap_or(43_200))
            .message_attribute_names(crate::ingest::HANDOFFS_ATTRIBUTE)
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
                let handoffs = m
                    .message_attributes
                    .as_ref()
                    .and_then(|a| a.get(crate::ingest::HANDOFFS_ATTRIBUTE))
                    .and_then(|v| v.string_value()?.parse().ok())
                    .unwrap_or(0);
                Some(Received {
                    body: m.body?,
                    receipt: m.receipt_handle?,
                    handoffs,
                })
            })
            .collect())
    }

    /// Sends one notification (a replayed S3 event).
    pub async fn send(&self, body: String) -> Result<(), QueueError> {
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
    /// through the one batch loop: entries SQS failed on its side are
    /// retried, one it refused as the sender's fault fails the batch.
    /// Returns the requests made.
    pub async fn send_batch(&self, bodies: &[String]) -> Result<u64, QueueError> {
        let entries = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| QueueError::GaveUp {
                queue: self.queue_url.clone(),
                failed: bodies.len(),
                last: e.to_string(),
            })?;
        let judge = |f: &aws_sdk_sqs::types::BatchResultErrorEntry| {
            if f.sender_fault {
                Verdict::Stop
            } else {
                Verdict::Retry
            }
        };
        let result = send_batch(&self.client, &self.queue_url, entries, None, judge).await;
        let refused = |f: super::sqs::EntryFailure| {
            let (code, message) = f.reason.split_once(": ").unwrap_or((&f.reason, ""));
            QueueError::Refused {
                queue: self.queue_url.clone(),
                id: f.id.clone(),
                code: code.to_owned(),
                message: message.to_owned(),
            }
        };
        match result.unsent {
            None => Ok(result.requests),
            Some(Unsent::Stopped(f) | Unsent::UnknownId(f)) => Err(refused(f)),
            Some(Unsent::Call(e)) => Err(e),
            Some(Unsent::GaveUp { failed, last }) => Err(QueueError::GaveUp {
                queue: self.queue_url.clone(),
                failed,
                last,
            }),
        }
    }

    /// Sends a notification again as a fresh message (SendMessage, its
    /// delay at most SQS's 15 minutes), with `relay.handoffs`: an object
    /// left unfinished goes on without its notification's receive count
    /// growing towards the dead-letter queue.
    pub async fn hand_on(
        &self,
        body: &str,
        after: Duration,
        handoffs: u32,
    ) -> Result<(), QueueError> {
        let delay = i32::try_from(after.as_secs().min(900)).unwrap_or(900);
        let count = aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("Number")
            .string_value(handoffs.to_string())
            .build()
            .map_err(|e| QueueError::GaveUp {
                queue: self.queue_url.clone(),
                failed: 1,
                last: e.to_string(),
            })?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .delay_seconds(delay)
            .message_attributes(crate::ingest::HANDOFFS_ATTRIBUTE, count)
            .send()
            .await
            .map(drop)
            .map_err(|e| call_error(&self.queue_url, "SendMessage", e))
    }

    /// Deletes a processed notification.
    pub async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
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
    pub async fn show_again(&self, receipt: &str, after: Duration) -> Result<(), QueueError> {
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

impl NotificationQueue for SqsNotifications {
    async fn show_again(&self, receipt: &str, after: Duration) -> Result<(), QueueError> {
        SqsNotifications::show_again(self, receipt, after).await
    }

    async fn hand_on(
        &self,
        body: &str,
        after: Duration,
        handoffs: u32,
    ) -> Result<bool, QueueError> {
        SqsNotifications::hand_on(self, body, after, handoffs)
            .await
            .map(|()| true)
    }
}
