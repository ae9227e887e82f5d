//! `cloud-processor check`: validates the settings and every AWS resource
//! they name without processing anything (the bucket, its prefixes and the
//! payload location, the output, canary and notification queues, the
//! function's timeout), and with
//! `--sample FILE` shows what the projection makes of real records. One
//! line per check; nothing is written.

use std::ops::ControlFlow;

use relay_shared::check::Finding;
use relay_shared::retry::Classified;
use relay_shared::s3::Bucket;
use relay_shared::store::ObjectStore;

use crate::aws::Function;
use crate::aws::Queues;
use crate::cli::{Aws, Config, check_aws, timeout_warning};
use crate::pipeline::body::BodyFormat;
use crate::pipeline::project::{EmptyRecords, Field, Missing, Projection};
use crate::pipeline::rules::{Kind, Rule, Transform};
use crate::pipeline::{self, LargeRecords, Settings};

/// The resources to check, with clients built once by `main`.
#[derive(Debug)]
pub struct Targets<'a> {
    pub bucket: &'a Bucket,
    pub queues: &'a Queues,
    pub notification_queue_url: Option<&'a str>,
    /// The deployed function's timeout, if a function was named.
    pub function_timeout_secs: Option<Result<u32, String>>,
}

/// Longest a notification may stay invisible after a crash for a FIFO
/// resend to land inside SQS's 5-minute window (as the module enforces).
const FIFO_MAX_VISIBILITY_SECS: u32 = 240;

pub async fn check(config: &Config, aws: &Aws, t: &Targets<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    match check_aws(aws, &config.raw_prefix) {
        Ok(()) => out.push(Finding::ok(format!(
            "config: valid; {} field(s), raw objects under {}, state under {}",
            config.projection.fields().len(),
            config.raw_prefix,
            aws.state_prefix
        ))),
        Err(e) => out.push(Finding::fail(format!("config: {e}"))),
    }
    if let Some(w) = timeout_warning(aws) {
        out.push(Finding::warn(format!("config: {w}")));
    }
    out.extend(bucket(config, aws, t.bucket).await);
    out.extend(queues(aws, t).await);
    out
}

/// The bucket, then its two prefixes (only if the bucket answered: a
/// missing bucket is said once).
async fn bucket(config: &Config, aws: &Aws, bucket: &Bucket) -> Vec<Finding> {
    let name = bucket.name();
    if let Err(e) = bucket.check_access().await {
        return vec![Finding::fail(if e.class().is_retryable() {
            format!("bucket {name}: S3 is not answering ({e}); the other S3 checks are skipped")
        } else {
            format!("bucket {name}: {e}; create it, fix RELAY_BUCKET, or grant s3:ListBucket")
        })];
    }
    let mut out = vec![Finding::ok(format!("bucket {name}: reachable"))];
    for (what, prefix) in [
        ("raw prefix", config.raw_prefix.as_str()),
        ("state prefix", aws.state_prefix.as_str()),
    ] {
        out.push(match bucket.list(prefix, 1000).await.map(|l| l.len()) {
            Ok(n) => Finding::ok(format!(
                "{what} s3://{name}/{prefix}: listable ({n}{} objects)",
                if n == 1000 { "+" } else { "" }
            )),
            Err(e) => Finding::fail(format!(
                "{what} s3://{name}/{prefix}: {e}; grant s3:ListBucket on it"
            )),
        });
    }
    out.extend(payloads(config, aws, bucket).await);
    out
}

/// Where offloaded records go: another bucket must answer. Writing is not
/// tried (`check` writes nothing), so the line says what the role needs.
async fn payloads(config: &Config, aws: &Aws, bucket: &Bucket) -> Option<Finding> {
    if config.large_records != LargeRecords::Offload {
        return None;
    }
    let prefix = &aws.payload_prefix;
    let limit = config.max_record_bytes;
    let target = match aws.payload_bucket.as_deref().filter(|b| !b.is_empty()) {
        Some(other) if other != bucket.name() => {
            let payloads = bucket.in_bucket(other);
            if let Err(e) = payloads.check_access().await {
                return Some(Finding::fail(format!(
                    "payload bucket {other}: {e}; create it, fix RELAY_PAYLOAD_BUCKET, or grant s3:ListBucket"
                )));
            }
            other.to_owned()
        }
        _ => bucket.name().to_owned(),
    };
    Some(Finding::ok(format!(
        "payloads s3://{target}/{prefix}: records too large for a message go here (records up to {limit} bytes); \
         the role needs s3:GetObject, s3:PutObject and s3:AbortMultipartUpload on it (not tried: check writes nothing)"
    )))
}

