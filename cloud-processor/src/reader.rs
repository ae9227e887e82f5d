//! Finds where the JSON starts and cuts the body into records, streaming.
//!
//! The preamble rule: the body begins at the first line where a JSON value
//! starts (`{` or `[`) *and parses*; every line before it is preamble, however
//! it looks. After that, records are JSON objects: one per line, concatenated
//! (pretty-printed ones too), or the elements of one top-level array.
//!
//! A broken record never takes good ones with it. Reading resumes at the next
//! line that begins with `{`, since every record of newline-delimited or
//! pretty-printed input begins a line, and nested values are indented. A
//! line that begins with `{` while a record is still open therefore means
//! that record was truncated. The buffer never holds more than one record
//! plus one read, so a 100 MB line is skipped, not loaded.

use std::io::{self, Read};

use memchr::{memchr, memchr3, memmem};

const READ_BYTES: usize = 64 * 1024;
const EXCERPT_BYTES: usize = 120;

/// A region of the body that is not a usable record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reject {
    /// 1-based line of the region's first byte (of the decompressed file).
    pub line: u64,
    /// Byte offset of the region's first byte.
    pub offset: u64,
    pub reason: String,
    /// The region's first bytes, lossily decoded.
    pub excerpt: String,
}

/// What the reader found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A candidate record: balanced braces, not yet validated (projection
    /// validates it fully).
    Record {
        bytes: &'a [u8],
        line: u64,
        offset: u64,
    },
    Reject(Reject),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Preamble,
    Body,
    Array,
}

enum Scan {
    Complete(usize),
    Broken { at: usize, reason: &'static str },
    NeedMore,
}

/// Streams records out of `src`.
#[derive(Debug)]
pub struct Reader<R> {
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
    values_seen: u64,
    max_record_bytes: usize,
    preamble_lines: u64,
    /// The end of the last record handed out, which the next call consumes.
    pending_end: Option<usize>,
}

/// Finds the end of the JSON value starting at `start` (`{` or `[`) by
/// structure alone: strings and escapes, nesting, and the line rule above.
fn scan_value(buf: &[u8], start: usize, eof: bool) -> Scan {
    let mut depth: usize = 0;
    let mut i = start;
    while i < buf.len() {
        match buf[i] {
            b'"' => {
                // Jump through the string: only a quote, a backslash or a
                // newline (which JSON strings cannot hold) matters.
                let mut j = i + 1;
                loop {
                    match memchr3(b'"', b'\\', b'\n', &buf[j..]) {
                        None => return if eof { truncated() } else { Scan::NeedMore },
                        Some(k) => {
                            let at = j + k;
                            match buf[at] {
                                b'"' => {
                                    i = at;
                                    break;
                                }
                                b'\\' => {
                                    j = at + 2;
                                    if j > buf.len() {
                                        return if eof { truncated() } else { Scan::NeedMore };
                                    }
                                }
                                _ => {
                                    return Scan::Broken {
                                        at,
                                        reason: "a line ends inside a string",
                                    };
                                }
                            }
                        }
                    }
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    let opened_as = if buf[start] == b'{' { b'}' } else { b']' };
                    return if buf[i] == opened_as {
                        Scan::Complete(i + 1)
                    } else {
                        Scan::Broken {
                            at: i,
                            reason: "mismatched brackets",
                        }
                    };
                }
            }
            b'\n' => match buf.get(i + 1) {
                Some(b'{') => {
                    return Scan::Broken {
                        at: i,
                        reason: "the record is incomplete: the next line starts a new record",
                    };
                }
                None if !eof => return Scan::NeedMore,
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }
    if eof { truncated() } else { Scan::NeedMore }
}

fn truncated() -> Scan {
    Scan::Broken {
        at: usize::MAX,
        reason: "the file ends inside this record (truncated)",
    }
}

/// The first bytes of a rejected region, lossily decoded and escaped, for reports.
pub fn excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(EXCERPT_BYTES)];
    String::from_utf8_lossy(cut)
        .chars()
        .flat_map(char::escape_debug)
        .collect()
}

impl<R: Read> Reader<R> {
    pub fn new(src: R, max_record_bytes: usize) -> Self {
        Self {
            src,
            buf: Vec::with_capacity(READ_BYTES * 2),
            pos: 0,
            base: 0,
            line: 1,
            counted: 0,
            eof: false,
            state: State::Preamble,
            values_seen: 0,
            max_record_bytes,
            preamble_lines: 0,
            pending_end: None,
        }
    }

    /// Lines dropped as preamble so far.
    pub fn preamble_lines(&self) -> u64 {
        self.preamble_lines
    }

