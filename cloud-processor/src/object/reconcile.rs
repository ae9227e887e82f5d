//! Reconciling an edge agent's completeness manifests against done markers:
//! which files a host wrote are not (yet) in SQS, and why.
//!
//! A manifest's own event reconciles the manifest `lag` places before it,
//! where `lag` manifests span the grace period: by then every file it
//! lists should have its done marker. So each manifest is checked once,
//! with no state of our own, and a missing one (a gap in the sequence) is
//! found the same way. Refused files and files waiting since before the
//! grace period are reported from the newest manifest, as the agent sees
//! them now. Requests: one GET and one LIST per manifest, and one HEAD per
//! file listed (never per record).

use std::time::Duration;

use relay_shared::manifest::{self, Manifest, ManifestError, Refused, Waiting};
use relay_shared::store::{ObjectStore, S3Error};
use serde::Serialize;
use tracing::{error, info};

use crate::metrics as m;
use crate::object::marker::StateKeys;

/// What reconciling one manifest found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Findings {
    pub source: String,
    /// The manifest whose files were checked, if one was due.
    pub checked: Option<String>,
    /// Files the agent stored that have no done marker after the grace period.
    pub missing: Vec<MissingFile>,
    /// Files the agent cannot upload, as it said just now.
    pub refused: Vec<Refused>,
    pub refused_more: u64,
    /// Files waiting on the host since before the grace period.
    pub stalled: Vec<Waiting>,
    /// Manifest sequence numbers that are not in S3.
    pub gaps: Vec<u64>,
}

/// A file in S3 that never got its done marker: its notification was lost
/// or failed for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingFile {
    pub file: String,
    pub key: String,
    /// The command that sends exactly this object.
    pub fix: String,
}

impl Findings {
    /// How many things need a person.
    pub fn count(&self) -> u64 {
        (self.missing.len() + self.refused.len() + self.stalled.len() + self.gaps.len()) as u64
            + self.refused_more
    }
}

/// Why a manifest could not be reconciled.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Not a manifest (or not one this build reads): reported, never retried.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// S3 failed: worth another try.
    #[error(transparent)]
    S3(#[from] S3Error),
}

/// Where the state is, and how long a file may take.
#[derive(Debug, Clone)]
pub struct Ledger<'a> {
    pub state_prefix: &'a str,
    pub raw_prefix: &'a str,
    pub grace: Duration,
}

impl Ledger<'_> {
    /// Reconciles on the event of the manifest at `key`, at `now_ms`.
    pub async fn on_manifest<S: ObjectStore>(
        &self,
        store: &S,
        key: &str,
        now_ms: u64,
    ) -> Result<Findings, ReconcileError> {
        let newest = read(store, key).await?;
        let mut found = Findings {
            source: newest.source.clone(),
            refused: newest.refused.clone(),
            refused_more: newest.refused_more,
            stalled: self.stalled(&newest, now_ms),
            ..Findings::default()
        };
        let lag = self.lag(newest.interval_secs);
        let Some(due) = newest.seq.checked_sub(lag).filter(|s| *s >= 1) else {
            return Ok(found);
        };
        let prefix = manifest::seq_prefix(&newest.source, newest.epoch_ms, due);
        match store.list(&prefix, 1).await?.into_iter().next() {
            None => found.gaps.push(due),
            Some(listed) => {
                let old = read(store, &listed.key).await?;
                found.missing = self.missing(store, &old).await?;
                found.checked = Some(listed.key);
            }
        }
        Ok(found)
    }

    /// How many manifests back spans the grace period (at least one).
    fn lag(&self, interval_secs: u64) -> u64 {
        self.grace.as_secs().div_ceil(interval_secs.max(1)).max(1)
    }

    /// The files `m` says are waiting since before the grace period.
    pub fn stalled(&self, m: &Manifest, now_ms: u64) -> Vec<Waiting> {
        let grace_ms = u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX);
        m.waiting
            .iter()
            .filter(|w| now_ms.saturating_sub(w.since_ms) > grace_ms)
            .cloned()
            .collect()
    }

    /// The files of `m` whose done marker is not there.
    pub async fn missing<S: ObjectStore>(
        &self,
        store: &S,
        m: &Manifest,
    ) -> Result<Vec<MissingFile>, S3Error> {
        let mut missing = Vec::new();
        for f in &m.uploaded {
            let done = StateKeys::new(self.state_prefix, self.raw_prefix, &f.key).done;
            if store.head(&done).await?.is_none() {
                missing.push(MissingFile {
                    file: f.file.clone(),
                    key: f.key.clone(),
                    fix: replay_command(store.name(), &f.key),
                });
            }
        }
        Ok(missing)
    }
}

