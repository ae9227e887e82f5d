//! One event in, every object it names handed to the processor: the
//! Lambda's payloads (S3, SNS, SQS-delivered, EventBridge) and `poll`'s SQS
//! message bodies. Every payload is processed, ignored on purpose and
//! counted, handed on as a fresh notification (an object unfinished, not
//! failing), or failed so that it reaches the dead-letter queue.

use std::time::{Duration, Instant};

use relay_shared::store::ObjectStore;
use serde_json::{Value, json};
use tracing::{error, info, warn};

use crate::ingest::event::{EventError, Incoming, Notice, SqsMessage, classify, from_text};
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
    /// An object it names failed (a real failure first, if several did).
    #[error(transparent)]
    Object(#[from] ProcessError),
    /// Its objects are unfinished, not failing: stopped at the deadline
    /// after this invocation made progress, or busy in another processor.
    #[error("{0} (unfinished)")]
    Unfinished(ProcessError),
}

impl HandleError {
    /// What went wrong with the object, if an object failed.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Self::Event(_) => None,
            Self::Object(e) | Self::Unfinished(e) => Some(&e.failure),
        }
    }

    /// When to go on with a notification whose objects are unfinished
    /// rather than failing ([`ProcessError::unfinished`]), if it has been
    /// handed on fewer than [`MAX_HANDOFFS`] times.
    pub fn hand_on_after(&self, handoffs: u32) -> Option<Duration> {
        match self {
            Self::Unfinished(e) if handoffs < MAX_HANDOFFS => e.unfinished(),
            _ => None,
        }
    }

    /// When a notification that failed this way is worth trying again
    /// ([`ProcessError::retry_after`]; an event of no known shape soon, on
    /// its way to the dead-letter queue).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Event(_) => Some(Duration::from_secs(10)),
            Self::Object(e) | Self::Unfinished(e) => e.retry_after(),
        }
    }
}

/// How many times one notification may be handed on. Each hand-on after
/// a deadline follows progress, so a finite object ends long before; the
/// bound stops a notification circling for ever should an object stay
/// busy (at most a day of 90 s leases, say): it then fails as usual.
pub const MAX_HANDOFFS: u32 = 1000;

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
        let mut failure: Option<ProcessError> = None;
        let mut progressed = false;
        for obj in &objects {
            match self.processor.process_object_until(obj, stop_at).await {
                Ok(o) => {
                    progressed = true;
                    outcomes.push(o);
                }
                Err(e) => {
                    if objects.len() > 1 {
                        error!(bucket = %obj.bucket, key = %obj.key, error = %e,
                            "one object of the notification failed; the others are tried");
                    }
                    progressed |= e.sent_some();
                    // A real failure is the one reported.
                    let worse = failure
                        .as_ref()
                        .is_none_or(|f| f.unfinished().is_some() && e.unfinished().is_none());
                    if worse {
                        failure = Some(e);
                    }
                }
            }
        }
        let Some(e) = failure else {
            metrics::counter!(m::EVENTS, "outcome" => "processed").increment(1);
            return Ok(outcomes);
        };
        // Unfinished only if every object is, and a deadline stop followed
        // progress: one that sent nothing would stop the same way again.
        let stalled = matches!(e.failure, Failure::Deadline { .. }) && !progressed;
        if e.unfinished().is_some() && !stalled {
            return Err(HandleError::Unfinished(e));
        }
        Err(HandleError::Object(e))
    }

    /// Processes an SQS message body (or an SNS message) holding a
    /// notification. A body of no known shape is an error, so it is never
    /// acknowledged and reaches the dead-letter queue.
    pub async fn process_message_body(&self, body: &str) -> Result<Vec<Outcome>, HandleError> {
        self.process_message_body_until(body, None).await
    }

    /// Counts a notification that failed, and passes its error on.
    fn failed(e: HandleError) -> HandleError {
        note_failed(&e);
        e
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
                self.process_notice(notice, stop_at)
                    .await
                    .map_err(Self::failed)?;
                Ok(Value::Null)
            }
            Incoming::Sns(notices) => {
                for notice in notices {
                    self.process_notice(notice, stop_at)
                        .await
                        .map_err(Self::failed)?;
                }
                Ok(Value::Null)
            }
            Incoming::Sqs(messages) => {
                let mut failures = Vec::new();
                for m in messages {
                    if let Err(e) = self.process_message_body_until(&m.body, stop_at).await
                        && !self.settle_failed(&m, e).await
                    {
                        failures.push(json!({ "itemIdentifier": m.message_id }));
                    }
                }
                Ok(json!({ "batchItemFailures": failures }))
            }
        }
    }

    /// A message whose notification did not succeed: handed on as a fresh
    /// notification if its objects are unfinished (`true`: it is done
    /// with), else failed, to come back when retrying makes sense.
    async fn settle_failed(&self, m: &SqsMessage, e: HandleError) -> bool {
        if let Some(queue) = self.notifications
            && hand_on(queue, &m.body, m.handoffs, &e).await
        {
            return true;
        }
        let e = Self::failed(e);
        error!(message_id = %m.message_id, error = %e, "message failed; SQS will redeliver it, then move it to the dead-letter queue");
        if let (Some(queue), Some(after)) = (self.notifications, e.retry_after()) {
            show_again(queue, &m.receipt_handle, after).await;
        }
        false
    }
}

/// Counts a notification that failed (one of no known shape is counted
/// as `unknown` where it is found).
pub fn note_failed(e: &HandleError) {
    if !matches!(e, HandleError::Event(_)) {
        metrics::counter!(m::EVENTS, "outcome" => "failed").increment(1);
    }
}

/// Hands a notification whose objects are unfinished (stopped at the
/// deadline after progress, or busy elsewhere) on as a fresh one, so its
/// deliveries do not count towards the dead-letter queue; `true` once the
/// fresh one is sent, and the old one may be acknowledged. Counted and
/// logged either way.
pub async fn hand_on<N: NotificationQueue>(
    queue: &N,
    body: &str,
    handoffs: u32,
    e: &HandleError,
) -> bool {
    let Some(after) = e.hand_on_after(handoffs) else {
        return false;
    };
    match queue.hand_on(body, after, handoffs + 1).await {
        Ok(true) => {
            metrics::counter!(m::EVENTS, "outcome" => "handed_on").increment(1);
            info!(reason = %e, handoffs = handoffs + 1, after_secs = after.as_secs(),
                "the object is unfinished, not failing: its notification is handed on as a fresh one");
            true
        }
        Ok(false) => false,
        Err(q) => {
            warn!(error = %q, "handing an unfinished object's notification on failed; it is retried as a failure instead");
            false
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
