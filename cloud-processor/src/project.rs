//! Projection: cut a record down to the configured fields, copying each value
//! as its exact JSON text (floats and big integers are never re-encoded).
//!
//! One pass of serde_json over the record validates all of it (unwanted
//! values are skipped with `IgnoredAny`, which still checks them) and borrows
//! the wanted values as raw text. Only subtrees on a wanted path are parsed
//! again, to reach nested fields.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

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

/// A trie of wanted paths, so one walk of a record serves every field.
#[derive(Debug, Default, Clone)]
struct Node {
    /// Output slots filled by the value at exactly this path.
    slots: Vec<usize>,
    /// Few children per level: a linear scan beats hashing every key of
    /// every record (SipHash was 7% of the hot path).
    children: Vec<(String, Node)>,
}

impl Node {
    fn child(&self, key: &str) -> Option<&Node> {
        self.children.iter().find(|(k, _)| k == key).map(|(_, n)| n)
    }

    fn child_mut(&mut self, key: &str) -> &mut Node {
        let i = match self.children.iter().position(|(k, _)| k == key) {
            Some(i) => i,
            None => {
                self.children.push((key.to_owned(), Node::default()));
                self.children.len() - 1
            }
        };
        &mut self.children[i].1
    }
}

/// A compiled projection.
#[derive(Debug, Clone)]
pub struct Projection {
    root: Node,
    /// Pre-encoded `"name":` prefixes, in output order.
    keys: Vec<String>,
    missing: Missing,
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
            let mut node = &mut root;
            for seg in &f.path {
                node = node.child_mut(seg);
            }
            node.slots.push(i);
        }
        let keys = fields
            .iter()
            .map(|f| format!("{}:", serde_json::Value::String(f.name.clone())))
            .collect();
        Self {
            root,
            keys,
            missing,
        }
    }

    /// Validates `record` as one JSON object and appends its projection, a
    /// compact JSON object with the fields in configured order, to `out`.
    /// On error `out` is left as it was.
    pub fn project(&self, record: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        let first = record.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            // Still reject invalid JSON as invalid, not as "not an object".
            return match serde_json::from_slice::<IgnoredAny>(record) {
                Ok(_) => Err(RecordError::NotAnObject),
                Err(e) => Err(RecordError::Invalid(e.to_string())),
            };
        }
        let mut slots: Vec<Option<&RawValue>> = vec![None; self.keys.len()];
        let mut de = serde_json::Deserializer::from_slice(record);
        ObjectSeed {
            node: &self.root,
            slots: &mut slots,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| RecordError::Invalid(e.to_string()))?;

        out.push(b'{');
        let mut first = true;
        for (key, slot) in self.keys.iter().zip(&slots) {
            let value = match (slot, self.missing) {
                (Some(v), _) => v.get(),
                (None, Missing::Null) => "null",
                (None, Missing::Omit) => continue,
            };
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(key.as_bytes());
            write_compact(value.as_bytes(), out);
        }
        out.push(b'}');
        Ok(())
    }
}

/// Copies JSON text without insignificant whitespace, so pretty-printed input
/// still gives one-line records. Strings and numbers are copied byte for byte.
pub fn write_compact(json: &[u8], out: &mut Vec<u8>) {
    if !json
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

    proptest! {
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
