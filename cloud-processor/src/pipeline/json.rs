//! A validating JSON scanner: finds where one JSON value ends and checks all
//! of it on the way (structure, strings and their escapes, numbers, literals,
//! no control characters), with no recursion and no allocation per value.
//!
//! It is the reader's framing and the projection's parser in one pass: the
//! reader needs to know whether a whole value parses before it accepts it (or
//! a resume point after a bad record), and projection needs the exact text of
//! a few fields. Doing both while validating avoids a second walk of every
//! record. UTF-8 is checked separately over the value's bytes (outside strings
//! the grammar allows only ASCII, so that is the same as checking every string).
//!
//! What it accepts is what `std::str::from_utf8` plus serde_json accept for a
//! record projected through `project::reference` (see the differential tests
//! and the `differential` fuzz target), including serde_json's one asymmetry:
//! keys of objects on a projected path are decoded, so a lone surrogate
//! escape there is an error, while elsewhere `\uD800` is well-formed text.

/// Why a value did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The value is definitely not valid JSON: the problem is at byte `at`
    /// (an index into the scanned slice).
    Invalid { at: usize, reason: &'static str },
    /// The slice ended first. With more bytes it may complete; at the end of
    /// input it is truncated.
    Incomplete,
}

/// A value's extent in the scanned slice.
pub type Span = (u32, u32);

type Res<T> = Result<T, Stop>;

fn invalid<T>(at: usize, reason: &'static str) -> Res<T> {
    Err(Stop::Invalid { at, reason })
}

pub use crate::pipeline::grammar::reason::EXPECTED_VALUE;
use crate::pipeline::grammar::reason::{
    ARRAY_COMMA, COLON, KEY_AFTER_COMMA, KEY_OR_CLOSE, OBJECT_COMMA,
};

/// Bytes that can begin a JSON value.
pub fn is_value_start(b: u8) -> bool {
    matches!(
        b,
        b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'
    )
}

pub fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Bit 7 of each byte of the result is set where `w`'s byte is below `n`
/// (`n` <= 128). Only the lowest flagged byte is exact, which is all we use.
#[inline(always)]
fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(LO * u64::from(n)) & !w & HI
}

#[inline(always)]
fn equal(w: u64, b: u8) -> u64 {
    below(w ^ (LO * u64::from(b)), 1)
}

/// The scanner over one slice. `eof` says whether the slice ends at the end
/// of input, which decides whether a number running to its end is complete.
#[derive(Debug)]
pub struct Scanner<'a> {
    buf: &'a [u8],
    pub i: usize,
    eof: bool,
}

impl<'a> Scanner<'a> {
    pub fn new(buf: &'a [u8], start: usize, eof: bool) -> Self {
        Self { buf, i: start, eof }
    }

    #[inline(always)]
    fn peek(&self) -> Res<u8> {
        self.buf.get(self.i).copied().ok_or(Stop::Incomplete)
    }

    #[inline(always)]
    pub fn ws(&mut self) -> Res<u8> {
        loop {
            let b = self.peek()?;
            if !is_ws(b) {
                return Ok(b);
            }
            self.i += 1;
        }
    }