    /// Bytes read from the source so far.
    pub fn bytes_read(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    fn line_at(&mut self, idx: usize) -> u64 {
        if idx > self.counted {
            self.line += memchr::memchr_iter(b'\n', &self.buf[self.counted..idx]).count() as u64;
            self.counted = idx;
        }
        self.line
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

    fn reject(&mut self, start: usize, end: usize, reason: impl Into<String>) -> Reject {
        let end = end.min(self.buf.len());
        Reject {
            line: self.line_at(start),
            offset: self.base + start as u64,
            reason: reason.into(),
            excerpt: excerpt(&self.buf[start..end]),
        }
    }

    /// Moves `pos` to the next line that begins with `{` after `from`, or to
    /// the end of input, reading (and dropping) as much as it takes.
    fn resync(&mut self, from: usize) -> io::Result<()> {
        let mut search = from;
        loop {
            if let Some(k) = memmem::find(&self.buf[search..], b"\n{") {
                self.pos = search + k + 1;
                return Ok(());
            }
            // Keep the last byte: it may be the newline of a "\n{" split across reads.
            self.pos = self.buf.len().saturating_sub(1).max(self.pos);
            self.compact();
            if !self.fill()? {
                self.pos = self.buf.len();
                return Ok(());
            }
            search = self.pos;
        }
    }

    /// Scans a value at `self.pos`, reading more as needed, up to the record limit.
    /// Only the first `max_record_bytes + 1` bytes are ever looked at, so the
    /// answer is the same however the input was split into reads (the resume
    /// protocol relies on runs over one object cutting the same chunks).
    fn scan(&mut self) -> io::Result<Scan> {
        loop {
            let window = self.buf.len().min(self.pos + self.max_record_bytes + 1);
            let at_eof = self.eof && window == self.buf.len();
            match scan_value(&self.buf[..window], self.pos, at_eof) {
                Scan::NeedMore if window - self.pos > self.max_record_bytes => {
                    return Ok(Scan::Broken {
                        at: self.pos,
                        reason: "the record is larger than the record size limit",
                    });
                }
                Scan::NeedMore => {
                    self.fill()?;
                }
                Scan::Complete(end) if end - self.pos > self.max_record_bytes => {
                    return Ok(Scan::Broken {
                        at: self.pos,
                        reason: "the record is larger than the record size limit",
                    });
                }
                other => return Ok(other),
            }
        }
    }

    /// Whether a JSON value starts at `pos` and parses. An object must parse
    /// whole. An array need only start well (`]` or a first element that
    /// parses), so a large array of records is not mistaken for preamble,
    /// while a banner such as `[INFO] started` still is.
    fn body_starts_here(&mut self) -> io::Result<bool> {
        let start = self.pos;
        match self.buf.get(start) {
            Some(b'{') => Ok(match self.scan()? {
                Scan::Complete(end) => {
                    serde_json::from_slice::<serde::de::IgnoredAny>(&self.buf[start..end]).is_ok()
                }
                _ => false,
            }),
            Some(b'[') => {
                self.pos += 1;
                let found = self.skip_whitespace()?;
                let first = self.pos;
                let ok = found
                    && match self.buf[first] {
                        b']' => true,
                        b'{' | b'[' => match self.scan()? {
                            Scan::Complete(end) => serde_json::from_slice::<serde::de::IgnoredAny>(
                                &self.buf[first..end],
                            )
                            .is_ok(),
                            _ => false,
                        },
                        _ => {
                            // A scalar element: it runs to the next `,`, `]` or
                            // line end, which may not have been read yet (found
                            // by fuzzing: `[6` split across reads). `fill` only
                            // grows the buffer, so `first` stays valid.
                            let len = loop {
                                let rest = &self.buf[first..];
                                if let Some(len) =
                                    rest.iter().position(|b| matches!(b, b',' | b']' | b'\n'))
                                {
                                    break len;
                                }
                                if rest.len() > self.max_record_bytes || !self.fill()? {
                                    break self.buf.len() - first;
                                }
                            };
                            len <= self.max_record_bytes
                                && serde_json::from_slice::<serde::de::IgnoredAny>(
                                    &self.buf[first..first + len],
                                )
                                .is_ok()
                        }
                    };
                self.pos = start;
                Ok(ok)
            }
            _ => Ok(false),
        }
    }

    /// Skips spaces, tabs and line ends. Returns false at the end of input.
    fn skip_whitespace(&mut self) -> io::Result<bool> {
        loop {
            while self.pos < self.buf.len()
                && matches!(self.buf[self.pos], b' ' | b'\t' | b'\r' | b'\n')
            {
                self.pos += 1;
            }
            if self.pos < self.buf.len() {
                return Ok(true);
            }
            if !self.fill()? {
                return Ok(false);
            }
        }
    }

    /// The next record or rejected region, or `None` at the end of input.
    pub fn next_item(&mut self) -> io::Result<Option<Item<'_>>> {
        if let Some(end) = self.pending_end.take() {
            self.pos = end;
        }
        loop {
            self.compact();
            match self.state {
                State::Preamble => {
                    if self.pos >= self.buf.len() && !self.fill()? {
                        return Ok(None);
                    }
                    if self.base == 0 && self.pos == 0 {
                        while self.buf.len() < 3 && self.fill()? {}
                        if self.buf.starts_with(b"\xEF\xBB\xBF") {
                            self.pos = 3;
                        }
                    }
                    // The first non-blank byte of this line.
                    let mut i = self.pos;
                    loop {
                        while i < self.buf.len() && matches!(self.buf[i], b' ' | b'\t' | b'\r') {
                            i += 1;
                        }
                        if i < self.buf.len() || !self.fill()? {
                            break;
                        }
                    }
                    self.pos = i;
                    if self.body_starts_here()? {
                        self.state = State::Body;
                        continue;
                    }
                    // A preamble line: skip it.
                    self.preamble_lines += 1;
                    loop {
                        if let Some(k) = memchr(b'\n', &self.buf[self.pos..]) {
                            self.pos += k + 1;
                            break;
                        }
                        self.pos = self.buf.len();
                        self.compact();
                        if !self.fill()? {
                            return Ok(None);
                        }
                    }
                }
                State::Body | State::Array => {
                    if !self.skip_whitespace()? {
                        if self.state == State::Array {
                            self.state = State::Body;
                            let start = self.pos;
                            return Ok(Some(Item::Reject(self.reject(
                                start,
                                start,
                                "the file ends inside the top-level array (missing `]`)",
                            ))));
                        }
                        return Ok(None);
                    }
                    let start = self.pos;
                    match (self.state, self.buf[start]) {
                        (_, b'{') => {}
                        (State::Body, b'[') if self.values_seen == 0 => {
                            self.state = State::Array;
                            self.pos += 1;
                            continue;
                        }
                        (State::Array, b',') => {
                            self.pos += 1;
                            continue;
                        }
                        (State::Array, b']') => {
                            self.state = State::Body;
                            self.pos += 1;
                            continue;
                        }
                        (state, _) => {
                            let reason = if state == State::Array {
                                "an array element is not a JSON object"
                            } else {
                                "text that is not a JSON object"
                            };
                            return Ok(Some(Item::Reject(self.skip_non_object(start, reason)?)));
                        }
                    }
                    self.values_seen += 1;
                    match self.scan()? {
                        Scan::Complete(end) => {
                            let (line, offset) = (self.line_at(start), self.base + start as u64);
                            self.pending_end = Some(end);
                            return Ok(Some(Item::Record {
                                bytes: &self.buf[start..end],
                                line,
                                offset,
                            }));
                        }
                        // `scan` reads until it can decide, so it never
                        // answers NeedMore; were it to, the record is cut short.
                        Scan::Broken { at, reason } => {
                            let reject = self.reject(start, at, reason);
                            self.resync(start)?;
                            return Ok(Some(Item::Reject(reject)));
                        }
                        Scan::NeedMore => {
                            let reject = self.reject(
                                start,
                                usize::MAX,
                                "the file ends inside this record (truncated)",
                            );
                            self.resync(start)?;
                            return Ok(Some(Item::Reject(reject)));
                        }
                    }
                }
            }
        }
    }

    /// Rejects a value that is not an object. Inside an array, only that
    /// element is skipped (up to the next `,` or `]` at its level), so the
    /// objects around it still go through. Elsewhere the rest of the line is.
    fn skip_non_object(&mut self, start: usize, reason: &'static str) -> io::Result<Reject> {
        if self.state == State::Array {
            let end = match self.buf[start] {
                b'[' | b'"' => {
                    let scan = if self.buf[start] == b'"' {
                        self.scan_string(start)?
                    } else {
                        self.scan()?
                    };
                    match scan {
                        // The limit applies however much happens to be
                        // buffered, or the outcome would depend on read
                        // sizes (found by fuzzing).
                        Scan::Complete(end) if end - start <= self.max_record_bytes => end,
                        other => {
                            // The excerpt, too, must not depend on how much
                            // was buffered.
                            let end = match other {
                                Scan::Broken { at, .. } => at,
                                _ => self.buf.len(),
                            }
                            .min(start + self.max_record_bytes + 1);
                            let reject = self.reject(start, end, reason);
                            self.resync(start)?;
                            return Ok(reject);
                        }
                    }
                }
                _ => {
                    let mut i = start;
                    loop {
                        while i < self.buf.len()
                            && !matches!(self.buf[i], b',' | b']' | b'\n' | b'{')
                        {
                            i += 1;
                        }
                        if i < self.buf.len() || !self.fill()? {
                            break;
                        }
                    }
                    i.max(start + 1).min(self.buf.len())
                }
            };
            let reject = self.reject(start, end, reason);
            self.pos = end;
            return Ok(reject);
        }
        let mut end = start;
        loop {
            if let Some(k) = memchr(b'\n', &self.buf[end..]) {
                end += k;
                break;
            }
            end = self.buf.len();
            if end - start > self.max_record_bytes || !self.fill()? {
                break;
            }
        }
        let reject = self.reject(start, end.min(start + self.max_record_bytes + 1), reason);
        self.resync(start)?;
        Ok(reject)
    }

    fn scan_string(&mut self, start: usize) -> io::Result<Scan> {
        loop {
            let mut j = start + 1;
            loop {
                match memchr3(b'"', b'\\', b'\n', &self.buf[j..]) {
                    Some(k) if self.buf[j + k] == b'"' => return Ok(Scan::Complete(j + k + 1)),
                    Some(k) if self.buf[j + k] == b'\\' && j + k + 2 <= self.buf.len() => {
                        j += k + 2
                    }
                    Some(k) if self.buf[j + k] == b'\n' => {
                        return Ok(Scan::Broken {
                            at: j + k,
                            reason: "a line ends inside a string",
                        });
                    }
                    _ => break,
                }
            }
            if self.buf.len() - start > self.max_record_bytes || !self.fill()? {
                return Ok(truncated());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads everything, returning records as strings and rejects.
    fn read_all(input: &[u8], max: usize, chunk: usize) -> (Vec<String>, Vec<Reject>, u64) {
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
        let mut r = Reader::new(Trickle(input, chunk), max);
        let (mut recs, mut rejects) = (Vec::new(), Vec::new());
        while let Some(item) = r.next_item().unwrap() {
            match item {
                Item::Record { bytes, .. } => {
                    recs.push(String::from_utf8_lossy(bytes).into_owned())
                }
                Item::Reject(rj) => rejects.push(rj),
            }
        }
        (recs, rejects, r.preamble_lines())
    }

    #[test]
    fn every_preamble_style_is_dropped() {
        let input = "\u{feff}# hash\r\n// slashes\n-- dashes\n; semi\n/* block\n   still block */\n[INFO] collector started\n{not json\n[also not\n\n{\"a\":1}\r\n{\"b\":2}\n";
        for chunk in [1, 3, 7, 4096] {
            let (recs, rejects, preamble) = read_all(input.as_bytes(), 1 << 20, chunk);
            assert_eq!(recs, ["{\"a\":1}", "{\"b\":2}"], "chunk {chunk}");
            assert!(rejects.is_empty(), "{rejects:?}");
            assert_eq!(preamble, 10);
        }
    }

    #[test]
    fn pretty_concatenated_and_array_bodies() {
        let pretty =
            "# c\n{\n  \"a\": {\"x\": [1, 2]},\n  \"s\": \"}{\\\"\"\n}\n{\n  \"b\": 2\n}{\"c\":3}";
        let (recs, rejects, _) = read_all(pretty.as_bytes(), 1 << 20, 5);
        assert_eq!(recs.len(), 3, "{recs:?}");
        assert!(recs[0].contains("\"}{\\\"\"") && rejects.is_empty());

        let array = "// header\n[\n  {\"a\":1},\n  {\"b\":2} ,{\"c\":3}\n]\n";
        let (recs, rejects, _) = read_all(array.as_bytes(), 1 << 20, 4);
        assert_eq!(recs, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
        assert!(rejects.is_empty(), "{rejects:?}");

        // Elements at column 0, and an array far larger than the record limit.
        let mut big = String::from("[INFO] banner\n[\n");
        for i in 0..2000 {
            big.push_str(&format!("{{\"i\":{i}}},\n"));
        }
        big.push_str("{\"last\":1}\n]\n");
        let (recs, rejects, preamble) = read_all(big.as_bytes(), 100, 999);
        assert_eq!((recs.len(), rejects.len(), preamble), (2001, 0, 1));
    }

    #[test]
    fn a_scalar_array_start_split_across_reads_is_judged_whole() {
        // Found by cargo-fuzz: with `[6` in one read and `\0` in the next,
        // the line was taken for the start of an array body.
        for input in ["\0\n[6\0", "# c\n[12x\n{\"a\":1}\n"] {
            let whole = read_all(input.as_bytes(), 1 << 20, 4096);
            for chunk in [1, 2, 3] {
                let split = read_all(input.as_bytes(), 1 << 20, chunk);
                assert_eq!(split.0, whole.0, "{input:?} in reads of {chunk}");
                assert_eq!(split.1, whole.1, "{input:?} in reads of {chunk}");
                assert_eq!(split.2, whole.2, "{input:?} in reads of {chunk}");
            }
        }
        assert_eq!(read_all(b"\0\n[6\0", 1 << 20, 1).2, 2);

        // An over-long string element, complete in one read but not in many.
        let long = format!("[{{\"a\":1}},\"{}\",\"x\"]\n", "a".repeat(100));
        let whole = read_all(long.as_bytes(), 64, 4096);
        let split = read_all(long.as_bytes(), 64, 1);
        assert_eq!(whole.0, ["{\"a\":1}"]);
        assert!(!whole.1.is_empty());
        assert_eq!(split.1, whole.1);
    }

    #[test]
    fn a_broken_record_spares_the_next_line() {
        let input = "{\"a\":1}\n{\"b\":2,\"c\":\n{\"d\":4}\n{\"e\":\"unterminated\n{\"f\":6}\n";
        let (recs, rejects, _) = read_all(input.as_bytes(), 1 << 20, 3);
        assert_eq!(recs, ["{\"a\":1}", "{\"d\":4}", "{\"f\":6}"]);
        assert_eq!(rejects.len(), 2);
        assert_eq!((rejects[0].line, rejects[0].offset), (2, 8));
        assert!(
            rejects[0].reason.contains("incomplete"),
            "{}",
            rejects[0].reason
        );
        assert_eq!(rejects[1].line, 4);
        assert!(
            rejects[1].excerpt.starts_with("{\\\"e\\\""),
            "{}",
            rejects[1].excerpt
        );
    }

    #[test]
    fn garbage_truncation_and_non_objects() {
        let input = "{\"a\":1}\ntrailing garbage\n{\"b\":2}\n[1,2]\n{\"c\":";
        let (recs, rejects, _) = read_all(input.as_bytes(), 1 << 20, 2);
        assert_eq!(recs, ["{\"a\":1}", "{\"b\":2}"]);
        let reasons: Vec<&str> = rejects.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("not a JSON object"));
        assert!(reasons[1].contains("not a JSON object"));
        assert!(reasons[2].contains("truncated"));
        assert_eq!(rejects[2].line, 5);

        let array = "[{\"a\":1}, 7, \"s\", [1], null, {\"b\":2}";
        let (recs, rejects, _) = read_all(array.as_bytes(), 1 << 20, 3);
        assert_eq!(recs, ["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(rejects.len(), 5, "{rejects:?}");
        assert!(rejects[4].reason.contains("missing `]`"));
    }

    #[test]
    fn a_huge_line_is_skipped_without_being_held() {
        let mut input = b"{\"a\":1}\n{\"big\":\"".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3_000_000));
        input.extend_from_slice(b"\"}\n{\"b\":2}\n");
        let (recs, rejects, _) = read_all(&input, 100_000, 65_536);
        assert_eq!(recs, ["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(rejects.len(), 1);
        assert!(rejects[0].reason.contains("size limit"));
        assert!(rejects[0].excerpt.len() < 200);
    }

    #[test]
    fn only_comments_or_nothing_gives_no_records() {
        for input in ["", "\n\n", "# only\n// comments\n", "[INFO] x\n{broken"] {
            let (recs, rejects, _) = read_all(input.as_bytes(), 1 << 20, 5);
            assert!(recs.is_empty() && rejects.is_empty(), "{input:?}");
        }
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
            let (recs, _, _) = read_all(input.as_bytes(), 1 << 20, chunk);
            prop_assert_eq!(recs, want);
        }

        /// Arbitrary bytes never panic or hang, and every record handed out
        /// starts with `{` and ends with `}`.
        #[test]
        fn arbitrary_input_never_panics(input in proptest::collection::vec(prop_oneof![
            Just(b'{'), Just(b'}'), Just(b'['), Just(b']'), Just(b'"'), Just(b'\\'), Just(b'\n'), Just(b','), any::<u8>()
        ], 0..300), chunk in 1usize..20) {
            let (recs, _, _) = read_all(&input, 64, chunk);
            for r in recs {
                prop_assert!(r.starts_with('{') && r.ends_with('}'), "{r:?}");
            }
        }
    }
}
