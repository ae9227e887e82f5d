//! A long object finishes, however many invocations it takes: the real
//! binary runs as the Lambda function against a Runtime API that gives
//! each invocation a real deadline (`relay_shared::testing::RuntimeApi`;
//! cargo-lambda's cannot), behind an event source mapping played by the
//! test over the emulator's SQS, whose notification queue moves a message
//! to its dead-letter queue after the module's `max_receive_count`
//! deliveries. Each invocation stops at its deadline and hands the
//! notification on; none is a failed delivery, so the object ends with
//! every record sent once and nothing in the DLQ.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::MessageSystemAttributeName;
use relay_shared::store::{ObjectStore, PutMode, PutOptions};
use relay_shared::testing::{Emulator, RuntimeApi, s3_put_event, sqs_event};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_object_finishes_over_more_invocations_than_max_receive_count() {
    let max_receive_count = common::module_max_receive_count();
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("long-object").await;
    let output = emu.queue("long-out", false).await;
    let notifications = emu.queue("long-notifications", false).await;
    let dlq = common::dead_letters_behind(&emu, &notifications, "long-notifications-dlq").await;

    // 1,000 messages of four records. An invocation with a 3 s deadline
    // sends about 30 of them against the emulator (debug build), so the
    // object takes some 30 invocations: several times max_receive_count
    // even on a machine a few times faster.
    const RECORDS: u64 = 4_000;
    let key = "raw/edge-1/2026/11/21/22/1763800000000.json.zst";
    let text: String = (0..RECORDS)
        .map(|i| format!("{{\"id\":{i},\"pad\":\"{}\"}}\n", "x".repeat(200)))
        .collect();
    let body = zstd::encode_all(text.as_bytes(), 3).unwrap();
    bucket
        .put(key, body, &PutMode::Create, &PutOptions::default())
        .await
        .unwrap();
    let event = s3_put_event(bucket.name(), key);
    emu.sqs
        .send_message()
        .queue_url(&notifications)
        .message_body(event.to_string())
        .send()
        .await
        .unwrap();

    let api = RuntimeApi::start().await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let _function = common::KillOnDrop(
        api.function(env!("CARGO_BIN_EXE_cloud-processor"), "relay-test", 512)
            .env("RELAY_FIELDS", "id,pad")
            .env("RELAY_MAX_MESSAGE_BYTES", "1024")
            .env("RELAY_OUTPUT_QUEUE_URL", &output)
            .env("RELAY_NOTIFICATION_QUEUE_URL", &notifications)
            .env("RELAY_S3_PATH_STYLE", "true")
            .env("RELAY_LOG_FORMAT", "json")
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    );

    // The event source mapping: receive, invoke, delete what succeeded.
    let started = Instant::now();
    let mut invocations = 0u32;
    let done_key = format!("state/done/{}", key.trim_start_matches("raw/"));
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "not done after {invocations} invocations\n{}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
        let got = emu
            .sqs
            .receive_message()
            .queue_url(&notifications)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .visibility_timeout(30)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            if bucket.head(&done_key).await.unwrap().is_some() {
                break;
            }
            continue;
        }
        invocations += 1;
        let answer = api
            .invoke(sqs_event(&messages), Duration::from_secs(3))
            .await
            .unwrap_or_else(|e| panic!("invocation {invocations}: {e}"));
        let failed: Vec<&str> = answer["batchItemFailures"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["itemIdentifier"].as_str())
            .collect();
        assert!(
            failed.is_empty(),
            "invocation {invocations} failed {failed:?}"
        );
        for m in &messages {
            emu.sqs
                .delete_message()
                .queue_url(&notifications)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    assert!(
        invocations > max_receive_count,
        "the object took {invocations} invocations; it must need more than {max_receive_count} to show anything"
    );
    assert_eq!(
        common::queue_depth(&emu, &dlq).await,
        0,
        "nothing in the dead-letter queue"
    );
    assert_eq!(
        common::queue_depth(&emu, &notifications).await,
        0,
        "no notification left"
    );

    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    loop {
        let got = emu
            .sqs
            .receive_message()
            .queue_url(&output)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in &messages {
            for line in m.body().unwrap().lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                *seen.entry(v["id"].as_u64().unwrap()).or_default() += 1;
            }
            emu.sqs
                .delete_message()
                .queue_url(&output)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    assert_eq!(seen.len() as u64, RECORDS, "every record arrived");
    assert!(seen.values().all(|n| *n == 1), "none twice");
    let logged = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        logged.contains("its notification is handed on as a fresh one"),
        "{logged}"
    );
    // Each resume is planned, from a released lease: no warning of a
    // processor that died.
    assert!(
        logged.contains("resuming an object from its recorded progress")
            && !logged.contains("another processor left unfinished"),
        "{logged}"
    );
}
