//! The handler over an SQS batch, with the in-memory store and queues: an
//! object unfinished at the invocation's deadline, or busy in another
//! processor's hands, is handed on as a fresh notification (so its
//! deliveries do not count towards the dead-letter queue) and finishes
//! with every record once; a failing one, or one that made no progress,
//! is reported failed.

use std::time::{Duration, Instant};

use clap::Parser;
use relay_shared::store::{ObjectStore, PutMode, PutOptions};
use relay_shared::testing::MemStore;
use serde_json::{Value, json};

use crate::cli::{Config, Protocol};
use crate::ingest::{Handler, MAX_HANDOFFS};
use crate::object::{Processor, StateKeys};
use crate::testing::{FakeNotifications, FakeQueue};

const KEY: &str = "raw/e/2026/11/21/22/1763800000000.json.zst";

fn processor(store: &MemStore, queue: FakeQueue) -> Processor<MemStore, FakeQueue> {
    let cli = crate::cli::Cli::try_parse_from(["cloud-processor", "--fields", "id"]).unwrap();
    let protocol = Protocol::new("state/", 60, crate::cli::AwsTimeouts::default());
    Processor::new(
        Config::from_common(&cli.common).unwrap(),
        protocol,
        store.in_bucket("elsewhere"),
        queue,
    )
}

/// A raw object of `records` records at [`KEY`].
async fn object(records: usize) -> MemStore {
    let store = MemStore::new("b");
    let text: String = (0..records)
        .map(|i| format!("{{\"id\":{i},\"pad\":\"{}\"}}\n", "x".repeat(40)))
        .collect();
    let body = zstd::encode_all(text.as_bytes(), 3).unwrap();
    store
        .put(KEY, body, &PutMode::Create, &PutOptions::default())
        .await
        .unwrap();
    store
}

/// The S3 notification for [`KEY`], as SQS delivers it to the Lambda.
fn notification() -> String {
    json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "b"}, "object": {"key": KEY}}}]})
    .to_string()
}

fn sqs_event(body: &str, handoffs: u32) -> Value {
    json!({"Records": [{"messageId": "m-1", "receiptHandle": "r-1", "eventSource": "aws:sqs",
        "body": body,
        "messageAttributes": {"relay.handoffs": {"stringValue": handoffs.to_string(), "dataType": "Number"}}}]})
}

