//! The processor against the real S3 and SQS protocols (the local emulator):
//! S3 notifies a queue, the handler processes the object, and the output
//! queue holds exactly the expected messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use relay_shared::store::ObjectStore;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use cloud_processor::Handler;
use cloud_processor::MessageSink;
use cloud_processor::attributes_size;
use cloud_processor::{AwsProcessor, Outcome, Processor};
use cloud_processor::{Settings, run_pipeline};
use common::*;

/// What the pipeline makes of `bytes` for this app and key, computed locally.
fn expected(app: &AwsProcessor, key: &str, bytes: &[u8]) -> Vec<String> {
    let settings = Settings {
        projection: app.config.projection.clone(),
        format: app.config.body_format,
        max_body_bytes: app.output.max_message_bytes() - attributes_size(key),
        max_record_bytes: cloud_processor::RECORD_WINDOW_BYTES,
        max_decompressed_bytes: app.config.max_decompressed_bytes,
        records_pointer: None,
        large_records: cloud_processor::LargeRecords::Reject,
        max_large_record_bytes: 0,
        decode_thread: true,
        resume: cloud_processor::Resume::default(),
    };
    let mut bodies = Vec::new();
    run_pipeline(bytes, &settings, |c| {
        bodies.push(String::from_utf8(c.body).unwrap());
        ControlFlow::Continue(())
    })
    .unwrap();
    bodies
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
    let outcomes = Handler::new(&app)
        .process_message_body(&body)
        .await
        .unwrap();
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

/// One file followed end to end: the trace context the agent stored with
/// the object is continued on every message (`traceparent`, and X-Ray's
/// `AWSTraceHeader`) under the processor's own span, and the done marker
/// names the trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_trace_reaches_every_message_and_the_marker() {
    the_files_trace_is_followed(setup("proc-trace", false).await).await;
}

/// LocalStack returns the `AWSTraceHeader` system attribute, as SQS does
/// (moto drops it): there it is checked on every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_trace_reaches_xrays_header_on_localstack() {
    let emu = relay_shared::testing::Emulator::localstack().await;
    the_files_trace_is_followed(setup_on(emu, "proc-trace-ls", false).await).await;
}