    /// Skips a string whose opening quote is at `self.i`. Returns whether it
    /// held an escape.
    #[inline(always)]
    fn string(&mut self) -> Res<bool> {
        let buf = self.buf;
        let mut i = self.i + 1;
        let mut escaped = false;
        loop {
            // Eight bytes at a time until a quote, a backslash or a control
            // character: most of a record's bytes are string contents.
            while let Some(chunk) = buf.get(i..i + 8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                let w = u64::from_le_bytes(word);
                let hits = equal(w, b'"') | equal(w, b'\\') | below(w, 0x20);
                if hits != 0 {
                    i += (hits.trailing_zeros() / 8) as usize;
                    break;
                }
                i += 8;
            }
            let Some(&b) = buf.get(i) else {
                self.i = i;
                return Err(Stop::Incomplete);
            };
            match b {
                b'"' => {
                    self.i = i + 1;
                    return Ok(escaped);
                }
                b'\\' => {
                    escaped = true;
                    match buf.get(i + 1) {
                        None => return Err(Stop::Incomplete),
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u') => {
                            for k in 2..6 {
                                match buf.get(i + k) {
                                    None => return Err(Stop::Incomplete),
                                    Some(h) if h.is_ascii_hexdigit() => {}
                                    Some(_) => return invalid(i + k, "invalid \\u escape"),
                                }
                            }
                            i += 6;
                        }
                        Some(_) => return invalid(i + 1, "invalid escape in a string"),
                    }
                }
                0..=0x1F => {
                    return invalid(
                        i,
                        if b == b'\n' {
                            "a line ends inside a string"
                        } else {
                            "a control character in a string (it must be escaped)"
                        },
                    );
                }
                _ => i += 1,
            }
        }
    }

    fn digits(&mut self) -> Res<usize> {
        let start = self.i;
        // Eight bytes at a time: ids, timestamps and full-precision floats
        // are long runs of digits. A byte is a digit iff `b ^ b'0'` < 10;
        // adding 0x76 sets bit 7 of exactly the bytes at or above 10 (a
        // byte that carries out already has bit 7 set, and a carry only
        // disturbs bytes above the lowest hit, which is the one used).
        while let Some(chunk) = self.buf.get(self.i..self.i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let x = u64::from_le_bytes(word) ^ (LO * u64::from(b'0'));
            let hits = (x.wrapping_add(LO * 0x76) | x) & HI;
            if hits != 0 {
                self.i += (hits.trailing_zeros() / 8) as usize;
                return Ok(self.i - start);
            }
            self.i += 8;
        }
        while let Some(b) = self.buf.get(self.i) {
            if !b.is_ascii_digit() {
                return Ok(self.i - start);
            }
            self.i += 1;
        }
        if self.eof {
            Ok(self.i - start)
        } else {
            Err(Stop::Incomplete)
        }
    }

    fn number(&mut self) -> Res<()> {
        if self.buf[self.i] == b'-' {
            self.i += 1;
        }
        match self.peek() {
            Err(_) if self.eof => return invalid(self.i, "invalid number"),
            Err(e) => return Err(e),
            Ok(b'0') => {
                self.i += 1;
                match self.buf.get(self.i) {
                    Some(b'0'..=b'9') => return invalid(self.i, "invalid number (leading zero)"),
                    None if !self.eof => return Err(Stop::Incomplete),
                    _ => {}
                }
            }
            Ok(b'1'..=b'9') => {
                self.digits()?;
            }
            Ok(_) => return invalid(self.i, "invalid number"),
        }
        if self.buf.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits()? == 0 {
                return if self.i == self.buf.len() && !self.eof {
                    Err(Stop::Incomplete)
                } else {
                    invalid(self.i, "invalid number (no digit after `.`)")
                };
            }
        }
        if matches!(self.buf.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.buf.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits()? == 0 {
                return if self.i == self.buf.len() && !self.eof {
                    Err(Stop::Incomplete)
                } else {
                    invalid(self.i, "invalid number (no digit in the exponent)")
                };
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8]) -> Res<()> {
        for (k, &want) in word.iter().enumerate() {
            match self.buf.get(self.i + k) {
                None => return Err(Stop::Incomplete),
                Some(&b) if b == want => {}
                Some(_) => return invalid(self.i + k, EXPECTED_VALUE),
            }
        }
        self.i += word.len();
        Ok(())
    }

    /// A scalar at `self.i` (the caller has checked it is not `{` or `[`).
    #[inline(always)]
    fn scalar(&mut self, b: u8) -> Res<()> {
        match b {
            b'"' => self.string().map(drop),
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => invalid(self.i, EXPECTED_VALUE),
        }
    }

    /// Expects `b` (after whitespace) and steps over it.
    fn expect(&mut self, b: u8, reason: &'static str) -> Res<()> {
        if self.ws()? == b {
            self.i += 1;
            Ok(())
        } else {
            invalid(self.i, reason)
        }
    }

    /// Validates one whole value starting at `self.i` (no leading whitespace)
    /// and leaves `self.i` just after it. `stack` is scratch space, kept by
    /// the caller so nesting costs no allocation per value.
    pub fn skip(&mut self, stack: &mut Vec<u8>) -> Res<()> {
        stack.clear();
        'value: loop {
            let b = self.peek()?;
            match b {
                b'{' => {
                    self.i += 1;
                    match self.ws()? {
                        b'}' => self.i += 1,
                        b'"' => {
                            self.string()?;
                            self.expect(b':', COLON)?;
                            self.ws()?;
                            stack.push(b'{');
                            continue 'value;
                        }
                        _ => return invalid(self.i, KEY_OR_CLOSE),
                    }
                }
                b'[' => {
                    self.i += 1;
                    if self.ws()? == b']' {
                        self.i += 1;
                    } else {
                        stack.push(b'[');
                        continue 'value;
                    }
                }
                _ => self.scalar(b)?,
            }
            // After a value: close containers or move to the next member.
            loop {
                let Some(&open) = stack.last() else {
                    return Ok(());
                };
                match (self.ws()?, open) {
                    (b',', b'{') => {
                        self.i += 1;
                        if self.ws()? != b'"' {
                            return invalid(self.i, KEY_AFTER_COMMA);
                        }
                        self.string()?;
                        self.expect(b':', COLON)?;
                        self.ws()?;
                        continue 'value;
                    }
                    (b',', _) => {
                        self.i += 1;
                        self.ws()?;
                        continue 'value;
                    }
                    (b'}', b'{') | (b']', b'[') => {
                        self.i += 1;
                        stack.pop();
                    }
                    (_, b'{') => return invalid(self.i, OBJECT_COMMA),
                    _ => return invalid(self.i, ARRAY_COMMA),
                }
            }
        }
    }
}

