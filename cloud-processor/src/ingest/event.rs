//! Events that name raw objects, and nothing silently dropped.
//!
//! Every payload is classified as exactly one of:
//! - objects to process: S3 notifications, delivered directly, inside SQS
//!   messages, or wrapped by SNS (`"Type": "Notification"`, the notification
//!   as a JSON string in `"Message"`, through SQS or delivered to the Lambda
//!   directly), and EventBridge "Object Created";
//! - ignored on purpose, with a reason: `s3:TestEvent` (sent when a
//!   notification is configured) and S3 events that create nothing;
//! - unknown: anything else, JSON or not, which is an error. It is never
//!   acknowledged, so it is retried and reaches the dead-letter queue.
//!
//! Parsed leniently with types of our own: emulators leave out fields AWS
//! sends (`userIdentity`, `sequencer`), which `aws_lambda_events` rejects.

use relay_shared::meta::decode_event_key;
use serde::Deserialize;
use serde_json::Value;

use crate::object::ObjectRef;

/// What one notification (an S3 event, or an envelope around one) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Objects(Vec<ObjectRef>),
    /// Deliberately not processed; the reason is logged and counted.
    Ignored(&'static str),
}

/// What an invocation carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A notification delivered to the function directly.
    Notice(Notice),
    /// SNS messages delivered to the function directly, each a notification.
    Sns(Vec<Notice>),
    /// SQS messages (from an event source mapping), each to succeed or fail alone.
    Sqs(Vec<SqsMessage>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsMessage {
    pub message_id: String,
    /// To change the message's visibility after a failure.
    pub receipt_handle: String,
    pub body: String,
    /// How many times this notification was handed on as a fresh one
    /// (its `relay.handoffs` attribute; 0 for one S3 sent).
    pub handoffs: u32,
}

/// The message attribute that counts a notification's hand-ons.
pub const HANDOFFS_ATTRIBUTE: &str = "relay.handoffs";

/// How many bytes of an unknown payload are logged.
pub const EXCERPT_BYTES: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the event has no known shape ({why}); it starts: {excerpt}")]
    Unknown { why: String, excerpt: String },
    #[error("object key {key:?} is not valid percent-encoded UTF-8")]
    Key { key: String },
}

impl EventError {
    fn unknown(why: impl std::fmt::Display, payload: &str) -> Self {
        let mut end = payload.len().min(EXCERPT_BYTES);
        while !payload.is_char_boundary(end) {
            end -= 1;
        }
        Self::Unknown {
            why: why.to_string(),
            excerpt: payload[..end].to_owned(),
        }
    }
}

#[derive(Deserialize)]
struct S3Record {
    #[serde(rename = "eventName", default)]
    event_name: String,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: NamedBucket,
    object: S3Object,
}

#[derive(Deserialize)]
struct NamedBucket {
    name: String,
}

#[derive(Deserialize)]
struct S3Object {
    key: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(rename = "eTag", default)]
    etag: Option<String>,
    #[serde(rename = "versionId", default)]
    version_id: Option<String>,
}

#[derive(Deserialize)]
struct SqsRecord {
    #[serde(rename = "messageId")]
    message_id: String,
    #[serde(rename = "receiptHandle", default)]
    receipt_handle: String,
    #[serde(default)]
    body: String,
    #[serde(rename = "messageAttributes", default)]
    attributes: std::collections::HashMap<String, SqsAttribute>,
}

#[derive(Deserialize)]
struct SqsAttribute {
    #[serde(rename = "stringValue", default)]
    string_value: Option<String>,
}

impl SqsRecord {
    fn handoffs(&self) -> u32 {
        self.attributes
            .get(HANDOFFS_ATTRIBUTE)
            .and_then(|a| a.string_value.as_deref()?.parse().ok())
            .unwrap_or(0)
    }
}

#[derive(Deserialize)]
struct SnsRecord {
    #[serde(rename = "Sns")]
    sns: SnsMessage,
}

#[derive(Deserialize)]
struct SnsMessage {
    #[serde(rename = "Message")]
    message: String,
}

#[derive(Deserialize)]
struct EventBridgeDetail {
    bucket: NamedBucket,
    object: EventBridgeObject,
}

#[derive(Deserialize)]
struct EventBridgeObject {
    key: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(rename = "version-id", default)]
    version_id: Option<String>,
}

/// The `eventSource` (SQS, S3) or `EventSource` (SNS) of the first record.
fn record_source(records: &[Value]) -> Option<&str> {
    let first = records.first()?;
    first
        .get("eventSource")
        .or_else(|| first.get("EventSource"))
        .and_then(Value::as_str)
}

