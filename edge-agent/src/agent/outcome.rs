//! What follows each upload: S3 is known to hold the file's exact bytes,
//! so it is counted and deleted, moved or recorded (never while a writer
//! has it); or it is set aside, held back, or observed again.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use relay_shared::store::ObjectStore;
use tracing::{debug, error, info, warn};

use super::owner::{Agent, Done, HeldBack, SetAside};
use crate::config::OnSuccess;
use crate::lease::Probe;
use crate::metrics;
use crate::tracker::{FileStat, Signal};
use crate::upload::{self, Job, Opened, Outcome};

impl<S: ObjectStore> Agent<S> {
    pub(super) fn finish(&mut self, done: Done) {
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
            Outcome::Uploaded { .. } | Outcome::Duplicate { .. } | Outcome::Conflict { .. } => {
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
            Outcome::Gone { in_s3 } => {
                self.summary.gone += 1;
                ::metrics::counter!(metrics::FILES, "outcome" => "gone").increment(1);
                if in_s3 {
                    debug!(
                        "the file was removed after its key was stored: a peer agent sharing the directory relayed it"
                    );
                } else {
                    warn!(action = %self.config.on_success,
                        "the file was removed before S3 held it, by someone other than this agent: nothing of it was stored, and nothing is left to relay");
                }
            }
            Outcome::Changed => {
                warn!(
                    "the file changed while it was read (it grew, shrank or was replaced after it looked finished): nothing was stored; it is followed again and relayed once it settles"
                );
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
    pub(super) fn stored(&mut self, job: &Job, outcome: Outcome, retries: u32, elapsed: Duration) {
        crate::health::set_permanent_failure(None);
        crate::health::s3_answered();
        let (key, hash) = match &outcome {
            Outcome::Conflict {
                key, content_hash, ..
            } => (key.clone(), *content_hash),
            Outcome::Uploaded { content_hash, .. } | Outcome::Duplicate { content_hash } => {
                (job.key.clone(), *content_hash)
            }
            _ => return,
        };
        self.note_stored(job, &key, hash);
        match outcome {
            Outcome::Uploaded {
                compressed_bytes,
                parts,
                ..
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
            Outcome::Duplicate { .. } => {
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
                ..
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
    pub(super) fn set_aside(&mut self, job: &Job, error: String, kind: &'static str) {
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
    pub(super) fn hold_back(&mut self, path: &Path, stat: FileStat, set_aside: Option<SetAside>) {
        let publish = set_aside.is_some();
        self.held_back
            .insert(path.to_owned(), HeldBack { stat, set_aside });
        if publish {
            self.publish_set_aside();
        }
    }

    /// Lets a held-back file be observed again.
    pub(super) fn release(&mut self, path: &Path) {
        self.forget_refused(path);
        if let Some(held) = self.held_back.remove(path)
            && held.set_aside.is_some()
        {
            self.publish_set_aside();
        }
    }

    /// Tells `/healthz` and the metrics which files are set aside, and why.
    pub(super) fn publish_set_aside(&self) {
        let mut named: Vec<String> = self
            .held_back
            .iter()
            .filter_map(|(p, h)| Some(format!("{}: {}", p.display(), h.set_aside.as_ref()?.reason)))
            .collect();
        named.sort();
        ::metrics::gauge!(metrics::SET_ASIDE).set(named.len() as f64);
        crate::health::name_set_aside(named);
    }

    pub(super) fn after_success(&mut self, job: &Job) {
        let result = match &self.config.on_success {
            OnSuccess::Keep => {
                self.record_upload(job);
                // A change after the read went unseen while the file was in
                // flight (its events are ignored then): follow it again.
                Ok(changed_since_read(job))
            }
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

/// Whether the file at the job's path is no longer the one read (another
/// size or mtime): `Some(why)` if so. A file gone is not changed.
fn changed_since_read(job: &Job) -> Option<&'static str> {
    let now = std::fs::symlink_metadata(&job.path).ok()?;
    (FileStat::of(&now) != job.stat).then_some("it changed after it was read")
}

/// Deletes or moves the file (`act`) only while it is still the file S3
/// holds: the size and mtime it was read with and, where it was judged by
/// a lease, with no process holding it open for writing. The lease is held
/// while `act` runs, so a writer cannot open the file in between and lose
/// what it writes to a deleted inode. `Some(why)` when the file was left.
pub(super) fn unless_reopened(
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
