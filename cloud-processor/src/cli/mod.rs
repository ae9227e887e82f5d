//! Configuration from flags and `RELAY_*` environment variables (the Lambda
//! has only the environment), validated once at start-up into [`Config`].

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand};
use relay_shared::telemetry::LogFormat;

use crate::output::batch::attributes_size;
use crate::pipeline::body::BodyFormat;
use crate::pipeline::project::{EmptyRecords, Field, Missing, Projection, SpecError, parse_fields};
use crate::pipeline::{LargeRecords, Settings};

pub const DEFAULT_MAX_DECOMPRESSED_BYTES: u64 = 2 << 30;
/// Records up to this are framed in memory; larger ones stream through
/// spools (see `stream.rs`).
pub const RECORD_WINDOW_BYTES: usize = 1 << 20;
/// The largest record read by default: 256 MiB.
pub const DEFAULT_LARGEST_RECORD_BYTES: u64 = 256 << 20;

/// The relay's cloud processor: raw objects in S3 to packed SQS messages.
/// With no subcommand it runs as an AWS Lambda function.
#[derive(Debug, Parser)]
#[command(name = "cloud-processor", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Global, so they may come before or after the subcommand; under their
    /// own heading, since the operator tools use few of them.
    #[command(
        flatten,
        next_help_heading = "Data path (Lambda, poll, check, process)"
    )]
    pub common: Common,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as an AWS Lambda function (the default).
    Lambda(Aws),
    /// Long-poll the S3 notification queue and process objects, outside Lambda.
    Poll {
        #[command(flatten)]
        aws: Aws,
        /// The queue S3 notifications are delivered to.
        #[arg(long, env = "RELAY_NOTIFICATION_QUEUE_URL")]
        notification_queue_url: String,
        /// Visibility timeout while a message is worked on; it is extended
        /// every half of it until the object is done.
        #[arg(long, env = "RELAY_VISIBILITY_TIMEOUT_SECS", default_value_t = 60)]
        visibility_timeout_secs: u32,
        /// Address for /metrics (Prometheus) and /healthz, or `off`.
        #[arg(long, env = "RELAY_METRICS_ADDR", default_value = "127.0.0.1:9188")]
        metrics_addr: String,
    },
    /// Re-send S3 events for raw objects to the notification queue: only those
    /// without a done marker (backfill), or all of them (reprocess).
    Replay(ReplayArgs),
    /// Report raw objects with no done marker after a while, stale leases,
    /// quarantined objects and reject reports.
    Audit {
        #[command(flatten)]
        range: Range,
        /// Raw objects older than this without a done marker are reported.
        #[arg(long, default_value_t = 60)]
        older_than_mins: i64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check the settings and every AWS resource they name (the bucket and
    /// its prefixes, both queues, the function's timeout), and with
    /// --sample what the projection makes of a real file, then exit: one
    /// line per check, and exit status 1 if any fails. Writes nothing.
    Check {
        #[command(flatten)]
        aws: Aws,
        /// The bucket raw objects arrive in.
        #[arg(long, env = "RELAY_BUCKET")]
        bucket: String,
        /// The queue S3 notifications are delivered to.
        #[arg(long, env = "RELAY_NOTIFICATION_QUEUE_URL")]
        notification_queue_url: Option<String>,
        /// The deployed function, to check its timeout against the
        /// notification queue's visibility timeout.
        #[arg(long, env = "RELAY_FUNCTION_NAME")]
        function_name: Option<String>,
        /// A raw file (zstd or plain) to project: shows the first records'
        /// projections and how many records have each field.
        #[arg(long)]
        sample: Option<PathBuf>,
    },
    /// Print a shell completion script, e.g. `cloud-processor completions
    /// bash > /usr/share/bash-completion/completions/cloud-processor`.
    Completions {
        #[arg(value_enum)]
        shell: relay_shared::cli::Shell,
    },
    /// Print the man page (roff), e.g. `cloud-processor man > cloud-processor.1`.
    Man,
    /// Run the pipeline on local files (zstd or plain, `-` for stdin) with no
    /// AWS at all: message bodies go to stdout, or one file per message with
    /// --out; a summary and the rejects go to stderr.
    Process {
        /// Files to process.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write each message body to DIR/<file>.<chunk>.json instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The queue's message size limit to pack for.
        #[arg(long, env = "RELAY_MAX_MESSAGE_BYTES", default_value_t = 262_144)]
        max_message_bytes: usize,
    },
}

/// What `replay` was asked to do.
#[derive(Debug, Clone, ClapArgs)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub range: Range,
    /// Send the events to the queue the processor consumes S3
    /// notifications from (the usual way)...
    #[arg(
        long,
        env = "RELAY_NOTIFICATION_QUEUE_URL",
        required_unless_present = "function_name",
        conflicts_with = "function_name"
    )]
    pub notification_queue_url: Option<String>,
    /// ...or invoke the processor function with each event, one object at
    /// a time, reporting any object it fails on.
    #[arg(long, env = "RELAY_FUNCTION_NAME")]
    pub function_name: Option<String>,
    /// `missing`: objects without a done marker; `reprocess`: all, after
    /// deleting their markers (consumers then see those records again).
    #[arg(long, value_enum, default_value_t = crate::modes::replay::Mode::Missing)]
    pub mode: crate::modes::replay::Mode,
    /// List what would be sent; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Confirm `--mode reprocess` without a prompt.
    #[arg(long)]
    pub yes: bool,
    /// Events sent per second at most.
    #[arg(long, default_value_t = 50)]
    pub rate_per_sec: u32,
}

