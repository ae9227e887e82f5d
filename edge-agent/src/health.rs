//! What `/healthz` says, and the gauges that mirror it: healthy (with how
//! finished files are judged), degraded (S3 has failed every upload for a
//! while: work waits, nothing is lost), or unhealthy (a permanent failure,
//! files set aside, a state directory that cannot be written, manifests
//! that S3 refuses while it takes uploads). The agent's
//! tasks report here; an S3 outage is logged once when it starts and once
//! when it ends, not per file.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use relay_shared::telemetry::Health;

pub const HEALTHY: &str = "relay_agent_healthy";
pub const DEGRADED: &str = "relay_agent_degraded";
pub const S3_FAILING_SECONDS: &str = "relay_agent_s3_failing_seconds";
pub const STATE_ERRORS: &str = "relay_agent_state_errors_total";
pub const LEASES: &str = "relay_agent_leases_enabled";

/// S3 failing every attempt for this long (in ms) makes `/healthz` say
/// degraded: `RELAY_DEGRADED_AFTER_SECS`, set once at start-up.
static DEGRADED_AFTER_MS: AtomicU64 =
    AtomicU64::new(crate::config::DEFAULT_DEGRADED_AFTER_SECS * 1000);

static PERMANENT_FAILURE: Mutex<Option<String>> = Mutex::new(None);
static PARKED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static FINISH_MODE: Mutex<String> = Mutex::new(String::new());
static STATE_DIR: Mutex<Option<String>> = Mutex::new(None);
static WATCH_DIR: Mutex<Option<String>> = Mutex::new(None);
static OUTAGE: Mutex<Option<Outage>> = Mutex::new(None);
/// Manifests that failed in a row, and the last failure.
static MANIFESTS: Mutex<Option<(u32, String)>> = Mutex::new(None);
/// Manifests failing this many times in a row while uploads reach S3 make
/// `/healthz` unhealthy: one failure may be a blip, and an S3 outage fails
/// the canary's upload too, which makes it "degraded" instead.
pub const MANIFEST_FAILURES_UNHEALTHY: u32 = 2;

