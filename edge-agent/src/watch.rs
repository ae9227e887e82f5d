//! inotify (via notify) events, reduced to what the agent acts on.

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::tracker::Signal;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMsg {
    /// Something happened to this path; a `stat` decides whether it still exists.
    File(PathBuf, Signal),
    /// A directory appeared (recursive mode): files may have landed in it
    /// before its watch was added, so it is scanned.
    Dir(PathBuf),
    /// Events were lost (inotify queue overflow) or the watch failed: rescan.
    Rescan(String),
}

/// Starts watching. Events are sent on `tx`; when the channel is full the
/// notify thread waits, and the kernel queue absorbs the burst or overflows,
/// which notify reports and the agent answers with a rescan.
pub fn start(
    dir: &Path,
    recursive: bool,
    tx: mpsc::Sender<WatchMsg>,
) -> notify::Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        for msg in classify(res) {
            if tx.blocking_send(msg).is_err() {
                return; // The agent is shutting down.
            }
        }
    })?;
    let mode = if recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    watcher.watch(dir, mode)?;
    Ok(watcher)
}

fn classify(res: notify::Result<notify::Event>) -> Vec<WatchMsg> {
    let event = match res {
        Ok(e) => e,
        Err(e) => return vec![WatchMsg::Rescan(format!("watch error: {e}"))],
    };
    if event.need_rescan() {
        return vec![WatchMsg::Rescan("inotify queue overflow".into())];
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
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => each(Signal::Finished),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => match event.paths.as_slice() {
            [from, to] => vec![
                WatchMsg::File(from.clone(), Signal::Changed),
                WatchMsg::File(to.clone(), Signal::Finished),
            ],
            _ => each(Signal::Discovered),
        },
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
            classify(Ok(close)),
            [WatchMsg::File(p.clone(), Signal::Finished)]
        );
        let rename = Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
            .add_path(PathBuf::from("/d/.1.json.tmp"))
            .add_path(p.clone());
        assert_eq!(
            classify(Ok(rename)),
            [
                WatchMsg::File(PathBuf::from("/d/.1.json.tmp"), Signal::Changed),
                WatchMsg::File(p.clone(), Signal::Finished)
            ]
        );
        let write = Event::new(EventKind::Modify(ModifyKind::Data(
            notify::event::DataChange::Any,
        )))
        .add_path(p.clone());
        assert_eq!(classify(Ok(write)), [WatchMsg::File(p, Signal::Changed)]);
    }

    #[test]
    fn overflow_and_errors_rescan() {
        let overflow = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(matches!(
            classify(Ok(overflow)).as_slice(),
            [WatchMsg::Rescan(_)]
        ));
        let err = notify::Error::generic("boom");
        assert!(matches!(
            classify(Err(err)).as_slice(),
            [WatchMsg::Rescan(_)]
        ));
    }
}
