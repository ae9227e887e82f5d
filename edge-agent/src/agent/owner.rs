//! The agent's one owning task: it turns watch events and ticks into
//! uploads, at most `concurrency` at a time, keeps their slots full, and at
//! shutdown gives the ones in flight their deadline.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use relay_shared::store::ObjectStore;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, error, info, warn};

use crate::config::Config;
use crate::lease::Leases;
use crate::ledger::Ledger;
use crate::tracker::{FileStat, Judge, Tracker};
use crate::upload::{self, Job, Outcome, RetryPolicy, UploadError};
use crate::watch::{Watch, WatchMsg};
use crate::{Summary, metrics};

/// Upload tasks in flight; each returns its job, how it ended, its retries
/// and its time.
pub(super) type Uploads = JoinSet<(Job, Outcome, u32, Duration)>;

pub(super) struct Agent<S> {
    pub(super) config: Config,
    pub(super) sink: S,
    pub(super) retry: RetryPolicy,
    /// Turns true at shutdown: uploads waiting to retry stop at once.
    pub(super) stopping: tokio::sync::watch::Sender<bool>,
    pub(super) tracker: Tracker,
    /// The watch on the directory's path; `None` in unit tests.
    pub(super) watch: Option<Watch>,
    /// Finished files (and canaries) waiting for an upload slot, oldest first.
    pub(super) ready: VecDeque<Ready>,
    /// Paths in `ready`.
    pub(super) queued: HashSet<PathBuf>,
    /// Paths being uploaded, with their mtime for the oldest-file gauge.
    pub(super) inflight: HashMap<PathBuf, SystemTime>,
    /// Files kept out of the tracker until they change (or, if set aside,
    /// until their retry time), with the stat they had. Never deleted.
    pub(super) held_back: HashMap<PathBuf, HeldBack>,
    /// Symlinks and special files already reported: never opened.
    pub(super) special: HashSet<PathBuf>,
    pub(super) ledger: Option<Ledger>,
    /// The right to probe leases; `None` where they are refused.
    pub(super) leases: Option<Leases>,
    /// Refusal kinds already logged: one WARN each.
    pub(super) refusals_logged: HashSet<&'static str>,
    pub(super) summary: Summary,
    /// Canaries made since start-up.
    pub(super) canary_seq: u64,
    /// What the next completeness manifest says.
    pub(super) book: super::book::Book,
}

pub(super) type Done = Result<(Job, Outcome, u32, Duration), tokio::task::JoinError>;

/// An upload waiting for a slot. A file is only its path and stat (the
/// whole backlog may wait like this); a canary's job is made when it is
/// written.
#[derive(Debug)]
pub(super) enum Ready {
    File {
        path: PathBuf,
        stat: FileStat,
        judge: Judge,
    },
    Canary(Box<Job>),
}

impl Ready {
    pub(super) fn mtime(&self) -> SystemTime {
        match self {
            Self::File { stat, .. } => stat.mtime,
            Self::Canary(job) => job.stat.mtime,
        }
    }
}

/// A file kept out of the upload flow, with the stat it had then.
#[derive(Debug, Clone)]
pub(super) struct HeldBack {
    pub(super) stat: FileStat,
    /// `None`: its name gives no key, or its key is in S3 unverified; it
    /// waits for a change. `Some`: it failed for a reason retrying soon
    /// will not fix, and waits outside the upload slots until then.
    pub(super) set_aside: Option<SetAside>,
}

#[derive(Debug, Clone)]
pub(super) struct SetAside {
    pub(super) retry_at: Instant,
    pub(super) reason: String,
}

impl<S: ObjectStore> Agent<S> {
    pub(super) fn new(
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
            watch: None,
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
            book: super::book::Book::open(&config.state_dir),
            stopping: tokio::sync::watch::Sender::new(false),
            sink,
            retry,
            config,
        }
    }

    /// Follows the directory until `shutdown`: keeps the upload slots full
    /// and acts on watch events, finished uploads, ticks and canaries.
    pub(super) async fn follow(
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
        let mut manifests = super::book::Puts::new();
        tokio::pin!(shutdown);
        loop {
            self.fill_slots(uploads);
            self.start_manifest(&mut manifests);
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(done) = uploads.join_next(), if !uploads.is_empty() => self.finish(done),
                Some(msg) = rx.recv() => self.handle(msg),
                _ = tick.tick() => self.tick(),
                Some(done) = manifests.join_next(), if !manifests.is_empty() => self.manifest_done(done),
                _ = canary.tick(), if canary_every.is_some() => {
                    self.canary();
                    self.book.due = true;
                }
            }
        }
    }

    /// Starts ready uploads while slots are free.
    pub(super) fn fill_slots(&mut self, uploads: &mut Uploads) {
        while uploads.len() < self.config.concurrency {
            let Some(job) = self.next_job() else {
                break;
            };
            self.spawn(uploads, job);
        }
    }

    /// At shutdown: uploads waiting out a retry backoff stop now, and
    /// transfers get until the shutdown deadline to finish.
    pub(super) async fn drain(&mut self, mut uploads: Uploads) {
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
        if self.config.canary.is_some() {
            // After the uploads: the last manifest names what they stored.
            self.final_manifest(Duration::from_secs(10)).await;
        }
    }

    pub(super) fn log_stopped(&self) {
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

    pub(super) fn spawn(&mut self, uploads: &mut JoinSet<(Job, Outcome, u32, Duration)>, job: Job) {
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
                    if let Some((op, cause)) = e.retry_site() {
                        relay_shared::attempts::count("s3", op, cause);
                    }
                    if e.is_transient() {
                        crate::health::s3_failed(kind, &e.to_string(), delay);
                    } else {
                        let fix = upload::fix_hint(kind, &bucket, &prefix);
                        error!(error = %e, kind, attempt, retry_in_secs = delay.as_secs(), %fix, "upload failed and needs attention; the file is set aside and retried later");
                        crate::health::set_permanent_failure(Some(format!("{e} ({fix})")));
                    }
                };
                let (outcome, retries) =
                    upload::upload_with_retry(&sink, &job, level, part, &retry, stopping, on_error).await;
                (job, outcome, retries, started.elapsed())
            }
            .instrument(span),
        );
    }
}
