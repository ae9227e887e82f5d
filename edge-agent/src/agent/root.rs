//! The watch directory, followed by its path: removed or renamed away, it
//! makes `/healthz` unhealthy and the agent waits for it; replaced or back,
//! it is watched again and rescanned, said in one INFO line and counted.

use relay_shared::store::ObjectStore;
use tracing::{info, warn};

use super::owner::Agent;
use crate::health;
use crate::metrics;
use crate::tracker::Signal;
use crate::watch::Change;

impl<S: ObjectStore> Agent<S> {
    /// Checks that the watch directory's path still names the directory
    /// watched; `force` after its own delete or move event.
    pub(super) fn check_root(&mut self, force: bool) {
        let Some(watch) = &mut self.watch else {
            return;
        };
        let dir = self.config.watch_dir.display().to_string();
        match watch.check(force) {
            Change::Unchanged => {}
            Change::Missing(error) => {
                let waiting = self.tracker.len() + self.ready.len();
                warn!(dir, %error, waiting,
                    "the watch directory is gone (removed or renamed away): nothing is relayed until a directory is there again; files still waiting in the old one are not relayed from there");
                ::metrics::counter!(metrics::WATCH_DIR_CHANGES, "change" => "missing").increment(1);
                health::set_watch_dir_problem(Some(format!(
                    "watch directory {dir} is missing ({error}): waiting for it to be created again"
                )));
            }
            Change::Failed(error) => {
                warn!(dir, %error, "the watch directory is back but cannot be watched; trying again");
                health::set_watch_dir_problem(Some(format!(
                    "watch directory {dir} cannot be watched: {error}"
                )));
            }
            Change::Rewatched => {
                info!(
                    dir,
                    "the watch directory was replaced (removed, renamed or created again): watching the new one and relaying what is in it"
                );
                ::metrics::counter!(metrics::WATCH_DIR_CHANGES, "change" => "rewatched")
                    .increment(1);
                health::set_watch_dir_problem(None);
                let root = self.config.watch_dir.clone();
                self.scan(&root);
            }
        }
    }

    /// Whether the watch directory is watched now (canaries stop while it
    /// is not, so the canary alarm sees what `/healthz` says).
    pub(super) fn watching(&self) -> bool {
        self.watch
            .as_ref()
            .is_none_or(crate::watch::Watch::is_watching)
    }

    /// A name renamed into the watch: a directory brings its files (scanned
    /// in recursive mode, ignored otherwise: only files directly in the
    /// watch directory are relayed), anything else is a finished file.
    pub(super) fn moved_in(&mut self, path: &std::path::Path) {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => self.new_dir(path),
            _ => self.observe(path, Signal::Finished),
        }
    }

    /// A directory created or renamed into the tree.
    pub(super) fn new_dir(&mut self, path: &std::path::Path) {
        if self.config.recursive && !self.is_own(path) {
            self.scan(path);
        }
    }
}
