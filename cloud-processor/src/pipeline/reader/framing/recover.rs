//! Recovery: a bad record costs only itself.
//!
//! Its end is found by a walk
//! that checks structure as strictly as JSON (keys, `:`, `,`, matching
//! brackets) but accepts bad tokens and any bytes in quotes, so it is exact
//! when only the content is bad (`NaN`, invalid UTF-8, an over-long value).
//! When the walk shows the record was cut short instead (a line ends inside
//! a string, the next record's first line appears where the body's layout
//! puts records, or the structure breaks), reading resumes at the next place
//! where a record can begin as the body's own layout shows: a line indented
//! like the first record (column 0 in NDJSON and `json.dumps(indent=2)`
//! output), or, in an array written on one line, the value after a comma
//! past the break. A resume point is accepted only where a whole value
//! parses and is followed by what follows a record there (a line end, or
//! `,` / `]` in an array), or where a bad record begins that is itself
//! whole (its brackets close) or merely too large. So a value nested in a
//! bad record does not come out as a record; the one case no reader can
//! tell, an element of a one-line array cut short and continued validly by
//! the elements after it, rejects those elements with it.

use std::io::{self, Read};

use super::{ByteKind, Flaw, Found, Layout, Reader, State};
use crate::pipeline::grammar::{self, Container, Expect};
use crate::pipeline::json;
use crate::pipeline::reader::item::{EXCERPT_BYTES, Large, Reject, excerpt};
use crate::pipeline::stream::{Failure, Streamer};

/// How the walk over a bad record ended.
#[derive(Debug, Clone, Copy)]
pub(super) enum Walk {
    /// The record's brackets closed (or, for a bad array element that is not
    /// a container, its `,` or `]` was reached) at this index: its end.
    End(usize),
    /// The record was cut short at this index: a line end inside a string,
    /// the next record's first line where the layout puts records, or
    /// structure that cannot continue the record (a value where a key must
    /// be, a missing `:` or `,`). With the whitespace since the last line
    /// end before it (`None` if something else came since).
    Truncated(usize, Option<usize>),
    /// The next record begins at this index (its `{`): either a `{` stood
    /// where a key must follow a comma (a record cut short, then the `,`
    /// before the next), or a string cut short ran on to the next record's
    /// first quote, so it ends with that record's `,{` and the structure
    /// breaks right after it.
    Swallowed(usize),
    /// The end of input.
    Eof,
}

/// The walk's state between bytes.
#[derive(Debug, Clone, Copy)]
struct Walker {
    in_str: bool,
    esc: bool,
    in_word: bool,
    expect: Expect,
    /// Where the last string's closing quote was, as an absolute offset:
    /// streaming drops consumed bytes, which moves every buffer index.
    closed: Option<u64>,
    /// Whitespace since the last newline; `None` if something else came.
    col: Option<usize>,
}

impl Default for Walker {
    fn default() -> Self {
        Self {
            in_str: false,
            esc: false,
            in_word: false,
            expect: Expect::Value,
            closed: None,
            col: None,
        }
    }
}

impl Walker {
    /// A byte inside a string, at absolute offset `abs`. True for a line
    /// end: the string was cut short.
    fn string_byte(&mut self, b: u8, abs: u64) -> bool {
        match (self.esc, b) {
            (_, b'\n') => return true,
            (true, _) => self.esc = false,
            (false, b'\\') => self.esc = true,
            (false, b'"') => {
                self.in_str = false;
                self.closed = Some(abs);
            }
            _ => {}
        }
        false
    }

    fn track_column(&mut self, b: u8) {
        match b {
            b'\n' => self.col = Some(0),
            b' ' | b'\t' | b'\r' => {
                if let Some(c) = &mut self.col {
                    *c += 1;
                }
            }
            _ => self.col = None,
        }
    }
}

/// Bytes the walk keeps before its position when it streams, so it can look
/// back at the end of the string it just read (see [`Walk::Swallowed`]).
/// Looking back never depends on how the input was read: the look-back is
/// at most [`SWALLOW_SPAN`] bytes, well within what is kept.
const LOOKBACK: usize = 64;
const SWALLOW_SPAN: usize = 16;

