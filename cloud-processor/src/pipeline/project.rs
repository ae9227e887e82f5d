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

use crate::pipeline::compact::{escape_for_sqs, write_compact};
use crate::pipeline::json::{self, Node, Scanner, Span, Stop};
use crate::pipeline::rules::{
    Broken, HmacKey, Keys, Kind, Kinds, RULES, Rule, Transform, Violation,
};

/// One configured field: where to read it, what to call it, its rules and
/// what is written for its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The output key, as written in the spec (or the path if no name was given).
    pub name: String,
    pub path: Vec<String>,
    pub rule: Rule,
    pub transform: Transform,
}

impl Field {
    /// A plain field: copied as it is, no rules.
    pub fn plain(name: &str, path: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            rule: Rule::default(),
            transform: Transform::Copy,
        }
    }

    /// The rules it has, by their names in [`RULES`].
    pub fn rules(&self) -> Vec<&'static str> {
        self.each_rule(None)
            .iter()
            .zip(RULES)
            .filter_map(|(r, name)| r.map(|_| name))
            .collect()
    }

    /// Each of its rules against what a record holds, as [`Rule::each`].
    pub fn each_rule(&self, seen: Seen) -> [Option<Result<(), Broken>>; RULES.len()] {
        self.rule.each(self.transform.hashes(), seen)
    }

    /// As a field list writes it (`uid=hmac(user.email):string!`), with
    /// the path dotted: for the start-up line.
    pub fn spec(&self) -> String {
        let path = self.path.join(".");
        let value = match self.transform.name() {
            Some(t) => format!("{t}({path})"),
            None => path,
        };
        format!("{}={value}{}", self.name, self.suffix())
    }

    /// `:types!`, as written after the path.
    fn suffix(&self) -> String {
        let mut text = String::new();
        if !self.rule.kinds.is_any() {
            text.push(':');
            text.push_str(&self.rule.kinds.to_string());
        }
        if self.rule.required {
            text.push('!');
        }
        text
    }

    /// Its transform and rules (`hmac()`, `:int!`), empty for a plain
    /// field: what the settings' fingerprint adds to `name=path`, so that
    /// plain lists keep their fingerprint.
    pub fn rules_text(&self) -> String {
        let transform = self.transform.name().map(|t| format!("{t}()"));
        transform.unwrap_or_default() + &self.suffix()
    }
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
    Invalid { entry: String, reason: String },
    #[error("output name {0:?} is used twice")]
    Duplicate(String),
}

/// Parses a field list: entries `[name=]path[:type[|type]...][!]`, where a
/// path is dotted (`user.id`, `tags.0`) or a JSON pointer (`/geo/country`),
/// may be wrapped as `hmac(path)` or `redact(path)`, and `!` means required.
/// For example `id:string!,ts=timestamp:int!,user_id=user.id:string|int,uid=hmac(user.email)`.
///
/// A dotted path ends at its first `:`, and what follows must name known
/// types. A pointer's last `:` starts a type list only if every name after
/// it is a known type, so `/a:b` reaches the key `a:b`, and `/a:b:any` too;
/// a trailing `!` always means required, so a key ending in `!` is written
/// with a type list after it (`/wow!:any`).
pub fn parse_fields(spec: &str) -> Result<Vec<Field>, SpecError> {
    let mut fields: Vec<Field> = Vec::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let field = parse_entry(entry).map_err(|reason| SpecError::Invalid {
            entry: entry.to_owned(),
            reason,
        })?;
        if fields.iter().any(|f| f.name == field.name) {
            return Err(SpecError::Duplicate(field.name));
        }
        fields.push(field);
    }
    if fields.is_empty() {
        return Err(SpecError::Empty);
    }
    Ok(fields)
}

