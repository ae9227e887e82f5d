//! The fault suite: the real `edge-agent` and `cloud-processor poll` binaries
//! against the emulator, with faults injected into them and into the emulator,
//! and every record counted end to end against the README's guarantees.
//!
//! Needs the emulator (`scripts/test.sh` starts it) and the `edge-agent`
//! binary, which `cargo test --workspace` builds. Each test is bounded: it
//! fails with the processes' log tails rather than waiting forever.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use relay_shared::store::ObjectStore;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use cloud_processor::DoneMarker;
use common::relay::*;
use common::{free_port, setup, setup_on};
use relay_shared::keys::KeyScheme;
use relay_shared::store::{PutMode, PutOptions};
use relay_shared::testing::{Emulator, FaultProxy};
use tokio::time::sleep;

/// moto is one Python process: the tests that share it take turns, so each
/// one's time bound measures its own faults and not its neighbours' load.
static SHARED_EMULATOR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ------------------------------------------------------------------- faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_burst_then_restarted_loses_and_duplicates_nothing() {
    let _turn = SHARED_EMULATOR.lock().await;
    let relay = Relay::new(setup("f-agent-kill", false).await, None);
    let mut processor = relay.processor(0);
    let agent = relay.agent(0);
    let mut w = Writer::new();
    w.burst(&relay.dir(), 20, 100, Duration::from_millis(20))
        .await;
    // The kill lands while uploads are under way and files are still settling.
    relay.wait_count("raw/", 3, Duration::from_secs(20)).await;
    w.burst(&relay.dir(), 10, 100, Duration::from_millis(0))
        .await;
    sleep(Duration::from_millis(250)).await;
    agent.kill9();
    let stored_before_restart = relay.count("raw/").await;
    w.burst(&relay.dir(), 10, 100, Duration::from_millis(0))
        .await;
    let mut agent = relay.agent(1);
    w.burst(&relay.dir(), 20, 100, Duration::from_millis(20))
        .await;
    let tally = collect(
        &relay,
        &w,
        Duration::from_secs(60),
        &mut [&mut processor, &mut agent],
    )
    .await;
    assert!(
        stored_before_restart < w.files,
        "the kill came after the burst ({stored_before_restart} of {} stored)",
        w.files
    );
    assert_exactly_once(&relay, &w, &tally);
}

/// A moto server of the test's own, so stopping it does not stall the other
/// tests. moto keeps its state in memory, so "stopped" is SIGSTOP: the
/// server answers nothing (connections hang) until SIGCONT, and the bucket
/// and queues survive, as they do when S3 or the network is out for a while.
struct PrivateMoto {
    dir: tempfile::TempDir,
    endpoint: String,
    pid: u32,
}

