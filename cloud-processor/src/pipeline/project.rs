//! Projection: cut a record down to the configured fields, copying each value
//! as its exact JSON text (floats and big integers are never re-encoded).
//!
//! The fast path is the validating scanner in [`crate::pipeline::json`]: one pass over
//! the record checks all of it and captures the wanted values' spans. The
//! serde_json implementation below ([`Projection::project_reference`]) is
//! kept as the reference it is tested against.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::pipeline::json::{self, Node, Scanner, Span, Stop};

/// One configured field: where to read it and what to call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The output key, as written in the spec (or the path if no name was given).
    pub name: String,
    pub path: Vec<String>,
}

/// What to write for a field the record does not have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missing {
    /// Leave the field out.
    #[default]
    Omit,
    /// Write `null`.
    Null,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "RELAY_FIELDS is empty: list at least one field, e.g. `id,ts=timestamp,user_id=user.id`"
    )]
    Empty,
    #[error("field {entry:?}: {reason}")]
    Invalid { entry: String, reason: &'static str },
    #[error("output name {0:?} is used twice")]
    Duplicate(String),
}

/// Parses `id,ts=timestamp,user_id=user.id,first_tag=tags.0,c=/geo/country`.
pub fn parse_fields(spec: &str) -> Result<Vec<Field>, SpecError> {
    let mut fields: Vec<Field> = Vec::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let invalid = |reason| SpecError::Invalid {
            entry: entry.to_owned(),
            reason,
        };
        let (name, path) = match entry.split_once('=') {
            Some((n, p)) => (n.trim(), p.trim()),
            None => (entry, entry),
        };
        if name.is_empty() {
            return Err(invalid("the output name is empty"));
        }
        let segments: Vec<String> = if let Some(pointer) = path.strip_prefix('/') {
            pointer
                .split('/')
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect()
        } else {
            path.split('.').map(str::to_owned).collect()
        };
        if path.is_empty() || segments.iter().any(String::is_empty) {
            return Err(invalid("the path has an empty segment"));
        }
        if fields.iter().any(|f| f.name == name) {
            return Err(SpecError::Duplicate(name.to_owned()));
        }
        fields.push(Field {
            name: name.to_owned(),
            path: segments,
        });
    }
    if fields.is_empty() {
        return Err(SpecError::Empty);
    }
    Ok(fields)
}

/// What happens to a record that has none of the configured fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmptyRecords {
    /// Reject it ("none of the fields ... is present"): usually a mistyped
    /// field list, which would otherwise send `{}` for every record.
    #[default]
    Reject,
    /// Send its empty projection.
    Send,
}

/// A compiled projection.
#[derive(Debug, Clone)]
pub struct Projection {
    root: Node,
    /// Pre-encoded `"name":` prefixes, in output order.
    keys: Vec<String>,
    /// The fields, in output order.
    fields: Vec<Field>,
    /// Their output names.
    names: Vec<String>,
    missing: Missing,
    empty: EmptyRecords,
}

/// Why a record was not projected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the value is not a JSON object")]
    NotAnObject,
    #[error("invalid JSON: {0}")]
    Invalid(String),
}

impl Projection {
    pub fn new(fields: &[Field], missing: Missing) -> Self {
        let mut root = Node::default();
        for (i, f) in fields.iter().enumerate() {
            root.insert(&f.path).slots.push(i);
        }
        let keys = fields
            .iter()
            .map(|f| format!("{}:", serde_json::Value::String(f.name.clone())))
            .collect();
        Self {
            root,
            keys,
            names: fields.iter().map(|f| f.name.clone()).collect(),
            fields: fields.to_vec(),
            missing,
            empty: EmptyRecords::default(),
        }
    }

    /// Sets what happens to a record that has none of the fields.
    #[must_use]
    pub fn with_empty(mut self, empty: EmptyRecords) -> Self {
        self.empty = empty;
        self
    }

    pub fn empty_records(&self) -> EmptyRecords {
        self.empty
    }

    /// The fields, in output order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The output names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The trie the scanner walks.
    pub fn root(&self) -> &Node {
        &self.root
    }

    /// The encoded `"name":` prefixes, in output order.
    pub fn encoded_keys(&self) -> &[String] {
        &self.keys
    }

    /// What is written for a missing field.
    pub fn missing(&self) -> Missing {
        self.missing
    }

    /// How many output fields (capture slots) there are.
    pub fn slots(&self) -> usize {
        self.keys.len()
    }

