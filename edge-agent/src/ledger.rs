//! The durable record of files already in S3, used when files are kept on disk.
//!
//! Without it a restart would re-upload every kept file: harmless (412) but
//! slow and costly. Each upload appends one line (`O_APPEND`); [`Ledger::sync`]
//! makes the appends durable with one fsync per batch (group commit), since
//! an fsync per file would cap the agent at the disk's sync rate. A crash can
//! at worst lose the lines of the last batch, files S3 already has, which
//! costs a duplicate 412 each on restart, never data. A torn last line, from
//! a crash mid-append, is ignored on load.
//!
//! A state directory that is full or read-only never stops uploads: the
//! ledger keeps its records in memory and stops appending after the first
//! failed write, so no torn line is ever followed by another (a fragment
//! glued to the next line could name a file never uploaded). It is repaired
//! by an atomic rewrite of the whole set once the directory can be written
//! again, which also drops the fragment.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::tracker::FileStat;

/// How often a ledger that cannot be written tries to rewrite itself.
const REPAIR_EVERY: Duration = Duration::from_secs(5);

/// What a ledger line says of a file: its size and mtime (nanoseconds) when
/// it was uploaded, or nothing for lines written before they were kept.
type Seen = Option<(u64, u128)>;

fn seen(stat: FileStat) -> Seen {
    let mtime = stat
        .mtime
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Some((stat.size, mtime))
}

/// `rel\tsize\tmtime_ns`, or a bare `rel` from an older agent.
fn parse_line(line: &str) -> (&str, Seen) {
    let mut parts = line.rsplitn(3, '\t');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(s), Some(rel)) => match (s.parse(), m.parse()) {
            (Ok(size), Ok(mtime)) => (rel, Some((size, mtime))),
            _ => (line, None),
        },
        _ => (line, None),
    }
}

fn format_line(rel: &str, seen: Seen) -> String {
    match seen {
        Some((size, mtime)) => format!("{rel}\t{size}\t{mtime}\n"),
        None => format!("{rel}\n"),
    }
}

/// The writes that can fail, as `relay_agent_state_errors_total` labels them.
pub const WRITE_OPS: &[&str] = &["create", "rewrite", "open", "append", "sync"];

/// Why the ledger's records are, for now, only in memory.
#[derive(Debug)]
pub struct Unwritable {
    /// What failed: `create`, `rewrite`, `open`, `append` or `sync`.
    pub op: &'static str,
    pub error: io::Error,
    last_try: Instant,
}

#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    /// The append handle; `None` while the file cannot be written.
    file: Option<File>,
    done: HashMap<String, Seen>,
    dirty: bool,
    unwritable: Option<Unwritable>,
}

impl Ledger {
    /// Opens (creating if needed) the ledger for one bucket in `state_dir`.
    /// Entries whose file no longer exists under `watch_dir` are compacted
    /// away. Fails only if an existing ledger cannot be read; one that
    /// cannot be written opens [`Ledger::unwritable`], in memory.
    pub fn open(state_dir: &Path, bucket: &str, watch_dir: &Path) -> io::Result<Self> {
        let path = state_dir.join(format!("uploaded-{bucket}.log"));
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        // The piece after the last newline is empty, or a torn append.
        lines.pop();
        let total = lines.len();
        let done: HashMap<String, Seen> = lines
            .into_iter()
            .filter_map(|l| std::str::from_utf8(l).ok())
            .map(parse_line)
            .filter(|(rel, _)| watch_dir.join(rel).exists())
            .map(|(rel, seen)| (rel.to_owned(), seen))
            .collect();
        let mut ledger = Self {
            path,
            file: None,
            done,
            dirty: false,
            unwritable: None,
        };
        let compact = ledger.done.len() < total || text.last().is_some_and(|&b| b != b'\n');
        let opened = std::fs::create_dir_all(state_dir)
            .map_err(|e| ("create", e))
            .and_then(|()| ledger.open_for_append(compact));
        if let Err((op, error)) = opened {
            ledger.unwritable = Some(Unwritable {
                op,
                error,
                last_try: Instant::now(),
            });
        }
        Ok(ledger)
    }