/// Classifies a Lambda payload.
pub fn classify(event: &Value) -> Result<Incoming, EventError> {
    let text = || event.to_string();
    if let Some(records) = event.get("Records").and_then(Value::as_array) {
        match record_source(records) {
            Some("aws:sqs") => {
                let messages: Vec<SqsRecord> =
                    serde_json::from_value(Value::Array(records.clone()))
                        .map_err(|e| EventError::unknown(e, &text()))?;
                return Ok(Incoming::Sqs(
                    messages
                        .into_iter()
                        .map(|m| SqsMessage {
                            handoffs: m.handoffs(),
                            message_id: m.message_id,
                            receipt_handle: m.receipt_handle,
                            body: m.body,
                        })
                        .collect(),
                ));
            }
            Some("aws:sns") => {
                let messages: Vec<SnsRecord> =
                    serde_json::from_value(Value::Array(records.clone()))
                        .map_err(|e| EventError::unknown(e, &text()))?;
                return messages
                    .iter()
                    .map(|m| from_text(&m.sns.message))
                    .collect::<Result<_, _>>()
                    .map(Incoming::Sns);
            }
            _ => {}
        }
    }
    notice(event, &text).map(Incoming::Notice)
}

/// Parses an SQS message body or an SNS message: a notification as JSON text.
pub fn from_text(body: &str) -> Result<Notice, EventError> {
    let v: Value = serde_json::from_str(body)
        .map_err(|e| EventError::unknown(format!("not JSON: {e}"), body))?;
    notice(&v, &|| body.to_owned())
}

/// One notification: S3's own, SNS's envelope around one, or EventBridge's.
fn notice(v: &Value, text: &dyn Fn() -> String) -> Result<Notice, EventError> {
    if v.get("Type").and_then(Value::as_str) == Some("Notification")
        && let Some(message) = v.get("Message").and_then(Value::as_str)
    {
        return from_text(message);
    }
    if v.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Notice::Ignored("s3:TestEvent"));
    }
    if let Some(detail_type) = v.get("detail-type").and_then(Value::as_str) {
        return from_eventbridge(v, detail_type, text);
    }
    let Some(records) = v.get("Records").and_then(Value::as_array) else {
        return Err(EventError::unknown(
            "no S3 `Records`, SNS envelope or EventBridge detail",
            &text(),
        ));
    };
    if records.is_empty() {
        return Err(EventError::unknown("an empty `Records` list", &text()));
    }
    if record_source(records).is_some_and(|s| s != "aws:s3") {
        return Err(EventError::unknown(
            "records from a source other than S3",
            &text(),
        ));
    }
    let records: Vec<S3Record> = serde_json::from_value(Value::Array(records.clone()))
        .map_err(|e| EventError::unknown(e, &text()))?;
    let mut objects = Vec::new();
    for r in records {
        // Only creations name data to send; deletions, restores, tagging
        // and the like do not.
        if !r.event_name.is_empty() && !r.event_name.starts_with("ObjectCreated") {
            continue;
        }
        let key = decode_event_key(&r.s3.object.key).map_err(|_| EventError::Key {
            key: r.s3.object.key.clone(),
        })?;
        objects.push(ObjectRef {
            bucket: r.s3.bucket.name,
            key,
            etag: r.s3.object.etag,
            version_id: r.s3.object.version_id,
            size: r.s3.object.size,
        });
    }
    Ok(if objects.is_empty() {
        Notice::Ignored("S3 events that create no object")
    } else {
        Notice::Objects(objects)
    })
}

