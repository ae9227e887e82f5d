//! `edge-agent check`: validates what a run would need, without running:
//! the directories and their permissions, the metrics address, how finished
//! files are recognised, and write access to S3. One line per check.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use relay_shared::check::Finding;
use relay_shared::s3::Bucket;

use crate::config::{Config, OnSuccess};
use crate::s3::{Access, probe_put_access};

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
    out.push(Finding::ok(format!(
        "finished files: closed (or renamed in), then unchanged for {} ms; no closed-file probe \
         (see the README's limits)",
        config.settle.as_millis()
    )));
    let prefix = config.keys.source_prefix();
    out.push(match probe_put_access(bucket, &prefix).await {
        Access::Allowed => Finding::ok(format!(
            "S3: may write under s3://{}/{prefix}",
            config.bucket
        )),
        Access::Denied(e) => Finding::fail(format!(
            "S3: may not write under s3://{}/{prefix}: {e}; {}",
            config.bucket,
            crate::upload::fix_hint(e.kind(), &config.bucket, &prefix)
        )),
        Access::Unknown(e) => Finding::fail(format!(
            "S3: could not be reached ({e}); check the network and the endpoint"
        )),
    });
    out
}
