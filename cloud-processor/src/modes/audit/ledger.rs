//! `audit`'s completeness part: each source's manifests in the window,
//! checked against the done markers as the processor checks them, the
//! gaps in their sequence, and what the newest says is refused or stalled.

use std::collections::BTreeMap;

use relay_shared::manifest::{self, Manifest, Position};
use relay_shared::store::ObjectStore;
use serde::Serialize;

use crate::modes::ToolError;
use crate::modes::replay::Selection;
use crate::object::reconcile::{self, Findings, ReconcileError};

/// One source's ledger, as `audit` found it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceLedger {
    /// Manifests made in the window.
    pub manifests: usize,
    /// Files they list that were old enough to check.
    pub files_checked: usize,
    pub findings: Findings,
    /// Manifests that cannot be read: `<key>: <why>`.
    pub unreadable: Vec<String>,
}

impl SourceLedger {
    pub fn count(&self) -> u64 {
        self.findings.count() + self.unreadable.len() as u64
    }
}

/// The ledger of every source the selection covers.
pub async fn audit<S: ObjectStore>(
    store: &S,
    sel: &Selection,
    older_than_secs: i64,
    now_secs: i64,
) -> Result<Vec<SourceLedger>, ToolError> {
    let mut out = Vec::new();
    for source in sources(store, sel).await? {
        out.push(source_ledger(store, sel, &source, older_than_secs, now_secs).await?);
    }
    Ok(out)
}

/// The selection's source, if its prefix names one; else every source
/// with manifests.
async fn sources<S: ObjectStore>(store: &S, sel: &Selection) -> Result<Vec<String>, ToolError> {
    let rest = sel.prefix.strip_prefix(&sel.raw_prefix).unwrap_or_default();
    if let Some((source, _)) = rest.split_once('/') {
        return Ok(vec![source.to_owned()]);
    }
    let children = store.list_children(manifest::PREFIX).await?;
    Ok(children
        .prefixes
        .iter()
        .filter_map(|p| p.strip_prefix(manifest::PREFIX)?.strip_suffix('/'))
        .map(str::to_owned)
        .collect())
}

/// Every manifest key of `source`, by position; keys that are not a
/// manifest's go to `unreadable`.
async fn positions<S: ObjectStore>(
    store: &S,
    source: &str,
    unreadable: &mut Vec<String>,
) -> Result<BTreeMap<Position, String>, ToolError> {
    let mut all = BTreeMap::new();
    for listed in store
        .list(&manifest::source_prefix(source), usize::MAX)
        .await?
    {
        match manifest::parse_key(&listed.key) {
            Ok((_, at)) => {
                all.insert(at, listed.key);
            }
            Err(e) => unreadable.push(e.to_string()),
        }
    }
    Ok(all)
}

/// Sequence numbers missing between manifests of the same epoch.
fn gaps<'a>(seen: impl Iterator<Item = &'a Position>) -> Vec<u64> {
    let mut gaps = Vec::new();
    let mut last: Option<&Position> = None;
    for at in seen {
        if let Some(prev) = last.filter(|p| p.epoch_ms == at.epoch_ms) {
            gaps.extend(prev.seq + 1..at.seq);
        }
        last = Some(at);
    }
    gaps
}

async fn source_ledger<S: ObjectStore>(
    store: &S,
    sel: &Selection,
    source: &str,
    older_than_secs: i64,
    now_secs: i64,
) -> Result<SourceLedger, ToolError> {
    let mut out = SourceLedger::default();
    let all = positions(store, source, &mut out.unreadable).await?;
    let secs = |ms: u64| i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    let window: Vec<(&Position, &String)> = all
        .iter()
        .filter(|(at, _)| sel.covers(secs(at.created_ms)))
        .collect();
    let ledger = reconcile::Ledger {
        state_prefix: &sel.state_prefix,
        raw_prefix: &sel.raw_prefix,
        grace: std::time::Duration::from_secs(u64::try_from(older_than_secs).unwrap_or(0)),
    };
    out.findings.source = source.to_owned();
    out.findings.gaps = gaps(window.iter().map(|(at, _)| *at));
    out.manifests = window.len();
    // The window's last readable manifest, so the newest is not read twice.
    let mut last_read: Option<(Position, Manifest)> = None;
    for (at, key) in &window {
        let Some(mut m) = readable(store, key, &mut out.unreadable).await? else {
            continue;
        };
        m.uploaded
            .retain(|u| secs(u.stored_ms) <= now_secs - older_than_secs);
        out.files_checked += m.uploaded.len();
        out.findings
            .missing
            .extend(ledger.missing(store, &m).await?);
        last_read = Some((**at, m));
    }
    if let Some(newest) = newest_readable(store, &all, last_read).await? {
        let now_ms = u64::try_from(now_secs).unwrap_or(0).saturating_mul(1000);
        out.findings.refused = newest.refused.clone();
        out.findings.refused_more = newest.refused_more;
        out.findings.stalled = ledger.stalled(&newest, now_ms);
    }
    Ok(out)
}

