//! Events that name raw objects: S3 notifications (direct, or wrapped in SQS
//! messages) and EventBridge "Object Created". Parsed leniently with types of
//! our own: emulators leave out fields AWS sends (`userIdentity`,
//! `sequencer`), which `aws_lambda_events` rejects.

use relay_shared::meta::decode_event_key;
use serde::Deserialize;
use serde_json::Value;

/// One object an event asks us to process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    /// Decoded: the key as S3 stores it.
    pub key: String,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    pub size: Option<u64>,
}

/// What an invocation carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// S3 notifications delivered directly, or an EventBridge event.
    Objects(Vec<ObjectRef>),
    /// SQS messages (from an event source mapping), each to succeed or fail alone.
    Sqs(Vec<SqsMessage>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsMessage {
    pub message_id: String,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the event is not JSON of a known shape: {0}")]
    Shape(String),
    #[error("object key {key:?} is not valid percent-encoded UTF-8")]
    Key { key: String },
}

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Records", default)]
    records: Vec<S3Record>,
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
    #[serde(default)]
    body: String,
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

fn shape(e: impl std::fmt::Display) -> EventError {
    EventError::Shape(e.to_string())
}

/// Classifies a Lambda payload.
pub fn classify(event: &Value) -> Result<Incoming, EventError> {
    if event.get("detail-type").is_some() {
        return Ok(Incoming::Objects(from_eventbridge(event)?));
    }
    let records = event.get("Records").and_then(Value::as_array);
    let from_sqs = records
        .and_then(|r| r.first())
        .and_then(|r| r.get("eventSource"))
        .is_some_and(|s| s == "aws:sqs");
    if from_sqs {
        let messages: Vec<SqsRecord> =
            serde_json::from_value(event["Records"].clone()).map_err(shape)?;
        return Ok(Incoming::Sqs(
            messages
                .into_iter()
                .map(|m| SqsMessage {
                    message_id: m.message_id,
                    body: m.body,
                })
                .collect(),
        ));
    }
    Ok(Incoming::Objects(from_notification(event)?))
}

/// Objects named by an S3 notification. `s3:TestEvent` (sent when a
/// notification is configured) and non-create events give none.
pub fn from_notification(event: &Value) -> Result<Vec<ObjectRef>, EventError> {
    if event.get("Event").is_some_and(|e| e == "s3:TestEvent") {
        return Ok(Vec::new());
    }
    let n: Notification = serde_json::from_value(event.clone()).map_err(shape)?;
    n.records
        .into_iter()
        .filter(|r| r.event_name.is_empty() || r.event_name.starts_with("ObjectCreated"))
        .map(|r| {
            let key = decode_event_key(&r.s3.object.key).map_err(|_| EventError::Key {
                key: r.s3.object.key.clone(),
            })?;
            Ok(ObjectRef {
                bucket: r.s3.bucket.name,
                key,
                etag: r.s3.object.etag,
                version_id: r.s3.object.version_id,
                size: r.s3.object.size,
            })
        })
        .collect()
}

/// The object of an EventBridge "Object Created" event. EventBridge sends the
/// key as stored, not URL-encoded.
pub fn from_eventbridge(event: &Value) -> Result<Vec<ObjectRef>, EventError> {
    if event.get("detail-type").and_then(Value::as_str) != Some("Object Created") {
        return Ok(Vec::new());
    }
    let d: EventBridgeDetail = serde_json::from_value(event["detail"].clone()).map_err(shape)?;
    Ok(vec![ObjectRef {
        bucket: d.bucket.name,
        key: d.object.key,
        etag: d.object.etag,
        version_id: d.object.version_id,
        size: d.object.size,
    }])
}

/// Parses an SQS message body that holds an S3 notification.
pub fn from_sqs_body(body: &str) -> Result<Vec<ObjectRef>, EventError> {
    let v: Value = serde_json::from_str(body).map_err(shape)?;
    match classify(&v)? {
        Incoming::Objects(objects) => Ok(objects),
        Incoming::Sqs(_) => Err(EventError::Shape(
            "an SQS event inside an SQS message".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    #[test]
    fn aws_s3_notification_with_plus_encoded_key() {
        let Incoming::Objects(objs) = classify(&fixture("s3-put.json")).unwrap() else {
            panic!()
        };
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
        let Incoming::Objects(objs) = classify(&fixture("s3-put-moto.json")).unwrap() else {
            panic!()
        };
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
        let objs = from_sqs_body(&msgs[0].body).unwrap();
        assert_eq!(objs[0].key, "raw/a/2026/11/21/22/1.json.zst");
        assert!(
            from_sqs_body(&msgs[1].body).unwrap().is_empty(),
            "s3:TestEvent is ignored"
        );
    }

    #[test]
    fn eventbridge_object_created() {
        let Incoming::Objects(objs) = classify(&fixture("eventbridge.json")).unwrap() else {
            panic!()
        };
        assert_eq!(
            objs[0].key, "raw/a/2026/11/21/22/1+2.json.zst",
            "EventBridge keys are not decoded"
        );
        assert_eq!(objs[0].version_id.as_deref(), Some("v1"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(classify(&serde_json::json!({"Records": [{"s3": 1}]})).is_err());
        assert!(from_sqs_body("not json").is_err());
        assert!(matches!(
            classify(
                &serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "b"}, "object": {"key": "bad%FF"}}}]})
            ),
            Err(EventError::Key { .. })
        ));
    }
}
