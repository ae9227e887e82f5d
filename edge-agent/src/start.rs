//! The agent as the binary starts it: its settings logged, `/metrics` and
//! `/healthz` served, its bucket reached through a client built once, S3
//! access probed, and then the agent run until shutdown.

use std::future::Future;
use std::path::Path;

use relay_shared::check::Finding;
use relay_shared::client::{
    ClientOptions, load_sdk_config, s3_client, with_attempt_timeout, with_single_attempt,
};
use relay_shared::s3::Bucket;
use relay_shared::store::S3Error;
use relay_shared::telemetry::MetricsError;

use crate::config::{AttemptTimeout, Config};
use crate::s3::{Access, probe_put_access};
use crate::unit::Unit;
use crate::upload::RetryPolicy;
use crate::{AgentError, Summary};

/// Why the agent could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("serving /metrics and /healthz: {0}")]
    Metrics(#[from] MetricsError),
    #[error("start-up check of S3 access failed: {0}")]
    Access(S3Error),
    #[error("edge agent stopped: {0}")]
    Agent(#[from] AgentError),
}

/// The bucket, through an S3 client whose requests time out (built once).
/// The agent retries every upload itself, so the client makes one attempt
/// per call: a failure is logged and counted when it happens.
pub async fn bucket(config: &Config) -> Bucket {
    let timeout = config.aws_attempt_timeout;
    let sdk = with_single_attempt(&load_sdk_config().await);
    let sdk = with_attempt_timeout(&sdk, timeout.base());
    let client = s3_client(
        &sdk,
        ClientOptions {
            s3_path_style: config.s3_path_style,
        },
    );
    let bucket = Bucket::new(client, config.bucket.clone());
    match timeout {
        AttemptTimeout::Sized(budget) => bucket.with_attempt_budget(budget),
        AttemptTimeout::Fixed(_) => bucket,
    }
}

/// Starts the agent and runs it until `shutdown`. S3 out of reach at
/// start-up is no reason to stop: files wait on disk until it answers.
pub async fn start(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, StartError> {
    relay_shared::telemetry::log_start("edge-agent", &config.summary());
    if let Some(addr) = config.metrics_addr {
        let bound = crate::metrics::serve(addr).await?;
        tracing::info!(%bound, "serving /metrics and /healthz");
    }
    let bucket = bucket(&config).await;
    match probe_put_access(&bucket, &config.keys.source_prefix()).await {
        Access::Allowed => tracing::info!(bucket = %config.bucket, "S3 access checked"),
        Access::Denied(e) => return Err(StartError::Access(e)),
        Access::Unknown(e) => {
            tracing::warn!(error = %e, "could not reach S3 at start-up; files wait on disk until it answers")
        }
    }
    // `run` logs its stop line with the summary.
    Ok(crate::run(config, bucket, RetryPolicy::default(), shutdown).await?)
}

/// `edge-agent check`: every check's line on stdout, with the configured
/// paths held against `unit`'s sandbox if given; whether all passed.
pub async fn check(config: &Config, unit: Option<&Path>) -> bool {
    let unit = match unit.map(Unit::read).transpose() {
        Ok(unit) => unit,
        Err(e) => return relay_shared::check::print(&[Finding::fail(format!("unit: {e}"))]),
    };
    let bucket = bucket(config).await;
    let mut findings = crate::check::check(config, &bucket).await;
    if let Some(unit) = &unit {
        let used = crate::unit::used_paths(config);
        findings.extend(crate::unit::findings(unit, &used));
    }
    relay_shared::check::print(&findings)
}

/// `edge-agent check --unit`: re-runs the check as the unit at `path` would
/// run the agent (see [`crate::unit::rerun`]). Returns the exit status.
pub fn check_as_unit(path: &Path) -> u8 {
    let root = rustix::process::geteuid().is_root();
    let rerun = Unit::read(path).and_then(|unit| {
        if let Some(warning) = crate::unit::not_as_user(&unit, root) {
            relay_shared::check::print(&[warning]);
        }
        let exe = std::env::current_exe().unwrap_or_else(|_| "edge-agent".into());
        crate::unit::rerun(&unit, path, &exe, root)
    });
    let mut cmd = match rerun {
        Ok(cmd) => cmd,
        Err(e) => return fail(&format!("unit: {e}")),
    };
    match cmd.status() {
        Ok(status) => status.code().map_or(1, |c| u8::try_from(c).unwrap_or(1)),
        Err(e) => fail(&format!(
            "unit: could not run {:?} to check as the unit's user ({e}); setpriv is in util-linux",
            cmd.get_program()
        )),
    }
}

fn fail(line: &str) -> u8 {
    relay_shared::check::print(&[Finding::fail(line)]);
    1
}
