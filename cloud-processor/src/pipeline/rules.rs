//! Rules on projected fields: the JSON types a field may have, whether it
//! must be there, and what is written in its place (a keyed HMAC or
//! `"[redacted]"`). Pure: values' bytes in, a verdict or output bytes out.
//!
//! A record that breaks a rule is rejected whole, never sent half valid.
//! The kind of a value is read off its first byte (and, for a number,
//! whether it has a fraction or an exponent), which the scanner has already
//! validated: checking types costs a byte or two per field.

use std::fmt;

use hmac::{KeyInit, Mac};

/// The largest value `hmac()` reads: the record window (1 MiB), which
/// bounds every value of a record read whole. A larger value of a streamed
/// record is a reject, so hashing never holds more than this.
pub const MAX_HASHED_BYTES: usize = 1 << 20;

/// What `redact()` writes.
pub const REDACTED: &[u8] = b"\"[redacted]\"";

/// A JSON value's kind. `Int` is a number written without a fraction or an
/// exponent (any size); `number` accepts it too, as JSON Schema does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Int,
    Number,
    Bool,
    Null,
    Object,
    Array,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::String,
        Kind::Int,
        Kind::Number,
        Kind::Bool,
        Kind::Null,
        Kind::Object,
        Kind::Array,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Int => "int",
            Kind::Number => "number",
            Kind::Bool => "bool",
            Kind::Null => "null",
            Kind::Object => "object",
            Kind::Array => "array",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The kind of a value from its first byte and whether a number has a
    /// fraction or an exponent. `first` is that of valid JSON.
    pub fn from_first(first: u8, fraction: bool) -> Kind {
        match first {
            b'"' => Kind::String,
            b'{' => Kind::Object,
            b'[' => Kind::Array,
            b't' | b'f' => Kind::Bool,
            b'n' => Kind::Null,
            _ if fraction => Kind::Number,
            _ => Kind::Int,
        }
    }

    /// The kind of a valid JSON value's text.
    pub fn of(value: &[u8]) -> Kind {
        let first = value.first().copied().unwrap_or(b'n');
        Kind::from_first(first, is_number_start(first) && has_fraction(value))
    }
}

pub fn is_number_start(b: u8) -> bool {
    b == b'-' || b.is_ascii_digit()
}

/// Whether number text has a fraction or an exponent.
pub fn has_fraction(text: &[u8]) -> bool {
    text.iter().any(|b| matches!(b, b'.' | b'e' | b'E'))
}

/// A set of kinds; empty means any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    pub fn is_any(self) -> bool {
        self.0 == 0
    }

    pub fn allows(self, kind: Kind) -> bool {
        self.is_any()
            || self.0 & kind.bit() != 0
            || (kind == Kind::Int && self.0 & Kind::Number.bit() != 0)
    }

    /// Parses `string|int`. `any` stands for every kind. `None` if a name is
    /// not a kind's.
    pub fn parse(list: &str) -> Result<Kinds, String> {
        let mut bits = 0;
        for name in list.split('|') {
            if name == "any" {
                return Ok(Kinds::default());
            }
            match Kind::ALL.iter().find(|k| k.name() == name) {
                Some(k) => bits |= k.bit(),
                None => return Err(name.to_owned()),
            }
        }
        Ok(Kinds(bits))
    }
}

impl fmt::Display for Kinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            return f.write_str("any");
        }
        let names: Vec<&str> = Kind::ALL
            .iter()
            .filter(|k| self.0 & k.bit() != 0)
            .map(|k| k.name())
            .collect();
        f.write_str(&names.join("|"))
    }
}

/// What is written for a field's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transform {
    /// Its exact JSON text.
    #[default]
    Copy,
    /// `hmac(path)`: HMAC-SHA-256 under the configured key, as lowercase hex.
    Hmac,
    /// `hmac_previous(path)`: the same under the previous key, while
    /// consumers move from one key to the next.
    HmacPrevious,
    /// `redact(path)`: `"[redacted]"`.
    Redact,
}

impl Transform {
    /// Whether the value is hashed (and so bounded in length).
    pub fn hashes(self) -> bool {
        matches!(self, Transform::Hmac | Transform::HmacPrevious)
    }

    pub fn name(self) -> Option<&'static str> {
        match self {
            Transform::Copy => None,
            Transform::Hmac => Some("hmac"),
            Transform::HmacPrevious => Some("hmac_previous"),
            Transform::Redact => Some("redact"),
        }
    }
}

/// A field's rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rule {
    pub kinds: Kinds,
    pub required: bool,
}

