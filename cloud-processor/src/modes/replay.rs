//! `replay`: re-sends S3 events for raw objects, to the notification queue
//! the processor consumes or to the function itself, so replayed objects go
//! through the same once-only protocol as live ones: only objects without a
//! done marker (backfill), or all of them (reprocess).

use std::io::IsTerminal;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use relay_shared::store::{Listed, ObjectStore, S3Error};
use serde::Serialize;

use crate::cli::{ConfigError, Range, ReplayArgs};
use crate::ingest::sqs::Notifications;
use crate::modes::lambda_api::Function;
use crate::modes::{Exit, ToolError, tool_store};
use crate::object::marker::{StateKeys, StateObjects};

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

    async fn send(&self, key: &str, event: &serde_json::Value) -> Result<(), ToolError> {
        let sent = match self {
            Self::Queue(q) => q.send(event.to_string()).await.map_err(|e| e.to_string()),
            Self::Function(f) => f.invoke(event).await,
        };
        sent.map_err(|message| ToolError::Send {
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

/// Raw objects in the selection, oldest first.
pub async fn select<S: ObjectStore>(
    store: &S,
    sel: &Selection,
) -> Result<Vec<RawObject>, ToolError> {
    if !sel.prefix.starts_with(&sel.raw_prefix) {
        return Err(ToolError::Prefix {
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
) -> Result<ReplaySummary, ToolError> {
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

/// Asks before `reprocess` sends everything again, unless `--yes`.
fn confirm(sel: &Selection) -> Result<(), ToolError> {
    if !std::io::stdin().is_terminal() {
        return Err(ToolError::NeedsYes);
    }
    eprint!(
        "Reprocess every object under s3://{}/{}? Consumers will see their records again. Type 'reprocess': ",
        sel.bucket, sel.prefix
    );
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(ToolError::Prompt)?;
    if answer.trim() == "reprocess" {
        Ok(())
    } else {
        Err(ToolError::NotConfirmed)
    }
}

/// `replay`: progress on stderr (a dry run lists each object on stdout),
/// then its summary as one JSON line on stderr.
pub async fn run(r: ReplayArgs, raw_prefix: &str) -> Result<Exit, ToolError> {
    let sel = Selection::of(&r.range, raw_prefix)?;
    if r.mode == Mode::Reprocess && !r.dry_run && !r.yes {
        confirm(&sel)?;
    }
    let (sdk, store) = tool_store(&r.range).await;
    let target = match (r.notification_queue_url, r.function_name) {
        (Some(url), _) => Target::Queue(Notifications::connect(&sdk, url)),
        (None, Some(name)) => Target::Function(Function::new(&sdk, name)),
        (None, None) => return Err(ToolError::NoTarget),
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let dry_run = r.dry_run;
    let summary = replay(
        &store,
        &target,
        &sel,
        r.mode,
        dry_run,
        r.rate_per_sec,
        |n, total, obj, action| {
            bar.set_length(total as u64);
            bar.set_position(n as u64);
            if dry_run || !bar.is_hidden() {
                bar.set_message(format!("{action}: {}", obj.key));
            }
            if dry_run {
                bar.suspend(|| println!("{action}\t{}", obj.key));
            }
        },
    )
    .await?;
    bar.finish_and_clear();
    eprintln!("{}", serde_json::to_string(&summary).unwrap_or_default());
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

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
