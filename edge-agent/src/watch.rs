//! inotify (via notify) events, reduced to what the agent acts on, and a
//! watch that follows the watch directory by its path: a directory removed,
//! renamed away or replaced (log rotation, a container's restart) is
//! noticed, by its own events and by a check of the path on every tick,
//! and the new one is watched.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::tracker::Signal;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMsg {
    /// Something happened to this path; a `stat` decides whether it still exists.
    File(PathBuf, Signal),
    /// A name was renamed into the watch: a finished file, or a directory
    /// whose files are already in it.
    Moved(PathBuf),
    /// A directory appeared (recursive mode): files may have landed in it
    /// before its watch was added, so it is scanned.
    Dir(PathBuf),
    /// The watch directory itself was removed or renamed away: its path is
    /// checked now.
    Root,
    /// Events were lost (inotify queue overflow) or the watch failed: rescan.
    Rescan(String),
}

/// A watch on a directory's path, re-established when the path comes to
/// name another directory.
pub struct Watch {
    dir: PathBuf,
    recursive: bool,
    tx: mpsc::Sender<WatchMsg>,
    state: State,
}

enum State {
    /// The (device, inode) watched, and the watcher, held for its `Drop`,
    /// which ends the watch.
    Watching {
        id: (u64, u64),
        _watcher: RecommendedWatcher,
    },
    Missing,
    Failed(String),
}

/// What a check of the watch directory's path found.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// As before: the directory watched, still missing, or still failing.
    Unchanged,
    /// The path no longer names a directory.
    Missing(String),
    /// The path names a new directory, and it is watched now.
    Rewatched,
    /// The path names a directory that cannot be watched.
    Failed(String),
}

impl Watch {
    /// Watches `dir`, which must exist now. Events are sent on `tx`; when
    /// the channel is full the notify thread waits, and the kernel queue
    /// absorbs the burst or overflows, which notify reports and the agent
    /// answers with a rescan.
    pub fn start(dir: &Path, recursive: bool, tx: mpsc::Sender<WatchMsg>) -> notify::Result<Self> {
        let mut watch = Self {
            dir: dir.to_owned(),
            recursive,
            tx,
            state: State::Missing,
        };
        let id = identity(dir).map_err(|e| notify::Error::io(e).add_path(dir.to_owned()))?;
        watch.state = State::Watching {
            id,
            _watcher: watch.new_watcher()?,
        };
        Ok(watch)
    }

    /// Whether a directory is watched now.
    pub fn is_watching(&self) -> bool {
        matches!(self.state, State::Watching { .. })
    }

    /// Checks that the path still names the directory watched. `force`
    /// (after the directory's own delete or move event) watches it again
    /// even if it looks the same: a directory created again may get the
    /// same inode number.
    pub fn check(&mut self, force: bool) -> Change {
        let id = match identity(&self.dir) {
            Ok(id) => id,
            Err(_) if matches!(self.state, State::Missing) => return Change::Unchanged,
            Err(e) => {
                self.state = State::Missing;
                return Change::Missing(e.to_string());
            }
        };
        if !force && matches!(&self.state, State::Watching { id: watched, .. } if *watched == id) {
            return Change::Unchanged;
        }
        // The old watcher goes first: it holds the old inode's watch.
        let before = std::mem::replace(&mut self.state, State::Missing);
        match self.new_watcher() {
            Ok(w) => {
                self.state = State::Watching { id, _watcher: w };
                Change::Rewatched
            }
            Err(e) => {
                let e = e.to_string();
                let again = matches!(&before, State::Failed(old) if *old == e);
                self.state = State::Failed(e.clone());
                if again {
                    Change::Unchanged
                } else {
                    Change::Failed(e)
                }
            }
        }
    }

    fn new_watcher(&self) -> notify::Result<RecommendedWatcher> {
        let tx = self.tx.clone();
        let root = self.dir.clone();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                for msg in classify(&root, res) {
                    if tx.blocking_send(msg).is_err() {
                        return; // The agent is shutting down.
                    }
                }
            })?;
        let mode = if self.recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        watcher.watch(&self.dir, mode)?;
        Ok(watcher)
    }
}

/// The (device, inode) of the directory `dir` names, following links.
fn identity(dir: &Path) -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata(dir)?;
    if !m.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "not a directory",
        ));
    }
    Ok((m.dev(), m.ino()))
}

