//! The ways the processor runs, chosen by the command line: the Lambda
//! runtime (the default), `poll`, `process` on local files, `check`, and the
//! operator tools `replay` and `audit`. Each is built once from the
//! settings, with its clients, and runs until it is done or `shutdown`.

pub mod audit;
pub mod check;
pub mod connect;
pub mod lambda;
pub mod lambda_api;
mod merge;
pub mod poll;
pub mod process;
pub mod replay;
pub mod ssm;
pub mod startup;

use std::future::Future;
use std::process::ExitCode;

use clap::CommandFactory;
use relay_shared::client::{ClientOptions, SdkConfig, load_sdk_config, with_timeouts};
use relay_shared::s3::Bucket;
use relay_shared::store::S3Error;

use crate::cli::{Aws, Cli, Command, Config, ConfigError, Range};
use crate::modes::connect::ServeError;
use crate::modes::process::LocalError;

/// How a run ended, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// `process` or `check` said what failed.
    Failed,
    /// `audit` found objects or leases that need attention.
    Findings,
    /// Stopped by Ctrl-C or SIGTERM, cleanly (`replay` saved its checkpoint).
    Interrupted,
}

impl Exit {
    pub fn code(self) -> ExitCode {
        match self {
            Self::Success => ExitCode::SUCCESS,
            Self::Failed => ExitCode::from(1),
            Self::Findings => ExitCode::from(3),
            Self::Interrupted => ExitCode::from(130),
        }
    }
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Process(#[from] LocalError),
    #[error(
        "no subcommand, and not inside AWS Lambda (AWS_LAMBDA_RUNTIME_API is not set): \
         use `cloud-processor poll` to consume S3 notifications from a queue, \
         `cloud-processor process FILE` to try the pipeline on local files, or `--help`"
    )]
    NotInLambda,
}

impl RunError {
    /// 2 for settings that cannot work, 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Serve(ServeError::Config(_)) => 2,
            _ => 1,
        }
    }
}

/// What can stop `replay` or `audit`.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error("replaying {key} to {queue}: {message}")]
    Send {
        key: String,
        queue: String,
        message: String,
        class: relay_shared::retry::Class,
    },
    #[error("prefix {prefix:?} is not under the raw prefix {raw_prefix:?}")]
    Prefix { prefix: String, raw_prefix: String },
    #[error(
        "--mode reprocess deletes done markers and sends every object again; confirm with --yes"
    )]
    NeedsYes,
    #[error("not confirmed; nothing was changed")]
    NotConfirmed,
    #[error("give --notification-queue-url or --function-name")]
    NoTarget,
    #[error("reading the confirmation: {0}")]
    Prompt(std::io::Error),
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },
}

impl ToolError {
    /// Whether trying again may help: S3 or SQS did not answer, or asked
    /// us to slow down.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::S3(e) => e.class().is_retryable(),
            Self::Send { class, .. } => class.is_retryable(),
            _ => false,
        }
    }
}

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
            json,
        }) => return Ok(audit::run(&range, &raw_prefix, older_than_mins, json).await?),
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
