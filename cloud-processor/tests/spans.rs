//! One file followed end to end over OTLP: the real binary runs as the
//! Lambda function (`relay_shared::testing::RuntimeApi`) with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, and a receiver decodes what it sends
//! with OpenTelemetry's own protobuf classes (`tests/otlp_receiver.py`,
//! opentelemetry-proto from `.venv`). The spans are there by the time the
//! invocation answers, as they must be in Lambda, which may freeze the
//! process after. A collector that is not there costs spans, never records,
//! and says so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::BufRead;
use std::time::Duration;

use relay_shared::store::{ObjectStore, PutMode, PutOptions};
use relay_shared::testing::{Emulator, RuntimeApi, s3_put_event};
use relay_shared::trace::TraceContext;
use serde_json::Value;

const AGENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The receiver, its port, and the file it writes one JSON line per span to.
struct Receiver {
    _process: common::KillOnDrop,
    port: u16,
    out: tempfile::NamedTempFile,
}

impl Receiver {
    fn start() -> Self {
        let out = tempfile::NamedTempFile::new().unwrap();
        let mut child = std::process::Command::new(common::python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/otlp_receiver.py"
            ))
            .arg(out.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("starting the OTLP receiver");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("the OTLP receiver did not start (is opentelemetry-proto in .venv? scripts/moto.sh install): {line:?}")
        });
        Self {
            _process: common::KillOnDrop(child),
            port,
            out,
        }
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(self.out.path())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Stores a file of `records` records as the edge agent would, with its
/// trace context, and returns its key.
async fn put_traced(bucket: &relay_shared::s3::Bucket, name: &str, records: u64) -> String {
    let key = format!("raw/edge-1/2026/11/21/22/{name}.json.zst");
    let text: String = (0..records)
        .map(|i| format!("{{\"id\":{i},\"pad\":\"{}\"}}\n", "x".repeat(200)))
        .collect();
    let options = PutOptions {
        metadata: [("traceparent".to_owned(), AGENT.to_owned())].into(),
        ..Default::default()
    };
    let body = zstd::encode_all(text.as_bytes(), 3).unwrap();
    bucket
        .put(&key, body, &PutMode::Create, &options)
        .await
        .unwrap();
    key
}

/// One traced file of `records` records, relayed by the real function
/// (exporting to `endpoint`) in one invocation; its log and its stdout (the
/// EMF metrics) are kept in files.
struct Run {
    emu: Emulator,
    output: String,
    key: String,
    log: tempfile::NamedTempFile,
    emf: tempfile::NamedTempFile,
    _api: RuntimeApi,
    _function: common::KillOnDrop,
}

