//! Where replayed events go, and how they are packed: several objects to a
//! notification (S3's own `Records` array), ten notifications to a
//! SendMessageBatch within SQS's batch size, or one synchronous invoke per
//! notification.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use relay_shared::retry::{Class, Classified};
use serde::Serialize;

use crate::aws::Function;
use crate::aws::SqsNotifications;
use crate::modes::ToolError;

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

impl From<relay_shared::store::Listed> for RawObject {
    fn from(l: relay_shared::store::Listed) -> Self {
        Self {
            key: l.key,
            size: l.size,
            etag: l.etag,
            last_modified_secs: l.last_modified_ms.map_or(0, |ms| ms.div_euclid(1000)),
            version_id: l.version_id,
        }
    }
}

/// Keys in S3 events are URL-encoded; `/` is kept, as S3 does.
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn record(bucket: &str, obj: &RawObject) -> serde_json::Value {
    serde_json::json!({
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
    })
}

/// The S3 notification S3 itself would send for `obj`.
pub fn event_for(bucket: &str, obj: &RawObject) -> serde_json::Value {
    events_for(bucket, std::slice::from_ref(obj))
}

/// One notification naming every object of `objs`, as S3's `Records`
/// array does. The processor handles each record on its own: one that
/// fails does not stop the others, and a redelivery skips the done ones.
pub fn events_for(bucket: &str, objs: &[RawObject]) -> serde_json::Value {
    let records: Vec<_> = objs.iter().map(|o| record(bucket, o)).collect();
    serde_json::json!({ "Records": records })
}

/// SendMessageBatch's limits: entries, and the bodies' total size.
const BATCH_ENTRIES: usize = 10;
const BATCH_BYTES: usize = 256 * 1024;

/// Packs notification bodies into batches of at most ten, whose sizes add
/// up to at most SendMessageBatch's 256 KiB.
pub fn batches(bodies: Vec<String>) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut bytes = 0;
    for body in bodies {
        let fits = out
            .last()
            .is_some_and(|b| b.len() < BATCH_ENTRIES && bytes + body.len() <= BATCH_BYTES);
        if !fits {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += body.len();
        if let Some(batch) = out.last_mut() {
            batch.push(body);
        }
    }
    out
}

/// Where replayed events go.
#[derive(Debug, Clone)]
pub enum Target {
    /// The notification queue the processor consumes (the usual way).
    Queue(SqsNotifications),
    /// The function itself, invoked synchronously per notification, so a
    /// failure is reported for the objects that caused it.
    Function(Function),
}

impl Target {
    pub fn name(&self) -> &str {
        match self {
            Self::Queue(q) => q.queue_url(),
            Self::Function(f) => f.name(),
        }
    }

    /// Sends events for `objs`, `per_event` objects to a notification.
    /// Returns the requests made.
    pub async fn send(
        &self,
        bucket: &str,
        objs: &[RawObject],
        per_event: usize,
    ) -> Result<u64, ToolError> {
        let failed = |message: String, class: Class, objs: &[RawObject]| ToolError::Send {
            key: match objs {
                [one] => one.key.clone(),
                [first, .., last] => format!("{} .. {}", first.key, last.key),
                [] => String::new(),
            },
            queue: self.name().to_owned(),
            message,
            class,
        };
        let events = objs.chunks(per_event.max(1));
        match self {
            Self::Queue(q) => {
                let bodies = events.map(|c| events_for(bucket, c).to_string()).collect();
                let mut requests = 0;
                for batch in batches(bodies) {
                    requests += q
                        .send_batch(&batch)
                        .await
                        .map_err(|e| failed(e.to_string(), e.class(), objs))?;
                }
                Ok(requests)
            }
            Self::Function(f) => {
                let mut requests = 0;
                for chunk in events {
                    f.invoke(&events_for(bucket, chunk))
                        .await
                        // The function's own failure: someone looks first.
                        .map_err(|message| failed(message, Class::Permanent, chunk))?;
                    requests += 1;
                }
                Ok(requests)
            }
        }
    }

    /// Objects a full request carries: ten notifications to a batch, or one
    /// to an invoke.
    pub fn objects_per_request(&self, per_event: usize) -> usize {
        match self {
            Self::Queue(_) => per_event * BATCH_ENTRIES,
            Self::Function(_) => per_event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_to_ten_entries_and_256_kib() {
        let small: Vec<String> = (0..25).map(|i| format!("{i}")).collect();
        let sizes: Vec<usize> = batches(small).iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let big = vec!["x".repeat(100 * 1024); 5];
        let sizes: Vec<usize> = batches(big).iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 2, 1]);
        assert!(batches(Vec::new()).is_empty());
    }

    #[test]
    fn several_objects_make_one_notification_the_processor_reads_whole() {
        let objs: Vec<RawObject> = (0..3)
            .map(|i| RawObject {
                key: format!("raw/e/2026/11/21/22/{i}.json.zst"),
                size: 10,
                etag: "abc".into(),
                last_modified_secs: 0,
                version_id: None,
            })
            .collect();
        let event = events_for("bkt", &objs);
        let crate::ingest::event::Incoming::Notice(crate::ingest::event::Notice::Objects(parsed)) =
            crate::ingest::event::classify(&event).unwrap()
        else {
            panic!("a replay event names its objects")
        };
        let keys: Vec<&str> = parsed.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            keys,
            objs.iter().map(|o| o.key.as_str()).collect::<Vec<_>>()
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
        let base = |o: &crate::object::ObjectRef| {
            crate::output::dedup_base(
                &o.bucket,
                &o.key,
                o.version_id.as_deref(),
                "etag-as-read",
                0,
            )
        };
        assert_eq!(
            crate::output::dedup_id(&base(&live), 7),
            crate::output::dedup_id(&base(&replayed), 7)
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
