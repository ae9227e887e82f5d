//! Finds where the JSON starts and cuts the body into records, streaming,
//! and accounts for every byte.
//!
//! **Accounting.** Every byte of the input is exactly one of: preamble,
//! record, rejected region, or separator (whitespace, commas and the
//! brackets of a top-level array). [`Accounting`] keeps the four sums, and
//! they always add up to the bytes read. Nothing is skipped without being
//! counted, so a silent loss shows up as a broken sum.
//!
//! **Preamble.** Before the body starts, each line is looked at once. A line
//! that opens a real JSON object (`{` followed by `"` or `}`) or an array
//! followed by a value (`[` then `{`, `[`, `"`, `]` or a whole scalar) starts
//! the body, whether or not it then parses: a bad first record is a rejected
//! record, never preamble. Any other line (`#`, `//`, `[INFO] ...`,
//! `{not json`) is preamble.
//!
//! **Body.** Records are JSON objects: one per line, concatenated (pretty
//! printed ones too), or the elements of top-level arrays. Each is validated
//! whole by [`crate::pipeline::json`] before it is handed out.
//!
//! **Recovery** from a bad record is `recover.rs`'s: a bad record costs
//! only itself.
//!
//! **Memory.** The buffer holds at most one record window (the record limit
//! plus one byte) plus one read. Over-long records, whitespace runs and
//! junk are walked through, never held, and what comes out does not depend
//! on how the input was split into reads (resuming after a crash relies on
//! every run over an object cutting the same chunks).

use std::io::{self, Read};

use serde::Serialize;

use crate::pipeline::json::{self, Node, Scanner, Span, Stop};
use crate::pipeline::stream::{Captured, Streamer};

mod recover;

use recover::Layout;

const READ_BYTES: usize = 64 * 1024;
const EXCERPT_BYTES: usize = 120;
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A region of the input that is not a usable record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reject {
    /// 1-based line of the region's first byte (of the decompressed file).
    pub line: u64,
    /// Byte offset of the region's first byte.
    pub offset: u64,
    /// The region's length in bytes.
    pub length: u64,
    pub reason: String,
    /// The region's first bytes, lossily decoded.
    pub excerpt: String,
}

/// Where every byte read so far went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Accounting {
    pub preamble_bytes: u64,
    pub record_bytes: u64,
    pub rejected_bytes: u64,
    pub separator_bytes: u64,
}

impl Accounting {
    pub fn total(&self) -> u64 {
        self.preamble_bytes + self.record_bytes + self.rejected_bytes + self.separator_bytes
    }
}

/// What the reader found next.
#[derive(Debug)]
pub enum Item<'a> {
    /// A record: one JSON object, validated whole (UTF-8 included). With a
    /// projection, `fields` holds the spans of its wanted values within `bytes`.
    Record {
        bytes: &'a [u8],
        line: u64,
        offset: u64,
        fields: &'a [Option<Span>],
    },
    Reject(Reject),
    /// A record larger than the window, checked and projected as it
    /// streamed past (see [`Reader::with_large`]): only its wanted values
    /// were kept, in spools.
    Large(Large),
}

/// A record over the window that is valid whole.
#[derive(Debug)]
pub struct Large {
    pub line: u64,
    pub offset: u64,
    pub length: u64,
    /// Its first bytes, lossily decoded, for a report if it is rejected yet.
    pub excerpt: String,
    pub captured: Captured,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Preamble,
    Body,
    Array,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cat {
    Preamble,
    Record,
    Rejected,
    Separator,
}

/// Streams records out of `src`.
#[derive(Debug)]
pub struct Reader<'p, R> {
    src: R,
    buf: Vec<u8>,
    pos: usize,
    /// Absolute offset of `buf[0]`.
    base: u64,
    /// Newlines before `buf[counted]`, plus one.
    line: u64,
    counted: usize,
    eof: bool,
    state: State,
    /// The body's layout (records at line starts after this indent).
    body_indent: usize,
    array_layout: Option<Layout>,
    /// Elements seen in the current array.
    array_elements: u64,
    /// Within an array: whitespace since the last newline, or `None` once
    /// something else was seen on the line or no newline was seen yet.
    array_col: Option<usize>,
    max_record_bytes: usize,
    projection: Option<&'p Node>,
    slots: Vec<Option<Span>>,
    stack: Vec<u8>,
    acct: Accounting,
    preamble_lines: u64,
    /// The end of the last record handed out, which the next call consumes.
    pending_end: Option<usize>,
    /// The largest record streamed past the window, if any is.
    large: Option<u64>,
    /// The parser a record over the window is fed to as the walk over it
    /// streams, and the offset it has been fed up to.
    tee: Option<Streamer<'p>>,
    tee_from: u64,
}

/// Where `bytes` stop being UTF-8, if they do. The fast check (SIMD) runs
/// on every record; std's finds the position in the rare bad one.
fn utf8_error(bytes: &[u8]) -> Option<usize> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(_) => None,
        Err(_) => std::str::from_utf8(bytes).err().map(|e| e.valid_up_to()),
    }
}

