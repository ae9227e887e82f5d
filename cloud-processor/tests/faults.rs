//! The fault suite: the real `edge-agent` and `cloud-processor poll` binaries
//! against the emulator, with faults injected into them and into the emulator,
//! and every record counted end to end against the README's guarantees.
//!
//! Needs the emulator (`scripts/test.sh` starts it) and the `edge-agent`
//! binary, which `cargo test --workspace` builds. Each test is bounded: it
//! fails with the processes' log tails rather than waiting forever.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use relay_shared::store::ObjectStore;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use cloud_processor::DoneMarker;
use common::{Setup, free_port, setup, setup_on};
use relay_shared::keys::KeyScheme;
use relay_shared::sample::SampleGen;
use relay_shared::store::{PutMode, PutOptions};
use relay_shared::testing::{Emulator, FaultProxy};
use tokio::time::sleep;

const SOURCE: &str = "edge-fault";
/// Small messages, so one file spans many chunks and batches.
const MAX_MESSAGE_BYTES: &str = "2048";
const FIELDS: &str = "id,seq,type";

/// moto is one Python process: the tests that share it take turns, so each
/// one's time bound measures its own faults and not its neighbours' load.
static SHARED_EMULATOR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------- processes

/// A child process, killed with SIGKILL when dropped so a failing test leaves
/// nothing running.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, name: String, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self { name, child, log }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{} exited ({status}); its log ends:\n{}",
                self.name,
                tail(&self.log)
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// The agent binary beside this test's own directory. It is not this
/// package's, so Cargo cannot hand it over; refuse a missing or stale one
/// (older than a source its dep-info lists) rather than test old code.
fn agent_binary() -> PathBuf {
    let how = "build it with `cargo build -p edge-agent`, or run `cargo test --workspace`, \
               which builds every binary first";
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("edge-agent");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified());
    let built = mtime(&bin).unwrap_or_else(|e| panic!("{}: {e}; {how}", bin.display()));
    // `cargo build` leaves the dep-info beside the binary; `cargo test` only
    // in deps/, under the crate's name and a hash.
    let deps_dir = bin.parent().unwrap().join("deps");
    let dep_info = std::iter::once(bin.with_extension("d"))
        .chain(
            std::fs::read_dir(&deps_dir)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy();
                    name.starts_with("edge_agent-") && name.ends_with(".d")
                }),
        )
        .filter(|p| p.exists())
        .max_by_key(|p| mtime(p).ok())
        .unwrap_or_else(|| panic!("no dep-info for {}; {how}", bin.display()));
    let deps = std::fs::read_to_string(&dep_info).unwrap();
    let sources = deps.split_once(": ").map_or("", |(_, s)| s);
    for source in sources.replace("\\ ", "\0").split_whitespace() {
        let source = PathBuf::from(source.replace('\0', " "));
        let changed = mtime(&source).unwrap_or(SystemTime::UNIX_EPOCH);
        assert!(
            built >= changed,
            "{} is older than {}; {how}",
            bin.display(),
            source.display()
        );
    }
    bin
}

/// Only loopback, dummy credentials, and no instance-metadata probing.
fn aws_env(cmd: &mut Command, endpoint: &str) {
    relay_shared::testing::loopback_aws_env(cmd, endpoint)
        .env("RELAY_S3_PATH_STYLE", "true")
        .env("RELAY_LOG_FORMAT", "json")
        .env("RUST_LOG", "info");
}

/// One relay under test: a bucket and queues, a watched directory, and the
/// endpoint its processes talk to (the emulator, or a proxy in front of it).
struct Relay {
    s: Setup,
    endpoint: String,
    work: tempfile::TempDir,
}

impl Drop for Relay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the logs of a failed run for whoever reads the failure.
            self.work.disable_cleanup(true);
            eprintln!("logs kept in {}", self.work.path().display());
        }
    }
}

impl Relay {
    fn new(s: Setup, endpoint: Option<String>) -> Self {
        let work = tempfile::tempdir().unwrap();
        std::fs::create_dir(work.path().join("in")).unwrap();
        Self {
            endpoint: endpoint.unwrap_or_else(|| s.emu.endpoint.clone()),
            s,
            work,
        }
    }

    fn dir(&self) -> PathBuf {
        self.work.path().join("in")
    }

    fn agent(&self, n: usize) -> Proc {
        self.agent_with(n, &[])
    }

