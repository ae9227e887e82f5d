//! Completeness end to end: three real `edge-agent`s (one source each)
//! write manifests beside their files; some notifications are dropped on
//! the way to the processor (the real binary as the Lambda function), one
//! file name is refused and one file is held open by its writer. The
//! processor's metric and log, the module's alarm on that metric (as
//! LocalStack's CloudWatch evaluates it) and `audit` name exactly those
//! files and sources, and no others.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use relay_shared::store::ObjectStore;
use relay_shared::testing::{RuntimeApi, sqs_event};

use crate::common::relay::{Proc, Relay, agent_binary};
use crate::common::{self, Setup, queue_arn};

/// Notifications for `raw/` and for the agents' `ledger/`, as the module
/// configures them.
async fn notify_raw_and_ledger(s: &Setup) {
    let arn = queue_arn(&s.emu, &s.notifications).await;
    let for_prefix = |prefix: &str| {
        let rule = FilterRule::builder()
            .name(FilterRuleName::Prefix)
            .value(prefix)
            .build();
        let filter = NotificationConfigurationFilter::builder()
            .key(S3KeyFilter::builder().filter_rules(rule).build())
            .build();
        QueueConfiguration::builder()
            .queue_arn(&arn)
            .events(Event::from("s3:ObjectCreated:*"))
            .filter(filter)
            .build()
            .unwrap()
    };
    let config = NotificationConfiguration::builder()
        .queue_configurations(for_prefix("raw/"))
        .queue_configurations(for_prefix(relay_shared::manifest::PREFIX))
        .build();
    s.emu
        .s3
        .put_bucket_notification_configuration()
        .bucket(s.bucket.name())
        .notification_configuration(config)
        .send()
        .await
        .unwrap();
}

/// A real agent for `source` on `dir`, with a manifest every second.
fn agent(relay: &Relay, n: usize, source: &str, dir: &Path) -> Proc {
    assert!(agent_binary().exists());
    let state = relay.dir().join(format!("../state-{source}"));
    relay.agent_with(
        n,
        &[
            ("RELAY_SOURCE_ID", source),
            ("RELAY_WATCH_DIR", dir.to_str().unwrap()),
            ("RELAY_STATE_DIR", state.to_str().unwrap()),
            ("RELAY_CANARY_SECS", "1"),
        ],
    )
}

/// The processor as the Lambda function (the real binary, through a Runtime
/// API), its log and its EMF metrics (stdout) kept in files.
struct Function {
    api: RuntimeApi,
    _process: common::KillOnDrop,
    log: tempfile::NamedTempFile,
    emf: tempfile::NamedTempFile,
}