impl Rule {
    pub fn is_none(self) -> bool {
        self.kinds.is_any() && !self.required
    }

    /// Each rule a field has, against what a record holds (its value's
    /// kind and length, or nothing), indexed as [`RULES`]: `None` for a
    /// rule the field does not have. `hashed`: the field is hashed, so its
    /// value is bounded in length.
    pub fn each(
        self,
        hashed: bool,
        seen: Option<(Kind, u64)>,
    ) -> [Option<Result<(), Broken>>; RULES.len()] {
        let required = self.required.then_some(match seen {
            None => Err(Broken::Missing),
            Some(_) => Ok(()),
        });
        let types = (!self.kinds.is_any()).then(|| match seen {
            Some((kind, _)) if !self.kinds.allows(kind) => Err(Broken::Type {
                expected: self.kinds,
                found: kind,
            }),
            _ => Ok(()),
        });
        let length = hashed.then_some(match seen {
            Some((_, bytes)) if bytes > MAX_HASHED_BYTES as u64 => Err(Broken::TooLong { bytes }),
            _ => Ok(()),
        });
        [required, types, length]
    }

    /// The first rule broken, if any.
    pub fn check(self, hashed: bool, seen: Option<(Kind, u64)>) -> Result<(), Broken> {
        self.each(hashed, seen)
            .into_iter()
            .flatten()
            .find(Result::is_err)
            .unwrap_or(Ok(()))
    }
}

/// How a value broke its field's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    Missing,
    Type {
        expected: Kinds,
        found: Kind,
    },
    /// A value for `hmac()` over [`MAX_HASHED_BYTES`].
    TooLong {
        bytes: u64,
    },
}

/// The rules counted apart, as the `rule` label of
/// `relay_processor_schema_rejects_total`.
pub const RULES: [&str; 3] = ["required", "type", "hmac_length"];

impl Broken {
    /// Its index in [`RULES`].
    pub fn rule(self) -> usize {
        match self {
            Broken::Missing => 0,
            Broken::Type { .. } => 1,
            Broken::TooLong { .. } => 2,
        }
    }
}

/// The first broken rule of a record: which field (its output name) and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {broken}")]
pub struct Violation {
    pub slot: usize,
    pub field: String,
    pub broken: Broken,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::Missing => f.write_str("required, but missing"),
            Broken::Type { expected, found } => {
                write!(f, "expected {expected}, found {}", found.name())
            }
            Broken::TooLong { bytes } => write!(
                f,
                "hmac() reads values up to {MAX_HASHED_BYTES} bytes, found {bytes}"
            ),
        }
    }
}

/// The keys `hmac()` and `hmac_previous()` hash with.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub current: Option<HmacKey>,
    pub previous: Option<HmacKey>,
}

impl Keys {
    /// The key a transform hashes with, if it hashes and it is set.
    pub fn for_transform(&self, t: Transform) -> Option<&HmacKey> {
        match t {
            Transform::Hmac => self.current.as_ref(),
            Transform::HmacPrevious => self.previous.as_ref(),
            _ => None,
        }
    }
}

/// The HMAC key. Its bytes are never printed: `Debug` shows only a digest
/// that tells two keys apart.
#[derive(Clone)]
pub struct HmacKey {
    mac: hmac::Hmac<sha2::Sha256>,
    id: String,
}

impl HmacKey {
    /// `None` for an empty key, which would hash without a secret.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() {
            return None;
        }
        let mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(bytes).ok()?;
        let mut probe = mac.clone();
        probe.update(b"relay key id");
        let id = hex::encode(&probe.finalize().into_bytes()[..8]);
        Some(Self { mac, id })
    }

    /// Names the key without revealing it: the HMAC of a fixed text, so
    /// that settings (and the marker fingerprint) change with the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Appends `"<hex>"`, the HMAC of `value`'s text: a string's decoded
    /// text in UTF-8, any other value's JSON text as it is.
    pub fn write(&self, value: &[u8], out: &mut Vec<u8>) {
        let mut mac = self.mac.clone();
        hash_text(value, |part| mac.update(part));
        let mut text = [0u8; 64];
        // 32 bytes always fit 64 hex digits: the error cannot happen.
        let _ = hex::encode_to_slice(mac.finalize().into_bytes(), &mut text);
        out.push(b'"');
        out.extend_from_slice(&text);
        out.push(b'"');
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HmacKey({})", self.id)
    }
}