/// Validates one value at `start` of `buf` and returns its end.
pub fn skip_value(buf: &[u8], start: usize, eof: bool, stack: &mut Vec<u8>) -> Res<usize> {
    let mut s = Scanner::new(buf, start, eof);
    s.skip(stack)?;
    Ok(s.i)
}

/// The wanted paths of a projection, as a trie, so one walk of a record
/// serves every field.
#[derive(Debug, Default, Clone)]
pub struct Node {
    /// Output slots filled by the value at exactly this path.
    pub slots: Vec<usize>,
    /// Few children per level: a linear scan beats hashing every key of
    /// every record.
    pub children: Vec<(String, Node)>,
    /// Children whose key is an array index in canonical form (`0`, `12`),
    /// as `(index, position in children)`.
    indexed: Vec<(usize, usize)>,
    /// By a key's first byte, bit `min(len, 31)` is set if some child's key
    /// starts with that byte and has that length. Most keys of a record are
    /// not wanted, and this rejects nearly all of them with one load instead
    /// of a comparison per child. Empty until a child is added.
    first_len: Vec<u32>,
}

/// The bit of [`Node::first_len`] for a key of `len` bytes.
fn len_bit(len: usize) -> u32 {
    1 << len.min(31)
}

impl Node {
    pub fn child(&self, key: &str) -> Option<&Node> {
        self.child_bytes(key.as_bytes())
    }

    fn child_bytes(&self, key: &[u8]) -> Option<&Node> {
        if let Some(&first) = key.first()
            && self.first_len.get(usize::from(first)).copied().unwrap_or(0) & len_bit(key.len())
                == 0
        {
            return None;
        }
        self.children
            .iter()
            .find(|(k, _)| k.as_bytes() == key)
            .map(|(_, n)| n)
    }

    pub(crate) fn index_child(&self, index: usize) -> Option<&Node> {
        self.indexed
            .iter()
            .find(|(i, _)| *i == index)
            .map(|&(_, c)| &self.children[c].1)
    }

