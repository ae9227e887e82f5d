//! Decides when a file is finished: pure bookkeeping over observations, no I/O.
//!
//! Keys are immutable, so uploading a half-written file would make the
//! truncation permanent. A file is due only when it was closed after writing
//! (or renamed in, or found by a scan, where no close event can be had) and its
//! size and mtime then stayed the same for the whole settle time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The part of `stat` that tells whether a file is still changing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    pub mtime: SystemTime,
}

impl FileStat {
    /// What a `stat` (or `lstat`) said about the file.
    pub fn of(m: &std::fs::Metadata) -> Self {
        Self {
            size: m.len(),
            mtime: m.modified().unwrap_or(std::time::UNIX_EPOCH),
        }
    }
}

/// What was seen about a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A name appeared (IN_CREATE). A writer creating a file writes to it
    /// next (IN_MODIFY); a file published with `link()` or `O_TMPFILE` plus
    /// `linkat` arrives whole and sends nothing more.
    Created,
    /// Written to: it may still be open.
    Changed,
    /// Closed after writing, or renamed into the directory.
    Finished,
    /// Found by a directory scan (start-up backlog or after an inotify
    /// overflow): no close event is available, so settling alone decides.
    Discovered,
}

#[derive(Debug, Clone)]
struct Pending {
    stat: FileStat,
    stable_since: Instant,
    finished: bool,
    /// Created, and never written to since: linked in whole.
    linked: bool,
}

/// Files seen but not yet handed out for upload.
#[derive(Debug)]
pub struct Tracker {
    settle: Duration,
    pending: HashMap<PathBuf, Pending>,
}

impl Tracker {
    pub fn new(settle: Duration) -> Self {
        Self {
            settle,
            pending: HashMap::new(),
        }
    }

    /// Records an observation. `stat` is `None` when the file is gone (deleted
    /// or moved away, perhaps by a peer agent), which forgets it.
    pub fn observe(&mut self, path: &Path, stat: Option<FileStat>, signal: Signal, now: Instant) {
        let Some(stat) = stat else {
            self.pending.remove(path);
            return;
        };
        match self.pending.get_mut(path) {
            Some(p) => {
                if p.stat != stat {
                    p.stat = stat;
                    p.stable_since = now;
                }
                match signal {
                    Signal::Changed => {
                        p.finished = false;
                        p.linked = false;
                    }
                    // A name created again (deleted and created anew) starts over.
                    Signal::Created => {
                        p.finished = false;
                        p.linked = true;
                    }
                    Signal::Finished => p.finished = true,
                    // A scan says nothing new about a file we already follow.
                    Signal::Discovered => {}
                }
            }
            None => {
                self.pending.insert(
                    path.to_owned(),
                    Pending {
                        stat,
                        stable_since: now,
                        finished: matches!(signal, Signal::Finished | Signal::Discovered),
                        linked: signal == Signal::Created,
                    },
                );
            }
        }
    }

    /// Removes and returns the files that are due, oldest mtime first (then by
    /// path, so the order is deterministic).
    pub fn take_due(&mut self, now: Instant) -> Vec<(PathBuf, FileStat)> {
        let settle = self.settle;
        let mut due: Vec<(PathBuf, FileStat)> = self
            .pending
            .iter()
            // A linked-in file must hold something: an empty one may be a
            // writer's fresh file it has not written to yet.
            .filter(|(_, p)| p.finished || (p.linked && p.stat.size > 0))
            .filter(|(_, p)| now.saturating_duration_since(p.stable_since) >= settle)
            .map(|(path, p)| (path.clone(), p.stat))
            .collect();
        for (path, _) in &due {
            self.pending.remove(path);
        }
        due.sort_by(|a, b| a.1.mtime.cmp(&b.1.mtime).then_with(|| a.0.cmp(&b.0)));
        due
    }

