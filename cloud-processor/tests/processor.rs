//! The processor against the real S3 and SQS protocols (the local emulator):
//! S3 notifies a queue, the handler processes the object, and the output
//! queue holds exactly the expected messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use aws_sdk_sqs::types::QueueAttributeName;
use clap::Parser;
use cloud_processor::config::{Aws, Cli, Config};
use cloud_processor::handler::{App, Outcome};
use cloud_processor::pack::attributes_size;
use cloud_processor::pipeline::{self, Settings};
use cloud_processor::sqs::Output;
use relay_shared::s3::{Bucket, PutMode, PutOptions};
use relay_shared::testing::Emulator;

const FIELDS: &str = "id,ts=timestamp,user_id=user.id,country=geo.country,first_tag=tags.0,big";

struct Setup {
    emu: Emulator,
    bucket: Bucket,
    notifications: String,
    output: String,
}

async fn setup(label: &str, fifo: bool) -> Setup {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket(label).await;
    let notifications = emu.queue(&format!("{label}-n"), false).await;
    let output = emu.queue(&format!("{label}-o"), fifo).await;
    let arn = emu
        .sqs
        .get_queue_attributes()
        .queue_url(&notifications)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let filter = NotificationConfigurationFilter::builder()
        .key(
            S3KeyFilter::builder()
                .filter_rules(
                    FilterRule::builder()
                        .name(FilterRuleName::Prefix)
                        .value("raw/")
                        .build(),
                )
                .build(),
        )
        .build();
    emu.s3
        .put_bucket_notification_configuration()
        .bucket(bucket.name())
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(arn)
                        .events(Event::from("s3:ObjectCreated:*"))
                        .filter(filter)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    Setup {
        emu,
        bucket,
        notifications,
        output,
    }
}

async fn app(s: &Setup, cap: Option<usize>) -> App {
    let cli = Cli::try_parse_from(["cloud-processor", "--fields", FIELDS]).unwrap();
    let config = Config::from_common(&cli.common).unwrap();
    let output = Output::connect(s.emu.sqs.clone(), &s.output, "relay", cap)
        .await
        .unwrap();
    App {
        config,
        aws: Aws {
            output_queue_url: s.output.clone(),
            max_message_bytes: cap,
            state_prefix: "state/".into(),
            fifo_group_id: "relay".into(),
            s3_path_style: true,
        },
        s3: s.emu.s3.clone(),
        output,
    }
}

async fn put(s: &Setup, key: &str, body: Vec<u8>) {
    s.bucket
        .put(key, body, &PutMode::Create, &PutOptions::default())
        .await
        .unwrap();
}

async fn delete(s: &Setup, queue: &str, receipt: String) {
    s.emu
        .sqs
        .delete_message()
        .queue_url(queue)
        .receipt_handle(receipt)
        .send()
        .await
        .unwrap();
}

