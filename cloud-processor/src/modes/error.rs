//! How a run of the processor ends: its exit status, and why it stopped
//! (the settings, serving, an operator tool, a local run).

use std::process::ExitCode;

use relay_shared::store::S3Error;

use crate::aws::ConnectError;
use crate::cli::ConfigError;
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
            Self::Config(_)
            | Self::Serve(ServeError::Config(_))
            | Self::Serve(ServeError::Connect(ConnectError::Config(_))) => 2,
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

/// Why a serving mode (the Lambda, `poll`) stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("installing the metrics recorder: {0}")]
    Metrics(String),
    #[error("RELAY_METRICS_ADDR {0:?} is not an address such as 0.0.0.0:9898 (or `off`)")]
    MetricsAddr(String),
    #[error("the Lambda runtime stopped: {0}")]
    Runtime(String),
    #[error("configuring the Lambda from its environment: {0}")]
    Environment(String),
}
