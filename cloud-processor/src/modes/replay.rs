//! `replay` and `audit`: operator tools over the bucket's raw objects and
//! their state. Replay re-sends S3 events for raw objects, to the
//! notification queue the processor consumes or to the function itself, so
//! replayed objects go through the same once-only protocol as live ones.

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use relay_shared::store::{Listed, ObjectStore, S3Error};
use serde::Serialize;

use crate::cli::{ConfigError, Range};
use crate::ingest::sqs::Notifications;
use crate::modes::lambda_api::Function;
use crate::object::lease::Lease;
use crate::object::marker::{self, StateKeys, StateObjects};

pub use crate::cli::ReplayMode as Mode;

/// Where replayed events go.
#[derive(Debug, Clone)]
pub enum Target {
    /// The notification queue the processor consumes (the usual way).
    Queue(Notifications),
    /// The function itself, invoked synchronously per object, so a failure
    /// is reported for the object that caused it.
    Function(Function),
}

impl Target {
    fn name(&self) -> &str {
        match self {
            Self::Queue(q) => q.queue_url(),
            Self::Function(f) => f.name(),
        }
    }

    async fn send(&self, key: &str, event: &serde_json::Value) -> Result<(), ReplayError> {
        let sent = match self {
            Self::Queue(q) => q.send(event.to_string()).await.map_err(|e| e.to_string()),
            Self::Function(f) => f.invoke(event).await,
        };
        sent.map_err(|message| ReplayError::Send {
            key: key.to_owned(),
            queue: self.name().to_owned(),
            message,
        })
    }
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct Selection {
    pub bucket: String,
    /// Under the raw prefix, e.g. `raw/edge-1/2026/11/21/` for one source's day.
    pub prefix: String,
    pub raw_prefix: String,
    pub state_prefix: String,
    /// Objects last modified at or after / before these instants (epoch seconds).
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// An RFC 3339 instant, in epoch seconds.
fn instant(name: &'static str, value: Option<&str>) -> Result<Option<i64>, ConfigError> {
    value
        .map(|v| {
            v.parse::<jiff::Timestamp>()
                .map(|t| t.as_second())
                .map_err(|_| ConfigError::Invalid {
                    name,
                    reason: format!(
                        "{v:?} is not an RFC 3339 instant such as 2026-11-21T00:00:00Z"
                    ),
                })
        })
        .transpose()
}

impl Selection {
    /// The objects `range` selects, with its instants parsed and checked.
    pub fn of(range: &Range, raw_prefix: &str) -> Result<Self, ConfigError> {
        let since = instant("--since", range.since.as_deref())?;
        let until = instant("--until", range.until.as_deref())?;
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            return Err(ConfigError::Invalid {
                name: "--since",
                reason: format!(
                    "{} is not before --until {}: the range selects nothing",
                    range.since.as_deref().unwrap_or_default(),
                    range.until.as_deref().unwrap_or_default()
                ),
            });
        }
        Ok(Self {
            bucket: range.bucket.clone(),
            prefix: range
                .prefix
                .clone()
                .unwrap_or_else(|| raw_prefix.to_owned()),
            raw_prefix: raw_prefix.to_owned(),
            state_prefix: range.state_prefix.clone(),
            since,
            until,
        })
    }
}

/// One raw object found by a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RawObject {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified_secs: i64,
    /// The current version in a versioned bucket, as a live event names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error("replaying {key} to {queue}: {message}")]
    Send {
        key: String,
        queue: String,
        message: String,
    },
    #[error("prefix {prefix:?} is not under the raw prefix {raw_prefix:?}")]
    Prefix { prefix: String, raw_prefix: String },
}

/// Keys in S3 events are URL-encoded; `/` is kept, as S3 does.
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The S3 notification S3 itself would send for `obj`.
pub fn event_for(bucket: &str, obj: &RawObject) -> serde_json::Value {
    serde_json::json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Replay",
        "s3": {
            "bucket": {"name": bucket},
            "object": {
                "key": utf8_percent_encode(&obj.key, KEY_ENCODE).to_string(),
                "size": obj.size,
                "eTag": obj.etag,
                "versionId": obj.version_id,
            }
        }
    }]})
}

impl From<Listed> for RawObject {
    fn from(l: Listed) -> Self {
        Self {
            key: l.key,
            size: l.size,
            etag: l.etag,
            last_modified_secs: l.last_modified_ms.map_or(0, |ms| ms.div_euclid(1000)),
            version_id: l.version_id,
        }
    }
}