impl Function {
    async fn start(s: &Setup) -> Self {
        let api = RuntimeApi::start().await;
        let (log, emf) = (
            tempfile::NamedTempFile::new().unwrap(),
            tempfile::NamedTempFile::new().unwrap(),
        );
        let process = api
            .function(env!("CARGO_BIN_EXE_cloud-processor"), "relay-ledger", 512)
            .env("RELAY_FIELDS", "id")
            .env("RELAY_OUTPUT_QUEUE_URL", &s.output)
            .env("RELAY_LEDGER_GRACE_SECS", "2")
            .env("RELAY_S3_PATH_STYLE", "true")
            .env("RELAY_LOG_FORMAT", "json")
            .stdout(emf.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        Self {
            api,
            _process: common::KillOnDrop(process),
            log,
            emf,
        }
    }

    /// One delivery of `m`, which must succeed.
    async fn invoke(&self, m: &common::Received) {
        let message = aws_sdk_sqs::types::Message::builder()
            .message_id(&m.message_id)
            .receipt_handle("r")
            .body(&m.body)
            .build();
        let answer = self
            .api
            .invoke(sqs_event(&[message]), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(
            answer["batchItemFailures"],
            serde_json::json!([]),
            "{}",
            std::fs::read_to_string(self.log.path()).unwrap()
        );
    }

    /// Per source, the sum of `relay_processor_ledger_findings_total` in
    /// the EMF documents the function printed.
    fn findings(&self) -> BTreeMap<String, f64> {
        let mut sums = BTreeMap::new();
        for doc in json_lines(self.emf.path()) {
            if let (Some(source), Some(n)) = (
                doc["source"].as_str(),
                doc["relay_processor_ledger_findings_total"].as_f64(),
            ) {
                *sums.entry(source.to_owned()).or_default() += n;
            }
        }
        sums
    }

    /// The ERROR lines of the function's log with `message` in their text.
    fn errors(&self, message: &str) -> Vec<serde_json::Value> {
        json_lines(self.log.path())
            .into_iter()
            .filter(|l| {
                l["level"] == "ERROR" && l["message"].as_str().is_some_and(|t| t.contains(message))
            })
            .collect()
    }

    /// The module's ledger alarm for each of `sources`, over the function's
    /// metrics, as `localstack`'s CloudWatch evaluates it.
    fn alarm_states(
        &self,
        localstack: &relay_shared::testing::Emulator,
        sources: &[&str],
    ) -> serde_json::Value {
        let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/README.md");
        let mut script = std::process::Command::new(common::python());
        let out = relay_shared::testing::loopback_aws_env(&mut script, &localstack.endpoint)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/alarm_state.py"))
            .args([readme, self.emf.path().to_str().unwrap(), "ledger"])
            .args(sources)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The object keys an S3 notification names.
fn keys_of(body: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let records = v["Records"].as_array().cloned().unwrap_or_default();
    records
        .iter()
        .filter_map(|r| r["s3"]["object"]["key"].as_str())
        .map(|k| k.replace("%2F", "/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_names_exactly_the_files_that_are_not_in_sqs() {
    let s = common::setup("ledger-e2e", false).await;
    notify_raw_and_ledger(&s).await;
    let localstack = relay_shared::testing::Emulator::localstack().await;
    let relay = Relay::new(s, None);
    let (a, b, c) = (
        relay.dir().join("a"),
        relay.dir().join("b"),
        relay.dir().join("c"),
    );
    for dir in [&a, &b, &c] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let name = |i: u64| format!("{}.json", 1_763_800_000_000u64 + i * 1000);
    // Held open by its writer: never finished, so it waits on the host.
    let held = std::fs::File::create(b.join(name(9))).unwrap();
    let _agents = [
        agent(&relay, 1, "edge-a", &a),
        agent(&relay, 2, "edge-b", &b),
        agent(&relay, 3, "edge-c", &c),
    ];
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..4 {
        std::fs::write(a.join(name(i)), "{\"id\":1}\n").unwrap();
        std::fs::write(b.join(name(i)), "{\"id\":2}\n").unwrap();
        std::fs::write(c.join(name(i)), "{\"id\":3}\n").unwrap();
    }
    std::fs::write(a.join("notes.json"), "{\"id\":3}\n").unwrap();
    // Their notifications are lost on the way.
    let dropped: BTreeSet<String> = [("edge-a", 1), ("edge-b", 2), ("edge-b", 3)]
        .iter()
        .map(|(src, i)| format!("raw/{src}/2025/11/22/08/{}.zst", name(*i)))
        .collect();

    // The real function, behind the event source mapping the test plays.
    let function = Function::start(&relay.s).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(12) {
        for m in common::receive_batch(&relay.s.emu.sqs, &relay.s.notifications).await {
            if keys_of(&m.body).iter().any(|k| dropped.contains(k)) {
                continue;
            }
            function.invoke(&m).await;
        }
    }
    // The metric: findings for the two sources that have some, none for
    // the third, as CloudWatch would extract them from the function's EMF.
    let findings = function.findings();
    assert!(
        findings.get("edge-a").is_some_and(|n| *n > 0.0),
        "{findings:?}"
    );
    assert!(
        findings.get("edge-b").is_some_and(|n| *n > 0.0),
        "{findings:?}"
    );
    // (A counter increased by nothing is not in EMF: no datapoint at all.)
    assert_eq!(
        findings.get("edge-c").copied().unwrap_or(0.0),
        0.0,
        "{findings:?}"
    );
    // The log: an ERROR naming each missing file, and no other.
    let logged: BTreeSet<String> = function
        .errors("still without its done marker")
        .iter()
        .map(|l| l["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        logged, dropped,
        "the ERROR lines name exactly the lost files"
    );
    // The alarm state: the module's ledger alarm per source, evaluated by
    // CloudWatch (LocalStack's) on those metrics.
    let states = function.alarm_states(&localstack, &["edge-a", "edge-b", "edge-c"]);
    assert_eq!(
        states,
        serde_json::json!({"edge-a": "ALARM", "edge-b": "ALARM", "edge-c": "OK"})
    );

    let sel = common::selection(&relay.s, "raw/");
    let now = jiff::Timestamp::now().as_second();
    let report = cloud_processor::tools::audit(&relay.s.bucket, &sel, 2, now)
        .await
        .unwrap();
    let by_source: BTreeMap<_, _> = report
        .ledger
        .iter()
        .map(|l| (l.findings.source.as_str(), l))
        .collect();
    assert_eq!(
        by_source.keys().copied().collect::<Vec<_>>(),
        ["edge-a", "edge-b", "edge-c"]
    );
    let clean = &by_source["edge-c"].findings;
    assert!(
        clean.missing.is_empty() && clean.refused.is_empty() && clean.stalled.is_empty(),
        "{clean:?}"
    );
    let missing: BTreeSet<String> = report
        .ledger
        .iter()
        .flat_map(|l| l.findings.missing.iter().map(|m| m.key.clone()))
        .collect();
    assert_eq!(
        missing, dropped,
        "exactly the files whose notifications were lost"
    );
    let refused: Vec<_> = by_source["edge-a"]
        .findings
        .refused
        .iter()
        .map(|r| r.file.as_str())
        .collect();
    assert_eq!(refused, ["notes.json"]);
    assert!(by_source["edge-b"].findings.refused.is_empty());
    let stalled: Vec<_> = by_source["edge-b"]
        .findings
        .stalled
        .iter()
        .map(|w| w.file.clone())
        .collect();
    assert_eq!(stalled, [name(9)]);
    assert!(by_source["edge-a"].findings.stalled.is_empty());
    for l in &report.ledger {
        assert!(
            l.findings.gaps.is_empty() && l.unreadable.is_empty(),
            "{l:?}"
        );
        assert!(l.files_checked >= 4, "{l:?}");
    }
    assert!(report.needs_a_person());
    drop(held);
}
