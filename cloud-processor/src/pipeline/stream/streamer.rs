//! The push parser over one record too large for the window: it checks the
//! record as [`crate::pipeline::json`] does while the reader streams it past,
//! and copies the wanted values into [`Spool`]s.

use std::io;

use crate::pipeline::grammar::reason::EXPECTED_VALUE;
use crate::pipeline::grammar::{self, Action, Container, Expect};
use crate::pipeline::json::{self, Node};

use super::captured::Captured;
use super::spool::Spool;

/// Keys on a projected path are held to be matched; longer ones cannot name
/// a field, and an escaped one this long is refused (it cannot be decoded
/// without holding it).
pub const MAX_KEY_BYTES: usize = 64 << 10;
/// Nesting is tracked per level: deeper records are refused, so a record of
/// `[[[[...` costs bounded memory.
pub const MAX_DEPTH: usize = 100_000;

/// Where the parser is in the record: before it, in it (expecting what the
/// grammar says), or past its closing brace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Root,
    In(Expect),
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    None,
    /// Inside a string; `esc` is 0, 1 just after a backslash, or 2 + the
    /// hex digits of a `\u` escape seen so far.
    Str {
        key: bool,
        esc: u8,
    },
    Num(Num),
    Lit {
        word: &'static [u8],
        k: u8,
    },
}

#[derive(Debug)]
struct Frame<'p> {
    array: bool,
    /// The trie node while on a projected path with children below.
    node: Option<&'p Node>,
    index: usize,
}

/// Why a record is not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Longer than the largest record read.
    TooLarge { limit: u64 },
    /// Not valid JSON (or nested too deeply): the problem is at byte `at`
    /// of the record.
    Invalid { at: u64, reason: &'static str },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { limit } => write!(
                f,
                "the record is larger than the largest record read (RELAY_MAX_RECORD_BYTES, {limit} bytes)"
            ),
            Self::Invalid { at, reason } => write!(f, "{reason} (at byte {at} of the record)"),
        }
    }
}

/// How far a feed got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedOutcome {
    /// The record is not over yet.
    More,
    /// The record ended after this many bytes of the slice.
    Done(usize),
    /// The record is not valid (see [`Streamer::failure`]).
    Invalid,
}

/// The push parser over one record, which must begin with `{`.
#[derive(Debug)]
pub struct Streamer<'p> {
    frames: Vec<Frame<'p>>,
    phase: Phase,
    token: Token,
    /// The child node for the value about to start.
    pending: Option<&'p Node>,
    key: Vec<u8>,
    key_long: bool,
    key_escaped: bool,
    /// Per output slot: its last captured value.
    slots: Vec<Option<Spool>>,
    /// Captures in progress: (slot, depth at which the value began).
    active: Vec<(usize, usize)>,
    fed: u64,
    limit: u64,
    utf8: Vec<u8>,
    failure: Option<Failure>,
}

impl<'p> Streamer<'p> {
    /// A parser for a record of at most `limit` bytes.
    pub fn new(root: &'p Node, slots: usize, limit: u64) -> Self {
        Self {
            frames: Vec::new(),
            phase: Phase::Root,
            token: Token::None,
            pending: Some(root),
            key: Vec::new(),
            key_long: false,
            key_escaped: false,
            slots: (0..slots).map(|_| None).collect(),
            active: Vec::new(),
            fed: 0,
            limit,
            utf8: Vec::new(),
            failure: None,
        }
    }