    /// Validates `record` as one JSON object (UTF-8 included; whitespace may
    /// surround it) and appends its projection, a compact JSON object with the
    /// fields in configured order, to `out`. On error `out` is left as it was.
    pub fn project(&self, record: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        self.project_found(record, out).map(drop)
    }

    /// As [`Projection::project`], and says which fields the record has.
    pub fn project_found(
        &self,
        record: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Vec<bool>, RecordError> {
        let start = record
            .iter()
            .position(|b| !json::is_ws(*b))
            .unwrap_or(record.len());
        let mut stack = Vec::new();
        let invalid = |at: usize, why: &str| {
            RecordError::Invalid(format!("{why} (at byte {at} of the record)"))
        };
        let stop = |e: Stop| match e {
            Stop::Invalid { at, reason } => invalid(at, reason),
            Stop::Incomplete => invalid(record.len(), "the record ends early"),
        };
        if let Err(e) = std::str::from_utf8(record) {
            return Err(invalid(e.valid_up_to(), "invalid UTF-8"));
        }
        if record.get(start) != Some(&b'{') {
            // Still reject invalid JSON as invalid, not as "not an object".
            let end = json::skip_value(record, start, true, &mut stack).map_err(stop)?;
            if let Some(extra) = record[end..].iter().position(|b| !json::is_ws(*b)) {
                return Err(invalid(end + extra, "text after the value"));
            }
            return Err(RecordError::NotAnObject);
        }
        let mut slots = vec![None; self.keys.len()];
        let mut scanner = Scanner::new(record, start, true);
        json::object(&mut scanner, &self.root, &mut slots, &mut stack).map_err(stop)?;
        if let Some(extra) = record[scanner.i..].iter().position(|b| !json::is_ws(*b)) {
            return Err(invalid(scanner.i + extra, "text after the record"));
        }
        self.write(record, &slots, out);
        Ok(slots.iter().map(Option::is_some).collect())
    }

    /// Appends the projection of an already validated `record` whose wanted
    /// values are at `slots` (as captured by [`json::object`]).
    pub fn write(&self, record: &[u8], slots: &[Option<Span>], out: &mut Vec<u8>) {
        let values = slots
            .iter()
            .map(|s| s.map(|(a, b)| &record[a as usize..b as usize]));
        self.write_values(values, out);
    }

    fn write_values<'v>(&self, values: impl Iterator<Item = Option<&'v [u8]>>, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(b'{');
        let mut first = true;
        for (key, value) in self.keys.iter().zip(values) {
            let value = match (value, self.missing) {
                (Some(v), _) => v,
                (None, Missing::Null) => b"null",
                (None, Missing::Omit) => continue,
            };
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(key.as_bytes());
            write_compact(value, out);
        }
        out.push(b'}');
        escape_for_sqs(out, start);
    }

    /// The same projection by serde_json: the reference the scanner is tested
    /// against (unit, property and fuzz tests), and the simplest statement of
    /// what a projection is. UTF-8 is checked first, since serde_json skips
    /// unwanted strings without checking theirs.
    pub fn project_reference(&self, record: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        let text = std::str::from_utf8(record).map_err(|e| {
            RecordError::Invalid(format!("invalid UTF-8 at byte {}", e.valid_up_to()))
        })?;
        let first = text.bytes().find(|b| !json::is_ws(*b));
        if first != Some(b'{') {
            return match serde_json::from_str::<IgnoredAny>(text) {
                Ok(_) => Err(RecordError::NotAnObject),
                Err(e) => Err(RecordError::Invalid(e.to_string())),
            };
        }
        let mut slots: Vec<Option<&RawValue>> = vec![None; self.keys.len()];
        let mut de = serde_json::Deserializer::from_str(text);
        ObjectSeed {
            node: &self.root,
            slots: &mut slots,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| RecordError::Invalid(e.to_string()))?;
        self.write_values(slots.iter().map(|s| s.map(|v| v.get().as_bytes())), out);
        Ok(())
    }
}

/// SQS refuses U+FFFE and U+FFFF, which valid JSON and valid UTF-8 can hold
/// (raw, only inside strings). Writes them as `\uFFFE` / `\uFFFF` escapes:
/// the same JSON value, in characters SQS accepts. Every other character a
/// valid JSON text can hold raw is allowed (control characters must already
/// be escaped, and surrogates cannot appear in UTF-8).
pub fn escape_for_sqs(out: &mut Vec<u8>, from: usize) {
    let nonchar = |w: &[u8]| matches!(w, [0xEF, 0xBF, 0xBE | 0xBF]);
    if memchr::memchr(0xEF, &out[from..]).is_none() || !out[from..].windows(3).any(nonchar) {
        return;
    }
    let tail = out.split_off(from);
    let mut i = 0;
    while i < tail.len() {
        if tail[i..].len() >= 3 && nonchar(&tail[i..i + 3]) {
            out.extend_from_slice(if tail[i + 2] == 0xBE {
                b"\\uFFFE"
            } else {
                b"\\uFFFF"
            });
            i += 3;
        } else {
            out.push(tail[i]);
            i += 1;
        }
    }
}

