//! The validated settings: [`Config`] for the data path (one immutable
//! value per process, checked once at start-up) and [`Protocol`] for the
//! once-only protocol of the modes that hold leases.

use relay_shared::telemetry::LogFormat;

use super::args::{Aws, AwsTimeouts, Common};
use crate::pipeline::LargeRecords;
use crate::pipeline::body::BodyFormat;
use crate::pipeline::project::{Field, Projection, SpecError, parse_fields};
use crate::pipeline::rules::{HmacKey, Keys, Transform};

/// Records up to this are framed in memory; larger ones stream through
/// spools (see `pipeline/stream`).
pub const RECORD_WINDOW_BYTES: usize = 1 << 20;
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

/// The validated settings of the data path.
#[derive(Debug, Clone)]
pub struct Config {
    /// The fields, their missing-value rule and what becomes of a record
    /// with none of them.
    pub projection: Projection,
    /// SSM parameters holding the `hmac()` and `hmac_previous()` keys, read
    /// at start-up into the projection by [`Config::with_hmac_keys`].
    pub hmac_key_parameters: [Option<String>; 2],
    pub raw_prefix: String,
    pub body_format: BodyFormat,
    pub records_pointer: Option<String>,
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
        let (keys, hmac_key_parameters) = hmac_keys(c)?;
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
        let projection = Projection::new(&fields, c.missing)
            .with_empty(c.empty_records)
            .with_keys(keys);
        keys_for_fields(&projection, &hmac_key_parameters)?;
        Ok(Self {
            projection,
            hmac_key_parameters,
            raw_prefix: c.raw_prefix.clone(),
            body_format: c.body_format,
            records_pointer: c.records_pointer.clone(),
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

/// The keys given in files, read now, and the SSM parameters named for
/// the others, read when the clients are built.
fn hmac_keys(c: &Common) -> Result<(Keys, [Option<String>; 2]), ConfigError> {
    let sources = [
        KeySource::new(
            "RELAY_HMAC_KEY_FILE",
            c.hmac_key_file.as_deref(),
            "RELAY_HMAC_KEY_PARAMETER",
            c.hmac_key_parameter.as_deref(),
        )?,
        KeySource::new(
            "RELAY_HMAC_PREVIOUS_KEY_FILE",
            c.hmac_previous_key_file.as_deref(),
            "RELAY_HMAC_PREVIOUS_KEY_PARAMETER",
            c.hmac_previous_key_parameter.as_deref(),
        )?,
    ];
    let [current, previous] = sources.clone().map(|s| match s {
        KeySource::File(key) => Some(key),
        _ => None,
    });
    let parameters = sources.map(|s| match s {
        KeySource::Parameter(name) => Some(name),
        _ => None,
    });
    Ok((Keys { current, previous }, parameters))
}

/// Refuses a field list that hashes with a key given neither way: it
/// would send nothing useful, and must not start.
fn keys_for_fields(
    projection: &Projection,
    parameters: &[Option<String>; 2],
) -> Result<(), ConfigError> {
    let transforms = [
        (Transform::Hmac, "RELAY_HMAC_KEY"),
        (Transform::HmacPrevious, "RELAY_HMAC_PREVIOUS_KEY"),
    ];
    for ((t, var), parameter) in transforms.into_iter().zip(parameters) {
        if projection.uses(t)
            && projection.hmac_keys().for_transform(t).is_none()
            && parameter.is_none()
        {
            let t = t.name().unwrap_or_default();
            return Err(ConfigError::Invalid {
                name: "RELAY_FIELDS",
                reason: format!(
                    "{t}() needs a key: set {var}_FILE to a file holding it, or {var}_PARAMETER to an SSM parameter"
                ),
            });
        }
    }
    Ok(())
}

/// Where a key comes from: a file, read now, or an SSM parameter, read
/// when the clients are built.
#[derive(Debug, Clone)]
enum KeySource {
    None,
    File(HmacKey),
    Parameter(String),
}

impl KeySource {
    fn new(
        file_var: &'static str,
        file: Option<&std::path::Path>,
        parameter_var: &'static str,
        parameter: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let parameter = parameter.filter(|p| !p.is_empty());
        match (file.filter(|f| !f.as_os_str().is_empty()), parameter) {
            (Some(_), Some(_)) => Err(ConfigError::Invalid {
                name: file_var,
                reason: format!("set this or {parameter_var}, not both"),
            }),
            (Some(path), None) => read_key(file_var, path).map(Self::File),
            (None, Some(name)) => Ok(Self::Parameter(name.to_owned())),
            (None, None) => Ok(Self::None),
        }
    }
}

/// The HMAC key in `path`: its bytes, less one trailing newline. An error
/// names the file, never what is in it.
fn read_key(name: &'static str, path: &std::path::Path) -> Result<HmacKey, ConfigError> {
    let mut bytes = std::fs::read(path).map_err(|e| ConfigError::Invalid {
        name,
        reason: format!("{}: cannot be read: {e}", path.display()),
    })?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    HmacKey::new(&bytes).ok_or_else(|| ConfigError::Invalid {
        name,
        reason: format!(
            "{} is empty: an HMAC without a secret hides nothing",
            path.display()
        ),
    })
}

/// A clap value's name, as the operator types it.
fn value_name(v: &impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_owned())
}

impl Config {
    /// The SSM parameters of the `hmac()` and `hmac_previous()` keys that
    /// the field list hashes with: only those are read, so a rotation's
    /// second parameter can exist (holding Terraform's placeholder) before
    /// any field uses it.
    pub fn key_parameters_in_use(&self) -> [Option<&str>; 2] {
        let [current, previous] = &self.hmac_key_parameters;
        let used = |t| self.projection.uses(t);
        [
            current.as_deref().filter(|_| used(Transform::Hmac)),
            previous
                .as_deref()
                .filter(|_| used(Transform::HmacPrevious)),
        ]
    }

    /// The keys read from SSM, set in the projection.
    #[must_use]
    pub fn with_hmac_keys(mut self, current: Option<HmacKey>, previous: Option<HmacKey>) -> Self {
        let keys = self.projection.hmac_keys().clone();
        self.projection = self.projection.with_keys(Keys {
            current: current.or(keys.current),
            previous: previous.or(keys.previous),
        });
        self
    }

    /// The effective settings, for the start-up log line.
    pub fn summary(&self) -> Vec<(&'static str, String)> {
        let fields: Vec<String> = self.projection.fields().iter().map(Field::spec).collect();
        vec![
            ("fields", fields.join(",")),
            ("raw_prefix", self.raw_prefix.clone()),
            ("body_format", value_name(&self.body_format)),
            ("missing", value_name(&self.projection.missing())),
            (
                "empty_records",
                value_name(&self.projection.empty_records()),
            ),
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
            ("ledger_grace_secs", self.ledger_grace_secs.to_string()),
            ("aws_attempt_timeout_secs", t.attempt.as_secs().to_string()),
            (
                "aws_operation_timeout_secs",
                t.operation.as_secs().to_string(),
            ),
        ]
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
    /// How long an edge agent's stored file may lack its done marker.
    pub ledger_grace: std::time::Duration,
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
            ledger_grace: std::time::Duration::from_secs(900),
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
            ledger_grace: std::time::Duration::from_secs(self.ledger_grace_secs),
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
    let ledger = relay_shared::manifest::PREFIX;
    for (name, p) in [
        ("RELAY_RAW_PREFIX", raw_prefix),
        ("RELAY_STATE_PREFIX", &aws.state_prefix),
        ("RELAY_PAYLOAD_PREFIX", &aws.payload_prefix),
    ] {
        if p.starts_with(ledger) || ledger.starts_with(p) {
            return invalid(
                name,
                format!("{p:?} overlaps {ledger:?}, where the edge agents' manifests are"),
            );
        }
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
    let queues = [
        (
            "RELAY_OUTPUT_QUEUE_URL",
            Some(aws.output_queue_url.as_str()),
        ),
        (
            "RELAY_CANARY_QUEUE_URL",
            aws.canary_queue_url.as_deref().filter(|u| !u.is_empty()),
        ),
    ];
    for (name, url) in queues {
        if let Some(problem) = url.and_then(queue_url_problem) {
            return invalid(name, problem);
        }
    }
    Ok(())
}

/// What is wrong with a queue URL, if anything: SQS names queues by URLs
/// such as `https://sqs.eu-west-1.amazonaws.com/123456789012/relay-output`,
/// and anything else would only fail later, on every call.
pub fn queue_url_problem(url: &str) -> Option<String> {
    if url.is_empty() {
        return Some("is empty".into());
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let well_formed = rest.is_some_and(|rest| {
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        !host.is_empty() && !path.is_empty() && !url.contains(char::is_whitespace)
    });
    (!well_formed).then(|| {
        format!(
            "{url:?} is not a queue URL such as https://sqs.eu-west-1.amazonaws.com/123456789012/relay-output"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    #[test]
    fn queue_urls_must_be_urls() {
        for good in [
            "https://sqs.eu-west-1.amazonaws.com/123456789012/relay-output",
            "http://127.0.0.1:5000/123456789012/q.fifo",
        ] {
            assert_eq!(queue_url_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "relay-output",
            "sqs.eu-west-1.amazonaws.com/1/q",
            "https://",
            "https://host",
            "https://sqs.example/1/q name",
        ] {
            assert!(queue_url_problem(bad).is_some(), "{bad:?}");
        }
    }

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
        assert_eq!(
            crate::object::settings(&c, 1 << 18, "k").max_large_record_bytes,
            1 << 20
        );
    }

    #[test]
    fn the_decode_thread_is_used_only_where_two_cores_time_is_there() {
        use crate::cli::args::DecodeThread::{Auto, Off, On};
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
            output_queue_url: "http://q/1/out".into(),
            max_message_bytes: None,
            state_prefix: state.into(),
            fifo_group_id: "g".into(),
            lease_ttl_secs: 60,
            timeouts: AwsTimeouts::default(),
            s3_path_style: false,
            payload_prefix: "payloads/".into(),
            payload_bucket: None,
            canary_queue_url: None,
            ledger_grace_secs: 900,
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
        // The agents' manifests have a prefix of their own.
        let err = check_aws(&aws("ledger/state/"), "raw/").unwrap_err();
        assert!(err.to_string().contains("manifests"), "{err}");
    }

    #[test]
    fn timeouts_default_to_fit_inside_the_lease() {
        let base = Aws {
            output_queue_url: "http://q/1/out".into(),
            max_message_bytes: None,
            state_prefix: "state/".into(),
            fifo_group_id: "g".into(),
            lease_ttl_secs: 60,
            timeouts: AwsTimeouts::default(),
            s3_path_style: false,
            payload_prefix: "payloads/".into(),
            payload_bucket: None,
            canary_queue_url: None,
            ledger_grace_secs: 900,
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