/// An EventBridge event from S3. EventBridge sends the key as stored, not
/// URL-encoded. Other S3 events are ignored; events from elsewhere are unknown.
fn from_eventbridge(
    v: &Value,
    detail_type: &str,
    text: &dyn Fn() -> String,
) -> Result<Notice, EventError> {
    if v.get("source")
        .and_then(Value::as_str)
        .is_some_and(|s| s != "aws.s3")
    {
        return Err(EventError::unknown(
            "an EventBridge event from a source other than S3",
            &text(),
        ));
    }
    if detail_type != "Object Created" {
        return Ok(Notice::Ignored("S3 events that create no object"));
    }
    let d: EventBridgeDetail = v
        .get("detail")
        .cloned()
        .ok_or_else(|| EventError::unknown("an EventBridge event without `detail`", &text()))
        .and_then(|d| serde_json::from_value(d).map_err(|e| EventError::unknown(e, &text())))?;
    Ok(Notice::Objects(vec![ObjectRef {
        bucket: d.bucket.name,
        key: d.object.key,
        etag: d.object.etag,
        version_id: d.object.version_id,
        size: d.object.size,
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn objects(i: Incoming) -> Vec<ObjectRef> {
        match i {
            Incoming::Notice(Notice::Objects(o)) => o,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn aws_s3_notification_with_plus_encoded_key() {
        let objs = objects(classify(&fixture("s3-put.json")).unwrap());
        assert_eq!(objs.len(), 1);
        assert_eq!(objs[0].bucket, "relay-bucket");
        assert_eq!(
            objs[0].key,
            "raw/edge 1/2026/11/21/22/1763800000000.json.zst"
        );
        assert_eq!(
            objs[0].etag.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(objs[0].size, Some(1024));
    }

    #[test]
    fn emulator_notification_without_user_identity_or_sequencer() {
        let objs = objects(classify(&fixture("s3-put-moto.json")).unwrap());
        assert_eq!(
            objs[0].key,
            "raw/edge 1/2026/11/21/22/1763800000000.json.zst"
        );
    }

    #[test]
    fn sqs_wrapped_notifications_and_test_events() {
        let Incoming::Sqs(msgs) = classify(&fixture("sqs-s3.json")).unwrap() else {
            panic!()
        };
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].message_id, "m-1");
        assert_eq!(
            (msgs[0].handoffs, msgs[1].handoffs),
            (3, 0),
            "relay.handoffs"
        );
        let Notice::Objects(objs) = from_text(&msgs[0].body).unwrap() else {
            panic!()
        };
        assert_eq!(objs[0].key, "raw/a/2026/11/21/22/1.json.zst");
        assert_eq!(
            from_text(&msgs[1].body).unwrap(),
            Notice::Ignored("s3:TestEvent")
        );
    }

    /// S3 -> SNS -> SQS without raw delivery: the SQS body is SNS's envelope.
    #[test]
    fn sns_envelopes_through_sqs_and_direct() {
        let Incoming::Sqs(msgs) = classify(&fixture("sqs-sns-s3.json")).unwrap() else {
            panic!()
        };
        let Notice::Objects(objs) = from_text(&msgs[0].body).unwrap() else {
            panic!("{:?}", from_text(&msgs[0].body))
        };
        assert_eq!(
            objs[0].key,
            "raw/edge 1/2026/11/21/22/1763800000000.json.zst"
        );
        assert_eq!(
            from_text(&msgs[1].body).unwrap(),
            Notice::Ignored("s3:TestEvent")
        );

        let Incoming::Sns(notices) = classify(&fixture("sns-s3.json")).unwrap() else {
            panic!()
        };
        let Notice::Objects(objs) = &notices[0] else {
            panic!()
        };
        assert_eq!(
            objs[0].key,
            "raw/edge 1/2026/11/21/22/1763800000000.json.zst"
        );
        assert_eq!(objs[0].version_id.as_deref(), Some("v-1"));
    }

    #[test]
    fn eventbridge_object_created() {
        let objs = objects(classify(&fixture("eventbridge.json")).unwrap());
        assert_eq!(
            objs[0].key, "raw/a/2026/11/21/22/1+2.json.zst",
            "EventBridge keys are not decoded"
        );
        assert_eq!(objs[0].version_id.as_deref(), Some("v1"));
        let mut deleted = fixture("eventbridge.json");
        deleted["detail-type"] = "Object Deleted".into();
        assert_eq!(
            classify(&deleted).unwrap(),
            Incoming::Notice(Notice::Ignored("S3 events that create no object"))
        );
    }

    #[test]
    fn non_create_events_are_ignored_on_purpose() {
        let mut deleted = fixture("s3-put.json");
        deleted["Records"][0]["eventName"] = "ObjectRemoved:Delete".into();
        assert_eq!(
            classify(&deleted).unwrap(),
            Incoming::Notice(Notice::Ignored("S3 events that create no object"))
        );
    }

    /// Nothing of an unknown shape is acknowledged: each is an error that
    /// names what was wrong and shows its start.
    #[test]
    fn unknown_shapes_are_errors_with_an_excerpt() {
        for body in [
            "{}",
            "not json",
            "[]",
            "{\"Records\":[]}",
            "{\"Records\":[{\"s3\":1}]}",
            "{\"Records\":[{\"eventSource\":\"aws:dynamodb\"}]}",
            "{\"Type\":\"Notification\",\"Message\":\"{}\"}",
            "{\"Type\":\"Notification\",\"Message\":\"hello\"}",
            "{\"detail-type\":\"Scheduled Event\",\"source\":\"aws.events\"}",
            "{\"hello\":\"world\"}",
        ] {
            match from_text(body) {
                Err(EventError::Unknown { excerpt, .. }) => {
                    assert!(!excerpt.is_empty() || body.is_empty(), "{body}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        let long = format!("{{\"x\":\"{}\"}}", "é".repeat(500));
        let Err(EventError::Unknown { excerpt, .. }) = from_text(&long) else {
            panic!()
        };
        assert!(excerpt.len() <= EXCERPT_BYTES && long.starts_with(&excerpt));
        assert!(matches!(
            classify(&serde_json::json!({})),
            Err(EventError::Unknown { .. })
        ));
        assert!(matches!(
            classify(
                &serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "b"}, "object": {"key": "bad%FF"}}}]})
            ),
            Err(EventError::Key { .. })
        ));
    }
}