/// Feeds what `hmac()` hashes of a valid JSON value to `update`. A string
/// without escapes is its bytes between the quotes; one with escapes is
/// decoded first, so `"a\u0040b"` and `"a@b"` hash alike. A number, `true`,
/// `false` or `null` is its text as written; an object or array its compact
/// text, as it would be sent.
pub fn hash_text(value: &[u8], mut update: impl FnMut(&[u8])) {
    match value {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => update(inner),
        [b'"', ..] => match serde_json::from_slice::<String>(value) {
            Ok(text) => update(text.as_bytes()),
            // Not reached for a validated value; hash what is there rather
            // than nothing.
            Err(_) => update(value),
        },
        // Compact and with U+FFFE and U+FFFF escaped, as the relay would
        // send it: a value of a streamed record is held so in its spool, and
        // hashes the same.
        [b'{' | b'[', ..] => {
            let mut text = Vec::with_capacity(value.len());
            crate::pipeline::compact::write_compact(value, &mut text);
            crate::pipeline::compact::escape_for_sqs(&mut text, 0);
            update(&text);
        }
        _ => update(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_values_are_bounded_by_the_record_window() {
        assert_eq!(MAX_HASHED_BYTES, crate::cli::RECORD_WINDOW_BYTES);
    }

    #[test]
    fn kinds_are_read_off_the_value() {
        for (text, kind) in [
            (&b"\"x\""[..], Kind::String),
            (b"12", Kind::Int),
            (b"-0", Kind::Int),
            (b"123456789012345678901234567890", Kind::Int),
            (b"1.5", Kind::Number),
            (b"1e3", Kind::Number),
            (b"-2E-3", Kind::Number),
            (b"true", Kind::Bool),
            (b"false", Kind::Bool),
            (b"null", Kind::Null),
            (b"{\"a\":1}", Kind::Object),
            (b"[1]", Kind::Array),
        ] {
            assert_eq!(Kind::of(text), kind, "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn number_accepts_ints_and_unions_accept_each_member() {
        let number = Kinds::parse("number").unwrap();
        assert!(number.allows(Kind::Int) && number.allows(Kind::Number));
        let int = Kinds::parse("int").unwrap();
        assert!(int.allows(Kind::Int) && !int.allows(Kind::Number));
        let union = Kinds::parse("string|int").unwrap();
        assert!(union.allows(Kind::String) && union.allows(Kind::Int));
        assert!(!union.allows(Kind::Null));
        assert_eq!(union.to_string(), "string|int");
        assert!(Kinds::parse("any").unwrap().is_any());
        assert_eq!(Kinds::parse("string|strng"), Err("strng".to_owned()));
    }

    #[test]
    fn reasons_name_the_rule_and_what_was_found() {
        let rule = Rule {
            kinds: Kinds::parse("int").unwrap(),
            required: true,
        };
        let broken = rule.check(false, Some((Kind::String, 3))).unwrap_err();
        let v = Violation {
            slot: 0,
            field: "ts".into(),
            broken,
        };
        assert_eq!(v.to_string(), "field `ts`: expected int, found string");
        assert_eq!(
            rule.check(false, None).unwrap_err().to_string(),
            "required, but missing"
        );
        assert_eq!(rule.check(false, Some((Kind::Int, 2))), Ok(()));
        assert_eq!(Rule::default().check(false, None), Ok(()));
        let long = Some((Kind::String, MAX_HASHED_BYTES as u64 + 1));
        assert!(matches!(
            Rule::default().check(true, long),
            Err(Broken::TooLong { .. })
        ));
        assert_eq!(
            rule.each(false, None).map(|r| r.is_some()),
            [true, true, false]
        );
    }

    #[test]
    fn hmac_hashes_decoded_strings_and_other_values_as_written() {
        let key = HmacKey::new(b"k").unwrap();
        let hash = |v: &[u8]| {
            let mut out = Vec::new();
            key.write(v, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(hash(br#""a\u0040b""#), hash(br#""a@b""#));
        // As specified: a string is its text, a number its JSON text, so
        // these agree (a consumer joining on them gets what it would in
        // clear); an object is its compact text.
        assert_eq!(hash(b"12"), hash(br#""12""#));
        assert_eq!(hash(b"{ \"a\" : [1, 2] }"), hash(br#"{"a":[1,2]}"#));
        assert_ne!(hash(b"true"), hash(b"false"));
        let h = hash(br#""a@b""#);
        assert_eq!(h.len(), 66);
        assert!(
            h[1..65]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }

    #[test]
    fn a_key_never_shows_in_debug_and_an_empty_one_is_none() {
        let key = HmacKey::new(b"sekrit-value").unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("sekrit"), "{shown}");
        assert!(HmacKey::new(b"").is_none());
        assert_ne!(HmacKey::new(b"a").unwrap().id(), key.id());
    }
}