    /// Paths to re-stat on the next tick.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.pending.keys().map(PathBuf::as_path)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.pending.contains_key(path)
    }

    /// The oldest mtime among waiting files: how stale the data on disk is.
    pub fn oldest_mtime(&self) -> Option<SystemTime> {
        self.pending.values().map(|p| p.stat.mtime).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SETTLE: Duration = Duration::from_millis(500);

    fn stat(size: u64, mtime_s: u64) -> Option<FileStat> {
        Some(FileStat {
            size,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(mtime_s),
        })
    }

    #[test]
    fn open_file_is_never_due_however_long_it_is_stable() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE);
        let p = Path::new("/d/1.json");
        t.observe(p, stat(10, 1), Signal::Changed, t0);
        assert!(t.take_due(t0 + Duration::from_secs(3600)).is_empty());
        t.observe(
            p,
            stat(10, 1),
            Signal::Finished,
            t0 + Duration::from_secs(3600),
        );
        // Closed, and unchanged since long before: due at once.
        assert_eq!(t.take_due(t0 + Duration::from_secs(3600)).len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn a_linked_in_file_is_due_but_a_created_one_being_written_is_not() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE);
        let linked = Path::new("/d/linked.json");
        let written = Path::new("/d/written.json");
        let empty = Path::new("/d/empty.json");
        t.observe(linked, stat(10, 1), Signal::Created, t0);
        t.observe(written, stat(0, 1), Signal::Created, t0);
        t.observe(written, stat(10, 2), Signal::Changed, t0);
        t.observe(empty, stat(0, 1), Signal::Created, t0);
        let due: Vec<_> = t
            .take_due(t0 + SETTLE)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(due, [PathBuf::from("/d/linked.json")]);
        assert!(t.take_due(t0 + Duration::from_secs(3600)).is_empty());
    }

    #[test]
    fn a_change_restarts_the_settle_clock() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE);
        let p = Path::new("/d/1.json");
        t.observe(p, stat(10, 1), Signal::Finished, t0);
        t.observe(
            p,
            stat(20, 2),
            Signal::Discovered,
            t0 + Duration::from_millis(400),
        );
        assert!(t.take_due(t0 + Duration::from_millis(600)).is_empty());
        assert_eq!(t.take_due(t0 + Duration::from_millis(900)).len(), 1);
    }

    #[test]
    fn reopened_after_close_waits_for_the_next_close() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE);
        let p = Path::new("/d/1.json");
        t.observe(p, stat(10, 1), Signal::Finished, t0);
        t.observe(
            p,
            stat(10, 1),
            Signal::Changed,
            t0 + Duration::from_millis(100),
        );
        assert!(t.take_due(t0 + Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn gone_files_are_forgotten_and_due_files_come_oldest_first() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE);
        t.observe(Path::new("/d/b"), stat(1, 5), Signal::Discovered, t0);
        t.observe(Path::new("/d/a"), stat(1, 7), Signal::Discovered, t0);
        t.observe(Path::new("/d/c"), stat(1, 1), Signal::Discovered, t0);
        t.observe(Path::new("/d/c"), None, Signal::Changed, t0);
        assert_eq!(t.oldest_mtime(), stat(1, 5).map(|s| s.mtime));
        let due: Vec<_> = t
            .take_due(t0 + SETTLE)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(due, [PathBuf::from("/d/b"), PathBuf::from("/d/a")]);
    }

    proptest! {
        /// Whatever the interleaving, a file is only ever due with the stat it
        /// had for a full settle time, after a Finished or Discovered signal
        /// that no later Changed signal cancelled, or after a Created one
        /// with no write since, for a file that is not empty.
        #[test]
        fn due_only_when_finished_and_settled(
            steps in proptest::collection::vec((0u8..4, 0u64..3, 0u64..400), 1..40)
        ) {
            let t0 = Instant::now();
            let mut t = Tracker::new(SETTLE);
            let p = Path::new("/d/x");
            let mut now = t0;
            let mut last_change = t0;
            let mut last_stat = None;
            let mut finished = false;
            let mut linked = false;
            let mut tracked = false;
            for (sig, size, dt) in steps {
                now += Duration::from_millis(dt);
                let signal = [Signal::Changed, Signal::Finished, Signal::Discovered, Signal::Created][sig as usize];
                let s = stat(size, size);
                if !tracked || last_stat != s { last_change = now; }
                (finished, linked) = match (signal, tracked) {
                    (Signal::Changed, _) => (false, false),
                    (Signal::Created, _) => (false, true),
                    (Signal::Finished, _) => (true, linked && tracked),
                    (Signal::Discovered, false) => (true, false),
                    (Signal::Discovered, true) => (finished, linked),
                };
                tracked = true;
                last_stat = s;
                t.observe(p, s, signal, now);
                let due = t.take_due(now);
                let whole = finished || (linked && size > 0);
                let expect = whole && now.duration_since(last_change) >= SETTLE;
                prop_assert_eq!(due.len() == 1, expect);
                if expect {
                    prop_assert_eq!(Some(due[0].1), s);
                    tracked = false;
                }
            }
        }
    }
}
