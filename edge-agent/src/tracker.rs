//! Decides when a file is finished: pure bookkeeping over observations, no I/O.
//!
//! Keys are immutable, so uploading a half-written file would make the
//! truncation permanent. Two rules, one per file:
//!
//! - **Lease** (where the kernel grants read leases): a file is due once a
//!   lease probe, made after its last change, found no process holding it
//!   open for writing, and its size and mtime have been the same for the
//!   quiet period, counted from its mtime or from when it was last seen to
//!   change, whichever is longer. The quiet period only covers writers that
//!   close a file and open it again to append.
//! - **Settle** (leases refused): a file is due only when it was closed
//!   after writing (or renamed in, linked in whole, or found by a scan,
//!   where no close event can be had) and its size and mtime then stayed
//!   the same for the whole settle time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::lease::Probe;

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

/// Which rule decides when a file is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judge {
    /// A read lease says whether a writer holds it open.
    Lease,
    /// Closed, then unchanged for the settle time.
    Settle,
}

/// How long a file must be unchanged, per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waits {
    /// Lease-judged files: the quiet period after the last change.
    pub quiet: Duration,
    /// Settle-judged files: the settle time after close.
    pub settle: Duration,
}

#[derive(Debug, Clone)]
struct Pending {
    stat: FileStat,
    stable_since: Instant,
    finished: bool,
    /// Created, and never written to since: linked in whole.
    linked: bool,
    judge: Judge,
    /// A lease probe since the last change found no writer.
    closed: bool,
}

impl Pending {
    /// What an observation of a followed file changes.
    fn update(&mut self, stat: FileStat, signal: Signal, now: Instant) {
        if self.stat != stat {
            self.stat = stat;
            self.stable_since = now;
            self.closed = false;
        }
        match signal {
            Signal::Changed => {
                self.finished = false;
                self.linked = false;
                self.closed = false;
            }
            // A name created again (deleted and created anew) starts over.
            Signal::Created => {
                self.finished = false;
                self.linked = true;
                self.closed = false;
            }
            Signal::Finished => self.finished = true,
            // A scan says nothing new about a file we already follow.
            Signal::Discovered => {}
        }
    }
}

/// Files seen but not yet handed out for upload.
#[derive(Debug)]
pub struct Tracker {
    /// The rule new files start with.
    judge: Judge,
    waits: Waits,
    pending: HashMap<PathBuf, Pending>,
}

impl Tracker {
    pub fn new(judge: Judge, waits: Waits) -> Self {
        Self {
            judge,
            waits,
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
            Some(p) => p.update(stat, signal, now),
            None => {
                self.pending.insert(
                    path.to_owned(),
                    Pending {
                        stat,
                        stable_since: now,
                        finished: matches!(signal, Signal::Finished | Signal::Discovered),
                        linked: signal == Signal::Created,
                        judge: self.judge,
                        closed: false,
                    },
                );
            }
        }
    }

    /// Re-stats every followed file with `stat` (`None`: gone), in place,
    /// so a change restarts its wait; a scan's signal says nothing new.
    pub fn restat(&mut self, now: Instant, stat: impl Fn(&Path) -> Option<FileStat>) {
        self.pending.retain(|path, p| match stat(path) {
            Some(s) => {
                p.update(s, Signal::Discovered, now);
                true
            }
            None => false,
        });
    }

    /// How long the file has been unchanged: since it was last seen to
    /// change, or, for a lease-judged file, since its mtime if that is
    /// longer ago (a backlog file closed an hour ago is quiet at once).
    fn quiet_for(p: &Pending, now: Instant, wall: SystemTime) -> Duration {
        let seen = now.saturating_duration_since(p.stable_since);
        match p.judge {
            Judge::Lease => seen.max(wall.duration_since(p.stat.mtime).unwrap_or_default()),
            Judge::Settle => seen,
        }
    }

