//! `edge-agent check`: validates what a run would need, without running:
//! the directories and their permissions, the metrics address, how finished
//! files are recognised (whether read leases work), and write access to S3.
//! One line per check.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use relay_shared::check::Finding;
use relay_shared::s3::Bucket;

use crate::config::{Config, OnSuccess};
use crate::lease::{self, Identity, Leases, Mode};
use crate::s3::{Access, probe_put_access};

/// How files will be judged finished, tried the way the agent tries it:
/// a read lease on a file of the watch directory, and whether this process
/// may lease files of other owners (CAP_LEASE).
fn finished_files(config: &Config) -> Finding {
    let dir = config.watch_dir.display();
    let waits = config.waits();
    let who = match Identity::current() {
        Ok(id) if id.cap_lease => format!("uid {}, with CAP_LEASE", id.euid),
        Ok(id) => format!("uid {}, without CAP_LEASE", id.euid),
        Err(e) => format!("identity unknown: {e}"),
    };
    let settle_only = format!(
        "a file is relayed once closed (or renamed in) and unchanged for {} ms, and a writer that \
         pauses longer may have its file stored short",
        waits.settle.as_millis()
    );
    let leases = match Leases::enable() {
        Ok(l) => l,
        Err(e) => {
            return Finding::warn(format!(
                "finished files: settle time only: SIGIO cannot be handled ({e}); {settle_only}"
            ));
        }
    };
    let judged = format!(
        "a file is relayed once no process holds it open for writing and it has been unchanged for {} ms",
        waits.quiet.as_millis()
    );
    match lease::probe_dir(&leases, &config.watch_dir, crate::upload::open_for_probe) {
        Mode::Leases { tried: Some(file) } => Finding::ok(format!(
            "finished files: read leases work in {dir} (tried on {file}; {who}): {judged}"
        )),
        Mode::Leases { tried: None } if who.contains("with CAP_LEASE") => Finding::ok(format!(
            "finished files: read leases ({who}, so files of any owner can be leased; no file in {dir} yet to try one on): {judged}"
        )),
        Mode::Leases { tried: None } => Finding::warn(format!(
            "finished files: no file in {dir} yet to try a read lease on, and this process ({who}) can lease only its own files: \
             files another user writes there are judged by settle time alone ({settle_only}); grant CAP_LEASE (the packaged unit does)"
        )),
        Mode::SettleOnly { reason } => Finding::warn(format!(
            "finished files: settle time only in {dir}: {reason} ({who}); {settle_only}. \
             Grant CAP_LEASE (the packaged unit does) or run the agent as the files' owner"
        )),
    }
}

fn writable(path: &Path) -> bool {
    rustix::fs::access(path, rustix::fs::Access::WRITE_OK).is_ok()
}

/// Runs every check. Nothing is written, in S3 or on disk.
pub async fn check(config: &Config, bucket: &Bucket) -> Vec<Finding> {
    let mut out = vec![Finding::ok(format!(
        "config: valid; files matching {} become s3://{}/{}<date path>/<name>.zst",
        config.include.as_str(),
        config.bucket,
        config.keys.source_prefix()
    ))];
    let dir = &config.watch_dir;
    out.push(match std::fs::read_dir(dir) {
        Err(e) => Finding::fail(format!(
            "watch directory {}: cannot be read ({e}); grant this user read and execute permission",
            dir.display()
        )),
        Ok(_) if !matches!(config.on_success, OnSuccess::Keep) && !writable(dir) => Finding::fail(format!(
            "watch directory {}: not writable by this user, and on-success {} removes files from it; \
             grant write permission, or use --on-success keep",
            dir.display(),
            config.on_success
        )),
        Ok(_) => Finding::ok(format!("watch directory {}: readable", dir.display())),
    });
    if let OnSuccess::Move(target) = &config.on_success {
        let same_fs = std::fs::metadata(dir)
            .and_then(|d| std::fs::metadata(target).map(|t| d.dev() == t.dev()))
            .unwrap_or(false);
        out.push(if !writable(target) {
            Finding::fail(format!(
                "move target {}: not writable by this user; grant write permission",
                target.display()
            ))
        } else if !same_fs {
            Finding::fail(format!(
                "move target {}: on another filesystem than the watch directory, so files cannot be \
                 renamed into it; choose a directory on the same filesystem",
                target.display()
            ))
        } else {
            Finding::ok(format!("move target {}: writable, same filesystem", target.display()))
        });
    }
    let state = &config.state_dir;
    let (existing, verb) = if state.exists() {
        (state.as_path(), "is")
    } else {
        (
            state.parent().unwrap_or(Path::new("/")),
            "would be created in",
        )
    };
    out.push(if writable(existing) {
        Finding::ok(format!("state directory {}: writable", state.display()))
    } else {
        Finding::fail(format!(
            "state directory {}: {verb} {}, which this user cannot write; grant write permission or set --state-dir",
            state.display(),
            existing.display()
        ))
    });
    if let Some(addr) = config.metrics_addr {
        out.push(match std::net::TcpListener::bind(addr) {
            Ok(_) => Finding::ok(format!("metrics address {addr}: free")),
            Err(e) => Finding::fail(format!(
                "metrics address {addr}: cannot be bound ({e}; is an agent already running?); choose another with --metrics-addr, or `off`"
            )),
        });
    }
    out.push(finished_files(config));
    let prefix = config.keys.source_prefix();
    let raw = s3_access(bucket, &config.bucket, &prefix, "").await;
    // A bucket that is missing or out of reach is said once, not per prefix.
    let reached = raw.verdict == relay_shared::check::Verdict::Ok;
    out.push(raw);
    if config.canary.is_some() && reached {
        let ledger = relay_shared::manifest::source_prefix(config.keys.source_id());
        out.push(s3_access(bucket, &config.bucket, &ledger, "completeness manifests ").await);
    }
    out
}

/// Whether this agent may write `what` under `prefix`, tried as it writes.
async fn s3_access(store: &Bucket, bucket: &str, prefix: &str, what: &str) -> Finding {
    match probe_put_access(store, prefix).await {
        Access::Allowed => Finding::ok(format!("S3: may write {what}under s3://{bucket}/{prefix}")),
        Access::Denied(e) => Finding::fail(format!(
            "S3: may not write {what}under s3://{bucket}/{prefix}: {e}; {}",
            crate::upload::fix_hint(e.kind(), bucket, prefix)
        )),
        Access::Unknown(e) => Finding::fail(format!(
            "S3: could not be reached ({e}); check the network and the endpoint"
        )),
    }
}