impl Run {
    async fn invoke(label: &str, name: &str, records: u64, endpoint: &str) -> Self {
        let emu = Emulator::connect().await;
        let bucket = emu.bucket(label).await;
        let output = emu.queue(&format!("{label}-out"), false).await;
        let key = put_traced(&bucket, name, records).await;
        let api = RuntimeApi::start().await;
        let (log, emf) = (
            tempfile::NamedTempFile::new().unwrap(),
            tempfile::NamedTempFile::new().unwrap(),
        );
        let function = api
            .function(env!("CARGO_BIN_EXE_cloud-processor"), "relay-spans", 512)
            .env("RELAY_FIELDS", "id,pad")
            .env("RELAY_MAX_MESSAGE_BYTES", "1024")
            .env("RELAY_OUTPUT_QUEUE_URL", &output)
            .env("RELAY_S3_PATH_STYLE", "true")
            .env("RELAY_LOG_FORMAT", "json")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_SERVICE_NAME", "relay-spans-test")
            .stdout(emf.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let function = common::KillOnDrop(function);
        api.invoke(s3_put_event(bucket.name(), &key), Duration::from_secs(60))
            .await
            .unwrap();
        Self {
            emu,
            output,
            key,
            log,
            emf,
            _api: api,
            _function: function,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otlp_receiver_gets_one_files_spans_from_claim_to_the_last_send() {
    // 120 records of about 215 bytes, three to a 1 KiB message: 40
    // messages, four SendMessageBatch calls.
    let receiver = Receiver::start();
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let run = Run::invoke("otlp-spans", "1763800000000", 120, &endpoint).await;
    // Read at once: the spans left before the answer did.
    let spans = receiver.spans();
    let log = run.log();
    let messages = common::receive_all(&run.emu, &run.output).await;
    assert_eq!(messages.len(), 40, "{log}");

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert!(spans.iter().all(|s| s["trace_id"] == trace), "{spans:#?}");
    assert!(
        spans
            .iter()
            .all(|s| s["service"] == "relay-spans-test" && s["flags"] == 1)
    );
    let [root] = named(&spans, "object")[..] else {
        panic!("one object span: {spans:#?}")
    };
    assert_eq!(
        root["parent_span_id"], "00f067aa0ba902b7",
        "the agent's upload span"
    );
    assert_eq!(root["attributes"]["key"], run.key.as_str());
    assert_eq!(root["attributes"]["outcome"], "sent");
    assert_eq!(root["status"], "STATUS_CODE_UNSET");
    // Every message names the object span as its parent.
    for m in &messages {
        let t = TraceContext::parse(&m.attrs["traceparent"]).unwrap();
        assert_eq!(
            format!("{:016x}", t.parent_id),
            root["span_id"].as_str().unwrap()
        );
    }
    let sends = named(&spans, "send_message_batch");
    assert_eq!(sends.len(), 4, "{spans:#?}");
    let sent: i64 = sends
        .iter()
        .map(|s| s["attributes"]["accepted"].as_i64().unwrap())
        .sum();
    assert_eq!(sent, 40);
    assert!(sends.iter().all(|s| s["kind"] == "SPAN_KIND_PRODUCER"));
    for name in ["claim", "download", "pipeline"] {
        assert_eq!(named(&spans, name).len(), 1, "{name}: {spans:#?}");
    }
    let children: Vec<&Value> = spans.iter().filter(|s| s["name"] != "object").collect();
    assert!(
        children
            .iter()
            .all(|s| s["parent_span_id"] == root["span_id"])
    );
    assert_eq!(named(&spans, "pipeline")[0]["attributes"]["records"], 120);
    // In order, and within the object's span: claim, download, the sends.
    let (start, end) = (
        |s: &Value| s["start"].as_u64().unwrap(),
        |s: &Value| s["end"].as_u64().unwrap(),
    );
    let claim = named(&spans, "claim")[0];
    let download = named(&spans, "download")[0];
    assert!(start(root) <= start(claim) && end(claim) <= start(download));
    assert!(
        sends
            .iter()
            .all(|s| start(download) <= start(s) && end(s) <= end(root))
    );
    let mut ids: Vec<&str> = spans
        .iter()
        .map(|s| s["span_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), spans.len(), "span ids are unique");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_not_there_costs_spans_not_records_and_says_so() {
    // A port nothing listens on.
    let endpoint = format!("http://127.0.0.1:{}", common::free_port());
    let run = Run::invoke("otlp-gone", "1763800000001", 8, &endpoint).await;
    assert_eq!(common::receive_all(&run.emu, &run.output).await.len(), 3);
    let log = run.log();
    let warned = log.lines().any(|l| {
        l.contains("\"WARN\"") && l.contains("exporting spans failed") && l.contains(&endpoint)
    });
    assert!(warned, "{log}");
    // The EMF line after the invocation counts the dropped spans.
    let emf = std::fs::read_to_string(run.emf.path()).unwrap();
    let dropped = emf
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("relay_processor_spans_dropped_total").cloned());
    assert!(
        dropped
            .as_ref()
            .and_then(Value::as_f64)
            .is_some_and(|n| n >= 4.0),
        "object, claim, download, pipeline and a send: {dropped:?}\n{emf}"
    );
}

/// Under `poll` (the real binary), a file's spans leave within the flush
/// interval (5 s) while it keeps polling, not only at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_exports_a_files_spans_while_it_runs() {
    let s = common::setup("otlp-poll", false).await;
    let receiver = Receiver::start();
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let relay = crate::common::relay::Relay::new(s, None);
    let mut poller =
        relay.processor_with_env(1, 30, 5, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    let key = put_traced(&relay.s.bucket, "1763800000002", 8).await;
    let started = std::time::Instant::now();
    let spans = loop {
        let spans = receiver.spans();
        if named(&spans, "object").len() == 1 {
            break spans;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no object span from poll within 30 s\n{}",
            relay.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    poller.assert_running();
    let root = named(&spans, "object")[0];
    assert_eq!(root["attributes"]["key"], key.as_str());
    assert_eq!(root["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(!named(&spans, "send_message_batch").is_empty());
}