/// Which objects `replay` and `audit` look at.
#[derive(Debug, Clone, ClapArgs)]
pub struct Range {
    /// The bucket of raw objects.
    #[arg(long, env = "RELAY_BUCKET")]
    pub bucket: String,
    /// Key prefix to look under [default: the raw prefix], e.g.
    /// `raw/edge-1/2026/11/21/` for one source's day.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only objects stored at or after this instant (RFC 3339, e.g. 2026-11-21T00:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Only objects stored before this instant (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Key prefix of markers and reports.
    #[arg(long, env = "RELAY_STATE_PREFIX", default_value = "state/")]
    pub state_prefix: String,
    /// Force path-style S3 addressing (emulators on 127.0.0.1).
    #[arg(long, env = "RELAY_S3_PATH_STYLE", default_value_t = false)]
    pub s3_path_style: bool,
    #[command(flatten)]
    pub timeouts: AwsTimeouts,
}

/// An RFC 3339 instant, in epoch seconds.
fn instant(name: &'static str, value: Option<&str>) -> Result<Option<i64>, ConfigError> {
    value
        .map(|v| {
            v.parse::<jiff::Timestamp>()
                .map(|t| t.as_second())
                .map_err(|_| ConfigError::Invalid {
                    name,
                    reason: format!(
                        "{v:?} is not an RFC 3339 instant such as 2026-11-21T00:00:00Z"
                    ),
                })
        })
        .transpose()
}

impl Range {
    /// The objects this range selects, with its instants parsed and checked.
    pub fn selection(
        &self,
        raw_prefix: &str,
    ) -> Result<crate::modes::replay::Selection, ConfigError> {
        let since = instant("--since", self.since.as_deref())?;
        let until = instant("--until", self.until.as_deref())?;
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            return Err(ConfigError::Invalid {
                name: "--since",
                reason: format!(
                    "{} is not before --until {}: the range selects nothing",
                    self.since.as_deref().unwrap_or_default(),
                    self.until.as_deref().unwrap_or_default()
                ),
            });
        }
        Ok(crate::modes::replay::Selection {
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone().unwrap_or_else(|| raw_prefix.to_owned()),
            raw_prefix: raw_prefix.to_owned(),
            state_prefix: self.state_prefix.clone(),
            since,
            until,
        })
    }
}

/// How long AWS calls may take, in every mode that makes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ClapArgs)]
pub struct AwsTimeouts {
    /// How long one AWS request may wait for its response before it is
    /// retried, so a silent connection fails instead of holding its object
    /// [default: 10, or the operation timeout if less].
    #[arg(long, env = "RELAY_AWS_ATTEMPT_TIMEOUT_SECS")]
    pub aws_attempt_timeout_secs: Option<u64>,
    /// How long one AWS call may take, the SDK's retries included
    /// [default: 20, or a third of the lease TTL if less: a send starts only
    /// with that much of the lease left].
    #[arg(long, env = "RELAY_AWS_OPERATION_TIMEOUT_SECS")]
    pub aws_operation_timeout_secs: Option<u64>,
}

impl AwsTimeouts {
    /// The timeouts in effect, for a processor holding leases of
    /// `lease_ttl_secs` (`None`: a tool that holds none).
    pub fn resolve(&self, lease_ttl_secs: Option<u64>) -> relay_shared::client::Timeouts {
        let operation = self
            .aws_operation_timeout_secs
            .unwrap_or_else(|| lease_ttl_secs.map_or(20, |ttl| (ttl / 3).clamp(1, 20)));
        let attempt = self
            .aws_attempt_timeout_secs
            .unwrap_or_else(|| operation.min(10));
        relay_shared::client::Timeouts {
            attempt: std::time::Duration::from_secs(attempt),
            operation: std::time::Duration::from_secs(operation),
        }
    }
}