/// The first bytes of a rejected region, lossily decoded, for reports.
pub fn excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(EXCERPT_BYTES)];
    String::from_utf8_lossy(cut).into_owned()
}

impl<'p, R: Read> Reader<'p, R> {
    /// A reader that validates records; with `projection` (its trie, and the
    /// number of output slots) it also captures the wanted values' spans.
    pub fn new(src: R, max_record_bytes: usize, projection: Option<(&'p Node, usize)>) -> Self {
        Self {
            src,
            buf: Vec::with_capacity(READ_BYTES * 2),
            pos: 0,
            base: 0,
            line: 1,
            counted: 0,
            eof: false,
            state: State::Preamble,
            body_indent: 0,
            array_layout: None,
            array_elements: 0,
            array_col: None,
            max_record_bytes,
            projection: projection.map(|(n, _)| n),
            slots: vec![None; projection.map_or(0, |(_, n)| n)],
            stack: Vec::new(),
            acct: Accounting::default(),
            preamble_lines: 0,
            pending_end: None,
            large: None,
            tee: None,
            tee_from: 0,
        }
    }

    /// Objects over the window of up to `limit` bytes are still records:
    /// checked and projected as they stream past, and handed out as
    /// [`Item::Large`]. Needs a projection.
    #[must_use]
    pub fn with_large(mut self, limit: u64) -> Self {
        self.large = Some(limit);
        self
    }

    /// Feeds the record being walked, up to `to`, to the large-record parser.
    fn feed_tee(&mut self, to: usize) -> io::Result<()> {
        if let Some(t) = &mut self.tee {
            let from = (self.tee_from - self.base) as usize;
            if to > from {
                t.feed(&self.buf[from..to])?;
                self.tee_from = self.base + to as u64;
            }
        }
        Ok(())
    }

    /// Lines dropped as preamble so far.
    pub fn preamble_lines(&self) -> u64 {
        self.preamble_lines
    }

    /// Where the bytes consumed so far went. After the last item its total
    /// is [`Reader::bytes_read`].
    pub fn accounting(&self) -> Accounting {
        self.acct
    }

    /// Bytes read from the source so far.
    pub fn bytes_read(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    fn abs(&self, idx: usize) -> u64 {
        self.base + idx as u64
    }

    fn line_at(&mut self, idx: usize) -> u64 {
        if idx > self.counted {
            self.line += memchr::memchr_iter(b'\n', &self.buf[self.counted..idx]).count() as u64;
            self.counted = idx;
        }
        self.line
    }

    /// Counts the bytes from `pos` to `to` as `cat` and moves past them.
    fn take(&mut self, cat: Cat, to: usize) {
        let n = (to - self.pos) as u64;
        match cat {
            Cat::Preamble => self.acct.preamble_bytes += n,
            Cat::Record => self.acct.record_bytes += n,
            Cat::Rejected => self.acct.rejected_bytes += n,
            Cat::Separator => self.acct.separator_bytes += n,
        }
        self.pos = to;
    }

    /// Drops consumed bytes. Only called where no index into `buf` other
    /// than `pos` is held, so indices never go stale.
    fn compact(&mut self) {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.line_at(self.pos);
            self.buf.drain(..self.pos);
            self.base += self.pos as u64;
            self.counted -= self.pos;
            self.pos = 0;
        }
    }

    /// Reads more input (the buffer only grows here). Returns false at EOF.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        let len = self.buf.len();
        self.buf.resize(len + READ_BYTES, 0);
        let n = loop {
            match self.src.read(&mut self.buf[len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(len + n);
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }

    /// Makes `buf[idx]` available if the input has it.
    fn has(&mut self, idx: usize) -> io::Result<bool> {
        while idx >= self.buf.len() {
            if !self.fill()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Counts bytes from `pos` as `cat` while `keep` holds for them, without
    /// holding them. Returns false at the end of input.
    fn take_while(&mut self, cat: Cat, keep: impl Fn(u8) -> bool) -> io::Result<bool> {
        loop {
            let run = self.buf[self.pos..].iter().position(|&b| !keep(b));
            match run {
                Some(n) => {
                    self.take(cat, self.pos + n);
                    return Ok(true);
                }
                None => {
                    self.take(cat, self.buf.len());
                    self.compact();
                    if !self.fill()? {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// Validates the value at `start` within the record window: the record
    /// limit plus one byte. Reads only as far as it takes to decide, so the
    /// answer never depends on how the input was split. `Ok(end)` for a
    /// whole value of at most the limit; otherwise why not.
    fn validate(&mut self, start: usize, project: bool) -> io::Result<Result<usize, Bad>> {
        let limit = self.max_record_bytes;
        loop {
            let window = self.buf.len().min(start + limit + 1);
            let at_eof = self.eof && window == self.buf.len();
            let buf = &self.buf[..window];
            let scan = match (project, self.projection) {
                (true, Some(root)) if buf[start] == b'{' => {
                    self.slots.iter_mut().for_each(|s| *s = None);
                    let mut s = Scanner::new(buf, start, at_eof);
                    json::object(&mut s, root, &mut self.slots, &mut self.stack).map(|()| s.i)
                }
                _ => json::skip_value(buf, start, at_eof, &mut self.stack),
            };
            return Ok(match scan {
                Ok(end) if end - start > limit => Err(Bad::Oversized),
                Ok(end) => match utf8_error(&self.buf[start..end]) {
                    None => Ok(end),
                    Some(at) => Err(Bad::Invalid {
                        at: start + at,
                        reason: "invalid UTF-8",
                    }),
                },
                Err(Stop::Invalid { at, .. }) if at - start > limit => Err(Bad::Oversized),
                Err(Stop::Invalid { at, reason }) => Err(Bad::Invalid { at, reason }),
                Err(Stop::Incomplete) if window - start > limit => Err(Bad::Oversized),
                Err(Stop::Incomplete) if at_eof => Err(Bad::Truncated),
                Err(Stop::Incomplete) => {
                    // Read at least twice as much before scanning again, so a
                    // large record costs a bounded number of rescans.
                    let have = self.buf.len() - start;
                    let want = (start + have + have.max(READ_BYTES)).min(start + limit + 1);
                    while self.buf.len() < want && self.fill()? {}
                    continue;
                }
            });
        }
    }

    /// Whether `start` (a `{` or `[`) opens a record or an array of them,
    /// looking only at what follows it (see the module docs).
    fn opens_body(&mut self, start: usize) -> io::Result<bool> {
        let limit = start + self.max_record_bytes + 1;
        let mut i = start + 1;
        loop {
            if !self.has(i)? {
                return Ok(false);
            }
            if i >= limit {
                // Only whitespace for a whole record window: an over-long
                // record, which is rejected as one.
                return Ok(true);
            }
            let b = self.buf[i];
            if !json::is_ws(b) {
                return Ok(match (self.buf[start], b) {
                    (b'{', b'"' | b'}') => true,
                    (b'{', _) => false,
                    (_, b'{' | b'[' | b'"' | b']') => true,
                    (_, b) if json::is_value_start(b) => self.scalar_element(i)?,
                    _ => false,
                });
            }
            i += 1;
        }
    }

    /// Whether a whole scalar starts at `i`, followed by what may follow an
    /// array element (`,`, `]` or whitespace). `[6` or `[2026-11-27 ...]`
    /// are not.
    fn scalar_element(&mut self, i: usize) -> io::Result<bool> {
        match self.validate(i, false)? {
            Ok(end) => {
                if !self.has(end)? {
                    return Ok(false);
                }
                Ok(matches!(self.buf[end], b',' | b']') || json::is_ws(self.buf[end]))
            }
            Err(_) => Ok(false),
        }
    }

    /// The next record or rejected region, or `None` at the end of input.
    pub fn next_item(&mut self) -> io::Result<Option<Item<'_>>> {
        if let Some(end) = self.pending_end.take() {
            self.take(Cat::Record, end);
        }
        loop {
            self.compact();
            let step = match self.state {
                State::Preamble => self.preamble_step()?,
                State::Body => self.body_step()?,
                State::Array => self.array_step()?,
            };
            match step {
                Step::Continue => {}
                Step::End => return Ok(None),
                Step::Reject(r) => return Ok(Some(Item::Reject(r))),
                Step::Large(l) => return Ok(Some(Item::Large(l))),
                Step::Record { start, end } => {
                    let (line, offset) = (self.line_at(start), self.abs(start));
                    self.pending_end = Some(end);
                    let fields = if self.projection.is_some() && self.buf[start] == b'{' {
                        // Spans relative to the record.
                        for (a, b) in self.slots.iter_mut().flatten() {
                            *a -= start as u32;
                            *b -= start as u32;
                        }
                        &self.slots[..]
                    } else {
                        &[]
                    };
                    return Ok(Some(Item::Record {
                        bytes: &self.buf[start..end],
                        line,
                        offset,
                        fields,
                    }));
                }
            }
        }
    }

    /// One preamble line, or the start of the body.
    fn preamble_step(&mut self) -> io::Result<Step> {
        if self.base == 0 && self.pos == 0 {
            self.has(BOM.len() - 1)?;
            if self.buf.starts_with(BOM) {
                self.take(Cat::Preamble, BOM.len());
            }
        }
        // Leading blanks: separator if the body starts on this line,
        // preamble otherwise. They are counted as they pass, not held.
        let before = self.acct;
        let line_start = self.abs(self.pos);
        let more = self.take_while(Cat::Separator, |b| matches!(b, b' ' | b'\t' | b'\r'))?;
        let blanks = self.acct.separator_bytes - before.separator_bytes;
        if more && matches!(self.buf[self.pos], b'{' | b'[') && self.opens_body(self.pos)? {
            self.body_indent = (self.abs(self.pos) - line_start) as usize;
            self.state = State::Body;
            return Ok(Step::Continue);
        }
        self.acct.separator_bytes -= blanks;
        self.acct.preamble_bytes += blanks;
        if !more {
            if blanks > 0 {
                self.preamble_lines += 1;
            }
            return Ok(Step::End);
        }
        self.preamble_lines += 1;
        if self.take_while(Cat::Preamble, |b| b != b'\n')? {
            self.take(Cat::Preamble, self.pos + 1);
        }
        Ok(Step::Continue)
    }

    /// Between top-level values of the body.
    fn body_step(&mut self) -> io::Result<Step> {
        if !self.take_while(Cat::Separator, |b| json::is_ws(b) || b == b',')? {
            return Ok(Step::End);
        }
        let start = self.pos;
        let first = self.buf[start];
        match first {
            b'{' => self.record(start, "the record"),
            b'[' if self.opens_body(start)? => {
                self.take(Cat::Separator, start + 1);
                self.state = State::Array;
                self.array_layout = None;
                self.array_elements = 0;
                self.array_col = None;
                Ok(Step::Continue)
            }
            _ => {
                let reject = self.reject_head(start, "text that is not a JSON object")?;
                self.take(Cat::Rejected, start + 1);
                self.search(false, None)?;
                Ok(Step::Reject(self.finish_reject(reject)))
            }
        }
    }

    /// Between the elements of a top-level array.
    fn array_step(&mut self) -> io::Result<Step> {
        loop {
            if self.pos >= self.buf.len() {
                self.compact();
                if !self.fill()? {
                    self.state = State::Body;
                    let reject = self.reject_head(
                        self.pos,
                        "the file ends inside the top-level array (missing `]`)",
                    )?;
                    return Ok(Step::Reject(self.finish_reject(reject)));
                }
            }
            let b = self.buf[self.pos];
            match b {
                b'\n' => self.array_col = Some(0),
                b' ' | b'\t' | b'\r' => {
                    if let Some(c) = &mut self.array_col {
                        *c += 1;
                    }
                }
                b',' => self.array_col = None,
                b']' => {
                    self.take(Cat::Separator, self.pos + 1);
                    self.state = State::Body;
                    return Ok(Step::Continue);
                }
                _ => break,
            }
            self.take(Cat::Separator, self.pos + 1);
        }
        let start = self.pos;
        // The first element may share the `[`'s line (`[{...},\n{...}`):
        // then the second one shows whether elements begin lines.
        self.array_layout = match (self.array_layout, self.array_col) {
            (None, Some(indent)) => Some(Layout::Lines(indent)),
            (None, None) => Some(Layout::Inline),
            (Some(Layout::Inline), Some(indent)) if self.array_elements == 1 => {
                Some(Layout::Lines(indent))
            }
            (layout, _) => layout,
        };
        self.array_elements += 1;
        self.array_col = None;
        let first = self.buf[start];
        match first {
            b'{' => self.record(start, "the array element"),
            b if json::is_value_start(b) => match self.validate(start, false)? {
                Ok(end) => {
                    let reject =
                        self.reject_head(start, "an array element is not a JSON object")?;
                    self.take(Cat::Rejected, end);
                    Ok(Step::Reject(self.finish_reject(reject)))
                }
                Err(bad) => self.bad(start, bad, "the array element"),
            },
            _ => self.bad(
                start,
                Bad::Invalid {
                    at: start,
                    reason: "expected a JSON value",
                },
                "the array element",
            ),
        }
    }

    /// A record (or array element) starting with `{` at `start`.
    fn record(&mut self, start: usize, what: &str) -> io::Result<Step> {
        match self.validate(start, true)? {
            Ok(end) => Ok(Step::Record { start, end }),
            Err(bad) => self.bad(start, bad, what),
        }
    }
}

/// Why a value at a record position was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bad {
    Invalid { at: usize, reason: &'static str },
    Truncated,
    Oversized,
}

enum Step {
    Continue,
    End,
    Record { start: usize, end: usize },
    Reject(Reject),
    Large(Large),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Hands out at most `chunk` bytes per read, to exercise refills.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[derive(Debug, PartialEq)]
    struct All {
        records: Vec<String>,
        /// (offset, length, reason) of each reject.
        rejects: Vec<Reject>,
        preamble_lines: u64,
        acct: Accounting,
    }

    /// Reads everything, checking the accounting on the way out.
    fn read_all(input: &[u8], max: usize, chunk: usize) -> All {
        let mut r = Reader::new(Trickle(input, chunk), max, None);
        let (mut records, mut rejects) = (Vec::new(), Vec::new());
        let mut record_bytes = 0;
        while let Some(item) = r.next_item().unwrap() {
            match item {
                Item::Record { bytes, offset, .. } => {
                    assert_eq!(&input[offset as usize..][..bytes.len()], bytes);
                    record_bytes += bytes.len() as u64;
                    records.push(String::from_utf8_lossy(bytes).into_owned())
                }
                Item::Reject(rj) => rejects.push(rj),
                Item::Large(l) => panic!("no large records without a projection: {l:?}"),
            }
        }
        let acct = r.accounting();
        assert_eq!(acct.total(), input.len() as u64, "accounting: {acct:?}");
        assert_eq!(r.bytes_read(), input.len() as u64);
        assert_eq!(acct.record_bytes, record_bytes);
        assert_eq!(
            acct.rejected_bytes,
            rejects.iter().map(|r| r.length).sum::<u64>(),
            "rejected bytes are the rejects' lengths"
        );
        All {
            records,
            rejects,
            preamble_lines: r.preamble_lines(),
            acct,
        }
    }

    /// Reads in several read sizes and checks they agree.
    fn read(input: &str, max: usize) -> All {
        let whole = read_all(input.as_bytes(), max, 1 << 20);
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(
                read_all(input.as_bytes(), max, chunk),
                whole,
                "reads of {chunk}"
            );
        }
        whole
    }

    fn reasons(all: &All) -> Vec<&str> {
        all.rejects.iter().map(|r| r.reason.as_str()).collect()
    }

    #[test]
    fn every_preamble_style_is_dropped() {
        let input = "\u{feff}# hash\r\n// slashes\n-- dashes\n; semi\n/* block\n   still block */\n[INFO] collector started\n{not json\n[also not\n[2026-11-27 10:00] x\n\n{\"a\":1}\r\n{\"b\":2}\n";
        let all = read(input, 1 << 20);
        assert_eq!(all.records, ["{\"a\":1}", "{\"b\":2}"]);
        assert!(all.rejects.is_empty(), "{:?}", all.rejects);
        assert_eq!(all.preamble_lines, 11);
        assert_eq!(
            all.acct.preamble_bytes,
            input.find("{\"a\"").unwrap() as u64
        );
    }

    #[test]
    fn pretty_concatenated_and_array_bodies() {
        let pretty =
            "# c\n{\n  \"a\": {\"x\": [1, 2]},\n  \"s\": \"}{\\\"\"\n}\n{\n  \"b\": 2\n}{\"c\":3}";
        let all = read(pretty, 1 << 20);
        assert_eq!(all.records.len(), 3, "{:?}", all.records);
        assert!(all.records[0].contains("\"}{\\\"\"") && all.rejects.is_empty());

        let array = "// header\n[\n  {\"a\":1},\n  {\"b\":2} ,{\"c\":3}\n]\n";
        let all = read(array, 1 << 20);
        assert_eq!(all.records, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
        assert!(all.rejects.is_empty(), "{:?}", all.rejects);

        // Elements at column 0, and an array far larger than the record limit.
        let mut big = String::from("[INFO] banner\n[\n");
        for i in 0..2000 {
            big.push_str(&format!("{{\"i\":{i}}},\n"));
        }
        big.push_str("{\"last\":1}\n]\n");
        let all = read_all(big.as_bytes(), 100, 999);
        assert_eq!(
            (all.records.len(), all.rejects.len(), all.preamble_lines),
            (2001, 0, 1)
        );
    }

    /// `json.dump(records, f, indent=2)` with one element over the limit:
    /// only that element is lost.
    #[test]
    fn an_oversized_element_of_a_pretty_array_costs_only_itself() {
        let mut text = String::from("# c\n[\n");
        for i in 0..6 {
            if i > 0 {
                text.push_str(",\n");
            }
            let filler = if i == 2 { "x".repeat(500) } else { "y".into() };
            text.push_str(&format!(
                "  {{\n    \"id\": {i},\n    \"s\": \"{filler}\"\n  }}"
            ));
        }
        text.push_str("\n]");
        let all = read(&text, 200);
        let ids: Vec<bool> = (0..6)
            .map(|i| {
                all.records
                    .iter()
                    .any(|r| r.contains(&format!("\"id\": {i},")))
            })
            .collect();
        assert_eq!(ids, [true, true, false, true, true, true]);
        assert_eq!(reasons(&all).len(), 1);
        assert!(
            reasons(&all)[0].contains("size limit"),
            "{:?}",
            reasons(&all)
        );
        assert!(all.rejects[0].length > 500);
    }

    /// Python writes `NaN`: a bad first element is a reject, not preamble.
    #[test]
    fn a_bad_first_element_is_rejected_not_taken_for_preamble() {
        let text = "[\n  {\n    \"id\": 0,\n    \"v\": NaN\n  },\n  {\n    \"id\": 1,\n    \"v\": 1.5\n  },\n  {\n    \"id\": 2,\n    \"v\": Infinity\n  },\n  {\n    \"id\": 3\n  }\n]\n";
        let all = read(text, 1 << 20);
        assert_eq!(all.preamble_lines, 0);
        assert_eq!(all.records.len(), 2, "{:?}", all.records);
        assert!(all.records[0].contains("\"id\": 1") && all.records[1].contains("\"id\": 3"));
        assert_eq!(all.rejects.len(), 2);
        assert_eq!((all.rejects[0].line, all.rejects[0].offset), (2, 4));
        assert!(
            all.rejects[0].reason.contains("invalid JSON"),
            "{}",
            all.rejects[0].reason
        );
        assert!(all.rejects[0].excerpt.contains("NaN"));

        // And the same on one line, and one element per line.
        let line = "[{\"id\":0,\"v\":NaN},{\"id\":1},{\"id\":2,\"v\":-Infinity},{\"id\":3}]";
        let all = read(line, 1 << 20);
        assert_eq!(all.records, ["{\"id\":1}", "{\"id\":3}"]);
        let per_line =
            "[{\"id\":0,\"v\":NaN},\n{\"id\":1},\n{\"id\":2,\"v\":-Infinity},\n{\"id\":3}\n]";
        assert_eq!(
            read(per_line, 1 << 20).records,
            ["{\"id\":1}", "{\"id\":3}"]
        );
    }

    #[test]
    fn a_bad_first_record_after_a_preamble_is_rejected() {
        let all = read("# c\n{\"a\":NaN}\n{\"b\":2}\n", 1 << 20);
        assert_eq!(all.records, ["{\"b\":2}"]);
        assert_eq!((all.preamble_lines, all.rejects.len()), (1, 1));
        assert_eq!(all.rejects[0].line, 2);

        // A trailing comma after each record: the commas are separators.
        let all = read("# c\n{\"a\":1},\n{\"b\":2},\n", 1 << 20);
        assert_eq!(all.records, ["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(all.acct.separator_bytes, 4);
        assert_eq!((all.preamble_lines, all.rejects.len()), (1, 0));
    }

    #[test]
    fn invalid_utf8_anywhere_in_a_record_rejects_it() {
        let mut input = b"{\"a\":1}\n{\"a\":2,\"unwanted\":\"".to_vec();
        input.extend_from_slice(b"\xff\xfe\"}\n{\"a\":3}\n");
        let all = read_all(&input, 1 << 20, 5);
        assert_eq!(all.records, ["{\"a\":1}", "{\"a\":3}"]);
        assert!(all.rejects[0].reason.contains("UTF-8"), "{:?}", all.rejects);
    }

    #[test]
    fn a_broken_record_spares_the_next_line() {
        let input = "{\"a\":1}\n{\"b\":2,\"c\":\n{\"d\":4}\n{\"e\":\"unterminated\n{\"f\":6}\n";
        let all = read(input, 1 << 20);
        assert_eq!(all.records, ["{\"a\":1}", "{\"d\":4}", "{\"f\":6}"]);
        assert_eq!(all.rejects.len(), 2);
        assert_eq!((all.rejects[0].line, all.rejects[0].offset), (2, 8));
        assert_eq!(
            all.rejects[0].length, 12,
            "the region stops where the next record begins"
        );
        assert_eq!(all.rejects[1].line, 4);
        assert!(
            all.rejects[1].excerpt.starts_with("{\"e\""),
            "{}",
            all.rejects[1].excerpt
        );
    }

    #[test]
    fn a_truncated_pretty_record_and_a_nested_value_at_column_0() {
        // The first record is cut short; the next begins at column 0.
        let text = "{\n  \"a\": [\n    1,\n{\n  \"b\": 2\n}\n{\"c\":3}\n";
        let all = read(text, 1 << 20);
        assert_eq!(all.records, ["{\n  \"b\": 2\n}", "{\"c\":3}"]);
        // A record whose nested object sits at column 0 and holds an error:
        // the object is not a resume point, because it is not followed by a
        // line end (the outer record's `}` follows).
        let text = "{\"a\": NaN, \"b\":\n{\"c\": 1}}\n{\"d\": 2}\n";
        let all = read(text, 1 << 20);
        assert_eq!(all.records, ["{\"d\": 2}"]);
        assert_eq!(all.rejects.len(), 1);
    }

    #[test]
    fn truncated_elements_of_arrays_in_every_layout() {
        let pretty = "[\n  {\n    \"id\": 0,\n    \"s\": \"cut\n  {\n    \"id\": 1\n  },\n  {\n    \"id\": 2,\n    \"t\": [\n  {\n    \"id\": 3\n  }\n]";
        let all = read(pretty, 1 << 20);
        assert_eq!(all.records.len(), 2, "{:?} {:?}", all.records, all.rejects);
        assert!(all.records[0].contains("\"id\": 1") && all.records[1].contains("\"id\": 3"));
        let line = "[{\"id\":0,\"s\":\"cut,{\"id\":1,\"x\":\"y\"},{\"id\":2,\"t\":[1,{\"id\":3}]";
        let all = read(line, 1 << 20);
        // The last element may have been cut before `,{"id":3}]` or may hold
        // it: on one line nothing tells, so it is rejected with it, never
        // sent as a part.
        assert_eq!(all.records, ["{\"id\":1,\"x\":\"y\"}"], "{:?}", all.rejects);
        assert_eq!(all.rejects[1].length, 24);
        let line = "[{\"id\":0,\"s\":\"cut,{\"id\":1},{\"id\":2,\"t\":[1,{\"id\":3}]},{\"id\":4}]";
        assert_eq!(
            read(line, 1 << 20).records,
            [
                "{\"id\":1}",
                "{\"id\":2,\"t\":[1,{\"id\":3}]}",
                "{\"id\":4}"
            ]
        );
    }

    #[test]
    fn garbage_truncation_and_non_objects() {
        let input = "{\"a\":1}\ntrailing garbage\n{\"b\":2}\n[1,2]\n{\"c\":";
        let all = read(input, 1 << 20);
        assert_eq!(all.records, ["{\"a\":1}", "{\"b\":2}"]);
        let reasons = reasons(&all);
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(reasons[0].contains("not a JSON object"));
        assert!(
            reasons[1].contains("not a JSON object") && reasons[2].contains("not a JSON object")
        );
        assert!(reasons[3].contains("truncated"));
        assert_eq!(all.rejects[3].line, 5);

        let array = "[{\"a\":1}, 7, \"s\", [1], null, {\"b\":2}";
        let all = read(array, 1 << 20);
        assert_eq!(all.records, ["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(all.rejects.len(), 5, "{:?}", all.rejects);
        assert!(all.rejects[4].reason.contains("missing `]`"));
        assert_eq!(all.rejects[4].length, 0);
    }

    #[test]
    fn a_huge_line_is_skipped_without_being_held() {
        let mut input = b"{\"a\":1}\n{\"big\":\"".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3_000_000));
        input.extend_from_slice(b"\"}\n{\"b\":2}\n");
        let all = read_all(&input, 100_000, 65_536);
        assert_eq!(all.records, ["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(all.rejects.len(), 1);
        assert!(all.rejects[0].reason.contains("size limit"));
        assert_eq!(all.rejects[0].length, 3_000_010);
        assert!(all.rejects[0].excerpt.len() <= EXCERPT_BYTES);
    }

    /// The buffer stays small whatever the runs of whitespace, separators or
    /// junk, and wherever they are.
    #[test]
    fn long_runs_are_walked_through_not_held() {
        let run = 5_000_000;
        for (head, filler, tail) in [
            ("# c\n{\"a\":1}", b' ', "{\"b\":2}\n"),
            ("# c\n{\"a\":1}", b'\n', "{\"b\":2}\n"),
            ("# c\n{\"a\":1}", b',', "{\"b\":2}\n"),
            ("# c\n[{\"a\":1},", b' ', "{\"b\":2}]\n"),
            ("# c\n[{\"a\":1},", b'\n', "{\"b\":2}]\n"),
            ("", b' ', "{\"a\":1}\n{\"b\":2}\n"),
            ("# c\n{\"a\":1}\n", b'x', "\n{\"b\":2}\n"),
            ("# c\n[{\"a\":1},", b'7', ",{\"b\":2}]\n"),
            ("#", b'#', "\n{\"a\":1}\n{\"b\":2}\n"),
        ] {
            let mut input = head.as_bytes().to_vec();
            input.extend(std::iter::repeat_n(filler, run));
            input.extend_from_slice(tail.as_bytes());
            let mut r = Reader::new(&input[..], 4096, None);
            let mut records = 0;
            let mut peak = 0;
            while let Some(item) = r.next_item().unwrap() {
                records += matches!(item, Item::Record { .. }) as usize;
                peak = peak.max(r.buf.capacity());
            }
            peak = peak.max(r.buf.capacity());
            assert!(records >= 1, "{head:?} {filler}");
            assert!(
                peak < 1 << 20,
                "{head:?} + {filler:?}: buffer grew to {peak}"
            );
            assert_eq!(r.accounting().total(), input.len() as u64);
        }
    }

    #[test]
    fn only_comments_or_nothing_gives_no_records() {
        for input in ["", "\n\n", "# only\n// comments\n", "[INFO] x\n{broken"] {
            let all = read(input, 1 << 20);
            assert!(
                all.records.is_empty() && all.rejects.is_empty(),
                "{input:?}"
            );
            assert_eq!(all.acct.preamble_bytes, input.len() as u64);
        }
    }

    #[test]
    fn a_scalar_array_start_is_judged_whole() {
        // Found by cargo-fuzz: with `[6` in one read and `\0` in the next,
        // the line was taken for the start of an array body.
        for input in ["\0\n[6\0", "# c\n[12x\n{\"a\":1}\n"] {
            read(input, 1 << 20);
        }
        assert_eq!(read("\0\n[6\0", 1 << 20).preamble_lines, 2);
        assert_eq!(read("[1, {\"a\":1}]", 1 << 20).records, ["{\"a\":1}"]);
    }

    #[test]
    fn a_resume_point_after_a_comma_does_not_depend_on_read_sizes() {
        // Found by cargo-fuzz: whether a `{` after a comma resumed a one-line
        // array was decided by looking back into the buffer for the comma,
        // which one-byte reads had already dropped.
        let input = b"\x5b\x5b\x7b\x5b\x5b\x5b\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x5b\x7b\x5b\x5b\x5b\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\xff\xff\xff\xff\xff\xff\xff\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x7b\x5b\x33\x2c\x7b\x20\x20\x20\x20\x7b\x5b\x7b\x20\x20\x20\x20\x20\x20\x20\x20\x20";
        let whole = read_all(input, 64, 1 << 20);
        for chunk in [1, 2, 3, 7] {
            assert_eq!(read_all(input, 64, chunk), whole, "reads of {chunk}");
        }
        assert_eq!(whole.rejects.len(), 3, "{:?}", whole.rejects);
    }

    /// A record far past the window, made of many short strings: the walk
    /// over it drops consumed bytes as it streams, and where the last string
    /// closed must survive that (it once was a stale buffer index, which
    /// underflowed in debug builds and misread bytes in release ones). As a
    /// bad record (too large) and as a streamed one, whatever the reads.
    #[test]
    fn a_walk_far_past_the_window_over_many_strings_keeps_its_place() {
        let members: Vec<String> = (0..40_000).map(|i| format!("\"k{i}\":\"v\"")).collect();
        let record = format!("{{{}}}", members.join(","));
        let input = format!("{record}\n{{\"k1\":\"after\"}}\n");
        let whole = read_all(input.as_bytes(), 1024, 1 << 20);
        assert_eq!(whole.records, ["{\"k1\":\"after\"}"]);
        assert_eq!(whole.rejects.len(), 1, "{:?}", whole.rejects);
        assert_eq!(whole.rejects[0].length as usize, record.len());
        assert_eq!(
            read_all(input.as_bytes(), 1024, 4096),
            whole,
            "reads of 4096"
        );
        let mut root = Node::default();
        root.insert(&["k1".into()]).slots.push(0);
        for chunk in [4096, 1 << 20] {
            let mut r = Reader::new(Trickle(input.as_bytes(), chunk), 1024, Some((&root, 1)))
                .with_large(1 << 30);
            match r.next_item().unwrap() {
                Some(Item::Large(l)) => assert_eq!(l.length as usize, record.len()),
                other => panic!("reads of {chunk}: {other:?}"),
            }
            assert!(matches!(r.next_item().unwrap(), Some(Item::Record { .. })));
            assert!(r.next_item().unwrap().is_none());
            assert_eq!(r.accounting().total(), input.len() as u64);
        }
    }

    #[test]
    fn projected_spans_are_captured_relative_to_the_record() {
        let mut root = Node::default();
        root.insert(&["b".into()]).slots.push(0);
        let input = b"# c\n  {\"a\":1,\"b\":[2, 3]}\n";
        let mut r = Reader::new(&input[..], 1024, Some((&root, 1)));
        match r.next_item().unwrap() {
            Some(Item::Record { bytes, fields, .. }) => {
                let (a, b) = fields[0].unwrap();
                assert_eq!(&bytes[a as usize..b as usize], b"[2, 3]");
            }
            other => panic!("{other:?}"),
        }
        assert!(r.next_item().unwrap().is_none());
        assert_eq!(r.accounting().separator_bytes, 3, "indent and newline");
    }

    fn any_input() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            proptest::sample::select(vec![
                &b"{"[..],
                &b"}"[..],
                &b"["[..],
                &b"]"[..],
                &b"\""[..],
                &b"\\"[..],
                &b"\n"[..],
                &b","[..],
                &b":"[..],
                &b" "[..],
                &b"  "[..],
                &b"{\"a\":1}"[..],
                &b"{\"k\":"[..],
                &b"NaN"[..],
                &b"7"[..],
                &b"# c"[..],
                &b"\xff"[..],
                &b"\xef\xbb\xbf"[..],
                &b"\"s\""[..],
                &b"tru"[..],
            ]),
            0..60,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        /// NDJSON records survive any junk lines between them, whatever the
        /// read sizes: every good record comes out, in order, exactly once.
        #[test]
        fn good_records_survive_junk_lines(
            vals in proptest::collection::vec(any::<u32>(), 1..30),
            junk in proptest::collection::vec(prop_oneof![
                Just("{\"broken\":".to_owned()),
                Just("not json".to_owned()),
                Just("{\"s\":\"open".to_owned()),
                Just("{\"a\":NaN}".to_owned()),
                "[a-z ]{0,10}",
            ], 30),
            chunk in 1usize..50,
        ) {
            let mut input = String::from("# preamble\n");
            let mut want = Vec::new();
            for (i, v) in vals.iter().enumerate() {
                let rec = format!("{{\"v\":{v},\"i\":{i}}}");
                input.push_str(&rec);
                input.push('\n');
                want.push(rec);
                if i % 3 == 1 {
                    input.push_str(&junk[i]);
                    input.push('\n');
                }
            }
            prop_assert_eq!(read_all(input.as_bytes(), 1 << 20, chunk).records, want);
        }

        /// Arbitrary input: no panic, the accounting adds up (checked in
        /// `read_all`), records are valid JSON objects, and the same items
        /// come out whatever the read sizes.
        #[test]
        fn any_input_is_accounted_for(input in any_input(), chunk in 1usize..20, max in 8usize..64) {
            let whole = read_all(&input, max, 1 << 20);
            for r in &whole.records {
                prop_assert!(r.starts_with('{') && serde_json::from_str::<serde_json::Value>(r).is_ok(), "{r:?}");
            }
            prop_assert_eq!(read_all(&input, max, chunk), whole);
        }
    }
}
