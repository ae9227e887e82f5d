//! Completeness manifests (see `relay_shared::manifest`): with every canary
//! and at shutdown, one object naming the files stored since the last, the
//! files the agent cannot upload, and the files still waiting, so the cloud
//! can say which files of this host are not in SQS.
//!
//! A manifest that fails to store is written again, under the same key and
//! with what it listed still first, at the next interval: nothing it listed
//! is dropped, and its sequence number is never skipped. The sequence's
//! epoch and last number live in the state directory, so a restart goes on
//! counting; a lost state directory starts a new epoch, never a false gap.

use std::path::Path;
use std::time::Duration;

use relay_shared::manifest::{self, Manifest, Position, Refused, Uploaded, Waiting};
use relay_shared::store::{ObjectStore, PutMode, PutOptions, S3Error};
use tracing::warn;

use relay_shared::meta::{now_ms, unix_ms};

use super::book::{PENDING_FILE, Puts, STATE_FILE};
use super::owner::{Agent, Ready};
use crate::metrics;
use crate::upload::Job;

impl<S: ObjectStore> Agent<S> {
    /// S3 holds `job`'s file (these bytes) under `key`: the next manifest
    /// names it.
    pub(super) fn note_stored(&mut self, job: &Job, key: &str, content_hash: u128) {
        self.book.stored.push(Uploaded {
            file: job.rel.clone(),
            key: key.to_owned(),
            hash: relay_shared::meta::content_hash_hex(content_hash),
            stored_ms: now_ms(),
        });
    }

    pub(super) fn note_refused(&mut self, path: &Path, reason: &str) {
        self.book.refused.insert(path.to_owned(), reason.to_owned());
    }

    pub(super) fn forget_refused(&mut self, path: &Path) {
        self.book.refused.remove(path);
    }

    /// Starts storing a manifest if one is due and none is being stored.
    pub(super) fn start_manifest(&mut self, puts: &mut Puts) {
        if !self.book.due || !puts.is_empty() {
            return;
        }
        self.book.due = false;
        let listed = self.book.stored.len().min(manifest::MAX_LISTED);
        let m = self.manifest(listed);
        let (sink, at) = (self.sink.clone(), m.position());
        self.book.retry = Some(at);
        puts.spawn(async move { (at, listed, put(&sink, &m).await) });
    }

    /// A manifest's put ended: on success its files are forgotten and the
    /// sequence moves on; on failure it is tried again next interval.
    pub(super) fn manifest_done(
        &mut self,
        done: Result<(Position, usize, Result<(), S3Error>), tokio::task::JoinError>,
    ) {
        let Ok((at, listed, result)) = done else {
            return;
        };
        let key = manifest::key(self.config.keys.source_id(), at);
        match result {
            Ok(()) => {
                ::metrics::counter!(metrics::MANIFESTS, "outcome" => "stored").increment(1);
                self.book.stored.drain(..listed.min(self.book.stored.len()));
                self.book.seq = at.seq;
                self.book.retry = None;
                self.save_sequence();
                let _ = std::fs::remove_file(self.config.state_dir.join(PENDING_FILE));
                crate::health::manifest_stored();
            }
            Err(e) => {
                ::metrics::counter!(metrics::MANIFESTS, "outcome" => "failed").increment(1);
                warn!(%key, error = %e, "a manifest was not stored; it is tried again, with the same key, at the next interval");
                crate::health::manifest_failed(&key, &e.to_string());
            }
        }
    }

    /// At shutdown: the last manifest, within `deadline`.
    pub(super) async fn final_manifest(&mut self, deadline: Duration) {
        let mut puts = Puts::new();
        self.book.due = true;
        self.start_manifest(&mut puts);
        if let Ok(Some(done)) = tokio::time::timeout(deadline, puts.join_next()).await {
            self.manifest_done(done);
        }
        if self.book.retry.is_some() {
            self.save_pending();
        }
    }

    /// Keeps the manifest not yet stored, with every file stored since the
    /// last one, for the next start (a crash keeps none: those files are in
    /// S3 but in no manifest, and `audit` still finds any not processed).
    fn save_pending(&self) {
        let m = self.manifest(self.book.stored.len());
        let mut text = format!("{}\n", m.key()).into_bytes();
        text.extend(m.to_bytes());
        match self.write_state(PENDING_FILE, &text) {
            Ok(()) => warn!(key = %m.key(), files = m.uploaded.len(),
                "the last manifest was not stored before the shutdown deadline; the next start stores it first"),
            Err(e) => {
                ::metrics::counter!(crate::health::STATE_ERRORS, "op" => "manifest").increment(1);
                warn!(dir = %self.config.state_dir.display(), error = %e,
                    "the last manifest was not stored, nor kept for the next start: the files it lists are in S3 but in no manifest (`audit` still finds any not processed)");
            }
        }
    }