/// Settings for the modes that talk to AWS.
#[derive(Debug, Clone, ClapArgs)]
pub struct Aws {
    /// Where packed messages go.
    #[arg(long, env = "RELAY_OUTPUT_QUEUE_URL")]
    pub output_queue_url: String,
    /// Pack for at most this many bytes even if the queue allows more
    /// [default: the queue's MaximumMessageSize].
    #[arg(long, env = "RELAY_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Key prefix of markers, reject reports and quarantine records. Must be
    /// outside the notification filter, so the processor never triggers itself.
    #[arg(long, env = "RELAY_STATE_PREFIX", default_value = "state/")]
    pub state_prefix: String,
    /// FIFO output queues: the MessageGroupId of every message.
    #[arg(long, env = "RELAY_FIFO_GROUP_ID", default_value = "relay")]
    pub fifo_group_id: String,
    /// How long a processor's claim on an object lasts without renewal. It is
    /// renewed after every batch; after a crash, another processor takes the
    /// object over this long after the last renewal (judged by S3's clock).
    /// Keep it well under SQS FIFO's 5-minute deduplication window.
    #[arg(long, env = "RELAY_LEASE_TTL_SECS", default_value_t = 60)]
    pub lease_ttl_secs: u64,
    #[command(flatten)]
    pub timeouts: AwsTimeouts,
    /// Force path-style S3 addressing (emulators on 127.0.0.1).
    #[arg(long, env = "RELAY_S3_PATH_STYLE", default_value_t = false)]
    pub s3_path_style: bool,
    /// Key prefix of offloaded records (RELAY_LARGE_RECORDS=offload). Must
    /// be outside the raw and state prefixes and the notification filter.
    #[arg(long, env = "RELAY_PAYLOAD_PREFIX", default_value = "payloads/")]
    pub payload_prefix: String,
    /// The bucket offloaded records go to [default: the raw object's].
    #[arg(long, env = "RELAY_PAYLOAD_BUCKET")]
    pub payload_bucket: Option<String>,
    /// Where canaries' messages go (the agents' heartbeats, never the
    /// consumers' queue). Unset: canaries are processed, measured and
    /// counted, and nothing is sent.
    #[arg(long, env = "RELAY_CANARY_QUEUE_URL")]
    pub canary_queue_url: Option<String>,
}

/// Settings shared by every mode.
#[derive(Debug, Clone, ClapArgs)]
pub struct Common {
    /// A TOML file with any of these settings, each under its long name in
    /// snake_case (`output_queue_url = "..."`). Flags and RELAY_* variables
    /// override it; an unknown key is an error.
    #[arg(long, env = "RELAY_CONFIG", global = true, help_heading = "Every mode")]
    pub config: Option<PathBuf>,
    /// Fields to keep: `name=path` or `path`, comma-separated; paths are
    /// dotted (`user.id`, `tags.0`) or JSON pointers (`/user/id`).
    #[arg(long, env = "RELAY_FIELDS", global = true)]
    pub fields: Option<String>,
    /// Only objects under this prefix are processed.
    #[arg(long, env = "RELAY_RAW_PREFIX", default_value = "raw/", global = true)]
    pub raw_prefix: String,
    /// How records are joined in a message body.
    #[arg(long, env = "RELAY_BODY_FORMAT", value_enum, default_value_t = BodyFormat::Ndjson, global = true)]
    pub body_format: BodyFormat,
    /// What to write for a field a record lacks.
    #[arg(long, env = "RELAY_MISSING", value_enum, default_value_t = Missing::Omit, global = true)]
    pub missing: Missing,
    /// What to do with a record that has none of the fields: `reject` it
    /// (it is listed with the other rejects), or `send` it as `{}`.
    #[arg(long, env = "RELAY_EMPTY_RECORDS", value_enum, default_value_t = EmptyRecords::Reject, global = true)]
    pub empty_records: EmptyRecords,
    /// JSON pointer to the array of records inside each top-level value,
    /// for files that wrap their records (e.g. `/data/records`).
    #[arg(long, env = "RELAY_RECORDS_POINTER", global = true)]
    pub records_pointer: Option<String>,
    /// Objects that decompress to more than this are quarantined.
    #[arg(long, env = "RELAY_MAX_DECOMPRESSED_BYTES", default_value_t = DEFAULT_MAX_DECOMPRESSED_BYTES, global = true)]
    pub max_decompressed_bytes: u64,
    /// A projected record too large for any message: `offload` it to S3
    /// and send a pointer the SQS Extended Client reads (a claim check), or
    /// `reject` it into the reject report.
    #[arg(long, env = "RELAY_LARGE_RECORDS", value_enum, default_value_t = LargeRecords::Offload, global = true)]
    pub large_records: LargeRecords,
    /// The largest record read, in bytes as written (larger ones are
    /// rejected with this limit; at least 1 MiB). Records over 1 MiB are
    /// checked and projected as they stream, their wanted fields kept in
    /// temporary files past 1 MiB, never held whole: a Lambda needs this
    /// much free /tmp.
    #[arg(long, env = "RELAY_MAX_RECORD_BYTES", default_value_t = DEFAULT_LARGEST_RECORD_BYTES, global = true)]
    pub max_record_bytes: u64,
    /// Decode zstd on a thread of its own, ahead of parsing: `on` (about
    /// 40% faster in wall time with two cores, about a sixth more CPU),
    /// `off`, or `auto`: on where two cores are there to use (in Lambda,
    /// from 3008 MB of memory, where it has nearly two vCPUs).
    #[arg(long, env = "RELAY_DECODE_THREAD", value_enum, default_value_t = DecodeThread::Auto, global = true)]
    pub decode_thread: DecodeThread,
    /// Log format.
    #[arg(long, env = "RELAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true, help_heading = "Every mode")]
    pub log_format: LogFormat,
}