    /// Adds a path, creating nodes as needed, and returns its last node.
    pub fn insert(&mut self, path: &[String]) -> &mut Node {
        let mut node = self;
        for seg in path {
            let pos = match node.children.iter().position(|(k, _)| k == seg) {
                Some(p) => p,
                None => {
                    if let Some(&first) = seg.as_bytes().first() {
                        node.first_len.resize(256, 0);
                        node.first_len[usize::from(first)] |= len_bit(seg.len());
                    }
                    node.children.push((seg.clone(), Node::default()));
                    let p = node.children.len() - 1;
                    if let Ok(i) = seg.parse::<usize>()
                        && i.to_string() == *seg
                    {
                        node.indexed.push((i, p));
                    }
                    p
                }
            };
            node = &mut node.children[pos].1;
        }
        node
    }
}

/// Validates a value whose opening `{` is at `s.i` while capturing the spans
/// of the values at the trie's paths into `slots`.
pub fn object(
    s: &mut Scanner<'_>,
    node: &Node,
    slots: &mut [Option<Span>],
    stack: &mut Vec<u8>,
) -> Res<()> {
    s.i += 1;
    let mut b = s.ws()?;
    if b == b'}' {
        s.i += 1;
        return Ok(());
    }
    loop {
        if b != b'"' {
            return invalid(s.i, "expected a string key");
        }
        let key_start = s.i;
        let escaped = s.string()?;
        let child = if escaped {
            match decode_key(&s.buf[key_start..s.i]) {
                Some(k) => node.child(&k),
                None => {
                    return invalid(
                        key_start,
                        "an object key holds an invalid escape (a lone surrogate)",
                    );
                }
            }
        } else {
            node.child_bytes(&s.buf[key_start + 1..s.i - 1])
        };
        s.expect(b':', COLON)?;
        let v = s.ws()?;
        member(s, v, child, slots, stack)?;
        match s.ws()? {
            b',' => {
                s.i += 1;
                b = s.ws()?;
            }
            b'}' => {
                s.i += 1;
                return Ok(());
            }
            _ => return invalid(s.i, OBJECT_COMMA),
        }
    }
}

fn array(
    s: &mut Scanner<'_>,
    node: &Node,
    slots: &mut [Option<Span>],
    stack: &mut Vec<u8>,
) -> Res<()> {
    s.i += 1;
    let mut b = s.ws()?;
    if b == b']' {
        s.i += 1;
        return Ok(());
    }
    let mut index = 0usize;
    loop {
        member(s, b, node.index_child(index), slots, stack)?;
        match s.ws()? {
            b',' => {
                s.i += 1;
                b = s.ws()?;
                index += 1;
            }
            b']' => {
                s.i += 1;
                return Ok(());
            }
            _ => return invalid(s.i, ARRAY_COMMA),
        }
    }
}

/// One member value starting with byte `b`, captured if its node wants it.
#[inline(always)]
fn member(
    s: &mut Scanner<'_>,
    b: u8,
    child: Option<&Node>,
    slots: &mut [Option<Span>],
    stack: &mut Vec<u8>,
) -> Res<()> {
    let start = s.i;
    match child {
        None => match b {
            b'{' | b'[' => s.skip(stack)?,
            _ => s.scalar(b)?,
        },
        Some(c) => {
            match (b, c.children.is_empty()) {
                (b'{', false) => object(s, c, slots, stack)?,
                (b'[', false) => array(s, c, slots, stack)?,
                (b'{' | b'[', true) => s.skip(stack)?,
                _ => s.scalar(b)?,
            }
            for &slot in &c.slots {
                slots[slot] = Some((start as u32, s.i as u32));
            }
        }
    }
    Ok(())
}

