//! The Lambda through a real runtime API: cargo-lambda's emulator serves the
//! Lambda Runtime API, the built binary runs as the function with no
//! subcommand (as in AWS), and events are invoked through it. cargo-lambda
//! comes from PyPI; `scripts/test.sh` installs it into `.venv`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::free_port;
use relay_shared::store::ObjectStore;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use relay_shared::store::{PutMode, PutOptions};
use relay_shared::testing::Emulator;

async fn receive(emu: &Emulator, queue: &str) -> Vec<aws_sdk_sqs::types::Message> {
    emu.sqs
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default()
}

fn cargo_lambda(args: &[&str]) -> Command {
    let mut c = Command::new("cargo");
    c.arg("lambda").args(args);
    c
}

/// Invokes the function and returns (success, output).
fn invoke(port: u16, event: &serde_json::Value) -> (bool, String) {
    let out = cargo_lambda(&[
        "invoke",
        "_",
        "-A",
        "127.0.0.1",
        "-P",
        &port.to_string(),
        "--data-ascii",
    ])
    .arg(event.to_string())
    .output()
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_and_sqs_events_through_the_lambda_runtime_api() {
    let installed = Command::new("cargo")
        .args(["lambda", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        installed,
        "cargo-lambda is not installed; run the suite with scripts/test.sh, which installs it into .venv and puts it on PATH"
    );
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("lambda-rt").await;
    let queue = emu.queue("lambda-rt-out", false).await;
    let key = "raw/edge 1/2026/11/21/22/1763800000000.json.zst";
    let body = zstd::encode_all(&b"# junk\n{\"id\":1,\"x\":true}\n{\"id\":2}\n"[..], 3).unwrap();
    bucket
        .put(key, body, &PutMode::Create, &PutOptions::default())
        .await
        .unwrap();

    let port = free_port();
    let _api = common::KillOnDrop(
        cargo_lambda(&[
            "watch",
            "--only-lambda-apis",
            "-A",
            "127.0.0.1",
            "-P",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the runtime API did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = tempfile::NamedTempFile::new().unwrap();
    let metrics_out = tempfile::NamedTempFile::new().unwrap();
    let _function = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_cloud-processor"))
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt"),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("RELAY_FIELDS", "id")
            .env("RELAY_OUTPUT_QUEUE_URL", &queue)
            .env("RELAY_S3_PATH_STYLE", "true")
            .env("RELAY_LOG_FORMAT", "json")
            .stdout(metrics_out.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    );

    // An S3 notification as the emulator sends it (the key `+`-encoded as AWS does).
    let s3_event = serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket.name()}, "object": {"key": "raw/edge+1/2026/11/21/22/1763800000000.json.zst", "size": 40}}
    }]});
    let (ok, out) = invoke(port, &s3_event);
    assert!(
        ok,
        "invoke failed: {out}\nfunction log:\n{}",
        std::fs::read_to_string(log.path()).unwrap_or_default()
    );

    let got = receive(&emu, &queue).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body(), Some("{\"id\":1}\n{\"id\":2}"));
    assert_eq!(
        got[0].message_attributes().unwrap()["relay.source_key"].string_value(),
        Some(key)
    );

    // Replay by invoking the function: the first object has its done marker,
    // so only a second, never-notified object is sent.
    let second = "raw/edge 1/2026/11/21/22/1763800000001.json.zst";
    let body = zstd::encode_all(&b"{\"id\":3}\n"[..], 3).unwrap();
    bucket
        .put(second, body, &PutMode::Create, &PutOptions::default())
        .await
        .unwrap();
    let runtime_api = emu
        .sdk
        .to_builder()
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .build();
    let sel = cloud_processor::tools::Selection {
        bucket: bucket.name().to_owned(),
        prefix: "raw/".into(),
        raw_prefix: "raw/".into(),
        state_prefix: "state/".into(),
        since: None,
        until: None,
    };
    let target =
        cloud_processor::tools::Target::Function(cloud_processor::Function::new(&runtime_api, "_"));
    let opts = cloud_processor::tools::Options::new(cloud_processor::tools::Mode::Missing);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let summary = cloud_processor::tools::replay(&bucket, &target, &sel, &opts, None, &stop)
        .await
        .unwrap();
    assert_eq!(
        (summary.listed, summary.already_done, summary.sent),
        (2, 1, 1)
    );
    let got = receive(&emu, &queue).await;
    let bodies: Vec<&str> = got.iter().filter_map(|m| m.body()).collect();
    assert!(bodies.contains(&"{\"id\":3}"), "{bodies:?}");

    // A canary, with no canary queue: processed, nothing sent, and its lag
    // leaves in the invocation's EMF with the source as a dimension.
    let canary = "raw/edge-7/2026/11/21/22/1763800000123.canary.json.zst";
    let body = zstd::encode_all(
        &b"{\"source\":\"edge-7\",\"seq\":1,\"created_ms\":1763800000123}\n"[..],
        3,
    )
    .unwrap();
    bucket
        .put(canary, body, &PutMode::Create, &PutOptions::default())
        .await
        .unwrap();
    let canary_event = serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket.name()}, "object": {"key": canary, "size": 60}}
    }]});
    let (ok, out) = invoke(port, &canary_event);
    assert!(ok, "{out}");
    assert!(
        receive(&emu, &queue).await.is_empty(),
        "a canary reached the output queue"
    );
    let emf = std::fs::read_to_string(metrics_out.path()).unwrap();
    let lag = emf
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|d| d.get("relay_canary_lag_seconds").is_some())
        .unwrap_or_else(|| panic!("no canary lag in the EMF output:\n{emf}"));
    assert_eq!(lag["source"], "edge-7");
    let dims = lag["_aws"]["CloudWatchMetrics"][0]["Dimensions"].to_string();
    assert!(dims.contains("\"source\""), "{dims}");
    // Created long ago by this test's clock: the lag says so.
    assert!(
        lag["relay_canary_lag_seconds"].as_f64().unwrap() > 86_400.0,
        "{lag}"
    );

    // An SQS batch: a test event (ignored, succeeds) and a garbage body, which
    // alone is reported as a batch item failure.
    let notification =
        serde_json::json!({"Event": "s3:TestEvent", "Service": "Amazon S3"}).to_string();
    let sqs_event = serde_json::json!({"Records": [
        {"messageId": "ok-1", "eventSource": "aws:sqs", "body": notification},
        {"messageId": "bad-2", "eventSource": "aws:sqs", "body": "not json"}
    ]});
    let (ok, out) = invoke(port, &sqs_event);
    assert!(ok, "{out}");
    let start = out.find('{').unwrap_or(0);
    let response: serde_json::Value =
        serde_json::from_str(out[start..].trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        response,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": "bad-2"}]})
    );
}
