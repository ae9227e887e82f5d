//! Canaries: every `RELAY_CANARY_SECS` the agent writes a one-record file
//! of its own and queues it behind the data, so it takes the data's way
//! (compression, the key scheme, the conditional put) and its lag
//! downstream is what data sees. A canary is never kept and never counted
//! as data.

use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

use relay_shared::store::ObjectStore;
use tracing::warn;

use super::owner::{Agent, Ready};
use crate::metrics;
use crate::tracker::FileStat;
use crate::upload::{Job, Outcome};

impl<S: ObjectStore> Agent<S> {
    pub(super) fn canary_dir(&self) -> PathBuf {
        self.config.state_dir.join("canary")
    }

    /// Canaries a previous run left unsent are stale: new ones follow.
    pub(super) fn clear_canaries(&self) {
        let dir = self.canary_dir();
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!(dir = %dir.display(), error = %e, "cannot clear old canaries");
        }
    }

    /// Writes a canary (one record: this source, a sequence number, the
    /// creation time) as a file of the agent's own, and queues it behind
    /// the data: it takes the data's path (compression, the key scheme,
    /// the conditional put), so its lag is what data sees.
    pub(super) fn canary(&mut self) {
        if !self.watching() {
            tracing::debug!("no canary while the watch directory is missing");
            return;
        }
        let created_ms = relay_shared::meta::now_ms();
        let (name, key) = self.config.keys.canary_key(created_ms);
        self.canary_seq += 1;
        // Source ids are `[A-Za-z0-9_.-]`: nothing to escape.
        let record = format!(
            "{{\"source\":\"{}\",\"seq\":{},\"created_ms\":{created_ms}}}\n",
            self.config.keys.source_id(),
            self.canary_seq
        );
        let dir = self.canary_dir();
        let path = dir.join(&name);
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, record))
            .and_then(|()| std::fs::symlink_metadata(&path));
        let stat = match written {
            Ok(m) => FileStat::of(&m),
            Err(e) => {
                ::metrics::counter!(metrics::CANARIES, "outcome" => "failed").increment(1);
                ::metrics::counter!(metrics::STATE_ERRORS, "op" => "canary").increment(1);
                warn!(path = %path.display(), error = %e, "cannot write a canary; the processor will see it missing");
                return;
            }
        };
        // Never in the ledger: it has no path under the watch directory.
        let job = self.job(path, String::new(), key.key, name, stat, true);
        self.ready.push_back(Ready::Canary(Box::new(job)));
    }

    /// A canary's upload ended: it is never kept, never in the ledger, and
    /// not counted as data. One that failed is simply missing downstream.
    pub(super) fn finish_canary(&mut self, job: &Job, outcome: &Outcome) {
        let outcome = match outcome {
            Outcome::Uploaded { .. } | Outcome::Duplicate { .. } | Outcome::Conflict { .. } => {
                crate::health::s3_answered();
                ::metrics::gauge!(metrics::CANARY_LAST_SENT).set(
                    SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64()),
                );
                "sent"
            }
            other => {
                warn!(key = %job.key, outcome = ?other, "a canary was not stored; it will be missing downstream");
                "failed"
            }
        };
        ::metrics::counter!(metrics::CANARIES, "outcome" => outcome).increment(1);
        if let Err(e) = std::fs::remove_file(&job.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!(path = %job.path.display(), error = %e, "cannot remove a canary file");
        }
    }
}
