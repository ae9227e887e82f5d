//! Start-up that waits instead of dying. What a long-running mode needs
//! before it can work (the queues' attributes) is asked for until AWS
//! answers, with backoff and jitter, while `/healthz` says what it waits for
//! and `relay_processor_ready` is 0. Only failures the workspace's retry
//! classification calls retryable are waited out: a setting that cannot
//! work (a queue that does not exist, access denied) stops the process at
//! once, with the error that says so.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay_shared::retry::{Class, Classified};
use relay_shared::telemetry::Health;
// Tokio's clock, which tests can pause.
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::metrics as m;

/// What the process waits for, if anything: `/healthz` and
/// `relay_processor_ready` read it. Clones share it.
#[derive(Debug, Clone)]
pub struct Readiness(Arc<Mutex<Option<String>>>);

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Starting, before the first call.
    pub fn new() -> Self {
        let r = Self(Arc::default());
        r.set(Some("connecting to AWS".into()));
        r
    }

    fn set(&self, waiting_for: Option<String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = waiting_for;
        self.publish();
    }

    /// Sets `relay_processor_ready` from the state (again, once a recorder
    /// is installed).
    pub fn publish(&self) {
        let ready = self.0.lock().unwrap_or_else(|e| e.into_inner()).is_none();
        metrics::gauge!(m::READY).set(if ready { 1.0 } else { 0.0 });
    }

    /// Everything start-up needs has answered.
    pub fn ready(&self) {
        self.set(None);
    }

    /// `/healthz`: 503 `starting: …` until ready, then 200.
    pub fn health(&self) -> Health {
        match &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(what) => Health::Starting(what.clone()),
            None => Health::Ok(Vec::new()),
        }
    }
}

/// How long start-up waits for AWS, and where it says what it waits for.
#[derive(Debug, Clone)]
pub struct Startup {
    /// `None`: until AWS answers (`poll`'s default).
    pub limit: Option<Duration>,
    pub readiness: Readiness,
    /// The backoff's bounds; jitter is added.
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Startup {
    /// Waits up to `limit` (`None`: forever), backing off from 200 ms to 30 s.
    pub fn new(limit: Option<Duration>) -> Self {
        Self {
            limit,
            readiness: Readiness::new(),
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
        }
    }

    /// No waiting: a retryable failure is reported as at once (Lambda,
    /// whose init failure fails the invocation, which Lambda retries).
    pub fn no_wait() -> Self {
        Self::new(Some(Duration::ZERO))
    }
}

/// Why start-up stopped waiting.
#[derive(Debug, thiserror::Error)]
pub enum StartupError<E> {
    /// Trying again cannot help (the settings or the permissions are
    /// wrong), or start-up does not wait.
    #[error("{what}: {error}")]
    Failed { what: &'static str, error: E },
    #[error(
        "{what}: gave up after {waited_secs} s and {attempts} attempt(s) (RELAY_STARTUP_WAIT_SECS); last error: {error}"
    )]
    GaveUp {
        what: &'static str,
        waited_secs: u64,
        attempts: u32,
        error: E,
    },
}