fn classify(root: &Path, res: notify::Result<notify::Event>) -> Vec<WatchMsg> {
    let event = match res {
        Ok(e) => e,
        Err(e) => return vec![WatchMsg::Rescan(format!("watch error: {e}"))],
    };
    if event.need_rescan() {
        return vec![WatchMsg::Rescan("inotify queue overflow".into())];
    }
    // The directory's own delete or move: notify names it by its path.
    if event.paths.iter().any(|p| p == root)
        && matches!(
            event.kind,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
        )
    {
        return vec![WatchMsg::Root];
    }
    let each = |signal: Signal| {
        event
            .paths
            .iter()
            .map(|p| WatchMsg::File(p.clone(), signal))
            .collect()
    };
    match event.kind {
        EventKind::Create(CreateKind::Folder) => {
            event.paths.iter().cloned().map(WatchMsg::Dir).collect()
        }
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => each(Signal::Finished),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
            event.paths.iter().cloned().map(WatchMsg::Moved).collect()
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => match event.paths.as_slice() {
            [from, to] => vec![
                WatchMsg::File(from.clone(), Signal::Changed),
                WatchMsg::Moved(to.clone()),
            ],
            _ => each(Signal::Discovered),
        },
        // A directory removed within the tree: its files went with it.
        EventKind::Remove(RemoveKind::Folder) => Vec::new(),
        // Reads and attribute changes say nothing about whether a file is finished;
        // an mtime change is caught by the tracker's re-stat anyway.
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => Vec::new(),
        EventKind::Create(_) => each(Signal::Created),
        EventKind::Modify(_) | EventKind::Remove(_) => each(Signal::Changed),
        EventKind::Any | EventKind::Other => each(Signal::Discovered),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::Event;

    #[test]
    fn close_write_and_rename_in_finish_a_file() {
        let p = PathBuf::from("/d/1.json");
        let close =
            Event::new(EventKind::Access(AccessKind::Close(AccessMode::Write))).add_path(p.clone());
        assert_eq!(
            classify(Path::new("/d"), Ok(close)),
            [WatchMsg::File(p.clone(), Signal::Finished)]
        );
        let rename = Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
            .add_path(PathBuf::from("/d/.1.json.tmp"))
            .add_path(p.clone());
        assert_eq!(
            classify(Path::new("/d"), Ok(rename)),
            [
                WatchMsg::File(PathBuf::from("/d/.1.json.tmp"), Signal::Changed),
                WatchMsg::Moved(p.clone())
            ]
        );
        let write = Event::new(EventKind::Modify(ModifyKind::Data(
            notify::event::DataChange::Any,
        )))
        .add_path(p.clone());
        assert_eq!(
            classify(Path::new("/d"), Ok(write)),
            [WatchMsg::File(p, Signal::Changed)]
        );
    }

    #[test]
    fn overflow_and_errors_rescan() {
        let overflow = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(matches!(
            classify(Path::new("/d"), Ok(overflow)).as_slice(),
            [WatchMsg::Rescan(_)]
        ));
        let err = notify::Error::generic("boom");
        assert!(matches!(
            classify(Path::new("/d"), Err(err)).as_slice(),
            [WatchMsg::Rescan(_)]
        ));
    }

    #[test]
    fn the_directorys_own_delete_or_move_checks_its_path() {
        let root = Path::new("/d");
        for kind in [
            EventKind::Remove(RemoveKind::Folder),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
        ] {
            let event = Event::new(kind).add_path(root.to_owned());
            assert_eq!(classify(root, Ok(event)), [WatchMsg::Root], "{kind:?}");
        }
        let sub = Event::new(EventKind::Remove(RemoveKind::Folder)).add_path(root.join("sub"));
        assert_eq!(classify(root, Ok(sub)), []);
    }

    /// The path is followed: removed, it is missing (once); created again,
    /// it is watched again, and events from the new directory arrive.
    #[tokio::test]
    async fn a_replaced_directory_is_watched_again() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("in");
        std::fs::create_dir(&dir).unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let mut watch = Watch::start(&dir, false, tx).unwrap();
        assert_eq!(watch.check(false), Change::Unchanged);
        std::fs::rename(&dir, parent.path().join("old")).unwrap();
        assert!(matches!(watch.check(false), Change::Missing(_)));
        assert_eq!(watch.check(false), Change::Unchanged, "reported once");
        assert!(!watch.is_watching());
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(watch.check(false), Change::Rewatched);
        assert!(watch.is_watching());
        while rx.try_recv().is_ok() {}
        std::fs::write(dir.join("1.json"), "x").unwrap();
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(&msg, WatchMsg::File(p, _) if *p == dir.join("1.json")),
            "{msg:?}"
        );
        assert_eq!(watch.check(true), Change::Rewatched, "forced");
    }
}