/// The newest manifest that can be read (those that cannot are named
/// already): what the agent says now. `read` is one already read, used
/// instead of reading it again (its refused and waiting lists are whole).
async fn newest_readable<S: ObjectStore>(
    store: &S,
    all: &BTreeMap<Position, String>,
    read: Option<(Position, Manifest)>,
) -> Result<Option<Manifest>, ToolError> {
    for (at, key) in all.iter().rev() {
        if read.as_ref().is_some_and(|(r, _)| r == at) {
            return Ok(read.map(|(_, m)| m));
        }
        if let Some(m) = readable(store, key, &mut Vec::new()).await? {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

/// The manifest at `key`, or `None` with why in `unreadable`.
async fn readable<S: ObjectStore>(
    store: &S,
    key: &str,
    unreadable: &mut Vec<String>,
) -> Result<Option<Manifest>, ToolError> {
    match reconcile::read(store, key).await {
        Ok(m) => Ok(Some(m)),
        Err(ReconcileError::Manifest(e)) => {
            unreadable.push(e.to_string());
            Ok(None)
        }
        Err(ReconcileError::S3(e)) => Err(e.into()),
    }
}

/// The ledger as text: per source, what was checked and each finding with
/// what to do.
pub fn print(ledgers: &[SourceLedger]) {
    if ledgers.is_empty() {
        return println!("ledger: no manifests (RELAY_CANARY_SECS=0 on the agents, or none yet)");
    }
    for l in ledgers {
        let f = &l.findings;
        println!(
            "ledger {}: {} manifest(s), {} file(s) checked, {} finding(s)",
            f.source,
            l.manifests,
            l.files_checked,
            l.count()
        );
        for m in &f.missing {
            println!(
                "  missing: {} ({}): no done marker; next: {}",
                m.file, m.key, m.fix
            );
        }
        for r in &f.refused {
            println!("  refused on the host: {}: {}", r.file, r.reason);
        }
        if f.refused_more > 0 {
            println!("  refused on the host: {} more", f.refused_more);
        }
        for w in &f.stalled {
            let since = jiff::Timestamp::from_millisecond(i64::try_from(w.since_ms).unwrap_or(0))
                .map_or_else(|_| w.since_ms.to_string(), |t| t.to_string());
            println!(
                "  stalled on the host: {} (last written {since}): a writer still holds it, or the agent is stuck",
                w.file
            );
        }
        for seq in &f.gaps {
            println!(
                "  manifest {seq} missing: the agent could not store it (its log says why); the files it listed are unchecked"
            );
        }
        for u in &l.unreadable {
            println!("  unreadable manifest: {u}");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use relay_shared::manifest::{Refused, Waiting};
    use relay_shared::testing::MemStore;

    const MIN: u64 = 60_000;

    /// `audit` names the file stored without a done marker (with the replay
    /// that fixes it), the missing manifest, the refused and stalled files
    /// the newest manifest names, and an unreadable manifest; files too
    /// young to judge are not named.
    #[tokio::test]
    async fn audit_names_each_file_not_in_sqs_and_why() {
        let store = MemStore::new("b");
        let first = manifest::sample("s", 1, &["a.json", "b.json"]);
        store.insert(&first.key(), &first.to_bytes());
        store.insert("state/done/s/2026/12/05/12/b.json.zst", b"");
        let mut newest = manifest::sample("s", 3, &["young.json"]);
        newest.uploaded[0].stored_ms = 29 * MIN;
        newest.refused = vec![Refused {
            file: "notes".into(),
            reason: "no timestamp in the name".into(),
        }];
        newest.waiting = vec![Waiting {
            file: "held.json".into(),
            since_ms: MIN,
        }];
        store.insert(&newest.key(), &newest.to_bytes());
        store.insert("ledger/s/1/0000000004.240000.json", b"{");
        let sel = Selection::everything("b");
        let ledgers = audit(&store, &sel, 600, 30 * 60).await.unwrap();
        let [l] = &ledgers[..] else {
            panic!("{ledgers:?}")
        };
        let f = &l.findings;
        assert_eq!((l.manifests, l.files_checked), (3, 2));
        let missing: Vec<_> = f
            .missing
            .iter()
            .map(|m| (m.file.as_str(), m.fix.as_str()))
            .collect();
        assert_eq!(
            missing,
            [(
                "a.json",
                "cloud-processor replay --bucket b --prefix 'raw/s/2026/12/05/12/a.json.zst' --yes"
            )]
        );
        assert_eq!(f.gaps, vec![2]);
        assert_eq!(f.refused, newest.refused);
        // The newest readable manifest says what is refused and stalled.
        let stalled: Vec<_> = f.stalled.iter().map(|w| w.file.as_str()).collect();
        assert_eq!(stalled, ["held.json"]);
        let [bad] = &l.unreadable[..] else {
            panic!("{l:?}")
        };
        assert!(
            bad.contains("0000000004") && bad.contains("not a manifest"),
            "{bad}"
        );
        assert_eq!(l.count(), 5);
    }

    #[test]
    fn gaps_are_counted_within_an_epoch_only() {
        let at = |epoch_ms, seq| Position {
            epoch_ms,
            seq,
            created_ms: 0,
        };
        let seen = [at(1, 1), at(1, 2), at(1, 5), at(2, 1), at(2, 3)];
        assert_eq!(gaps(seen.iter()), vec![3, 4, 2]);
    }
}