    /// The manifest due now, listing the first `listed` files stored.
    fn manifest(&self, listed: usize) -> Manifest {
        let at = self.book.retry.unwrap_or(Position {
            epoch_ms: self.book.epoch_ms,
            seq: self.book.seq + 1,
            created_ms: now_ms(),
        });
        let (refused, refused_more) = capped(self.refused_now());
        let (waiting, waiting_more) = capped(self.waiting_now());
        Manifest {
            version: manifest::VERSION,
            source: self.config.keys.source_id().to_owned(),
            epoch_ms: at.epoch_ms,
            seq: at.seq,
            created_ms: at.created_ms,
            interval_secs: self.config.canary.map_or(0, |c| c.as_secs()),
            uploaded: self.book.stored[..listed].to_vec(),
            refused,
            refused_more,
            waiting,
            waiting_more,
        }
    }

    fn name(&self, path: &Path) -> String {
        path.strip_prefix(&self.config.watch_dir)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    /// Files refused by name, and files set aside after a failure.
    fn refused_now(&self) -> Vec<Refused> {
        let by_name = self.book.refused.iter().map(|(p, r)| (p, r.clone()));
        let set_aside = self
            .held_back
            .iter()
            .filter_map(|(p, h)| Some((p, format!("set aside: {}", h.set_aside.as_ref()?.reason))));
        let mut all: Vec<Refused> = by_name
            .chain(set_aside)
            .map(|(p, reason)| Refused {
                file: self.name(p),
                reason,
            })
            .collect();
        all.sort_by(|a, b| a.file.cmp(&b.file));
        all
    }

    /// Files seen and not yet stored, oldest last write first.
    fn waiting_now(&self) -> Vec<Waiting> {
        let queued = self.ready.iter().filter_map(|r| match r {
            Ready::File { path, stat, .. } => Some((path.as_path(), stat.mtime)),
            Ready::Canary(_) => None,
        });
        let inflight = self.inflight.iter().map(|(p, t)| (p.as_path(), *t));
        let canaries = self.canary_dir();
        let mut all: Vec<Waiting> = self
            .tracker
            .waiting()
            .chain(queued)
            .chain(inflight)
            .filter(|(p, _)| !p.starts_with(&canaries))
            .map(|(p, t)| Waiting {
                file: self.name(p),
                since_ms: unix_ms(t),
            })
            .collect();
        all.sort_by(|a, b| (a.since_ms, &a.file).cmp(&(b.since_ms, &b.file)));
        all
    }

    /// Keeps the sequence for the next start; a state directory that
    /// cannot be written costs a new epoch after a restart, not data.
    fn save_sequence(&self) {
        let text = format!("{} {}\n", self.book.epoch_ms, self.book.seq);
        if let Err(e) = self.write_state(STATE_FILE, text.as_bytes()) {
            ::metrics::counter!(crate::health::STATE_ERRORS, "op" => "manifest").increment(1);
            warn!(dir = %self.config.state_dir.display(), error = %e, "cannot record the manifest sequence; a restart starts a new one");
        }
    }

    /// Writes `name` in the state directory whole: a temporary file renamed
    /// over it, so a crash leaves the old one or the new.
    fn write_state(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.config.state_dir.join(name);
        let tmp = path.with_extension("tmp");
        std::fs::create_dir_all(&self.config.state_dir)
            .and_then(|()| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path))
    }
}

/// At most [`manifest::MAX_LISTED`] of `all`, and how many more there are.
fn capped<T>(mut all: Vec<T>) -> (Vec<T>, u64) {
    let more = all.len().saturating_sub(manifest::MAX_LISTED);
    all.truncate(manifest::MAX_LISTED);
    (all, more as u64)
}

async fn put<S: ObjectStore>(sink: &S, m: &Manifest) -> Result<(), S3Error> {
    let body = m.to_bytes();
    let opts = PutOptions {
        content_type: Some("application/json".into()),
        ..PutOptions::default()
    };
    // Overwrite: a retry stores the same key with what it listed still first.
    sink.put(&m.key(), body, &PutMode::Overwrite, &opts)
        .await
        .map(drop)
}
