//! The key scheme over arbitrary file names and patterns: no panic, and
//! every key it accepts is safe (one segment for the name, no `..`, no
//! control characters, within S3's limit), deterministic, and survives the
//! trip through an S3 event's URL encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use relay_shared::keys::{KeyScheme, TimeFormat};
use relay_shared::meta::decode_event_key;

/// What S3 leaves unescaped in event keys, besides letters and digits.
const EVENT_KEY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

fuzz_target!(|input: (String, Option<String>)| {
    let (name, pattern) = input;
    let format = pattern.map_or(TimeFormat::Auto, TimeFormat::Pattern);
    let Ok(scheme) = KeyScheme::new("raw/", "edge-1", format) else {
        return;
    };
    let Ok(raw) = scheme.raw_key(&name) else {
        return;
    };
    let key = &raw.key;
    let rest = key
        .strip_prefix("raw/edge-1/")
        .expect("under the source's prefix");
    let segments: Vec<&str> = rest.split('/').collect();
    assert_eq!(segments.len(), 5, "YYYY/MM/DD/HH/name: {key}");
    assert_eq!(segments[4], format!("{name}.zst"));
    assert!(
        segments[..4]
            .iter()
            .all(|s| s.bytes().all(|b| b.is_ascii_digit()))
    );
    assert!(!key.contains(".."), "{key}");
    assert!(!key.chars().any(char::is_control), "{key:?}");
    assert!(key.len() <= 1024);
    assert_eq!(&scheme.raw_key(&name).unwrap().key, key, "deterministic");

    let encoded = utf8_percent_encode(key, EVENT_KEY)
        .to_string()
        .replace("%20", "+");
    assert_eq!(&decode_event_key(&encoded).unwrap(), key);
});
