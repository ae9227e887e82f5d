//! Start-up while AWS does not answer, through a proxy the test takes down
//! and brings back: `poll` waits and says so on `/healthz`, then comes up
//! by itself; settings that cannot work stop it at once; `check` says SQS
//! is not answering instead of waiting out every call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use relay_shared::store::ObjectStore;
use relay_shared::testing::{TransportProxy, Weather, http_get};

/// A processor's command with the test's settings, talking to `endpoint`.
fn processor(s: &Setup, endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloud-processor"));
    relay_shared::testing::loopback_aws_env(&mut cmd, endpoint)
        .args(args)
        .env("RELAY_FIELDS", FIELDS)
        .env("RELAY_OUTPUT_QUEUE_URL", &s.output)
        .env("RELAY_NOTIFICATION_QUEUE_URL", &s.notifications)
        .env("RELAY_BUCKET", s.bucket.name())
        .env("RELAY_S3_PATH_STYLE", "true")
        .env("RELAY_AWS_ATTEMPT_TIMEOUT_SECS", "2")
        .env("RELAY_AWS_OPERATION_TIMEOUT_SECS", "4")
        .env("RELAY_METRICS_ADDR", "off")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    cmd
}

/// Waits for `cmd` to exit (60 s at most: it must not wait for AWS).
fn exits(mut cmd: Command) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("err.log");
    let mut child = common::KillOnDrop(
        cmd.stdout(std::fs::File::create(dir.path().join("out.log")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still running after 60 s:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(dir.path().join("out.log")).unwrap_or_default();
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    (status.code(), format!("{out}{err}"))
}

/// `/healthz` until `want` is in its answer (60 s at most).
async fn health_until(addr: &str, want: &str, log: &Path) -> String {
    let started = Instant::now();
    loop {
        let answer = if std::net::TcpStream::connect(addr).is_ok() {
            http_get(addr, "/healthz")
        } else {
            String::new()
        };
        if answer.contains(want) {
            return answer;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "/healthz never said {want:?}; last: {answer}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A poller started while SQS refuses connections keeps running, answers
/// 503 `starting: waiting for SQS (last error …)` with
/// `relay_processor_ready 0`, and warns once, not once per attempt. When
/// SQS answers, it is ready and relays an object without being restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poller_started_during_an_outage_comes_up_by_itself() {
    let s = setup("startup-wait", false).await;
    let proxy = TransportProxy::start(&s.emu.endpoint, 0).await;
    proxy.set(Weather::Refuse);
    let addr = format!("127.0.0.1:{}", relay_shared::testing::free_port());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("poll.log");
    let mut cmd = processor(&s, &proxy.endpoint(), &["poll"]);
    cmd.env("RELAY_METRICS_ADDR", &addr)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut poll = common::KillOnDrop(cmd.spawn().unwrap());

    let starting = health_until(&addr, "starting: waiting for SQS (last error: ", &log).await;
    assert!(starting.contains(" 503 Service Unavailable"), "{starting}");
    assert!(
        starting.contains(&s.output) && starting.contains("GetQueueAttributes"),
        "names the queue and the call: {starting}"
    );
    let metrics = http_get(&addr, "/metrics");
    assert!(metrics.contains("relay_processor_ready 0"), "{metrics}");
    // Several attempts later, still waiting, and still one warning.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(poll.0.try_wait().unwrap().is_none(), "the poller exited");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("is not answering; waiting for it").count(),
        1,
        "{text}"
    );

    proxy.set(Weather::Clear);
    let ready = health_until(&addr, "200 OK", &log).await;
    assert!(ready.ends_with("ok\n"), "{ready}");
    assert!(http_get(&addr, "/metrics").contains("relay_processor_ready 1"));
    put(
        &s,
        "raw/e/2026/11/21/22/1763800000000.json.zst",
        zstd::encode_all(sample_file(20).as_bytes(), 3).unwrap(),
    )
    .await;
    let started = Instant::now();
    while receive_all(&s.emu, &s.output).await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing relayed after SQS came back:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("reading the output queue's attributes: SQS answered"),
        "{text}"
    );
}

/// What no wait can fix stops the poller at once, with a message that
/// names the setting or the queue: a queue that does not exist (1), a
/// malformed queue URL (2, as for every setting that cannot work). A bound
/// on the wait is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_no_wait_can_fix_stop_the_poller_at_once() {
    let s = setup("startup-refused", false).await;
    let missing = format!(
        "{}/123456789012/{}",
        s.emu.endpoint,
        relay_shared::testing::unique_name("missing")
    );
    let mut cmd = processor(&s, &s.emu.endpoint, &["poll"]);
    cmd.env("RELAY_OUTPUT_QUEUE_URL", &missing);
    let (code, text) = exits(cmd);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("reading the output queue's attributes")
            && text.contains(&missing)
            && !text.contains("waiting for it"),
        "{text}"
    );

    let mut cmd = processor(&s, &s.emu.endpoint, &["poll"]);
    cmd.env("RELAY_NOTIFICATION_QUEUE_URL", &missing);
    let (code, text) = exits(cmd);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("reading the notification queue's attributes") && text.contains(&missing),
        "{text}"
    );

    for (name, url) in [
        ("RELAY_NOTIFICATION_QUEUE_URL", "relay-notifications"),
        (
            "RELAY_OUTPUT_QUEUE_URL",
            "sqs.eu-west-1.amazonaws.com/1/out",
        ),
    ] {
        let mut cmd = processor(&s, &s.emu.endpoint, &["poll"]);
        cmd.env(name, url);
        let (code, text) = exits(cmd);
        assert_eq!(code, Some(2), "{name}: {text}");
        assert!(
            text.contains(name) && text.contains("is not a queue URL"),
            "{text}"
        );
    }

    let proxy = TransportProxy::start(&s.emu.endpoint, 0).await;
    proxy.set(Weather::Refuse);
    let mut cmd = processor(&s, &proxy.endpoint(), &["poll"]);
    cmd.env("RELAY_STARTUP_WAIT_SECS", "2");
    let (code, text) = exits(cmd);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("reading the output queue's attributes: gave up after ")
            && text.contains("(RELAY_STARTUP_WAIT_SECS); last error: "),
        "{text}"
    );
}

/// `check` while AWS does not answer says so, per service, and skips the
/// other calls to it instead of waiting each one out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_aws_is_not_answering() {
    let s = setup("startup-check", false).await;
    let proxy = TransportProxy::start(&s.emu.endpoint, 0).await;
    proxy.set(Weather::Refuse);
    let mut cmd = processor(&s, &proxy.endpoint(), &["check"]);
    cmd.env("RELAY_CANARY_QUEUE_URL", &s.notifications);
    let (code, text) = exits(cmd);
    assert_eq!(code, Some(1), "{text}");
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(failed.len(), 2, "{text}");
    assert!(failed[0].contains("S3 is not answering"), "{text}");
    assert!(
        failed[1].contains("SQS is not answering")
            && failed[1].contains("the other SQS checks are skipped"),
        "{text}"
    );
    assert!(!text.contains("canary queue"), "{text}");
}
