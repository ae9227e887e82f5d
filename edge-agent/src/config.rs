//! Configuration: flags, `RELAY_*` environment variables and an optional TOML
//! file, resolved once into an immutable, validated [`Config`].
//!
//! Precedence is flag > environment > file > default. Clap fields are
//! `Option`s without clap defaults, so a value that was not given can be told
//! apart from one that happens to equal the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use relay_shared::keys::{KeyError, KeyScheme, TimeFormat};
use relay_shared::telemetry::LogFormat;

use crate::tracker::Waits;
use serde::Deserialize;

pub const DEFAULT_INCLUDE: &str = "*.json";
pub const DEFAULT_RAW_PREFIX: &str = "raw/";
/// How long a file must be unchanged where leases are refused (settle-only).
pub const DEFAULT_SETTLE_MS: u64 = 1_000;
/// How long a file must be unchanged where a read lease shows that no one
/// holds it open for writing: only for writers that close and reopen.
pub const DEFAULT_QUIET_MS: u64 = 100;
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
pub const DEFAULT_CONCURRENCY: usize = 4;
/// S3's minimum part size; also the compressed size above which multipart is used.
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;
pub const DEFAULT_MULTIPART_THRESHOLD_BYTES: u64 = 8 * 1024 * 1024;
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9187";
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_CANARY_SECS: u64 = 60;
/// Longer than a few retries of one file, shorter than any alert's `for`.
pub const DEFAULT_DEGRADED_AFTER_SECS: u64 = 30;

/// By default one S3 request may take this long for its answer, plus its
/// body's time at [`ATTEMPT_BYTES_PER_SEC`]: a small file's upload stuck in
/// a black hole is abandoned after about 10 s (and a new connection to one
/// fails after the SDK's 3.1 s connect timeout), so uploads resume within
/// seconds of S3 answering again; an 8 MiB part gets 138 s, so a slow but
/// moving link is never cut off.
pub const ATTEMPT_BASE_SECS: u64 = 10;
/// 512 kbit/s: the slowest link a body is given time for.
pub const ATTEMPT_BYTES_PER_SEC: u64 = 64 * 1024;

/// How long one S3 request may take before it is abandoned and retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptTimeout {
    /// [`ATTEMPT_BASE_SECS`] plus the body at [`ATTEMPT_BYTES_PER_SEC`].
    Sized(relay_shared::s3::AttemptBudget),
    /// `RELAY_AWS_ATTEMPT_TIMEOUT_SECS`, whatever the body.
    Fixed(Duration),
}

impl AttemptTimeout {
    /// The timeout of a request that sends no body (or a client's default).
    pub fn base(&self) -> Duration {
        match self {
            Self::Sized(b) => b.base,
            Self::Fixed(d) => *d,
        }
    }

    fn summary(&self) -> String {
        match self {
            Self::Sized(b) => format!(
                "{} plus 1 per {} KiB sent",
                b.base.as_secs(),
                b.bytes_per_sec / 1024
            ),
            Self::Fixed(d) => d.as_secs().to_string(),
        }
    }
}

/// Parses `argv`. A subcommand that reads no settings (completions, man)
/// gets help without them; `Err` is for the caller to print and exit.
pub fn parse_from(argv: Vec<std::ffi::OsString>) -> Result<Args, EarlyExit> {
    use clap::CommandFactory;
    match Args::try_parse_from(&argv) {
        Ok(args) => Ok(args),
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            let own =
                relay_shared::cli::subcommand_help(Args::command(), &argv, |cmd, sub| match sub {
                    "completions" | "man" => relay_shared::cli::hide_globals(cmd),
                    _ => cmd,
                });
            Err(own.map_or(EarlyExit::Clap(e), EarlyExit::Help))
        }
        Err(e) => Err(EarlyExit::Clap(e)),
    }
}

/// Why parsing stopped before a run: clap's own message (errors,
/// `--version`, help), or a subcommand's help to print to stdout.
#[derive(Debug)]
pub enum EarlyExit {
    Clap(clap::Error),
    Help(String),
}

