//! The mode the command line chooses, built from the settings and run
//! until it is done or `shutdown`.

use std::future::Future;
use std::process::ExitCode;

use clap::CommandFactory;
use relay_shared::client::{ClientOptions, SdkConfig, load_sdk_config, with_timeouts};
use relay_shared::s3::Bucket;

use crate::cli::{Aws, Cli, Command, Config, Range};
use crate::modes::error::{Exit, RunError};
use crate::modes::{audit, check, lambda, poll, process, replay};

/// Whether `command` is an operator tool, which reads no data-path settings
/// and talks to a person: its logs are warnings and errors only.
pub fn is_tool(command: Option<&Command>) -> bool {
    matches!(command, Some(Command::Replay(_) | Command::Audit { .. }))
}

/// Runs the mode `cli` chooses until it is done or `shutdown` resolves.
pub async fn run(cli: Cli, shutdown: impl Future<Output = ()>) -> Result<Exit, RunError> {
    let raw_prefix = cli.common.raw_prefix.clone();
    match cli.command {
        Some(Command::Completions { shell }) => {
            relay_shared::cli::print_completions(Cli::command(), shell);
            return Ok(Exit::Success);
        }
        Some(Command::Man) => {
            return Ok(match relay_shared::cli::print_man(Cli::command()) {
                code if code == ExitCode::SUCCESS => Exit::Success,
                _ => Exit::Failed,
            });
        }
        Some(Command::Replay(args)) => {
            return Ok(replay::run(args, &raw_prefix, shutdown).await?);
        }
        Some(Command::Audit {
            range,
            older_than_mins,
            gap_mins,
            json,
            clean,
        }) => {
            let options = audit::Options {
                older_than_mins,
                gap_mins,
                json,
                clean,
            };
            return Ok(audit::run(&range, &raw_prefix, &options).await?);
        }
        _ => {}
    }
    let config = match Config::from_common(&cli.common) {
        Ok(c) => c,
        Err(e) if matches!(cli.command, Some(Command::Check { .. })) => {
            println!("FAIL config: {e:#}");
            return Ok(Exit::Failed);
        }
        Err(e) => return Err(e.into()),
    };
    data_path(config, cli.command, shutdown).await
}

/// The modes that read records: the Lambda, `poll`, `process` and `check`.
async fn data_path(
    config: Config,
    command: Option<Command>,
    shutdown: impl Future<Output = ()>,
) -> Result<Exit, RunError> {
    let passed = |ok: bool| if ok { Exit::Success } else { Exit::Failed };
    match command {
        Some(Command::Process {
            files,
            out,
            max_message_bytes,
        }) => Ok(passed(process::run(
            &config,
            &files,
            out.as_deref(),
            max_message_bytes,
        )?)),
        Some(Command::Poll(args)) => {
            poll::run(config, args, shutdown).await?;
            Ok(Exit::Success)
        }
        Some(Command::Check {
            aws,
            bucket,
            notification_queue_url,
            function_name,
            sample,
        }) => Ok(passed(
            check::run(
                &config,
                &aws,
                &bucket,
                notification_queue_url.as_deref(),
                function_name.as_deref(),
                sample.as_deref(),
            )
            .await,
        )),
        Some(Command::Lambda(aws)) => {
            lambda::run(config, aws, lambda::notification_queue()).await?;
            Ok(Exit::Success)
        }
        // Without a subcommand the binary is the Lambda, which only makes
        // sense where the Lambda runtime API is.
        None if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() => Err(RunError::NotInLambda),
        None => {
            let aws = lambda::from_env::<Aws>()?;
            lambda::run(config, aws, lambda::notification_queue()).await?;
            Ok(Exit::Success)
        }
        // The tools and the printers are run before the settings are read.
        Some(_) => Ok(Exit::Success),
    }
}

/// The bucket a range names, with a client built for a tool (no lease).
pub(crate) async fn tool_store(range: &Range) -> (SdkConfig, Bucket) {
    let sdk = with_timeouts(&load_sdk_config().await, range.timeouts.resolve(None));
    let bucket = Bucket::connect(
        &sdk,
        ClientOptions {
            s3_path_style: range.s3_path_style,
        },
        &range.bucket,
    );
    (sdk, bucket)
}
