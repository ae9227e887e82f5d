//! Records too large for any message are offloaded to S3 and sent as claim
//! checks, and AWS's own SQS Extended Client for Python resolves them: the
//! consumer receives every record, in order, byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A test: a panic is a failure.

use crate::common;

use cloud_processor::Handler;
use std::collections::BTreeMap;

use common::*;
use relay_shared::store::ObjectStore;

const KEY: &str = "raw/e/2026/11/21/22/1763800000000.json.zst";

/// Receives `chunks` messages through the Extended Client: each body by its
/// `relay.chunk`, never one twice.
fn consume(s: &Setup, chunks: u32) -> BTreeMap<u64, String> {
    let mut consumer = std::process::Command::new(python());
    let out = relay_shared::testing::loopback_aws_env(&mut consumer, &s.emu.endpoint)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/extended_consumer.py"
        ))
        .arg(&s.output)
        .arg(chunks.to_string())
        .output()
        .expect("running the Extended Client consumer");
    assert!(
        out.status.success(),
        "the consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut by_chunk = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        let chunk = m["chunk"].as_u64().unwrap();
        let body = m["body"].as_str().unwrap().to_owned();
        assert!(
            by_chunk.insert(chunk, body).is_none(),
            "chunk {chunk} twice"
        );
    }
    by_chunk
}

/// Stores `text` as the raw object and processes its notification:
/// the notification, and the chunks, records and rejects of the object.
async fn relay(
    s: &Setup,
    app: &cloud_processor::AwsProcessor,
    text: &str,
) -> (String, u32, u64, u64) {
    put(s, KEY, zstd::encode_all(text.as_bytes(), 3).unwrap()).await;
    let body = notification(s).await;
    let outcome = Handler::new(app).process_message_body(&body).await.unwrap();
    let [
        cloud_processor::Outcome::Sent {
            chunks,
            records,
            rejected,
        },
    ] = outcome[..]
    else {
        panic!("{outcome:?}")
    };
    (body, chunks, records, rejected)
}

/// The records as the consumer reads them: the bodies split into lines.
fn lines_of(by_chunk: &BTreeMap<u64, String>) -> Vec<String> {
    by_chunk
        .values()
        .flat_map(|b| b.split('\n').map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// The sizes with the queue's own limit (set to 256 KiB): 300 KB of
/// ASCII, 600 KB of multi-byte UTF-8, 3 MB (over the reader's 1 MiB window,
/// so streamed through spools) and 9 MB (stored in parts), among small
/// records, the first and the last of them large. A second delivery of the
/// same event sends nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_up_to_megabytes_reach_the_extended_client_intact_and_once() {
    let s = setup("offload-sizes", false).await;
    // New queues allow 1 MiB now; many older ones still 256 KiB.
    s.emu
        .sqs
        .set_queue_attributes()
        .queue_url(&s.output)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize,
            "262144",
        )
        .send()
        .await
        .unwrap();
    let app = app_with(&s, None, "id,blob", 120).await;
    let blobs = [
        "é€😀".repeat(600_000 / 9),
        "a".repeat(10),
        "x".repeat(300_000),
        "b".repeat(20),
        "€ü".repeat(3_000_000 / 5),
        "c".repeat(30),
        "q".repeat(9_000_000),
        "d".repeat(40),
        "é".repeat(300_000),
    ];
    let mut text = String::from("# collector v2\n");
    let mut expected = Vec::new();
    for (i, blob) in blobs.iter().enumerate() {
        text.push_str(&format!(
            "{{\"id\":{i},\"noise\":{{\"z\":[1,2]}},\"blob\":\"{blob}\"}}\n"
        ));
        expected.push(format!("{{\"id\":{i},\"blob\":\"{blob}\"}}"));
    }
    let (body, chunks, records, rejected) = relay(&s, &app, &text).await;
    assert_eq!((records, rejected), (9, 0));
    let again = Handler::new(&app)
        .process_message_body(&body)
        .await
        .unwrap();
    assert!(
        matches!(again[..], [cloud_processor::Outcome::Duplicate]),
        "{again:?}"
    );
    let payloads = s.bucket.list("payloads/", 1000).await.unwrap();
    assert_eq!(payloads.len(), 5, "{payloads:?}");

    let by_chunk = consume(&s, chunks);
    assert_eq!(by_chunk.len() as u32, chunks);
    let received = lines_of(&by_chunk);
    assert!(
        received == expected,
        "every record, in order, byte for byte ({} received)",
        received.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_extended_client_receives_every_record_byte_for_byte() {
    round_trip(setup("offload", false).await).await;
}

/// The same against LocalStack, whose S3 verifies every payload's CRC32C
/// on upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_extended_client_receives_every_record_on_localstack() {
    let emu = relay_shared::testing::Emulator::localstack().await;
    round_trip(setup_on(emu, "offload-ls", false).await).await;
}

async fn round_trip(s: Setup) {
    // Messages of at most 2 KiB, so records with a 5 KB field cannot fit,
    // the first and the last among them.
    let app = app_with(&s, Some(2048), "id,blob", 120).await;
    let mut text = String::from("# collector v2\n// started\n");
    let mut expected = Vec::new();
    let mut large = 0;
    for i in 0..60usize {
        let blob = if i % 9 == 0 || i == 59 {
            large += 1;
            // Escapes and multi-byte UTF-8 must survive the round trip.
            format!("{}\\u00e9\\\"ü{}", "x".repeat(5000 + i), i)
        } else {
            format!("small-{i}")
        };
        text.push_str(&format!(
            "{{\"id\":{i},\"noise\":{{\"a\":[1,2,3]}},\"blob\":\"{blob}\"}}\n"
        ));
        expected.push(format!("{{\"id\":{i},\"blob\":\"{blob}\"}}"));
    }
    let (_, chunks, records, rejected) = relay(&s, &app, &text).await;
    assert_eq!((records, rejected), (60, 0));

    // The payloads: one object per large record, under the payload prefix.
    let payloads = s.bucket.list("payloads/", 1000).await.unwrap();
    assert_eq!(payloads.len(), large, "{payloads:?}");

    let by_chunk = consume(&s, chunks);
    assert_eq!(by_chunk.len() as u32, chunks);
    // The large records cannot fit a 2 KiB message: they came through S3.
    let received = lines_of(&by_chunk);
    assert_eq!(received, expected, "every record, in order, byte for byte");
}