impl Startup {
    /// Calls `call` until it succeeds, a failure is not retryable, or the
    /// wait's limit is reached. `service` and `what` name what is waited for
    /// ("SQS", "reading the output queue's attributes") in `/healthz` and
    /// the log, which has one warning per kind ([`Class`]) of failure, not
    /// one per attempt.
    pub async fn wait_for<T, E, F, Fut>(
        &self,
        service: &str,
        what: &'static str,
        mut call: F,
    ) -> Result<T, StartupError<E>>
    where
        E: Classified,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut backoff = relay_shared::retry::backoff(self.min_delay, self.max_delay);
        let started = Instant::now();
        let mut warned: Vec<Class> = Vec::new();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let error = match call().await {
                Ok(v) => {
                    if attempts > 1 {
                        info!(
                            attempts,
                            waited_secs = started.elapsed().as_secs(),
                            "{what}: {service} answered"
                        );
                    }
                    return Ok(v);
                }
                Err(error) => error,
            };
            let class = error.class();
            if !class.is_retryable() || self.limit == Some(Duration::ZERO) {
                return Err(StartupError::Failed { what, error });
            }
            let waited = started.elapsed();
            let left = self.limit.map(|l| l.saturating_sub(waited));
            if left.is_some_and(|l| l.is_zero()) {
                return Err(StartupError::GaveUp {
                    what,
                    waited_secs: waited.as_secs(),
                    attempts,
                    error,
                });
            }
            self.readiness
                .set(Some(format!("waiting for {service} (last error: {error})")));
            if warned.contains(&class) {
                debug!(%error, attempts, "{what}: {service} still not answering");
            } else {
                warned.push(class);
                warn!(%error, %class,
                    "{what}: {service} is not answering; waiting for it, with backoff \
                     (/healthz answers 503 meanwhile)");
            }
            let delay = backoff.next().unwrap_or(self.max_delay);
            tokio::time::sleep(left.map_or(delay, |l| delay.min(l))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Fails(Class);

    impl Classified for Fails {
        fn class(&self) -> Class {
            self.0
        }
    }

    /// Fails with `classes` in turn, then answers with the attempt count.
    fn script(
        classes: &[Class],
    ) -> (
        Arc<AtomicU32>,
        impl FnMut() -> std::future::Ready<Result<u32, Fails>>,
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let classes = classes.to_vec();
        (calls, move || {
            let n = seen.fetch_add(1, Ordering::Relaxed);
            std::future::ready(match classes.get(n as usize) {
                Some(c) => Err(Fails(*c)),
                None => Ok(n + 1),
            })
        })
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_failures_are_waited_out_while_healthz_says_why() {
        let startup = Startup::new(None);
        let (calls, call) = script(&[Class::Transient, Class::Throttled, Class::Transient]);
        let probe = startup.readiness.clone();
        let waiting = tokio::spawn(async move {
            startup
                .wait_for("SQS", "reading the output queue", call)
                .await
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        match probe.health() {
            Health::Starting(why) => assert!(
                why.starts_with("waiting for SQS (last error: transient)"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        let answered = waiting.await.unwrap();
        assert_eq!(answered.ok(), Some(4));
        assert_eq!(calls.load(Ordering::Relaxed), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_stops_at_once() {
        let startup = Startup::new(None);
        let (calls, call) = script(&[Class::Permanent]);
        let started = tokio::time::Instant::now();
        let err = startup.wait_for("SQS", "x", call).await.unwrap_err();
        assert!(matches!(err, StartupError::Failed { .. }), "{err}");
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert!(started.elapsed() < Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_bounds_the_wait() {
        let startup = Startup::new(Some(Duration::from_secs(60)));
        let (_, call) = script(&[Class::Transient; 1000]);
        let started = tokio::time::Instant::now();
        let err = startup.wait_for("SQS", "x", call).await.unwrap_err();
        let StartupError::GaveUp {
            waited_secs,
            attempts,
            ..
        } = err
        else {
            panic!("{err}");
        };
        assert_eq!(waited_secs, 60);
        assert!(attempts > 3, "{attempts}");
        // Backing off, not spinning, and never past the limit.
        assert!(attempts < 20, "{attempts}");
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_reports_the_first_failure() {
        let (calls, call) = script(&[Class::Transient]);
        let err = Startup::no_wait()
            .wait_for("SQS", "x", call)
            .await
            .unwrap_err();
        assert!(matches!(err, StartupError::Failed { .. }), "{err}");
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn readiness_is_starting_until_ready() {
        let r = Readiness::new();
        assert_eq!(r.health(), Health::Starting("connecting to AWS".into()));
        r.ready();
        assert_eq!(r.health(), Health::Ok(Vec::new()));
    }
}