/// The output queue, then the notification queue and the function's timeout.
async fn queues(aws: &Aws, t: &Targets<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let url = &aws.output_queue_url;
    let output_fifo = match t.queues.facts(url).await {
        Ok(f) => {
            out.push(Finding::ok(format!(
                "output queue {url}: {}, messages up to {} bytes",
                if f.fifo { "FIFO" } else { "standard" },
                f.max_message_bytes
            )));
            if let Some(cap) = aws.max_message_bytes
                && cap > f.max_message_bytes
            {
                out.push(Finding::warn(format!(
                    "RELAY_MAX_MESSAGE_BYTES {cap} is above the queue's limit; {} is used",
                    f.max_message_bytes
                )));
            }
            f.fifo
        }
        // Asking the other queues would wait out the same timeouts again.
        Err(e) if e.class().is_retryable() => {
            out.push(Finding::fail(format!(
                "output queue {url}: SQS is not answering ({e}); the other SQS checks are skipped. \
                 `poll` waits for SQS at start-up (RELAY_STARTUP_WAIT_SECS)"
            )));
            return out;
        }
        Err(e) => {
            out.push(Finding::fail(format!(
                "output queue: {e}; fix RELAY_OUTPUT_QUEUE_URL or grant sqs:GetQueueAttributes and sqs:SendMessage"
            )));
            false
        }
    };
    out.push(canary_queue(aws, t.queues).await);
    let Some(url) = t.notification_queue_url else {
        return out;
    };
    match t.queues.facts(url).await {
        Ok(f) => {
            out.push(Finding::ok(format!(
                "notification queue {url}: visibility timeout {} s, {}",
                f.visibility_timeout_secs,
                f.max_receive_count
                    .map_or("no dead-letter queue".into(), |n| format!(
                        "dead-letter queue after {n} deliveries"
                    ))
            )));
            if f.max_receive_count.is_none() {
                out.push(Finding::warn(format!(
                    "notification queue {url} has no dead-letter queue: a notification that always fails \
                     is retried until its retention ends, then lost; set a redrive policy"
                )));
            }
            if output_fifo && f.visibility_timeout_secs > FIFO_MAX_VISIBILITY_SECS {
                out.push(Finding::warn(format!(
                    "notification queue {url}: a crashed attempt comes back after {} s, so its resent batch \
                     may miss SQS FIFO's 5-minute deduplication window; keep it at most {FIFO_MAX_VISIBILITY_SECS} s",
                    f.visibility_timeout_secs
                )));
            }
            match &t.function_timeout_secs {
                Some(Ok(timeout)) if *timeout > f.visibility_timeout_secs => {
                    out.push(Finding::fail(format!(
                        "the function's timeout ({timeout} s) is above the notification queue's visibility \
                         timeout ({} s): SQS would hand a notification to a second invocation while the \
                         first runs, and AWS refuses such an event source mapping; raise the visibility timeout",
                        f.visibility_timeout_secs
                    )));
                }
                Some(Ok(timeout)) => out.push(Finding::ok(format!(
                    "function timeout {timeout} s: within the visibility timeout"
                ))),
                Some(Err(e)) => out.push(Finding::fail(format!("function: {e}"))),
                None => {}
            }
        }
        Err(e) => out.push(Finding::fail(format!(
            "notification queue: {e}; fix RELAY_NOTIFICATION_QUEUE_URL or grant sqs:GetQueueAttributes"
        ))),
    }
    out
}