    /// Rewrites the file from the records in memory if `rewrite_first`,
    /// then opens it for appending.
    fn open_for_append(&mut self, rewrite_first: bool) -> Result<(), (&'static str, io::Error)> {
        if rewrite_first {
            rewrite(&self.path, &self.done).map_err(|e| ("rewrite", e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| ("open", e))?;
        self.file = Some(file);
        Ok(())
    }

    pub fn contains(&self, rel: &str) -> bool {
        self.done.contains_key(rel)
    }

    /// Whether `rel` was uploaded as it is now. A path whose size or mtime
    /// changed since holds other bytes: it goes to S3 again, where a 412
    /// leads to the conflict key. Lines from older agents, which kept no
    /// stat, count as a match.
    pub fn uploaded_as(&self, rel: &str, stat: FileStat) -> bool {
        match self.done.get(rel) {
            Some(None) => true,
            Some(s) => *s == seen(stat),
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why records are only in memory for now, if they are.
    pub fn unwritable(&self) -> Option<&Unwritable> {
        self.unwritable.as_ref()
    }

    /// Records that `rel` (a path relative to the watch dir) is in S3 as it
    /// is with `stat`. Durable after the next [`Ledger::sync`]. The record
    /// is kept in memory whatever happens; an error means it is not (yet)
    /// on disk, and the ledger stops appending until it is repaired.
    pub fn record(&mut self, rel: &str, stat: FileStat) -> io::Result<()> {
        if rel.contains('\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ledger entries cannot contain a newline: {rel:?}"),
            ));
        }
        let seen = seen(stat);
        if self.done.get(rel) == Some(&seen) {
            return Ok(());
        }
        self.done.insert(rel.to_owned(), seen);
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        // One write call per line: with O_APPEND, concurrent agents sharing
        // the file never interleave inside a line. A later line for the same
        // path supersedes an earlier one.
        match file.write_all(format_line(rel, seen).as_bytes()) {
            Ok(()) => {
                self.dirty = true;
                Ok(())
            }
            Err(e) => Err(self.broken("append", e)),
        }
    }

    /// Makes every record so far durable, with one fsync if anything
    /// changed; a ledger that cannot be written tries, every few seconds,
    /// to rewrite itself whole instead.
    pub fn sync(&mut self) -> io::Result<()> {
        if let Some(u) = &self.unwritable {
            if u.last_try.elapsed() < REPAIR_EVERY {
                return Ok(());
            }
            return self.repair();
        }
        if self.dirty
            && let Some(file) = &self.file
        {
            file.sync_data().map_err(|e| self.broken("sync", e))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Rewrites the ledger from memory, dropping any torn line.
    fn repair(&mut self) -> io::Result<()> {
        match self.open_for_append(true) {
            Ok(()) => {
                self.unwritable = None;
                self.dirty = false;
                Ok(())
            }
            Err((op, e)) => {
                let kind = e.kind();
                let message = e.to_string();
                self.unwritable = Some(Unwritable {
                    op,
                    error: e,
                    last_try: Instant::now(),
                });
                Err(io::Error::new(kind, message))
            }
        }
    }

    /// Stops appending after a failed write; returns the error to report.
    fn broken(&mut self, op: &'static str, error: io::Error) -> io::Error {
        self.file = None;
        let report = io::Error::new(error.kind(), error.to_string());
        self.unwritable = Some(Unwritable {
            op,
            error,
            last_try: Instant::now(),
        });
        report
    }

    /// Forgets a path whose file is gone, so the set does not grow forever.
    pub fn forget(&mut self, rel: &str) {
        self.done.remove(rel);
    }
}

/// Atomic replace: write a temp file, fsync it, rename, fsync the directory.
fn rewrite(path: &Path, done: &HashMap<String, Seen>) -> io::Result<()> {
    let tmp = path.with_extension("log.tmp");
    let mut entries: Vec<(&String, &Seen)> = done.iter().collect();
    entries.sort();
    let written = File::create(&tmp).and_then(|mut f| {
        for (rel, seen) in entries {
            f.write_all(format_line(rel, *seen).as_bytes())?;
        }
        f.sync_all()
    });
    if let Err(e) = written {
        // Do not leave a partial copy taking the space a retry needs.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(size: u64) -> FileStat {
        FileStat {
            size,
            mtime: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn lines_from_older_agents_still_count() {
        let watch = tempfile::tempdir().unwrap();
        let state = watch.path().join(".state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(watch.path().join("a\tb.json"), "x").unwrap();
        std::fs::write(watch.path().join("old.json"), "x").unwrap();
        std::fs::write(
            state.join("uploaded-bkt.log"),
            "old.json\na\tb.json\t3\t7\n",
        )
        .unwrap();
        let l = Ledger::open(&state, "bkt", watch.path()).unwrap();
        assert!(l.uploaded_as("old.json", stat(9)));
        let t = FileStat {
            size: 3,
            mtime: std::time::UNIX_EPOCH + std::time::Duration::from_nanos(7),
        };
        assert!(l.uploaded_as("a\tb.json", t), "tabs in names survive");
    }

    #[test]
    fn records_survive_reopen_and_torn_lines_are_dropped() {
        let watch = tempfile::tempdir().unwrap();
        let state = watch.path().join(".state");
        for name in ["a.json", "b.json", "c.json"] {
            std::fs::write(watch.path().join(name), "x").unwrap();
        }
        let mut l = Ledger::open(&state, "bkt", watch.path()).unwrap();
        l.record("a.json", stat(1)).unwrap();
        l.record("b.json", stat(2)).unwrap();
        l.record("a.json", stat(1)).unwrap();
        l.sync().unwrap();
        drop(l);
        // A crash mid-append leaves a partial line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(state.join("uploaded-bkt.log"))
            .unwrap();
        f.write_all(b"c.js").unwrap();
        drop(f);

        let l = Ledger::open(&state, "bkt", watch.path()).unwrap();
        assert!(l.contains("a.json") && l.contains("b.json"));
        assert!(!l.contains("c.json") && !l.contains("c.js"));
        assert_eq!(l.len(), 2);
        assert_eq!(
            std::fs::read_to_string(l.path()).unwrap(),
            "a.json\t1\t1000000000\nb.json\t2\t1000000000\n",
            "compaction rewrote the torn tail away"
        );
        assert!(l.uploaded_as("a.json", stat(1)));
        assert!(
            !l.uploaded_as("a.json", stat(5)),
            "changed since: upload again"
        );
    }

    #[test]
    fn entries_for_vanished_files_are_compacted() {
        let watch = tempfile::tempdir().unwrap();
        let state = watch.path().join(".state");
        std::fs::write(watch.path().join("a.json"), "x").unwrap();
        std::fs::write(watch.path().join("b.json"), "x").unwrap();
        let mut l = Ledger::open(&state, "bkt", watch.path()).unwrap();
        l.record("a.json", stat(1)).unwrap();
        l.record("b.json", stat(1)).unwrap();
        drop(l);
        std::fs::remove_file(watch.path().join("a.json")).unwrap();
        let l = Ledger::open(&state, "bkt", watch.path()).unwrap();
        assert!(!l.contains("a.json"));
        assert!(l.contains("b.json"));
        assert_eq!(
            std::fs::read_to_string(l.path()).unwrap(),
            "b.json\t1\t1000000000\n"
        );
        // A different bucket has its own ledger.
        assert!(
            Ledger::open(&state, "other", watch.path())
                .unwrap()
                .is_empty()
        );
    }
}