    /// Lease-judged files that have been quiet long enough and need a probe
    /// to tell whether a writer still holds them.
    pub fn to_probe(&self, now: Instant, wall: SystemTime) -> Vec<PathBuf> {
        self.pending
            .iter()
            .filter(|(_, p)| p.judge == Judge::Lease && !p.closed)
            .filter(|(_, p)| Self::quiet_for(p, now, wall) >= self.waits.quiet)
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// Records what a lease probe found. A refused lease moves the file to
    /// the settle rule for as long as it is followed.
    pub fn probed(&mut self, path: &Path, probe: Probe) {
        if let Some(p) = self.pending.get_mut(path) {
            match probe {
                Probe::Closed => p.closed = true,
                Probe::OpenForWrite => p.closed = false,
                Probe::Refused(_) => p.judge = Judge::Settle,
            }
        }
    }

    fn is_due(waits: Waits, p: &Pending, now: Instant, wall: SystemTime) -> bool {
        match p.judge {
            Judge::Lease => p.closed && Self::quiet_for(p, now, wall) >= waits.quiet,
            // A linked-in file must hold something: an empty one may be a
            // writer's fresh file it has not written to yet.
            Judge::Settle => {
                (p.finished || (p.linked && p.stat.size > 0))
                    && Self::quiet_for(p, now, wall) >= waits.settle
            }
        }
    }

    /// Removes and returns the files that are due, with the rule that
    /// judged each, oldest mtime first (then by path, so the order is
    /// deterministic).
    pub fn take_due(&mut self, now: Instant, wall: SystemTime) -> Vec<(PathBuf, FileStat, Judge)> {
        let waits = self.waits;
        let mut due: Vec<(PathBuf, FileStat, Judge)> = self
            .pending
            .extract_if(|_, p| Self::is_due(waits, p, now, wall))
            .map(|(path, p)| (path, p.stat, p.judge))
            .collect();
        due.sort_by(|a, b| a.1.mtime.cmp(&b.1.mtime).then_with(|| a.0.cmp(&b.0)));
        due
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

    /// The files waiting to be finished, with their last write.
    pub fn waiting(&self) -> impl Iterator<Item = (&Path, SystemTime)> {
        self.pending
            .iter()
            .map(|(p, w)| (p.as_path(), w.stat.mtime))
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
    const QUIET: Duration = Duration::from_millis(100);
    /// The wall clock the settle rule never reads.
    const WALL: SystemTime = SystemTime::UNIX_EPOCH;

    fn settle_tracker() -> Tracker {
        Tracker::new(
            Judge::Settle,
            Waits {
                quiet: QUIET,
                settle: SETTLE,
            },
        )
    }

    fn lease_tracker() -> Tracker {
        Tracker::new(
            Judge::Lease,
            Waits {
                quiet: QUIET,
                settle: SETTLE,
            },
        )
    }

    fn stat(size: u64, mtime_s: u64) -> Option<FileStat> {
        Some(FileStat {
            size,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(mtime_s),
        })
    }

    #[test]
    fn open_file_is_never_due_however_long_it_is_stable() {
        let t0 = Instant::now();
        let mut t = settle_tracker();
        let p = Path::new("/d/1.json");
        t.observe(p, stat(10, 1), Signal::Changed, t0);
        assert!(t.take_due(t0 + Duration::from_secs(3600), WALL).is_empty());
        t.observe(
            p,
            stat(10, 1),
            Signal::Finished,
            t0 + Duration::from_secs(3600),
        );
        // Closed, and unchanged since long before: due at once.
        assert_eq!(t.take_due(t0 + Duration::from_secs(3600), WALL).len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn a_linked_in_file_is_due_but_a_created_one_being_written_is_not() {
        let t0 = Instant::now();
        let mut t = settle_tracker();
        let linked = Path::new("/d/linked.json");
        let written = Path::new("/d/written.json");
        let empty = Path::new("/d/empty.json");
        t.observe(linked, stat(10, 1), Signal::Created, t0);
        t.observe(written, stat(0, 1), Signal::Created, t0);
        t.observe(written, stat(10, 2), Signal::Changed, t0);
        t.observe(empty, stat(0, 1), Signal::Created, t0);
        let due: Vec<_> = t
            .take_due(t0 + SETTLE, WALL)
            .into_iter()
            .map(|(p, _, _)| p)
            .collect();
        assert_eq!(due, [PathBuf::from("/d/linked.json")]);
        assert!(t.take_due(t0 + Duration::from_secs(3600), WALL).is_empty());
    }

    #[test]
    fn a_change_restarts_the_settle_clock() {
        let t0 = Instant::now();
        let mut t = settle_tracker();
        let p = Path::new("/d/1.json");
        t.observe(p, stat(10, 1), Signal::Finished, t0);
        t.observe(
            p,
            stat(20, 2),
            Signal::Discovered,
            t0 + Duration::from_millis(400),
        );
        assert!(t.take_due(t0 + Duration::from_millis(600), WALL).is_empty());
        assert_eq!(t.take_due(t0 + Duration::from_millis(900), WALL).len(), 1);
    }

    #[test]
    fn reopened_after_close_waits_for_the_next_close() {
        let t0 = Instant::now();
        let mut t = settle_tracker();
        let p = Path::new("/d/1.json");
        t.observe(p, stat(10, 1), Signal::Finished, t0);
        t.observe(
            p,
            stat(10, 1),
            Signal::Changed,
            t0 + Duration::from_millis(100),
        );
        assert!(t.take_due(t0 + Duration::from_secs(10), WALL).is_empty());
    }

    #[test]
    fn gone_files_are_forgotten_and_due_files_come_oldest_first() {
        let t0 = Instant::now();
        let mut t = settle_tracker();
        t.observe(Path::new("/d/b"), stat(1, 5), Signal::Discovered, t0);
        t.observe(Path::new("/d/a"), stat(1, 7), Signal::Discovered, t0);
        t.observe(Path::new("/d/c"), stat(1, 1), Signal::Discovered, t0);
        t.observe(Path::new("/d/c"), None, Signal::Changed, t0);
        assert_eq!(t.oldest_mtime(), stat(1, 5).map(|s| s.mtime));
        let due: Vec<_> = t
            .take_due(t0 + SETTLE, WALL)
            .into_iter()
            .map(|(p, _, _)| p)
            .collect();
        assert_eq!(due, [PathBuf::from("/d/b"), PathBuf::from("/d/a")]);
    }

    /// Under the lease rule no close event is needed, but a probe after
    /// the last change is: a file held open for writing is never due,
    /// however quiet; one the probe found closed is due after the quiet
    /// period, and any change asks for a new probe.
    #[test]
    fn a_lease_judged_file_is_due_after_a_closed_probe_and_the_quiet_period() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        let mut t = lease_tracker();
        let p = Path::new("/d/1.json");
        t.observe(p, stat(10, 1), Signal::Changed, t0);
        assert!(t.to_probe(t0 + QUIET / 2, wall).is_empty(), "not quiet yet");
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(t.to_probe(later, wall), [p.to_path_buf()]);
        t.probed(p, Probe::OpenForWrite);
        assert!(t.take_due(later, wall).is_empty(), "a writer holds it");
        assert_eq!(t.to_probe(later, wall).len(), 1, "probed again next time");
        t.probed(p, Probe::Closed);
        assert!(t.to_probe(later, wall).is_empty());
        // A write after the probe: the verdict no longer holds.
        t.observe(p, stat(20, 1), Signal::Changed, later);
        assert!(t.take_due(later + QUIET, wall).is_empty());
        t.probed(p, Probe::Closed);
        assert!(
            t.take_due(later + QUIET / 2, wall).is_empty(),
            "quiet again first"
        );
        let due = t.take_due(later + QUIET, wall);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].2, Judge::Lease);
        assert!(t.is_empty());
    }

    /// A backlog file last written long ago is quiet at once: the quiet
    /// period counts from its mtime too.
    #[test]
    fn a_file_with_an_old_mtime_is_quiet_at_once_under_the_lease_rule() {
        let t0 = Instant::now();
        let mut t = lease_tracker();
        let p = Path::new("/d/old.json");
        t.observe(p, stat(10, 100), Signal::Discovered, t0);
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(200);
        assert_eq!(t.to_probe(t0, wall), [p.to_path_buf()]);
        t.probed(p, Probe::Closed);
        assert_eq!(t.take_due(t0, wall).len(), 1);
        // The settle rule waits its settle time from discovery whatever the mtime.
        let mut s = settle_tracker();
        s.observe(p, stat(10, 100), Signal::Discovered, t0);
        assert!(s.take_due(t0, wall).is_empty());
        assert_eq!(s.take_due(t0 + SETTLE, wall).len(), 1);
    }

    /// A refused lease moves the file to the settle rule: a close event (or
    /// a scan) and the settle time, and no more probes.
    #[test]
    fn a_refused_lease_falls_back_to_the_settle_rule() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        let mut t = lease_tracker();
        let p = Path::new("/d/theirs.json");
        t.observe(p, stat(10, 1), Signal::Changed, t0);
        t.probed(p, Probe::Refused(crate::lease::Refusal::NotOwner));
        let later = t0 + Duration::from_secs(3600);
        assert!(t.to_probe(later, wall).is_empty());
        assert!(t.take_due(later, wall).is_empty(), "no close event yet");
        // Closed, and unchanged for an hour: due at once, by the settle rule.
        t.observe(p, stat(10, 1), Signal::Finished, later);
        let due = t.take_due(later, wall);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].2, Judge::Settle);
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
            let mut t = settle_tracker();
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
                let due = t.take_due(now, WALL);
                let whole = finished || (linked && size > 0);
                let expect = whole && now.duration_since(last_change) >= SETTLE;
                prop_assert_eq!(due.len() == 1, expect);
                if expect {
                    prop_assert_eq!(Some(due[0].1), s);
                    tracked = false;
                }
            }
        }

        /// Under the lease rule, whatever the interleaving of changes,
        /// probes and clocks, a file is due exactly when the last probe
        /// since its last change found it closed and it has been quiet for
        /// the quiet period, by the monotonic clock or by its mtime.
        #[test]
        fn lease_rule_due_only_after_a_closed_probe_since_the_last_change(
            steps in proptest::collection::vec((0u8..5, 0u64..3, 0u64..80), 1..40)
        ) {
            let t0 = Instant::now();
            let mut t = lease_tracker();
            let p = Path::new("/d/x");
            let mut now = t0;
            let mut wall = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
            let mut last_change = t0;
            let mut last_stat: Option<FileStat> = None;
            let mut closed = false;
            let mut tracked = false;
            for (action, size, dt) in steps {
                now += Duration::from_millis(dt);
                wall += Duration::from_millis(dt);
                // mtime: one of three instants around the wall clock.
                let s = Some(FileStat { size, mtime: wall - Duration::from_millis(size * 70) });
                match action {
                    0 | 1 => {
                        let signal = [Signal::Changed, Signal::Finished][action as usize];
                        if !tracked || last_stat != s { last_change = now; closed = false; }
                        if signal == Signal::Changed { closed = false; }
                        tracked = true;
                        last_stat = s;
                        t.observe(p, s, signal, now);
                    }
                    2 if tracked => { t.probed(p, Probe::Closed); closed = true; }
                    3 if tracked => { t.probed(p, Probe::OpenForWrite); closed = false; }
                    _ => {}
                }
                let due = t.take_due(now, wall);
                let quiet = match last_stat {
                    Some(st) => now.duration_since(last_change)
                        .max(wall.duration_since(st.mtime).unwrap_or_default()),
                    None => Duration::ZERO,
                };
                let expect = tracked && closed && quiet >= QUIET;
                prop_assert_eq!(due.len() == 1, expect);
                if expect {
                    prop_assert_eq!(Some(due[0].1), last_stat);
                    tracked = false;
                    closed = false;
                }
            }
        }
    }
}
