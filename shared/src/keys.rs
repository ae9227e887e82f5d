//! The raw object key scheme: how a finished file's name becomes its immutable S3 key.
//!
//! Both stages depend on this: the edge agent writes under these keys with
//! `If-None-Match: *`, so the mapping must be deterministic (a re-upload after a
//! crash must hit the same key and get a harmless 412) and must never let a
//! hostile name escape the prefix.
//!
//! A key looks like `raw/<source-id>/2026/11/21/22/<file-name>.zst`: the date
//! partitions come from the timestamp in the name (UTC), and the original name is
//! kept verbatim so a key can be traced back to its file.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::fmt::strtime;
use jiff::tz::TimeZone;

/// Linux `NAME_MAX`: no real file name is longer, so anything longer is hostile.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Source ids become a path segment in every key; keep them short and plain.
pub const MAX_SOURCE_ID_BYTES: usize = 128;
/// Raw prefixes are operator config, not data; this only stops absurd values.
pub const MAX_PREFIX_BYTES: usize = 256;
/// S3's own limit on key length.
pub const MAX_KEY_BYTES: usize = 1024;
/// The suffix every raw object carries: the edge agent always zstd-compresses.
pub const RAW_SUFFIX: &str = ".zst";
/// How a canary's file name ends (`<created ms>.canary.json`): the processor
/// tells a canary object by it, whatever the source's time format.
pub const CANARY_SUFFIX: &str = ".canary.json";

/// A canary named by its key: the source that sent it and when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    pub source_id: String,
    pub created_ms: u64,
}

/// Whether `key` is a canary's raw key, and whose: `<prefix><source>/<yyyy>/
/// <mm>/<dd>/<hh>/<ms>.canary.json.zst`.
pub fn canary_of(prefix: &str, key: &str) -> Option<Canary> {
    let rest = key.strip_prefix(prefix)?;
    let name = rest.strip_suffix(RAW_SUFFIX)?.rsplit('/').next()?;
    let created_ms = name.strip_suffix(CANARY_SUFFIX)?.parse().ok()?;
    let (source_id, _) = rest.split_once('/')?;
    Some(Canary {
        source_id: source_id.to_owned(),
        created_ms,
    })
}

/// How the timestamp is read from a file's stem (its name without the last extension).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TimeFormat {
    /// Epoch seconds, millis, micros or nanos (told apart by digit count), or an
    /// RFC 3339-like form such as `2026-11-21T22-30-00.123Z` or
    /// `2026-11-21T22:30:00+02:00`. A form without an offset is taken as UTC.
    #[default]
    Auto,
    /// A strftime-style pattern matched against the whole stem, for example
    /// `events-%Y%m%d-%H%M%S`. Without `%z` or `%s` the time is taken as UTC.
    Pattern(String),
}

impl FromStr for TimeFormat {
    type Err = KeyError;

    /// `auto` (or empty) selects [`TimeFormat::Auto`]; anything else is a pattern.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "auto" => Ok(Self::Auto),
            pattern if !pattern.contains('%') => Err(KeyError::InvalidPattern {
                pattern: pattern.to_owned(),
                reason: "it has no % conversion, so it cannot match a timestamp".into(),
            }),
            pattern => Ok(Self::Pattern(pattern.to_owned())),
        }
    }
}

/// Why a key could not be made. Each variant names the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("file name {name:?} is not usable as a key: {reason}")]
    UnsafeName { name: String, reason: &'static str },
    #[error("file name {name:?} has no timestamp the key scheme understands: {reason}")]
    NoTimestamp { name: String, reason: String },
    #[error("source id {source_id:?} is invalid: {reason}")]
    InvalidSourceId {
        source_id: String,
        reason: &'static str,
    },
    #[error("raw prefix {prefix:?} is invalid: {reason}")]
    InvalidPrefix {
        prefix: String,
        reason: &'static str,
    },
    #[error("timestamp pattern {pattern:?} is invalid: {reason}")]
    InvalidPattern { pattern: String, reason: String },
    #[error("key for file name {name:?} would be {len} bytes, over S3's {MAX_KEY_BYTES}")]
    KeyTooLong { name: String, len: usize },
}

/// A validated key scheme for one source. Build it once at start-up, so that bad
/// configuration fails before any file is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyScheme {
    prefix: String,
    source_id: String,
    format: TimeFormat,
}

/// A raw object key together with the timestamp it was partitioned by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawKey {
    pub key: String,
    pub timestamp: Timestamp,
}

impl fmt::Display for RawKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

