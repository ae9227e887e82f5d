//! The agent's one owning task: it turns watch events and ticks into
//! uploads, at most `concurrency` at a time, and acts on each outcome
//! (delete, move or record the file only once S3 is known to hold it).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use relay_shared::store::ObjectStore;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, error, info, warn};

use crate::config::{Config, OnSuccess};
use crate::lease::{self, Leases, Mode, Probe};
use crate::ledger::Ledger;
use crate::tracker::{FileStat, Judge, Signal, Tracker};
use crate::upload::{self, Job, Opened, Outcome, RetryPolicy, UploadError};
use crate::watch::{self, WatchMsg};
use crate::{AgentError, Summary, metrics};

mod canary;
mod observe;

/// Runs until `shutdown` resolves, then stops taking new files and gives
/// in-flight uploads `config.shutdown_timeout` to finish.
pub async fn run<S: ObjectStore>(
    config: Config,
    sink: S,
    retry: RetryPolicy,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, AgentError> {
    let ledger = match config.on_success {
        OnSuccess::Keep => Some(
            Ledger::open(&config.state_dir, &config.bucket, &config.watch_dir).map_err(
                |source| AgentError::Ledger {
                    dir: config.state_dir.clone(),
                    source,
                },
            )?,
        ),
        _ => None,
    };
    let (tx, rx) = mpsc::channel(4096);
    // Watch before scanning, so a file created during the scan is not missed.
    let watcher = watch::start(&config.watch_dir, config.recursive, tx).map_err(|source| {
        AgentError::Watch {
            dir: config.watch_dir.clone(),
            source,
        }
    })?;
    let leases = finish_mode(&config);
    let mut agent = Agent::new(config, sink, retry, ledger, leases);
    let root = agent.config.watch_dir.clone();
    agent.scan(&root);
    info!(
        dir = %root.display(),
        backlog = agent.tracker.len(),
        bucket = %agent.config.bucket,
        prefix = %agent.config.keys.source_prefix(),
        "watching"
    );
    let mut uploads = JoinSet::new();
    agent.follow(rx, &mut uploads, shutdown).await;
    drop(watcher);
    agent.drain(uploads).await;
    agent.log_stopped();
    Ok(agent.summary)
}

/// Decides, once, how files are judged finished: by read leases where the
/// kernel grants them, else by settle time alone. Logs and publishes it.
fn finish_mode(config: &Config) -> Option<Leases> {
    let dir = &config.watch_dir;
    let (leases, mode) = match Leases::enable() {
        Ok(leases) => (
            Some(leases),
            lease::probe_dir(&leases, dir, upload::open_for_probe),
        ),
        Err(e) => (
            None,
            Mode::SettleOnly {
                reason: format!("SIGIO cannot be handled ({e}), so no lease may be taken"),
            },
        ),
    };
    let waits = config.waits();
    match &mode {
        Mode::Leases { tried } => info!(
            dir = %dir.display(),
            tried = tried.as_deref().unwrap_or("no file yet"),
            quiet_ms = waits.quiet.as_millis() as u64,
            "finished files are judged by read leases: a file is relayed once no process holds it open for writing and it has been unchanged for the quiet period"
        ),
        Mode::SettleOnly { reason } => warn!(
            dir = %dir.display(),
            %reason,
            settle_ms = waits.settle.as_millis() as u64,
            "read leases are refused in the watch directory, so finished files are judged by settle time alone: a writer that pauses for longer than it may have its file stored short. Grant CAP_LEASE (the packaged unit does) or run the agent as the files' owner"
        ),
    }
    metrics::set_finish_mode(&mode);
    match mode {
        Mode::Leases { .. } => leases,
        Mode::SettleOnly { .. } => None,
    }
}

/// Upload tasks in flight; each returns its job, how it ended, its retries
/// and its time.
type Uploads = JoinSet<(Job, Outcome, u32, Duration)>;

struct Agent<S> {
    config: Config,
    sink: S,
    retry: RetryPolicy,
    /// Turns true at shutdown: uploads waiting to retry stop at once.
    stopping: tokio::sync::watch::Sender<bool>,
    tracker: Tracker,
    ready: VecDeque<Job>,
    /// Paths in `ready`.
    queued: HashSet<PathBuf>,
    /// Paths being uploaded, with their mtime for the oldest-file gauge.
    inflight: HashMap<PathBuf, SystemTime>,
    /// Files kept out of the tracker until they change (or, if set aside,
    /// until their retry time), with the stat they had. Never deleted.
    held_back: HashMap<PathBuf, HeldBack>,
    /// Symlinks and special files already reported: never opened.
    special: HashSet<PathBuf>,
    ledger: Option<Ledger>,
    /// The right to probe leases; `None` where they are refused.
    leases: Option<Leases>,
    /// Refusal kinds already logged: one WARN each.
    refusals_logged: HashSet<&'static str>,
    summary: Summary,
    /// Canaries made since start-up.
    canary_seq: u64,
}

type Done = Result<(Job, Outcome, u32, Duration), tokio::task::JoinError>;

/// A file kept out of the upload flow, with the stat it had then.
#[derive(Debug, Clone)]
struct HeldBack {
    stat: FileStat,
    /// `None`: its name gives no key, or its key is in S3 unverified; it
    /// waits for a change. `Some`: it failed for a reason retrying soon
    /// will not fix, and waits outside the upload slots until then.
    set_aside: Option<SetAside>,
}

#[derive(Debug, Clone)]
struct SetAside {
    retry_at: Instant,
    reason: String,
}

impl<S: ObjectStore> Agent<S> {
    fn new(
        config: Config,
        sink: S,
        retry: RetryPolicy,
        ledger: Option<Ledger>,
        leases: Option<Leases>,
    ) -> Self {
        let judge = if leases.is_some() {
            Judge::Lease
        } else {
            Judge::Settle
        };
        Self {
            tracker: Tracker::new(judge, config.waits()),
            leases,
            refusals_logged: HashSet::new(),
            ready: VecDeque::new(),
            queued: HashSet::new(),
            inflight: HashMap::new(),
            held_back: HashMap::new(),
            special: HashSet::new(),
            ledger,
            summary: Summary::default(),
            canary_seq: 0,
            stopping: tokio::sync::watch::Sender::new(false),
            sink,
            retry,
            config,
        }
    }

    /// Follows the directory until `shutdown`: keeps the upload slots full
    /// and acts on watch events, finished uploads, ticks and canaries.
    async fn follow(
        &mut self,
        mut rx: mpsc::Receiver<WatchMsg>,
        uploads: &mut Uploads,
        shutdown: impl Future<Output = ()>,
    ) {
        let waits = self.config.waits();
        let tick_every = (waits.quiet.min(waits.settle) / 4)
            .clamp(Duration::from_millis(20), Duration::from_millis(250));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let canary_every = self.config.canary;
        // The first canary after one interval: a start-up is not a heartbeat.
        let canary_period = canary_every.unwrap_or(Duration::from_secs(3600));
        let mut canary =
            tokio::time::interval_at(tokio::time::Instant::now() + canary_period, canary_period);
        canary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if canary_every.is_some() {
            self.clear_canaries();
        }
        tokio::pin!(shutdown);
        loop {
            self.fill_slots(uploads);
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(done) = uploads.join_next(), if !uploads.is_empty() => self.finish(done),
                Some(msg) = rx.recv() => self.handle(msg),
                _ = tick.tick() => self.tick(),
                _ = canary.tick(), if canary_every.is_some() => self.canary(),
            }
        }
    }

    /// Starts ready uploads while slots are free.
    fn fill_slots(&mut self, uploads: &mut Uploads) {
        while uploads.len() < self.config.concurrency {
            let Some(job) = self.ready.pop_front() else {
                break;
            };
            self.queued.remove(&job.path);
            self.spawn(uploads, job);
        }
    }

    /// At shutdown: uploads waiting out a retry backoff stop now, and
    /// transfers get until the shutdown deadline to finish.
    async fn drain(&mut self, mut uploads: Uploads) {
        self.stopping.send_replace(true);
        self.sync_ledger();
        info!(
            in_flight = uploads.len(),
            timeout_secs = self.config.shutdown_timeout.as_secs(),
            "shutting down"
        );
        let deadline = tokio::time::sleep(self.config.shutdown_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => {
                    self.summary.unfinished += uploads.len();
                    warn!(unfinished = uploads.len(), "shutdown deadline reached; unfinished files are relayed on the next start");
                    uploads.abort_all();
                    break;
                }
                done = uploads.join_next() => match done {
                    Some(done) => self.finish(done),
                    None => break,
                },
            }
        }
        self.sync_ledger();
    }

    fn log_stopped(&self) {
        let s = &self.summary;
        info!(
            uploaded = s.uploaded,
            duplicates = s.duplicates,
            conflicts = s.conflicts,
            unverified = s.unverified,
            gone = s.gone,
            rejected = s.rejected,
            set_aside = s.set_aside,
            unfinished = s.unfinished,
            "stopped"
        );
    }

    fn spawn(&mut self, uploads: &mut JoinSet<(Job, Outcome, u32, Duration)>, job: Job) {
        self.inflight.insert(job.path.clone(), job.stat.mtime);
        let sink = self.sink.clone();
        let retry = self.retry.clone();
        let (level, part) = (
            self.config.zstd_level,
            self.config.multipart_threshold_bytes,
        );
        let (bucket, prefix) = (self.config.bucket.clone(), self.config.keys.source_prefix());
        let stopping = self.stopping.subscribe();
        let span = tracing::info_span!("file", path = %job.path.display(), key = %job.key);
        uploads.spawn(
            async move {
                let started = Instant::now();
                let on_error = |e: &UploadError, attempt: u32, delay: Duration| {
                    let kind = e.kind();
                    ::metrics::counter!(metrics::RETRIES, "kind" => kind).increment(1);
                    ::metrics::counter!(metrics::ERRORS, "kind" => kind).increment(1);
                    if e.is_transient() {
                        warn!(error = %e, kind, attempt, retry_in_ms = delay.as_millis() as u64, "upload failed; retrying");
                    } else {
                        let fix = upload::fix_hint(kind, &bucket, &prefix);
                        error!(error = %e, kind, attempt, retry_in_secs = delay.as_secs(), %fix, "upload failed and needs attention; the file is set aside and retried later");
                        metrics::set_permanent_failure(Some(format!("{e} ({fix})")));
                    }
                };
                let (outcome, retries) =
                    upload::upload_with_retry(&sink, &job, level, part, &retry, stopping, on_error).await;
                (job, outcome, retries, started.elapsed())
            }
            .instrument(span),
        );
    }

    fn finish(&mut self, done: Done) {
        let (job, outcome, retries, elapsed) = match done {
            Ok(v) => v,
            Err(e) => {
                // Upload tasks do not panic by design; if one did, its file is
                // still on disk and the next rescan or restart relays it.
                error!(error = %e, "an upload task failed");
                return;
            }
        };
        self.inflight.remove(&job.path);
        if job.meta.canary {
            return self.finish_canary(&job, &outcome);
        }
        let span = tracing::info_span!("file", path = %job.path.display(), key = %job.key);
        let _enter = span.enter();
        match outcome {
            Outcome::Uploaded { .. } | Outcome::Duplicate | Outcome::Conflict { .. } => {
                self.stored(&job, outcome, retries, elapsed);
            }
            Outcome::Unverified => {
                self.summary.unverified += 1;
                ::metrics::counter!(metrics::FILES, "outcome" => "unverified").increment(1);
                warn!(
                    "S3 has an object under this name with no content hash (an older agent stored it), so it cannot be told whether it holds these bytes; the file stays on disk and is not offered again until it changes"
                );
                self.hold_back(&job.path, job.stat, None);
            }
            Outcome::NotRegular => {
                if self.special.insert(job.path.clone()) {
                    warn!(
                        "not relayed: the name now points to a symlink or special file, which is never opened"
                    );
                }
            }
            Outcome::Failed { error, kind } => self.set_aside(&job, error, kind),
            Outcome::Interrupted => {
                self.summary.unfinished += 1;
                info!(
                    "shutdown interrupted the retry backoff; the file is relayed on the next start"
                );
            }
            Outcome::Gone => {
                self.summary.gone += 1;
                ::metrics::counter!(metrics::FILES, "outcome" => "gone").increment(1);
                debug!("file vanished before upload; a peer agent handled it");
            }
            Outcome::Changed => {
                warn!("file changed after it looked finished; waiting for it to settle again");
                self.observe(&job.path, Signal::Discovered);
            }
            Outcome::Open => {
                info!("a writer opened the file again before it was read; waiting for it to close");
                self.observe(&job.path, Signal::Discovered);
            }
        }
    }

    /// S3 is known to hold the file's exact bytes (stored now, found under
    /// its key, or stored under its conflict key): count it, then delete,
    /// move or record it.
    fn stored(&mut self, job: &Job, outcome: Outcome, retries: u32, elapsed: Duration) {
        metrics::set_permanent_failure(None);
        match outcome {
            Outcome::Uploaded {
                compressed_bytes,
                parts,
            } => {
                self.summary.uploaded += 1;
                ::metrics::counter!(metrics::FILES, "outcome" => "uploaded").increment(1);
                ::metrics::counter!(metrics::BYTES_IN).increment(job.stat.size);
                ::metrics::counter!(metrics::BYTES_OUT).increment(compressed_bytes);
                ::metrics::histogram!(metrics::UPLOAD_SECONDS).record(elapsed.as_secs_f64());
                if compressed_bytes > 0 {
                    ::metrics::histogram!(metrics::COMPRESSION_RATIO)
                        .record(job.stat.size as f64 / compressed_bytes as f64);
                }
                info!(
                    bytes = job.stat.size,
                    compressed_bytes,
                    parts,
                    retries,
                    elapsed_ms = elapsed.as_millis() as u64,
                    "uploaded"
                );
            }
            Outcome::Duplicate => {
                self.summary.duplicates += 1;
                ::metrics::counter!(metrics::FILES, "outcome" => "duplicate").increment(1);
                info!(
                    retries,
                    "already in S3 with exactly these bytes (412, content hash checked); counted as a duplicate"
                );
            }
            Outcome::Conflict {
                key,
                compressed_bytes,
            } => {
                self.summary.conflicts += 1;
                ::metrics::counter!(metrics::FILES, "outcome" => "conflict").increment(1);
                ::metrics::counter!(metrics::BYTES_IN).increment(job.stat.size);
                ::metrics::counter!(metrics::BYTES_OUT).increment(compressed_bytes);
                warn!(conflict_key = %key, retries,
                    "S3 holds other bytes under this name (it was used again): this file is stored next to it, under the conflict key, and both are relayed");
            }
            _ => return,
        }
        self.after_success(job);
    }

    /// A failure retrying soon will not fix: the file waits outside the
    /// upload slots, named on `/healthz`, and is tried again later.
    fn set_aside(&mut self, job: &Job, error: String, kind: &'static str) {
        self.summary.set_aside += 1;
        ::metrics::counter!(metrics::FILES, "outcome" => "set_aside").increment(1);
        let delay = self.retry.permanent_delay;
        error!(%error, kind, retry_in_secs = delay.as_secs(),
            "set aside: retrying soon will not help; other files keep flowing and this one is tried again later");
        let set_aside = SetAside {
            retry_at: Instant::now() + delay,
            reason: error,
        };
        self.hold_back(&job.path, job.stat, Some(set_aside));
    }

    /// Keeps a file out of the upload flow until it changes, or, if set
    /// aside, until its retry time.
    fn hold_back(&mut self, path: &Path, stat: FileStat, set_aside: Option<SetAside>) {
        let publish = set_aside.is_some();
        self.held_back
            .insert(path.to_owned(), HeldBack { stat, set_aside });
        if publish {
            self.publish_set_aside();
        }
    }

    /// Lets a held-back file be observed again.
    fn release(&mut self, path: &Path) {
        if let Some(held) = self.held_back.remove(path)
            && held.set_aside.is_some()
        {
            self.publish_set_aside();
        }
    }

    /// Tells `/healthz` and the metrics which files are set aside, and why.
    fn publish_set_aside(&self) {
        let mut named: Vec<String> = self
            .held_back
            .iter()
            .filter_map(|(p, h)| Some(format!("{}: {}", p.display(), h.set_aside.as_ref()?.reason)))
            .collect();
        named.sort();
        ::metrics::gauge!(metrics::SET_ASIDE).set(named.len() as f64);
        metrics::name_set_aside(named);
    }

    fn after_success(&mut self, job: &Job) {
        let result = match &self.config.on_success {
            OnSuccess::Keep => match &mut self.ledger {
                Some(ledger) => ledger.record(&job.rel, job.stat).map(|()| None),
                None => Ok(None),
            },
            OnSuccess::Delete => unless_reopened(job, |path| std::fs::remove_file(path)),
            OnSuccess::Move(dir) => {
                let target = dir.join(&job.rel);
                unless_reopened(job, |path| {
                    target
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|()| std::fs::rename(path, &target))
                })
            }
        };
        match result {
            Ok(None) => {}
            Ok(Some(why)) => {
                warn!(path = %job.path.display(), why, action = %self.config.on_success,
                    "S3 has the file as it was read, but it is left in place: it is followed again, and relayed again if it changed");
                self.observe(&job.path, Signal::Discovered);
            }
            // A peer agent already deleted or moved it: S3 has the file either way.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                ::metrics::counter!(metrics::ERRORS, "kind" => "after_success").increment(1);
                error!(path = %job.path.display(), error = %e, action = %self.config.on_success,
                    "S3 has the file, but the after-success action failed; it will be seen as a duplicate later");
            }
        }
    }
}

