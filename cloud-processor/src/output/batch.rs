//! Batches: chunks into SendMessageBatch calls (at most 10 entries and the
//! request's byte limit), the attributes every message carries and their
//! worst-case size, and the body of a claim check.
//!
//! Sizes are UTF-8 bytes, as SQS counts them; the emulator ignores
//! attributes, so these rules are tested here, not there.

use crate::pipeline::body::Chunk;

/// SendMessageBatch: at most 10 entries.
pub const MAX_BATCH_ENTRIES: usize = 10;
/// SendMessageBatch: the whole payload (bodies plus attributes) is capped too.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Message attribute names, part of the output contract for consumers.
pub const ATTR_SOURCE_KEY: &str = "relay.source_key";
pub const ATTR_CHUNK: &str = "relay.chunk";
pub const ATTR_RECORDS: &str = "relay.records";
/// The file's W3C trace context, continued by the processor (present when
/// the agent stored one with the object).
pub const ATTR_TRACEPARENT: &str = "traceparent";
/// A `traceparent` value: `00-` 32 hex digits `-` 16 `-` 2.
const TRACEPARENT_BYTES: usize = 55;
/// What the `traceparent` attribute takes of a message: its name, data
/// type and value.
pub const TRACEPARENT_RESERVE_BYTES: usize = ATTR_TRACEPARENT.len() + 6 + TRACEPARENT_BYTES;

/// A string as SQS accepts it in a message attribute: characters outside
/// #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF (which
/// S3 keys may hold) are written as `\uXXXX`, as in JSON.
pub fn sqs_text(s: &str) -> std::borrow::Cow<'_, str> {
    let allowed = |c: char| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..);
    if s.chars().all(allowed) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if allowed(c) {
            out.push(c);
        } else {
            out.push_str(&format!("\\u{:04X}", u32::from(c)));
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Bytes the attributes take, at most, for a given source key: SQS counts
/// each attribute's name, data type and value. Chunk index and record count
/// are u32, so at most 10 digits each; the trace context is always
/// reserved for. (`AWSTraceHeader`, a system attribute, does not count.)
pub fn attributes_size(source_key: &str) -> usize {
    let string = "String".len();
    let number = "Number".len();
    ATTR_SOURCE_KEY.len()
        + string
        + sqs_text(source_key).len()
        + ATTR_CHUNK.len()
        + number
        + 10
        + ATTR_RECORDS.len()
        + number
        + 10
        + TRACEPARENT_RESERVE_BYTES
}

/// The largest body of a message from `source_key` in a queue whose
/// messages hold `max_message_bytes`: the limit less the worst case of the
/// attributes every message carries.
pub fn max_body_bytes(max_message_bytes: usize, source_key: &str) -> usize {
    max_message_bytes.saturating_sub(attributes_size(source_key))
}

/// The message attribute the SQS Extended Client libraries read to tell a
/// claim check from a plain message: the payload's size in bytes (Number).
pub const ATTR_EXTENDED_PAYLOAD_SIZE: &str = "ExtendedPayloadSize";
/// The pointer class name the Extended Client libraries write and accept.
pub const PAYLOAD_POINTER_CLASS: &str = "software.amazon.payloadoffloading.PayloadS3Pointer";

/// A claim check's message body, in the Extended Client's wire format:
/// `["software.amazon.payloadoffloading.PayloadS3Pointer",
/// {"s3BucketName":"...","s3Key":"..."}]`.
pub fn pointer_body(bucket: &str, key: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!([
        PAYLOAD_POINTER_CLASS,
        {"s3BucketName": bucket, "s3Key": key}
    ]))
    .unwrap_or_default()
}

/// Groups chunks into SendMessageBatch calls: at most 10 entries, and at most
/// `max_batch_bytes` of bodies plus attributes.
#[derive(Debug)]
pub struct Batcher {
    max_batch_bytes: usize,
    attrs: usize,
    pending: Vec<Chunk>,
    bytes: usize,
}

