//! Exactly once per object, on S3 markers and leases, against the emulator:
//! repeated and concurrent events, a crash between a send and its progress
//! write, lease takeover and resume, and a config change across a crash.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use relay_shared::store::{Listing, ObjectStore};
use std::collections::BTreeMap;
use std::time::Duration;

use cloud_processor::DoneMarker;
use cloud_processor::Failure;
use cloud_processor::Handler;
use cloud_processor::SqsOutput;
use cloud_processor::testing::{CrashAfter, until_crash};
use cloud_processor::{AwsProcessor, Outcome, Processor};
use common::*;
use relay_shared::s3::Bucket;

const KEY: &str = "raw/e/2026/11/21/22/1763800000000.json.zst";

/// A replay that is never stopped.
static NO_STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Replay's options for a test: `mode`, a dry run or not, no rate ceiling.
fn options(mode: cloud_processor::tools::Mode, dry_run: bool) -> cloud_processor::tools::Options {
    cloud_processor::tools::Options {
        dry_run,
        ..cloud_processor::tools::Options::new(mode)
    }
}

/// Every message in the output queue, counted per chunk, with its body.
async fn receive_counts(s: &Setup) -> BTreeMap<u32, (usize, String)> {
    let mut counts: BTreeMap<u32, (usize, String)> = BTreeMap::new();
    for m in receive_all(&s.emu, &s.output).await {
        let chunk = m.chunk();
        let e = counts.entry(chunk).or_insert((0, m.body.clone()));
        e.0 += 1;
        assert_eq!(e.1, m.body, "a resent chunk {chunk} has the same body");
    }
    counts
}

