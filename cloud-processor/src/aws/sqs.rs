//! What the adapters of both queues share: an SQS call's error, classified
//! once by the workspace's retry classification, and the one
//! SendMessageBatch loop, which retries exactly the entries that failed
//! on SQS's side and the whole call after a transient failure.

use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{BatchResultErrorEntry, SendMessageBatchRequestEntry};
use relay_shared::attempts::{self, Cause};
use relay_shared::retry::{cause_of, classify};

use crate::output::QueueError;

/// An SQS call's SDK error, as the queue's adapters report it.
pub(crate) fn call_error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    queue: &str,
    op: &'static str,
    e: SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> QueueError {
    let class = classify(&e);
    let cause = cause_of(&e);
    let message = match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        _ => relay_shared::client::describe(&e),
    };
    QueueError::Call {
        queue: queue.to_owned(),
        op,
        message,
        class,
        cause,
    }
}

/// A batch is tried at most this many times; the caller then retries as a
/// whole (an object by its event, which resumes; a replay partition from
/// its checkpoint).
const MAX_ATTEMPTS: usize = 8;

/// What the caller makes of one entry SQS failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// SQS's side (throttling, a service error): send it again.
    Retry,
    /// Refused for good (the sender's fault): settled, never resent.
    Refused,
    /// Stop the batch here (a size refusal: the caller re-packs).
    Stop,
}

/// An entry SQS failed, as the caller is told of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryFailure {
    pub id: String,
    /// `code: message`.
    pub reason: String,
}

/// Why some entries of a batch were not sent.
#[derive(Debug)]
pub(crate) enum Unsent {
    /// The caller stopped the batch at this entry.
    Stopped(EntryFailure),
    /// SQS named an entry that was not in the batch: nothing can be told
    /// of which entry failed, so nothing is guessed or dropped.
    UnknownId(EntryFailure),
    /// The call itself failed for good.
    Call(QueueError),
    /// Still failing after the attempts, or past the time the caller gave.
    GaveUp { failed: usize, last: String },
}

/// What became of one batch.
#[derive(Debug, Default)]
pub(crate) struct BatchResult {
    /// Ids SQS stored.
    pub stored: Vec<String>,
    /// Entries refused for good.
    pub refused: Vec<EntryFailure>,
    /// Why the others were not sent, if any were not.
    pub unsent: Option<Unsent>,
    /// SendMessageBatch requests made.
    pub requests: u64,
}

fn entry_failure(f: &BatchResultErrorEntry) -> EntryFailure {
    EntryFailure {
        id: f.id.clone(),
        reason: format!("{}: {}", f.code, f.message.as_deref().unwrap_or_default()),
    }
}

/// Sends `entries` to `queue_url`, retrying the entries SQS failed on its
/// side (as `judge` says) and the whole call after a transient failure,
/// with backoff, but starting no attempt after `until`.
pub(crate) async fn send_batch(
    client: &Client,
    queue_url: &str,
    entries: Vec<SendMessageBatchRequestEntry>,
    until: Option<Instant>,
    mut judge: impl FnMut(&BatchResultErrorEntry) -> Verdict,
) -> BatchResult {
    let mut result = BatchResult::default();
    let mut pending = entries;
    let mut backoff =
        relay_shared::retry::backoff(Duration::from_millis(100), Duration::from_secs(10));
    let mut last = String::new();
    for _ in 0..MAX_ATTEMPTS {
        result.requests += 1;
        let answer = client
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(pending.clone()))
            .send()
            .await;
        match answer {
            Ok(out) => {
                let retry = match answered(&pending, &out.failed, &mut judge, &mut result) {
                    Some(retry) => retry,
                    None => return result,
                };
                if retry.is_empty() {
                    return result;
                }
                last = out
                    .failed
                    .last()
                    .map(|f| entry_failure(f).reason)
                    .unwrap_or_default();
                tracing::warn!(queue = queue_url, failed = retry.len(), of = pending.len(), %last,
                    "SendMessageBatch partly failed; retrying those entries");
                metrics::counter!(crate::metrics::SEND_RETRIES).increment(1);
                attempts::count("sqs", "SendMessageBatch", Cause::PartialBatch);
                pending.retain(|e| retry.contains(&e.id));
            }
            Err(e) => match call_error(queue_url, "SendMessageBatch", e) {
                QueueError::Call {
                    class,
                    message,
                    cause,
                    ..
                } if class.is_retryable() => {
                    tracing::warn!(queue = queue_url, %message, "SendMessageBatch failed; retrying");
                    metrics::counter!(crate::metrics::SEND_RETRIES).increment(1);
                    attempts::count("sqs", "SendMessageBatch", cause);
                    last = message;
                }
                permanent => {
                    result.unsent = Some(Unsent::Call(permanent));
                    return result;
                }
            },
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(10));
        if until.is_some_and(|until| Instant::now() + delay > until) {
            last.push_str(" (stopped retrying in time for the caller's deadline)");
            break;
        }
        tokio::time::sleep(delay).await;
    }
    result.unsent = Some(Unsent::GaveUp {
        failed: pending.len(),
        last,
    });
    result
}

/// Files one answer's failures: stored, refused, to retry (returned), or a
/// stop (then `None`, with `result.unsent` set).
fn answered(
    pending: &[SendMessageBatchRequestEntry],
    failed: &[BatchResultErrorEntry],
    judge: &mut impl FnMut(&BatchResultErrorEntry) -> Verdict,
    result: &mut BatchResult,
) -> Option<Vec<String>> {
    // An id we did not send leaves us unable to tell which entry failed:
    // nothing of this answer is taken as stored.
    if let Some(f) = failed
        .iter()
        .find(|f| !pending.iter().any(|e| e.id == f.id))
    {
        result.unsent = Some(Unsent::UnknownId(entry_failure(f)));
        return None;
    }
    let mut retry = Vec::new();
    let mut stop = None;
    for f in failed {
        match judge(f) {
            Verdict::Retry => retry.push(f.id.clone()),
            Verdict::Refused => result.refused.push(entry_failure(f)),
            Verdict::Stop => {
                stop.get_or_insert(Unsent::Stopped(entry_failure(f)));
            }
        }
    }
    result.stored.extend(
        pending
            .iter()
            .filter(|e| !failed.iter().any(|f| f.id == e.id))
            .map(|e| e.id.clone()),
    );
    match stop {
        Some(unsent) => {
            result.unsent = Some(unsent);
            None
        }
        None => Some(retry),
    }
}