    fn agent_with(&self, n: usize, env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(agent_binary());
        aws_env(&mut cmd, &self.endpoint);
        cmd.env("RELAY_WATCH_DIR", self.dir())
            .env("RELAY_BUCKET", self.s.bucket.name())
            .env("RELAY_SOURCE_ID", SOURCE)
            .env("RELAY_ON_SUCCESS", "delete")
            .env("RELAY_SETTLE_MS", "200")
            .env("RELAY_METRICS_ADDR", "off")
            // Canaries only where a test asks for them (see `count`).
            .env("RELAY_CANARY_SECS", "0")
            .env("RELAY_STATE_DIR", self.work.path().join("agent-state"))
            .envs(env.iter().copied());
        let log = self.work.path().join(format!("agent-{n}.log"));
        Proc::spawn(cmd, format!("edge-agent #{n}"), log)
    }

    /// A poller with a short lease (`ttl`), so a crashed one is taken over
    /// within seconds.
    fn processor_with_ttl(&self, n: usize, ttl_secs: u32) -> Proc {
        self.processor_with_timings(n, ttl_secs, 5)
    }

    /// A poller with the given lease TTL and notification visibility timeout.
    fn processor_with_timings(&self, n: usize, ttl_secs: u32, visibility_secs: u32) -> Proc {
        self.processor_with_env(n, ttl_secs, visibility_secs, &[])
    }

    fn processor_with_env(
        &self,
        n: usize,
        ttl_secs: u32,
        visibility_secs: u32,
        env: &[(&str, &str)],
    ) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloud-processor"));
        aws_env(&mut cmd, &self.endpoint);
        cmd.arg("poll")
            .env("RELAY_FIELDS", FIELDS)
            .env("RELAY_OUTPUT_QUEUE_URL", &self.s.output)
            .env("RELAY_NOTIFICATION_QUEUE_URL", &self.s.notifications)
            .env("RELAY_MAX_MESSAGE_BYTES", MAX_MESSAGE_BYTES)
            // Short, so a crashed or failed attempt is retried within seconds.
            .env("RELAY_VISIBILITY_TIMEOUT_SECS", visibility_secs.to_string())
            .env("RELAY_LEASE_TTL_SECS", ttl_secs.to_string())
            // Generous for an emulator on a busy CI machine: a spurious
            // timeout would resend a batch the test then counts twice.
            .env("RELAY_AWS_ATTEMPT_TIMEOUT_SECS", "5")
            .env("RELAY_AWS_OPERATION_TIMEOUT_SECS", "10")
            .env("RELAY_METRICS_ADDR", "off")
            .envs(env.iter().copied());
        let log = self.work.path().join(format!("processor-{n}.log"));
        Proc::spawn(cmd, format!("cloud-processor #{n}"), log)
    }

    /// A poller with a lease long enough that a slow emulator is not taken
    /// for a crash (a stalled owner's last batch may be sent twice).
    fn processor(&self, n: usize) -> Proc {
        self.processor_with_ttl(n, 30)
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        let mut entries: Vec<_> = std::fs::read_dir(self.work.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        entries.sort();
        for p in entries {
            out.push_str(&format!("--- {}\n{}\n", p.display(), tail(&p)));
        }
        out
    }

    async fn count(&self, prefix: &str) -> usize {
        let mut n = 0;
        let mut pages = self
            .s
            .emu
            .s3
            .list_objects_v2()
            .bucket(self.s.bucket.name())
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            // Data only: canaries and their markers are counted apart.
            n += page
                .unwrap()
                .contents()
                .iter()
                .filter(|o| !o.key().unwrap_or_default().contains(".canary.json"))
                .count();
        }
        n
    }

    async fn wait_count(&self, prefix: &str, n: usize, timeout: Duration) {
        let start = Instant::now();
        while self.count(prefix).await < n {
            assert!(
                start.elapsed() < timeout,
                "fewer than {n} objects under {prefix} after {timeout:?}\n{}",
                self.logs()
            );
            sleep(Duration::from_millis(100)).await;
        }
    }

    async fn queue_depth(&self) -> u64 {
        let out = self
            .s
            .emu
            .sqs
            .get_queue_attributes()
            .queue_url(&self.s.output)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .unwrap();
        out.attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

// ------------------------------------------------------------------ records

/// Writes files the way the container does, numbering records
/// `evt-0000000000` on, so the output can be checked record by record.
struct Writer {
    sample: SampleGen,
    next_ms: u64,
    records: u64,
    files: usize,
}

impl Writer {
    fn new() -> Self {
        Self {
            sample: SampleGen::new(11),
            next_ms: 1_763_800_000_000,
            records: 0,
            files: 0,
        }
    }

    /// A file's name and content: a comment preamble, then `records` records.
    fn content(&mut self, records: usize) -> (String, String) {
        let mut text = String::new();
        self.sample.preamble(&mut text);
        for _ in 0..records {
            self.sample.record(&mut text);
            text.push('\n');
        }
        self.records += records as u64;
        self.files += 1;
        let name = format!("{}.json", self.next_ms);
        self.next_ms += 1000;
        (name, text)
    }

    /// Writes `files` files of `records` records, `gap` apart, each in place:
    /// created, written and closed, as the container does.
    async fn burst(&mut self, dir: &Path, files: usize, records: usize, gap: Duration) {
        for _ in 0..files {
            let (name, text) = self.content(records);
            std::fs::write(dir.join(name), text).unwrap();
            sleep(gap).await;
        }
    }
}

/// What reached the output queue, per record id and per message.
#[derive(Default)]
struct Tally {
    records: HashMap<u64, u32>,
    chunks: BTreeMap<(String, u32), u32>,
    /// SQS message ids seen. A standard queue may hand one message out
    /// twice (moto does, to concurrent receivers); that is the queue's
    /// at-least-once delivery, not a second send, so it is not counted.
    message_ids: std::collections::HashSet<String>,
}

impl Tally {
    /// One receive round, four receivers at once (the queues hold thousands
    /// of small messages); returns how many messages came.
    async fn receive(&mut self, emu: &Emulator, queue: &str) -> usize {
        let mut receivers = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (sqs, queue) = (emu.sqs.clone(), queue.to_owned());
            receivers.spawn(async move { common::receive_batch(&sqs, &queue).await });
        }
        let mut n = 0;
        while let Some(messages) = receivers.join_next().await {
            for m in messages.unwrap() {
                n += 1;
                let (source_key, chunk) = (m.source_key().to_owned(), m.chunk());
                let message_id = m.message_id;
                if !self.message_ids.insert(message_id.clone()) {
                    eprintln!(
                        "the queue handed out message {message_id} ({source_key} chunk {chunk}) twice"
                    );
                    continue;
                }
                *self.chunks.entry((source_key, chunk)).or_default() += 1;
                for line in m.body.lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    let id = v["id"].as_str().unwrap();
                    let seq: u64 = id.trim_start_matches("evt-").parse().unwrap();
                    *self.records.entry(seq).or_default() += 1;
                }
            }
        }
        n
    }

    fn lost(&self, expected: u64) -> Vec<u64> {
        (0..expected)
            .filter(|i| !self.records.contains_key(i))
            .collect()
    }

    fn duplicated_records(&self) -> u64 {
        self.records.values().map(|&n| u64::from(n - 1)).sum()
    }

    fn duplicated_chunks(&self) -> Vec<(String, u32)> {
        self.chunks
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn unknown(&self, expected: u64) -> usize {
        self.records.keys().filter(|&&k| k >= expected).count()
    }
}