/// Relays finished files from a directory to S3, zstd-compressed, exactly once
/// per key (conditional writes with If-None-Match: *).
#[derive(Debug, Parser)]
#[command(name = "edge-agent", version, about, long_about = None)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
    /// Optional TOML file with any of the settings below (snake_case names).
    #[arg(long, global = true, env = "RELAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory the container writes its files into (required).
    #[arg(long, global = true, env = "RELAY_WATCH_DIR")]
    pub watch_dir: Option<PathBuf>,
    /// Watch subdirectories too. File names must then be unique across them,
    /// because the key is made from the file name alone [default: false].
    #[arg(long, global = true, env = "RELAY_RECURSIVE", num_args = 0..=1, default_missing_value = "true", require_equals = false)]
    pub recursive: Option<bool>,
    /// Glob that file names must match [default: *.json]. Hidden files (`.x`)
    /// and temporary files (`*.tmp`, `*.part`, `*~`, `*.swp`) are always ignored.
    #[arg(long, global = true, env = "RELAY_INCLUDE")]
    pub include: Option<String>,
    /// Destination bucket (required).
    #[arg(long, global = true, env = "RELAY_BUCKET")]
    pub bucket: Option<String>,
    /// Source id, one path segment of every key [default: the host name].
    /// Agents that share a directory (an active-active pair) must share it.
    #[arg(long, global = true, env = "RELAY_SOURCE_ID")]
    pub source_id: Option<String>,
    /// Key prefix for raw objects [default: raw/].
    #[arg(long, global = true, env = "RELAY_RAW_PREFIX")]
    pub raw_prefix: Option<String>,
    /// How to read the timestamp from a file name: `auto` (epoch s/ms/us/ns or
    /// 2026-11-21T22-30-00.123Z) or a strftime pattern such as
    /// `events-%Y%m%d-%H%M%S` [default: auto].
    #[arg(long, global = true, env = "RELAY_TIMESTAMP_FORMAT")]
    pub timestamp_format: Option<String>,
    /// What to do with a file once S3 has it: `delete`, `keep`, or
    /// `move:<dir>` [default: keep]. `keep` records uploads in a durable
    /// ledger under the state dir so a restart does not re-upload them.
    #[arg(long, global = true, env = "RELAY_ON_SUCCESS")]
    pub on_success: Option<String>,
    /// How long a file must be unchanged in size and mtime before it is
    /// uploaded. Where read leases show that no process holds a file open
    /// for writing, this is only a quiet period after its last write, for
    /// writers that close a file and open it again [default: 100]. Where
    /// leases are refused, the file must also have been closed (or renamed
    /// in), and this must outlast the writer's longest pause [default: 1000].
    #[arg(long, global = true, env = "RELAY_SETTLE_MS")]
    pub settle_ms: Option<u64>,
    /// zstd level, 1-19 [default: 3].
    #[arg(long, global = true, env = "RELAY_ZSTD_LEVEL")]
    pub zstd_level: Option<i32>,
    /// Uploads in flight at once [default: 4].
    #[arg(long, global = true, env = "RELAY_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Compressed size above which a multipart upload is used; also the part
    /// size. At least 5 MiB [default: 8388608].
    #[arg(long, global = true, env = "RELAY_MULTIPART_THRESHOLD_BYTES")]
    pub multipart_threshold_bytes: Option<u64>,
    /// Address for /metrics (Prometheus) and /healthz, or `off`
    /// [default: 127.0.0.1:9187].
    #[arg(long, global = true, env = "RELAY_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Where the agent keeps its ledger [default: <watch-dir>/.relay-agent].
    #[arg(long, global = true, env = "RELAY_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// On SIGTERM/SIGINT, how long in-flight uploads may take to finish
    /// [default: 30].
    #[arg(long, global = true, env = "RELAY_SHUTDOWN_TIMEOUT_SECS")]
    pub shutdown_timeout_secs: Option<u64>,
    /// How long one S3 request may take, its body sent and its answer
    /// received, before it is abandoned and retried, so a silent connection
    /// fails instead of holding an upload slot until TCP gives up, and
    /// uploads resume within seconds of an outage's end [default: 10 plus 1
    /// per 64 KiB the request sends: 10 for a small file, 138 for an 8 MiB part].
    #[arg(long, global = true, env = "RELAY_AWS_ATTEMPT_TIMEOUT_SECS")]
    pub aws_attempt_timeout_secs: Option<u64>,
    /// Every this many seconds, upload a canary: a one-record object on the
    /// data's path, whose end-to-end lag the processor measures, and a
    /// completeness manifest (the files stored, refused and waiting) under
    /// `ledger/`; `0` turns both off [default: 60].
    #[arg(long, global = true, env = "RELAY_CANARY_SECS")]
    pub canary_secs: Option<u64>,
    /// After S3 has failed every upload for this many seconds, `/healthz`
    /// answers "degraded" (still 200: files wait on disk, nothing is lost)
    /// and `relay_agent_degraded` is 1 [default: 30].
    #[arg(long, global = true, env = "RELAY_DEGRADED_AFTER_SECS")]
    pub degraded_after_secs: Option<u64>,
    /// Force path-style S3 addressing (needed by emulators on 127.0.0.1)
    /// [default: false].
    #[arg(long, global = true, env = "RELAY_S3_PATH_STYLE", num_args = 0..=1, default_missing_value = "true", require_equals = false)]
    pub s3_path_style: Option<bool>,
    /// Log format; `RUST_LOG` filters [default: text].
    #[arg(long, global = true, env = "RELAY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// How `check` runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct CheckArgs {
    /// Check as this systemd unit runs the agent: with the environment of
    /// its `EnvironmentFile=` only, as its `User=` (when run as root) with
    /// its ambient capabilities, and with the configured paths held against
    /// its sandbox (`ProtectSystem=strict` and `ReadWritePaths=`,
    /// `ProtectHome=`, `PrivateTmp=`), drop-ins included. E.g.
    /// `sudo edge-agent check --unit /lib/systemd/system/relay-edge-agent.service`.
    #[arg(long, value_name = "UNIT_FILE")]
    pub unit: Option<PathBuf>,
    /// Set on the re-run `--unit` makes as the unit's user.
    #[arg(long, hide = true, requires = "unit")]
    pub inside_unit: bool,
}