/// Decodes an escaped key (quotes included) as serde_json does for keys it
/// deserializes, refusing lone surrogates. Rare, so serde_json does it.
pub(crate) fn decode_key(quoted: &[u8]) -> Option<String> {
    std::str::from_utf8(quoted)
        .ok()
        .and_then(|s| serde_json::from_str::<String>(s).ok())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(text: &[u8]) -> Res<usize> {
        skip_value(text, 0, true, &mut Vec::new())
    }

    /// Whether serde_json (from a `&str`, so UTF-8 is checked) accepts `text`
    /// as exactly one value.
    fn serde_accepts(text: &[u8]) -> bool {
        std::str::from_utf8(text)
            .ok()
            .is_some_and(|s| serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok())
    }

    /// The scanner's verdict on `text` as one whole value, with UTF-8 checked
    /// the way the reader checks it.
    fn scanner_accepts(text: &[u8]) -> bool {
        let start = text.iter().position(|b| !is_ws(*b)).unwrap_or(text.len());
        match check_from(text, start) {
            Ok(end) => text[end..].iter().all(|b| is_ws(*b)) && std::str::from_utf8(text).is_ok(),
            Err(_) => false,
        }
    }

    fn check_from(text: &[u8], start: usize) -> Res<usize> {
        skip_value(text, start, true, &mut Vec::new())
    }

    #[test]
    fn valid_values_end_where_they_end() {
        for (text, end) in [
            (&b"{}"[..], 2),
            (
                b"{\"a\":[1,2.5e-3,-0,true,false,null,\"\\u00e9\\n\"]} tail",
                46,
            ),
            (b"[ ] ,", 3),
            (b"\"s\\\"\"x", 5),
            (b"-12.5E+7,", 8),
            (b"0]", 1),
        ] {
            assert_eq!(check(text), Ok(end), "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn invalid_values_name_the_problem_and_where() {
        for (text, at, word) in [
            (&b"{\"a\":NaN}"[..], 5, "value"),
            (b"{\"a\":1,}", 7, "key"),
            (b"[1,,2]", 3, "value"),
            (b"{\"a\" 1}", 5, "`:`"),
            (b"{\"a\":01}", 6, "leading zero"),
            (b"{\"a\":1.}", 7, "`.`"),
            (b"{\"a\":\"\x01\"}", 6, "control"),
            (b"{\"a\":\"x\ny\"}", 7, "line ends"),
            (b"{\"a\":\"\\q\"}", 7, "escape"),
            (b"{\"a\":\"\\u12G4\"}", 10, "\\u"),
            (b"{\"a\":1]", 6, "`,` or `}`"),
            (b"[1}", 2, "`,` or `]`"),
            (b"{'a':1}", 1, "key"),
        ] {
            match check(text) {
                Err(Stop::Invalid { at: got, reason }) => {
                    assert_eq!(got, at, "{:?}: {reason}", String::from_utf8_lossy(text));
                    assert!(reason.contains(word), "{reason}");
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(text)),
            }
        }
    }

    #[test]
    fn a_prefix_is_incomplete_not_invalid() {
        let text = b"{\"a\":[1,{\"b\":\"x\\u00e9\"},-2.5e10,true],\"c\":null}";
        for cut in 0..text.len() {
            assert_eq!(
                skip_value(&text[..cut], 0, false, &mut Vec::new()),
                Err(Stop::Incomplete),
                "cut at {cut}"
            );
        }
        assert_eq!(check(text), Ok(text.len()));
        // At the end of input a number is complete; a container is not.
        assert_eq!(check(b"12"), Ok(2));
        assert_eq!(
            skip_value(b"12", 0, false, &mut Vec::new()),
            Err(Stop::Incomplete)
        );
        assert_eq!(check(b"[12"), Err(Stop::Incomplete));
    }

    #[test]
    fn deep_nesting_needs_no_recursion() {
        let mut text = "[".repeat(100_000);
        text.push_str(&"]".repeat(100_000));
        assert_eq!(check(text.as_bytes()), Ok(200_000));
    }

    #[test]
    fn a_digit_run_ends_at_the_first_non_digit_whatever_it_is() {
        // Every length on either side of the eight-byte step, every byte
        // after the run, and digits after that byte (which a carry from a
        // wrong lane would reach).
        for len in 0..=24 {
            for after in 0..=255u8 {
                let mut text = "7".repeat(len).into_bytes();
                text.push(after);
                text.extend_from_slice(b"12345678901234567");
                let mut s = Scanner::new(&text, 0, false);
                let want = if after.is_ascii_digit() {
                    Err(Stop::Incomplete)
                } else {
                    Ok(len)
                };
                assert_eq!(s.digits(), want, "{len} digits then {after:#x}");
                if want.is_ok() {
                    assert_eq!(s.i, len);
                }
            }
        }
    }

    #[test]
    fn children_are_found_by_any_key_length_and_near_misses_are_not() {
        let keys: Vec<String> = [0, 1, 2, 30, 31, 32, 33, 100]
            .iter()
            .map(|&n| "k".repeat(n))
            .chain(["tags".into(), "type".into(), "ü".into()])
            .collect();
        let mut root = Node::default();
        for (i, k) in keys.iter().enumerate() {
            root.insert(std::slice::from_ref(k)).slots.push(i);
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(root.child(k).map(|c| c.slots[0]), Some(i), "{k:?}");
        }
        // Same first byte and a length that saturates the same bit, same
        // length and another first byte, and a length no child has.
        for miss in [
            "k".repeat(34),
            "j".repeat(31),
            "tag".into(),
            "typo".into(),
            "x".into(),
        ] {
            assert!(root.child(&miss).is_none(), "{miss:?}");
        }
    }

    #[test]
    fn projection_captures_the_wanted_spans() {
        let mut root = Node::default();
        root.insert(&["a".into()]).slots.push(0);
        root.insert(&["u".into(), "id".into()]).slots.push(1);
        root.insert(&["t".into(), "1".into()]).slots.push(2);
        root.insert(&["k\"".into()]).slots.push(3);
        let text =
            br#"{"z":{"a":0},"a": 1.50 ,"u":{"id":[1, 2],"x":"y"},"t":["p","q"],"k\u0022":7}"#;
        let mut slots = vec![None; 4];
        let mut s = Scanner::new(text, 0, true);
        object(&mut s, &root, &mut slots, &mut Vec::new()).unwrap();
        assert_eq!(s.i, text.len());
        let got: Vec<&str> = slots
            .iter()
            .map(|sp| {
                sp.map_or("-", |(a, b)| {
                    std::str::from_utf8(&text[a as usize..b as usize]).unwrap()
                })
            })
            .collect();
        assert_eq!(got, ["1.50", "[1, 2]", "\"q\"", "7"]);
    }

    #[test]
    fn keys_on_a_projected_path_must_decode() {
        let mut root = Node::default();
        root.insert(&["a".into()]).slots.push(0);
        let mut slots = vec![None];
        let bad = br#"{"\ud800":1}"#;
        let mut s = Scanner::new(bad, 0, true);
        assert!(matches!(
            object(&mut s, &root, &mut slots, &mut Vec::new()),
            Err(Stop::Invalid { at: 1, .. })
        ));
        // Elsewhere a lone surrogate escape is well-formed text, as in serde_json.
        assert!(check(br#"{"\ud800":"\udc00"}"#).is_ok());
    }

    fn json_ish() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            proptest::sample::select(vec![
                &b"{"[..],
                &b"}"[..],
                &b"["[..],
                &b"]"[..],
                &b"\""[..],
                &b","[..],
                &b":"[..],
                &b"\\"[..],
                &b"u"[..],
                &b"0"[..],
                &b"1"[..],
                &b"-"[..],
                &b"."[..],
                &b"e"[..],
                &b"true"[..],
                &b"null"[..],
                &b" "[..],
                &b"\n"[..],
                &b"a"[..],
                &b"\xc3\xa9"[..],
                &b"\xff"[..],
                &b"\x01"[..],
                &b"\"k\":"[..],
                &b"\\ud800"[..],
            ]),
            0..40,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        /// Exactly what serde_json accepts, on JSON-shaped noise.
        #[test]
        fn agrees_with_serde_json(text in json_ish()) {
            prop_assert_eq!(scanner_accepts(&text), serde_accepts(&text), "{:?}", String::from_utf8_lossy(&text));
        }

        /// And on real values, printed compact or pretty.
        #[test]
        fn accepts_every_serialized_value(v in any_value(), pretty in any::<bool>()) {
            let text = if pretty { serde_json::to_vec_pretty(&v).unwrap() } else { serde_json::to_vec(&v).unwrap() };
            prop_assert_eq!(check(&text), Ok(text.len()));
        }
    }

    pub(crate) fn any_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::String),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{0,3}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