/// Waits for the notification S3 sent for our object and returns its body,
/// skipping the test event S3 sends when a notification is configured.
async fn notification(s: &Setup) -> String {
    let start = Instant::now();
    loop {
        let out = s
            .emu
            .sqs
            .receive_message()
            .queue_url(&s.notifications)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in out.messages.unwrap_or_default() {
            let body = m.body.unwrap();
            delete(s, &s.notifications, m.receipt_handle.unwrap()).await;
            if body.contains("ObjectCreated") {
                return body;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no S3 notification arrived"
        );
    }
}

/// Every message in the output queue, keyed by source key and chunk index.
async fn drain(s: &Setup) -> BTreeMap<(String, u32), (String, BTreeMap<String, String>)> {
    let mut got = BTreeMap::new();
    let mut empty = 0;
    while empty < 2 {
        let out = s
            .emu
            .sqs
            .receive_message()
            .queue_url(&s.output)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let msgs = out.messages.unwrap_or_default();
        if msgs.is_empty() {
            empty += 1;
        }
        for m in msgs {
            let attrs: BTreeMap<String, String> = m
                .message_attributes
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.string_value.unwrap_or_default()))
                .collect();
            let id = (
                attrs["relay.source_key"].clone(),
                attrs["relay.chunk"].parse().unwrap(),
            );
            assert!(
                got.insert(id.clone(), (m.body.unwrap(), attrs)).is_none(),
                "{id:?} delivered twice"
            );
            s.emu
                .sqs
                .delete_message()
                .queue_url(&s.output)
                .receipt_handle(m.receipt_handle.unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    got
}

/// What the pipeline makes of `bytes` for this app and key, computed locally.
fn expected(app: &App, key: &str, bytes: &[u8]) -> Vec<String> {
    let settings = Settings {
        projection: app.config.projection.clone(),
        format: app.config.body_format,
        max_body_bytes: app.output.max_message_bytes - attributes_size(key),
        max_record_bytes: cloud_processor::config::DEFAULT_MAX_RECORD_BYTES,
        max_decompressed_bytes: app.config.max_decompressed_bytes,
        records_pointer: None,
    };
    let mut bodies = Vec::new();
    pipeline::run(bytes, &settings, |c| {
        bodies.push(String::from_utf8(c.body).unwrap());
        ControlFlow::Continue(())
    })
    .unwrap();
    bodies
}

fn sample_file(records: usize) -> String {
    let mut g = relay_shared::sample::SampleGen::new(3);
    let mut text =
        String::from("\u{feff}# collector v2\r\n// started\n[INFO] banner\n{not json\n\n");
    for i in 0..records {
        g.record(&mut text);
        text.push('\n');
        if i == 5 {
            text.push_str("{\"broken\": \n"); // a truncated record: the next line must survive
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_to_exactly_the_expected_messages() {
    let s = setup("proc-e2e", false).await;
    let app = app(&s, Some(16 * 1024)).await;
    let key = "raw/edge 1/2026/11/21/22/1763800000000.json.zst";
    let text = sample_file(400);
    let packed = zstd::encode_all(text.as_bytes(), 3).unwrap();
    put(&s, key, packed.clone()).await;

    let body = notification(&s).await;
    let outcomes = app.process_message_body(&body).await.unwrap();
    assert_eq!(outcomes.len(), 1);
    let Outcome::Sent {
        chunks,
        records,
        rejected,
    } = outcomes[0]
    else {
        panic!("{outcomes:?}")
    };
    assert_eq!((records, rejected), (400, 1));

    let want = expected(&app, key, &packed);
    assert!(want.len() > 3, "several messages: {}", want.len());
    assert_eq!(chunks as usize, want.len());
    let got = drain(&s).await;
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        (0..want.len() as u32)
            .map(|i| (key.to_owned(), i))
            .collect::<Vec<_>>()
    );
    let mut total = 0;
    for ((_, i), (body, attrs)) in &got {
        assert_eq!(body, &want[*i as usize], "chunk {i}");
        assert_eq!(attrs["relay.source_key"], key);
        let n: usize = attrs["relay.records"].parse().unwrap();
        assert_eq!(n, body.lines().count());
        total += n;
        assert!(body.len() + attributes_size(key) <= 16 * 1024);
        for line in body.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v.as_object().unwrap().len(), 6, "{line}");
            // serde_json's map sorts keys, so check the configured order on the text.
            let at: Vec<usize> = [
                "\"id\":",
                "\"ts\":",
                "\"user_id\":",
                "\"country\":",
                "\"first_tag\":",
                "\"big\":",
            ]
            .iter()
            .map(|k| line.find(k).unwrap())
            .collect();
            assert!(
                at.windows(2).all(|w| w[0] < w[1]),
                "fields in configured order: {line}"
            );
            assert!(
                line.contains("\"big\":900719925474"),
                "big integers unchanged: {line}"
            );
        }
    }
    assert_eq!(total, 400);

    // The rejects report sits under the state prefix, outside the raw prefix.
    let (report, _) = s
        .bucket
        .get_bytes("state/rejects/edge 1/2026/11/21/22/1763800000000.json.zst.json")
        .await
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&report).unwrap();
    assert_eq!(report["rejected"], 1);
    assert_eq!(report["rejects"][0]["line"], 12);
    assert!(
        report["rejects"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("incomplete")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_format_plain_or_zstd() {
    let s = setup("proc-formats", false).await;
    let app = app(&s, None).await;
    let pretty = "# c\n{\n  \"id\": 1,\n  \"user\": {\"id\": 7}\n}\n{\n  \"id\": 2\n}\n";
    let array = "-- header\n[\n{\"id\": 1, \"tags\": [\"x\"]},\n{\"id\": 2}\n]\n";
    let concat = "; ini\n{\"id\":1}{\"id\":2} {\"id\":3}\n";
    for (i, (text, n)) in [(pretty, 2u64), (array, 2), (concat, 3)]
        .into_iter()
        .enumerate()
    {
        let key = format!("raw/e/2026/11/21/22/{i}.json.zst");
        let bytes = if i % 2 == 0 {
            zstd::encode_all(text.as_bytes(), 3).unwrap()
        } else {
            text.as_bytes().to_vec()
        };
        put(&s, &key, bytes).await;
        let outcomes = app
            .process_message_body(&notification(&s).await)
            .await
            .unwrap();
        assert_eq!(
            outcomes,
            [Outcome::Sent {
                chunks: 1,
                records: n,
                rejected: 0
            }],
            "{text:?}"
        );
    }
    let got = drain(&s).await;
    let bodies: Vec<&str> = got.values().map(|(b, _)| b.as_str()).collect();
    assert_eq!(
        bodies,
        [
            "{\"id\":1,\"user_id\":7}\n{\"id\":2}",
            "{\"id\":1,\"first_tag\":\"x\"}\n{\"id\":2}",
            "{\"id\":1}\n{\"id\":2}\n{\"id\":3}"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_objects_are_quarantined_and_oversized_records_rejected() {
    let s = setup("proc-bad", false).await;
    let app = app(&s, Some(2048)).await;

    let mut corrupt = zstd::encode_all(&b"{\"id\":1}\n".repeat(50_000)[..], 3).unwrap();
    corrupt.truncate(corrupt.len() / 2);
    put(&s, "raw/e/2026/11/21/22/corrupt.json.zst", corrupt).await;
    let outcomes = app
        .process_message_body(&notification(&s).await)
        .await
        .unwrap();
    assert!(
        matches!(&outcomes[0], Outcome::Quarantined { reason } if reason.contains("corrupt")),
        "{outcomes:?}"
    );
    let (q, _) = s
        .bucket
        .get_bytes("state/quarantine/e/2026/11/21/22/corrupt.json.zst.json")
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&q).contains("corrupt"));

    let big = format!("{{\"id\":\"{}\"}}", "x".repeat(3000));
    let text = format!("{{\"id\":1}}\n{big}\n{{\"id\":2}}\n");
    put(&s, "raw/e/2026/11/21/22/big.json", text.into_bytes()).await;
    let outcomes = app
        .process_message_body(&notification(&s).await)
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [Outcome::Sent {
            chunks: 1,
            records: 2,
            rejected: 1
        }]
    );
    let (r, _) = s
        .bucket
        .get_bytes("state/rejects/e/2026/11/21/22/big.json.json")
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&r).contains("a message body can hold at most"));

    let got = drain(&s).await;
    assert_eq!(
        got[&("raw/e/2026/11/21/22/big.json".to_owned(), 0)].0,
        "{\"id\":1}\n{\"id\":2}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_output_deduplicates_a_repeated_object() {
    let s = setup("proc-fifo", true).await;
    let app = app(&s, Some(8 * 1024)).await;
    assert!(app.output.is_fifo());
    let key = "raw/e/2026/11/21/22/1763800000001.json.zst";
    put(
        &s,
        key,
        zstd::encode_all(sample_file(100).as_bytes(), 3).unwrap(),
    )
    .await;
    let body = notification(&s).await;
    let first = app.process_message_body(&body).await.unwrap();
    // The same event again, as S3 or a replay may deliver it: FIFO drops the
    // resend because the deduplication ids are deterministic.
    let second = app.process_message_body(&body).await.unwrap();
    assert_eq!(first, second);
    let Outcome::Sent { chunks, .. } = first[0] else {
        panic!()
    };
    let got = drain(&s).await;
    assert_eq!(got.len(), chunks as usize, "each chunk exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_processes_notifications_and_deletes_them() {
    let s = setup("proc-poll", false).await;
    let app = app(&s, None).await;
    for i in 0..3 {
        let key = format!("raw/e/2026/11/21/22/176380000000{i}.json.zst");
        put(
            &s,
            &key,
            zstd::encode_all(sample_file(20).as_bytes(), 3).unwrap(),
        )
        .await;
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sqs = s.emu.sqs.clone();
    let queue = s.notifications.clone();
    let poller = tokio::spawn(async move {
        cloud_processor::poll::run(&app, &sqs, &queue, 30, async {
            let _ = stopped.await;
        })
        .await;
    });
    let start = Instant::now();
    let mut got = BTreeMap::new();
    while got.len() < 3 {
        got.extend(drain(&s).await);
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {} of 3 objects arrived",
            got.len()
        );
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), poller)
        .await
        .unwrap()
        .unwrap();
    assert!(got.values().all(|(_, a)| a["relay.records"] == "20"));
    // Processed notifications were deleted: none comes back after their
    // visibility timeout would have passed.
    let left = s
        .emu
        .sqs
        .get_queue_attributes()
        .queue_url(&s.notifications)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    assert_eq!(
        left[&QueueAttributeName::ApproximateNumberOfMessages],
        "0",
        "{left:?}"
    );
    assert_eq!(
        left[&QueueAttributeName::ApproximateNumberOfMessagesNotVisible],
        "0",
        "{left:?}"
    );
}