/// Reads the output queue until every record written has arrived and every
/// object has its done marker, then to the end; panics with the losses and
/// the processes' logs after `timeout`.
async fn collect(relay: &Relay, w: &Writer, timeout: Duration, procs: &mut [&mut Proc]) -> Tally {
    let start = Instant::now();
    let mut tally = Tally::default();
    let mut rounds = 0u32;
    loop {
        for p in procs.iter_mut() {
            p.assert_running();
        }
        tally.receive(&relay.s.emu, &relay.s.output).await;
        rounds += 1;
        if tally.lost(w.records).is_empty()
            && (rounds.is_multiple_of(5) || start.elapsed() > timeout / 2)
            && relay.count("state/done/").await >= w.files
        {
            break;
        }
        if start.elapsed() > timeout {
            let lost = tally.lost(w.records);
            panic!(
                "after {timeout:?}: {} of {} records missing (first: {:?}); \
                 {} done markers of {} files\n{}",
                lost.len(),
                w.records,
                &lost[..lost.len().min(5)],
                relay.count("state/done/").await,
                w.files,
                relay.logs()
            );
        }
    }
    // Anything sent twice arrives by now; read until the queue stays empty.
    let mut empty = 0;
    while empty < 2 {
        if tally.receive(&relay.s.emu, &relay.s.output).await == 0 {
            empty += 1;
        }
    }
    assert_eq!(tally.unknown(w.records), 0, "records nobody wrote");
    assert_eq!(
        relay.count("raw/").await,
        w.files,
        "each file stored once under its own key"
    );
    tally
}

fn assert_exactly_once(relay: &Relay, w: &Writer, tally: &Tally) {
    assert!(
        tally.lost(w.records).is_empty(),
        "records lost:\n{}",
        relay.logs()
    );
    assert_eq!(
        tally.duplicated_records(),
        0,
        "records delivered twice (chunks {:?})\n{}",
        tally.duplicated_chunks(),
        relay.logs()
    );
}

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
    assert!(series(&page, "relay_processor_canaries_total{outcome=\"sent\"}").unwrap() >= 2.0);
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