/// Copies JSON text without insignificant whitespace, so pretty-printed input
/// still gives one-line records. Strings and numbers are copied byte for byte.
pub fn write_compact(json: &[u8], out: &mut Vec<u8>) {
    // A scalar's text holds no insignificant whitespace (the span is exactly
    // the value, and spaces inside a string are part of it): copy it whole
    // without looking at its bytes. Most projected values are scalars.
    if !matches!(json.first(), Some(b'{' | b'['))
        || !json
            .iter()
            .any(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
    {
        out.extend_from_slice(json);
        return;
    }
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
}

struct ObjectSeed<'n, 's, 'de> {
    node: &'n Node,
    slots: &'s mut [Option<&'de RawValue>],
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_, '_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match self.node.child(key.as_str()) {
                Some(child) => {
                    let raw: &'de RawValue = map.next_value()?;
                    fill(child, raw, self.slots).map_err(de::Error::custom)?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Records `raw` in `node`'s slots and descends into it for deeper paths.
/// `raw` has been validated already; a type mismatch on a deeper path (e.g.
/// `user.id` where `user` is a string) just leaves that field missing.
fn fill<'de>(
    node: &Node,
    raw: &'de RawValue,
    slots: &mut [Option<&'de RawValue>],
) -> Result<(), serde_json::Error> {
    for &i in &node.slots {
        slots[i] = Some(raw);
    }
    if node.children.is_empty() {
        return Ok(());
    }
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'{') => {
            let mut de = serde_json::Deserializer::from_str(text);
            ObjectSeed { node, slots }.deserialize(&mut de)
        }
        Some(b'[') => {
            let mut de = serde_json::Deserializer::from_str(text);
            de::Deserializer::deserialize_seq(&mut de, ArraySeed { node, slots })
        }
        _ => Ok(()),
    }
}

/// An object key, borrowed from the input unless it had escapes. (serde's
/// `Cow<str>` always allocates, which would cost an allocation per key.)
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

struct ArraySeed<'n, 's, 'de> {
    node: &'n Node,
    slots: &'s mut [Option<&'de RawValue>],
}

