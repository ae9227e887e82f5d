//! The reader: where the JSON starts, then records cut from the body as it
//! streams, every byte counted once. Recovery from a bad record is
//! `recover.rs`'s.

use std::io::{self, Read};

use super::item::{Accounting, Item, Large, Reject};
use crate::pipeline::json::{self, Node, Scanner, Span, Stop};
use crate::pipeline::stream::Streamer;

mod recover;

const READ_BYTES: usize = 64 * 1024;
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How the records of the current body or array are laid out, as learned
/// from its first one: where a record can begin after a broken one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// Records begin lines, after this many spaces or tabs.
    Lines(usize),
    /// Array elements follow each other on a line: one begins after a comma.
    Inline,
    /// The first element of an array that began on the `[`'s line: not
    /// known yet, so both kinds of place count (line starts at this indent).
    Either(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Preamble,
    Body,
    Array,
}

/// What a run of input bytes counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ByteKind {
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

#[cfg(test)]
impl<R> Reader<'_, R> {
    /// The buffer's capacity: what the reader holds, for the memory tests.
    pub(super) fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }
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
    fn take(&mut self, cat: ByteKind, to: usize) {
        let n = (to - self.pos) as u64;
        match cat {
            ByteKind::Preamble => self.acct.preamble_bytes += n,
            ByteKind::Record => self.acct.record_bytes += n,
            ByteKind::Rejected => self.acct.rejected_bytes += n,
            ByteKind::Separator => self.acct.separator_bytes += n,
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
    fn take_while(&mut self, cat: ByteKind, keep: impl Fn(u8) -> bool) -> io::Result<bool> {
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
    fn validate(&mut self, start: usize, project: bool) -> io::Result<Result<usize, Flaw>> {
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
                Ok(end) if end - start > limit => Err(Flaw::Oversized),
                Ok(end) => match utf8_error(&self.buf[start..end]) {
                    None => Ok(end),
                    Some(at) => Err(Flaw::Invalid {
                        at: start + at,
                        reason: "invalid UTF-8",
                    }),
                },
                Err(Stop::Invalid { at, .. }) if at - start > limit => Err(Flaw::Oversized),
                Err(Stop::Invalid { at, reason }) => Err(Flaw::Invalid { at, reason }),
                Err(Stop::Incomplete) if window - start > limit => Err(Flaw::Oversized),
                Err(Stop::Incomplete) if at_eof => Err(Flaw::Truncated),
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
            self.take(ByteKind::Record, end);
        }
        loop {
            self.compact();
            let step = match self.state {
                State::Preamble => self.preamble_step()?,
                State::Body => self.body_step()?,
                State::Array => self.array_step()?,
            };
            match step {
                Found::Continue => {}
                Found::End => return Ok(None),
                Found::Reject(r) => return Ok(Some(Item::Reject(r))),
                Found::Large(l) => return Ok(Some(Item::Large(l))),
                Found::Record { start, end } => {
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
    fn preamble_step(&mut self) -> io::Result<Found> {
        if self.base == 0 && self.pos == 0 {
            self.has(BOM.len() - 1)?;
            if self.buf.starts_with(BOM) {
                self.take(ByteKind::Preamble, BOM.len());
            }
        }
        // Leading blanks: separator if the body starts on this line,
        // preamble otherwise. They are counted as they pass, not held.
        let before = self.acct;
        let line_start = self.abs(self.pos);
        let more = self.take_while(ByteKind::Separator, |b| matches!(b, b' ' | b'\t' | b'\r'))?;
        let blanks = self.acct.separator_bytes - before.separator_bytes;
        if more && matches!(self.buf[self.pos], b'{' | b'[') && self.opens_body(self.pos)? {
            self.body_indent = (self.abs(self.pos) - line_start) as usize;
            self.state = State::Body;
            return Ok(Found::Continue);
        }
        self.acct.separator_bytes -= blanks;
        self.acct.preamble_bytes += blanks;
        if !more {
            if blanks > 0 {
                self.preamble_lines += 1;
            }
            return Ok(Found::End);
        }
        self.preamble_lines += 1;
        if self.take_while(ByteKind::Preamble, |b| b != b'\n')? {
            self.take(ByteKind::Preamble, self.pos + 1);
        }
        Ok(Found::Continue)
    }

    /// Between top-level values of the body.
    fn body_step(&mut self) -> io::Result<Found> {
        if !self.take_while(ByteKind::Separator, |b| json::is_ws(b) || b == b',')? {
            return Ok(Found::End);
        }
        let start = self.pos;
        let first = self.buf[start];
        match first {
            b'{' => self.record(start, "the record"),
            b'[' if self.opens_body(start)? => {
                self.take(ByteKind::Separator, start + 1);
                self.state = State::Array;
                self.array_layout = None;
                self.array_elements = 0;
                self.array_col = None;
                Ok(Found::Continue)
            }
            _ => {
                let reject = self.reject_head(start, "text that is not a JSON object")?;
                self.take(ByteKind::Rejected, start + 1);
                self.search(false, None)?;
                Ok(Found::Reject(self.finish_reject(reject)))
            }
        }
    }

    /// Between the elements of a top-level array.
    fn array_step(&mut self) -> io::Result<Found> {
        loop {
            if self.pos >= self.buf.len() {
                self.compact();
                if !self.fill()? {
                    self.state = State::Body;
                    let reject = self.reject_head(
                        self.pos,
                        "the file ends inside the top-level array (missing `]`)",
                    )?;
                    return Ok(Found::Reject(self.finish_reject(reject)));
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
                    self.take(ByteKind::Separator, self.pos + 1);
                    self.state = State::Body;
                    return Ok(Found::Continue);
                }
                _ => break,
            }
            self.take(ByteKind::Separator, self.pos + 1);
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
                    self.take(ByteKind::Rejected, end);
                    Ok(Found::Reject(self.finish_reject(reject)))
                }
                Err(bad) => self.bad(start, bad, "the array element"),
            },
            _ => self.bad(
                start,
                Flaw::Invalid {
                    at: start,
                    reason: "expected a JSON value",
                },
                "the array element",
            ),
        }
    }

    /// A record (or array element) starting with `{` at `start`.
    fn record(&mut self, start: usize, what: &str) -> io::Result<Found> {
        match self.validate(start, true)? {
            Ok(end) => Ok(Found::Record { start, end }),
            Err(bad) => self.bad(start, bad, what),
        }
    }
}

/// Why a value at a record position was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flaw {
    Invalid { at: usize, reason: &'static str },
    Truncated,
    Oversized,
}

/// What one step of the reader found.
pub(super) enum Found {
    Continue,
    End,
    Record { start: usize, end: usize },
    Reject(Reject),
    Large(Large),
}