/// Parses `argv` over the TOML file it names (`--config`), or else
/// `env_config` (RELAY_CONFIG). The file's values become the settings'
/// defaults, so flags and RELAY_* variables override them, as clap orders
/// its sources.
pub fn parse_from(
    argv: Vec<std::ffi::OsString>,
    env_config: Option<PathBuf>,
) -> Result<Cli, ConfigError> {
    use clap::{CommandFactory, FromArgMatches};
    let named = argv.iter().enumerate().find_map(|(i, a)| {
        let a = a.to_str()?;
        match a.strip_prefix("--config=") {
            Some(path) => Some(PathBuf::from(path)),
            None if a == "--config" => argv.get(i + 1).map(PathBuf::from),
            None => None,
        }
    });
    let mut cmd = Cli::command();
    if let Some(path) = named.or(env_config) {
        let invalid = |reason: String| ConfigError::Invalid {
            name: "config file (--config, RELAY_CONFIG)",
            reason: format!("{}: {reason}", path.display()),
        };
        let text = std::fs::read_to_string(&path).map_err(|e| invalid(e.to_string()))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        for (key, value) in table {
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => {
                    return Err(invalid(format!(
                        "{key} is a {}; settings are strings, numbers or booleans",
                        other.type_str()
                    )));
                }
            };
            if key == "config" {
                return Err(invalid("a config file cannot name another".into()));
            }
            // Parsed once per process; clap keeps defaults as `'static`.
            let value: &'static str = Box::leak(value.into_boxed_str());
            let has = |c: &clap::Command| c.get_arguments().any(|a| a.get_id() == key.as_str());
            let mut known = has(&cmd);
            if known {
                cmd = cmd.mut_arg(key.as_str(), |a| a.default_value(value).required(false));
            }
            let subs: Vec<String> = cmd
                .get_subcommands()
                .filter(|s| has(s))
                .map(|s| s.get_name().to_owned())
                .collect();
            for sub in subs {
                known = true;
                cmd = cmd.mut_subcommand(sub, |s| {
                    s.mut_arg(key.as_str(), |a| a.default_value(value).required(false))
                });
            }
            if !known {
                return Err(invalid(format!(
                    "unknown setting {key:?} (settings are the flags' long names in snake_case, e.g. output_queue_url)"
                )));
            }
        }
    }
    let matches = match cmd.clone().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            return Err(match own_help(cmd, &argv) {
                Some(help) => ConfigError::Help(help),
                None => ConfigError::Cli(e),
            });
        }
        Err(e) => return Err(ConfigError::Cli(e)),
    };
    Cli::from_arg_matches(&matches).map_err(ConfigError::Cli)
}