/// Where canaries' messages go: a queue of their own, never the consumers'.
async fn canary_queue(aws: &Aws, queues: &Queues) -> Finding {
    match aws.canary_queue_url.as_deref().filter(|u| !u.is_empty()) {
        None => Finding::info(
            "canary queue: unset; canaries are processed, measured and counted, and nothing is sent",
        ),
        Some(url) if url == aws.output_queue_url => Finding::fail(format!(
            "canary queue {url} is the output queue: consumers would receive the agents' heartbeats; \
             give RELAY_CANARY_QUEUE_URL a queue of its own, or unset it"
        )),
        Some(url) => match queues.facts(url).await {
            Ok(f) => Finding::ok(format!(
                "canary queue {url}: {}, the agents' heartbeats go here",
                if f.fifo { "FIFO" } else { "standard" }
            )),
            Err(e) => Finding::fail(format!(
                "canary queue: {e}; fix RELAY_CANARY_QUEUE_URL or grant sqs:GetQueueAttributes and sqs:SendMessage"
            )),
        },
    }
}

/// How many sample records' projections are shown.
const SHOWN: usize = 3;

/// Per field: records that have it, and per rule of it, records that pass.
#[derive(Debug, Default, Clone)]
struct FieldTally {
    hits: u64,
    passed: Vec<u64>,
}

