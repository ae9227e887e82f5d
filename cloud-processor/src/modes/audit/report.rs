//! `audit`'s report: the raw objects, leases, quarantine and reject
//! reports and canaries of the selection, with each source's ledger
//! (`ledger.rs`) and file-name gaps (`gaps.rs`), as text or JSON, and its
//! exit code.

use relay_shared::store::{ObjectStore, PAGE_LIMIT, S3Error};
use serde::Serialize;

use super::gaps::{NameGap, NameGaps};
use super::ledger;
use crate::cli::Range;
use crate::modes::replay::{RawObject, Selection};
use crate::modes::{Exit, ToolError, tool_store};
use crate::object::lease::{self, Lease};
use crate::object::listing::SortedKeys;
use crate::object::marker::{self, StateKeys, StateObjects};

/// Every key under `prefix`.
async fn keys<S: ObjectStore>(store: &S, prefix: &str) -> Result<Vec<String>, S3Error> {
    let listed = store.list(prefix, usize::MAX).await?;
    Ok(listed.into_iter().map(|l| l.key).collect())
}

/// What `audit` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Raw objects older than the threshold without a done marker.
    pub unprocessed: Vec<RawObject>,
    /// Leases with no live owner (expired by S3's clock, or released after
    /// a failure) of objects without a done marker: a processor died or
    /// failed mid-object, and no retry has come yet.
    pub stale_leases: Vec<String>,
    /// Expired leases of objects that have their done marker: the holder
    /// finished, but its delete of the lease failed (or the answer to its
    /// marker was lost). Harmless; the next event for the object, or
    /// `audit --clean`, deletes them.
    pub finished_leases: Vec<String>,
    /// How many of `finished_leases` `--clean` deleted.
    pub cleaned_leases: usize,
    pub quarantined: Vec<String>,
    pub reject_reports: Vec<String>,
    /// Per edge source in the selection, its newest canary.
    pub last_canaries: Vec<LastCanary>,
    /// Per edge source, its manifests checked against the done markers.
    pub ledger: Vec<ledger::SourceLedger>,
    /// Stretches of a source's file names with no file (`--gap-mins`).
    pub name_gaps: Vec<NameGap>,
}

/// A source's newest canary (see the agent's `RELAY_CANARY_SECS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastCanary {
    pub source: String,
    pub key: String,
    /// When the agent made it (its clock).
    pub created_ms: u64,
    /// Whether it has its done marker.
    pub processed: bool,
}

/// Audits the selection: what is late, stuck, quarantined or rejected.
/// Raw objects are read page by page and known done by merging in their
/// markers' listing, so what is held is the findings, not the selection.
pub async fn audit<S: ObjectStore>(
    store: &S,
    sel: &Selection,
    older_than_secs: i64,
    now_secs: i64,
) -> Result<AuditReport, ToolError> {
    audit_with_gaps(store, sel, older_than_secs, None, now_secs).await
}

