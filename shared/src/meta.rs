//! Object metadata and encodings both stages agree on: what the edge agent
//! attaches to a raw object, and how keys and names are escaped on the wire.

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// `x-amz-meta-original-name`: the file's name, percent-encoded (S3 metadata
/// travels as HTTP headers, which are ASCII-only).
pub const ORIGINAL_NAME: &str = "original-name";
/// `x-amz-meta-original-size`: the uncompressed size in bytes, in decimal.
pub const ORIGINAL_SIZE: &str = "original-size";
/// `x-amz-meta-source-id`: the edge source that produced the file.
pub const SOURCE_ID: &str = "source-id";
/// `x-amz-meta-content-xxh3`: xxh3-128 of the uncompressed bytes, as 32 hex
/// digits. When a conditional put finds the key taken, this is how the
/// agent learns whether S3 holds exactly its file's bytes before it deletes
/// or moves the file (a name may be used again for other content).
pub const CONTENT_HASH: &str = "content-xxh3";
/// `x-amz-meta-traceparent`: the file's W3C trace context
/// ([`crate::trace::TraceContext`]), which the processor continues onto
/// every message it sends for the file.
pub const TRACEPARENT: &str = "traceparent";
/// `x-amz-meta-written-ms`: the file's last write (its mtime), in ms since
/// the Unix epoch: where the file-to-SQS latency is measured from.
pub const WRITTEN_MS: &str = "written-ms";
/// `x-amz-meta-canary: 1`: a heartbeat the agent sent on the data's path,
/// not data (its name also ends in `.canary.json`).
pub const CANARY: &str = "canary";

/// A time as `written-ms`, manifests and leases carry it: milliseconds
/// since the Unix epoch (0 before it).
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// This host's clock, as [`unix_ms`].
pub fn now_ms() -> u64 {
    unix_ms(std::time::SystemTime::now())
}

/// The content hash as it is stored in metadata.
pub fn content_hash_hex(hash: u128) -> String {
    format!("{hash:032x}")
}
/// The edge agent always stores zstd frames of JSON text.
pub const RAW_CONTENT_TYPE: &str = "application/json";
pub const RAW_CONTENT_ENCODING: &str = "zstd";

/// Everything but unreserved characters is escaped, so the value is plain ASCII.
const HEADER_UNSAFE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b'+')
    .add(b',')
    .add(b';')
    .add(b'=');

/// Percent-encodes a value for an S3 metadata header.
pub fn encode_header_value(value: &str) -> String {
    utf8_percent_encode(value, HEADER_UNSAFE).to_string()
}

/// Decodes an object key as S3 event notifications deliver it: `+` is a space
/// and `%XX` an escaped byte. Neither `aws_lambda_events` nor the official
/// examples do this, and a raw `+` would otherwise name a different object.
pub fn decode_event_key(key: &str) -> Result<String, std::str::Utf8Error> {
    let spaced = key.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn event_keys_decode_both_space_forms() {
        assert_eq!(
            decode_event_key("raw/a/b+c.json.zst").unwrap(),
            "raw/a/b c.json.zst"
        );
        assert_eq!(
            decode_event_key("raw/a/b%20c.json.zst").unwrap(),
            "raw/a/b c.json.zst"
        );
        assert_eq!(decode_event_key("raw/a%2Bb").unwrap(), "raw/a+b");
        assert_eq!(decode_event_key("caf%C3%A9").unwrap(), "café");
        assert!(decode_event_key("bad%FF").is_err());
    }

    proptest! {
        #[test]
        fn header_values_are_ascii_and_round_trip(value in "\\PC{0,40}") {
            let enc = encode_header_value(&value);
            prop_assert!(enc.bytes().all(|b| b.is_ascii_graphic()));
            prop_assert_eq!(percent_decode_str(&enc).decode_utf8().unwrap(), value.as_str());
        }

        /// What S3 does to a key in an event (spaces as `+`, the rest escaped)
        /// is undone exactly.
        #[test]
        fn event_key_round_trip(key in "\\PC{0,40}") {
            let escaped = utf8_percent_encode(&key, HEADER_UNSAFE).to_string().replace("%20", "+");
            prop_assert_eq!(decode_event_key(&escaped).unwrap(), key);
        }
    }
}