impl PrivateMoto {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/moto.sh");
        let out = Command::new(&script)
            .arg("start")
            .env("RELAY_MOTO_DIR", dir.path())
            .env_remove("RELAY_MOTO_PORT")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} start: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let endpoint = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("export AWS_ENDPOINT_URL="))
            .unwrap()
            .to_owned();
        let pid = std::fs::read_to_string(dir.path().join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Self { dir, endpoint, pid }
    }
}

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid.to_string()])
            .status();
        let _ = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/moto.sh"))
            .arg("stop")
            .env("RELAY_MOTO_DIR", self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_stopped_20_s_mid_burst_loses_nothing_and_resends_at_most_a_batch() {
    let moto = PrivateMoto::start();
    let emu = Emulator::connect_to(moto.endpoint.clone()).await;
    let relay = Relay::new(setup_on(emu, "f-stop", false).await, None);
    let mut processor = relay.processor(0);
    let mut agent = relay.agent(0);
    let mut w = Writer::new();
    w.burst(&relay.dir(), 15, 100, Duration::from_millis(50))
        .await;
    relay
        .wait_count("state/done/", 3, Duration::from_secs(30))
        .await;
    // Uploads, sends and marker writes are in flight when it stops.
    w.burst(&relay.dir(), 5, 100, Duration::from_millis(0))
        .await;
    sleep(Duration::from_millis(150)).await;
    signal(moto.pid, "STOP");
    let stopped = Instant::now();
    // The burst goes on while the emulator is away.
    while stopped.elapsed() < Duration::from_secs(20) {
        w.burst(&relay.dir(), 1, 100, Duration::from_secs(1)).await;
    }
    signal(moto.pid, "CONT");
    w.burst(&relay.dir(), 10, 100, Duration::from_millis(50))
        .await;
    let tally = collect(
        &relay,
        &w,
        Duration::from_secs(90),
        &mut [&mut processor, &mut agent],
    )
    .await;
    assert!(
        tally.lost(w.records).is_empty(),
        "records lost:\n{}",
        relay.logs()
    );
    // A send in flight when the emulator stopped times out (the processor's
    // AWS timeouts are shorter than the outage) and is sent again; the
    // emulator applies the first one when it resumes. That is the README's
    // lost-answer case: at most one batch of one object twice, on a
    // standard queue.
    let mut twice: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (key, chunk) in tally.duplicated_chunks() {
        twice.entry(key).or_default().push(chunk);
    }
    assert!(
        twice.values().all(|chunks| chunks.len() <= 10
            && chunks.iter().max().unwrap() - chunks.iter().min().unwrap() < 10),
        "more than one batch of an object twice: {twice:?}\n{}",
        relay.logs()
    );
}

/// One object straight into S3 (the agent is not under test), a processor
/// killed with SIGKILL once it has sent several batches, and a second one
/// that takes the object over when the lease expires. Batches pass a proxy
/// that delays them, so the kill lands mid-file however fast the machine.
async fn processor_killed_mid_file(fifo: bool) -> (Relay, Writer, Tally, DoneMarker) {
    let killed = processor_killed_mid_file_with(fifo, 5, 5).await;
    (killed.relay, killed.writer, killed.tally, killed.marker)
}

/// What [`processor_killed_mid_file_with`] leaves for a test to check.
struct Killed {
    relay: Relay,
    writer: Writer,
    tally: Tally,
    marker: DoneMarker,
    /// The lease's Last-Modified right after the kill (S3's clock, ms):
    /// the crashed processor's last progress record, written before any
    /// send it never recorded.
    last_record_ms: i64,
    /// The done marker's Last-Modified (S3's clock, ms).
    done_ms: i64,
}

async fn processor_killed_mid_file_with(fifo: bool, ttl_secs: u32, visibility_secs: u32) -> Killed {
    let _turn = SHARED_EMULATOR.lock().await;
    let s = setup(if fifo { "f-kill-fifo" } else { "f-kill" }, fifo).await;
    let proxy = FaultProxy::start(&s.emu.endpoint).await;
    proxy
        .faults
        .sqs_batch_delay_ms
        .store(150, Ordering::Relaxed);
    let relay = Relay::new(s, Some(proxy.endpoint()));
    let mut w = Writer::new();
    let (name, text) = w.content(6_000);
    let key = KeyScheme::new("raw/", SOURCE, Default::default())
        .unwrap()
        .raw_key(&name)
        .unwrap()
        .key;
    relay
        .s
        .bucket
        .put(
            &key,
            zstd::encode_all(text.as_bytes(), 3).unwrap(),
            &PutMode::Create,
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let first = relay.processor_with_timings(0, ttl_secs, visibility_secs);
    let start = Instant::now();
    while relay.queue_depth().await < 40 {
        assert!(
            relay.count("state/done/").await == 0,
            "the processor finished before it could be killed; make the object larger"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no batches sent within 60 s\n{}",
            relay.logs()
        );
        sleep(Duration::from_millis(20)).await;
    }
    first.kill9();
    assert_eq!(relay.count("state/done/").await, 0, "killed mid-file");
    let keys = cloud_processor::StateKeys::new("state/", "raw/", &key);
    let last_record_ms = relay
        .s
        .bucket
        .get_small(&keys.lease)
        .await
        .unwrap()
        .last_modified_ms
        .unwrap();
    let mut second = relay.processor_with_timings(1, ttl_secs, visibility_secs);
    proxy.faults.sqs_batch_delay_ms.store(0, Ordering::Relaxed);
    // moto deduplicates FIFO messages only against those still in the queue
    // (SQS remembers deleted ones for 5 minutes too), so nothing is read
    // until the object is done.
    let start = Instant::now();
    while relay.count("state/done/").await == 0 {
        second.assert_running();
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the object was not finished within 60 s of the kill\n{}",
            relay.logs()
        );
        sleep(Duration::from_millis(200)).await;
    }
    let tally = collect(&relay, &w, Duration::from_secs(90), &mut [&mut second]).await;
    let done = relay.s.bucket.get_small(&keys.done).await.unwrap();
    let marker: DoneMarker = serde_json::from_slice(&done.bytes).unwrap();
    Killed {
        relay,
        writer: w,
        tally,
        marker,
        last_record_ms,
        done_ms: done.last_modified_ms.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_killed_mid_file_resumes_with_at_most_one_batch_twice_into_standard() {
    let (relay, w, tally, marker) = processor_killed_mid_file(false).await;
    assert!(tally.lost(w.records).is_empty(), "records lost");
    assert!(
        marker.resumed_from_chunk > 0,
        "the second processor resumed rather than starting over: {marker:?}"
    );
    // Only the batch sent but not yet recorded can come twice: at most ten
    // messages, from the chunk the takeover resumed at.
    let twice = tally.duplicated_chunks();
    let resumed = marker.resumed_from_chunk;
    assert!(
        twice.len() <= 10
            && twice
                .iter()
                .all(|(_, c)| (resumed..resumed + 10).contains(c)),
        "chunks twice: {twice:?}, resumed from {resumed}\n{}",
        relay.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_killed_mid_file_sends_nothing_twice_into_fifo() {
    let (relay, w, tally, marker) = processor_killed_mid_file(true).await;
    assert!(marker.resumed_from_chunk > 0, "{marker:?}");
    assert_exactly_once(&relay, &w, &tally);
}

/// A default of the Terraform module (`infra/variables.tf`), in seconds.
fn module_default(variable: &str) -> u32 {
    let text = include_str!("../../infra/variables.tf");
    let block = text
        .split(&format!("variable \"{variable}\" {{"))
        .nth(1)
        .unwrap_or_else(|| panic!("infra/variables.tf has no variable {variable}"));
    let line = block
        .lines()
        .find_map(|l| l.trim().strip_prefix("default"))
        .unwrap_or_else(|| panic!("{variable} has no default"));
    line.trim_start_matches([' ', '='])
        .parse()
        .unwrap_or_else(|e| panic!("{variable}'s default {line:?}: {e}"))
}

/// The module's shipped timings, divided by this, run in seconds here (its
/// 60 s lease becomes 5 s, the shortest the processor accepts).
const SCALE: u32 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_with_the_modules_timings_scaled_down_is_retried_inside_the_fifo_window() {
    let visibility = module_default("notification_visibility_timeout_secs");
    let ttl = module_default("lease_ttl_secs");
    assert!(
        visibility >= module_default("lambda_timeout_secs"),
        "the module's visibility timeout must cover its Lambda timeout"
    );
    let (visibility, ttl) = (visibility.div_ceil(SCALE), ttl.div_ceil(SCALE));
    let window_ms = i64::from(300 / SCALE) * 1000;
    let killed = processor_killed_mid_file_with(true, ttl, visibility).await;
    assert!(killed.marker.resumed_from_chunk > 0, "{:?}", killed.marker);
    assert_exactly_once(&killed.relay, &killed.writer, &killed.tally);
    // The takeover began `elapsed_ms` before its done marker; the batch the
    // crashed processor may have sent unrecorded went out after its last
    // record. Both times are S3's, plus a second's grain each.
    let resend_ms = killed.done_ms + 1000 - killed.marker.elapsed_ms as i64;
    let gap_ms = resend_ms - killed.last_record_ms + 1000;
    eprintln!("resend at most {gap_ms} ms after the last record (scaled window {window_ms} ms)");
    assert!(
        gap_ms < window_ms,
        "with the module's timings scaled 1/{SCALE} (visibility {visibility} s, lease {ttl} s), \
         the resend came {gap_ms} ms after the crashed processor's last record: outside FIFO's \
         scaled window of {window_ms} ms\n{}",
        killed.relay.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_delivered_many_times_to_concurrent_processors_sends_once() {
    let _turn = SHARED_EMULATOR.lock().await;
    let relay = Relay::new(setup("f-repeat", false).await, None);
    let mut w = Writer::new();
    let scheme = KeyScheme::new("raw/", SOURCE, Default::default()).unwrap();
    for _ in 0..3 {
        let (name, text) = w.content(5_000);
        relay
            .s
            .bucket
            .put(
                &scheme.raw_key(&name).unwrap().key,
                zstd::encode_all(text.as_bytes(), 3).unwrap(),
                &PutMode::Create,
                &PutOptions::default(),
            )
            .await
            .unwrap();
    }
    // S3's own events, each queued eight times over, all at once.
    let mut events = Vec::new();
    while events.len() < 3 {
        events.push(common::notification(&relay.s).await);
    }
    for event in &events {
        for _ in 0..8 {
            relay
                .s
                .emu
                .sqs
                .send_message()
                .queue_url(&relay.s.notifications)
                .message_body(event)
                .send()
                .await
                .unwrap();
        }
    }
    let mut processors: Vec<Proc> = (0..4).map(|n| relay.processor(n)).collect();
    let mut running: Vec<&mut Proc> = processors.iter_mut().collect();
    let tally = collect(&relay, &w, Duration::from_secs(90), &mut running).await;
    assert_exactly_once(&relay, &w, &tally);
    assert!(tally.duplicated_chunks().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_slowdown_and_sqs_partial_batch_failures_lose_and_duplicate_nothing() {
    let _turn = SHARED_EMULATOR.lock().await;
    let s = setup("f-proxy", false).await;
    let proxy = FaultProxy::start(&s.emu.endpoint).await;
    proxy.faults.s3_slowdown_every.store(5, Ordering::Relaxed);
    proxy.faults.sqs_fail_every.store(2, Ordering::Relaxed);
    let relay = Relay::new(s, Some(proxy.endpoint()));
    let mut processor = relay.processor(0);
    let mut agent = relay.agent(0);
    let mut w = Writer::new();
    w.burst(&relay.dir(), 20, 200, Duration::from_millis(30))
        .await;
    let tally = collect(
        &relay,
        &w,
        Duration::from_secs(90),
        &mut [&mut processor, &mut agent],
    )
    .await;
    let slowdowns = proxy.faults.slowdowns.load(Ordering::Relaxed);
    let failed = proxy.faults.failed_entries.load(Ordering::Relaxed);
    assert!(
        slowdowns > 10 && failed > 10,
        "faults injected: {slowdowns} SlowDown, {failed} failed entries"
    );
    assert_exactly_once(&relay, &w, &tally);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_spaces_and_unicode_are_relayed_and_unsafe_ones_left_with_a_clear_error() {
    let _turn = SHARED_EMULATOR.lock().await;
    let relay = Relay::new(setup("f-names", false).await, None);
    let mut processor = relay.processor(0);
    let mut agent = relay.agent_with(
        0,
        &[("RELAY_TIMESTAMP_FORMAT", "cámara ✓ %Y-%m-%d %H-%M-%S")],
    );
    let mut w = Writer::new();
    for i in 0..3 {
        let (_, text) = w.content(50);
        let name = format!("cámara ✓ 2026-11-21 22-30-{i:02}.json");
        std::fs::write(relay.dir().join(name), text).unwrap();
    }
    // Names the key scheme refuses. Their record would be counted as one
    // nobody wrote, should it ever arrive.
    let refused = [
        "notes.json",
        "cámara ✓ 2026-11-21 22-30..json",
        "cámara ✓ 2026-13-45 99-99-99.json",
    ];
    for name in refused {
        std::fs::write(relay.dir().join(name), "{\"id\":\"evt-9999999999\"}\n").unwrap();
    }
    let tally = collect(
        &relay,
        &w,
        Duration::from_secs(60),
        &mut [&mut processor, &mut agent],
    )
    .await;
    assert_exactly_once(&relay, &w, &tally);
    let log = std::fs::read_to_string(relay.work.path().join("agent-0.log")).unwrap();
    for name in refused {
        assert!(relay.dir().join(name).exists(), "{name} was left in place");
        assert!(
            log.lines()
                .any(|l| l.contains(name) && (l.contains("WARN") || l.contains("ERROR"))),
            "the agent's log names {name}:\n{log}"
        );
    }
}

// ----------------------------------------------------------------- canaries

/// `/metrics` of a process, once it answers.
async fn scrape(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    for _ in 0..100 {
        if let Ok(out) = Command::new("curl").args(["-sf", &url]).output()
            && out.status.success()
        {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered");
}

/// The value of one series in a Prometheus text page.
fn series(page: &str, name_and_labels: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

/// Canary messages on `queue`: (source, seq, created_ms, SQS's sent time).
async fn canaries_on(emu: &Emulator, queue: &str) -> Vec<(String, u64, u64, u64)> {
    let mut out = Vec::new();
    let got = emu
        .sqs
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .message_system_attribute_names(
            aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp,
        )
        .send()
        .await
        .unwrap();
    for m in got.messages() {
        let v: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
        let sent: u64 = m
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp))
            .and_then(|t| t.parse().ok())
            .unwrap();
        out.push((
            v["source"].as_str().unwrap().to_owned(),
            v["seq"].as_u64().unwrap(),
            v["created_ms"].as_u64().unwrap(),
            sent,
        ));
        emu.sqs
            .delete_message()
            .queue_url(queue)
            .receipt_handle(m.receipt_handle().unwrap())
            .send()
            .await
            .unwrap();
    }
    out
}

/// Every metric the Grafana dashboard queries is one the running agent or
/// processor exposes (a histogram by its `_bucket`, `_sum` or `_count`).
fn dashboard_names_are_exposed(agent: &str, processor: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/grafana/relay.json");
    let board: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for panel in board["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let mut word = String::new();
            for ch in expr.chars().chain([' ']) {
                if ch.is_ascii_alphanumeric() || ch == '_' {
                    word.push(ch);
                    continue;
                }
                if (word.starts_with("relay_") || word.starts_with("process_")) && ch != '=' {
                    names.insert(std::mem::take(&mut word));
                }
                word.clear();
            }
        }
    }
    assert!(names.len() >= 20, "{names:?}");
    let exposed = |page: &str, name: &str| {
        page.lines().any(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
    };
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !exposed(agent, n) && !exposed(processor, n))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics nobody exposes: {missing:?}"
    );
}

/// With canaries every 2 s, they flow end to end to the canary queue and
/// never to the output queue, the lag metric is exposed per source, and
/// the consumers' records are exactly the data's. Stopping the processor
/// makes the canaries go missing from their queue while the agent keeps
/// sending them; when it is back, the ones that waited arrive with a lag
/// that shows the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_reach_their_own_queue_and_show_a_stopped_processor() {
    let _turn = SHARED_EMULATOR.lock().await;
    let relay = Relay::new(setup("f-canary", false).await, None);
    let canary_queue = relay
        .s
        .emu
        .sqs
        .create_queue()
        .queue_name(relay_shared::testing::unique_name("canary"))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let (agent_port, processor_port) = (free_port(), free_port());
    let agent_metrics = format!("127.0.0.1:{agent_port}");
    let mut agent = relay.agent_with(
        0,
        &[
            ("RELAY_CANARY_SECS", "2"),
            ("RELAY_METRICS_ADDR", &agent_metrics),
        ],
    );
    let processor_metrics = format!("127.0.0.1:{processor_port}");
    let canary_env = [
        ("RELAY_CANARY_QUEUE_URL", canary_queue.as_str()),
        ("RELAY_METRICS_ADDR", processor_metrics.as_str()),
    ];
    let mut processor = relay.processor_with_env(0, 30, 5, &canary_env);
    let mut w = Writer::new();
    w.burst(&relay.dir(), 5, 50, Duration::from_millis(50))
        .await;

    // Canaries arrive, from this source, in order.
    let mut seen = Vec::new();
    let start = Instant::now();
    while seen.len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no canaries
{}",
            relay.logs()
        );
        seen.extend(canaries_on(&relay.s.emu, &canary_queue).await);
        agent.assert_running();
        processor.assert_running();
    }
    assert!(seen.iter().all(|c| c.0 == SOURCE), "{seen:?}");
    let page = scrape(processor_port).await;
    let lag = series(
        &page,
        &format!("relay_canary_lag_seconds{{source=\"{SOURCE}\"}}"),
    )
    .unwrap_or_else(|| panic!("no lag series:\n{page}"));
    assert!((0.0..30.0).contains(&lag), "lag {lag}");
    // SQS has a canary's message before the processor counts it (the done
    // marker comes first): wait for the count to catch up.
    let counted = Instant::now();
    let mut page = page;
    while series(&page, "relay_processor_canaries_total{outcome=\"sent\"}").unwrap_or(0.0) < 2.0 {
        assert!(
            counted.elapsed() < Duration::from_secs(10),
            "canaries sent but not counted:\n{page}"
        );
        sleep(Duration::from_millis(200)).await;
        page = scrape(processor_port).await;
    }
    dashboard_names_are_exposed(&scrape(agent_port).await, &page);

    // The consumers' records are the data's, exactly: no canary among them.
    let tally = collect(
        &relay,
        &w,
        Duration::from_secs(60),
        &mut [&mut processor, &mut agent],
    )
    .await;
    assert_exactly_once(&relay, &w, &tally);

    // The processor stops: canaries go missing from their queue, while the
    // agent keeps storing them.
    processor.kill9();
    sleep(Duration::from_secs(1)).await;
    canaries_on(&relay.s.emu, &canary_queue).await;
    let sent_before = series(
        &scrape(agent_port).await,
        "relay_agent_canaries_total{outcome=\"sent\"}",
    )
    .unwrap();
    let stopped_at = SystemTime::now();
    sleep(Duration::from_secs(7)).await;
    assert!(
        canaries_on(&relay.s.emu, &canary_queue).await.is_empty(),
        "canaries arrived with the processor stopped"
    );
    let sent_after = series(
        &scrape(agent_port).await,
        "relay_agent_canaries_total{outcome=\"sent\"}",
    )
    .unwrap();
    assert!(
        sent_after >= sent_before + 2.0,
        "{sent_before} -> {sent_after}"
    );

    // Back: the canaries that waited arrive, the oldest with the outage as
    // its lag.
    let mut processor = relay.processor_with_env(1, 30, 5, &canary_env);
    let outage_ms = stopped_at.elapsed().unwrap().as_millis() as u64;
    let mut late = Vec::new();
    let start = Instant::now();
    while late.len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "canaries did not resume\n{}",
            relay.logs()
        );
        late.extend(canaries_on(&relay.s.emu, &canary_queue).await);
        processor.assert_running();
    }
    let worst = late.iter().map(|c| c.3.saturating_sub(c.2)).max().unwrap();
    // The staleness gauge follows the newest canary, whatever the order
    // (set just after the done marker, so a moment after SQS has it).
    let newest = late.iter().map(|c| c.2).max().unwrap() as f64 / 1000.0;
    let made = || async {
        let name = format!("relay_canary_last_created_timestamp_seconds{{source=\"{SOURCE}\"}}");
        series(&scrape(processor_port).await, &name).unwrap_or(0.0)
    };
    let start = Instant::now();
    while made().await < newest - 0.001 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} < {newest}",
            made().await
        );
        sleep(Duration::from_millis(200)).await;
    }
    assert!(
        worst + 2500 >= outage_ms,
        "worst lag {worst} ms for an outage of {outage_ms} ms: {late:?}"
    );
}
