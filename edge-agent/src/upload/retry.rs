//! Attempts until the file is in S3: transient failures backed off without
//! limit, permanent ones handed back to be set aside.

use std::time::Duration;

use relay_shared::store::ObjectStore;

use super::error::UploadError;
use super::job::{Job, Outcome};
use super::put::upload_once;

/// How long to wait between attempts.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Permanent errors (access denied, missing bucket) need a human; retrying
    /// them fast would only flood the logs.
    pub permanent_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(200),
            // Short: after an outage, a file waits at most this long past
            // S3's return for its next attempt. During one, each upload
            // slot makes an attempt every 5 s: a trickle.
            max_delay: Duration::from_secs(5),
            permanent_delay: Duration::from_secs(60),
        }
    }
}

/// Retries [`upload_once`] until the file is in S3 (or gone, or changed).
/// Transient errors back off exponentially with jitter, without limit,
/// holding the upload slot: they pass. A permanent one (an unreadable file,
/// too many parts, access denied) returns [`Outcome::Failed`] at once, so
/// the caller sets the file aside and its slot goes to other files. Nothing
/// is given up on: the caller retries set-aside files slowly. Once
/// `stopping` turns true (shutdown), a backoff ends at once with
/// [`Outcome::Interrupted`], so SIGTERM does not wait out a long backoff;
/// an attempt already under way may finish.
pub async fn upload_with_retry<S: ObjectStore>(
    sink: &S,
    job: &Job,
    level: i32,
    part_bytes: u64,
    policy: &RetryPolicy,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    on_error: impl Fn(&UploadError, u32, Duration),
) -> (Outcome, u32) {
    let mut backoff = relay_shared::retry::backoff(policy.min_delay, policy.max_delay);
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        match upload_once(sink, job, level, part_bytes).await {
            Ok(outcome) => return (outcome, attempt - 1),
            Err(e) if e.is_transient() => {
                let delay = backoff.next().unwrap_or(policy.max_delay);
                on_error(&e, attempt, delay);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    // An error means the agent is gone; stop as for shutdown.
                    _ = stopping.wait_for(|stop| *stop) => return (Outcome::Interrupted, attempt),
                }
            }
            Err(e) => {
                on_error(&e, attempt, policy.permanent_delay);
                let failed = Outcome::Failed {
                    error: e.to_string(),
                    kind: e.kind(),
                };
                return (failed, attempt - 1);
            }
        }
    }
}