/// Every key under `prefix`.
async fn keys<S: ObjectStore>(store: &S, prefix: &str) -> Result<Vec<String>, S3Error> {
    let listed = store.list(prefix, usize::MAX).await?;
    Ok(listed.into_iter().map(|l| l.key).collect())
}

/// Raw objects in the selection, oldest first.
pub async fn select<S: ObjectStore>(
    store: &S,
    sel: &Selection,
) -> Result<Vec<RawObject>, ReplayError> {
    if !sel.prefix.starts_with(&sel.raw_prefix) {
        return Err(ReplayError::Prefix {
            prefix: sel.prefix.clone(),
            raw_prefix: sel.raw_prefix.clone(),
        });
    }
    let mut objects: Vec<RawObject> = store
        .list_current(&sel.prefix)
        .await?
        .into_iter()
        .map(RawObject::from)
        .filter(|o| sel.since.is_none_or(|t| o.last_modified_secs >= t))
        .filter(|o| sel.until.is_none_or(|t| o.last_modified_secs < t))
        .collect();
    objects.sort_by(|a, b| (a.last_modified_secs, &a.key).cmp(&(b.last_modified_secs, &b.key)));
    Ok(objects)
}

/// Whether `obj` has a done marker.
pub async fn is_done<S: ObjectStore>(
    store: &S,
    sel: &Selection,
    obj: &RawObject,
) -> Result<bool, S3Error> {
    let keys = StateKeys::new(&sel.state_prefix, &sel.raw_prefix, &obj.key);
    Ok(StateObjects::new(store).read(&keys.done).await?.is_some())
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplaySummary {
    pub listed: usize,
    pub already_done: usize,
    pub markers_deleted: usize,
    /// Leases cleared by `reprocess` (left behind, or held by a run it restarts).
    pub leases_deleted: usize,
    pub sent: usize,
    /// In a dry run: what would have been sent (nothing is).
    pub would_send: usize,
}

/// Re-sends events for the selected objects. `progress(n, total, object,
/// action)` is called after each object. In `dry_run` nothing is deleted or sent.
#[allow(clippy::too_many_arguments)] // An operator command's full set of knobs.
pub async fn replay<S: ObjectStore>(
    store: &S,
    target: &Target,
    sel: &Selection,
    mode: Mode,
    dry_run: bool,
    per_second: u32,
    mut progress: impl FnMut(usize, usize, &RawObject, &str),
) -> Result<ReplaySummary, ReplayError> {
    let objects = select(store, sel).await?;
    let mut summary = ReplaySummary {
        listed: objects.len(),
        ..ReplaySummary::default()
    };
    let mut pace =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_second.max(1))));
    let total = objects.len();
    for (i, obj) in objects.iter().enumerate() {
        let n = i + 1;
        let done = is_done(store, sel, obj).await?;
        if done && mode == Mode::Missing {
            summary.already_done += 1;
            progress(n, total, obj, "done already");
            continue;
        }
        if dry_run {
            summary.would_send += 1;
            progress(n, total, obj, "would send");
            continue;
        }
        if mode == Mode::Reprocess {
            // The lease first, then the marker: stopped in between, the
            // object is still done, and running reprocess again finishes the
            // job. The other order could leave a lease recording every chunk
            // as sent and no marker, so the next attempt would send nothing
            // and call the object sent.
            let keys = StateKeys::new(&sel.state_prefix, &sel.raw_prefix, &obj.key);
            let state = StateObjects::new(store);
            if state.read(&keys.lease).await?.is_some() {
                state.remove(&keys.lease, None).await?;
                summary.leases_deleted += 1;
            }
            if done {
                state.remove(&keys.done, None).await?;
                summary.markers_deleted += 1;
            }
        }
        pace.tick().await;
        target.send(&obj.key, &event_for(&sel.bucket, obj)).await?;
        summary.sent += 1;
        progress(n, total, obj, "sent");
    }
    Ok(summary)
}