/// A subcommand's help without the global settings it does not read:
/// the operator tools read only the raw prefix, and completions and man
/// pages read nothing.
fn own_help(cmd: clap::Command, argv: &[std::ffi::OsString]) -> Option<String> {
    const PROJECTION: &[&str] = &[
        "fields",
        "body_format",
        "missing",
        "empty_records",
        "records_pointer",
        "max_decompressed_bytes",
        "large_records",
        "max_record_bytes",
        "decode_thread",
    ];
    relay_shared::cli::subcommand_help(cmd, argv, |cmd, sub| match sub {
        "replay" | "audit" => PROJECTION
            .iter()
            .fold(cmd, |c, id| c.mut_arg(*id, |a| a.hide(true)))
            // The one global setting the tools read is theirs.
            .mut_arg("raw_prefix", |a| a.help_heading(None::<&str>)),
        "completions" | "man" => relay_shared::cli::hide_globals(cmd),
        _ => cmd,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Bad flags, or `--help`/`--version`: clap prints and exits.
    #[error(transparent)]
    Cli(clap::Error),
    /// A subcommand's `--help`, rendered with only its own settings: print
    /// it to stdout and exit 0.
    #[error("{0}")]
    Help(String),
    #[error(
        "RELAY_FIELDS (--fields) is required: the fields to keep, e.g. `id,ts=timestamp,user_id=user.id`"
    )]
    NoFields,
    #[error("RELAY_FIELDS: {0}")]
    Fields(#[from] SpecError),
    #[error("{name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Whether zstd is decoded on a thread of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecodeThread {
    Auto,
    On,
    Off,
}

impl DecodeThread {
    /// `auto`: two threads only where two cores' time is there. Lambda
    /// gives CPU in proportion to memory, about two vCPUs' worth only near
    /// its top sizes; below that a second thread only adds its overhead.
    pub fn resolve(self, lambda_memory_mb: Option<u64>, cores: usize) -> bool {
        match self {
            Self::On => true,
            Self::Off => false,
            Self::Auto => match lambda_memory_mb {
                Some(mb) => mb >= 3008,
                None => cores >= 2,
            },
        }
    }
}

/// The validated settings of the data path.
#[derive(Debug, Clone)]
pub struct Config {
    pub fields: Vec<Field>,
    pub projection: Projection,
    pub raw_prefix: String,
    pub body_format: BodyFormat,
    pub records_pointer: Option<String>,
    pub missing: Missing,
    pub empty_records: EmptyRecords,
    pub max_decompressed_bytes: u64,
    pub large_records: LargeRecords,
    /// The largest record read (at least the record window).
    pub max_record_bytes: u64,
    /// Resolved from `RELAY_DECODE_THREAD`.
    pub decode_thread: bool,
    pub log_format: LogFormat,
}

impl Config {
    pub fn from_common(c: &Common) -> Result<Self, ConfigError> {
        let fields = parse_fields(c.fields.as_deref().ok_or(ConfigError::NoFields)?)?;
        if !c.raw_prefix.ends_with('/') || c.raw_prefix.starts_with('/') {
            return Err(ConfigError::Invalid {
                name: "RELAY_RAW_PREFIX",
                reason: format!(
                    "{:?} must end with `/` and not start with one",
                    c.raw_prefix
                ),
            });
        }
        if let Some(p) = &c.records_pointer
            && !p.starts_with('/')
        {
            return Err(ConfigError::Invalid {
                name: "RELAY_RECORDS_POINTER",
                reason: format!("{p:?} is not a JSON pointer (it must start with `/`)"),
            });
        }
        if c.max_record_bytes < RECORD_WINDOW_BYTES as u64 {
            return Err(ConfigError::Invalid {
                name: "RELAY_MAX_RECORD_BYTES",
                reason: format!(
                    "{} is below the {RECORD_WINDOW_BYTES}-byte record window, which is always read",
                    c.max_record_bytes
                ),
            });
        }
        Ok(Self {
            projection: Projection::new(&fields, c.missing).with_empty(c.empty_records),
            fields,
            raw_prefix: c.raw_prefix.clone(),
            body_format: c.body_format,
            records_pointer: c.records_pointer.clone(),
            missing: c.missing,
            empty_records: c.empty_records,
            max_decompressed_bytes: c.max_decompressed_bytes,
            large_records: c.large_records,
            max_record_bytes: c.max_record_bytes,
            decode_thread: c.decode_thread.resolve(
                std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
                    .ok()
                    .and_then(|m| m.parse().ok()),
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            ),
            log_format: c.log_format,
        })
    }
}

/// A clap value's name, as the operator types it.
fn value_name(v: &impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_owned())
}

impl Config {
    /// The effective settings, for the start-up log line.
    pub fn summary(&self) -> Vec<(&'static str, String)> {
        let fields: Vec<String> = self
            .fields
            .iter()
            .map(|f| format!("{}={}", f.name, f.path.join(".")))
            .collect();
        vec![
            ("fields", fields.join(",")),
            ("raw_prefix", self.raw_prefix.clone()),
            ("body_format", value_name(&self.body_format)),
            ("missing", value_name(&self.missing)),
            ("empty_records", value_name(&self.empty_records)),
            ("large_records", value_name(&self.large_records)),
            ("max_record_bytes", self.max_record_bytes.to_string()),
            ("decode_thread", self.decode_thread.to_string()),
            (
                "records_pointer",
                self.records_pointer.clone().unwrap_or_default(),
            ),
            (
                "max_decompressed_bytes",
                self.max_decompressed_bytes.to_string(),
            ),
        ]
    }
}

