//! The relay against a second AWS implementation, LocalStack, where moto is
//! lenient (docs/development.md has the table): S3 events that carry the
//! object's `versionId`, one event per multipart upload, checksums checked
//! on upload, FIFO deduplication that holds after the first copy was
//! consumed. The store contract, the FIFO crash-resume and the Extended
//! Client run on LocalStack beside their moto twins (store_contract.rs,
//! once.rs, offload.rs); here are the end-to-end run with native
//! notifications, the version an event names, and corrupted downloads, the
//! last on both implementations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cloud_processor::{Failure, Handler, Outcome};
use common::relay::*;
use common::*;
use relay_shared::store::{ObjectStore, PutMode, PutOptions};
use relay_shared::testing::Emulator;

const KEY: &str = "raw/e/2026/11/21/22/1763800000000.json.zst";

/// A download whose bytes do not match the CRC32C S3 stored with the
/// object (flipped on the way by the proxy) is never marked done: the
/// object is read again, and after three such reads quarantined with the
/// reason, having sent nothing (it fits the in-memory window, so it is
/// verified before anything is sent). One bad read is only retried.
async fn corrupted_downloads(emu: Emulator) {
    let s = setup_on(emu, "checksum", false).await;
    let (proxy, app) = app_behind_proxy(&s, Some(4096), 120).await;
    let event = put_sample(&s, KEY, 300).await;
    proxy.faults.s3_get_corruptions.store(3, Ordering::Relaxed);
    for reads in 1..3 {
        let err = Handler::new(&app)
            .process_message_body(&event)
            .await
            .unwrap_err();
        assert!(
            matches!(err.failure(), Some(Failure::Checksum { reads: r, sent: 0, .. }) if *r == reads),
            "{err}"
        );
    }
    let outcome = Handler::new(&app)
        .process_message_body(&event)
        .await
        .unwrap();
    let [Outcome::Quarantined { reason }] = &outcome[..] else {
        panic!("{outcome:?}")
    };
    assert!(
        reason.contains("CRC32C") && reason.contains("3 reads"),
        "{reason}"
    );
    assert!(drain(&s).await.is_empty(), "nothing was sent");

    let other = "raw/e/2026/11/21/22/1763800001000.json.zst";
    let event = put_sample(&s, other, 300).await;
    proxy.faults.s3_get_corruptions.store(1, Ordering::Relaxed);
    assert!(
        Handler::new(&app)
            .process_message_body(&event)
            .await
            .is_err()
    );
    let outcome = Handler::new(&app)
        .process_message_body(&event)
        .await
        .unwrap();
    assert!(
        matches!(outcome[..], [Outcome::Sent { records: 300, .. }]),
        "{outcome:?}"
    );
    let chunks = drain(&s).await;
    let records: usize = chunks.values().map(|(body, _)| body.lines().count()).sum();
    assert_eq!(records, 300, "every record once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_download_is_never_marked_done() {
    corrupted_downloads(Emulator::connect().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_download_is_never_marked_done_on_localstack() {
    corrupted_downloads(Emulator::localstack().await).await;
}

/// A wrong CRC32C is refused on upload where the implementation checks it,
/// as S3 does (LocalStack); moto stores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_checksum_is_refused_on_upload_on_localstack() {
    let emu = Emulator::localstack().await;
    assert!(emu.kind.refuses_wrong_checksums());
    let bucket = emu.bucket("wrong-crc").await;
    let refused = emu
        .s3
        .put_object()
        .bucket(bucket.name())
        .key("raw/x")
        .body(b"hello".to_vec().into())
        .checksum_crc32_c("AAAAAA==")
        .send()
        .await;
    let err = refused.expect_err("a wrong CRC32C is refused");
    assert!(format!("{err:?}").contains("BadDigest"), "{err:?}");
}

/// An event names the object's version, and the processor reads that
/// version, not whatever is current when it gets to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_processor_reads_the_version_an_event_names_on_localstack() {
    let emu = Emulator::localstack().await;
    assert!(emu.kind.events_carry_version_ids());
    let s = setup_on(emu, "version", false).await;
    s.emu.enable_versioning(s.bucket.name()).await;
    let app = app(&s, Some(4096)).await;
    let first = "{\"id\":\"first\"}\n";
    put(&s, KEY, zstd::encode_all(first.as_bytes(), 3).unwrap()).await;
    let event = notification(&s).await;
    let named: serde_json::Value = serde_json::from_str(&event).unwrap();
    assert!(
        named["Records"][0]["s3"]["object"]["versionId"].is_string(),
        "{event}"
    );
    // Another write under the same key (a person, or a name used again).
    s.bucket
        .put(
            KEY,
            zstd::encode_all(&b"{\"id\":\"second\"}\n"[..], 3).unwrap(),
            &PutMode::Overwrite,
            &PutOptions::default(),
        )
        .await
        .unwrap();
    Handler::new(&app)
        .process_message_body(&event)
        .await
        .unwrap();
    let sent: Vec<String> = drain(&s)
        .await
        .into_values()
        .map(|(body, _)| body)
        .collect();
    assert_eq!(sent, ["{\"id\":\"first\"}"], "the version the event named");
}

/// The whole relay on LocalStack: the real agent and a real poller, S3's
/// own notifications, a versioned bucket, a FIFO output queue, and among
/// the files one large enough to be stored in parts. Every record arrives
/// once (by body: LocalStack deduplicates as SQS does), the multipart
/// upload makes one event and one processing, and `audit` finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_end_to_end_on_localstack() {
    let s = setup_on(Emulator::localstack().await, "e2e-ls", true).await;
    s.emu.enable_versioning(s.bucket.name()).await;
    let relay = Relay::new(s, None);
    let mut agent = relay.agent_with(0, &[("RELAY_MULTIPART_THRESHOLD_BYTES", "5242880")]);
    let mut processor = relay.processor(0);
    let mut w = Writer::new();
    w.burst(&relay.dir(), 20, 200, Duration::from_millis(100))
        .await;
    // About 32 MB of records, over 5 MiB compressed: stored in parts.
    w.burst(&relay.dir(), 1, 40_000, Duration::from_millis(0))
        .await;
    w.burst(&relay.dir(), 5, 200, Duration::from_millis(100))
        .await;
    let tally = collect(
        &relay,
        &w,
        Duration::from_secs(120),
        &mut [&mut processor, &mut agent],
    )
    .await;
    assert_exactly_once(&relay, &w, &tally);
    let logs = relay.logs();
    assert!(
        !logs.contains("already processed (done marker exists)"),
        "one event per object, the multipart upload included:\n{logs}"
    );
    // The multipart object carries a CRC32C of all its bytes, which every
    // read of it is checked against (not one of its parts' checksums).
    let raw = relay.s.bucket.list("raw/", 1000).await.unwrap();
    let big = raw.iter().max_by_key(|o| o.size).unwrap();
    assert!(big.size > 5 << 20, "{big:?}");
    let head = relay.s.bucket.head(&big.key).await.unwrap().unwrap();
    assert!(head.verified(), "{head:?}");
    let sel = cloud_processor::tools::Selection {
        bucket: relay.s.bucket.name().to_owned(),
        prefix: "raw/".into(),
        raw_prefix: "raw/".into(),
        state_prefix: "state/".into(),
        since: None,
        until: None,
    };
    let started = Instant::now();
    loop {
        let audit = cloud_processor::tools::audit(
            &relay.s.bucket,
            &sel,
            0,
            jiff::Timestamp::now().as_second(),
        )
        .await
        .unwrap();
        let clean = audit.unprocessed.is_empty()
            && audit.stale_leases.is_empty()
            && audit.finished_leases.is_empty()
            && audit.quarantined.is_empty();
        if clean {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{audit:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