impl<R: Read> Reader<'_, R> {
    /// A bad record at `start`: reports it and moves past it.
    pub(super) fn bad(&mut self, start: usize, bad: Flaw, what: &str) -> io::Result<Found> {
        let reason = match bad {
            Flaw::Invalid { at, reason } => {
                format!("invalid JSON: {reason} (at byte {} of {what})", at - start)
            }
            Flaw::Truncated => "the file ends inside this record (truncated)".to_owned(),
            Flaw::Oversized => format!(
                "the record is larger than the record size limit ({} bytes)",
                self.max_record_bytes
            ),
        };
        let mut reject = self.reject_head(start, reason)?;
        // Where validation gave up, to tell afterwards whether the region
        // ended before it (the record was cut short by the next one).
        let gave_up = match bad {
            Flaw::Invalid { at, .. } => self.abs(at),
            Flaw::Oversized => self.abs(start) + self.max_record_bytes as u64,
            Flaw::Truncated => u64::MAX,
        };
        let layout = self.layout();
        // A record over the window may still be one: the walk that finds
        // its end feeds it to a parser that checks and projects it.
        let streamed = match (bad, self.large, self.projection) {
            (Flaw::Oversized, Some(limit), Some(root)) if self.buf[start] == b'{' => {
                self.tee = Some(Streamer::new(root, self.slots.len(), limit));
                self.tee_from = self.abs(start);
                Some(self.acct.rejected_bytes)
            }
            _ => None,
        };
        let walk = self.walk(start, false)?;
        if let Some(rejected_before) = streamed
            && let Some(large) = self.streamed_record(walk, rejected_before, &mut reject, what)?
        {
            return Ok(Found::Large(large));
        }
        match walk {
            Walk::End(end) => self.take(ByteKind::Rejected, end),
            // In an array written on one line no line end shows where an
            // element cut short stops. A string cut short swallows what
            // follows up to the next quote, the next element's `,{"`: resume
            // at that `{`. Otherwise search on from where the element stopped
            // making sense: values before that point belong to it and are
            // never taken for elements.
            Walk::Swallowed(next) if matches!(layout, Layout::Inline | Layout::Either(_)) => {
                self.take(ByteKind::Rejected, next);
                self.array_col = None;
            }
            Walk::Swallowed(at) => {
                self.take(ByteKind::Rejected, at);
                self.search(true, None)?;
            }
            Walk::Truncated(at, col) => {
                self.take(ByteKind::Rejected, at);
                self.search(true, col)?;
            }
            Walk::Eof => self.take(ByteKind::Rejected, self.buf.len()),
        }
        let at_end = self.pos == self.buf.len() && self.eof;
        if !at_end && self.abs(self.pos) <= gave_up {
            // Validation ran on into what follows, and the layout showed
            // where the record really stopped: it was cut short.
            let line = self.line_at(self.pos);
            reject.reason = format!(
                "{what} is incomplete: the next record begins on line {line}, before it ends"
            );
        }
        Ok(Found::Reject(self.finish_reject(reject)))
    }

    /// A record over the window, walked to its end while its bytes were fed
    /// to the large-record parser: a record iff the parser took it whole,
    /// ending where the walk did. Otherwise the parser's verdict becomes
    /// the reject's reason.
    fn streamed_record(
        &mut self,
        walk: Walk,
        rejected_before: u64,
        reject: &mut Pending,
        what: &str,
    ) -> io::Result<Option<Large>> {
        if let Walk::End(end) = walk {
            self.feed_tee(end)?;
        }
        let tee = self
            .tee
            .take()
            .ok_or_else(|| io::Error::other("the large-record parser went missing"))?;
        let whole = match walk {
            Walk::End(end) => Some((end, self.abs(end) - reject.offset))
                .filter(|&(_, length)| tee.is_done() && tee.fed() == length),
            _ => None,
        };
        if let Some((end, length)) = whole {
            // Bytes the walk passed as rejected were the record's.
            let passed = self.acct.rejected_bytes - rejected_before;
            self.acct.rejected_bytes -= passed;
            self.acct.record_bytes += passed;
            self.take(ByteKind::Record, end);
            return Ok(Some(Large {
                line: reject.line,
                offset: reject.offset,
                length,
                excerpt: excerpt(&reject.head),
                captured: tee.finish(),
            }));
        }
        reject.reason = match (tee.failure(), walk) {
            (Some(f @ Failure::TooLarge { .. }), _) => f.to_string(),
            (Some(Failure::Invalid { at, reason }), _) => {
                format!("invalid JSON: {reason} (at byte {at} of {what})")
            }
            (None, Walk::Eof) => "the file ends inside this record (truncated)".to_owned(),
            (None, _) => format!("{what} is incomplete: its brackets never close"),
        };
        Ok(None)
    }

    fn in_array(&self) -> bool {
        self.state == State::Array
    }

    fn layout(&self) -> Layout {
        match (self.in_array(), self.array_layout) {
            (false, _) => Layout::Lines(self.body_indent),
            (true, Some(Layout::Inline)) if self.array_elements <= 1 => {
                Layout::Either(self.body_indent)
            }
            (true, layout) => layout.unwrap_or(Layout::Inline),
        }
    }

    /// Whether `b` can begin a record where the layout says records begin.
    fn begins_record(&self, b: u8) -> bool {
        if self.in_array() {
            json::is_value_start(b)
        } else {
            b == b'{'
        }
    }

    /// Walks a bad record from `start` until it ends or shows that it was cut
    /// short. Structure is checked as strictly as JSON's (keys, `:`, `,`,
    /// matching closers) while tokens may be bad: any bare word is taken for
    /// a scalar (`NaN`, `'x'`) and any bytes up to an unescaped quote for a
    /// string. So a record that is only bad inside (a bad token or escape, a
    /// control character, invalid UTF-8, an over-long value) ends exactly
    /// where its brackets close, and one cut short stops where its structure
    /// breaks. Within the record window `pos` stays at `start`; past it the
    /// walk streams, consuming what it passes as rejected bytes (keeping
    /// [`LOOKBACK`] bytes), unless it is `bounded`, when it stops there.
    fn walk(&mut self, start: usize, bounded: bool) -> io::Result<Walk> {
        let layout = self.layout();
        self.stack.clear();
        let mut w = Walker::default();
        let first = self.abs(start);
        let window_end = first + self.max_record_bytes as u64 + 1;
        let mut i = start;
        loop {
            if bounded && self.abs(i) >= window_end {
                return Ok(Walk::Truncated(i, None));
            }
            if i >= self.buf.len() && !self.walk_more(&mut i, window_end)? {
                return Ok(Walk::Eof);
            }
            let b = self.buf[i];
            if w.in_str {
                // A line end inside a string, escaped or not, is never
                // JSON: the string was cut short.
                if w.string_byte(b, self.abs(i)) {
                    return Ok(Walk::Truncated(i + 1, Some(0)));
                }
                i += 1;
                continue;
            }
            if w.in_word && (grammar::is_structural(b) || json::is_ws(b)) {
                w.in_word = false;
            }
            if let (Some(n), Layout::Lines(indent) | Layout::Either(indent)) = (w.col, layout)
                && !json::is_ws(b)
                && n == indent
                && self.abs(i) > first
                && self.begins_record(b)
            {
                return Ok(Walk::Truncated(i, w.col));
            }
            let before = w.col;
            w.track_column(b);
            if json::is_ws(b) || w.in_word {
                i += 1;
                continue;
            }
            if let Some(end) = self.walk_step(&mut w, b, i, first, before) {
                return Ok(end);
            }
            i += 1;
        }
    }

    /// Past the record window, streams past what the walk has passed
    /// (counted as rejected, keeping [`LOOKBACK`] bytes), then reads more.
    /// False at the end of input.
    fn walk_more(&mut self, i: &mut usize, window_end: u64) -> io::Result<bool> {
        if self.abs(*i) > window_end + LOOKBACK as u64 {
            let keep = *i - LOOKBACK;
            if keep > self.pos {
                self.feed_tee(keep)?;
                self.take(ByteKind::Rejected, keep);
                self.compact();
                *i = self.pos + LOOKBACK;
            }
        }
        self.fill()
    }

    /// One byte of the walk outside strings and words, at `i`, by JSON's
    /// grammar: where the walk ends, if it does here. `before` is the
    /// column before this byte.
    fn walk_step(
        &mut self,
        w: &mut Walker,
        b: u8,
        i: usize,
        first: u64,
        before: Option<usize>,
    ) -> Option<Walk> {
        let top = self.stack.last().copied();
        let inside = top.map(|t| {
            if t == b'{' {
                Container::Object
            } else {
                Container::Array
            }
        });
        match grammar::action(w.expect, b, inside) {
            grammar::Action::String => {
                w.in_str = true;
                w.expect = Expect::CommaOrClose;
            }
            grammar::Action::Key => {
                w.in_str = true;
                w.expect = Expect::Colon;
            }
            grammar::Action::Open(c) => {
                self.stack.push(b);
                w.expect = c.first();
            }
            grammar::Action::Colon => w.expect = Expect::Value,
            grammar::Action::Comma(c) => w.expect = c.after_comma(),
            grammar::Action::Close => {
                self.stack.pop();
                if self.stack.is_empty() {
                    return Some(Walk::End(i + 1));
                }
                w.expect = Expect::CommaOrClose;
            }
            // A bare word: a bad token where a value may be.
            grammar::Action::Scalar => {
                w.in_word = true;
                w.expect = Expect::CommaOrClose;
            }
            grammar::Action::Unexpected(_) => {
                return self.walk_off_grammar(w, b, i, top, first, before);
            }
        }
        None
    }

    /// A byte JSON's grammar does not allow where the walk is: the end of
    /// an array element, a bare key, or the point where the record was cut
    /// short (and, if a string cut short swallowed the next record's
    /// start, where that record begins).
    fn walk_off_grammar(
        &mut self,
        w: &mut Walker,
        b: u8,
        i: usize,
        top: Option<u8>,
        first: u64,
        before: Option<usize>,
    ) -> Option<Walk> {
        let array = self.in_array();
        let quote = w
            .closed
            .and_then(|q| usize::try_from(q.checked_sub(self.base)?).ok());
        let cut = match quote.and_then(|q| self.swallowed(q, i)) {
            Some(next) if self.abs(next) > first => Walk::Swallowed(next),
            _ if b == b'{' && w.expect == Expect::Key => Walk::Swallowed(i),
            _ => Walk::Truncated(i, before),
        };
        match (b, w.expect) {
            // A whole element of a top-level array ends at its comma.
            (b',', Expect::CommaOrClose) if top.is_none() => {
                Some(if array { Walk::End(i) } else { cut })
            }
            // In an array, a `]` the element cannot use closes the array:
            // the element ends before it.
            (b']', _) if array => Some(Walk::End(i)),
            // A bare key.
            (_, Expect::Key | Expect::KeyOrClose) if !grammar::is_structural(b) => {
                w.in_word = true;
                w.expect = Expect::Colon;
                None
            }
            _ => Some(cut),
        }
    }

    /// If the string whose closing quote is at `quote` swallowed the next
    /// record's start: it ends with `,{` (spaces allowed around them) and
    /// only whitespace lies between it and the break at `at`. Returns the
    /// index of that `{`. Looks at most [`SWALLOW_SPAN`] bytes either side.
    fn swallowed(&self, quote: usize, at: usize) -> Option<usize> {
        if quote < self.pos || at - quote > SWALLOW_SPAN {
            return None;
        }
        if !self.buf[quote + 1..at].iter().all(|b| json::is_ws(*b)) {
            return None;
        }
        let from = quote.saturating_sub(SWALLOW_SPAN).max(self.pos);
        let before = &self.buf[from..quote];
        let brace = before.iter().rposition(|b| !json::is_ws(*b))?;
        if before[brace] != b'{' {
            return None;
        }
        let comma = before[..brace].iter().rposition(|b| !json::is_ws(*b))?;
        (before[comma] == b',').then_some(from + brace)
    }

    /// Consumes rejected bytes from `pos` up to the next resume point: where
    /// the layout lets a record begin and a whole value parses, followed by
    /// what may follow a record there. `try_first` tries `pos` itself first.
    /// `col` is the whitespace since the last line end before `pos` (`None`
    /// if something else came since). Leaves `pos` at the resume point, or
    /// at the end of input, and tells the array the column it resumed at, so
    /// its layout can still be learned from its second element.
    pub(super) fn search(&mut self, try_first: bool, col: Option<usize>) -> io::Result<()> {
        let mut layout = self.layout();
        // While the layout is undecided (the first element of an array that
        // began on the `[`'s line), a record at a line start shows that
        // elements begin lines: from then on only line starts count, or a
        // value nested after a comma in a bad element could be taken.
        let settle = |reader: &mut Self, layout: &mut Layout, col: Option<usize>, b: u8| {
            if let Layout::Either(indent) = *layout
                && col == Some(indent)
                && reader.begins_record(b)
            {
                *layout = Layout::Lines(indent);
                reader.array_layout = Some(Layout::Lines(indent));
            }
        };
        if self.has(self.pos)? {
            let b = self.buf[self.pos];
            settle(self, &mut layout, col, b);
        }
        if try_first && self.resumes_here(self.pos, false)? {
            self.array_col = col;
            return Ok(());
        }
        let (mut col, mut after_comma) = (col, false);
        let first = self.abs(self.pos);
        let mut i = self.pos;
        loop {
            if i >= self.buf.len() {
                self.take(ByteKind::Rejected, i);
                self.compact();
                i = self.pos;
                if !self.fill()? {
                    self.take(ByteKind::Rejected, self.buf.len());
                    return Ok(());
                }
            }
            let b = self.buf[i];
            settle(self, &mut layout, col, b);
            let candidate = match layout {
                Layout::Lines(indent) => col == Some(indent) && self.begins_record(b),
                Layout::Inline => after_comma && json::is_value_start(b),
                Layout::Either(indent) => {
                    (col == Some(indent) || after_comma) && self.begins_record(b)
                }
            };
            if candidate && self.abs(i) > first {
                self.take(ByteKind::Rejected, i);
                if self.resumes_here(i, after_comma)? {
                    self.array_col = col;
                    return Ok(());
                }
                i = self.pos;
            }
            match b {
                b'\n' => col = Some(0),
                b' ' | b'\t' | b'\r' => {
                    if let Some(c) = &mut col {
                        *c += 1;
                    }
                }
                b',' => {
                    col = None;
                    after_comma = true;
                    i += 1;
                    continue;
                }
                _ => col = None,
            }
            if !json::is_ws(b) {
                after_comma = false;
            }
            i += 1;
        }
    }

    /// Whether a record may resume at `at`: a whole value parses there (or a
    /// bad one whose brackets close), and what follows it is what follows a
    /// record in this body.
    /// `after_comma` says whether a comma precedes `at` (with only
    /// whitespace between), as the caller's scan saw it: looking back into
    /// the buffer would depend on what happened to be buffered.
    fn resumes_here(&mut self, at: usize, after_comma: bool) -> io::Result<bool> {
        if !self.has(at)? || !self.begins_record(self.buf[at]) {
            return Ok(false);
        }
        // In an array on one line, an object after a comma past the point
        // where the broken element stopped parsing is the next element,
        // good or bad: searching on inside a bad one would enter values
        // nested in it.
        if matches!(self.layout(), Layout::Inline | Layout::Either(_))
            && self.buf[at] == b'{'
            && after_comma
        {
            return Ok(true);
        }
        let end = match self.validate(at, false)? {
            Ok(end) => end,
            // Valid as far as the record limit: a record that begins here,
            // too large, to be rejected on its own. Searching on inside it
            // would enter its nested values.
            Err(Flaw::Oversized) => return Ok(true),
            // A bad record whose brackets still close is the next record,
            // bad in itself: the region ends here and it gets its own report.
            // Searching on inside it could take its nested values for records.
            Err(_) if matches!(self.buf[at], b'{' | b'[') => match self.walk(at, true)? {
                Walk::End(end) => end,
                _ => return Ok(false),
            },
            Err(_) => return Ok(false),
        };
        let array = self.in_array();
        let mut i = end;
        loop {
            if !self.has(i)? {
                return Ok(true);
            }
            let b = self.buf[i];
            match b {
                b' ' | b'\t' | b'\r' => {}
                b'\n' if array => {}
                b'\n' | b'{' => return Ok(!array),
                b',' => return Ok(true),
                b']' => return Ok(array),
                _ => return Ok(false),
            }
            i += 1;
            if i - end > self.max_record_bytes {
                // A long whitespace run proves nothing either way; accept.
                return Ok(true);
            }
        }
    }

    /// The start of a reject report for a region beginning at `start`; it is
    /// completed by [`Reader::finish_reject`] once the region's end is known.
    /// The excerpt's bytes are read now (the region may not stay buffered),
    /// and as many as the excerpt can hold, so it does not depend on how much
    /// happened to be buffered.
    pub(super) fn reject_head(
        &mut self,
        start: usize,
        reason: impl Into<String>,
    ) -> io::Result<Pending> {
        self.has(start + EXCERPT_BYTES - 1)?;
        let end = self.buf.len().min(start + EXCERPT_BYTES);
        Ok(Pending {
            line: self.line_at(start),
            offset: self.abs(start),
            reason: reason.into(),
            head: self.buf[start..end].to_vec(),
        })
    }

    /// The report of a region that ends at `pos`.
    pub(super) fn finish_reject(&self, p: Pending) -> Reject {
        let length = self.abs(self.pos) - p.offset;
        let keep = p
            .head
            .len()
            .min(usize::try_from(length).unwrap_or(usize::MAX));
        Reject {
            line: p.line,
            offset: p.offset,
            length,
            reason: p.reason,
            excerpt: excerpt(&p.head[..keep]),
        }
    }
}

/// A reject whose region's end is not known yet.
pub(super) struct Pending {
    pub(super) line: u64,
    pub(super) offset: u64,
    pub(super) reason: String,
    pub(super) head: Vec<u8>,
}