/// What the projection makes of a sample file: the first projections, and
/// for each field how many records have it and how many pass each of its
/// rules. Every rule is tried on every record, not only up to the first
/// one broken. A field no record has, or a rule no record keeps, fails:
/// most likely a mistyped path or type.
pub fn sample(config: &Config, name: &str, src: impl std::io::Read + Send) -> Vec<Finding> {
    let fields = config.projection.fields();
    // Projected plainly (no rules, values as they are, misses left out),
    // then each line through the fields' rules and transforms by name.
    let plain: Vec<Field> = fields
        .iter()
        .map(|f| Field {
            rule: Rule::default(),
            transform: Transform::Copy,
            ..f.clone()
        })
        .collect();
    let by_name: Vec<Field> = fields
        .iter()
        .map(|f| Field {
            path: vec![f.name.clone()],
            ..f.clone()
        })
        .collect();
    let second = Projection::new(&by_name, config.projection.missing())
        .with_keys(config.projection.hmac_keys().clone());
    let settings = Settings {
        projection: Projection::new(&plain, Missing::Omit).with_empty(EmptyRecords::Send),
        format: BodyFormat::Ndjson,
        ..crate::object::settings(config, usize::MAX / 2, name)
    };
    let mut tally: Vec<FieldTally> = fields
        .iter()
        .map(|f| FieldTally {
            hits: 0,
            passed: vec![0; f.rules().len()],
        })
        .collect();
    let (mut shown, mut records, mut broken) = (Vec::new(), 0u64, 0u64);
    let result = pipeline::run(src, &settings, |chunk| {
        for line in chunk.body.split(|b| *b == b'\n') {
            records += 1;
            let mut out = Vec::new();
            let verdict = second.project(line, &mut out);
            broken += u64::from(verdict.is_err());
            if shown.len() < SHOWN {
                shown.push(match verdict {
                    Ok(()) => String::from_utf8_lossy(&out).into_owned(),
                    Err(e) => format!("rejected: {e}"),
                });
            }
            count_rules(fields, line, &mut tally);
        }
        ControlFlow::Continue(())
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => return vec![Finding::fail(format!("sample {name}: {e}"))],
    };
    let s = &report.stats;
    let mut out = vec![Finding::ok(format!(
        "sample {name}: {} record(s) projected, {} rejected, {} preamble line(s)",
        records - broken,
        s.rejected + broken,
        s.preamble_lines
    ))];
    out.extend(shown.into_iter().map(Finding::info));
    for (field, t) in fields.iter().zip(tally) {
        out.push(field_finding(field, &t, records));
    }
    out
}

/// Counts, for one plainly projected record, which fields it has and which
/// of their rules it keeps.
fn count_rules(fields: &[Field], line: &[u8], tally: &mut [FieldTally]) {
    let Ok(values) = serde_json::from_slice::<
        std::collections::HashMap<String, &serde_json::value::RawValue>,
    >(line) else {
        return;
    };
    for (field, t) in fields.iter().zip(tally) {
        let value = values.get(&field.name).map(|v| v.get().as_bytes());
        t.hits += u64::from(value.is_some());
        let seen = value.map(|v| (Kind::of(v), v.len() as u64));
        let kept = field.each_rule(seen).into_iter().flatten();
        for (result, passed) in kept.zip(&mut t.passed) {
            *passed += u64::from(result.is_ok());
        }
    }
}

fn field_finding(field: &Field, t: &FieldTally, records: u64) -> Finding {
    let mut line = format!(
        "field {} (path {}): in {} of {records} record(s)",
        field.name,
        field.path.join("."),
        t.hits
    );
    for (rule, &passed) in field.rules().iter().zip(&t.passed) {
        let rule = match *rule {
            "type" => format!("type {}", field.rule.kinds),
            other => other.to_owned(),
        };
        line.push_str(&format!(
            "; {rule}: {passed} pass, {} fail",
            records - passed
        ));
    }
    let rules_fail = t.passed.contains(&0) && records > 0;
    let rules_warn = t.passed.iter().any(|&p| p < records);
    if t.hits == 0 && records > 0 {
        Finding::fail(format!(
            "{line}; no record has it: check the path's spelling"
        ))
    } else if rules_fail {
        Finding::fail(format!(
            "{line}; no record keeps a rule: check the field list"
        ))
    } else if t.hits < records || rules_warn {
        Finding::warn(line)
    } else {
        Finding::ok(line)
    }
}

/// `check` from the command line: builds the clients a processor with
/// `aws` would, checks everything, and prints one line per finding.
/// Returns whether every check passed.
pub async fn run(
    config: &Config,
    aws: &Aws,
    bucket: &str,
    notification_queue_url: Option<&str>,
    function_name: Option<&str>,
    sample_file: Option<&std::path::Path>,
) -> bool {
    let sdk = relay_shared::client::with_timeouts(
        &relay_shared::client::load_sdk_config().await,
        aws.timeouts.resolve(Some(aws.lease_ttl_secs)),
    );
    let function_timeout_secs = match function_name {
        Some(name) => Some(Function::new(&sdk, name).timeout_secs().await),
        None => None,
    };
    let bucket = relay_shared::s3::Bucket::connect(
        &sdk,
        relay_shared::client::ClientOptions {
            s3_path_style: aws.s3_path_style,
        },
        bucket,
    );
    let queues = Queues::connect(&sdk);
    let targets = Targets {
        bucket: &bucket,
        queues: &queues,
        notification_queue_url,
        function_timeout_secs,
    };
    let mut findings = check(config, aws, &targets).await;
    let config =
        match crate::aws::read_keys(config.clone(), &sdk, &crate::aws::Startup::no_wait()).await {
            Ok(c) => {
                for name in config.key_parameters_in_use().into_iter().flatten() {
                    findings.push(Finding::ok(format!(
                        "hmac key: SSM parameter {name} is readable"
                    )));
                }
                c
            }
            Err(e) => {
                findings.push(Finding::fail(format!("hmac key: {e}")));
                config.clone()
            }
        };
    let config = &config;
    if let Some(path) = sample_file {
        let name = path.display().to_string();
        match std::fs::File::open(path) {
            Ok(file) => findings.extend(sample(config, &name, file)),
            Err(e) => findings.push(Finding::fail(format!("sample {name}: cannot be read: {e}"))),
        }
    }
    relay_shared::check::print(&findings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;
    use relay_shared::check::Verdict;

    fn config(fields: &str) -> Config {
        let cli = Cli::try_parse_from(["cloud-processor", "--fields", fields]).unwrap();
        Config::from_common(&cli.common).unwrap()
    }

    #[test]
    fn a_sample_shows_projections_and_fails_a_field_no_record_has() {
        let file = b"# preamble\n{\"id\":1,\"user\":{\"id\":7}}\n{\"id\":2}\nnot json\n{\"id\":3,\"user\":{\"id\":8}}\n";
        let findings = sample(&config("id,uid=user.idd,u=user.id"), "f.json", &file[..]);
        let verdict = |needle: &str| {
            findings
                .iter()
                .find(|f| f.line.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle}: {findings:?}"))
                .verdict
        };
        assert!(
            findings[0]
                .line
                .contains("3 record(s) projected, 1 rejected"),
            "{findings:?}"
        );
        assert_eq!(findings[1], Finding::info("{\"id\":1,\"u\":7}"));
        assert_eq!(verdict("field id (path id): in 3 of 3"), Verdict::Ok);
        assert_eq!(
            verdict("field uid (path user.idd): in 0 of 3"),
            Verdict::Fail
        );
        assert_eq!(verdict("field u (path user.id): in 2 of 3"), Verdict::Warn);
    }
}
