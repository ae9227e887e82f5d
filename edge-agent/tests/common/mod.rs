//! Helpers for the agent's integration tests against the local emulator.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test-only helpers: a panic is a test failure.

use relay_shared::store::ObjectStore;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use edge_agent::Summary;
use edge_agent::config::{Args, Config};
use edge_agent::upload::RetryPolicy;
use relay_shared::s3::Bucket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SOURCE: &str = "edge-test";

/// Retries fast, so outage tests finish quickly once S3 is back.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
        permanent_delay: Duration::from_millis(400),
    }
}

pub fn config(dir: &Path, bucket: &str, extra: &[&str]) -> Config {
    let mut argv = vec![
        "edge-agent".to_owned(),
        "--watch-dir".into(),
        dir.display().to_string(),
        "--bucket".into(),
        bucket.into(),
        "--source-id".into(),
        SOURCE.into(),
        "--settle-ms".into(),
        "150".into(),
        "--metrics-addr".into(),
        "off".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    Config::resolve(Args::try_parse_from(argv).unwrap(), || None).unwrap()
}

/// An agent running in this process, stopped by [`RunningAgent::stop`].
pub struct RunningAgent {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Summary>,
}

pub fn start(config: Config, bucket: Bucket) -> RunningAgent {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        edge_agent::run(config, bucket, fast_retry(), async {
            let _ = stopped.await;
        })
        .await
        .unwrap()
    });
    RunningAgent { stop, task }
}

impl RunningAgent {
    pub async fn stop(self) -> Summary {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("agent stops within 30 s")
            .unwrap()
    }
}

/// Writes a file the way the container does: comment preamble, then JSON.
pub fn write_file(dir: &Path, name: &str, seed: usize) -> Vec<u8> {
    let body = content(seed);
    std::fs::write(dir.join(name), &body).unwrap();
    body
}

pub fn content(seed: usize) -> Vec<u8> {
    let mut s = format!("# collector v1 seed {seed}\n// started\n");
    for i in 0..(seed % 7 + 1) {
        s.push_str(&format!(
            "{{\"id\":{seed}{i},\"msg\":\"héllo ✓ {seed}\",\"n\":1.50e3,\"big\":12345678901234567890}}\n"
        ));
    }
    s.into_bytes()
}

/// Epoch-millis names, one second apart, so keys are distinct and sortable.
pub fn name(i: usize) -> String {
    format!("{}.json", 1_763_800_000_000u64 + i as u64 * 1000)
}

/// Every key under `prefix`.
pub async fn keys(bucket: &Bucket, prefix: &str) -> Vec<String> {
    bucket
        .list(prefix, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect()
}

/// Every object under `prefix` with its decompressed content.
pub async fn objects(bucket: &Bucket, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for key in keys(bucket, prefix).await {
        let (raw, _) = bucket.get_bytes(&key).await.unwrap();
        let plain = zstd::decode_all(&raw[..]).unwrap_or_else(|e| panic!("{key}: {e}"));
        out.insert(key, plain);
    }
    out
}

pub async fn count(bucket: &Bucket, prefix: &str) -> usize {
    keys(bucket, prefix).await.len()
}

/// Waits until `n` objects exist under `prefix`, or panics after `timeout`.
pub async fn wait_for_count(bucket: &Bucket, prefix: &str, n: usize, timeout: Duration) {
    let start = Instant::now();
    loop {
        let have = count(bucket, prefix).await;
        if have >= n {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "only {have} of {n} objects after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The key the agent must use for `name` (epoch millis).
pub fn key_for(name: &str) -> String {
    relay_shared::keys::KeyScheme::new("raw/", SOURCE, Default::default())
        .unwrap()
        .raw_key(name)
        .unwrap()
        .key
}

/// A child process killed when dropped, so a test that fails midway leaves
/// no agent running behind it.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// The agent binary, with JSON logs to `log`, for kill -9 and peer tests.
pub fn spawn_agent(dir: &Path, bucket: &str, log: &Path, extra: &[&str]) -> Child {
    agent_command(dir, bucket, log, extra).spawn().unwrap()
}

/// The agent binary's command line: JSON logs to `log` at INFO, no
/// metrics and 150 ms of settle time unless `extra` sets them.
pub fn agent_command(dir: &Path, bucket: &str, log: &Path, extra: &[&str]) -> Command {
    let log_file = std::fs::File::create(log).unwrap();
    let unless_set = |flag: &'static str, value: &'static str| {
        Some([flag, value])
            .filter(|_| !extra.contains(&flag))
            .into_iter()
            .flatten()
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-agent"));
    cmd.args([
        "--watch-dir",
        &dir.display().to_string(),
        "--bucket",
        bucket,
    ])
    .args(["--source-id", SOURCE])
    .args(unless_set("--metrics-addr", "off"))
    .args(unless_set("--settle-ms", "150"))
    .args(["--log-format", "json", "--s3-path-style", "true"])
    .args(extra)
    .env("RUST_LOG", "info")
    .stdout(Stdio::null())
    .stderr(log_file);
    cmd
}

/// The agent binary serving `/metrics` and `/healthz` on a free port.
pub struct Observed {
    pub child: Reaped,
    pub addr: String,
    pub log: PathBuf,
}

impl Observed {
    /// Spawns the agent on `dir` with `extra` flags, through `endpoint`
    /// (the emulator if `None`), and waits until it serves metrics.
    pub async fn spawn(
        dir: &Path,
        bucket: &str,
        log: &Path,
        endpoint: Option<&str>,
        extra: &[&str],
    ) -> Self {
        let addr = format!("127.0.0.1:{}", relay_shared::testing::free_port());
        let mut args = vec!["--metrics-addr", addr.as_str()];
        args.extend_from_slice(extra);
        let mut cmd = agent_command(dir, bucket, log, &args);
        if let Some(endpoint) = endpoint {
            relay_shared::testing::loopback_aws_env(&mut cmd, endpoint);
        }
        let child = Reaped(cmd.spawn().unwrap());
        relay_shared::testing::first_metrics(&addr, log).await;
        Self {
            child,
            addr,
            log: log.to_owned(),
        }
    }

    pub fn metrics(&self) -> String {
        relay_shared::testing::http_get(&self.addr, "/metrics")
    }

    pub fn health(&self) -> String {
        relay_shared::testing::http_get(&self.addr, "/healthz")
    }

    /// The value of one series (its full name with labels), 0 if absent.
    pub fn value(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// The sum of every series of a metric.
    pub fn sum(&self, metric: &str) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(metric) && !l.starts_with('#'))
            .filter(|l| l[metric.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn lines(&self) -> Vec<serde_json::Value> {
        log_lines(&self.log)
    }

    /// Log lines whose message starts with `start`.
    pub fn logged(&self, start: &str) -> Vec<serde_json::Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with(start)))
            .collect()
    }

    /// Stops the agent with SIGTERM; it must exit cleanly.
    pub fn stop(mut self) {
        sigterm(&self.child);
        assert!(self.child.wait().unwrap().success());
    }
}

/// Polls `done` every 50 ms; panics naming `what` after `within`.
pub async fn wait_until(done: impl Fn() -> bool, what: &str, within: Duration) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Log lines of a JSON-logging agent, parsed.
pub fn log_lines(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub fn count_messages(lines: &[serde_json::Value], message: &str) -> usize {
    lines.iter().filter(|l| l["message"] == message).count()
}

pub fn problems(lines: &[serde_json::Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["level"] == "ERROR" || l["level"] == "WARN")
        .map(|l| l.to_string())
        .collect()
}

pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}