    /// Why the record is not taken, once that is known.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Whether the record is complete and valid.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done && self.failure.is_none()
    }

    /// Bytes fed so far.
    pub fn fed(&self) -> u64 {
        self.fed
    }

    fn fail(&mut self, failure: Failure) -> FeedOutcome {
        if self.failure.is_none() {
            self.failure = Some(failure);
        }
        FeedOutcome::Invalid
    }

    fn invalid(&mut self, at: u64, reason: &'static str) -> FeedOutcome {
        self.fail(Failure::Invalid { at, reason })
    }

    /// Feeds the record's next bytes. An error is a failure to write a
    /// spool, never a verdict on the record.
    pub fn feed(&mut self, bytes: &[u8]) -> io::Result<FeedOutcome> {
        if self.failure.is_some() {
            return Ok(FeedOutcome::Invalid);
        }
        if self.phase == Phase::Done {
            return Ok(FeedOutcome::Done(0));
        }
        if self.fed + bytes.len() as u64 > self.limit {
            let limit = self.limit;
            return Ok(self.fail(Failure::TooLarge { limit }));
        }
        let base = self.fed;
        let mut i = 0;
        while i < bytes.len() {
            // Most of a large record is string contents: take a run of
            // plain string bytes at once.
            if let Token::Str { key, esc: 0 } = self.token {
                let run = bytes[i..]
                    .iter()
                    .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                    .unwrap_or(bytes.len() - i);
                if run > 0 {
                    self.plain(&bytes[i..i + run], key)?;
                    i += run;
                    self.fed = base + i as u64;
                    continue;
                }
            }
            let b = bytes[i];
            let at = base + i as u64;
            self.fed = at + 1;
            if let Some(reason) = self.byte(b)? {
                return Ok(self.invalid(at, reason));
            }
            i += 1;
            if self.phase == Phase::Done {
                let i = i - 1;
                let used = &bytes[..=i];
                return Ok(match self.check_utf8(used, base) {
                    Some(at) => self.invalid(at, "invalid UTF-8"),
                    None => FeedOutcome::Done(i + 1),
                });
            }
        }
        Ok(match self.check_utf8(bytes, base) {
            Some(at) => self.invalid(at, "invalid UTF-8"),
            None => FeedOutcome::More,
        })
    }

    /// Checks `bytes` as the continuation of what came before (a character
    /// may span two feeds). Returns where it stops being UTF-8.
    fn check_utf8(&mut self, mut bytes: &[u8], base: u64) -> Option<u64> {
        let mut at = base;
        while !self.utf8.is_empty() {
            let (&b, rest) = bytes.split_first()?;
            self.utf8.push(b);
            bytes = rest;
            at += 1;
            match std::str::from_utf8(&self.utf8) {
                Ok(_) => self.utf8.clear(),
                Err(e) if e.error_len().is_none() => {}
                Err(_) => return Some(at - self.utf8.len() as u64),
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => None,
            Err(e) if e.error_len().is_none() => {
                self.utf8.extend_from_slice(&bytes[e.valid_up_to()..]);
                None
            }
            Err(e) => Some(at + e.valid_up_to() as u64),
        }
    }

    /// A run of string bytes that need no checking but UTF-8's.
    fn plain(&mut self, run: &[u8], key: bool) -> io::Result<()> {
        if key && self.frames.last().is_some_and(|f| f.node.is_some()) {
            let room = MAX_KEY_BYTES.saturating_sub(self.key.len());
            self.key.extend_from_slice(&run[..run.len().min(room)]);
            self.key_long |= run.len() > room;
        }
        self.capture_run(run)
    }

    /// Copies a byte of value text into every capture in progress.
    fn capture(&mut self, b: u8) -> io::Result<()> {
        self.capture_run(&[b])
    }

    fn capture_run(&mut self, run: &[u8]) -> io::Result<()> {
        for &(slot, _) in &self.active {
            if let Some(s) = &mut self.slots[slot] {
                s.push(run)?;
            }
        }
        Ok(())
    }

    /// The value now ending closes the captures that began at this depth.
    fn value_done(&mut self) -> io::Result<()> {
        let depth = self.frames.len();
        while let Some(&(slot, d)) = self.active.last() {
            if d != depth {
                break;
            }
            self.active.pop();
            if let Some(s) = &mut self.slots[slot] {
                s.flush(true)?;
            }
        }
        self.phase = if self.frames.is_empty() {
            Phase::Done
        } else {
            Phase::In(Expect::CommaOrClose)
        };
        Ok(())
    }

    /// A value starts with `b`: open its captures, then the value.
    fn value(&mut self, b: u8) -> io::Result<Option<&'static str>> {
        let child = self.pending.take();
        if let Some(c) = child {
            let depth = self.frames.len();
            for &slot in &c.slots {
                // A key seen again replaces its value, as in the scanner.
                self.slots[slot] = Some(Spool::new());
                self.active.push((slot, depth));
            }
        }
        let nav = child.filter(|c| !c.children.is_empty());
        match b {
            b'{' | b'[' => {
                if self.frames.len() >= MAX_DEPTH {
                    return Ok(Some("the record is nested too deeply to offload"));
                }
                self.capture(b)?;
                let array = b == b'[';
                self.frames.push(Frame {
                    array,
                    node: nav,
                    index: 0,
                });
                let kind = if array {
                    Container::Array
                } else {
                    Container::Object
                };
                self.phase = Phase::In(kind.first());
            }
            b'"' => {
                self.capture(b)?;
                self.token = Token::Str { key: false, esc: 0 };
            }
            b'-' | b'0'..=b'9' => {
                self.capture(b)?;
                self.token = Token::Num(if b == b'-' {
                    Num::Minus
                } else if b == b'0' {
                    Num::Zero
                } else {
                    Num::Int
                });
            }
            b't' | b'f' | b'n' => {
                self.capture(b)?;
                let word: &'static [u8] = match b {
                    b't' => b"true",
                    b'f' => b"false",
                    _ => b"null",
                };
                self.token = Token::Lit { word, k: 1 };
            }
            _ => return Ok(Some(EXPECTED_VALUE)),
        }
        Ok(None)
    }

    /// The key just read: which child of the object's node it names.
    fn key_done(&mut self) -> Option<&'static str> {
        self.phase = Phase::In(Expect::Colon);
        let Some(node) = self.frames.last().and_then(|f| f.node) else {
            self.pending = None;
            return None;
        };
        if self.key_long {
            self.pending = None;
            return self.key_escaped.then_some(
                "an object key on a projected path is too long to decode (over 64 KiB, with escapes)",
            );
        }
        self.pending = if self.key_escaped {
            let mut quoted = Vec::with_capacity(self.key.len() + 2);
            quoted.push(b'"');
            quoted.extend_from_slice(&self.key);
            quoted.push(b'"');
            match json::decode_key(&quoted) {
                Some(k) => node.child(&k),
                None => {
                    return Some("an object key holds an invalid escape (a lone surrogate)");
                }
            }
        } else {
            std::str::from_utf8(&self.key)
                .ok()
                .and_then(|k| node.child(k))
        };
        None
    }

    /// One byte. Returns the reason the record is invalid, if it is.
    fn byte(&mut self, b: u8) -> io::Result<Option<&'static str>> {
        match self.token {
            Token::Str { key, esc } => return self.string_byte(b, key, esc),
            Token::Lit { word, k } => return self.literal_byte(b, word, k),
            Token::Num(n) => {
                if let Some(done) = self.number_byte(b, n)? {
                    return Ok(done);
                }
                // The number ended before this byte, which is read as
                // what follows the value.
            }
            Token::None => {}
        }
        if json::is_ws(b) {
            return Ok(None);
        }
        self.structural(b)
    }

    /// A byte inside a string (a key's, if `key`), `esc` into an escape.
    fn string_byte(&mut self, b: u8, key: bool, esc: u8) -> io::Result<Option<&'static str>> {
        if key && self.frames.last().is_some_and(|f| f.node.is_some()) {
            if self.key.len() < MAX_KEY_BYTES {
                self.key.push(b);
            } else {
                self.key_long = true;
            }
        }
        let esc = match (esc, b) {
            (_, 0..=0x1F) => {
                return Ok(Some(if b == b'\n' {
                    "a line ends inside a string"
                } else {
                    "a control character in a string (it must be escaped)"
                }));
            }
            (0, b'\\') => {
                if key {
                    self.key_escaped = true;
                }
                1
            }
            (0, b'"') => {
                self.capture(b)?;
                self.token = Token::None;
                if key {
                    // The closing quote was pushed with the key.
                    self.key.pop();
                    return Ok(self.key_done());
                }
                self.value_done()?;
                return Ok(None);
            }
            (0, _) => 0,
            (1, b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 0,
            (1, b'u') => 2,
            (1, _) => return Ok(Some("invalid escape in a string")),
            (2..=4, h) if h.is_ascii_hexdigit() => esc + 1,
            (5, h) if h.is_ascii_hexdigit() => 0,
            (_, _) => return Ok(Some("invalid \\u escape")),
        };
        self.capture(b)?;
        self.token = Token::Str { key, esc };
        Ok(None)
    }

    /// A byte of the literal `word`, `k` bytes into it.
    fn literal_byte(
        &mut self,
        b: u8,
        word: &'static [u8],
        k: u8,
    ) -> io::Result<Option<&'static str>> {
        if word[usize::from(k)] != b {
            return Ok(Some(EXPECTED_VALUE));
        }
        self.capture(b)?;
        if usize::from(k) + 1 == word.len() {
            self.token = Token::None;
            self.value_done()?;
        } else {
            self.token = Token::Lit { word, k: k + 1 };
        }
        Ok(None)
    }

    /// A byte after a number's part `n`: `Some(verdict)` if the number took
    /// it, `None` if the number ended before it.
    fn number_byte(&mut self, b: u8, n: Num) -> io::Result<Option<Option<&'static str>>> {
        let next = match (n, b) {
            (Num::Minus, b'0') => Some(Num::Zero),
            (Num::Minus, b'1'..=b'9') => Some(Num::Int),
            (Num::Minus, _) => return Ok(Some(Some("invalid number"))),
            (Num::Zero, b'0'..=b'9') => return Ok(Some(Some("invalid number (leading zero)"))),
            (Num::Zero | Num::Int, b'.') => Some(Num::Dot),
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Some(Num::E),
            (Num::Int, b'0'..=b'9') => Some(Num::Int),
            (Num::Dot | Num::Frac, b'0'..=b'9') => Some(Num::Frac),
            (Num::Dot, _) => return Ok(Some(Some("invalid number (no digit after `.`)"))),
            (Num::E, b'+' | b'-') => Some(Num::ESign),
            (Num::E | Num::ESign | Num::Exp, b'0'..=b'9') => Some(Num::Exp),
            (Num::E | Num::ESign, _) => {
                return Ok(Some(Some("invalid number (no digit in the exponent)")));
            }
            _ => None,
        };
        match next {
            Some(n) => {
                self.capture(b)?;
                self.token = Token::Num(n);
                Ok(Some(None))
            }
            None => {
                self.token = Token::None;
                self.value_done()?;
                Ok(None)
            }
        }
    }

    /// A byte outside any token: what JSON's grammar says it does here.
    fn structural(&mut self, b: u8) -> io::Result<Option<&'static str>> {
        let expect = match self.phase {
            Phase::Done => return Ok(None),
            Phase::Root if b != b'{' => return Ok(Some("expected a JSON object")),
            Phase::Root => Expect::Value,
            Phase::In(expect) => expect,
        };
        let inside = self.frames.last().map(|f| {
            if f.array {
                Container::Array
            } else {
                Container::Object
            }
        });
        match grammar::action(expect, b, inside) {
            Action::Open(_) | Action::String | Action::Scalar => {
                if expect == Expect::ValueOrClose {
                    self.pending = self.array_child();
                }
                self.value(b)
            }
            Action::Key => {
                self.capture(b)?;
                self.key.clear();
                self.key_long = false;
                self.key_escaped = false;
                self.token = Token::Str { key: true, esc: 0 };
                Ok(None)
            }
            Action::Colon => {
                self.capture(b)?;
                self.phase = Phase::In(Expect::Value);
                Ok(None)
            }
            Action::Comma(container) => {
                self.capture(b)?;
                if container == Container::Array {
                    if let Some(f) = self.frames.last_mut() {
                        f.index += 1;
                    }
                    self.pending = self.array_child();
                }
                self.phase = Phase::In(container.after_comma());
                Ok(None)
            }
            Action::Close => self.close(b),
            Action::Unexpected(reason) => Ok(Some(reason)),
        }
    }

    fn array_child(&self) -> Option<&'p Node> {
        self.frames
            .last()
            .and_then(|f| f.node.and_then(|n| n.index_child(f.index)))
    }

    fn close(&mut self, b: u8) -> io::Result<Option<&'static str>> {
        self.capture(b)?;
        self.frames.pop();
        self.value_done()?;
        Ok(None)
    }

    /// The captured values of a complete, valid record.
    pub fn finish(self) -> Captured {
        Captured { slots: self.slots }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::project::{Missing, Projection, parse_fields};
    use proptest::prelude::*;
    use std::io::Read;

    fn projection(spec: &str, missing: Missing) -> Projection {
        Projection::new(&parse_fields(spec).unwrap(), missing)
    }

    /// Streams `record` in pieces of the given sizes: the projected bytes,
    /// or `Err` if it is invalid.
    fn stream(p: &Projection, record: &[u8], cuts: &[usize]) -> Result<Vec<u8>, String> {
        let mut s = Streamer::new(p.root(), p.slots(), u64::MAX);
        let mut rest = record;
        let mut cuts = cuts.iter().cycle();
        loop {
            let n = (*cuts.next().unwrap())
                .clamp(1, rest.len().max(1))
                .min(rest.len());
            let (piece, tail) = rest.split_at(n);
            match s.feed(piece).unwrap() {
                FeedOutcome::More if tail.is_empty() => return Err("ends early".into()),
                FeedOutcome::More => rest = tail,
                FeedOutcome::Done(k) => {
                    let after = piece[k..].iter().chain(tail);
                    if !after.copied().all(json::is_ws) {
                        return Err("text after the record".into());
                    }
                    break;
                }
                FeedOutcome::Invalid => return Err(s.failure().unwrap().to_string()),
            }
        }
        let mut out = Vec::new();
        s.finish()
            .into_body(p)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        Ok(out)
    }

    fn in_window(p: &Projection, record: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        p.project(record, &mut out)
            .map(|()| out)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn projects_nested_repeated_and_escaped_values_as_the_scanner_does() {
        let p = projection("id,u=user,uid=user.id,t0=tags.0,x=/a~1b", Missing::Null);
        for record in [
            &br#"{"id":1,"user":{"id":"a","n":[1,2]},"tags":["x","y"],"a/b":true}"#[..],
            br#"{ "user" : { "id" : 2 , "id" : 3 } , "id" : 1.5e-3 , "id" : -0 }"#,
            b"{\"id\":\"\xef\xbf\xbe \\u00e9 \xc3\xa9\",\"tags\":[[1, {\"a\" : null}],2]}",
            br#"{"\u0069d":"esc key","tags":[]}"#,
            br#"{"user":[1,2],"tags":{"0":5}}"#,
            br#"{}"#,
        ] {
            let want = in_window(&p, record).unwrap();
            for cut in [1, 2, 3, 7, 1000] {
                assert_eq!(
                    stream(&p, record, &[cut]).unwrap(),
                    want,
                    "{}",
                    String::from_utf8_lossy(record)
                );
            }
        }
    }

    #[test]
    fn refuses_what_the_scanner_refuses() {
        let p = projection("id,uid=user.id", Missing::Omit);
        for record in [
            &br#"{"id":01}"#[..],
            br#"{"id":1.}"#,
            br#"{"id":1e}"#,
            br#"{"id":-}"#,
            br#"{"id":tru}"#,
            br#"{"id":"a\x"}"#,
            br#"{"id":"\u12g4"}"#,
            b"{\"id\":\"a\nb\"}",
            b"{\"id\":\"\xff\"}",
            b"{\"no\":\"\xe2\x82\"}",
            br#"{"user":{"\ud800":1}}"#,
            br#"{"id" 1}"#,
            br#"{"id":1,}"#,
            br#"{"id":[1 2]}"#,
            br#"{"id":1]"#,
            br#"{id:1}"#,
            br#"{"id":1"#,
        ] {
            assert!(
                in_window(&p, record).is_err(),
                "{}",
                String::from_utf8_lossy(record)
            );
            assert!(
                stream(&p, record, &[3]).is_err(),
                "{}",
                String::from_utf8_lossy(record)
            );
        }
        // Off the projected path, a lone surrogate key is text like any other.
        let ok = br#"{"other":{"\ud800":1},"id":2}"#;
        assert_eq!(stream(&p, ok, &[2]), in_window(&p, ok));
    }

    #[test]
    fn a_record_over_the_limit_is_refused_with_its_size() {
        let p = projection("id", Missing::Omit);
        let mut s = Streamer::new(p.root(), p.slots(), 10);
        assert_eq!(s.feed(br#"{"id":123"#).unwrap(), FeedOutcome::More);
        assert_eq!(s.feed(b"45}").unwrap(), FeedOutcome::Invalid);
        assert!(
            s.failure()
                .unwrap()
                .to_string()
                .contains("RELAY_MAX_RECORD_BYTES, 10 bytes")
        );
    }

    #[test]
    fn a_large_value_moves_to_a_file_and_reads_back_whole() {
        let p = projection("b=blob,id", Missing::Omit);
        let big = "é\u{FFFF}x".repeat(1_000_000);
        let record = format!("{{\"blob\":\"{big}\",\"id\":7}}");
        let want = in_window(&p, record.as_bytes()).unwrap();
        let got = stream(&p, record.as_bytes(), &[65_537]).unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want);
    }

    /// Dirty records: valid JSON with edits at random places, so both
    /// verdicts occur, and the escape and number rules are exercised.
    fn record() -> impl Strategy<Value = Vec<u8>> {
        let value = prop_oneof![
            Just("1".to_owned()),
            Just("-0.5e+7".to_owned()),
            Just("\"a\\u00e9\\n\u{FFFE}\"".to_owned()),
            Just("true".to_owned()),
            Just("null".to_owned()),
            Just("[1,{\"id\":2},[]]".to_owned()),
            Just("{\"id\":\"in\",\"x\":{}}".to_owned()),
        ];
        let key = prop_oneof![
            Just("id"),
            Just("user"),
            Just("tags"),
            Just("x"),
            Just("\\u0069d")
        ];
        (
            proptest::collection::vec((key, value), 0..6),
            proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
            any::<bool>(),
        )
            .prop_map(|(members, edits, pretty)| {
                let sep = if pretty { ",\n  " } else { "," };
                let body: Vec<String> = members
                    .iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect();
                let mut text = format!("{{{}}}", body.join(sep)).into_bytes();
                for (at, b) in edits {
                    let at = at % text.len();
                    text[at] = b"0-.e\"\\u{}[],: \nx\xff"[usize::from(b) % 17];
                }
                text
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn agrees_with_the_in_window_projection(
            text in record(),
            cuts in proptest::collection::vec(1usize..9, 1..4),
            null in any::<bool>(),
        ) {
            let missing = if null { Missing::Null } else { Missing::Omit };
            let p = projection("id,u=user,uid=user.id,t1=tags.1,x", missing);
            let want = in_window(&p, &text);
            let got = stream(&p, &text, &cuts);
            prop_assert_eq!(got.is_ok(), want.is_ok(), "{:?} {:?} {}", got, want, String::from_utf8_lossy(&text));
            if let (Ok(g), Ok(w)) = (got, want) {
                prop_assert_eq!(g, w);
            }
        }
    }
}
