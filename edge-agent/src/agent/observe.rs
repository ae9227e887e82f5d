//! From the directory to ready uploads: watch events and ticks become
//! observations of files, the tracker decides which are finished (asking
//! the kernel, through a lease probe, whether a writer still holds them),
//! and each finished file becomes a job, or is held back if its name gives
//! no key.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use relay_shared::store::ObjectStore;
use tracing::{error, warn};

use super::owner::{Agent, Ready};
use crate::config::OnSuccess;
use crate::lease::{Probe, Refusal};
use crate::metrics;
use crate::tracker::{FileStat, Judge, Signal};
use crate::upload::{self, Job, ObjectMeta, Opened};
use crate::watch::WatchMsg;

impl<S: ObjectStore> Agent<S> {
    fn rel(&self, path: &Path) -> Option<String> {
        path.strip_prefix(&self.config.watch_dir)
            .ok()
            .and_then(|r| r.to_str())
            .map(str::to_owned)
    }

    /// Paths the agent itself writes to or moves files into.
    pub(super) fn is_own(&self, path: &Path) -> bool {
        path.starts_with(&self.config.state_dir)
            || matches!(&self.config.on_success, OnSuccess::Move(dir) if path.starts_with(dir))
    }

    pub(super) fn handle(&mut self, msg: WatchMsg) {
        tracing::trace!(?msg, "watch event");
        match msg {
            WatchMsg::File(path, signal) => self.observe(&path, signal),
            WatchMsg::Moved(path) => self.moved_in(&path),
            WatchMsg::Dir(dir) => self.new_dir(&dir),
            WatchMsg::Root => self.check_root(true),
            WatchMsg::Rescan(reason) => {
                warn!(%reason, "rescanning the watch directory");
                ::metrics::counter!(metrics::RESCANS).increment(1);
                let root = self.config.watch_dir.clone();
                self.scan(&root);
            }
        }
    }

