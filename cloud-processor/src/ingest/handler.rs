//! One event in, every object it names handed to the processor: the
//! Lambda's payloads (S3, SNS, SQS-delivered, EventBridge) and `poll`'s SQS
//! message bodies. Every payload is processed, ignored on purpose and
//! counted, or failed so that it reaches the dead-letter queue.

use std::time::{Duration, Instant};

use relay_shared::store::ObjectStore;
use serde_json::{Value, json};
use tracing::{error, info, warn};

use crate::ingest::event::{EventError, Incoming, Notice, classify, from_text};
use crate::ingest::queue::{NoQueue, NotificationQueue};
use crate::metrics as m;
use crate::object::{Failure, Outcome, ProcessError, Processor};
use crate::output::MessageSink;

/// Why an event was not handled.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// It has no known shape: it is never acknowledged, so it reaches the
    /// dead-letter queue.
    #[error(transparent)]
    Event(#[from] EventError),
    /// An object it names failed (the first, if several did).
    #[error(transparent)]
    Object(#[from] ProcessError),
}

impl HandleError {
    /// What went wrong with the object, if an object failed.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Self::Event(_) => None,
            Self::Object(e) => Some(&e.failure),
        }
    }

    /// When a notification that failed this way is worth trying again
    /// ([`ProcessError::retry_after`]; an event of no known shape soon, on
    /// its way to the dead-letter queue).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Event(_) => Some(Duration::from_secs(10)),
            Self::Object(e) => e.retry_after(),
        }
    }
}

/// The processor behind an event source: in Lambda with the queue its
/// notifications come from, so a failed one can come back early.
#[derive(Debug)]
pub struct Handler<'a, S, Q, N = NoQueue> {
    processor: &'a Processor<S, Q>,
    notifications: Option<&'a N>,
}

impl<'a, S: ObjectStore, Q: MessageSink> Handler<'a, S, Q, NoQueue> {
    pub fn new(processor: &'a Processor<S, Q>) -> Self {
        Self {
            processor,
            notifications: None,
        }
    }

    /// Lets failed SQS-delivered notifications come back early: the queue
    /// they come from (`RELAY_NOTIFICATION_QUEUE_URL` in Lambda).
    pub fn with_queue<N: NotificationQueue>(self, queue: &'a N) -> Handler<'a, S, Q, N> {
        Handler {
            processor: self.processor,
            notifications: Some(queue),
        }
    }
}

impl<S: ObjectStore, Q: MessageSink, N: NotificationQueue> Handler<'_, S, Q, N> {
    /// Processes every object one notification names, or counts it as
    /// ignored on purpose. Each object is tried, whatever happened to the
    /// ones before it (a replayed notification names several): the
    /// notification fails if any did, with the first failure, and its
    /// redelivery skips the objects that are done by their markers.
    async fn process_notice(
        &self,
        notice: Notice,
        stop_at: Option<Instant>,
    ) -> Result<Vec<Outcome>, HandleError> {
        let objects = match notice {
            Notice::Objects(objects) => objects,
            Notice::Ignored(reason) => {
                info!(reason, "notification ignored on purpose");
                metrics::counter!(m::EVENTS, "outcome" => "ignored").increment(1);
                return Ok(Vec::new());
            }
        };
        let mut outcomes = Vec::new();
        let mut first_failure = None;
        for obj in &objects {
            match self.processor.process_object_until(obj, stop_at).await {
                Ok(o) => outcomes.push(o),
                Err(e) => {
                    if objects.len() > 1 {
                        error!(bucket = %obj.bucket, key = %obj.key, error = %e,
                            "one object of the notification failed; the others are tried");
                    }
                    first_failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_failure {
            metrics::counter!(m::EVENTS, "outcome" => "failed").increment(1);
            return Err(e.into());
        }
        metrics::counter!(m::EVENTS, "outcome" => "processed").increment(1);
        Ok(outcomes)
    }

    /// Processes an SQS message body (or an SNS message) holding a
    /// notification. A body of no known shape is an error, so it is never
    /// acknowledged and reaches the dead-letter queue.
    pub async fn process_message_body(&self, body: &str) -> Result<Vec<Outcome>, HandleError> {
        self.process_message_body_until(body, None).await
    }

    async fn process_message_body_until(
        &self,
        body: &str,
        stop_at: Option<Instant>,
    ) -> Result<Vec<Outcome>, HandleError> {
        let notice = from_text(body).map_err(unknown)?;
        self.process_notice(notice, stop_at).await
    }

    /// The Lambda entry point's logic. Direct S3, SNS and EventBridge
    /// events fail as a whole (Lambda retries them, then its on-failure
    /// destination has them); SQS batches report per-message failures.
    pub async fn handle(&self, event: Value) -> Result<Value, HandleError> {
        self.handle_until(event, None).await
    }

    /// As [`Handler::handle`], for an invocation that ends at `deadline`
    /// (the Lambda's). Sending stops early enough for the last call to
    /// finish and the lease to be released ([`Processor::stop_margin`]), so
    /// a long object fails cleanly and resumes in the next invocation,
    /// instead of the invocation being killed mid-send (a crash, retried
    /// only after the visibility timeout).
    pub async fn handle_until(
        &self,
        event: Value,
        deadline: Option<Instant>,
    ) -> Result<Value, HandleError> {
        // A short invocation keeps half its time for sending.
        let stop_at = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            d.checked_sub(self.processor.stop_margin().min(left / 2))
                .unwrap_or(d)
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
                        if let (Some(queue), Some(after)) = (self.notifications, e.retry_after()) {
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

/// Makes a failed notification visible again `after` from now. Should that
/// fail, it comes back after the queue's visibility timeout: later, not lost.
pub async fn show_again<N: NotificationQueue>(queue: &N, receipt: &str, after: Duration) {
    if let Err(e) = queue.show_again(receipt, after).await {
        warn!(error = %e, "shortening a failed notification's visibility failed; it comes back after the full timeout");
    }
}

/// Counts and logs a payload of no known shape, and turns it into an error.
fn unknown(e: EventError) -> HandleError {
    if let EventError::Unknown { why, excerpt } = &e {
        metrics::counter!(m::EVENTS, "outcome" => "unknown").increment(1);
        warn!(%why, %excerpt, "an event of no known shape; it is not acknowledged, so it ends in the dead-letter queue");
    }
    HandleError::Event(e)
}