impl CheckArgs {
    /// The unit to re-run the check as, unless this is that re-run.
    pub fn rerun_as_unit(&self) -> Option<&Path> {
        self.unit.as_deref().filter(|_| !self.inside_unit)
    }
}

impl Args {
    /// How to check, if the command is `check`.
    pub fn check(&self) -> Option<CheckArgs> {
        match &self.command {
            Some(AgentCommand::Check(c)) => Some(c.clone()),
            _ => None,
        }
    }
}

/// What to do instead of running.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum AgentCommand {
    /// Check the settings, the directories and their permissions, the
    /// metrics address and write access to S3, then exit: one line per
    /// check, and a non-zero exit status if any fails. Writes nothing.
    Check(CheckArgs),
    /// Print a shell completion script, e.g. `edge-agent completions bash >
    /// /usr/share/bash-completion/completions/edge-agent`.
    Completions {
        #[arg(value_enum)]
        shell: relay_shared::cli::Shell,
    },
    /// Print the man page (roff), e.g. `edge-agent man > edge-agent.1`.
    Man,
}

/// The TOML file. Every field mirrors the flag of the same name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Directory the container writes its files into.
    pub watch_dir: Option<PathBuf>,
    /// Watch subdirectories too.
    pub recursive: Option<bool>,
    /// Glob that file names must match.
    pub include: Option<String>,
    /// Destination bucket.
    pub bucket: Option<String>,
    /// Source id, one path segment of every key.
    pub source_id: Option<String>,
    /// Key prefix for raw objects.
    pub raw_prefix: Option<String>,
    /// `auto` or a strftime pattern for the timestamp in file names.
    pub timestamp_format: Option<String>,
    /// `delete`, `keep` or `move:<dir>`.
    pub on_success: Option<String>,
    /// Settle time in milliseconds.
    pub settle_ms: Option<u64>,
    /// zstd level.
    pub zstd_level: Option<i32>,
    /// Uploads in flight at once.
    pub concurrency: Option<usize>,
    /// Multipart threshold and part size in bytes.
    pub multipart_threshold_bytes: Option<u64>,
    /// Metrics and health address, or `off`.
    pub metrics_addr: Option<String>,
    /// Where the ledger lives.
    pub state_dir: Option<PathBuf>,
    /// Shutdown deadline in seconds.
    pub shutdown_timeout_secs: Option<u64>,
    /// Time one S3 request may take, in seconds.
    pub aws_attempt_timeout_secs: Option<u64>,
    /// Seconds between canaries; 0 turns them off.
    pub canary_secs: Option<u64>,
    pub degraded_after_secs: Option<u64>,
    /// Force path-style S3 addressing.
    pub s3_path_style: Option<bool>,
    /// `text` or `json`.
    pub log_format: Option<LogFormat>,
}

