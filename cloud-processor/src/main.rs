//! cloud-processor: parses config, sets up logging and runs the chosen mode:
//! the Lambda runtime (default), `poll`, `process` on local files, `check`,
//! or the operator tools `replay` and `audit`. Every mode's logic lives in
//! the library; clients are built once, in the mode that needs them.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use cloud_processor::cli::{Aws, Cli, Command, Config};
use cloud_processor::modes::tools::{self, Finished};
use relay_shared::telemetry::init_tracing;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match cloud_processor::cli::parse_from(
        std::env::args_os().collect(),
        std::env::var_os("RELAY_CONFIG").map(Into::into),
    ) {
        Ok(cli) => cli,
        Err(cloud_processor::cli::ConfigError::Cli(e)) => e.exit(),
        Err(cloud_processor::cli::ConfigError::Help(help)) => {
            print!("{help}");
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(&e, 2),
    };
    let raw_prefix = cli.common.raw_prefix.clone();
    match cli.command {
        Some(Command::Completions { shell }) => {
            relay_shared::cli::print_completions(Cli::command(), shell);
            return ExitCode::SUCCESS;
        }
        Some(Command::Man) => return relay_shared::cli::print_man(Cli::command()),
        // The operator tools need no projection settings.
        Some(Command::Replay { .. } | Command::Audit { .. }) => {
            if let Err(e) = init_tracing(cli.common.log_format, "warn") {
                return fail(&e, 1);
            }
            return match tools::run(cli.command, &raw_prefix).await {
                Ok(Finished::Clean) => ExitCode::SUCCESS,
                Ok(Finished::Findings) => ExitCode::from(3),
                Err(e) => fail(&e, 1),
            };
        }
        _ => {}
    }
    let config = match Config::from_common(&cli.common) {
        Ok(c) => c,
        Err(e) if matches!(cli.command, Some(Command::Check { .. })) => {
            println!("FAIL config: {e:#}");
            return ExitCode::from(1);
        }
        Err(e) => return fail(&e, 2),
    };
    if let Err(e) = init_tracing(config.log_format, "info") {
        return fail(&e, 1);
    }
    let log_format = config.log_format;
    let result: anyhow::Result<bool> = match cli.command {
        Some(Command::Process {
            files,
            out,
            max_message_bytes,
        }) => {
            cloud_processor::modes::process::run(&config, &files, out.as_deref(), max_message_bytes)
                .map_err(Into::into)
        }
        Some(Command::Poll {
            aws,
            notification_queue_url: url,
            visibility_timeout_secs: secs,
            metrics_addr,
        }) => cloud_processor::modes::serve::poll(config, aws, &url, secs, &metrics_addr)
            .await
            .map(|()| true)
            .map_err(Into::into),
        Some(Command::Check {
            aws,
            bucket,
            notification_queue_url,
            function_name,
            sample,
        }) => Ok(cloud_processor::modes::check::run(
            &config,
            &aws,
            &bucket,
            notification_queue_url.as_deref(),
            function_name.as_deref(),
            sample.as_deref(),
        )
        .await),
        Some(Command::Lambda(aws)) => lambda(config, Ok(aws)).await,
        // Without a subcommand the binary is the Lambda, which only makes
        // sense where the Lambda runtime API is.
        None if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() => Err(anyhow::anyhow!(
            "no subcommand, and not inside AWS Lambda (AWS_LAMBDA_RUNTIME_API is not set): \
             use `cloud-processor poll` to consume S3 notifications from a queue, \
             `cloud-processor process FILE` to try the pipeline on local files, or `--help`"
        )),
        None => lambda(config, from_env::<Aws>()).await,
        // Handled above, before the data-path settings are read.
        Some(_) => Ok(true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        // `process` and `check` have said what failed.
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            relay_shared::telemetry::report_fatal("cloud-processor", log_format, &e);
            ExitCode::FAILURE
        }
    }
}

fn fail(e: &dyn std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("cloud-processor: {e:#}");
    ExitCode::from(code)
}

async fn lambda(config: Config, aws: anyhow::Result<Aws>) -> anyhow::Result<bool> {
    let queue = from_env::<NotificationQueue>()
        .ok()
        .and_then(|n| n.notification_queue_url)
        .filter(|u| !u.is_empty());
    cloud_processor::modes::serve::lambda(config, aws?, queue).await?;
    Ok(true)
}

/// In Lambda there are no arguments: settings come from the environment.
fn from_env<T: clap::Args>() -> anyhow::Result<T> {
    #[derive(Parser)]
    struct Env<T: clap::Args> {
        #[command(flatten)]
        inner: T,
    }
    Env::<T>::try_parse_from(["cloud-processor"])
        .map(|e| e.inner)
        .map_err(|e| anyhow::anyhow!("configuring the Lambda from its environment: {e}"))
}

/// `RELAY_NOTIFICATION_QUEUE_URL` (optional) names the queue the event
/// source mapping reads, so a failed notification can be made visible
/// again early rather than after the queue's whole visibility timeout.
#[derive(clap::Args)]
struct NotificationQueue {
    #[arg(long, env = "RELAY_NOTIFICATION_QUEUE_URL")]
    notification_queue_url: Option<String>,
}