impl KeyScheme {
    /// Validates the prefix (e.g. `raw/`), the source id and the time format.
    pub fn new(prefix: &str, source_id: &str, format: TimeFormat) -> Result<Self, KeyError> {
        validate_prefix(prefix)?;
        validate_source_id(source_id)?;
        if let TimeFormat::Pattern(pattern) = &format {
            validate_pattern(pattern)?;
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            source_id: source_id.to_owned(),
            format,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn source_id(&self) -> &str {
        &self.source_id
    }

    /// The prefix under which all of this source's objects live, `raw/<source-id>/`.
    pub fn source_prefix(&self) -> String {
        format!("{}{}/", self.prefix, self.source_id)
    }

    /// The raw object key for a finished file's name (a bare name, not a path).
    pub fn raw_key(&self, file_name: &str) -> Result<RawKey, KeyError> {
        validate_file_name(file_name)?;
        let stem = file_stem(file_name);
        let timestamp = match &self.format {
            TimeFormat::Auto => parse_auto(stem),
            TimeFormat::Pattern(pattern) => parse_pattern(pattern, stem),
        }
        .map_err(|reason| KeyError::NoTimestamp {
            name: file_name.to_owned(),
            reason,
        })?;
        let key = self.hour_key(timestamp, file_name);
        if key.len() > MAX_KEY_BYTES {
            return Err(KeyError::KeyTooLong {
                name: file_name.to_owned(),
                len: key.len(),
            });
        }
        Ok(RawKey { key, timestamp })
    }
}

impl KeyScheme {
    /// A canary's file name and raw key for its creation time: partitioned
    /// like data, named by the millisecond whatever the time format.
    pub fn canary_key(&self, created_ms: u64) -> (String, RawKey) {
        let ms = i64::try_from(created_ms).unwrap_or(i64::MAX);
        let created = Timestamp::from_millisecond(ms).unwrap_or(Timestamp::MAX);
        let name = format!("{ms}{CANARY_SUFFIX}");
        let key = self.hour_key(created, &name);
        (
            name,
            RawKey {
                key,
                timestamp: created,
            },
        )
    }

    /// `<prefix><source>/YYYY/MM/DD/HH/<name>.zst`, in UTC.
    fn hour_key(&self, at: Timestamp, name: &str) -> String {
        let utc = at.to_zoned(TimeZone::UTC);
        format!(
            "{}{}/{:04}/{:02}/{:02}/{:02}/{name}{RAW_SUFFIX}",
            self.prefix,
            self.source_id,
            utc.year(),
            utc.month(),
            utc.day(),
            utc.hour(),
        )
    }

    /// The key for content that arrived under an already used name with
    /// other bytes: `<stem>.<tag>.<ext>` next to the first, e.g.
    /// `.../1763800000000.3f9a0c1d2e4b5a69.json.zst`, so both are kept and
    /// both are relayed. `tag` is 16 lowercase hex digits (of the content
    /// hash), so the same content always lands on the same conflict key.
    pub fn conflict_key(&self, file_name: &str, tag: &str) -> Result<RawKey, KeyError> {
        if tag.len() != 16
            || !tag
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(KeyError::UnsafeName {
                name: format!("{file_name} ({tag})"),
                reason: "a conflict tag must be 16 lowercase hex digits",
            });
        }
        let base = self.raw_key(file_name)?;
        let name_at = base.key.len() - RAW_SUFFIX.len() - file_name.len();
        let renamed = match file_name.rfind('.') {
            Some(dot) if dot > 0 => format!("{}.{tag}{}", &file_name[..dot], &file_name[dot..]),
            _ => format!("{file_name}.{tag}"),
        };
        let key = format!("{}{renamed}{RAW_SUFFIX}", &base.key[..name_at]);
        if key.len() > MAX_KEY_BYTES {
            return Err(KeyError::KeyTooLong {
                name: file_name.to_owned(),
                len: key.len(),
            });
        }
        Ok(RawKey {
            key,
            timestamp: base.timestamp,
        })
    }
}

/// The name without its last extension: `1732227000123.json` -> `1732227000123`.
/// A name whose only dot is the first character has no extension to strip.
fn file_stem(name: &str) -> &str {
    match name.rfind('.') {
        Some(0) | None => name,
        Some(i) => &name[..i],
    }
}

fn validate_file_name(name: &str) -> Result<(), KeyError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_FILE_NAME_BYTES {
        Some("it is longer than 255 bytes")
    } else if name == "." || name == ".." {
        Some("it is a relative path component")
    } else if name.contains('/') || name.contains('\\') {
        Some("it contains a path separator")
    } else if name.contains("..") {
        Some("it contains `..`")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if name.starts_with('.') {
        Some("it is a hidden file")
    } else if name.ends_with('.') {
        // The key appends `.zst`, which would form `..`.
        Some("it ends with a dot")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(KeyError::UnsafeName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn validate_source_id(source_id: &str) -> Result<(), KeyError> {
    let reason = if source_id.is_empty() {
        Some("it is empty")
    } else if source_id.len() > MAX_SOURCE_ID_BYTES {
        Some("it is longer than 128 bytes")
    } else if source_id.starts_with('.') {
        Some("it starts with a dot")
    } else if !source_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Some("only ASCII letters, digits, `-`, `_` and `.` are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(KeyError::InvalidSourceId {
            source_id: source_id.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn validate_prefix(prefix: &str) -> Result<(), KeyError> {
    let reason = if prefix.is_empty() {
        Some("it is empty; use e.g. `raw/`")
    } else if prefix.len() > MAX_PREFIX_BYTES {
        Some("it is longer than 256 bytes")
    } else if !prefix.ends_with('/') {
        Some("it must end with `/`")
    } else if prefix.starts_with('/') {
        Some("it must not start with `/`")
    } else if prefix.contains("//") {
        Some("it contains an empty path segment")
    } else if prefix.split('/').any(|seg| seg == "." || seg == "..") {
        Some("it contains a `.` or `..` segment")
    } else if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
    {
        Some("only ASCII letters, digits, `-`, `_`, `.` and `/` are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(KeyError::InvalidPrefix {
            prefix: prefix.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn validate_pattern(pattern: &str) -> Result<(), KeyError> {
    // Formatting a known instant through the pattern rejects unknown or
    // malformed conversions now, not on the first file.
    let probe = Timestamp::UNIX_EPOCH.to_zoned(TimeZone::UTC);
    strtime::format(pattern, &probe)
        .map(drop)
        .map_err(|e| KeyError::InvalidPattern {
            pattern: pattern.to_owned(),
            reason: e.to_string(),
        })
}

fn parse_auto(stem: &str) -> Result<Timestamp, String> {
    if !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit()) {
        return parse_epoch(stem);
    }
    parse_rfc3339_like(stem).ok_or_else(|| {
        "expected epoch seconds/millis/micros/nanos or a date-time like \
         2026-11-21T22-30-00.123Z; set a timestamp pattern for other layouts"
            .to_owned()
    })
}

/// Epoch digits, with the unit told by length: up to 10 digits are seconds
/// (until 2286), 11-13 millis, 14-16 micros, 17-19 nanos.
fn parse_epoch(digits: &str) -> Result<Timestamp, String> {
    let unit_nanos: i128 = match digits.len() {
        1..=10 => 1_000_000_000,
        11..=13 => 1_000_000,
        14..=16 => 1_000,
        17..=19 => 1,
        n => return Err(format!("{n} digits is too many for an epoch timestamp")),
    };
    let value: i128 = digits
        .parse()
        .map_err(|e| format!("epoch digits do not parse: {e}"))?;
    Timestamp::from_nanosecond(value * unit_nanos).map_err(|e| format!("epoch out of range: {e}"))
}

/// Accepts `YYYY-MM-DD`, then `T`, `t`, `_` or a space, then `HH?MM?SS` (with `-`, `:`
/// or nothing between), then an optional fraction and offset. The separators are
/// normalised and the result handed to jiff's ISO 8601 parser, which validates.
fn parse_rfc3339_like(stem: &str) -> Option<Timestamp> {
    let date = stem.get(..10)?;
    let sep = stem.get(10..11)?;
    let rest = stem.get(11..)?;
    if !matches!(sep, "T" | "t" | "_" | " ") {
        return None;
    }
    let time = if rest.get(2..3).is_some_and(|s| s == "-") && rest.get(5..6) == Some("-") {
        format!("{}:{}:{}", rest.get(..2)?, rest.get(3..5)?, rest.get(6..)?)
    } else {
        rest.to_owned()
    };
    let normalised = format!("{date}T{time}");
    if let Ok(ts) = normalised.parse::<Timestamp>() {
        return Some(ts);
    }
    // No offset in the name: the edge host writes UTC names by convention.
    let civil: DateTime = normalised.parse().ok()?;
    civil.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

fn parse_pattern(pattern: &str, stem: &str) -> Result<Timestamp, String> {
    let parsed = strtime::parse(pattern, stem)
        .map_err(|e| format!("it does not match pattern {pattern:?}: {e}"))?;
    if let Ok(ts) = parsed.to_timestamp() {
        return Ok(ts);
    }
    parsed
        .to_datetime()
        .and_then(|dt| dt.to_zoned(TimeZone::UTC))
        .map(|z| z.timestamp())
        .map_err(|e| format!("pattern {pattern:?} matched but gave no full date-time: {e}"))
}

#[cfg(test)]
mod canary_tests {
    use super::*;

    #[test]
    fn a_canary_key_names_its_source_and_time_whatever_the_time_format() {
        for format in [
            TimeFormat::Auto,
            TimeFormat::Pattern("%Y%m%d-%H%M%S".into()),
        ] {
            let keys = KeyScheme::new("raw/", "edge-7", format).unwrap();
            let (name, key) = keys.canary_key(1_795_800_000_123);
            assert_eq!(name, "1795800000123.canary.json");
            assert_eq!(
                key.key,
                "raw/edge-7/2026/11/27/17/1795800000123.canary.json.zst"
            );
            assert_eq!(
                canary_of("raw/", &key.key),
                Some(Canary {
                    source_id: "edge-7".into(),
                    created_ms: 1_795_800_000_123
                })
            );
        }
        for data in [
            "raw/edge-7/2026/11/27/14/1795800000123.json.zst",
            "raw/edge-7/2026/11/27/14/x.canary.json.zst",
            "other/edge-7/2026/11/27/14/1795800000123.canary.json.zst",
            "raw/edge-7/2026/11/27/14/1795800000123.canary.json",
        ] {
            assert_eq!(canary_of("raw/", data), None, "{data}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_keys_sit_next_to_the_first_and_are_deterministic() {
        let k = KeyScheme::new("raw/", "edge-1", TimeFormat::Auto).unwrap();
        let first = k.raw_key("1763800000000.json").unwrap();
        let other = k
            .conflict_key("1763800000000.json", "3f9a0c1d2e4b5a69")
            .unwrap();
        assert_eq!(first.key, "raw/edge-1/2025/11/22/08/1763800000000.json.zst");
        assert_eq!(
            other.key,
            "raw/edge-1/2025/11/22/08/1763800000000.3f9a0c1d2e4b5a69.json.zst"
        );
        assert_eq!(other.timestamp, first.timestamp);
        assert_eq!(
            k.conflict_key("1763800000000", "0000000000000000")
                .unwrap()
                .key,
            "raw/edge-1/2025/11/22/08/1763800000000.0000000000000000.zst"
        );
        for bad in [
            "3F9A0C1D2E4B5A69",
            "3f9a",
            "../../../etc/pa",
            "3f9a0c1d2e4b5a6g",
        ] {
            assert!(k.conflict_key("1763800000000.json", bad).is_err(), "{bad}");
        }
    }
    use proptest::prelude::*;

    fn scheme() -> KeyScheme {
        KeyScheme::new("raw/", "edge-1", TimeFormat::Auto).unwrap()
    }

    #[test]
    fn epoch_units_all_land_in_the_same_hour() {
        let s = scheme();
        for name in [
            "1732227000.json",
            "1732227000123.json",
            "1732227000123456.json",
            "1732227000123456789.json",
        ] {
            let key = s.raw_key(name).unwrap();
            let stem = name.trim_end_matches(".json");
            assert_eq!(key.key, format!("raw/edge-1/2024/11/21/22/{stem}.json.zst"));
            assert_eq!(key.timestamp.as_second(), 1_732_227_000);
        }
    }

    #[test]
    fn rfc3339_like_forms() {
        let s = scheme();
        let cases = [
            ("2026-11-21T22-30-00.123Z.json", "2026/11/21/22"),
            ("2026-11-21T22:30:00Z.json", "2026/11/21/22"),
            ("2026-11-21T22-30-00.json", "2026/11/21/22"),
            ("2026-11-21_22-30-00.json", "2026/11/21/22"),
            // An offset moves the UTC partition.
            ("2026-11-21T23-30-00+02:00.json", "2026/11/21/21"),
            ("2026-11-21T00:30:00.5-01:00.ndjson", "2026/11/21/01"),
        ];
        for (name, partition) in cases {
            let key = s.raw_key(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(key.key, format!("raw/edge-1/{partition}/{name}.zst"));
        }
    }

    #[test]
    fn configured_pattern() {
        let s = KeyScheme::new("raw/", "edge-1", "events-%Y%m%d-%H%M%S".parse().unwrap()).unwrap();
        let key = s.raw_key("events-20261121-223000.json").unwrap();
        assert_eq!(
            key.key,
            "raw/edge-1/2026/11/21/22/events-20261121-223000.json.zst"
        );
        let err = s.raw_key("1732227000.json").unwrap_err();
        assert!(matches!(err, KeyError::NoTimestamp { .. }), "{err}");
    }

    #[test]
    fn rejects_names_with_reasons() {
        let s = scheme();
        let long = format!("{}.json", "1".repeat(300));
        let cases: [(&str, &str); 11] = [
            ("1732227000.", "ends with a dot"),
            ("", "empty"),
            ("..", "relative"),
            ("../1732227000.json", "separator"),
            ("a/1732227000.json", "separator"),
            ("1732227000..json", "`..`"),
            ("17322\n27000.json", "control"),
            (".1732227000.json", "hidden"),
            (&long, "255"),
            ("hello.json", "no timestamp"),
            ("12345678901234567890.json", "too many"),
        ];
        for (name, want) in cases {
            let err = s.raw_key(name).unwrap_err().to_string();
            assert!(err.contains(want), "{name:?}: {err}");
            assert!(
                err.contains(&format!("{name:?}")),
                "error names the file: {err}"
            );
        }
    }

    #[test]
    fn rejects_bad_config() {
        assert!(KeyScheme::new("raw", "a", TimeFormat::Auto).is_err());
        assert!(KeyScheme::new("/raw/", "a", TimeFormat::Auto).is_err());
        assert!(KeyScheme::new("raw/../", "a", TimeFormat::Auto).is_err());
        assert!(KeyScheme::new("raw/", "", TimeFormat::Auto).is_err());
        assert!(KeyScheme::new("raw/", "a/b", TimeFormat::Auto).is_err());
        assert!(KeyScheme::new("raw/", "..", TimeFormat::Auto).is_err());
        assert!("no-conversions".parse::<TimeFormat>().is_err());
        assert!(KeyScheme::new("raw/", "a", TimeFormat::Pattern("%Q%".into())).is_err());
        assert!(KeyScheme::new("data/raw/", "host_1.eu", TimeFormat::Auto).is_ok());
    }

    proptest! {
        #[test]
        fn same_name_same_key(secs in 0i64..4_102_444_800, name_tail in "[a-z0-9_-]{0,20}") {
            let s = scheme();
            let name = format!("{secs}{name_tail}.json");
            let a = s.raw_key(&name);
            let b = s.raw_key(&name);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn epoch_seconds_partition_matches_jiff(secs in 0i64..9_999_999_999) {
            let key = scheme().raw_key(&format!("{secs}.json")).unwrap();
            let z = Timestamp::from_second(secs).unwrap().to_zoned(TimeZone::UTC);
            let want = format!(
                "raw/edge-1/{:04}/{:02}/{:02}/{:02}/{secs}.json.zst",
                z.year(), z.month(), z.day(), z.hour()
            );
            prop_assert_eq!(key.key, want);
        }

        /// Whatever the name, an accepted key stays under the source prefix, has no
        /// `..` or empty segments, no control characters, and fits S3.
        #[test]
        fn accepted_keys_never_escape(name in any::<String>(), digits in "[0-9]{1,19}", tail in "\\PC{0,8}") {
            let s = scheme();
            for candidate in [name, format!("{digits}{tail}"), format!("{digits}.{tail}")] {
                if let Ok(key) = s.raw_key(&candidate) {
                    let k = &key.key;
                    prop_assert!(k.starts_with("raw/edge-1/"));
                    prop_assert!(k.ends_with(RAW_SUFFIX));
                    prop_assert!(k.len() <= MAX_KEY_BYTES);
                    prop_assert!(!k.contains(".."));
                    prop_assert!(!k.contains("//"));
                    prop_assert!(!k.chars().any(char::is_control));
                    // Exactly prefix/source/yyyy/mm/dd/hh/name: the name is one segment.
                    prop_assert_eq!(k.split('/').count(), 7);
                    let tail = format!("/{candidate}{RAW_SUFFIX}");
                    prop_assert!(k.ends_with(&tail));
                }
            }
        }

        #[test]
        fn never_panics_on_any_pattern(pattern in "\\PC{0,12}", name in "\\PC{0,24}") {
            if let Ok(format) = pattern.parse::<TimeFormat>()
                && let Ok(s) = KeyScheme::new("raw/", "x", format)
            {
                let _ = s.raw_key(&name);
            }
        }
    }
}