fn parse_entry(entry: &str) -> Result<Field, String> {
    let (name, rest) = match entry.split_once('=') {
        Some((n, p)) => (Some(n.trim()), p.trim()),
        None => (None, entry),
    };
    let (rest, required) = match rest.strip_suffix('!') {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let (path, kinds) = split_kinds(rest)?;
    let (transform, path) = [Transform::Hmac, Transform::HmacPrevious, Transform::Redact]
        .into_iter()
        .find_map(|t| {
            let inner = path.strip_prefix(t.name()?)?.strip_prefix('(')?;
            Some((t, inner))
        })
        .unwrap_or((Transform::Copy, path));
    let path = match transform {
        Transform::Copy => path,
        t => path
            .strip_suffix(')')
            .ok_or_else(|| format!("{}( is not closed with )", t.name().unwrap_or_default()))?,
    };
    let name = match (name, transform) {
        (Some(n), _) => n,
        (None, Transform::Copy) => path,
        (None, _) => {
            return Err(format!(
                "{}() needs an output name, e.g. `uid={entry}`",
                transform.name().unwrap_or_default()
            ));
        }
    };
    if name.is_empty() {
        return Err("the output name is empty".into());
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
        return Err("the path has an empty segment".into());
    }
    Ok(Field {
        name: name.to_owned(),
        path: segments,
        rule: Rule { kinds, required },
        transform,
    })
}

/// Splits `path:types` into the path and its kinds (any, if none).
fn split_kinds(text: &str) -> Result<(&str, Kinds), String> {
    let unknown = |name: String| {
        format!(
            "unknown type `{name}` (types: string, int, number, bool, null, object, array, any; \
             a key with `:` in it is written as a JSON pointer, e.g. `/a:b`)"
        )
    };
    if text.starts_with('/') {
        return Ok(match text.rsplit_once(':') {
            Some((path, list)) => match Kinds::parse(list) {
                Ok(kinds) => (path, kinds),
                Err(_) => (text, Kinds::default()),
            },
            None => (text, Kinds::default()),
        });
    }
    // The parentheses of hmac(...) come before the types.
    let from = text.rfind(')').unwrap_or(0);
    match text[from..].find(':') {
        Some(at) => {
            let (path, list) = (&text[..from + at], &text[from + at + 1..]);
            Kinds::parse(list).map(|k| (path, k)).map_err(unknown)
        }
        None => Ok((text, Kinds::default())),
    }
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
    /// Whether any field has a rule (or a length limit, under `hmac()`):
    /// if not, values' kinds are not read.
    checked: bool,
    hmac_keys: Keys,
}

/// Why a record was not projected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the value is not a JSON object")]
    NotAnObject,
    #[error("invalid JSON: {0}")]
    Invalid(String),
    /// Valid JSON that breaks a field's rule; `found` says, per field,
    /// whether the record has it.
    #[error("{violation}")]
    Rule {
        violation: Violation,
        found: Vec<bool>,
    },
}

