//! The durable record of files already in S3, used when files are kept on disk.
//!
//! Without it a restart would re-upload every kept file: harmless (412) but
//! slow and costly. Each upload appends one line (`O_APPEND`); [`Ledger::sync`]
//! makes the appends durable with one fsync per batch (group commit), since
//! an fsync per file would cap the agent at the disk's sync rate. A crash can
//! at worst lose the lines of the last batch, files S3 already has, which
//! costs a duplicate 412 each on restart, never data. A torn last line, from
//! a crash mid-append, is ignored on load.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    file: File,
    done: HashSet<String>,
    dirty: bool,
}

impl Ledger {
    /// Opens (creating if needed) the ledger for one bucket in `state_dir`.
    /// Entries whose file no longer exists under `watch_dir` are compacted away.
    pub fn open(state_dir: &Path, bucket: &str, watch_dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(state_dir)?;
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
        let done: HashSet<String> = lines
            .into_iter()
            .filter_map(|l| std::str::from_utf8(l).ok())
            .filter(|rel| watch_dir.join(rel).exists())
            .map(str::to_owned)
            .collect();
        if done.len() < total || text.last().is_some_and(|&b| b != b'\n') {
            rewrite(&path, &done)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Self {
            path,
            file,
            done,
            dirty: false,
        })
    }

    pub fn contains(&self, rel: &str) -> bool {
        self.done.contains(rel)
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

    /// Records that `rel` (a path relative to the watch dir) is in S3. Durable
    /// after the next [`Ledger::sync`].
    pub fn record(&mut self, rel: &str) -> io::Result<()> {
        if rel.contains('\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ledger entries cannot contain a newline: {rel:?}"),
            ));
        }
        if self.done.contains(rel) {
            return Ok(());
        }
        let mut line = Vec::with_capacity(rel.len() + 1);
        line.extend_from_slice(rel.as_bytes());
        line.push(b'\n');
        // One write call per line: with O_APPEND, concurrent agents sharing
        // the file never interleave inside a line.
        self.file.write_all(&line)?;
        self.done.insert(rel.to_owned());
        self.dirty = true;
        Ok(())
    }

    /// Makes every record so far durable, with one fsync if anything changed.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Forgets a path whose file is gone, so the set does not grow forever.
    pub fn forget(&mut self, rel: &str) {
        self.done.remove(rel);
    }
}

/// Atomic replace: write a temp file, fsync it, rename, fsync the directory.
fn rewrite(path: &Path, done: &HashSet<String>) -> io::Result<()> {
    let tmp = path.with_extension("log.tmp");
    let mut entries: Vec<&String> = done.iter().collect();
    entries.sort();
    let mut f = File::create(&tmp)?;
    for e in entries {
        f.write_all(e.as_bytes())?;
        f.write_all(b"\n")?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen_and_torn_lines_are_dropped() {
        let watch = tempfile::tempdir().unwrap();
        let state = watch.path().join(".state");
        for name in ["a.json", "b.json", "c.json"] {
            std::fs::write(watch.path().join(name), "x").unwrap();
        }
        let mut l = Ledger::open(&state, "bkt", watch.path()).unwrap();
        l.record("a.json").unwrap();
        l.record("b.json").unwrap();
        l.record("a.json").unwrap();
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
            "a.json\nb.json\n",
            "compaction rewrote the torn tail away"
        );
    }

    #[test]
    fn entries_for_vanished_files_are_compacted() {
        let watch = tempfile::tempdir().unwrap();
        let state = watch.path().join(".state");
        std::fs::write(watch.path().join("a.json"), "x").unwrap();
        std::fs::write(watch.path().join("b.json"), "x").unwrap();
        let mut l = Ledger::open(&state, "bkt", watch.path()).unwrap();
        l.record("a.json").unwrap();
        l.record("b.json").unwrap();
        drop(l);
        std::fs::remove_file(watch.path().join("a.json")).unwrap();
        let l = Ledger::open(&state, "bkt", watch.path()).unwrap();
        assert!(!l.contains("a.json"));
        assert!(l.contains("b.json"));
        assert_eq!(std::fs::read_to_string(l.path()).unwrap(), "b.json\n");
        // A different bucket has its own ledger.
        assert!(
            Ledger::open(&state, "other", watch.path())
                .unwrap()
                .is_empty()
        );
    }
}