/// As [`audit`], and with `gap_mins`, the stretches of each source's file
/// names longer than that with no file.
pub async fn audit_with_gaps<S: ObjectStore>(
    store: &S,
    sel: &Selection,
    older_than_secs: i64,
    gap_mins: Option<u32>,
    now_secs: i64,
) -> Result<AuditReport, ToolError> {
    let mut report = AuditReport::default();
    let mut gaps = gap_mins.map(NameGaps::new);
    let mut newest: std::collections::BTreeMap<String, (u64, RawObject, bool)> = Default::default();
    let mut done = SortedKeys::new(
        store,
        marker::mirrored(
            &sel.state_prefix,
            marker::DONE,
            &sel.raw_prefix,
            &sel.prefix,
        ),
        None,
    );
    let listing = crate::object::listing::raw_listing(store).await?;
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_page(&sel.prefix, after.as_deref(), listing, PAGE_LIMIT)
            .await?;
        for obj in page.objects.into_iter().map(RawObject::from) {
            let in_range = sel.in_range(&obj);
            let Some(rel) = obj.key.strip_prefix(&sel.prefix).filter(|_| in_range) else {
                continue;
            };
            let is_done = done.contains(rel).await?;
            if let Some(gaps) = &mut gaps {
                gaps.see(&sel.raw_prefix, &obj.key);
            }
            if let Some(c) = relay_shared::keys::canary_of(&sel.raw_prefix, &obj.key) {
                let slot = newest
                    .entry(c.source_id)
                    .or_insert((0, obj.clone(), is_done));
                if c.created_ms >= slot.0 {
                    *slot = (c.created_ms, obj.clone(), is_done);
                }
            }
            if obj.last_modified_secs <= now_secs - older_than_secs && !is_done {
                report.unprocessed.push(obj);
            }
        }
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    for (source, (created_ms, obj, processed)) in newest {
        report.last_canaries.push(LastCanary {
            processed,
            source,
            key: obj.key,
            created_ms,
        });
    }
    let folder = |f| marker::mirrored(&sel.state_prefix, f, &sel.raw_prefix, &sel.prefix);
    let state = StateObjects::new(store);
    // Judged as takers judge them, by S3's clock.
    let local_now_ms = u64::try_from(now_secs).unwrap_or(0).saturating_mul(1000);
    for key in keys(store, &folder(marker::LEASES)).await? {
        let Some(stored) = state.read(&key).await? else {
            continue;
        };
        let expired = serde_json::from_slice::<Lease>(&stored.bytes)
            .is_ok_and(|l| lease::remaining_ms(&l, &stored, local_now_ms) == 0);
        if !expired {
            continue;
        }
        let keys = StateKeys::of_lease(&sel.state_prefix, &sel.raw_prefix, &key);
        if state.read(&keys.done).await?.is_some() {
            report.finished_leases.push(key);
        } else {
            report.stale_leases.push(key);
        }
    }
    report.quarantined = keys(store, &folder(marker::QUARANTINE)).await?;
    report.reject_reports = keys(store, &folder(marker::REJECTS)).await?;
    report.ledger = ledger::audit(store, sel, older_than_secs, now_secs).await?;
    report.name_gaps = gaps.map(|g| g.found).unwrap_or_default();
    Ok(report)
}

/// How `audit` runs, from its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub older_than_mins: i64,
    /// Report stretches of a source's file names longer than this with no file.
    pub gap_mins: Option<u32>,
    pub json: bool,
    /// Delete the leases finished objects left behind.
    pub clean: bool,
}