/// What `audit` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Raw objects older than the threshold without a done marker.
    pub unprocessed: Vec<RawObject>,
    /// Leases with no live owner (expired by S3's clock, or released after
    /// a failure): a processor died or failed, and no retry has come yet.
    pub stale_leases: Vec<String>,
    pub quarantined: Vec<String>,
    pub reject_reports: Vec<String>,
    /// Per edge source in the selection, its newest canary.
    pub last_canaries: Vec<LastCanary>,
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
pub async fn audit<S: ObjectStore>(
    store: &S,
    sel: &Selection,
    older_than_secs: i64,
    now_secs: i64,
) -> Result<AuditReport, ReplayError> {
    let mut report = AuditReport::default();
    let mut newest: std::collections::BTreeMap<String, (u64, RawObject)> = Default::default();
    for obj in select(store, sel).await? {
        if let Some(c) = relay_shared::keys::canary_of(&sel.raw_prefix, &obj.key) {
            let slot = newest.entry(c.source_id).or_insert((0, obj.clone()));
            if c.created_ms >= slot.0 {
                *slot = (c.created_ms, obj.clone());
            }
        }
        if obj.last_modified_secs <= now_secs - older_than_secs
            && !is_done(store, sel, &obj).await?
        {
            report.unprocessed.push(obj);
        }
    }
    for (source, (created_ms, obj)) in newest {
        report.last_canaries.push(LastCanary {
            processed: is_done(store, sel, &obj).await?,
            source,
            key: obj.key,
            created_ms,
        });
    }
    let folder = |f| marker::mirrored(&sel.state_prefix, f, &sel.raw_prefix, &sel.prefix);
    for lease in keys(store, &folder(marker::LEASES)).await? {
        // Judged as takers judge it, by S3's clock.
        let local_now_ms = u64::try_from(now_secs).unwrap_or(0) * 1000;
        if let Some(stored) = StateObjects::new(store).read(&lease).await?
            && serde_json::from_slice::<Lease>(&stored.bytes)
                .is_ok_and(|l| crate::object::lease::remaining_ms(&l, &stored, local_now_ms) == 0)
        {
            report.stale_leases.push(lease);
        }
    }
    report.quarantined = keys(store, &folder(marker::QUARANTINE)).await?;
    report.reject_reports = keys(store, &folder(marker::REJECTS)).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let sel = Selection {
            bucket: "b".into(),
            prefix: "raw/".into(),
            raw_prefix: "raw/".into(),
            state_prefix: "state/".into(),
            since: None,
            until: None,
        };
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
        );
    }

    #[test]
    fn a_replayed_event_names_what_a_live_one_names() {
        // S3's own event for a versioned bucket's object (the fields the
        // processor reads), and the replay of the same object.
        let live = serde_json::json!({"Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "s3": {
                "bucket": {"name": "bkt", "arn": "arn:aws:s3:::bkt"},
                "object": {
                    "key": "raw/e/2026/11/21/22/a%2Bb+%C3%BC.json.zst",
                    "size": 1234,
                    "eTag": "0123abcd",
                    "versionId": "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY",
                    "sequencer": "0055AED6DCD90281E5"
                }
            }
        }]});
        let replayed = event_for(
            "bkt",
            &RawObject {
                key: "raw/e/2026/11/21/22/a+b ü.json.zst".into(),
                size: 1234,
                etag: "0123abcd".into(),
                last_modified_secs: 0,
                version_id: Some("3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY".into()),
            },
        );
        let parse = |event: &serde_json::Value| match crate::ingest::event::classify(event).unwrap()
        {
            crate::ingest::event::Incoming::Notice(crate::ingest::event::Notice::Objects(
                mut objects,
            )) => objects.remove(0),
            other => panic!("{other:?}"),
        };
        let (live, replayed) = (parse(&live), parse(&replayed));
        assert_eq!(live, replayed);
        // So the same version is read, and the deduplication ids agree.
        let base = |o: &crate::ingest::event::ObjectRef| {
            crate::output::sqs::dedup_base(
                &o.bucket,
                &o.key,
                o.version_id.as_deref(),
                "etag-as-read",
            )
        };
        assert_eq!(
            crate::output::sqs::dedup_id(&base(&live), 7),
            crate::output::sqs::dedup_id(&base(&replayed), 7)
        );
    }

    #[test]
    fn replay_events_round_trip_through_the_event_parser() {
        let obj = RawObject {
            key: "raw/edge 1/2026/11/21/22/a+b ü.json.zst".into(),
            size: 10,
            etag: "abc".into(),
            last_modified_secs: 0,
            version_id: None,
        };
        let event = event_for("bkt", &obj);
        let crate::ingest::event::Incoming::Notice(crate::ingest::event::Notice::Objects(parsed)) =
            crate::ingest::event::classify(&event).unwrap()
        else {
            panic!("a replay event must name its object")
        };
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].key, obj.key);
        assert_eq!(parsed[0].bucket, "bkt");
    }
}
