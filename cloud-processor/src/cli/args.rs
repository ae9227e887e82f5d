//! The command line: every setting as a flag, a `RELAY_*` variable and a
//! key of the optional TOML file (see `file.rs`), as clap reads them. Raw
//! values only; [`super::Config`] is what they validate into.

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand};
use relay_shared::telemetry::LogFormat;

use crate::pipeline::LargeRecords;
use crate::pipeline::body::BodyFormat;
use crate::pipeline::project::{EmptyRecords, Missing};

pub const DEFAULT_MAX_DECOMPRESSED_BYTES: u64 = 2 << 30;
/// The largest record read by default: 256 MiB.
pub const DEFAULT_LARGEST_RECORD_BYTES: u64 = 256 << 20;

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
    Poll(PollArgs),
    /// Re-send S3 events for raw objects to the notification queue: only those
    /// without a done marker (backfill), or all of them (reprocess).
    Replay(ReplayArgs),
    /// Report raw objects with no done marker after a while, leases of
    /// processors that died mid-object, leases finished objects left
    /// behind, quarantined objects and reject reports. Exits 3 when an
    /// object needs attention.
    Audit {
        #[command(flatten)]
        range: Range,
        /// Raw objects older than this without a done marker are reported.
        #[arg(long, default_value_t = 60)]
        older_than_mins: i64,
        /// Also report stretches of a source's file names longer than this
        /// with no file (by the timestamps in the names).
        #[arg(long)]
        gap_mins: Option<u32>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Delete the leases finished objects left behind (harmless, but
        /// they are state that stays).
        #[arg(long)]
        clean: bool,
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

/// Which objects a replay re-sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayMode {
    /// Only objects without a done marker: backfill after an outage or a lost event.
    Missing,
    /// Every object in range: done markers are deleted first, so everything
    /// is sent again (consumers see those records twice).
    Reprocess,
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
    /// ...or invoke the processor function synchronously with each event,
    /// reporting the objects of any invocation that fails.
    #[arg(long, env = "RELAY_FUNCTION_NAME")]
    pub function_name: Option<String>,
    /// `missing`: objects without a done marker; `reprocess`: all, after
    /// deleting their markers (consumers then see those records again).
    #[arg(long, value_enum, default_value_t = ReplayMode::Missing)]
    pub mode: ReplayMode,
    /// List what would be sent; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Confirm `--mode reprocess` without a prompt.
    #[arg(long)]
    pub yes: bool,
    /// Objects sent per second at most (0: no ceiling). Sending faster than
    /// the processor works only queues notifications: see docs/operations.md.
    #[arg(long, default_value_t = 1000)]
    pub rate_per_sec: u32,
    /// Objects named in one notification (S3's `Records` array, 1 to 100);
    /// ten notifications go in one SendMessageBatch.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub objects_per_event: u16,
    /// Partitions of the selection (its sub-prefixes: sources, then dates)
    /// walked and sent at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Record progress in this file, and resume from it if it exists: a
    /// replay stopped by Ctrl-C, a crash or a network failure, run again
    /// with the same file, sends nothing it sent before.
    #[arg(long)]
    pub checkpoint: Option<std::path::PathBuf>,
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

/// `poll`'s settings.
#[derive(Debug, Clone, ClapArgs)]
pub struct PollArgs {
    #[command(flatten)]
    pub aws: Aws,
    /// The queue S3 notifications are delivered to.
    #[arg(long, env = "RELAY_NOTIFICATION_QUEUE_URL")]
    pub notification_queue_url: String,
    /// Visibility timeout while a message is worked on; it is extended
    /// every half of it until the object is done.
    #[arg(long, env = "RELAY_VISIBILITY_TIMEOUT_SECS", default_value_t = 60)]
    pub visibility_timeout_secs: u32,
    /// Address for /metrics (Prometheus) and /healthz, or `off`.
    #[arg(long, env = "RELAY_METRICS_ADDR", default_value = "127.0.0.1:9188")]
    pub metrics_addr: String,
    /// At start-up, how long to wait for SQS to answer when it times out,
    /// refuses connections or is unavailable; meanwhile /healthz answers 503
    /// and says what it waits for. A queue that does not exist, or access
    /// denied, stops the poller at once [default: forever].
    #[arg(long, env = "RELAY_STARTUP_WAIT_SECS")]
    pub startup_wait_secs: Option<u64>,
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
    /// How long a file an edge agent stored may go without its done marker
    /// before the agent's manifests report it missing (and how long a file
    /// may wait on the host before it is reported stalled).
    #[arg(long, env = "RELAY_LEDGER_GRACE_SECS", default_value_t = 900)]
    pub ledger_grace_secs: u64,
}

/// Settings shared by every mode.
#[derive(Debug, Clone, ClapArgs)]
pub struct Common {
    /// A TOML file with any of these settings, each under its long name in
    /// snake_case (`output_queue_url = "..."`). Flags and RELAY_* variables
    /// override it; an unknown key is an error.
    #[arg(long, env = "RELAY_CONFIG", global = true, help_heading = "Every mode")]
    pub config: Option<PathBuf>,
    /// Fields to keep, comma-separated: `[name=]path[:type[|type]...][!]`,
    /// where paths are dotted (`user.id`, `tags.0`) or JSON pointers
    /// (`/user/id`), types are string, int, number, bool, null, object,
    /// array or any, and `!` means required; a record that breaks a rule is
    /// rejected. `name=hmac(path)` writes the value's keyed HMAC-SHA-256,
    /// `name=redact(path)` writes "[redacted]". E.g.
    /// `id:string!,ts=timestamp:int!,uid=hmac(user.email)` (docs/input.md).
    #[arg(long, env = "RELAY_FIELDS", global = true)]
    pub fields: Option<String>,
    /// A file whose bytes (less one trailing newline) are the key of
    /// `hmac()` fields. Never logged or printed.
    #[arg(long, env = "RELAY_HMAC_KEY_FILE", global = true)]
    pub hmac_key_file: Option<PathBuf>,
    /// Instead of a file: the name of an SSM SecureString parameter holding
    /// the key, read once at start-up (Lambda, `poll`, `check`).
    #[arg(long, env = "RELAY_HMAC_KEY_PARAMETER", global = true)]
    pub hmac_key_parameter: Option<String>,
    /// The key of `hmac_previous()` fields, as for `--hmac-key-file`: the
    /// key being retired, for consumers still joining on its pseudonyms.
    #[arg(long, env = "RELAY_HMAC_PREVIOUS_KEY_FILE", global = true)]
    pub hmac_previous_key_file: Option<PathBuf>,
    /// The previous key in an SSM SecureString parameter instead.
    #[arg(long, env = "RELAY_HMAC_PREVIOUS_KEY_PARAMETER", global = true)]
    pub hmac_previous_key_parameter: Option<String>,
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
    /// 65% faster in wall time with two cores, for 5% to 13% more CPU, in
    /// docs/benchmarks.md), `off`, or `auto`: on where two cores are there
    /// to use (in Lambda, from 3008 MB of memory, where it has nearly two
    /// vCPUs).
    #[arg(long, env = "RELAY_DECODE_THREAD", value_enum, default_value_t = DecodeThread::Auto, global = true)]
    pub decode_thread: DecodeThread,
    /// Log format.
    #[arg(long, env = "RELAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true, help_heading = "Every mode")]
    pub log_format: LogFormat,
}