/// S3 failing since `since`: the kinds of failure seen (each logged once),
/// the attempts, and the last error.
#[derive(Debug)]
struct Outage {
    since: Instant,
    kinds: Vec<&'static str>,
    attempts: u64,
    last: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets how long S3 may fail every upload before `/healthz` says degraded.
pub fn set_degraded_after(after: Duration) {
    DEGRADED_AFTER_MS.store(after.as_millis() as u64, Ordering::Relaxed);
}

fn degraded_after() -> Duration {
    Duration::from_millis(DEGRADED_AFTER_MS.load(Ordering::Relaxed))
}

/// Publishes how finished files are judged: the gauge, and a line of
/// `/healthz`.
pub fn set_finish_mode(mode: &crate::lease::Mode) {
    let (enabled, line) = match mode {
        crate::lease::Mode::Leases { .. } => (
            1.0,
            "finished files: read leases (no process holds a file open for writing)".to_owned(),
        ),
        crate::lease::Mode::SettleOnly { reason } => (
            0.0,
            format!("finished files: settle time only; leases refused: {reason}"),
        ),
    };
    ::metrics::gauge!(LEASES).set(enabled);
    *lock(&FINISH_MODE) = line;
}

/// Names the files set aside after a permanent failure, with their reasons.
pub fn name_set_aside(files: Vec<String>) {
    *lock(&PARKED) = files;
    publish();
}

/// Marks the agent unhealthy with the reason, or healthy with `None`.
pub fn set_permanent_failure(reason: Option<String>) {
    *lock(&PERMANENT_FAILURE) = reason;
    publish();
}

/// A state directory that cannot be written (`None` once it can again).
pub fn set_state_dir_problem(problem: Option<String>) {
    *lock(&STATE_DIR) = problem;
    publish();
}

/// A watch directory that is missing (`None` once it is watched again).
pub fn set_watch_dir_problem(problem: Option<String>) {
    *lock(&WATCH_DIR) = problem;
    publish();
}

/// An upload attempt failed for a reason retrying may fix. The first failure
/// of an outage, and the first of each new kind during it, is a WARN with
/// the cause and when the file is tried again; the rest are DEBUG.
pub fn s3_failed(kind: &'static str, error: &str, retry_in: Duration) {
    let mut outage = lock(&OUTAGE);
    let o = outage.get_or_insert_with(|| Outage {
        since: Instant::now(),
        kinds: Vec::new(),
        attempts: 0,
        last: String::new(),
    });
    o.attempts += 1;
    o.last = error.to_owned();
    if o.kinds.contains(&kind) {
        tracing::debug!(kind, %error, retry_in_ms = retry_in.as_millis() as u64, "upload failed again; retrying");
    } else {
        o.kinds.push(kind);
        tracing::warn!(kind, %error, retry_in_ms = retry_in.as_millis() as u64,
            "uploads to S3 are failing; files wait on disk and are retried (one line per kind of failure until S3 answers again)");
    }
    drop(outage);
    publish();
}

/// An upload reached S3: an outage, if there was one, is over.
pub fn s3_answered() {
    let Some(o) = lock(&OUTAGE).take() else {
        return;
    };
    tracing::info!(
        failing_ms = o.since.elapsed().as_millis() as u64,
        failed_attempts = o.attempts,
        "S3 answers again; uploads go on"
    );
    publish();
}

/// A manifest was not stored: from the second in a row, while S3 takes
/// uploads, `/healthz` says so (the cloud side cannot account for this
/// host's files without them).
pub fn manifest_failed(key: &str, error: &str) {
    let mut m = lock(&MANIFESTS);
    let failures = m.as_ref().map_or(0, |(n, _)| *n) + 1;
    *m = Some((failures, format!("{key}: {error}")));
    drop(m);
    publish();
}

/// A manifest was stored: manifests work again.
pub fn manifest_stored() {
    if lock(&MANIFESTS).take().is_some() {
        publish();
    }
}

/// How long S3 has failed every attempt, and the last error.
fn outage() -> Option<(Duration, String)> {
    lock(&OUTAGE)
        .as_ref()
        .map(|o| (o.since.elapsed(), o.last.clone()))
}

/// `/healthz`'s verdict as gauges, for alerts; called on every change and
/// from the agent's tick (an outage grows old without changes).
pub fn publish() {
    let verdict = health();
    ::metrics::gauge!(HEALTHY).set(f64::from(u8::from(!matches!(
        verdict,
        Health::Unhealthy(_)
    ))));
    ::metrics::gauge!(DEGRADED).set(f64::from(u8::from(matches!(verdict, Health::Degraded(_)))));
    let failing = outage().map_or(0.0, |(d, _)| d.as_secs_f64());
    ::metrics::gauge!(S3_FAILING_SECONDS).set(failing);
}

/// What `/healthz` reports.
pub fn health() -> Health {
    let mut problems: Vec<String> = Vec::new();
    problems.extend(lock(&WATCH_DIR).clone());
    problems.extend(lock(&STATE_DIR).clone());
    problems.extend(lock(&PERMANENT_FAILURE).clone());
    let parked = lock(&PARKED).clone();
    if !parked.is_empty() {
        problems.push(format!(
            "{} file(s) set aside after a permanent failure, retried every minute:",
            parked.len()
        ));
        problems.extend(parked.iter().take(20).map(|p| format!("  {p}")));
    }
    let manifests = lock(&MANIFESTS).clone();
    if let Some((failures, last)) = manifests
        && failures >= MANIFEST_FAILURES_UNHEALTHY
        && outage().is_none()
    {
        problems.push(format!(
            "{failures} manifests in a row not stored, while uploads reach S3 (last: {last}): the cloud side cannot account for this host's files; `edge-agent check` tests the ledger prefix"
        ));
    }
    if !problems.is_empty() {
        return Health::Unhealthy(problems.join("\n"));
    }
    if let Some((failing, last)) = outage().filter(|(d, _)| *d >= degraded_after()) {
        return Health::Degraded(format!(
            "S3 unreachable for {} s: uploads wait on disk and are retried (last error: {last})",
            failing.as_secs()
        ));
    }
    let mode = lock(&FINISH_MODE).clone();
    Health::Ok(Some(mode).filter(|m| !m.is_empty()).into_iter().collect())
}