impl<'de> Visitor<'de> for ArraySeed<'_, '_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            if let Some(child) = self.node.child(i.to_string().as_str()) {
                fill(child, raw, self.slots).map_err(de::Error::custom)?;
            }
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn project(spec: &str, missing: Missing, record: &str) -> Result<String, RecordError> {
        let p = Projection::new(&parse_fields(spec).unwrap(), missing);
        let mut out = Vec::new();
        p.project(record.as_bytes(), &mut out)
            .map(|()| String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_documented_example() {
        let rec = r#"{"id":7,"timestamp":"2026-11-21T22:30:00Z","user":{"id":12345678901234567890,"name":"x"},
            "geo":{"country":"DE"},"tags":["a","b"],"noise":[1,2,{"deep":true}]}"#;
        let out = project(
            "id,ts=timestamp,user_id=user.id,country=geo.country,first_tag=tags.0",
            Missing::Omit,
            rec,
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"id":7,"ts":"2026-11-21T22:30:00Z","user_id":12345678901234567890,"country":"DE","first_tag":"a"}"#
        );
    }

    #[test]
    fn numbers_are_copied_exactly_and_order_is_the_configured_one() {
        let rec = r#"{"b":1.10,"a":6.02e23,"c":-0.0,"d":123456789012345678901234567890}"#;
        assert_eq!(
            project("d,c,b,a", Missing::Omit, rec).unwrap(),
            r#"{"d":123456789012345678901234567890,"c":-0.0,"b":1.10,"a":6.02e23}"#
        );
        // The grammar decides, not f64's range (RFC 8259 leaves range to the
        // reader): numbers serde_json's `Value` refuses are valid JSON and
        // relayed as written, the unwanted ones included.
        let rec = r#"{"x":1e400,"y":-2E-99999999999999999999,"z":[1e999,0]}"#;
        assert!(serde_json::from_str::<serde_json::Value>(rec).is_err());
        assert_eq!(
            project("z,y,x", Missing::Omit, rec).unwrap(),
            r#"{"z":[1e999,0],"y":-2E-99999999999999999999,"x":1e400}"#
        );
        assert_eq!(
            project("y", Missing::Omit, rec).unwrap(),
            r#"{"y":-2E-99999999999999999999}"#
        );
    }

    #[test]
    fn missing_fields_are_omitted_or_null() {
        let rec = r#"{"a":1,"user":"not an object"}"#;
        assert_eq!(
            project("a,b,u=user.id", Missing::Omit, rec).unwrap(),
            r#"{"a":1}"#
        );
        assert_eq!(
            project("a,b,u=user.id", Missing::Null, rec).unwrap(),
            r#"{"a":1,"b":null,"u":null}"#
        );
    }

    #[test]
    fn pointers_escapes_and_nested_values_are_compacted() {
        let rec = "{\n  \"a/b\": {\n    \"x~y\": [ 1, \"s p\" ]\n  },\n  \"k\\u0065y\": 2\n}";
        assert_eq!(
            project("v=/a~1b/x~0y,key", Missing::Omit, rec).unwrap(),
            r#"{"v":[1,"s p"],"key":2}"#
        );
    }

    #[test]
    fn invalid_or_non_object_records_are_rejected_anywhere_in_them() {
        assert_eq!(
            project("a", Missing::Omit, "[1,2]"),
            Err(RecordError::NotAnObject)
        );
        assert_eq!(
            project("a", Missing::Omit, "\"s\""),
            Err(RecordError::NotAnObject)
        );
        // The broken part is in a field nobody asked for: still rejected.
        assert!(matches!(
            project("a", Missing::Omit, r#"{"a":1,"z":[1,,2]}"#),
            Err(RecordError::Invalid(_))
        ));
        assert!(matches!(
            project("a", Missing::Omit, r#"{"a":1"#),
            Err(RecordError::Invalid(_))
        ));
        assert!(matches!(
            project("a", Missing::Omit, r#"{"a":1} x"#),
            Err(RecordError::Invalid(_))
        ));
        assert!(matches!(
            project("a", Missing::Omit, "{\"a\":\"\u{0}\"}"),
            Err(RecordError::Invalid(_))
        ));
    }

    #[test]
    fn spec_errors_say_what_is_wrong() {
        assert_eq!(parse_fields(" , "), Err(SpecError::Empty));
        assert!(
            parse_fields("a=")
                .unwrap_err()
                .to_string()
                .contains("empty segment")
        );
        assert!(
            parse_fields("=a")
                .unwrap_err()
                .to_string()
                .contains("output name is empty")
        );
        assert!(
            parse_fields("a..b")
                .unwrap_err()
                .to_string()
                .contains("empty segment")
        );
        assert_eq!(
            parse_fields("x=a,x=b"),
            Err(SpecError::Duplicate("x".into()))
        );
        assert_eq!(
            parse_fields("user.id")
                .unwrap()
                .into_iter()
                .map(|f| (f.name, f.path))
                .collect::<Vec<_>>(),
            [(
                "user.id".to_owned(),
                vec!["user".to_owned(), "id".to_owned()]
            )]
        );
    }

    /// A projection's bytes, or whether it failed as "not an object".
    type Projected = Result<Vec<u8>, bool>;

    fn projected(r: Result<(), RecordError>, out: Vec<u8>) -> Projected {
        r.map(|()| out)
            .map_err(|e| matches!(e, RecordError::NotAnObject))
    }

    /// Both projections of `record`: the fast one and the reference.
    fn both(p: &Projection, record: &[u8]) -> (Projected, Projected) {
        let (mut fast, mut reference) = (Vec::new(), Vec::new());
        let f = p.project(record, &mut fast);
        let r = p.project_reference(record, &mut reference);
        (projected(f, fast), projected(r, reference))
    }

    /// Whether SQS accepts every character of `body`.
    fn sqs_accepts(body: &[u8]) -> bool {
        std::str::from_utf8(body).is_ok_and(|s| {
            s.chars().all(|c| {
                matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
            })
        })
    }

    #[test]
    fn characters_sqs_refuses_are_escaped() {
        let rec = "{\"a\":\"x\u{FFFF}y\u{FFFE}\",\"\u{FFFF}\":1,\"b\":\"\u{FFFD}\u{10000}\"}";
        let p = Projection::new(&parse_fields("a,k=\u{FFFF},b").unwrap(), Missing::Omit);
        let mut out = Vec::new();
        p.project(rec.as_bytes(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "{\"a\":\"x\\uFFFFy\\uFFFE\",\"k\":1,\"b\":\"\u{FFFD}\u{10000}\"}"
        );
        assert!(sqs_accepts(&out));
    }

    proptest! {
        /// The scanner and the serde_json reference agree on every record:
        /// both accept it with identical bytes, or both refuse it for the
        /// same kind of reason.
        #[test]
        fn fast_path_matches_the_reference_on_values(
            v in crate::pipeline::json::tests::any_value(),
            pretty in any::<bool>(),
            spec in "(a|b|c|[a-c]\\.[a-c0-2]|[a-c]\\.[0-2]\\.[a-c])(,(a|b|c|[a-c]\\.[a-c0-2])){0,3}",
        ) {
            if let Ok(fields) = parse_fields(&spec) {
                let p = Projection::new(&fields, Missing::Null);
                let text = if pretty { serde_json::to_vec_pretty(&v).unwrap() } else { serde_json::to_vec(&v).unwrap() };
                let (fast, reference) = both(&p, &text);
                prop_assert_eq!(fast, reference);
            }
        }

        /// And on broken ones: JSON-shaped noise around a few keys.
        #[test]
        fn fast_path_matches_the_reference_on_noise(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "{", "}", "[", "]", ",", ":", " ", "\"a\"", "\"b\"", "\"c\"", "1", "-2.5e3", "true",
                "null", "\"s\\u00e9\"", "\"\\ud800\"", "\"\\ud800\":", "\"\u{1}\"", "NaN", "\"x\\q\"", "\"é\"",
            ]), 0..30),
            invalid_utf8 in any::<bool>(),
        ) {
            let mut text = parts.concat().into_bytes();
            if invalid_utf8 && !text.is_empty() {
                let at = text.len() / 2;
                text.insert(at, 0xFF);
            }
            let p = Projection::new(&parse_fields("a,b.c,b.0,c").unwrap(), Missing::Omit);
            let (fast, reference) = both(&p, &text);
            prop_assert_eq!(fast, reference, "{:?}", String::from_utf8_lossy(&text));
        }

        /// Any valid record gives a body SQS accepts, with the same values.
        #[test]
        fn output_is_valid_for_sqs_and_the_same_value(v in crate::pipeline::json::tests::any_value(), extra in "\\PC{0,4}[\u{FFFE}\u{FFFF}]?") {
            let mut obj = serde_json::Map::new();
            obj.insert("a".into(), v);
            obj.insert("b".into(), serde_json::Value::String(extra));
            let text = serde_json::to_vec(&obj).unwrap();
            let p = Projection::new(&parse_fields("a,b").unwrap(), Missing::Omit);
            let mut out = Vec::new();
            p.project(&text, &mut out).unwrap();
            prop_assert!(sqs_accepts(&out), "{:?}", String::from_utf8_lossy(&out));
            // Parsed by the same parser on both sides: serde_json's float
            // parsing is not exact, and the relay copies numbers verbatim.
            let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let want: serde_json::Value = serde_json::from_slice(&text).unwrap();
            prop_assert_eq!(got, want);
        }

        /// Whatever the bytes, projection returns Ok or Err, never panics, and
        /// anything it accepts is valid JSON.
        #[test]
        fn never_panics_and_output_is_json(record in proptest::collection::vec(any::<u8>(), 0..200), spec in "[a-c.0-1]{1,6}(,[a-c.0-1]{1,6}){0,3}") {
            if let Ok(fields) = parse_fields(&spec) {
                let p = Projection::new(&fields, Missing::Null);
                let mut out = Vec::new();
                if p.project(&record, &mut out).is_ok() {
                    prop_assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
                }
            }
        }

        /// Projecting a serialized object gives back exactly the chosen values.
        #[test]
        fn projects_what_serde_json_sees(a in any::<i64>(), b in "\\PC{0,12}", c in any::<bool>(), pretty in any::<bool>()) {
            let v = serde_json::json!({"a": a, "n": {"b": b, "c": [c, null]}, "z": "ignored"});
            let text = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
            let p = Projection::new(&parse_fields("c=n.c.0,a,b=/n/b").unwrap(), Missing::Omit);
            let mut out = Vec::new();
            p.project(text.as_bytes(), &mut out).unwrap();
            let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(got, serde_json::json!({"c": c, "a": a, "b": b}));
        }
    }
}