impl Batcher {
    pub fn new(max_batch_bytes: usize, source_key: &str) -> Self {
        Self {
            max_batch_bytes,
            attrs: attributes_size(source_key),
            pending: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a chunk; returns a full batch when this chunk did not fit.
    pub fn push(&mut self, chunk: Chunk) -> Option<Vec<Chunk>> {
        let extended = if chunk.payload_size.is_some() {
            ATTR_EXTENDED_PAYLOAD_SIZE.len() + "Number".len() + 20
        } else {
            0
        };
        let size = chunk.body.len() + self.attrs + extended;
        let full = if self.pending.len() == MAX_BATCH_ENTRIES
            || self.bytes + size > self.max_batch_bytes
        {
            self.take()
        } else {
            None
        };
        self.bytes += size;
        self.pending.push(chunk);
        full
    }

    pub fn take(&mut self) -> Option<Vec<Chunk>> {
        self.bytes = 0;
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn attribute_text_is_escaped_where_sqs_refuses_it() {
        assert_eq!(sqs_text("raw/a b/ü.json.zst"), "raw/a b/ü.json.zst");
        assert_eq!(sqs_text("raw/a\u{1}b\u{FFFF}"), "raw/a\\u0001b\\uFFFF");
        assert_eq!(attributes_size("k\u{0}"), attributes_size("k") + 6);
    }

    #[test]
    fn a_pointer_is_the_extended_clients_wire_format() {
        let body = pointer_body("bkt", "payloads/raw/a b/0001.json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                "software.amazon.payloadoffloading.PayloadS3Pointer",
                {"s3BucketName": "bkt", "s3Key": "payloads/raw/a b/0001.json"}
            ])
        );
    }

    #[test]
    fn attributes_are_counted() {
        let key = "raw/s/2026/11/21/22/1.json.zst";
        assert_eq!(
            attributes_size(key),
            "relay.source_key".len()
                + 6
                + key.len()
                + "relay.chunk".len()
                + 6
                + 10
                + "relay.records".len()
                + 6
                + 10
                + "traceparent".len()
                + 6
                + TRACEPARENT_BYTES
        );
        let trace = relay_shared::trace::TraceContext::new(u128::MAX, u64::MAX).unwrap();
        assert_eq!(trace.to_string().len(), TRACEPARENT_BYTES);
        // Ten 100 KB chunks fit a 1 MiB batch only without attributes.
        let mut b = Batcher::new(10 * 100_000 + 9 * attributes_size(key), key);
        for i in 0..9 {
            assert!(
                b.push(Chunk {
                    index: i,
                    records: 1,
                    span: [0, 1],
                    body: vec![b'x'; 100_000],
                    payload_size: None,
                    stream: None,
                })
                .is_none()
            );
        }
        let full = b
            .push(Chunk {
                index: 9,
                records: 1,
                span: [9, 10],
                body: vec![b'x'; 100_000],
                payload_size: None,
                stream: None,
            })
            .unwrap();
        assert_eq!(full.len(), 9);
        assert_eq!(b.take().unwrap().len(), 1);
    }

    proptest! {
        /// Batches respect both SendMessageBatch limits and keep order.
        #[test]
        fn batches_are_bounded(sizes in proptest::collection::vec(1usize..50_000, 0..60)) {
            let key = "raw/k";
            let limit = 200_000;
            let mut b = Batcher::new(limit, key);
            let mut batches = Vec::new();
            for (i, s) in sizes.iter().enumerate() {
                batches.extend(b.push(Chunk { index: i as u32, records: 1, span: [0, 1], body: vec![b'x'; *s], payload_size: None, stream: None }));
            }
            batches.extend(b.take());
            let mut next = 0;
            for batch in &batches {
                prop_assert!(batch.len() <= MAX_BATCH_ENTRIES && !batch.is_empty());
                let bytes: usize = batch.iter().map(|c| c.body.len() + attributes_size(key)).sum();
                prop_assert!(bytes <= limit);
                for c in batch {
                    prop_assert_eq!(c.index, next);
                    next += 1;
                }
            }
            prop_assert_eq!(next as usize, sizes.len());
        }
    }
}