/// What a rule is checked against: a value's kind and its length in bytes.
pub type Seen = Option<(Kind, u64)>;

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
            checked: fields
                .iter()
                .any(|f| !f.rule.is_none() || f.transform.hashes()),
            hmac_keys: Keys::default(),
        }
    }

    /// Sets the key `hmac()` fields are hashed with. Without one they are
    /// written redacted, never in clear (configuration refuses to start
    /// without a key where `hmac()` is used).
    #[must_use]
    pub fn with_key(self, key: Option<HmacKey>) -> Self {
        self.with_keys(Keys {
            current: key,
            previous: None,
        })
    }

    /// Sets the keys of `hmac()` and `hmac_previous()`.
    #[must_use]
    pub fn with_keys(mut self, keys: Keys) -> Self {
        self.hmac_keys = keys;
        self
    }

    /// Whether a field hashes with `t`'s key, so that key is needed.
    pub fn uses(&self, t: Transform) -> bool {
        self.fields.iter().any(|f| f.transform == t)
    }

    /// The keys (their `Debug` and `id` reveal nothing of them).
    pub fn hmac_keys(&self) -> &Keys {
        &self.hmac_keys
    }

    /// Whether any field has a rule to check (or is hashed).
    pub fn has_rules(&self) -> bool {
        self.checked
    }

    /// Checks the fields' rules against what a record holds (per field in
    /// order, its value's kind and length), and names the first broken.
    pub fn check(&self, seen: impl Iterator<Item = Seen>) -> Result<(), Violation> {
        if !self.checked {
            return Ok(());
        }
        for (slot, (field, seen)) in self.fields.iter().zip(seen).enumerate() {
            if let Err(broken) = field.rule.check(field.transform.hashes(), seen) {
                return Err(Violation {
                    slot,
                    field: field.name.clone(),
                    broken,
                });
            }
        }
        Ok(())
    }

    /// [`Projection::check`] over values' text.
    pub fn check_values<'v>(
        &self,
        values: impl Iterator<Item = Option<&'v [u8]>>,
    ) -> Result<(), Violation> {
        if !self.checked {
            return Ok(());
        }
        self.check(values.map(|v| v.map(|v| (Kind::of(v), v.len() as u64))))
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
        if let Err(violation) = self.check_values(values(record, &slots)) {
            let found = slots.iter().map(Option::is_some).collect();
            return Err(RecordError::Rule { violation, found });
        }
        self.write(record, &slots, out);
        Ok(slots.iter().map(Option::is_some).collect())
    }

    /// Appends the projection of an already validated `record` whose wanted
    /// values are at `slots` (as captured by [`json::object`]).
    pub fn write(&self, record: &[u8], slots: &[Option<Span>], out: &mut Vec<u8>) {
        self.write_values(values(record, slots), out);
    }

    fn write_values<'v>(&self, values: impl Iterator<Item = Option<&'v [u8]>>, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(b'{');
        let mut first = true;
        for ((key, field), value) in self.keys.iter().zip(&self.fields).zip(values) {
            let value = match (value, self.missing) {
                (Some(v), _) => Some(v),
                (None, Missing::Null) => None,
                (None, Missing::Omit) => continue,
            };
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(key.as_bytes());
            match value {
                Some(v) => self.write_value(field.transform, v, out),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.push(b'}');
        escape_for_sqs(out, start);
    }

    /// Writes a present value as its field's transform says.
    pub fn write_value(&self, transform: Transform, value: &[u8], out: &mut Vec<u8>) {
        match (transform, self.hmac_keys.for_transform(transform)) {
            (Transform::Copy, _) => write_compact(value, out),
            (_, Some(key)) => key.write(value, out),
            _ => out.extend_from_slice(crate::pipeline::rules::REDACTED),
        }
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
        if let Err(violation) =
            self.check_values(slots.iter().map(|s| s.map(|v| v.get().as_bytes())))
        {
            let found = slots.iter().map(Option::is_some).collect();
            return Err(RecordError::Rule { violation, found });
        }
        self.write_values(slots.iter().map(|s| s.map(|v| v.get().as_bytes())), out);
        Ok(())
    }
}