/// Deletes the leases of finished objects the report names (their done
/// markers exist, so no holder may send); returns how many went.
pub async fn clean<S: ObjectStore>(
    store: &S,
    sel: &Selection,
    report: &mut AuditReport,
) -> Result<(), ToolError> {
    let state = StateObjects::new(store);
    for key in &report.finished_leases {
        let keys = StateKeys::of_lease(&sel.state_prefix, &sel.raw_prefix, key);
        match lease::remove_lease(&state, &keys, None).await {
            Ok(()) | Err(S3Error::NotFound { .. }) => report.cleaned_leases += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `audit`: the report as text, or as JSON with `json`; with `clean`, the
/// leases finished objects left behind are deleted first.
pub async fn run(range: &Range, raw_prefix: &str, opts: &Options) -> Result<Exit, ToolError> {
    let sel = Selection::of(range, raw_prefix)?;
    let (_, store) = tool_store(range).await;
    let now = jiff::Timestamp::now().as_second();
    let older_than_mins = opts.older_than_mins;
    let mut report =
        audit_with_gaps(&store, &sel, older_than_mins * 60, opts.gap_mins, now).await?;
    if opts.clean {
        clean(&store, &sel, &mut report).await?;
    }
    if opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_audit(&report, &sel, (older_than_mins, opts.gap_mins), now);
    }
    Ok(if report.needs_a_person() {
        Exit::Findings
    } else {
        Exit::Success
    })
}

impl AuditReport {
    /// Whether anything found needs a person: exit 3.
    pub fn needs_a_person(&self) -> bool {
        !self.unprocessed.is_empty()
            || !self.stale_leases.is_empty()
            || self.ledger.iter().any(|l| l.count() > 0)
            || !self.name_gaps.is_empty()
    }
}

/// The audit as text: per finding, how many, how old, and what to do next.
fn print_audit(
    report: &AuditReport,
    sel: &Selection,
    (older_than_mins, gap_mins): (i64, Option<u32>),
    now: i64,
) {
    let age = |secs: i64| {
        let secs = secs.max(0);
        match secs {
            0..3600 => format!("{} min", secs / 60),
            3600..86_400 => format!("{:.1} h", secs as f64 / 3600.0),
            _ => format!("{:.1} days", secs as f64 / 86_400.0),
        }
    };
    let bucket = &sel.bucket;
    let prefix = &sel.prefix;
    let n = report.unprocessed.len();
    if n == 0 {
        println!("unprocessed: none older than {older_than_mins} min");
    } else {
        let oldest = report
            .unprocessed
            .iter()
            .map(|o| now - o.last_modified_secs)
            .max()
            .unwrap_or(0);
        println!(
            "unprocessed: {n} raw object(s) without a done marker after {older_than_mins} min, the oldest {}",
            age(oldest)
        );
        println!(
            "  next: look in the notification dead-letter queue for why; then \
             `cloud-processor replay --bucket {bucket} --prefix {prefix} --notification-queue-url Q` sends them again"
        );
        for o in &report.unprocessed {
            println!("  {} ({})", o.key, age(now - o.last_modified_secs));
        }
    }
    if report.last_canaries.is_empty() {
        println!(
            "canaries: none in the selection (RELAY_CANARY_SECS=0 on the agents, or none yet)"
        );
    } else {
        println!("last canary per source:");
        for c in &report.last_canaries {
            let made = i64::try_from(c.created_ms / 1000).unwrap_or(i64::MAX);
            println!(
                "  {}: made {} ago, {} ({})",
                c.source,
                age(now - made),
                if c.processed {
                    "processed"
                } else {
                    "not processed yet"
                },
                c.key
            );
        }
    }
    print_finished_leases(report, sel);
    ledger::print(&report.ledger);
    print_name_gaps(report, gap_mins);
    for (title, keys, next) in [
        (
            "leases of processors that died mid-object",
            &report.stale_leases,
            "a processor died or failed and no retry has come: replay the same prefix (missing mode); the retry resumes where the lease says",
        ),
        (
            "quarantined",
            &report.quarantined,
            "each record gives the reason; once fixed, `replay --mode reprocess --prefix <key>` sends the object again",
        ),
        (
            "reject reports",
            &report.reject_reports,
            "each report lists the rejected records with their byte ranges and reasons; the rest of each object was sent",
        ),
    ] {
        println!("{title}: {}", keys.len());
        if !keys.is_empty() {
            println!("  next: {next}");
        }
        for k in keys {
            println!("  {k}");
        }
    }
}

/// Stretches of each source's file names with no file, with what they may
/// also be.
fn print_name_gaps(report: &AuditReport, gap_mins: Option<u32>) {
    let Some(mins) = gap_mins else {
        return;
    };
    if report.name_gaps.is_empty() {
        return println!("file-name gaps: none over {mins} min");
    }
    println!(
        "file-name gaps over {mins} min: {} (names carry the host's clock: a clock that jumped \
         forward shows here too, while the manifests' sequence does not)",
        report.name_gaps.len()
    );
    for g in &report.name_gaps {
        println!(
            "  {}: {} min with no file, between {} and {}",
            g.source, g.minutes, g.after, g.before
        );
    }
}

/// Leases finished objects left behind: harmless, named, and deleted by
/// `--clean` (or by the next event for their object).
fn print_finished_leases(report: &AuditReport, sel: &Selection) {
    let n = report.finished_leases.len();
    if n == 0 {
        return println!("leases left behind by finished objects: none");
    }
    if report.cleaned_leases > 0 {
        return println!(
            "leases left behind by finished objects: {n}, deleted {}",
            report.cleaned_leases
        );
    }
    println!(
        "leases left behind by finished objects: {n} (harmless: each object is done; \
         `cloud-processor audit --bucket {} --prefix {} --clean` deletes them)",
        sel.bucket, sel.prefix
    );
    for k in &report.finished_leases {
        println!("  {k}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::marker::StateKeys;

    /// `audit` names each source's newest canary, and whether it was
    /// processed: a stalled source shows as an old or unprocessed one.
    #[tokio::test]
    async fn audit_shows_each_sources_last_canary() {
        use relay_shared::store::{PutMode, PutOptions};
        let store = relay_shared::testing::MemStore::new("b");
        let put = |key: String| {
            let store = store.clone();
            async move {
                store
                    .put(
                        &key,
                        b"x".to_vec(),
                        &PutMode::Create,
                        &PutOptions::default(),
                    )
                    .await
                    .unwrap();
            }
        };
        let canary = |source: &str, ms: u64| {
            relay_shared::keys::KeyScheme::new("raw/", source, relay_shared::keys::TimeFormat::Auto)
                .unwrap()
                .canary_key(ms)
                .1
                .key
        };
        for (source, ms) in [
            ("a", 1_795_800_000_000),
            ("a", 1_795_800_060_000),
            ("b", 1_795_800_030_000),
        ] {
            put(canary(source, ms)).await;
        }
        put("raw/a/2026/11/27/14/1795800000000.json.zst".into()).await;
        let done = StateKeys::new("state/", "raw/", &canary("b", 1_795_800_030_000)).done;
        put(done).await;
        let sel = Selection::everything("b");
        let report = audit(&store, &sel, 0, i64::MAX / 2).await.unwrap();
        let got: Vec<(&str, u64, bool)> = report
            .last_canaries
            .iter()
            .map(|c| (c.source.as_str(), c.created_ms, c.processed))
            .collect();
        assert_eq!(
            got,
            [
                ("a", 1_795_800_060_000, false),
                ("b", 1_795_800_030_000, true)
            ]
        ); // With --gap-mins, a source's files far apart by their names (the
        // canaries between them are no data) are a gap.
        put("raw/a/2026/11/27/15/1795803600000.json.zst".into()).await;
        let quiet = audit_with_gaps(&store, &sel, 0, Some(30), i64::MAX / 2)
            .await
            .unwrap();
        let gaps: Vec<_> = quiet
            .name_gaps
            .iter()
            .map(|g| (g.source.as_str(), g.minutes))
            .collect();
        assert_eq!(gaps, [("a", 60)]);
        assert!(
            audit(&store, &sel, 0, i64::MAX / 2)
                .await
                .unwrap()
                .name_gaps
                .is_empty()
        );
    }

    /// A lease a finished object left behind is told apart from one a
    /// processor left mid-object: only the second needs a person (exit 3),
    /// and `--clean` deletes the first.
    #[tokio::test]
    async fn finished_objects_leases_are_not_taken_for_dead_processors() {
        use relay_shared::store::{PutMode, PutOptions};
        let store = relay_shared::testing::MemStore::new("b");
        let lease =
            br#"{"owner":"p","expires_at_ms":0,"ttl_ms":60000,"fingerprint":"f","next_chunk":2}"#;
        let (done_key, died_key) = (
            "raw/a/2026/11/27/14/1795800000000.json.zst",
            "raw/a/2026/11/27/14/1795800000001.json.zst",
        );
        for key in [done_key, died_key] {
            store
                .put(key, b"x".to_vec(), &PutMode::Create, &PutOptions::default())
                .await
                .unwrap();
            store.insert(&StateKeys::new("state/", "raw/", key).lease, lease);
        }
        store.insert(&StateKeys::new("state/", "raw/", done_key).done, b"{}");
        let sel = Selection::everything("b");
        // Long after the leases' last writes, by S3's clock.
        store.at(4_000_000_000_000);
        let mut report = audit(&store, &sel, 0, 4_000_000_000).await.unwrap();
        let lease_of = |key| StateKeys::new("state/", "raw/", key).lease;
        assert_eq!(report.finished_leases, [lease_of(done_key)]);
        assert_eq!(report.stale_leases, [lease_of(died_key)]);
        clean(&store, &sel, &mut report).await.unwrap();
        assert_eq!(report.cleaned_leases, 1);
        assert!(store.bytes(&lease_of(done_key)).is_none());
        assert!(
            store.bytes(&lease_of(died_key)).is_some(),
            "a dead processor's lease is kept: it holds progress"
        );
    }
}
