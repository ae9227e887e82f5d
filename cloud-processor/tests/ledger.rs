//! Completeness end to end: two real `edge-agent`s (one source each) write
//! manifests beside their files; some notifications are dropped on the way
//! to the processor, one file name is refused and one file is held open by
//! its writer. The processor's reconciliation and `audit` name exactly
//! those files, and no others.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use cloud_processor::{Handler, Outcome};
use relay_shared::store::ObjectStore;

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
    let mut app = common::app_with(&s, None, "id", 60).await;
    app.protocol.ledger_grace = Duration::from_secs(2);
    let relay = Relay::new(s, None);
    let (a, b) = (relay.dir().join("a"), relay.dir().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let name = |i: u64| format!("{}.json", 1_763_800_000_000u64 + i * 1000);
    // Held open by its writer: never finished, so it waits on the host.
    let held = std::fs::File::create(b.join(name(9))).unwrap();
    let _agents = [
        agent(&relay, 1, "edge-a", &a),
        agent(&relay, 2, "edge-b", &b),
    ];
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..4 {
        std::fs::write(a.join(name(i)), "{\"id\":1}\n").unwrap();
        std::fs::write(b.join(name(i)), "{\"id\":2}\n").unwrap();
    }
    std::fs::write(a.join("notes.json"), "{\"id\":3}\n").unwrap();
    // Their notifications are lost on the way.
    let dropped: BTreeSet<String> = [("edge-a", 1), ("edge-b", 2), ("edge-b", 3)]
        .iter()
        .map(|(src, i)| format!("raw/{src}/2025/11/22/08/{}.zst", name(*i)))
        .collect();

    let handler = Handler::new(&app);
    let mut findings: BTreeMap<String, u64> = BTreeMap::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(12) {
        for m in common::receive_batch(&relay.s.emu.sqs, &relay.s.notifications).await {
            let keys = keys_of(&m.body);
            if keys.iter().any(|k| dropped.contains(k)) {
                continue;
            }
            for outcome in handler.process_message_body(&m.body).await.unwrap() {
                if let Outcome::Reconciled { findings: n } = outcome {
                    let source = keys[0].split('/').nth(1).unwrap().to_owned();
                    *findings.entry(source).or_default() += n;
                }
            }
        }
    }
    // Both sources' manifests found something (the metric counts the same).
    assert!(
        findings.get("edge-a").is_some_and(|n| *n > 0),
        "{findings:?}"
    );
    assert!(
        findings.get("edge-b").is_some_and(|n| *n > 0),
        "{findings:?}"
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
        ["edge-a", "edge-b"]
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