/// The values at `slots` in `record`.
fn values<'r>(
    record: &'r [u8],
    slots: &'r [Option<Span>],
) -> impl Iterator<Item = Option<&'r [u8]>> + 'r {
    slots
        .iter()
        .map(|s| s.map(|(a, b)| &record[a as usize..b as usize]))
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

    fn one(spec: &str) -> Field {
        let mut fields = parse_fields(spec).unwrap();
        assert_eq!(fields.len(), 1, "{spec}");
        fields.remove(0)
    }

    #[test]
    fn types_required_and_transforms_parse_and_plain_lists_stay_plain() {
        let f = one("ts=timestamp:int!");
        assert_eq!(
            (f.name.as_str(), &f.path[..]),
            ("ts", &["timestamp".to_owned()][..])
        );
        assert!(f.rule.required && f.rule.kinds.allows(Kind::Int));
        assert!(!f.rule.kinds.allows(Kind::Number));
        let f = one("user_id=user.id:string|int");
        assert_eq!(f.path, ["user", "id"]);
        assert_eq!(f.rule.kinds.to_string(), "string|int");
        assert!(!f.rule.required);
        let f = one("uid=hmac(user.email):string!");
        assert_eq!(f.transform, Transform::Hmac);
        assert_eq!(f.path, ["user", "email"]);
        assert_eq!(f.spec(), "uid=hmac(user.email):string!");
        assert_eq!(one("mail=redact(/user/email)").transform, Transform::Redact);
        // Today's lists mean what they meant.
        for spec in ["id", "ts=timestamp", "c=/geo/country", "first_tag=tags.0"] {
            let f = one(spec);
            assert_eq!((f.rule, f.transform), (Rule::default(), Transform::Copy));
            assert_eq!(f.rules_text(), "");
        }
    }

    #[test]
    fn keys_with_colons_and_bangs_are_reached_through_pointers() {
        assert_eq!(one("/a:b").path, ["a:b"]);
        assert!(one("/a:b").rule.is_none());
        let f = one("/a:b:int");
        assert_eq!(
            (f.path.clone(), f.rule.kinds.to_string()),
            (vec!["a:b".to_owned()], "int".into())
        );
        let f = one("w=/wow!:any");
        assert_eq!(f.path, ["wow!"]);
        assert!(f.rule.is_none());
        let f = one("/wow!:any!");
        assert_eq!(f.path, ["wow!"]);
        assert!(f.rule.required);
        // In a dotted path, what follows `:` must be types.
        let e = parse_fields("id:strng").unwrap_err().to_string();
        assert!(
            e.contains("unknown type `strng`") && e.contains("/a:b"),
            "{e}"
        );
    }

    #[test]
    fn bad_rules_are_errors_that_name_them() {
        let e = parse_fields("hmac(user.email)").unwrap_err().to_string();
        assert!(e.contains("needs an output name"), "{e}");
        let e = parse_fields("u=hmac(user.email").unwrap_err().to_string();
        assert!(e.contains("not closed"), "{e}");
        let e = parse_fields("ts:int|flaot!").unwrap_err().to_string();
        assert!(
            e.contains("\"ts:int|flaot!\"") && e.contains("`flaot`"),
            "{e}"
        );
        let e = parse_fields("u=hmac():string").unwrap_err().to_string();
        assert!(e.contains("empty segment"), "{e}");
    }

    #[test]
    fn a_broken_rule_rejects_the_record_and_names_the_field() {
        let p = Projection::new(
            &parse_fields("id:string!,ts:int!,n:number").unwrap(),
            Missing::Omit,
        );
        let mut out = Vec::new();
        let reason = |r: Result<(), RecordError>| r.map_err(|e| e.to_string());
        assert_eq!(
            reason(p.project(br#"{"id":1,"ts":2}"#, &mut out)),
            Err("field `id`: expected string, found int".into())
        );
        assert_eq!(
            reason(p.project(br#"{"id":"a"}"#, &mut out)),
            Err("field `ts`: required, but missing".into())
        );
        assert_eq!(
            reason(p.project(br#"{"id":"a","ts":1,"n":"x"}"#, &mut out)),
            Err("field `n`: expected number, found string".into())
        );
        assert!(out.is_empty(), "nothing written for a reject");
        p.project(
            br#"{"id":"a","ts":12345678901234567890123,"n":1.5e3}"#,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, br#"{"id":"a","ts":12345678901234567890123,"n":1.5e3}"#);
        // The reference agrees.
        let mut reference = Vec::new();
        assert!(matches!(
            p.project_reference(br#"{"id":"a","ts":"1"}"#, &mut reference),
            Err(RecordError::Rule { .. })
        ));
    }

    #[test]
    fn hmac_without_a_key_writes_redacted_never_clear() {
        let p = Projection::new(&parse_fields("u=hmac(e)").unwrap(), Missing::Omit);
        let mut out = Vec::new();
        p.project(br#"{"e":"a@b"}"#, &mut out).unwrap();
        assert_eq!(out, br#"{"u":"[redacted]"}"#);
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