async fn marker(s: &Setup) -> DoneMarker {
    let (bytes, _) = s
        .bucket
        .get_bytes("state/done/e/2026/11/21/22/1763800000000.json.zst")
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// `app`, dying between its `batches`-th send and the progress write after it.
fn crashing(app: AwsProcessor, batches: u32) -> Processor<Bucket, CrashAfter<SqsOutput>> {
    Processor::new(
        app.config,
        app.protocol,
        app.store,
        CrashAfter::new(app.output, batches),
    )
}

/// Puts an object of `records` records at [`KEY`] and processes its
/// event with a 1 s lease, crashing after `batches` batches. Returns the
/// event, for a retry.
async fn crashed_mid_object(s: &Setup, records: usize, batches: u32) -> String {
    put(
        s,
        KEY,
        zstd::encode_all(sample_file(records).as_bytes(), 3).unwrap(),
    )
    .await;
    let body = notification(s).await;
    let crashing = crashing(app_with(s, Some(4096), FIELDS, 1).await, batches);
    let done = until_crash(
        Handler::new(&crashing).process_message_body(&body),
        &crashing.output,
    )
    .await;
    assert!(done.is_none(), "finished without crashing: {done:?}");
    body
}

/// Long enough for a lease of 1 s to have ended by S3's clock, which
/// reports whole seconds: takers wait a second's grain past the TTL.
const PAST_A_ONE_SECOND_LEASE: Duration = Duration::from_millis(3100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_ten_times_to_concurrent_processors_sends_each_chunk_once() {
    let s = setup("once-dup", false).await;
    let body = put_sample(&s, KEY, 300).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        // A separate processor each, as concurrent Lambdas would be.
        let app = app(&s, Some(4096)).await;
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            // Busy means another holds the lease: the event comes back later.
            loop {
                match Handler::new(&app).process_message_body(&body).await {
                    Ok(outcome) => return outcome,
                    Err(e) if matches!(e.failure(), Some(Failure::Busy { .. })) => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let mut sent = 0;
    for t in tasks {
        match t.await.unwrap()[..] {
            [Outcome::Sent { .. }] => sent += 1,
            [Outcome::Duplicate] => {}
            ref other => panic!("{other:?}"),
        }
    }
    assert_eq!(sent, 1, "exactly one processor sent the object");
    let m = marker(&s).await;
    let counts = receive_counts(&s).await;
    assert_eq!(counts.len() as u32, m.messages);
    assert!(counts.values().all(|(n, _)| *n == 1), "{counts:?}");
    assert_eq!(m.records_out, 300);
}

/// Crashes after 3 of the object's batches, then lets another processor
/// take the expired lease over. Returns how often each chunk arrived.
async fn crash_and_resume(fifo: bool) -> (BTreeMap<u32, (usize, String)>, DoneMarker) {
    let s = setup(if fifo { "once-crash-f" } else { "once-crash" }, fifo).await;
    crash_and_resume_on(&s, false).await
}

/// As [`crash_and_resume`], on `s`; with `consume_between`, the consumer
/// reads and deletes what the crashed processor sent before the retry
/// resumes, so only SQS's deduplication window (not "still queued") can
/// drop the resent batch.
async fn crash_and_resume_on(
    s: &Setup,
    consume_between: bool,
) -> (BTreeMap<u32, (usize, String)>, DoneMarker) {
    let body = put_sample(s, KEY, 1500).await;

    let first = crashing(app_with(s, Some(4096), FIELDS, 1).await, 3);
    let done = until_crash(
        Handler::new(&first).process_message_body(&body),
        &first.output,
    )
    .await;
    assert!(done.is_none(), "finished without crashing: {done:?}");

    // The crashed processor's lease is live for a second: a retry now waits.
    let retry = app_with(s, Some(4096), FIELDS, 1).await;
    assert!(matches!(
        Handler::new(&retry).process_message_body(&body).await,
        Err(e) if matches!(e.failure(), Some(Failure::Busy { .. }))
    ));
    let mut counts = BTreeMap::new();
    if consume_between {
        counts = receive_counts(s).await;
        assert!(!counts.is_empty(), "the crashed processor sent batches");
    }
    tokio::time::sleep(PAST_A_ONE_SECOND_LEASE).await;
    let outcome = Handler::new(&retry)
        .process_message_body(&body)
        .await
        .unwrap();
    assert!(
        matches!(outcome[..], [Outcome::Sent { records: 1500, .. }]),
        "{outcome:?}"
    );
    let m = marker(s).await;
    for (chunk, (n, body)) in receive_counts(s).await {
        let e = counts.entry(chunk).or_insert((0, body.clone()));
        e.0 += n;
        assert_eq!(e.1, body, "a resent chunk {chunk} has the same body");
    }
    (counts, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_object_resumes_with_at_most_one_batch_twice_into_standard() {
    let (counts, m) = crash_and_resume(false).await;
    // More than three batches of ten, so the crash after three is mid-object.
    assert!(
        m.messages > 30,
        "enough chunks for several batches: {}",
        m.messages
    );
    assert!(m.resumed_from_chunk > 0, "the retry resumed: {m:?}");
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (0..m.messages).collect::<Vec<_>>(),
        "every chunk arrived"
    );
    let twice: Vec<u32> = counts
        .iter()
        .filter(|(_, (n, _))| *n > 1)
        .map(|(c, _)| *c)
        .collect();
    assert!(counts.values().all(|(n, _)| *n <= 2));
    // Exactly the batch sent before the crash and never recorded: the third,
    // whose chunks start where the lease says the retry resumed.
    assert!(
        !twice.is_empty() && twice.len() <= 10,
        "at most one batch twice: {twice:?}"
    );
    assert!(
        twice.iter().all(|c| *c >= m.resumed_from_chunk),
        "{twice:?} vs resume at {}",
        m.resumed_from_chunk
    );
    let records: usize = counts.values().map(|(_, body)| body.lines().count()).sum();
    assert_eq!(records, 1500, "every record, counting each chunk once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_object_sends_nothing_twice_into_fifo() {
    let (counts, m) = crash_and_resume(true).await;
    assert!(m.resumed_from_chunk > 0);
    assert_eq!(counts.len() as u32, m.messages);
    assert!(
        counts.values().all(|(n, _)| *n == 1),
        "FIFO deduplicated the resent batch: {counts:?}"
    );
}

/// On an implementation that deduplicates as SQS does (LocalStack), the
/// resent batch is dropped even though the consumer read and deleted the
/// first copies in between: no record twice, counted by body. (moto drops a
/// resend only while the first copy is still queued, so there the test
/// above reads after the object is done; docs/development.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_object_sends_nothing_twice_into_fifo_even_when_consumed_on_localstack() {
    let emu = relay_shared::testing::Emulator::localstack().await;
    assert!(emu.kind.deduplicates_consumed_fifo_messages());
    let s = common::setup_on(emu, "once-crash-ls", true).await;
    let (counts, m) = crash_and_resume_on(&s, true).await;
    assert!(m.resumed_from_chunk > 0);
    assert_eq!(counts.len() as u32, m.messages, "every chunk arrived");
    assert!(
        counts.values().all(|(n, _)| *n == 1),
        "SQS's window dropped the resent batch although its first copy was consumed: {counts:?}"
    );
    let records: usize = counts.values().map(|(_, body)| body.lines().count()).sum();
    assert_eq!(records, 1500);
}

/// An upgrade that changes the fields while an object is half-sent: the
/// new processor takes the crashed holder's lease over and finishes the
/// object under its own settings, skipping what was recorded as sent.
/// Every record arrives; the batch the crash left unrecorded arrives twice
/// (once in each shape), as it would on a standard queue without a change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_across_a_crash_finishes_under_the_new_settings() {
    config_change_across_a_crash(false).await;
}

/// On FIFO, the new chunks carry deduplication ids of their own: the
/// queue drops none of them as a resend of the unrecorded batch, whose
/// first copies are still queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_across_a_crash_loses_nothing_on_fifo() {
    config_change_across_a_crash(true).await;
}

async fn config_change_across_a_crash(fifo: bool) {
    let s = setup(
        if fifo {
            "once-config-fifo"
        } else {
            "once-config"
        },
        fifo,
    )
    .await;
    let body = crashed_mid_object(&s, 2000, 2).await;
    tokio::time::sleep(PAST_A_ONE_SECOND_LEASE).await;

    let changed = app_with(&s, Some(4096), "id,country=geo.country", 1).await;
    let outcome = Handler::new(&changed)
        .process_message_body(&body)
        .await
        .unwrap();
    assert!(matches!(outcome[..], [Outcome::Sent { .. }]), "{outcome:?}");
    let m = marker(&s).await;
    assert!(m.earlier > 0 && m.resumed_from_chunk > 0, "{m:?}");

    let mut per_id: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for msg in receive_all(&s.emu, &s.output).await {
        for line in msg.body.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let fields = v.as_object().unwrap().len();
            per_id.entry(v["id"].to_string()).or_default().push(fields);
        }
    }
    assert_eq!(per_id.len(), 2000, "every record arrived");
    let twice: Vec<_> = per_id.iter().filter(|(_, v)| v.len() > 1).collect();
    // Records sent before the change carry the old fields (ts among them),
    // those after only the new two; the unrecorded batch, both.
    assert!(per_id.values().any(|v| v == &[2]) && per_id.values().any(|v| v[0] > 2));
    assert!(twice.iter().all(|(_, v)| v.len() == 2), "{twice:?}");
    // One batch of ten messages holds about 300 records.
    let batch = 1..400;
    assert!(
        batch.contains(&twice.len()),
        "the one unrecorded batch: {}",
        twice.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sends_only_what_is_missing_and_reprocess_sends_everything() {
    use cloud_processor::tools::{self as replay, Mode};
    let s = setup("once-replay", false).await;
    let app = app(&s, Some(8192)).await;
    let keys: Vec<String> = (0..3)
        .map(|i| format!("raw/e/2026/11/21/22/176380000000{i}.json.zst"))
        .collect();
    for k in &keys {
        put(
            &s,
            k,
            zstd::encode_all(sample_file(50).as_bytes(), 3).unwrap(),
        )
        .await;
    }
    // Two events are processed; the third is lost.
    for _ in 0..2 {
        Handler::new(&app)
            .process_message_body(&notification(&s).await)
            .await
            .unwrap();
    }
    let lost = notification(&s).await;
    assert!(
        lost.contains("1763800000002"),
        "events arrive in order here: {lost}"
    );
    assert_eq!(drain(&s).await.len(), 2);

    let sel = selection(&s, "raw/e/2026/11/21/");
    let now = jiff::Timestamp::now().as_second();
    let report = cloud_processor::tools::audit(&s.bucket, &sel, 0, now + 1)
        .await
        .unwrap();
    assert_eq!(
        report
            .unprocessed
            .iter()
            .map(|o| o.key.as_str())
            .collect::<Vec<_>>(),
        [keys[2].as_str()]
    );
    assert_eq!(
        report.reject_reports.len(),
        2,
        "each processed sample has one reject"
    );

    let queue = replay_to_queue(&s);
    // A dry run changes nothing.
    let dry = replay::replay(
        &s.bucket,
        &queue,
        &sel,
        &options(Mode::Missing, true),
        None,
        &NO_STOP,
    )
    .await
    .unwrap();
    assert_eq!(
        (dry.listed, dry.already_done, dry.sent, dry.would_send),
        (3, 2, 0, 1)
    );

    let backfill = replay::replay(
        &s.bucket,
        &queue,
        &sel,
        &options(Mode::Missing, false),
        None,
        &NO_STOP,
    )
    .await
    .unwrap();
    assert_eq!((backfill.sent, backfill.markers_deleted), (1, 0));
    let replayed = notification(&s).await;
    assert_eq!(
        Handler::new(&app)
            .process_message_body(&replayed)
            .await
            .unwrap()
            .len(),
        1
    );
    let got = drain(&s).await;
    assert_eq!(
        got.keys().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        [keys[2].as_str()]
    );
    assert!(
        cloud_processor::tools::audit(&s.bucket, &sel, 0, now + 1)
            .await
            .unwrap()
            .unprocessed
            .is_empty()
    );

    let again = replay::replay(
        &s.bucket,
        &queue,
        &sel,
        &options(Mode::Reprocess, false),
        None,
        &NO_STOP,
    )
    .await
    .unwrap();
    assert_eq!((again.sent, again.markers_deleted), (3, 3));
    // One notification names all three, as S3's `Records` array can.
    let outcome = Handler::new(&app)
        .process_message_body(&notification(&s).await)
        .await
        .unwrap();
    assert!(
        matches!(
            outcome[..],
            [
                Outcome::Sent { .. },
                Outcome::Sent { .. },
                Outcome::Sent { .. }
            ]
        ),
        "{outcome:?}"
    );
    assert_eq!(drain(&s).await.len(), 3, "reprocess re-sent every object");
}

/// A versioned bucket and a FIFO queue: the object is sent from a live event
/// (which carries `versionId`), then sent again from a replayed one (which
/// does not), as `replay --mode reprocess` or a replay-driven resume does.
/// The deduplication ids are the same, so FIFO drops every resent message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_event_gives_the_same_deduplication_ids_as_a_live_one() {
    use relay_shared::store::{PutMode, PutOptions};
    let s = setup("once-replay-ids", true).await;
    s.emu.enable_versioning(s.bucket.name()).await;
    let body = zstd::encode_all(sample_file(300).as_bytes(), 3).unwrap();
    let stored = s
        .bucket
        .put(KEY, body.clone(), &PutMode::Create, &PutOptions::default())
        .await
        .unwrap();
    let version = stored
        .version_id
        .expect("a versioned bucket gives a version id");
    let etag = stored.etag.unwrap_or_default();
    let app = app(&s, Some(4096)).await;

    let live = serde_json::json!({"Records": [{
        "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": s.bucket.name()},
               "object": {"key": KEY, "size": body.len(), "eTag": etag.trim_matches('"'), "versionId": version}}
    }]});
    // The emulator deduplicates only against messages still in the queue,
    // so count without receiving until the end.
    let queued = || async {
        s.emu
            .sqs
            .get_queue_attributes()
            .queue_url(&s.output)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages]
            .parse::<usize>()
            .unwrap()
    };
    Handler::new(&app).handle(live).await.unwrap();
    let first = queued().await;
    assert!(first > 3, "several messages: {first}");
    // Reprocess: the done marker goes, and a replayed event comes.
    s.bucket
        .delete("state/done/e/2026/11/21/22/1763800000000.json.zst", None)
        .await
        .unwrap();
    let listed = s
        .bucket
        .list_page("raw/e/", None, Listing::Current, 10)
        .await
        .unwrap();
    let obj = cloud_processor::tools::RawObject::from(listed.objects[0].clone());
    assert_eq!(
        (obj.version_id.as_deref(), obj.etag.as_str()),
        (Some(version.as_str()), etag.trim_matches('"')),
        "replay names the version a live event names"
    );
    Handler::new(&app)
        .handle(cloud_processor::tools::event_for(s.bucket.name(), &obj))
        .await
        .unwrap();
    assert_eq!(
        queued().await,
        first,
        "messages sent again under other deduplication ids"
    );
    assert_eq!(receive_all(&s.emu, &s.output).await.len(), first);
}

