//! Prometheus metrics and the health endpoint.
//!
//! Metrics go through the `metrics` facade; without an installed recorder
//! (tests, `--metrics-addr off`) they cost nothing. `/healthz` answers 503
//! while uploads are failing for a reason only an operator can fix.

use std::net::SocketAddr;

pub const FILES: &str = "relay_agent_files_total";
pub const BYTES_IN: &str = "relay_agent_bytes_in_total";
pub const BYTES_OUT: &str = "relay_agent_bytes_out_total";
pub const COMPRESSION_RATIO: &str = "relay_agent_compression_ratio";
pub const UPLOAD_SECONDS: &str = "relay_agent_upload_seconds";
pub const RETRIES: &str = "relay_agent_retries_total";
pub const ERRORS: &str = "relay_agent_errors_total";
pub const BACKLOG: &str = "relay_agent_backlog_files";
pub const OLDEST_WAITING: &str = "relay_agent_oldest_waiting_seconds";
pub const REJECTED: &str = "relay_agent_rejected_files_total";
pub const RESCANS: &str = "relay_agent_rescans_total";
pub const WATCH_DIR_CHANGES: &str = "relay_agent_watch_dir_changes_total";
pub const SET_ASIDE: &str = "relay_agent_set_aside_files";
pub const CANARIES: &str = "relay_agent_canaries_total";
pub const CANARY_LAST_SENT: &str = "relay_agent_canary_last_sent_timestamp_seconds";
pub const MANIFESTS: &str = "relay_agent_manifests_total";
pub use crate::health::{DEGRADED, HEALTHY, LEASES, S3_FAILING_SECONDS, STATE_ERRORS};
pub const LEASE_REFUSALS: &str = "relay_agent_lease_refusals_total";

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    relay_shared::attempts::describe();
    describe_counter!(
        FILES,
        "Files handled, by outcome: uploaded, duplicate (S3 had exactly these bytes), conflict (S3 had other bytes under the name: stored under a conflict key), unverified (S3 had the name with no content hash: kept on disk), gone, not_regular (symlinks and special files: never opened), set_aside (a permanent failure)"
    );
    describe_gauge!(
        SET_ASIDE,
        "Files set aside after a permanent failure (unreadable, too many parts, access denied), retried every minute; /healthz names them"
    );
    describe_counter!(
        BYTES_IN,
        Unit::Bytes,
        "Uncompressed bytes read from uploaded files"
    );
    describe_counter!(BYTES_OUT, Unit::Bytes, "Compressed bytes stored in S3");
    describe_histogram!(COMPRESSION_RATIO, "Uncompressed / compressed size per file");
    describe_histogram!(
        UPLOAD_SECONDS,
        Unit::Seconds,
        "Time from upload start to S3's answer, retries included"
    );
    describe_counter!(
        RETRIES,
        "Upload attempts that failed and were retried, by error kind"
    );
    describe_counter!(
        ERRORS,
        "Errors by kind (failed upload attempts, unreadable files, after-success actions)"
    );
    describe_gauge!(BACKLOG, "Files seen but not yet in S3");
    describe_gauge!(
        OLDEST_WAITING,
        Unit::Seconds,
        "Age (since mtime) of the oldest file not yet in S3"
    );
    describe_counter!(
        REJECTED,
        "Files that cannot be relayed (their name gives no valid key); the log names each file and why"
    );
    describe_counter!(
        RESCANS,
        "Directory rescans after an inotify queue overflow or watch error"
    );
    describe_counter!(
        WATCH_DIR_CHANGES,
        "The watch directory's path changing under the agent, by change: missing (removed or renamed away; /healthz is unhealthy until it is back) or rewatched (a new directory there, watched and rescanned)"
    );
    describe_counter!(
        CANARIES,
        "Canaries (heartbeat objects on the data's path, RELAY_CANARY_SECS) by outcome: sent (S3 holds it) or failed"
    );
    describe_counter!(
        MANIFESTS,
        "Completeness manifests (with every canary and at shutdown: the files stored, refused and waiting) by outcome: stored, or failed (tried again, same key, next interval)"
    );
    describe_gauge!(
        DEGRADED,
        "1 while /healthz answers 200 degraded: S3 has failed every upload for over 30 s (work waits; nothing is lost)"
    );
    describe_gauge!(
        S3_FAILING_SECONDS,
        Unit::Seconds,
        "How long S3 has failed every upload attempt (0 when it answers)"
    );
    describe_counter!(
        STATE_ERRORS,
        "Failed writes to the state directory by op: the upload ledger's create, rewrite, open, append, sync, and canary. A full or read-only disk; /healthz names the directory"
    );
    describe_gauge!(
        HEALTHY,
        "1 while /healthz answers 200 (ok or degraded), 0 while it answers 503 (a permanent failure, files set aside, a missing watch directory, a state directory that cannot be written)"
    );
    describe_gauge!(
        LEASES,
        "1 when read leases judge finished files (no process holds a file open for writing), 0 when settle time alone does (leases refused in the watch directory)"
    );
    describe_counter!(
        LEASE_REFUSALS,
        "Files whose read lease was refused (reason: not_owner, unsupported, other), judged by settle time instead"
    );
    describe_gauge!(
        CANARY_LAST_SENT,
        Unit::Seconds,
        "Unix time of the last canary S3 stored"
    );
}

