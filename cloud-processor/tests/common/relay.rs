//! The end-to-end harness: the real `edge-agent` and `cloud-processor poll`
//! binaries against the emulator (or a proxy in front of it), files written
//! the way the container writes them, and every record counted on the way
//! out.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use relay_shared::sample::SampleGen;
use relay_shared::store::ObjectStore;
use relay_shared::testing::Emulator;
use tokio::time::sleep;

use super::Setup;

pub const SOURCE: &str = "edge-fault";
/// Small messages, so one file spans many chunks and batches.
pub const MAX_MESSAGE_BYTES: &str = "2048";
pub const FIELDS: &str = "id,seq,type";

// ---------------------------------------------------------------- processes

/// A child process, killed with SIGKILL when dropped so a failing test leaves
/// nothing running.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, name: String, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self { name, child, log }
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn assert_running(&mut self) {
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

pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

pub fn signal(pid: u32, sig: &str) {
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
pub fn agent_binary() -> PathBuf {
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
pub fn aws_env(cmd: &mut Command, endpoint: &str) {
    relay_shared::testing::loopback_aws_env(cmd, endpoint)
        .env("RELAY_S3_PATH_STYLE", "true")
        .env("RELAY_LOG_FORMAT", "json")
        .env("RUST_LOG", "info");
}

/// One relay under test: a bucket and queues, a watched directory, and the
/// endpoint its processes talk to (the emulator, or a proxy in front of it).
pub struct Relay {
    pub s: Setup,
    pub endpoint: String,
    pub work: tempfile::TempDir,
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
    pub fn new(s: Setup, endpoint: Option<String>) -> Self {
        let work = tempfile::tempdir().unwrap();
        std::fs::create_dir(work.path().join("in")).unwrap();
        Self {
            endpoint: endpoint.unwrap_or_else(|| s.emu.endpoint.clone()),
            s,
            work,
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.work.path().join("in")
    }

    pub fn agent(&self, n: usize) -> Proc {
        self.agent_with(n, &[])
    }

    pub fn agent_with(&self, n: usize, env: &[(&str, &str)]) -> Proc {
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
    pub fn processor_with_ttl(&self, n: usize, ttl_secs: u32) -> Proc {
        self.processor_with_timings(n, ttl_secs, 5)
    }

    /// A poller with the given lease TTL and notification visibility timeout.
    pub fn processor_with_timings(&self, n: usize, ttl_secs: u32, visibility_secs: u32) -> Proc {
        self.processor_with_env(n, ttl_secs, visibility_secs, &[])
    }

    pub fn processor_with_env(
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
    pub fn processor(&self, n: usize) -> Proc {
        self.processor_with_ttl(n, 30)
    }

    pub fn logs(&self) -> String {
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

    pub async fn count(&self, prefix: &str) -> usize {
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

    pub async fn wait_count(&self, prefix: &str, n: usize, timeout: Duration) {
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

    pub async fn queue_depth(&self) -> u64 {
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
pub struct Writer {
    pub sample: SampleGen,
    pub next_ms: u64,
    pub records: u64,
    pub files: usize,
    /// When each file written by [`Writer::burst`] was closed, by name.
    pub written: HashMap<String, SystemTime>,
}

impl Writer {
    pub fn new() -> Self {
        Self {
            sample: SampleGen::new(11),
            next_ms: 1_763_800_000_000,
            records: 0,
            files: 0,
            written: HashMap::new(),
        }
    }

    /// A file's name and content: a comment preamble, then `records` records.
    pub fn content(&mut self, records: usize) -> (String, String) {
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
    pub async fn burst(&mut self, dir: &Path, files: usize, records: usize, gap: Duration) {
        for _ in 0..files {
            let (name, text) = self.content(records);
            std::fs::write(dir.join(&name), text).unwrap();
            self.written.insert(name, SystemTime::now());
            sleep(gap).await;
        }
    }
}

/// What reached the output queue, per record id and per message.
#[derive(Default)]
pub struct Tally {
    pub records: HashMap<u64, u32>,
    pub chunks: BTreeMap<(String, u32), u32>,
    /// SQS message ids seen. A standard queue may hand one message out
    /// twice (moto does, to concurrent receivers); that is the queue's
    /// at-least-once delivery, not a second send, so it is not counted.
    pub message_ids: std::collections::HashSet<String>,
    /// Count FIFO messages by deduplication id: a second message with an
    /// id already seen is one SQS drops within its 5-minute window (moto
    /// drops it only while the first is still queued), so it is counted in
    /// `resent_same_id` and not as a second copy of its records.
    pub by_dedup_id: bool,
    pub dedup_ids: std::collections::HashSet<String>,
    pub resent_same_id: u64,
    /// Each message counted: its source key and when SQS took it (ms).
    pub arrivals: Vec<(String, u64)>,
}

impl Tally {
    /// A tally that counts FIFO messages by deduplication id.
    pub fn by_dedup_id() -> Self {
        Self {
            by_dedup_id: true,
            ..Self::default()
        }
    }

    /// One receive round, four receivers at once (the queues hold thousands
    /// of small messages); returns how many messages came.
    pub async fn receive(&mut self, emu: &Emulator, queue: &str) -> usize {
        let mut receivers = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (sqs, queue) = (emu.sqs.clone(), queue.to_owned());
            receivers.spawn(async move { super::receive_batch(&sqs, &queue).await });
        }
        let mut n = 0;
        while let Some(messages) = receivers.join_next().await {
            for m in messages.unwrap() {
                n += 1;
                self.count(m);
            }
        }
        n
    }

    /// Counts one message received.
    pub fn count(&mut self, m: super::Received) {
        let (source_key, chunk) = (m.source_key().to_owned(), m.chunk());
        let message_id = m.message_id.clone();
        if !self.message_ids.insert(message_id.clone()) {
            eprintln!(
                "the queue handed out message {message_id} ({source_key} chunk {chunk}) twice"
            );
            return;
        }
        if self.by_dedup_id {
            let id = m
                .dedup_id
                .clone()
                .expect("a FIFO message has a deduplication id");
            if !self.dedup_ids.insert(id) {
                self.resent_same_id += 1;
                return;
            }
        }
        self.arrivals
            .push((source_key.clone(), m.sent_ms.unwrap_or_default()));
        *self.chunks.entry((source_key, chunk)).or_default() += 1;
        for line in m.body.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = v["id"].as_str().unwrap();
            let seq: u64 = id.trim_start_matches("evt-").parse().unwrap();
            *self.records.entry(seq).or_default() += 1;
        }
    }

    pub fn lost(&self, expected: u64) -> Vec<u64> {
        (0..expected)
            .filter(|i| !self.records.contains_key(i))
            .collect()
    }

    pub fn duplicated_records(&self) -> u64 {
        self.records.values().map(|&n| u64::from(n - 1)).sum()
    }

    pub fn duplicated_chunks(&self) -> Vec<(String, u32)> {
        self.chunks
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn unknown(&self, expected: u64) -> usize {
        self.records.keys().filter(|&&k| k >= expected).count()
    }
}

/// Reads the output queue until every record written has arrived and every
/// object has its done marker, then to the end; panics with the losses and
/// the processes' logs after `timeout`.
pub async fn collect(
    relay: &Relay,
    w: &Writer,
    timeout: Duration,
    procs: &mut [&mut Proc],
) -> Tally {
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

pub fn assert_exactly_once(relay: &Relay, w: &Writer, tally: &Tally) {
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

/// Reads the output queue into `tally` until `done()` and the queue is
/// empty with no record below `expected()` missing.
pub async fn read_until(
    relay: &Relay,
    tally: &mut Tally,
    expected: impl Fn() -> u64,
    done: impl Fn() -> bool,
) {
    loop {
        let batch = super::receive_batch(&relay.s.emu.sqs, &relay.s.output).await;
        let empty = batch.is_empty();
        for m in batch {
            tally.count(m);
        }
        if empty && done() && tally.lost(expected()).is_empty() {
            return;
        }
    }
}