/// Logs each finding with what fixes it, and counts them per source.
/// Returns how many there are.
pub fn note(found: &Findings) -> u64 {
    let source = found.source.as_str();
    for f in &found.missing {
        error!(source, file = %f.file, key = %f.key, fix = %f.fix,
            "stored by the edge agent longer than the grace period ago, and still without its done marker (its notification was lost or failed)");
    }
    for f in &found.refused {
        error!(source, file = %f.file, reason = %f.reason, "the edge agent cannot upload this file");
    }
    if found.refused_more > 0 {
        error!(
            source,
            more = found.refused_more,
            "more files the edge agent cannot upload than its manifest lists"
        );
    }
    for f in &found.stalled {
        error!(source, file = %f.file, since_ms = f.since_ms,
            "waiting on the edge host for longer than the grace period (a writer still holds it, or the agent is stuck)");
    }
    for seq in &found.gaps {
        error!(
            source,
            seq,
            "the edge agent's manifest with this sequence number is not in S3: what it listed is unchecked (run `audit`)"
        );
    }
    let n = found.count();
    metrics::counter!(m::LEDGER_FINDINGS, "source" => source.to_owned()).increment(n);
    info!(
        source,
        checked = found.checked.as_deref().unwrap_or("none yet"),
        findings = n,
        "manifest reconciled"
    );
    n
}

/// A manifest that cannot be read is one finding of its source.
pub fn note_unreadable(key: &str, e: &ManifestError) -> u64 {
    let rest = key.strip_prefix(manifest::PREFIX).unwrap_or(key);
    let source = rest
        .split('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown");
    error!(key, error = %e, "an edge agent's manifest cannot be read; its files are unchecked");
    metrics::counter!(m::LEDGER_FINDINGS, "source" => source.to_owned()).increment(1);
    1
}

/// Reads and checks the manifest at `key`.
pub async fn read<S: ObjectStore>(store: &S, key: &str) -> Result<Manifest, ReconcileError> {
    let body = store.get_small(key).await?.bytes;
    Ok(Manifest::parse(key, &body)?)
}

/// The replay that sends exactly this object (to the destination in
/// `RELAY_FUNCTION_NAME` or `RELAY_NOTIFICATION_QUEUE_URL`), if it still
/// has no done marker.
pub fn replay_command(bucket: &str, key: &str) -> String {
    format!("cloud-processor replay --bucket {bucket} --prefix '{key}' --yes")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use relay_shared::testing::MemStore;

    const GRACE: Duration = Duration::from_secs(120);

    fn ledger() -> Ledger<'static> {
        Ledger {
            state_prefix: "state/",
            raw_prefix: "raw/",
            grace: GRACE,
        }
    }

    fn store_manifest(store: &MemStore, m: &Manifest) -> String {
        store.insert(&m.key(), &m.to_bytes());
        m.key()
    }

    #[tokio::test]
    async fn the_manifest_a_grace_period_back_is_checked_against_done_markers() {
        let store = MemStore::new("b");
        store_manifest(&store, &manifest::sample("s", 1, &["1.json", "2.json"]));
        store_manifest(&store, &manifest::sample("s", 2, &["3.json"]));
        let newest = store_manifest(&store, &manifest::sample("s", 3, &[]));
        store.insert("state/done/s/2026/12/05/12/1.json.zst", b"");
        let found = ledger().on_manifest(&store, &newest, 0).await.unwrap();
        assert_eq!(found.checked, Some(manifest::sample("s", 1, &[]).key()));
        let keys: Vec<_> = found.missing.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["raw/s/2026/12/05/12/2.json.zst"]);
        assert_eq!(
            found.missing[0].fix,
            "cloud-processor replay --bucket b --prefix 'raw/s/2026/12/05/12/2.json.zst' --yes"
        );
        assert!(found.gaps.is_empty());
    }

    #[tokio::test]
    async fn a_missing_manifest_is_a_gap_and_the_first_ones_check_nothing() {
        let store = MemStore::new("b");
        let second = store_manifest(&store, &manifest::sample("s", 2, &["x.json"]));
        let found = ledger().on_manifest(&store, &second, 0).await.unwrap();
        assert_eq!((found.checked, found.gaps), (None, vec![]));
        let fourth = store_manifest(&store, &manifest::sample("s", 4, &[]));
        let found = ledger().on_manifest(&store, &fourth, 0).await.unwrap();
        assert!(found.gaps.is_empty());
        assert_eq!(found.checked, Some(second));
        let fifth = store_manifest(&store, &manifest::sample("s", 5, &[]));
        let found = ledger().on_manifest(&store, &fifth, 0).await.unwrap();
        assert_eq!(found.gaps, vec![3]);
        assert_eq!(found.count(), 1);
    }

    #[tokio::test]
    async fn refused_and_long_waiting_files_are_reported_as_the_agent_sees_them() {
        let store = MemStore::new("b");
        let mut m = manifest::sample("s", 1, &[]);
        m.refused = vec![Refused {
            file: "bad".into(),
            reason: "no timestamp".into(),
        }];
        m.waiting = vec![
            Waiting {
                file: "old.json".into(),
                since_ms: 1_000,
            },
            Waiting {
                file: "new.json".into(),
                since_ms: 200_000,
            },
        ];
        let key = store_manifest(&store, &m);
        let found = ledger().on_manifest(&store, &key, 250_000).await.unwrap();
        assert_eq!(found.refused, m.refused);
        assert_eq!(found.stalled, m.waiting[..1]);
        assert_eq!(found.count(), 2);
    }

    #[tokio::test]
    async fn a_malformed_manifest_is_an_error_naming_its_key() {
        let store = MemStore::new("b");
        let key = manifest::sample("s", 1, &[]).key();
        store.insert(&key, b"{not json");
        let e = ledger().on_manifest(&store, &key, 0).await.unwrap_err();
        assert!(matches!(e, ReconcileError::Manifest(_)), "{e}");
        assert!(e.to_string().contains(&key), "{e}");
    }
}