/// The label values of each labelled counter: all are registered at zero at
/// start-up, so a `rate()` alert has a series from the first scrape.
const FILE_OUTCOMES: &[&str] = &[
    "uploaded",
    "duplicate",
    "conflict",
    "unverified",
    "gone",
    "not_regular",
    "set_aside",
];
const ERROR_KINDS: &[&str] = &[
    "read",
    "too_many_parts",
    "hash_clash",
    "conflict_key",
    "vanished",
    "already_exists",
    "precondition",
    "conflict",
    "not_found",
    "throttled",
    "access_denied",
    "no_such_bucket",
    "transient",
    "permanent",
];

fn register_at_zero() {
    relay_shared::attempts::register_at_zero(&[("s3", "PutObject"), ("s3", "UploadPart")]);
    for outcome in FILE_OUTCOMES {
        ::metrics::counter!(FILES, "outcome" => *outcome).increment(0);
    }
    for kind in ERROR_KINDS {
        ::metrics::counter!(RETRIES, "kind" => *kind).increment(0);
        ::metrics::counter!(ERRORS, "kind" => *kind).increment(0);
    }
    ::metrics::counter!(ERRORS, "kind" => "after_success").increment(0);
    for op in crate::ledger::WRITE_OPS
        .iter()
        .chain(&["canary", "manifest"])
    {
        ::metrics::counter!(STATE_ERRORS, "op" => *op).increment(0);
    }
    for name in [BYTES_IN, BYTES_OUT, REJECTED, RESCANS] {
        ::metrics::counter!(name).increment(0);
    }
    for change in ["missing", "rewatched"] {
        ::metrics::counter!(WATCH_DIR_CHANGES, "change" => change).increment(0);
    }
    for outcome in ["sent", "failed"] {
        ::metrics::counter!(CANARIES, "outcome" => outcome).increment(0);
    }
    for outcome in ["stored", "failed"] {
        ::metrics::counter!(MANIFESTS, "outcome" => outcome).increment(0);
    }
    for reason in ["not_owner", "unsupported", "other"] {
        ::metrics::counter!(LEASE_REFUSALS, "reason" => reason).increment(0);
    }
    for name in [BACKLOG, OLDEST_WAITING, SET_ASIDE, CANARY_LAST_SENT] {
        ::metrics::gauge!(name).set(0.0);
    }
    crate::health::publish();
}

/// Installs the global recorder and serves `/metrics` and `/healthz` on `addr`.
pub async fn serve(addr: SocketAddr) -> Result<SocketAddr, relay_shared::telemetry::MetricsError> {
    const UPLOAD_BUCKETS: &[f64] = &[
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
    const RATIO_BUCKETS: &[f64] = &[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0];
    let health: relay_shared::telemetry::HealthCheck = std::sync::Arc::new(crate::health::health);
    let bound = relay_shared::telemetry::serve_metrics(
        addr,
        "edge-agent",
        &[
            (UPLOAD_SECONDS, UPLOAD_BUCKETS),
            (COMPRESSION_RATIO, RATIO_BUCKETS),
        ],
        health,
    )
    .await?;
    describe();
    register_at_zero();
    Ok(bound)
}