/// What happens to a file after S3 has confirmed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnSuccess {
    Delete,
    Keep,
    Move(PathBuf),
}

impl std::fmt::Display for OnSuccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Delete => f.write_str("delete"),
            Self::Keep => f.write_str("keep"),
            Self::Move(dir) => write!(f, "move:{}", dir.display()),
        }
    }
}

impl Config {
    /// The effective settings, for the start-up log line.
    pub fn summary(&self) -> Vec<(&'static str, String)> {
        vec![
            ("watch_dir", self.watch_dir.display().to_string()),
            ("recursive", self.recursive.to_string()),
            ("include", self.include.as_str().to_owned()),
            ("bucket", self.bucket.clone()),
            ("prefix", self.keys.source_prefix()),
            ("on_success", self.on_success.to_string()),
            (
                "settle_ms",
                self.settle.map_or_else(
                    || format!("{DEFAULT_QUIET_MS} with leases, {DEFAULT_SETTLE_MS} without"),
                    |d| d.as_millis().to_string(),
                ),
            ),
            ("zstd_level", self.zstd_level.to_string()),
            ("concurrency", self.concurrency.to_string()),
            (
                "multipart_threshold_bytes",
                self.multipart_threshold_bytes.to_string(),
            ),
            (
                "metrics_addr",
                self.metrics_addr.map_or("off".into(), |a| a.to_string()),
            ),
            ("state_dir", self.state_dir.display().to_string()),
            (
                "shutdown_timeout_secs",
                self.shutdown_timeout.as_secs().to_string(),
            ),
            (
                "aws_attempt_timeout_secs",
                self.aws_attempt_timeout.summary(),
            ),
            (
                "canary_secs",
                self.canary.map_or(0, |c| c.as_secs()).to_string(),
            ),
            (
                "degraded_after_secs",
                self.degraded_after.as_secs().to_string(),
            ),
        ]
    }
}

