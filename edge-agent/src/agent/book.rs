//! What the next completeness manifest will say, and where the manifest
//! sequence stands (kept in the state directory); `manifest.rs` builds and
//! stores manifests from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use relay_shared::manifest::{Manifest, Position, Uploaded};
use relay_shared::meta::now_ms;
use relay_shared::store::S3Error;
use tokio::task::JoinSet;
use tracing::info;

/// Manifests being stored (at most one at a time).
pub(super) type Puts = JoinSet<(Position, usize, Result<(), S3Error>)>;

/// What the next manifest will say, and where the sequence stands.
#[derive(Debug, Default)]
pub(super) struct Book {
    pub(super) epoch_ms: u64,
    /// The last sequence number stored.
    pub(super) seq: u64,
    /// Files S3 holds since the last manifest stored, oldest first.
    pub(super) stored: Vec<Uploaded>,
    /// Files refused by name, and why.
    pub(super) refused: BTreeMap<PathBuf, String>,
    /// The manifest tried and not yet stored: retried under the same key.
    pub(super) retry: Option<Position>,
    /// A manifest is due (the canary's interval passed).
    pub(super) due: bool,
}

impl Book {
    /// The sequence as the state directory has it (`<epoch> <seq>`), or a
    /// new epoch.
    pub(super) fn open(state_dir: &Path) -> Self {
        if let Some(book) = Self::pending(state_dir) {
            return book;
        }
        let path = state_dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut parts = text.split_whitespace().map(str::parse::<u64>);
        if let (Some(Ok(epoch_ms)), Some(Ok(seq))) = (parts.next(), parts.next()) {
            return Self {
                epoch_ms,
                seq,
                ..Self::default()
            };
        }
        let epoch_ms = now_ms();
        info!(
            epoch_ms,
            "manifests start a new sequence (no earlier one in the state directory)"
        );
        Self {
            epoch_ms,
            ..Self::default()
        }
    }

    /// The manifest the last run could not store before it stopped (its
    /// key, a newline, its body): stored first, under its own key.
    fn pending(state_dir: &Path) -> Option<Self> {
        let text = std::fs::read(state_dir.join(PENDING_FILE)).ok()?;
        let at = text.iter().position(|b| *b == b'\n')?;
        let key = std::str::from_utf8(&text[..at]).ok()?;
        let m = Manifest::parse(key, &text[at + 1..]).ok()?;
        info!(%key, files = m.uploaded.len(), "the manifest the last run could not store is stored first");
        Some(Self {
            epoch_ms: m.epoch_ms,
            seq: m.seq - 1,
            retry: Some(m.position()),
            stored: m.uploaded,
            ..Self::default()
        })
    }
}

/// The state directory's record of the manifest sequence.
pub(super) const STATE_FILE: &str = "manifest-sequence";
/// The manifest a shutdown could not store, for the next start.
pub(super) const PENDING_FILE: &str = "manifest-pending";