    pub(super) fn observe(&mut self, path: &Path, signal: Signal) {
        if self.inflight.contains_key(path) || self.queued.contains(path) || self.is_own(path) {
            return;
        }
        let Some(name) = path.file_name() else {
            return;
        };
        let Some(name) = name.to_str() else {
            return self.reject_name(path, name);
        };
        if !self.config.wants(name) {
            return;
        }
        // Never followed: a symlink could point anywhere the agent can read.
        let stat = match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_file() => Some(FileStat::of(&m)),
            Ok(m) => {
                if self.special.insert(path.to_owned()) {
                    let kind = if m.file_type().is_symlink() {
                        "a symlink"
                    } else {
                        "not a regular file"
                    };
                    warn!(path = %path.display(), kind, "not relayed: only regular files are read, and links are never followed");
                    ::metrics::counter!(metrics::FILES, "outcome" => "not_regular").increment(1);
                }
                return;
            }
            Err(_) => None,
        };
        if let Some(rel) = self.rel(path)
            && let Some(ledger) = &mut self.ledger
            && ledger.contains(&rel)
        {
            match stat {
                None => {
                    ledger.forget(&rel);
                    return;
                }
                // Uploaded as it is now: nothing to do. Otherwise the same
                // name holds other bytes, and goes to S3 again.
                Some(s) if ledger.uploaded_as(&rel, s) => return,
                Some(_) => {}
            }
        }
        if let Some(held) = self.held_back.get(path) {
            if stat == Some(held.stat) {
                return;
            }
            // It changed: perhaps what held it back is fixed. Try it again.
            self.release(path);
        }
        self.tracker.observe(path, stat, signal, Instant::now());
    }

    /// Walks `root` (recursively if configured) and observes every file found.
    pub(super) fn scan(&mut self, root: &Path) {
        let depth = if self.config.recursive { usize::MAX } else { 1 };
        let state_dir = self.config.state_dir.clone();
        let walker = walkdir::WalkDir::new(root)
            .min_depth(1)
            .max_depth(depth)
            .into_iter()
            .filter_entry(|e| {
                e.depth() == 0 || !(e.file_type().is_dir() && e.path().starts_with(&state_dir))
            });
        for entry in walker {
            match entry {
                Ok(e) if e.file_type().is_file() => self.observe(e.path(), Signal::Discovered),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "scanning the watch directory"),
            }
        }
    }

    pub(super) fn tick(&mut self) {
        self.check_root(false);
        self.sync_ledger();
        crate::health::publish();
        let (now, wall) = (Instant::now(), SystemTime::now());
        self.retry_set_aside(now);
        self.restat(now);
        self.probe_quiet(now, wall);
        for (path, stat, judge) in self.tracker.take_due(now, wall) {
            self.enqueue(path, stat, judge);
        }
        self.publish_backlog(wall);
    }

    /// Set-aside files whose retry time has come go back to the tracker.
    fn retry_set_aside(&mut self, now: Instant) {
        let due: Vec<PathBuf> = self
            .held_back
            .iter()
            .filter(|(_, h)| h.set_aside.as_ref().is_some_and(|s| s.retry_at <= now))
            .map(|(path, _)| path.clone())
            .collect();
        for path in &due {
            self.release(path);
            self.observe(path, Signal::Discovered);
        }
    }

    /// Re-stats every followed file, so a change restarts its wait.
    fn restat(&mut self, now: Instant) {
        self.tracker.restat(now, |path| {
            std::fs::metadata(path)
                .ok()
                .filter(std::fs::Metadata::is_file)
                .map(|m| FileStat::of(&m))
        });
    }

    /// Asks the kernel, for each quiet lease-judged file, whether a writer
    /// still holds it open.
    fn probe_quiet(&mut self, now: Instant, wall: SystemTime) {
        let Some(leases) = self.leases else { return };
        for path in self.tracker.to_probe(now, wall) {
            let probe = match upload::open_regular(&path) {
                Ok(Opened::Ready(file)) => leases.probe(&file),
                Ok(Opened::Gone) => {
                    self.tracker.observe(&path, None, Signal::Discovered, now);
                    continue;
                }
                // Not openable as a regular file now: the upload, which
                // opens and probes it again, says why.
                Ok(Opened::NotRegular) | Err(_) => Probe::Closed,
            };
            if let Probe::Refused(why) = probe {
                self.note_refusal(&path, why);
            }
            self.tracker.probed(&path, probe);
        }
    }

    /// A lease refused on one file: it is judged by settle time. Logged
    /// once per kind of refusal, counted always.
    fn note_refusal(&mut self, path: &Path, why: Refusal) {
        ::metrics::counter!(metrics::LEASE_REFUSALS, "reason" => why.kind()).increment(1);
        if self.refusals_logged.insert(why.kind()) {
            warn!(
                path = %path.display(),
                dir = %self.config.watch_dir.display(),
                reason = %why,
                settle_ms = self.config.waits().settle.as_millis() as u64,
                "a read lease was refused: this file, and others refused the same way, are judged by settle time alone"
            );
        }
    }

    fn publish_backlog(&self, wall: SystemTime) {
        let backlog = self.tracker.len() + self.ready.len() + self.inflight.len();
        ::metrics::gauge!(metrics::BACKLOG).set(backlog as f64);
        // The ready queue is filled oldest first, so its front stands for it.
        let oldest = self
            .tracker
            .oldest_mtime()
            .into_iter()
            .chain(self.ready.front().map(Ready::mtime))
            .chain(self.inflight.values().copied())
            .min();
        let age = oldest
            .and_then(|m| wall.duration_since(m).ok())
            .unwrap_or_default();
        ::metrics::gauge!(metrics::OLDEST_WAITING).set(age.as_secs_f64());
    }

    /// Queues a finished file for upload: as a path and a stat only, so a
    /// large backlog costs little memory; its job is made when a slot frees.
    pub(super) fn enqueue(&mut self, path: PathBuf, stat: FileStat, judge: Judge) {
        self.queued.insert(path.clone());
        self.ready.push_back(Ready::File { path, stat, judge });
    }

    /// The next upload, its key and metadata made now; files whose path
    /// gives no key are rejected on the way.
    pub(super) fn next_job(&mut self) -> Option<Job> {
        loop {
            let (path, stat, judge) = match self.ready.pop_front()? {
                Ready::Canary(job) => return Some(*job),
                Ready::File { path, stat, judge } => (path, stat, judge),
            };
            self.queued.remove(&path);
            if let Some(job) = self.file_job(path, stat, judge) {
                return Some(job);
            }
        }
    }

    fn file_job(&mut self, path: PathBuf, stat: FileStat, judge: Judge) -> Option<Job> {
        let Some(rel) = self.rel(&path) else {
            self.reject(&path, Some(stat), "its path is not valid UTF-8");
            return None;
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let key = match self.config.keys.raw_key(&name) {
            Ok(k) => k.key,
            Err(e) => {
                self.reject(&path, Some(stat), &e.to_string());
                return None;
            }
        };
        let mut job = self.job(path, rel, key, name, stat, false);
        job.lease = self.leases.filter(|_| judge == Judge::Lease);
        Some(job)
    }

    /// An upload of the file at `path`, named `name`, under `key`.
    pub(super) fn job(
        &self,
        path: PathBuf,
        rel: String,
        key: String,
        name: String,
        stat: FileStat,
        canary: bool,
    ) -> Job {
        Job {
            path,
            rel,
            key,
            keys: self.config.keys.clone(),
            stat,
            lease: None,
            meta: ObjectMeta {
                original_name: name,
                original_size: stat.size,
                source_id: self.config.keys.source_id().to_owned(),
                content_hash: 0,
                canary,
                written_ms: relay_shared::meta::unix_ms(stat.mtime),
            },
        }
    }

    /// A name that is not UTF-8 gives no key: rejected once per file (held
    /// back until it changes), not once per event.
    fn reject_name(&mut self, path: &Path, name: &std::ffi::OsStr) {
        let Some(stat) = std::fs::symlink_metadata(path)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|m| FileStat::of(&m))
        else {
            return self.release(path);
        };
        if self.held_back.get(path).is_some_and(|h| h.stat == stat) {
            return;
        }
        let reason = format!("file name {name:?} is not valid UTF-8");
        self.reject(path, Some(stat), &reason);
    }

    fn reject(&mut self, path: &Path, stat: Option<FileStat>, reason: &str) {
        error!(path = %path.display(), %reason, "cannot relay this file; it stays on disk until renamed or the key scheme is fixed");
        ::metrics::counter!(metrics::REJECTED).increment(1);
        self.summary.rejected += 1;
        self.note_refused(path, reason);
        if let Some(stat) = stat {
            self.hold_back(path, stat, None);
        }
    }
}