/// The resolved, validated configuration. Immutable after start-up.
#[derive(Debug, Clone)]
pub struct Config {
    pub watch_dir: PathBuf,
    pub recursive: bool,
    pub include: glob::Pattern,
    pub bucket: String,
    pub keys: KeyScheme,
    pub on_success: OnSuccess,
    /// `RELAY_SETTLE_MS` if given; otherwise each rule's default (see
    /// [`Config::waits`]).
    pub settle: Option<Duration>,
    pub zstd_level: i32,
    pub concurrency: usize,
    pub multipart_threshold_bytes: u64,
    pub metrics_addr: Option<SocketAddr>,
    pub state_dir: PathBuf,
    pub shutdown_timeout: Duration,
    /// How long one S3 request may take before it is retried.
    pub aws_attempt_timeout: AttemptTimeout,
    /// How often a canary is uploaded, if at all.
    pub canary: Option<Duration>,
    /// How long S3 may fail every upload before `/healthz` says degraded.
    pub degraded_after: Duration,
    pub s3_path_style: bool,
    pub log_format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{name} is required (flag --{flag} or {env})")]
    Missing {
        name: &'static str,
        flag: &'static str,
        env: &'static str,
    },
    #[error("{name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

impl Config {
    /// Resolves flags and environment (already in `args`) over the file named
    /// by `--config`, over defaults. `hostname` supplies the default source id.
    pub fn resolve(
        args: Args,
        hostname: impl FnOnce() -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        macro_rules! pick {
            ($field:ident) => {
                args.$field.or(file.$field)
            };
        }
        let watch_dir = watch_dir(pick!(watch_dir))?;
        let multipart_threshold_bytes = in_range(
            "multipart threshold",
            pick!(multipart_threshold_bytes).unwrap_or(DEFAULT_MULTIPART_THRESHOLD_BYTES),
            MIN_PART_BYTES..=(5 << 30),
            "bytes is outside S3's part sizes (5 MiB to 5 GiB)",
        )?;
        let aws_attempt_timeout = match pick!(aws_attempt_timeout_secs) {
            Some(0) => {
                return Err(invalid(
                    "aws_attempt_timeout_secs",
                    "must be at least 1 second",
                ));
            }
            Some(secs) => AttemptTimeout::Fixed(Duration::from_secs(secs)),
            None => AttemptTimeout::Sized(relay_shared::s3::AttemptBudget {
                base: Duration::from_secs(ATTEMPT_BASE_SECS),
                bytes_per_sec: ATTEMPT_BYTES_PER_SEC,
            }),
        };
        Ok(Self {
            recursive: pick!(recursive).unwrap_or(false),
            include: include(pick!(include))?,
            bucket: bucket(pick!(bucket))?,
            keys: key_scheme(
                pick!(raw_prefix),
                pick!(source_id),
                pick!(timestamp_format),
                hostname,
            )?,
            on_success: on_success(pick!(on_success))?,
            settle: pick!(settle_ms).map(Duration::from_millis),
            zstd_level: in_range(
                "zstd level",
                pick!(zstd_level).unwrap_or(DEFAULT_ZSTD_LEVEL),
                1..=19,
                "is outside 1-19",
            )?,
            concurrency: in_range(
                "concurrency",
                pick!(concurrency).unwrap_or(DEFAULT_CONCURRENCY),
                1..=256,
                "is outside 1-256",
            )?,
            multipart_threshold_bytes,
            metrics_addr: metrics_addr(pick!(metrics_addr))?,
            state_dir: state_dir(pick!(state_dir), &watch_dir)?,
            shutdown_timeout: Duration::from_secs(
                pick!(shutdown_timeout_secs).unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_SECS),
            ),
            aws_attempt_timeout,
            canary: Some(pick!(canary_secs).unwrap_or(DEFAULT_CANARY_SECS))
                .filter(|&s| s > 0)
                .map(Duration::from_secs),
            degraded_after: Duration::from_secs(
                pick!(degraded_after_secs).unwrap_or(DEFAULT_DEGRADED_AFTER_SECS),
            ),
            s3_path_style: pick!(s3_path_style).unwrap_or(false),
            log_format: pick!(log_format).unwrap_or_default(),
            watch_dir,
        })
    }

    /// How long files must be unchanged: the setting for both rules, or
    /// each rule's default.
    pub fn waits(&self) -> Waits {
        Waits {
            quiet: self
                .settle
                .unwrap_or(Duration::from_millis(DEFAULT_QUIET_MS)),
            settle: self
                .settle
                .unwrap_or(Duration::from_millis(DEFAULT_SETTLE_MS)),
        }
    }

    /// Whether a file name is one the agent should relay.
    pub fn wants(&self, name: &str) -> bool {
        !is_hidden_or_temporary(name) && self.include.matches(name)
    }
}

/// `value` if it lies in `range`; otherwise an error that says so.
fn in_range<T>(
    name: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    outside: &str,
) -> Result<T, ConfigError>
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(invalid(name, format!("{value} {outside}")))
    }
}

fn watch_dir(dir: Option<PathBuf>) -> Result<PathBuf, ConfigError> {
    let dir = dir.ok_or(ConfigError::Missing {
        name: "watch directory",
        flag: "watch-dir",
        env: "RELAY_WATCH_DIR",
    })?;
    if !dir.is_dir() {
        return Err(invalid(
            "watch directory",
            format!("{} is not a directory", dir.display()),
        ));
    }
    // Every path is resolved once, here: inotify reports absolute paths,
    // and a relative watch directory made every live file look foreign.
    absolute("watch directory", &dir)
}

fn bucket(bucket: Option<String>) -> Result<String, ConfigError> {
    let bucket = bucket.ok_or(ConfigError::Missing {
        name: "bucket",
        flag: "bucket",
        env: "RELAY_BUCKET",
    })?;
    if bucket.is_empty() || bucket.contains('/') {
        return Err(invalid(
            "bucket",
            format!("{bucket:?} is not a bucket name"),
        ));
    }
    Ok(bucket)
}