async fn the_files_trace_is_followed(s: Setup) {
    use relay_shared::testing::Implementation;
    use relay_shared::trace::TraceContext;
    let app = app(&s, Some(4096)).await;
    let key = "raw/edge-1/2026/11/21/22/1763800000000.json.zst";
    let agent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let options = relay_shared::store::PutOptions {
        metadata: [
            ("traceparent".to_owned(), agent.to_owned()),
            ("written-ms".to_owned(), "1763800000000".to_owned()),
        ]
        .into(),
        ..Default::default()
    };
    let body = zstd::encode_all(sample_file(300).as_bytes(), 3).unwrap();
    s.bucket
        .put(key, body, &relay_shared::store::PutMode::Create, &options)
        .await
        .unwrap();
    let event = notification(&s).await;
    Handler::new(&app)
        .process_message_body(&event)
        .await
        .unwrap();
    let messages = receive_all(&s.emu, &s.output).await;
    assert!(messages.len() > 1, "{}", messages.len());
    for m in &messages {
        let t = TraceContext::parse(&m.attrs["traceparent"]).expect("a traceparent");
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(t.parent_id, 0x00f0_67aa_0ba9_02b7, "the processor's span");
        if s.emu.kind == Implementation::LocalStack {
            assert_eq!(m.trace_header.as_ref(), Some(&t.xray_header()));
        }
    }
    let (bytes, _) = s
        .bucket
        .get_bytes("state/done/edge-1/2026/11/21/22/1763800000000.json.zst")
        .await
        .unwrap();
    let marker: cloud_processor::DoneMarker = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        marker.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    // The sample's truncated record is in the reject report, under the trace.
    let rejects = cloud_processor::StateKeys::new("state/", "raw/", key).rejects;
    let (bytes, _) = s.bucket.get_bytes(&rejects).await.unwrap();
    let report: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(report["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
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
        let outcomes = Handler::new(&app)
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
async fn unreadable_objects_are_quarantined_and_oversized_records_rejected_if_asked() {
    let s = setup("proc-bad", false).await;
    let mut app = app(&s, Some(2048)).await;
    app.config.large_records = cloud_processor::LargeRecords::Reject;

    let mut corrupt = zstd::encode_all(&b"{\"id\":1}\n".repeat(50_000)[..], 3).unwrap();
    corrupt.truncate(corrupt.len() / 2);
    put(&s, "raw/e/2026/11/21/22/corrupt.json.zst", corrupt).await;
    let outcomes = Handler::new(&app)
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
    let outcomes = Handler::new(&app)
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
async fn a_download_cut_halfway_is_retried_not_quarantined() {
    let s = setup("proc-cut", false).await;
    let (proxy, app) = app_behind_proxy(&s, Some(2048), 120).await;
    let key = "raw/e/2026/11/21/22/cut.json.zst";
    let event = put_sample(&s, key, 3000).await;

    proxy
        .faults
        .s3_get_cuts
        .store(1, std::sync::atomic::Ordering::Relaxed);
    let err = Handler::new(&app)
        .process_message_body(&event)
        .await
        .unwrap_err();
    assert!(
        matches!(err.failure(), Some(cloud_processor::Failure::Read { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(key), "{err}");
    assert!(
        s.bucket
            .get_bytes("state/quarantine/e/2026/11/21/22/cut.json.zst.json")
            .await
            .is_err(),
        "a network fault is not corruption"
    );

    // The redelivered event resumes and finishes: every record once.
    let outcomes = Handler::new(&app)
        .process_message_body(&event)
        .await
        .unwrap();
    assert!(
        matches!(outcomes[0], Outcome::Sent { records: 3000, .. }),
        "{outcomes:?}"
    );
    let records: usize = drain(&s)
        .await
        .values()
        .map(|(b, _)| b.lines().count())
        .sum();
    assert_eq!(records, 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_is_never_answered_times_out_and_is_retried() {
    use relay_shared::client::{Timeouts, sqs_client, with_timeouts};
    let s = setup("proc-silent", false).await;
    let proxy = relay_shared::testing::FaultProxy::start(&s.emu.endpoint).await;
    // The processor's own client settings, scaled down: a request with no
    // answer fails after 1 s instead of waiting for TCP to give up.
    let timeouts = Timeouts {
        attempt: Duration::from_secs(1),
        operation: Duration::from_secs(3),
    };
    let sqs = sqs_client(&with_timeouts(&s.emu.sdk_via(&proxy.endpoint()), timeouts));
    let base = app(&s, Some(4096)).await;
    let output = cloud_processor::SqsOutput::connect(sqs, &s.output, "relay", Some(4096))
        .await
        .unwrap();
    let app = Processor::new(base.config, base.protocol, base.store, output);
    let key = "raw/e/2026/11/21/22/silent.json.zst";
    let event = put_sample(&s, key, 500).await;

    proxy
        .faults
        .sqs_silent_batches
        .store(1, std::sync::atomic::Ordering::Relaxed);
    let outcomes = tokio::time::timeout(
        Duration::from_secs(60),
        Handler::new(&app).process_message_body(&event),
    )
    .await
    .expect("a silent connection held the object: no timeout fired")
    .unwrap();
    assert!(
        matches!(outcomes[0], Outcome::Sent { records: 500, .. }),
        "{outcomes:?}"
    );
    assert_eq!(
        proxy
            .faults
            .silenced
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the fault was injected"
    );
    // The silent request never reached the queue, so every record is
    // there once.
    let records: usize = drain(&s)
        .await
        .values()
        .map(|(b, _)| b.lines().count())
        .sum();
    assert_eq!(records, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_sqs_refuses_for_good_quarantine_the_object_after_the_rest_is_sent() {
    let s = setup("proc-refuse", false).await;
    let (proxy, app) = app_sending_through_proxy(&s, Some(2048)).await;
    let key = "raw/e/2026/11/21/22/refused.json.zst";
    let event = put_sample(&s, key, 600).await;

    // The first batch: chunks 1, 3, 5, 7 and 9 are refused as the sender's fault.
    proxy
        .faults
        .sqs_refuse_batches
        .store(1, std::sync::atomic::Ordering::Relaxed);
    let outcomes = Handler::new(&app)
        .process_message_body(&event)
        .await
        .unwrap();
    let [Outcome::Quarantined { reason }] = &outcomes[..] else {
        panic!("{outcomes:?}")
    };
    assert!(
        reason.contains("refused 5 message(s)")
            && reason.contains("chunk 1: InvalidParameterValue"),
        "{reason}"
    );
    let record = s
        .bucket
        .get_bytes("state/quarantine/e/2026/11/21/22/refused.json.zst.json")
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&record.0).contains("refused 5 message(s)"));
    let marker: cloud_processor::DoneMarker = serde_json::from_slice(
        &s.bucket
            .get_bytes("state/done/e/2026/11/21/22/refused.json.zst")
            .await
            .unwrap()
            .0,
    )
    .unwrap();
    assert_eq!(marker.outcome, "quarantined");
    // Everything else arrived, once, the later batches included.
    let got = drain(&s).await;
    let chunks: Vec<u32> = got.keys().map(|(_, c)| *c).collect();
    let expected: Vec<u32> = (0..marker.messages)
        .filter(|c| !matches!(c, 1 | 3 | 5 | 7 | 9))
        .collect();
    assert!(marker.messages > 20, "several batches: {}", marker.messages);
    assert_eq!(chunks, expected);
    // A repeated event is a duplicate: the quarantine is final.
    assert_eq!(
        Handler::new(&app)
            .process_message_body(&event)
            .await
            .unwrap(),
        [Outcome::Duplicate]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_limit_lowered_after_start_up_is_read_again_and_packed_for() {
    let s = setup("proc-shrunk", false).await;
    let set_limit = |bytes: &'static str| {
        s.emu
            .sqs
            .set_queue_attributes()
            .queue_url(&s.output)
            .attributes(QueueAttributeName::MaximumMessageSize, bytes)
            .send()
    };
    set_limit("8192").await.unwrap();
    let app = app(&s, None).await;
    assert_eq!(app.output.max_message_bytes(), 8192);
    let key = "raw/e/2026/11/21/22/shrunk.json.zst";
    let event = put_sample(&s, key, 400).await;
    // Someone lowers the queue's limit while the processor runs.
    set_limit("2048").await.unwrap();

    let err = Handler::new(&app)
        .process_message_body(&event)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("too large") && text.contains("2048 bytes") && text.contains(key),
        "{text}"
    );
    assert_eq!(app.output.max_message_bytes(), 2048);
    // Nothing was sent under the old limit, so the retry packs for the new one.
    let outcomes = Handler::new(&app)
        .process_message_body(&event)
        .await
        .unwrap();
    assert!(
        matches!(outcomes[..], [Outcome::Sent { records: 400, .. }]),
        "{outcomes:?}"
    );
    let got = drain(&s).await;
    assert!(got.values().all(|(body, _)| body.len() <= 2048));
    let records: usize = got.values().map(|(b, _)| b.lines().count()).sum();
    assert_eq!(records, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_stops_retrying_when_the_lease_would_run_out_and_says_what_sqs_took() {
    let s = setup("proc-until", false).await;
    let proxy = relay_shared::testing::FaultProxy::start(&s.emu.endpoint).await;
    let sqs = relay_shared::client::sqs_client(&s.emu.sdk_via(&proxy.endpoint()));
    let output = cloud_processor::SqsOutput::connect(sqs, &s.output, "relay", None)
        .await
        .unwrap();
    // Every batch has every second entry withheld and reported failed.
    proxy
        .faults
        .sqs_fail_every
        .store(1, std::sync::atomic::Ordering::Relaxed);
    let batch: Vec<cloud_processor::Chunk> = (0..10)
        .map(|index| cloud_processor::Chunk {
            index,
            records: 1,
            span: [u64::from(index), u64::from(index) + 1],
            body: format!("{{\"id\":{index}}}").into_bytes(),
            payload_size: None,
            stream: None,
        })
        .collect();
    // The lease's margin is already gone: one attempt, no retries.
    let origin = cloud_processor::Origin {
        source_key: "raw/e/k.json",
        dedup_base: "b/raw/e/k.json\0v",
        trace: None,
    };
    let outcome = output.send(&origin, &batch, Instant::now()).await;
    assert!(
        matches!(
            outcome.failed,
            Some(cloud_processor::QueueError::GaveUp { .. })
        ),
        "{outcome:?}"
    );
    assert_eq!(
        proxy
            .faults
            .failed_entries
            .load(std::sync::atomic::Ordering::Relaxed),
        5,
        "one attempt only"
    );
    assert_eq!(
        outcome.accepted,
        [0, 2, 4, 6, 8],
        "what SQS took is reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_output_and_a_repeated_event() {
    let s = setup("proc-fifo", true).await;
    let app = app(&s, Some(8 * 1024)).await;
    assert!(app.output.is_fifo());
    let key = "raw/e/2026/11/21/22/1763800000001.json.zst";
    let body = put_sample(&s, key, 100).await;
    let first = Handler::new(&app)
        .process_message_body(&body)
        .await
        .unwrap();
    // The same event again, as S3 or a replay may deliver it: the done
    // marker makes it a duplicate. (A resend after a crash, which FIFO's
    // deduplication drops, is tested in once.rs.)
    let second = Handler::new(&app)
        .process_message_body(&body)
        .await
        .unwrap();
    assert_eq!(second, [Outcome::Duplicate]);
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
    let poller = start_poller(app, s.emu.sqs.clone(), s.notifications.clone(), 30);
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
    poller.stop().await;
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

/// S3 -> SNS -> SQS fan-out, delivered by the emulator itself: the body is
/// SNS's envelope (raw delivery off). The object is processed, SNS's
/// wrapped test event is ignored, and bodies of no known shape are never
/// acknowledged: they come back until the queue's redrive policy moves them
/// to its dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_fan_out_is_processed_and_unknown_bodies_reach_the_dlq() {
    let s = setup("proc-sns", false).await;
    let app = app(&s, None).await;
    let dlq = s.emu.queue("proc-sns-dlq", false).await;
    let queue = s.emu.queue("proc-sns-n", false).await;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": queue_arn(&s.emu, &dlq).await,
        "maxReceiveCount": "2",
    });
    s.emu
        .sqs
        .set_queue_attributes()
        .queue_url(&queue)
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .unwrap();
    let topic = xml_field(
        &sns_call(
            &s.emu,
            &[
                ("Action", "CreateTopic"),
                ("Name", &relay_shared::testing::unique_name("raw-events")),
            ],
        )
        .await,
        "TopicArn",
    );
    let endpoint = queue_arn(&s.emu, &queue).await;
    sns_call(
        &s.emu,
        &[
            ("Action", "Subscribe"),
            ("TopicArn", &topic),
            ("Protocol", "sqs"),
            ("Endpoint", &endpoint),
        ],
    )
    .await;
    s.emu
        .s3
        .put_bucket_notification_configuration()
        .bucket(s.bucket.name())
        .notification_configuration(
            aws_sdk_s3::types::NotificationConfiguration::builder()
                .topic_configurations(
                    aws_sdk_s3::types::TopicConfiguration::builder()
                        .topic_arn(&topic)
                        .events(aws_sdk_s3::types::Event::from("s3:ObjectCreated:*"))
                        .filter(raw_filter())
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let key = "raw/edge 1/2026/11/21/22/1763800000000.json.zst";
    put(
        &s,
        key,
        zstd::encode_all(sample_file(30).as_bytes(), 3).unwrap(),
    )
    .await;
    for junk in [
        "{}",
        "not json",
        "{\"Type\":\"Notification\",\"Message\":\"{\\\"hello\\\":1}\"}",
    ] {
        s.emu
            .sqs
            .send_message()
            .queue_url(&queue)
            .message_body(junk)
            .send()
            .await
            .unwrap();
    }

    let poller = start_poller(app, s.emu.sqs.clone(), queue.clone(), 1);
    let start = Instant::now();
    let mut got = BTreeMap::new();
    let mut dead = Vec::new();
    while got.is_empty() || dead.len() < 3 {
        got.extend(drain(&s).await);
        dead.extend(
            receive_batch(&s.emu.sqs, &dlq)
                .await
                .into_iter()
                .map(|m| m.body),
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "after 60 s: {} objects delivered, dead letters {dead:?}",
            got.len()
        );
    }
    poller.stop().await;
    assert_eq!(got.len(), 1, "one message of 30 records");
    let ((source, _), (_, attrs)) = got.iter().next().unwrap();
    assert_eq!(
        (source.as_str(), attrs["relay.records"].as_str()),
        (key, "30")
    );
    dead.sort();
    assert_eq!(
        dead,
        [
            "not json",
            "{\"Type\":\"Notification\",\"Message\":\"{\\\"hello\\\":1}\"}",
            "{}"
        ]
    );
    // Nothing else is left behind: the envelope and SNS's test event were
    // acknowledged.
    let left = receive_batch(&s.emu.sqs, &queue).await;
    assert!(
        left.is_empty(),
        "{:?}",
        left.iter().map(|m| &m.body).collect::<Vec<_>>()
    );
}

/// A single-batch object costs two state PUTs: the lease and the done
/// marker. A progress write after the last batch would be a third, made
/// redundant by the marker that follows at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_batch_object_costs_two_state_puts() {
    use std::sync::atomic::Ordering;
    let s = setup("proc-puts", false).await;
    let (proxy, app) = app_behind_proxy(&s, None, 120).await;
    let (text, records) = relay_shared::sample::SampleGen::new(5).file(40_000);
    put(
        &s,
        "raw/e/2026/11/21/22/1763800000000.json.zst",
        zstd::encode_all(text.as_bytes(), 3).unwrap(),
    )
    .await;
    let body = notification(&s).await;
    let outcomes = Handler::new(&app)
        .process_message_body(&body)
        .await
        .unwrap();
    assert!(
        matches!(outcomes[..], [Outcome::Sent { chunks: 1, rejected: 0, records: r }] if r as usize == records),
        "{outcomes:?}"
    );
    assert_eq!(
        proxy.faults.s3_puts.load(Ordering::Relaxed),
        2,
        "the lease and the done marker"
    );
    assert_eq!(drain(&s).await.len(), 1);
}

/// A notification that failed comes back when retrying makes sense, not
/// after the whole visibility timeout: here the object is busy (another
/// processor's live lease ends in 3 s), the visibility timeout is 300 s, and
/// the object still arrives within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_notification_comes_back_when_retrying_makes_sense() {
    let s = setup("proc-retry", false).await;
    let app = app(&s, None).await;
    let key = "raw/e/2026/11/21/22/1763800000000.json.zst";
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let lease = serde_json::json!({
        "owner": "another-processor",
        "expires_at_ms": now_ms + 3000,
        "fingerprint": "other",
        "next_chunk": 0,
    });
    s.bucket
        .put(
            "state/leases/e/2026/11/21/22/1763800000000.json.zst",
            serde_json::to_vec(&lease).unwrap(),
            &relay_shared::store::PutMode::Create,
            &relay_shared::store::PutOptions::default(),
        )
        .await
        .unwrap();
    put(
        &s,
        key,
        zstd::encode_all(sample_file(20).as_bytes(), 3).unwrap(),
    )
    .await;
    let poller = start_poller(app, s.emu.sqs.clone(), s.notifications.clone(), 300);
    let start = Instant::now();
    let mut got = BTreeMap::new();
    while got.is_empty() {
        got.extend(drain(&s).await);
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "the busy notification did not come back before its 300 s visibility timeout"
        );
    }
    poller.stop().await;
    assert!(got.values().all(|(_, a)| a["relay.records"] == "20"));
}

/// In Lambda too: a failed SQS record (here a body of no known shape) is
/// reported as a batch item failure and made visible again through its
/// receipt handle, so it comes back in seconds, not after the queue's
/// 300 s visibility timeout (the module's default is six times the Lambda
/// timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_lambda_a_failed_record_comes_back_early() {
    let s = setup("proc-lambda-retry", false).await;
    let queue = s.emu.queue("proc-lambda-n", false).await;
    let app = app(&s, None).await;
    let notifications = cloud_processor::SqsNotifications::new(s.emu.sqs.clone(), queue.clone());
    s.emu
        .sqs
        .send_message()
        .queue_url(&queue)
        .message_body("{}")
        .send()
        .await
        .unwrap();
    let got = s
        .emu
        .sqs
        .receive_message()
        .queue_url(&queue)
        .visibility_timeout(300)
        .wait_time_seconds(5)
        .send()
        .await
        .unwrap();
    let m = &got.messages.unwrap()[0];
    let id = m.message_id.clone().unwrap();
    let event = serde_json::json!({"Records": [{
        "messageId": id,
        "receiptHandle": m.receipt_handle.clone().unwrap(),
        "body": m.body.clone().unwrap(),
        "eventSource": "aws:sqs",
        "attributes": {"ApproximateReceiveCount": "1"},
    }]});
    let answer = Handler::new(&app)
        .with_queue(&notifications)
        .handle(event)
        .await
        .unwrap();
    assert_eq!(
        answer["batchItemFailures"][0]["itemIdentifier"],
        id.as_str()
    );
    let start = Instant::now();
    loop {
        let again = s
            .emu
            .sqs
            .receive_message()
            .queue_url(&queue)
            .wait_time_seconds(2)
            .send()
            .await
            .unwrap();
        if again.messages.is_some_and(|ms| {
            ms.iter()
                .any(|x| x.message_id.as_deref() == Some(id.as_str()))
        }) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "the failed record did not come back before its 300 s visibility timeout"
        );
    }
}

/// `poll` as an operator first sees it: every counter at zero before the
/// first notification, build and process metrics, the version and
/// settings at start-up, and no colour codes in a piped log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_metrics_and_logs_are_complete_from_the_start() {
    let s = setup("proc-metrics", false).await;
    let port = relay_shared::testing::free_port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("poll.log");
    let mut poll = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-processor"))
        .arg("poll")
        .env("AWS_ENDPOINT_URL", &s.emu.endpoint)
        .env("RELAY_FIELDS", FIELDS)
        .env("RELAY_OUTPUT_QUEUE_URL", &s.output)
        .env("RELAY_NOTIFICATION_QUEUE_URL", &s.notifications)
        .env("RELAY_METRICS_ADDR", &addr)
        .env("RELAY_S3_PATH_STYLE", "true")
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let metrics = relay_shared::testing::first_metrics(&addr, &log).await;
    // SIGTERM, as systemd sends it: a clean, prompt exit.
    let stopping = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &poll.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = poll.wait().unwrap();
    assert!(
        status.success() && stopping.elapsed() < Duration::from_secs(10),
        "{status:?} after {:?}",
        stopping.elapsed()
    );
    for series in [
        "relay_processor_events_total{outcome=\"unknown\"} 0",
        "relay_processor_objects_total{outcome=\"failed\"} 0",
        "relay_processor_state_requests_total{op=\"put\"} 0",
        "relay_processor_fifo_window_exceeded_total 0",
        "relay_processor_rejected_records_total 0",
        "relay_build_info{binary=\"cloud-processor\",version=\"",
        "process_resident_memory_bytes ",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
    relay_shared::testing::assert_plain_log_with_start_line(
        &log,
        "cloud-processor",
        "\"lease_ttl_secs\":\"60\"",
    );
}

/// `cloud-processor check` against the emulator: all good with the test's
/// resources; a missing bucket and a missing queue each fail one line
/// naming them, and the exit status says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_each_missing_resource_and_exits_non_zero() {
    let s = setup("proc-check", false).await;
    let run_full = |bucket: &str, output: &str, payloads: &str, canaries: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cloud-processor"))
            .arg("check")
            .env("RELAY_CANARY_QUEUE_URL", canaries)
            .env("AWS_ENDPOINT_URL", &s.emu.endpoint)
            .env("RELAY_FIELDS", FIELDS)
            .env("RELAY_BUCKET", bucket)
            .env("RELAY_OUTPUT_QUEUE_URL", output)
            .env("RELAY_NOTIFICATION_QUEUE_URL", &s.notifications)
            .env("RELAY_PAYLOAD_BUCKET", payloads)
            .env("RELAY_S3_PATH_STYLE", "true")
            .output()
            .unwrap()
    };
    let run_with =
        |bucket: &str, output: &str, payloads: &str| run_full(bucket, output, payloads, "");
    let run = |bucket: &str, output: &str| run_with(bucket, output, "");
    let good = run(s.bucket.name(), &s.output);
    let text = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{text}");
    assert!(
        !text.contains("FAIL")
            && text.contains("output queue")
            && text.contains(&format!(
                "payloads s3://{}/payloads/: records too large for a message go here (records up to 268435456 bytes)",
                s.bucket.name()
            )),
        "{text}"
    );

    let missing = relay_shared::testing::unique_name("missing");
    let bad = run(&missing, &s.output);
    let text = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{text}");
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        failed.len() == 1 && failed[0].contains(&missing) && failed[0].contains("does not exist"),
        "{text}"
    );

    // A payload bucket of its own that does not exist fails one line.
    let bad = run_with(s.bucket.name(), &s.output, &missing);
    let text = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{text}");
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        failed.len() == 1
            && failed[0].contains(&format!("payload bucket {missing}"))
            && failed[0].contains("RELAY_PAYLOAD_BUCKET"),
        "{text}"
    );

    let no_queue = format!("{}/123456789012/{missing}", s.emu.endpoint);
    // Canaries: any queue that answers (here the notification queue) is
    // fine; a missing one, or the consumers' own queue, fails one line.
    let good = run_full(s.bucket.name(), &s.output, "", &s.notifications);
    let text = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success()
            && text.contains(&format!("ok   canary queue {}: standard", s.notifications)),
        "{text}"
    );
    for (canaries, expected) in [
        (no_queue.as_str(), missing.as_str()),
        (s.output.as_str(), "is the output queue"),
    ] {
        let bad = run_full(s.bucket.name(), &s.output, "", canaries);
        let text = String::from_utf8_lossy(&bad.stdout);
        assert_eq!(bad.status.code(), Some(1), "{text}");
        let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
        assert!(
            failed.len() == 1
                && failed[0].contains(expected)
                && failed[0].contains("RELAY_CANARY_QUEUE_URL"),
            "{text}"
        );
    }

    let bad = run(s.bucket.name(), &no_queue);
    let text = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{text}");
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        failed.len() == 1
            && failed[0].contains(&missing)
            && failed[0].contains("RELAY_OUTPUT_QUEUE_URL"),
        "{text}"
    );
}

/// An AWS error reads as one line with the service's code and message, not
/// the SDK's Debug dump, and is printed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_error_is_one_plain_line() {
    let s = setup("proc-errline", false).await;
    let missing = relay_shared::testing::unique_name("missing");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-processor"))
        .args(["audit", "--bucket", &missing])
        .env("AWS_ENDPOINT_URL", &s.emu.endpoint)
        .env("RELAY_S3_PATH_STYLE", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("s3://{missing}/: GetBucketVersioning failed"))
            && stderr.contains("NoSuchBucket): The specified bucket does not exist")
            && !stderr.contains("Error {")
            && !stderr.contains("aws_request_id"),
        "{stderr}"
    );
}

/// `audit` says how many, how old, and what to do next, and exits 3 when
/// something is late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_gives_counts_ages_and_the_next_step() {
    let s = setup("proc-audit", false).await;
    let key = "raw/e/2026/11/21/22/late.json.zst";
    put(
        &s,
        key,
        zstd::encode_all(sample_file(3).as_bytes(), 3).unwrap(),
    )
    .await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-processor"))
        .args([
            "audit",
            "--bucket",
            s.bucket.name(),
            "--older-than-mins",
            "0",
        ])
        .env("AWS_ENDPOINT_URL", &s.emu.endpoint)
        .env("RELAY_S3_PATH_STYLE", "true")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains(
            "unprocessed: 1 raw object(s) without a done marker after 0 min, the oldest 0 min"
        ) && text.contains("next: look in the notification dead-letter queue")
            && text.contains(&format!("  {key} (0 min)")),
        "{text}"
    );
}
