//! A replay's progress on disk (`--checkpoint FILE`): per partition, the
//! last key whose event was sent (or that needed none), so a stopped replay
//! run again with the same file starts after it. Written after every batch
//! sent, by writing a new file and renaming it over the old one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::modes::ToolError;
use crate::modes::replay::{Mode, Selection};

/// Where one partition's walk stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Walked {
    /// Every key up to and including this one is handled.
    After(String),
    Done,
}

/// What a checkpoint is of, so it is never applied to another replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Of {
    bucket: String,
    prefix: String,
    raw_prefix: String,
    state_prefix: String,
    mode: String,
    since: Option<i64>,
    until: Option<i64>,
}

impl Of {
    fn new(sel: &Selection, mode: Mode) -> Self {
        Self {
            bucket: sel.bucket.clone(),
            prefix: sel.prefix.clone(),
            raw_prefix: sel.raw_prefix.clone(),
            state_prefix: sel.state_prefix.clone(),
            mode: format!("{mode:?}").to_lowercase(),
            since: sel.since,
            until: sel.until,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    of: Of,
    /// The partitions the first run found, each with its progress (absent:
    /// not started). A resumed run walks exactly these.
    partitions: BTreeMap<String, Option<Walked>>,
}

/// The progress of one replay, saved to `path` if it has one.
#[derive(Debug)]
pub struct Checkpoint {
    path: Option<PathBuf>,
    stored: Stored,
}

fn invalid(path: &Path, reason: impl std::fmt::Display) -> ToolError {
    ToolError::Checkpoint {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl Checkpoint {
    /// A fresh replay's progress over `partitions`, kept in memory only.
    pub fn new(sel: &Selection, mode: Mode, partitions: &[String]) -> Self {
        Self {
            path: None,
            stored: Stored {
                of: Of::new(sel, mode),
                partitions: partitions.iter().map(|p| (p.clone(), None)).collect(),
            },
        }
    }

    /// The checkpoint at `path`, if there is one: it must be of this
    /// selection and mode.
    pub fn load(path: &Path, sel: &Selection, mode: Mode) -> Result<Option<Self>, ToolError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(invalid(path, e)),
        };
        let stored: Stored = serde_json::from_str(&text).map_err(|e| invalid(path, e))?;
        let ours = Of::new(sel, mode);
        if stored.of != ours {
            return Err(invalid(
                path,
                format!(
                    "it is of another replay ({}); use another file, or delete it to start over",
                    serde_json::to_string(&stored.of).unwrap_or_default()
                ),
            ));
        }
        Ok(Some(Self {
            path: Some(path.to_owned()),
            stored,
        }))
    }

    /// Saves to `path` from now on.
    pub fn saved_at(mut self, path: &Path) -> Result<Self, ToolError> {
        self.path = Some(path.to_owned());
        self.save()?;
        Ok(self)
    }

    /// The partitions, with where each stands.
    pub fn partitions(&self) -> impl Iterator<Item = (&str, Option<&Walked>)> {
        self.stored
            .partitions
            .iter()
            .map(|(p, w)| (p.as_str(), w.as_ref()))
    }

    /// Where `partition` stands (`None`: not started).
    pub fn walked(&self, partition: &str) -> Option<&Walked> {
        self.stored
            .partitions
            .get(partition)
            .and_then(Option::as_ref)
    }

    /// Records that `partition` is handled up to `walked`, and saves.
    pub fn advance(&mut self, partition: &str, walked: Walked) -> Result<(), ToolError> {
        self.stored
            .partitions
            .insert(partition.to_owned(), Some(walked));
        self.save()
    }

    fn save(&self) -> Result<(), ToolError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text = serde_json::to_string_pretty(&self.stored).unwrap_or_default();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| invalid(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(prefix: &str) -> Selection {
        Selection {
            bucket: "b".into(),
            prefix: prefix.into(),
            raw_prefix: "raw/".into(),
            state_prefix: "state/".into(),
            since: None,
            until: Some(10),
        }
    }

    #[test]
    fn progress_survives_a_restart_and_belongs_to_one_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let parts = ["raw/a/".to_owned(), "raw/b/".to_owned()];
        let mut cp = Checkpoint::new(&sel("raw/"), Mode::Missing, &parts)
            .saved_at(&path)
            .unwrap();
        cp.advance("raw/a/", Walked::After("raw/a/1".into()))
            .unwrap();
        cp.advance("raw/b/", Walked::Done).unwrap();
        let back = Checkpoint::load(&path, &sel("raw/"), Mode::Missing)
            .unwrap()
            .unwrap();
        let got: Vec<_> = back.partitions().collect();
        assert_eq!(
            got,
            [
                ("raw/a/", Some(&Walked::After("raw/a/1".into()))),
                ("raw/b/", Some(&Walked::Done))
            ]
        );
        let err = Checkpoint::load(&path, &sel("raw/"), Mode::Reprocess).unwrap_err();
        assert!(err.to_string().contains("of another replay"), "{err}");
        assert!(
            Checkpoint::load(&dir.path().join("none"), &sel("raw/"), Mode::Missing)
                .unwrap()
                .is_none()
        );
        std::fs::write(&path, "{").unwrap();
        let err = Checkpoint::load(&path, &sel("raw/"), Mode::Missing).unwrap_err();
        assert!(err.to_string().contains("cp.json"), "{err}");
    }
}