impl Aws {
    /// The effective AWS settings, for the start-up log line.
    pub fn summary(&self) -> Vec<(&'static str, String)> {
        let t = self.timeouts.resolve(Some(self.lease_ttl_secs));
        vec![
            ("output_queue_url", self.output_queue_url.clone()),
            (
                "payload_bucket",
                self.payload_bucket.clone().unwrap_or_default(),
            ),
            ("payload_prefix", self.payload_prefix.clone()),
            (
                "canary_queue_url",
                self.canary_queue_url.clone().unwrap_or_default(),
            ),
            (
                "max_message_bytes",
                self.max_message_bytes
                    .map_or("queue's limit".into(), |b| b.to_string()),
            ),
            ("state_prefix", self.state_prefix.clone()),
            ("fifo_group_id", self.fifo_group_id.clone()),
            ("lease_ttl_secs", self.lease_ttl_secs.to_string()),
            ("aws_attempt_timeout_secs", t.attempt.as_secs().to_string()),
            (
                "aws_operation_timeout_secs",
                t.operation.as_secs().to_string(),
            ),
        ]
    }
}

impl Config {
    /// The pipeline's settings for one object, packed for a queue whose
    /// messages hold `max_message_bytes` (the attributes' worst case for
    /// `source_key` is reserved).
    pub fn settings(&self, max_message_bytes: usize, source_key: &str) -> Settings {
        Settings {
            projection: self.projection.clone(),
            format: self.body_format,
            max_body_bytes: max_message_bytes.saturating_sub(attributes_size(source_key)),
            max_record_bytes: RECORD_WINDOW_BYTES,
            max_decompressed_bytes: self.max_decompressed_bytes,
            records_pointer: self.records_pointer.clone(),
            large_records: self.large_records,
            max_large_record_bytes: self.max_record_bytes,
            decode_thread: self.decode_thread,
        }
    }
}

/// A warning for settings that are allowed but weaken the once-only
/// guarantee: a call that may outlast the third of the lease kept in
/// reserve lets another processor take the object over mid-send.
pub fn timeout_warning(aws: &Aws) -> Option<String> {
    let t = aws.timeouts.resolve(Some(aws.lease_ttl_secs));
    (t.operation.as_secs() * 3 > aws.lease_ttl_secs).then(|| {
        format!(
            "RELAY_AWS_OPERATION_TIMEOUT_SECS ({} s) is more than a third of RELAY_LEASE_TTL_SECS ({} s): \
             a send that hangs could outlast the lease, and another processor would send the same batch",
            t.operation.as_secs(),
            aws.lease_ttl_secs
        )
    })
}

/// Validates the AWS settings that can be checked without AWS.
/// The once-only protocol's settings, as a processor holding leases uses
/// them. Built and checked from the command line by [`Aws::protocol`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    /// Key prefix of leases, markers and reports; ends with `/`.
    pub state_prefix: String,
    /// How long a lease binds other processors without a renewal.
    pub lease_ttl: std::time::Duration,
    /// AWS call timeouts, which fit inside the lease.
    pub timeouts: relay_shared::client::Timeouts,
    /// Where offloaded records go: a bucket (`None`: the raw object's) and
    /// a key prefix.
    pub payload_bucket: Option<String>,
    pub payload_prefix: String,
}

impl Protocol {
    /// The protocol with `lease_ttl_secs`, unchecked (tests use leases
    /// shorter than an operator may set).
    pub fn new(state_prefix: &str, lease_ttl_secs: u64, timeouts: AwsTimeouts) -> Self {
        Self {
            state_prefix: state_prefix.to_owned(),
            lease_ttl: std::time::Duration::from_secs(lease_ttl_secs),
            timeouts: timeouts.resolve(Some(lease_ttl_secs)),
            payload_bucket: None,
            payload_prefix: "payloads/".into(),
        }
    }
}

impl Aws {
    /// The protocol's settings, checked against the raw prefix.
    pub fn protocol(&self, raw_prefix: &str) -> Result<Protocol, ConfigError> {
        check_aws(self, raw_prefix)?;
        Ok(Protocol {
            payload_bucket: self.payload_bucket.clone().filter(|b| !b.is_empty()),
            payload_prefix: self.payload_prefix.clone(),
            ..Protocol::new(&self.state_prefix, self.lease_ttl_secs, self.timeouts)
        })
    }
}

