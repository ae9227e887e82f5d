//! The agent from start to stop: the ledger, the watch, the finish mode
//! (read leases or settle time), the start-up scan, and then the owning
//! task until shutdown.

use std::future::Future;

use relay_shared::store::ObjectStore;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::owner::Agent;
use crate::config::{Config, OnSuccess};
use crate::lease::{self, Leases, Mode};
use crate::ledger::Ledger;
use crate::upload::{self, RetryPolicy};
use crate::watch::Watch;
use crate::{AgentError, Summary};

/// Runs until `shutdown` resolves, then stops taking new files and gives
/// in-flight uploads `config.shutdown_timeout` to finish.
pub async fn run<S: ObjectStore>(
    config: Config,
    sink: S,
    retry: RetryPolicy,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, AgentError> {
    crate::health::set_degraded_after(config.degraded_after);
    let ledger = match config.on_success {
        OnSuccess::Keep => Some(
            Ledger::open(&config.state_dir, &config.bucket, &config.watch_dir).map_err(
                |source| AgentError::Ledger {
                    dir: config.state_dir.clone(),
                    source,
                },
            )?,
        ),
        _ => None,
    };
    if let Some(ledger) = &ledger {
        super::state::report_unwritable(ledger);
    }
    let (tx, rx) = mpsc::channel(4096);
    // Watch before scanning, so a file created during the scan is not missed.
    let watch = Watch::start(&config.watch_dir, config.recursive, tx).map_err(|source| {
        AgentError::Watch {
            dir: config.watch_dir.clone(),
            source,
        }
    })?;
    let leases = finish_mode(&config);
    let mut agent = Agent::new(config, sink, retry, ledger, leases);
    agent.watch = Some(watch);
    let root = agent.config.watch_dir.clone();
    agent.scan(&root);
    info!(
        dir = %root.display(),
        backlog = agent.tracker.len(),
        bucket = %agent.config.bucket,
        prefix = %agent.config.keys.source_prefix(),
        "watching"
    );
    let mut uploads = JoinSet::new();
    agent.follow(rx, &mut uploads, shutdown).await;
    agent.watch = None;
    agent.drain(uploads).await;
    agent.log_stopped();
    Ok(agent.summary)
}

/// Decides, once, how files are judged finished: by read leases where the
/// kernel grants them, else by settle time alone. Logs and publishes it.
fn finish_mode(config: &Config) -> Option<Leases> {
    let dir = &config.watch_dir;
    let (leases, mode) = match Leases::enable() {
        Ok(leases) => (
            Some(leases),
            lease::probe_dir(&leases, dir, upload::open_for_probe),
        ),
        Err(e) => (
            None,
            Mode::SettleOnly {
                reason: format!("SIGIO cannot be handled ({e}), so no lease may be taken"),
            },
        ),
    };
    let waits = config.waits();
    match &mode {
        Mode::Leases { tried } => info!(
            dir = %dir.display(),
            tried = tried.as_deref().unwrap_or("no file yet"),
            quiet_ms = waits.quiet.as_millis() as u64,
            "finished files are judged by read leases: a file is relayed once no process holds it open for writing and it has been unchanged for the quiet period"
        ),
        Mode::SettleOnly { reason } => warn!(
            dir = %dir.display(),
            %reason,
            settle_ms = waits.settle.as_millis() as u64,
            "read leases are refused in the watch directory, so finished files are judged by settle time alone: a writer that pauses for longer than it may have its file stored short. Grant CAP_LEASE (the packaged unit does) or run the agent as the files' owner"
        ),
    }
    crate::health::set_finish_mode(&mode);
    match mode {
        Mode::Leases { .. } => leases,
        Mode::SettleOnly { .. } => None,
    }
}
