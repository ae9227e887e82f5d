//! edge-agent: parses config, sets up logging and metrics, checks S3 access,
//! and runs the agent until SIGTERM or SIGINT.

use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use edge_agent::config::{AgentCommand, Args, Config, EarlyExit};
use edge_agent::s3::{Access, probe_put_access};
use edge_agent::upload::RetryPolicy;
use relay_shared::client::{ClientOptions, load_sdk_config, s3_client, with_attempt_timeout};
use relay_shared::s3::Bucket;
use relay_shared::telemetry::init_tracing;

fn main() -> ExitCode {
    let hostname = || gethostname::gethostname().into_string().ok();
    let args = match edge_agent::config::parse_from(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(EarlyExit::Clap(e)) => e.exit(),
        Err(EarlyExit::Help(help)) => {
            print!("{help}");
            return ExitCode::SUCCESS;
        }
    };
    match args.command {
        Some(AgentCommand::Completions { shell }) => {
            relay_shared::cli::print_completions(Args::command(), shell);
            return ExitCode::SUCCESS;
        }
        Some(AgentCommand::Man) => {
            return relay_shared::cli::print_man(Args::command());
        }
        _ => {}
    }
    let checking = args.command == Some(AgentCommand::Check);
    let config = match Config::resolve(args, hostname) {
        Ok(c) => c,
        Err(e) if checking => {
            println!("FAIL config: {e:#}");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("edge-agent: {e:#}");
            return ExitCode::from(2);
        }
    };
    if checking {
        return check(&config);
    }
    if let Err(e) = init_tracing(config.log_format, "info") {
        eprintln!("edge-agent: {e}");
        return ExitCode::FAILURE;
    }
    // One thread runs all async work (uploads wait on the network), and the
    // blocking pool that compresses is capped at the upload concurrency:
    // fewer threads mean fewer cross-thread wake-ups and malloc arenas, which
    // is much of the agent's CPU and memory beyond zstd itself.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(config.concurrency)
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edge-agent: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let format = config.log_format;
    match runtime.block_on(start(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            relay_shared::telemetry::report_fatal("edge-agent", format, &e);
            ExitCode::FAILURE
        }
    }
}

/// `edge-agent check`: every check's line on stdout; 1 if any failed.
fn check(config: &Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edge-agent: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let passed = runtime.block_on(async {
        let bucket = bucket(config).await;
        relay_shared::check::print(&edge_agent::check::check(config, &bucket).await)
    });
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The bucket, through an S3 client whose requests time out (built once).
async fn bucket(config: &Config) -> Bucket {
    let sdk = with_attempt_timeout(&load_sdk_config().await, config.aws_attempt_timeout);
    let client = s3_client(
        &sdk,
        ClientOptions {
            s3_path_style: config.s3_path_style,
        },
    );
    Bucket::new(client, config.bucket.clone())
}

async fn start(config: Config) -> anyhow::Result<()> {
    relay_shared::telemetry::log_start("edge-agent", &config.summary());
    if let Some(addr) = config.metrics_addr {
        let bound = edge_agent::metrics::serve(addr).await?;
        tracing::info!(%bound, "serving /metrics and /healthz");
    }
    let bucket = bucket(&config).await;
    match probe_put_access(&bucket, &config.keys.source_prefix()).await {
        Access::Allowed => tracing::info!(bucket = %config.bucket, "S3 access checked"),
        Access::Denied(e) => return Err(e).context("start-up check of S3 access failed"),
        Access::Unknown(e) => {
            tracing::warn!(error = %e, "could not reach S3 at start-up; files wait on disk until it answers")
        }
    }
    // `run` logs its stop line with the summary.
    edge_agent::run(
        config,
        bucket,
        RetryPolicy::default(),
        relay_shared::telemetry::shutdown_signal(),
    )
    .await
    .context("edge agent stopped")?;
    Ok(())
}