pub fn check_aws(aws: &Aws, raw_prefix: &str) -> Result<(), ConfigError> {
    let invalid = |name, reason: String| Err(ConfigError::Invalid { name, reason });
    if !aws.state_prefix.ends_with('/') {
        return invalid(
            "RELAY_STATE_PREFIX",
            format!("{:?} must end with `/`", aws.state_prefix),
        );
    }
    if aws.state_prefix.starts_with(raw_prefix) || raw_prefix.starts_with(&aws.state_prefix) {
        return invalid(
            "RELAY_STATE_PREFIX",
            format!(
                "{:?} overlaps RELAY_RAW_PREFIX {raw_prefix:?}; the processor would trigger itself",
                aws.state_prefix
            ),
        );
    }
    let p = &aws.payload_prefix;
    let overlaps = |other: &str| p.starts_with(other) || other.starts_with(p.as_str());
    if !p.ends_with('/') || overlaps(raw_prefix) || overlaps(&aws.state_prefix) {
        return invalid(
            "RELAY_PAYLOAD_PREFIX",
            format!(
                "{p:?} must end with `/` and be outside RELAY_RAW_PREFIX {raw_prefix:?} and \
                 RELAY_STATE_PREFIX {:?} (offloaded records there would be taken for raw objects or state)",
                aws.state_prefix
            ),
        );
    }
    if aws.lease_ttl_secs < 5 {
        return invalid(
            "RELAY_LEASE_TTL_SECS",
            format!(
                "{} is too short to renew in time (the minimum is 5)",
                aws.lease_ttl_secs
            ),
        );
    }
    let t = aws.timeouts.resolve(Some(aws.lease_ttl_secs));
    if t.attempt.is_zero() || t.attempt > t.operation {
        return invalid(
            "RELAY_AWS_ATTEMPT_TIMEOUT_SECS",
            format!(
                "{} s must be at least 1 and at most the operation timeout ({} s)",
                t.attempt.as_secs(),
                t.operation.as_secs()
            ),
        );
    }
    if aws.output_queue_url.is_empty() {
        return invalid("RELAY_OUTPUT_QUEUE_URL", "is empty".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_required_and_validated() {
        let cli = Cli::try_parse_from(["cloud-processor", "process", "f.json"]).unwrap();
        assert!(matches!(
            Config::from_common(&cli.common),
            Err(ConfigError::NoFields)
        ));
        let cli = Cli::try_parse_from(["cloud-processor", "process", "f.json", "--fields", "a..b"])
            .unwrap();
        let err = Config::from_common(&cli.common).unwrap_err().to_string();
        assert!(
            err.contains("RELAY_FIELDS") && err.contains("empty segment"),
            "{err}"
        );
        let cli = Cli::try_parse_from([
            "cloud-processor",
            "process",
            "f",
            "--fields",
            "a",
            "--records-pointer",
            "data",
        ])
        .unwrap();
        assert!(
            Config::from_common(&cli.common)
                .unwrap_err()
                .to_string()
                .contains("JSON pointer")
        );
    }

    #[test]
    fn the_largest_record_is_at_least_the_window() {
        let parse = |bytes: &str| {
            let cli = Cli::try_parse_from([
                "cloud-processor",
                "--fields",
                "a",
                "--max-record-bytes",
                bytes,
                "process",
                "f",
            ])
            .unwrap();
            Config::from_common(&cli.common)
        };
        let err = parse("1048575").unwrap_err().to_string();
        assert!(
            err.contains("RELAY_MAX_RECORD_BYTES") && err.contains("1048576-byte record window"),
            "{err}"
        );
        let c = parse("1048576").unwrap();
        assert_eq!(c.settings(1 << 18, "k").max_large_record_bytes, 1 << 20);
    }

    #[test]
    fn the_decode_thread_is_used_only_where_two_cores_time_is_there() {
        use DecodeThread::{Auto, Off, On};
        // Lambda: CPU follows memory, nearly two vCPUs from 3008 MB.
        assert!(!Auto.resolve(Some(1024), 2));
        assert!(!Auto.resolve(Some(1769), 2));
        assert!(Auto.resolve(Some(3008), 2));
        // Elsewhere, the cores this process may use.
        assert!(Auto.resolve(None, 2));
        assert!(!Auto.resolve(None, 1));
        assert!(On.resolve(Some(128), 1) && !Off.resolve(None, 64));
    }

    #[test]
    fn state_prefix_must_not_overlap_the_raw_prefix() {
        let aws = |state: &str| Aws {
            output_queue_url: "http://q".into(),
            max_message_bytes: None,
            state_prefix: state.into(),
            fifo_group_id: "g".into(),
            lease_ttl_secs: 60,
            timeouts: AwsTimeouts::default(),
            s3_path_style: false,
            payload_prefix: "payloads/".into(),
            payload_bucket: None,
            canary_queue_url: None,
        };
        assert!(check_aws(&aws("state/"), "raw/").is_ok());
        assert!(
            check_aws(&aws("raw/state/"), "raw/")
                .unwrap_err()
                .to_string()
                .contains("trigger itself")
        );
        assert!(check_aws(&aws("state"), "raw/").is_err());
        // Payloads under the raw or state prefix would be taken for raw
        // objects or state.
        for payloads in ["raw/payloads/", "state/p/", "payloads"] {
            let aws = Aws {
                payload_prefix: payloads.into(),
                ..aws("state/")
            };
            let err = check_aws(&aws, "raw/").unwrap_err().to_string();
            assert!(err.contains("RELAY_PAYLOAD_PREFIX"), "{payloads}: {err}");
        }
    }

    #[test]
    fn timeouts_default_to_fit_inside_the_lease() {
        let base = Aws {
            output_queue_url: "http://q".into(),
            max_message_bytes: None,
            state_prefix: "state/".into(),
            fifo_group_id: "g".into(),
            lease_ttl_secs: 60,
            timeouts: AwsTimeouts::default(),
            s3_path_style: false,
            payload_prefix: "payloads/".into(),
            payload_bucket: None,
            canary_queue_url: None,
        };
        let secs = |aws: &Aws| {
            let t = aws.timeouts.resolve(Some(aws.lease_ttl_secs));
            (t.attempt.as_secs(), t.operation.as_secs())
        };
        assert_eq!(secs(&base), (10, 20));
        assert!(check_aws(&base, "raw/").is_ok() && timeout_warning(&base).is_none());
        let short = Aws {
            lease_ttl_secs: 9,
            ..base.clone()
        };
        assert_eq!(secs(&short), (3, 3));
        assert!(timeout_warning(&short).is_none());
        assert_eq!(AwsTimeouts::default().resolve(None).operation.as_secs(), 20);

        let long_call = Aws {
            timeouts: AwsTimeouts {
                aws_attempt_timeout_secs: None,
                aws_operation_timeout_secs: Some(21),
            },
            ..base.clone()
        };
        let warning = timeout_warning(&long_call).unwrap();
        assert!(
            warning.contains("RELAY_AWS_OPERATION_TIMEOUT_SECS") && warning.contains("third"),
            "{warning}"
        );
        let attempt_over_call = Aws {
            timeouts: AwsTimeouts {
                aws_attempt_timeout_secs: Some(30),
                aws_operation_timeout_secs: None,
            },
            ..base
        };
        assert!(check_aws(&attempt_over_call, "raw/").is_err());
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;
    use std::ffi::OsString;
    use std::path::Path;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn example() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/cloud-processor.toml")
    }

    #[test]
    fn the_example_file_loads_and_flags_and_env_override_it() {
        let file = example();
        let file = file.to_str().unwrap();
        let cli = parse_from(argv(&["cloud-processor", "--config", file, "check"]), None).unwrap();
        assert_eq!(
            cli.common.fields.as_deref(),
            Some("id,ts=timestamp,user_id=user.id,country=geo.country")
        );
        assert_eq!(cli.common.log_format, LogFormat::Json);
        let Some(Command::Check {
            aws,
            bucket,
            notification_queue_url,
            ..
        }) = cli.command
        else {
            panic!("check")
        };
        assert_eq!(bucket, "my-relay-bucket");
        assert!(aws.output_queue_url.ends_with("/relay-output"));
        assert!(
            notification_queue_url
                .unwrap()
                .ends_with("/relay-notifications")
        );
        assert_eq!(aws.timeouts.aws_operation_timeout_secs, Some(20));
        assert!(Config::from_common(&cli.common).is_ok());

        // A flag wins over the file, and RELAY_CONFIG names it too.
        let cli = parse_from(
            argv(&["cloud-processor", "poll", "--lease-ttl-secs", "90"]),
            Some(example()),
        )
        .unwrap();
        let Some(Command::Poll {
            aws,
            visibility_timeout_secs,
            ..
        }) = cli.command
        else {
            panic!("poll")
        };
        assert_eq!((aws.lease_ttl_secs, visibility_timeout_secs), (90, 60));
    }

    #[test]
    fn an_unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "fields = \"id\"\noutput_queue = \"q\"\n").unwrap();
        let err = parse_from(
            argv(&[
                "cloud-processor",
                "--config",
                file.to_str().unwrap(),
                "process",
                "f",
            ]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("unknown setting \"output_queue\"") && err.contains("p.toml"),
            "{err}"
        );
    }
}