fn delivered(queue: &FakeQueue) -> Vec<u64> {
    let mut ids: Vec<u64> = queue
        .records()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

/// The Lambda's answer when the one message, `m-1`, failed.
fn failed_m1() -> Value {
    json!({"batchItemFailures": [{"itemIdentifier": "m-1"}]})
}

/// Small, slow messages: 3000 records are about twelve batches of 100 ms,
/// two of which fit in an invocation given 300 ms (half of a short
/// invocation is kept for sending).
fn long_object_queue() -> FakeQueue {
    FakeQueue::default()
        .with_max_message_bytes(256)
        .slow(Duration::from_millis(100))
}

/// An object that needs many invocations, each stopped by its deadline:
/// every invocation hands the notification on (none is a failure), the
/// hand-on count grows, and the object ends with every record sent once.
#[tokio::test]
async fn a_long_object_is_handed_on_until_it_is_done() {
    let store = object(3000).await;
    let queue = long_object_queue();
    let app = processor(&store, queue.clone());
    let notifications = FakeNotifications::default();
    let handler = Handler::new(&app).with_queue(&notifications);
    let (mut body, mut handoffs) = (notification(), 0);
    let mut invocations = 0;
    loop {
        invocations += 1;
        assert!(invocations < 200, "the object never finished");
        // Time for a few batches: the deadline stops the rest.
        let deadline = Instant::now() + Duration::from_millis(300);
        let answer = handler
            .handle_until(sqs_event(&body, handoffs), Some(deadline))
            .await
            .unwrap();
        assert_eq!(answer, json!({"batchItemFailures": []}), "never a failure");
        let Some((next, after, n)) = notifications.handed_on.lock().unwrap().pop() else {
            break;
        };
        assert_eq!((after, n), (Duration::ZERO, handoffs + 1));
        (body, handoffs) = (next, n);
    }
    assert!(
        invocations > 5,
        "more invocations than max_receive_count: {invocations}"
    );
    assert_eq!(
        delivered(&queue),
        (0..3000).collect::<Vec<u64>>(),
        "every record once"
    );
    let done = StateKeys::new("state/", "raw/", KEY).done;
    assert!(store.bytes(&done).is_some(), "the object is done");
}

/// A deadline already too close to send anything: no progress, so the
/// message fails as usual (and, should that go on, reaches the DLQ).
#[tokio::test]
async fn a_deadline_stop_without_progress_is_a_failure() {
    let store = object(10).await;
    let app = processor(&store, FakeQueue::default());
    let notifications = FakeNotifications::default();
    let handler = Handler::new(&app).with_queue(&notifications);
    let answer = handler
        .handle_until(sqs_event(&notification(), 0), Some(Instant::now()))
        .await
        .unwrap();
    assert_eq!(answer, failed_m1(), "m-1 is reported failed");
    assert!(notifications.handed_on.lock().unwrap().is_empty());
}

/// Busy in another processor's hands: handed on to come back when that
/// lease ends; after [`MAX_HANDOFFS`] hand-ons it fails as usual.
#[tokio::test]
async fn a_busy_object_is_handed_on_until_the_bound() {
    let store = object(10).await;
    let lease = StateKeys::new("state/", "raw/", KEY).lease;
    let now_ms = crate::object::claim::now_ms();
    let busy = format!(
        "{{\"owner\":\"other\",\"expires_at_ms\":{},\"ttl_ms\":60000,\"fingerprint\":\"f\",\"next_chunk\":0}}",
        now_ms + 30_000
    );
    store.insert(&lease, busy.as_bytes());
    let app = processor(&store, FakeQueue::default());
    let notifications = FakeNotifications::default();
    let handler = Handler::new(&app).with_queue(&notifications);
    let answer = handler.handle(sqs_event(&notification(), 7)).await.unwrap();
    assert_eq!(answer, json!({"batchItemFailures": []}));
    let (_, after, n) = notifications.handed_on.lock().unwrap().pop().unwrap();
    assert_eq!(n, 8);
    // When the lease ends, judged by S3's clock, plus two seconds.
    assert!(after > Duration::from_secs(2), "{after:?}");

    let answer = handler
        .handle(sqs_event(&notification(), MAX_HANDOFFS))
        .await
        .unwrap();
    assert_eq!(answer, failed_m1(), "m-1 is reported failed");
    assert!(notifications.handed_on.lock().unwrap().is_empty());
}

/// Without a notification queue to send to, an unfinished object's
/// message fails as before: it is never acknowledged unsent.
#[tokio::test]
async fn without_a_queue_nothing_is_acknowledged_unsent() {
    let store = object(3000).await;
    let app = processor(&store, long_object_queue());
    let handler = Handler::new(&app);
    let deadline = Instant::now() + Duration::from_millis(300);
    let answer = handler
        .handle_until(sqs_event(&notification(), 0), Some(deadline))
        .await
        .unwrap();
    assert_eq!(answer, failed_m1(), "m-1 is reported failed");
}

/// A hand-on that fails (SQS unreachable) must not acknowledge the old
/// notification: the message fails as before and comes back.
#[tokio::test]
async fn a_failed_hand_on_leaves_the_message_failed() {
    let store = object(3000).await;
    let app = processor(&store, long_object_queue());
    let notifications = FakeNotifications {
        refuse_hand_on: true,
        ..FakeNotifications::default()
    };
    let handler = Handler::new(&app).with_queue(&notifications);
    let deadline = Instant::now() + Duration::from_millis(300);
    let answer = handler
        .handle_until(sqs_event(&notification(), 0), Some(deadline))
        .await
        .unwrap();
    assert_eq!(answer, failed_m1(), "m-1 is reported failed");
    assert!(notifications.handed_on.lock().unwrap().is_empty());
}