/// Deletes or moves the file (`act`) only while it is still the file S3
/// holds: the size and mtime it was read with and, where it was judged by
/// a lease, with no process holding it open for writing. The lease is held
/// while `act` runs, so a writer cannot open the file in between and lose
/// what it writes to a deleted inode. `Some(why)` when the file was left.
fn unless_reopened(
    job: &Job,
    act: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<Option<&'static str>> {
    let file = match upload::open_regular(&job.path)? {
        Opened::Ready(f) => f,
        Opened::Gone => return Ok(None),
        Opened::NotRegular => return Ok(Some("the name no longer holds a regular file")),
    };
    if FileStat::of(&file.metadata()?) != job.stat {
        return Ok(Some("it changed after it was read"));
    }
    let Some(leases) = job.lease else {
        return act(&job.path).map(|()| None);
    };
    match leases.while_closed(&file, || act(&job.path)) {
        (Probe::Closed, Some(done)) => done.map(|()| None),
        (Probe::OpenForWrite, _) => Ok(Some("a writer opened it again")),
        // Refused now though granted before (its owner changed): followed
        // again, it is judged by settle time and then removed.
        (_, _) => Ok(Some("its read lease was refused this time")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;
    use relay_shared::testing::{Fault, MemStore};

    fn store() -> MemStore {
        MemStore::new("b")
    }

    /// A delete-mode agent on `dir`, with `extra` flags.
    fn config(dir: &Path, extra: &[&str]) -> Config {
        let mut args = vec![
            "edge-agent",
            "--watch-dir",
            dir.to_str().unwrap(),
            "--bucket",
            "b",
            "--source-id",
            "s",
            "--settle-ms",
            "50",
            "--on-success",
            "delete",
            "--metrics-addr",
            "off",
        ];
        args.extend_from_slice(extra);
        Config::resolve(crate::config::Args::parse_from(args), || None).unwrap()
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            permanent_delay: Duration::from_secs(3600),
        }
    }

    /// An agent over `s3`, with `files` written into `dir` and judged
    /// finished, without the watcher and the settle time.
    fn agent_with(dir: &Path, s3: &MemStore, files: &[(&str, &[u8])]) -> Agent<MemStore> {
        let mut agent = Agent::new(config(dir, &[]), s3.clone(), fast(), None, None);
        for (name, content) in files {
            let path = dir.join(name);
            std::fs::write(&path, content).unwrap();
            let stat = FileStat::of(&std::fs::metadata(&path).unwrap());
            agent.enqueue(path, stat, Judge::Settle);
        }
        agent
    }

    /// A canary goes the data's way: under the source's prefix, named for
    /// its creation time, marked in its metadata, one record with the
    /// source, a sequence number and the time. Its file is removed once
    /// stored, and it is not counted as data.
    #[tokio::test]
    async fn canaries_take_the_datas_path_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let s3 = store();
        let c = config(dir.path(), &["--canary-secs", "1"]);
        assert_eq!(c.canary, Some(Duration::from_secs(1)));
        let mut agent = Agent::new(c, s3.clone(), fast(), None, None);
        let before = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        agent.canary();
        // Canaries are named by the millisecond: one per interval.
        std::thread::sleep(Duration::from_millis(5));
        agent.canary();
        drain(&mut agent).await;
        let keys = s3.keys();
        assert_eq!(keys.len(), 2, "{keys:?}");
        for (n, key) in keys.iter().enumerate() {
            let canary = relay_shared::keys::canary_of("raw/", key).unwrap();
            assert_eq!(canary.source_id, "s");
            assert!(canary.created_ms >= before, "{key}");
            let record: serde_json::Value = serde_json::from_slice(&decoded(&s3, key)).unwrap();
            assert_eq!(record["source"], "s");
            assert_eq!(record["created_ms"], canary.created_ms);
            assert_eq!(record["seq"], n as u64 + 1, "{record}");
            let head = s3.head(key).await.unwrap().unwrap();
            assert_eq!(head.metadata.get("canary").map(String::as_str), Some("1"));
        }
        let left: Vec<_> = std::fs::read_dir(agent.canary_dir()).unwrap().collect();
        assert!(left.is_empty(), "canary files left: {left:?}");
        assert_eq!(agent.summary.uploaded, 0, "canaries are not data");
    }

    #[test]
    fn canaries_are_on_by_default_and_zero_turns_them_off() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            config(dir.path(), &[]).canary,
            Some(Duration::from_secs(60))
        );
        assert_eq!(config(dir.path(), &["--canary-secs", "0"]).canary, None);
    }

    /// Uploads everything ready and acts on each outcome, as `run` does.
    async fn drain(agent: &mut Agent<MemStore>) {
        let mut uploads = JoinSet::new();
        loop {
            while let Some(job) = agent.ready.pop_front() {
                agent.queued.remove(&job.path);
                agent.spawn(&mut uploads, job);
            }
            match uploads.join_next().await {
                Some(done) => agent.finish(done),
                None => break,
            }
        }
    }

    fn decoded(s3: &MemStore, key: &str) -> Vec<u8> {
        zstd::decode_all(&s3.bytes(key).unwrap()[..]).unwrap()
    }

    fn key_of(name: &str) -> String {
        relay_shared::keys::KeyScheme::new("raw/", "s", relay_shared::keys::TimeFormat::Auto)
            .unwrap()
            .raw_key(name)
            .unwrap()
            .key
    }

    /// The put took effect but its answer was lost: the retry meets a 412,
    /// the object's hash proves it holds these bytes, and only then is the
    /// file deleted.
    #[tokio::test]
    async fn a_lost_answer_then_a_412_is_verified_before_the_file_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let s3 = store();
        s3.fail_next(1, Fault::LoseResponse);
        let name = "1763800000001.json";
        let mut agent = agent_with(dir.path(), &s3, &[(name, b"{\"a\":1}\n")]);
        drain(&mut agent).await;
        assert_eq!(
            (agent.summary.uploaded, agent.summary.duplicates),
            (0, 1),
            "{:?}",
            agent.summary
        );
        assert_eq!(decoded(&s3, &key_of(name)), b"{\"a\":1}\n");
        assert!(!dir.path().join(name).exists(), "deleted once verified");
        let ops: Vec<&str> = s3.calls().iter().map(|(op, _)| *op).collect();
        assert_eq!(ops, ["PutObject", "PutObject", "HeadObject"]);
    }

    /// A name used again: S3 holds other bytes under the key. The file is
    /// deleted only after its own bytes are stored under the conflict key.
    #[tokio::test]
    async fn a_412_with_other_bytes_stores_the_file_aside_before_deleting_it() {
        let dir = tempfile::tempdir().unwrap();
        let s3 = store();
        let name = "1763800000002.json";
        let mut first = agent_with(dir.path(), &s3, &[(name, b"{\"v\":1}\n")]);
        drain(&mut first).await;
        let mut again = agent_with(dir.path(), &s3, &[(name, b"{\"v\":2}\n")]);
        drain(&mut again).await;
        assert_eq!(again.summary.conflicts, 1, "{:?}", again.summary);
        assert!(!dir.path().join(name).exists());
        let keys = s3.keys();
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert_eq!(decoded(&s3, &key_of(name)), b"{\"v\":1}\n");
        let conflict = keys.iter().find(|k| **k != key_of(name)).unwrap();
        assert_eq!(decoded(&s3, conflict), b"{\"v\":2}\n");

        // Unverifiable (no content hash): kept on disk, never deleted.
        let other = "1763800000003.json";
        s3.put(
            &key_of(other),
            b"old".to_vec(),
            &relay_shared::store::PutMode::Create,
            &relay_shared::store::PutOptions::default(),
        )
        .await
        .unwrap();
        let mut third = agent_with(dir.path(), &s3, &[(other, b"{\"v\":3}\n")]);
        drain(&mut third).await;
        assert_eq!(third.summary.unverified, 1);
        assert!(dir.path().join(other).exists());
    }

    /// A permanent error sets the file aside on disk, out of the upload
    /// slots; nothing is deleted.
    #[tokio::test]
    async fn a_permanent_error_keeps_the_file_and_sets_it_aside() {
        let dir = tempfile::tempdir().unwrap();
        let s3 = store();
        s3.deny("raw/");
        let name = "1763800000004.json";
        let mut agent = agent_with(dir.path(), &s3, &[(name, b"{\"a\":4}\n")]);
        drain(&mut agent).await;
        assert_eq!(agent.summary.set_aside, 1);
        let held = &agent.held_back[&dir.path().join(name)];
        assert!(held.set_aside.is_some(), "{held:?}");
        assert!(agent.inflight.is_empty());
        assert!(dir.path().join(name).exists());
        assert!(s3.keys().is_empty());
    }

    /// After its upload, a file is deleted only while it is still the file
    /// S3 holds: a file that changed since it was read, or that a writer
    /// holds open again, is left in place (and followed again), and the
    /// lease is held while the file is removed.
    #[tokio::test]
    async fn a_file_is_deleted_only_while_it_is_what_s3_holds_and_no_writer_has_it() {
        let leases = Leases::enable().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let s3 = store();
        let agent = agent_with(dir.path(), &s3, &[]);
        let job = |name: &str, content: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            let stat = FileStat::of(&std::fs::metadata(&path).unwrap());
            let mut job = agent.job(path, name.into(), key_of(name), name.into(), stat, false);
            job.lease = Some(leases);
            job
        };
        let remove = |p: &Path| std::fs::remove_file(p);

        let closed = job("1763800000010.json", b"{}\n");
        assert_eq!(unless_reopened(&closed, remove).unwrap(), None);
        assert!(!closed.path.exists());

        let reopened = job("1763800000011.json", b"{}\n");
        let writer = std::fs::OpenOptions::new()
            .append(true)
            .open(&reopened.path)
            .unwrap();
        assert_eq!(
            unless_reopened(&reopened, remove).unwrap(),
            Some("a writer opened it again")
        );
        assert!(reopened.path.exists());
        drop(writer);

        let changed = job("1763800000012.json", b"{}\n");
        std::fs::write(&changed.path, b"{}\n{}\n").unwrap();
        assert_eq!(
            unless_reopened(&changed, remove).unwrap(),
            Some("it changed after it was read")
        );
        assert!(changed.path.exists());

        // Without a lease (judged by settle time), the stat alone decides.
        let mut settled = job("1763800000013.json", b"{}\n");
        settled.lease = None;
        assert_eq!(unless_reopened(&settled, remove).unwrap(), None);
        assert!(!settled.path.exists());
    }

    /// A peer agent on the same directory took the file first: it is gone,
    /// which is counted and is not an error, and nothing is stored.
    #[tokio::test]
    async fn a_file_a_peer_took_first_is_counted_gone() {
        let dir = tempfile::tempdir().unwrap();
        let s3 = store();
        let name = "1763800000005.json";
        let mut agent = agent_with(dir.path(), &s3, &[(name, b"{\"a\":5}\n")]);
        std::fs::remove_file(dir.path().join(name)).unwrap();
        drain(&mut agent).await;
        assert_eq!(agent.summary.gone, 1, "{:?}", agent.summary);
        assert!(s3.keys().is_empty());
        assert!(s3.calls().is_empty(), "S3 was never asked");
    }

    /// Shutdown while an upload waits out a long backoff: the agent stops
    /// at once, counts the file unfinished, and leaves it on disk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_mid_upload_leaves_the_file_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let name = "1763800000006.json";
        std::fs::write(dir.path().join(name), b"{\"a\":6}\n").unwrap();
        let s3 = store();
        s3.fail_next(100, Fault::Unavailable);
        let slow = RetryPolicy {
            min_delay: Duration::from_secs(600),
            max_delay: Duration::from_secs(600),
            permanent_delay: Duration::from_secs(600),
        };
        let watched = s3.clone();
        let stop = async move {
            while watched.calls().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let started = Instant::now();
        let summary = run(config(dir.path(), &[]), s3.clone(), slow, stop)
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(30));
        assert_eq!(
            (summary.unfinished, summary.uploaded),
            (1, 0),
            "{summary:?}"
        );
        assert!(dir.path().join(name).exists());
        assert!(s3.keys().is_empty());
    }

    /// Four files that fail for good at concurrency 4 hold no upload slot:
    /// the good files around them still flow, and the bad ones wait aside.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn permanently_failing_files_do_not_block_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), &["--concurrency", "4"]);
        let s3 = store();
        for i in 0..4 {
            let name = format!("17638000001{i:02}.json");
            s3.deny(&config.keys.raw_key(&name).unwrap().key);
            std::fs::write(dir.path().join(&name), b"{\"bad\":1}\n").unwrap();
        }
        for i in 0..6 {
            std::fs::write(
                dir.path().join(format!("17638000002{i:02}.json")),
                b"{\"good\":1}\n",
            )
            .unwrap();
        }
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            permanent_delay: Duration::from_secs(3600),
        };
        let watched = s3.clone();
        let stop = async move {
            for _ in 0..200 {
                if watched.keys().len() == 6 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let summary = crate::run(config, s3.clone(), policy, stop).await.unwrap();
        assert_eq!(s3.keys().len(), 6, "every good file stored");
        assert_eq!((summary.uploaded, summary.set_aside), (6, 4));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".json"))
            .collect();
        assert_eq!(left.len(), 4, "the set-aside files stay on disk: {left:?}");
    }
}