fn include(glob: Option<String>) -> Result<glob::Pattern, ConfigError> {
    let src = glob.unwrap_or_else(|| DEFAULT_INCLUDE.to_owned());
    glob::Pattern::new(&src).map_err(|e| invalid("include glob", format!("{src:?}: {e}")))
}

fn key_scheme(
    raw_prefix: Option<String>,
    source_id: Option<String>,
    timestamp_format: Option<String>,
    hostname: impl FnOnce() -> Option<String>,
) -> Result<KeyScheme, ConfigError> {
    let source_id = match source_id {
        Some(s) => s,
        None => hostname().ok_or(ConfigError::Missing {
            name: "source id (the host name could not be read)",
            flag: "source-id",
            env: "RELAY_SOURCE_ID",
        })?,
    };
    let format: TimeFormat = timestamp_format.unwrap_or_default().parse()?;
    Ok(KeyScheme::new(
        &raw_prefix.unwrap_or_else(|| DEFAULT_RAW_PREFIX.to_owned()),
        &source_id,
        format,
    )?)
}

fn on_success(value: Option<String>) -> Result<OnSuccess, ConfigError> {
    match parse_on_success(value.as_deref().unwrap_or("keep"))? {
        OnSuccess::Move(dir) if !dir.is_dir() => Err(invalid(
            "on-success",
            format!("move target {} is not a directory", dir.display()),
        )),
        OnSuccess::Move(dir) => Ok(OnSuccess::Move(absolute("on-success move target", &dir)?)),
        other => Ok(other),
    }
}

fn metrics_addr(addr: Option<String>) -> Result<Option<SocketAddr>, ConfigError> {
    match addr.as_deref().unwrap_or(DEFAULT_METRICS_ADDR) {
        "" | "off" => Ok(None),
        addr => addr
            .parse()
            .map(Some)
            .map_err(|e| invalid("metrics address", format!("{addr:?}: {e}"))),
    }
}

fn state_dir(dir: Option<PathBuf>, watch_dir: &Path) -> Result<PathBuf, ConfigError> {
    match dir {
        Some(dir) if dir.is_relative() => std::env::current_dir()
            .map(|cwd| cwd.join(dir))
            .map_err(|e| invalid("state directory", e.to_string())),
        Some(dir) => Ok(dir),
        None => Ok(watch_dir.join(".relay-agent")),
    }
}

/// The canonical, absolute form of an existing directory.
fn absolute(name: &'static str, dir: &Path) -> Result<PathBuf, ConfigError> {
    std::fs::canonicalize(dir).map_err(|e| invalid(name, format!("{}: {e}", dir.display())))
}