/// A finished object whose lease could not be deleted (the delete failed,
/// which `finish` only logs) keeps a lease recording every chunk as sent.
/// Reprocessing must send every record again: it clears the lease as well
/// as the marker, so the next attempt does not take over that lease, send
/// nothing and call the object sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprocess_after_a_leftover_lease_sends_everything_again() {
    use cloud_processor::tools::{self as replay, Mode};
    use std::sync::atomic::Ordering;
    let s = setup("once-leftover", false).await;
    let (proxy, app) = app_behind_proxy(&s, Some(4096), 1).await;
    put(
        &s,
        KEY,
        zstd::encode_all(sample_file(300).as_bytes(), 3).unwrap(),
    )
    .await;
    proxy.faults.s3_fail_deletes.store(true, Ordering::Relaxed);
    Handler::new(&app)
        .process_message_body(&notification(&s).await)
        .await
        .unwrap();
    proxy.faults.s3_fail_deletes.store(false, Ordering::Relaxed);
    let first = drain(&s).await.len();
    assert!(first > 3, "several messages: {first}");
    assert!(
        s.bucket
            .get_bytes("state/leases/e/2026/11/21/22/1763800000000.json.zst")
            .await
            .is_ok(),
        "the lease was left behind"
    );
    // Past its expiry, as a reprocess days later would find it.
    tokio::time::sleep(PAST_A_ONE_SECOND_LEASE).await;

    let sel = selection(&s, "raw/e/");
    let queue = replay_to_queue(&s);
    let summary = replay::replay(
        &s.bucket,
        &queue,
        &sel,
        &options(Mode::Reprocess, false),
        None,
        &NO_STOP,
    )
    .await
    .unwrap();
    let outcomes = Handler::new(&app)
        .process_message_body(&notification(&s).await)
        .await
        .unwrap();
    assert!(
        matches!(outcomes[..], [Outcome::Sent { .. }]),
        "{outcomes:?}"
    );
    assert_eq!(drain(&s).await.len(), first, "every message sent again");
    assert_eq!(
        (
            summary.sent,
            summary.markers_deleted,
            summary.leases_deleted
        ),
        (1, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lists_leases_with_no_live_owner_by_s3s_clock() {
    let s = setup("once-audit", false).await;
    crashed_mid_object(&s, 1500, 1).await;

    let sel = selection(&s, "raw/e/");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Live by S3's clock, even to an auditor whose clock runs an hour ahead.
    let report = cloud_processor::tools::audit(&s.bucket, &sel, 3600, now + 3600)
        .await
        .unwrap();
    assert!(report.stale_leases.is_empty(), "{:?}", report.stale_leases);
    tokio::time::sleep(PAST_A_ONE_SECOND_LEASE).await;
    let report = cloud_processor::tools::audit(&s.bucket, &sel, 3600, now)
        .await
        .unwrap();
    assert_eq!(
        report.stale_leases,
        ["state/leases/e/2026/11/21/22/1763800000000.json.zst"]
    );
}

/// The answers to the lease's first write and to the done marker's are
/// lost after S3 applied them: the connection closes before the response.
/// The SDK's retry of each meets the processor's own object. It carries on
/// at once instead of waiting out its own lease (120 s here), treats the
/// marker as written, and sends each chunk once; a repeat of the event is
/// a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_to_its_own_lease_and_marker_neither_stall_nor_resend() {
    use std::sync::atomic::Ordering;
    let s = setup("once-lost-answer", false).await;
    let (proxy, app) = app_behind_proxy(&s, Some(4096), 120).await;
    put(
        &s,
        KEY,
        zstd::encode_all(sample_file(300).as_bytes(), 3).unwrap(),
    )
    .await;
    *proxy.faults.s3_lose_put_answers.lock().unwrap() =
        vec!["/state/leases/".into(), "/state/done/".into()];
    let event = notification(&s).await;
    let outcomes = Handler::new(&app)
        .process_message_body(&event)
        .await
        .expect("no wait on its own lease");
    assert!(
        matches!(outcomes[..], [Outcome::Sent { .. }]),
        "{outcomes:?}"
    );
    assert_eq!(proxy.faults.lost_answers.load(Ordering::Relaxed), 2);
    let sent = drain(&s).await;
    assert!(sent.len() > 3, "several messages: {}", sent.len());
    assert_eq!(marker(&s).await.messages as usize, sent.len());
    assert_eq!(
        Handler::new(&app)
            .process_message_body(&event)
            .await
            .unwrap(),
        [Outcome::Duplicate]
    );
    assert!(drain(&s).await.is_empty());
}