/// Writers commonly create `.name.tmp`, `name.part` or editor swap files and
/// rename them into place; those are never finished data.
pub fn is_hidden_or_temporary(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || [
            ".tmp",
            ".temp",
            ".part",
            ".partial",
            ".swp",
            ".swx",
            ".crdownload",
        ]
        .iter()
        .any(|ext| name.ends_with(ext))
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

fn parse_on_success(value: &str) -> Result<OnSuccess, ConfigError> {
    match value {
        "delete" => Ok(OnSuccess::Delete),
        "keep" => Ok(OnSuccess::Keep),
        other => match other.strip_prefix("move:") {
            Some(dir) if !dir.is_empty() => Ok(OnSuccess::Move(PathBuf::from(dir))),
            _ => Err(invalid(
                "on-success",
                format!("{other:?}: expected `delete`, `keep` or `move:<dir>`"),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["edge-agent"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn booleans_are_plain_switches_and_still_take_a_value() {
        let a = args(&["--recursive", "--s3-path-style", "--bucket", "b"]);
        assert_eq!((a.recursive, a.s3_path_style), (Some(true), Some(true)));
        let a = args(&["--recursive=false", "--s3-path-style", "true"]);
        assert_eq!((a.recursive, a.s3_path_style), (Some(false), Some(true)));
        let a = args(&["check", "--recursive"]);
        assert_eq!(a.recursive, Some(true));
        assert_eq!(
            args(&[]).recursive,
            None,
            "unset stays unset, for the file to decide"
        );
    }

    #[test]
    fn defaults_and_required_fields() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let err = Config::resolve(args(&["--bucket", "b"]), || None).unwrap_err();
        assert!(err.to_string().contains("RELAY_WATCH_DIR"), "{err}");
        let err = Config::resolve(args(&["--watch-dir", d]), || None).unwrap_err();
        assert!(err.to_string().contains("RELAY_BUCKET"), "{err}");

        let c = Config::resolve(args(&["--watch-dir", d, "--bucket", "b"]), || {
            Some("host-1".into())
        })
        .unwrap();
        assert_eq!(c.keys.source_id(), "host-1");
        assert_eq!(c.keys.prefix(), "raw/");
        assert_eq!(c.on_success, OnSuccess::Keep);
        assert_eq!(c.settle, None);
        assert_eq!(
            c.waits(),
            Waits {
                quiet: Duration::from_millis(100),
                settle: Duration::from_millis(1000)
            }
        );
        assert_eq!(c.zstd_level, 3);
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9187".parse().unwrap()));
        assert_eq!(c.state_dir, dir.path().join(".relay-agent"));
        // Short for a small file, long enough for an 8 MiB part at 512 kbit/s.
        let AttemptTimeout::Sized(budget) = c.aws_attempt_timeout else {
            panic!("{:?}", c.aws_attempt_timeout)
        };
        assert_eq!(budget.for_bytes(20_000), Duration::from_secs(11));
        assert_eq!(budget.for_bytes(8 << 20), Duration::from_secs(10 + 128));
        let fixed = ["--aws-attempt-timeout-secs", "42"];
        let c = Config::resolve(
            args(&[&["--watch-dir", d, "--bucket", "b"][..], &fixed].concat()),
            || Some("h".into()),
        )
        .unwrap();
        assert_eq!(
            c.aws_attempt_timeout,
            AttemptTimeout::Fixed(Duration::from_secs(42))
        );
        assert!(c.wants("1732227000.json"));
        assert!(!c.wants(".1732227000.json"));
        assert!(!c.wants("1732227000.json.tmp"));
        assert!(!c.wants("1732227000.txt"));
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(
            &file,
            format!("watch_dir = {d:?}\nbucket = \"from-file\"\nsettle_ms = 250\nsource_id = \"f\"\non_success = \"delete\"\n"),
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let c = Config::resolve(args(&["--config", f, "--bucket", "from-flag"]), || None).unwrap();
        assert_eq!(c.bucket, "from-flag");
        assert_eq!(c.settle, Some(Duration::from_millis(250)));
        assert_eq!(
            c.waits().quiet,
            Duration::from_millis(250),
            "one setting for both rules"
        );
        assert_eq!(c.on_success, OnSuccess::Delete);

        std::fs::write(&file, "bucket = \"b\"\nsetle_ms = 5\n").unwrap();
        let err = Config::resolve(args(&["--config", f]), || None).unwrap_err();
        assert!(
            err.to_string().contains("setle_ms"),
            "unknown fields are named: {err}"
        );
    }

    #[test]
    fn invalid_values_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let base = ["--watch-dir", d, "--bucket", "b", "--source-id", "s"];
        let cases: &[(&[&str], &str)] = &[
            (&["--on-success", "archive"], "move:<dir>"),
            (
                &["--on-success", "move:/nonexistent/relay"],
                "not a directory",
            ),
            (&["--zstd-level", "40"], "1-19"),
            (&["--concurrency", "0"], "1-256"),
            (&["--multipart-threshold-bytes", "1024"], "5 MiB"),
            (&["--metrics-addr", "nowhere"], "metrics address"),
            (&["--include", "[*.json"], "include glob"),
            (&["--raw-prefix", "raw"], "end with `/`"),
            (&["--timestamp-format", "plain"], "no % conversion"),
            (&["--aws-attempt-timeout-secs", "0"], "at least 1 second"),
        ];
        for (extra, want) in cases {
            let mut argv: Vec<&str> = base.to_vec();
            argv.extend_from_slice(extra);
            let err = Config::resolve(args(&argv), || None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{extra:?}: {err}");
        }
        let err = Config::resolve(
            args(&["--watch-dir", "/nonexistent/relay", "--bucket", "b"]),
            || None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
