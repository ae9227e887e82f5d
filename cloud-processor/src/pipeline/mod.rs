//! The processor's data path over one raw object, with no I/O of its own:
//! decompress (zstd, detected by magic bytes, or plain), read records, project,
//! pack. Chunks go to a callback as soon as they are full, so memory stays at
//! a few message sizes plus the decoder's buffers whatever the object size.

pub mod body;
pub mod compact;
pub mod grammar;
pub mod json;
pub mod project;
pub mod reader;
pub mod rules;
pub mod stream;

use std::io::{self, BufRead, BufReader, Read};
use std::ops::ControlFlow;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::pipeline::body::{BodyFormat, Chunk, Packer};
use crate::pipeline::json::Span;
use crate::pipeline::project::{EmptyRecords, Projection, RecordError};
use crate::pipeline::reader::{Accounting, Item, Large, Reader, Reject, excerpt};
use crate::pipeline::rules::{RULES, Violation};

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// A report with every reject of a garbage file would be as big as the file:
/// past this many, rejects are counted (exactly) but not listed.
pub const MAX_REPORTED_REJECTS: usize = 10_000;

/// Everything that shapes the output. Two runs with equal settings over the
/// same object produce the same chunks.
#[derive(Debug, Clone)]
pub struct Settings {
    pub projection: Projection,
    pub format: BodyFormat,
    /// Largest body: the queue's limit less the attributes' worst case.
    pub max_body_bytes: usize,
    /// Largest record the reader will frame (bigger ones are rejected).
    pub max_record_bytes: usize,
    /// Decompressed size above which the object is quarantined.
    pub max_decompressed_bytes: u64,
    /// JSON pointer to the array of records inside each top-level value.
    pub records_pointer: Option<String>,
    /// What becomes of a projected record larger than any message body.
    pub large_records: LargeRecords,
    /// Largest record read: records over `max_record_bytes` (the window)
    /// and up to this are streamed through spools instead of rejected
    /// (outside wrapper mode, where a whole wrapper is framed).
    pub max_large_record_bytes: u64,
    /// Decode zstd on a thread of its own, ahead of parsing: faster in wall
    /// time with two cores to spare, about a sixth more CPU in all.
    pub decode_thread: bool,
}

/// What becomes of a projected record larger than any message body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LargeRecords {
    /// Stored in S3, and sent as a pointer the SQS Extended Client reads.
    #[default]
    Offload,
    /// Rejected into the object's reject report.
    Reject,
}

/// Counts for one object.
///
/// Every decompressed byte is counted once, as preamble, record, rejected or
/// separator, so `preamble_bytes + record_bytes + rejected_bytes +
/// separator_bytes == bytes_decompressed` (see [`Stats::accounted`]).
/// `record_bytes` are the bytes of records that were sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub bytes_decompressed: u64,
    pub preamble_lines: u64,
    pub preamble_bytes: u64,
    pub record_bytes: u64,
    pub rejected_bytes: u64,
    pub separator_bytes: u64,
    /// Valid JSON records read (every element, in wrapper mode).
    pub records_in: u64,
    pub records_out: u64,
    /// Rejected regions: invalid, truncated or oversized records, values
    /// that are not objects, junk in the body.
    pub rejected: u64,
    /// Records too large for a message, sent as S3 pointers (counted in
    /// `records_out`).
    pub offloaded: u64,
    pub chunks: u32,
    /// Per configured field, in order: records read that lack it.
    pub field_missing: Vec<u64>,
    /// Per configured field, in order, and per rule in [`RULES`] order:
    /// records rejected because the field broke that rule (the first
    /// broken rule of a record counts). Empty when no field has a rule.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schema_rejects: Vec<[u64; RULES.len()]>,
}

impl Stats {
    /// Whether the byte accounting adds up.
    pub fn accounted(&self) -> bool {
        self.preamble_bytes + self.record_bytes + self.rejected_bytes + self.separator_bytes
            == self.bytes_decompressed
    }

    fn set_accounting(&mut self, acct: Accounting, moved: u64, read: u64) {
        self.preamble_bytes = acct.preamble_bytes;
        self.record_bytes = acct.record_bytes - moved;
        self.rejected_bytes = acct.rejected_bytes + moved;
        self.separator_bytes = acct.separator_bytes;
        self.bytes_decompressed = read;
    }
}

/// The outcome of a complete run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub stats: Stats,
    /// The first [`MAX_REPORTED_REJECTS`] rejects (`stats.rejected` counts all).
    pub rejects: Vec<Reject>,
    /// False if the callback asked to stop early.
    pub complete: bool,
}

/// Why a run over an object stopped before its end. `Corrupt` and
/// `TooLarge` are facts about the object's bytes: the object is quarantined.
/// `Io` is a failure of the stream the bytes came from (a broken download),
/// which says nothing about them: the caller retries.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("the zstd data is corrupt or truncated: {0}")]
    Corrupt(io::Error),
    #[error("it decompresses to more than the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("reading it failed: {0}")]
    Io(io::Error),
}

/// The object's stream, remembering whether it failed, so a download that
/// breaks inside the zstd decoder is not taken for corrupt data.
struct Source<R> {
    inner: R,
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<R: BufRead> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.inner.read(buf);
        if r.is_err() {
            self.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

impl<R: BufRead> BufRead for Source<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let r = self.inner.fill_buf();
        if r.is_err() {
            self.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
    }
}

/// How much decoded data the decoding thread may hold ahead of the parser:
/// `HANDOFF_BUFFERS` buffers of `HANDOFF_BYTES` in the channel, plus one
/// being filled and one being parsed.
const HANDOFF_BYTES: usize = 64 * 1024;
const HANDOFF_BUFFERS: usize = 4;

/// The parser's side of the hand-off: decoded bytes from the decoding
/// thread, in order, then its error if it failed. Buffers go back to it
/// for reuse.
struct Handoff {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    back: std::sync::mpsc::SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for Handoff {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    let used = std::mem::replace(&mut self.cur, next);
                    // A full return channel only costs an allocation.
                    let _ = self.back.try_send(used);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The decoder finished: every byte was handed over.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The decoding thread: reads `decoded` to its end in buffers, hands each
/// over (waiting while the parser is behind), and then its error, if any,
/// after the bytes read before it. Stops when the parser hangs up.
fn decode_ahead(
    mut decoded: impl Read,
    tx: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
) {
    loop {
        // A returned buffer is full length already: only a new one is
        // zeroed, once.
        let mut buf = back.try_recv().unwrap_or_default();
        buf.resize(HANDOFF_BYTES, 0);
        let mut filled = 0;
        let mut failure = None;
        while filled < HANDOFF_BYTES {
            match decoded.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        buf.truncate(filled);
        let end = failure.is_some() || filled < HANDOFF_BYTES;
        if filled > 0 && tx.send(Ok(buf)).is_err() {
            return;
        }
        if let Some(e) = failure {
            let _ = tx.send(Err(e));
        }
        if end {
            return;
        }
    }
}

/// Counts bytes and fails past the limit, so a zstd bomb stops early.
struct Limited<R> {
    inner: R,
    read: u64,
    limit: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("decompressed size limit exceeded")]
struct LimitExceeded;

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other(LimitExceeded));
        }
        Ok(n)
    }
}

/// The record a projection came from, for its reject if it is one.
enum Origin<'a> {
    Bytes(&'a [u8]),
    /// A record over the window: its length and first bytes.
    Streamed {
        length: u64,
        excerpt: String,
    },
}

impl Origin<'_> {
    /// Its length and first bytes, for its reject.
    fn extent(self) -> (u64, String) {
        match self {
            Self::Bytes(bytes) => (bytes.len() as u64, excerpt(bytes)),
            Self::Streamed { length, excerpt } => (length, excerpt),
        }
    }
}

struct Run<'a, F> {
    settings: &'a Settings,
    packer: Packer,
    report: Report,
    record: Vec<u8>,
    /// Bytes the reader handed out as records that were rejected after all
    /// (too large for a message, or not an object inside a wrapper).
    moved: u64,
    on_chunk: F,
}

impl<F: FnMut(Chunk) -> ControlFlow<()>> Run<'_, F> {
    fn reject(&mut self, reject: Reject) {
        self.report.stats.rejected += 1;
        if self.report.rejects.len() < MAX_REPORTED_REJECTS {
            self.report.rejects.push(reject);
        }
    }

    /// A record the reader accepted that is rejected now.
    fn reject_record(&mut self, bytes: &[u8], line: u64, offset: u64, reason: String) {
        let (length, excerpt) = Origin::Bytes(bytes).extent();
        self.reject_region(length, excerpt, line, offset, reason);
    }

    fn reject_region(
        &mut self,
        length: u64,
        excerpt: String,
        line: u64,
        offset: u64,
        reason: String,
    ) {
        self.moved += length;
        self.reject(Reject {
            line,
            offset,
            length,
            reason,
            excerpt,
        });
    }

    /// A record over the reader's window, projected into spools: packed like
    /// any other if its projection fits a message, else offloaded from the
    /// spools. Fails only if a spool cannot be read.
    fn large(&mut self, l: Large) -> io::Result<ControlFlow<()>> {
        self.report.stats.records_in += 1;
        let empty = self.note_fields(l.captured.found());
        let broken = self.settings.projection.check(l.captured.seen());
        if let Some(reason) = self.verdict(broken, empty) {
            self.reject_region(l.length, l.excerpt, l.line, l.offset, reason);
            return Ok(ControlFlow::Continue(()));
        }
        let mut body = l.captured.into_body(&self.settings.projection)?;
        if body.len() <= self.settings.max_body_bytes as u64 {
            self.record.clear();
            body.read_to_end(&mut self.record)?;
            let origin = Origin::Streamed {
                length: l.length,
                excerpt: l.excerpt,
            };
            return Ok(self.pack(origin, l.line, l.offset));
        }
        if self.settings.large_records == LargeRecords::Reject {
            let too_big = crate::pipeline::body::Oversized {
                size: usize::try_from(body.len()).unwrap_or(usize::MAX),
                limit: self.settings.max_body_bytes,
            };
            self.reject_region(l.length, l.excerpt, l.line, l.offset, too_big.to_string());
            return Ok(ControlFlow::Continue(()));
        }
        self.report.stats.records_out += 1;
        self.report.stats.offloaded += 1;
        let stored = body.in_flight();
        let (before, payload) = self.packer.offload_body(body);
        if let Some(chunk) = before
            && self.emit(chunk).is_break()
        {
            return Ok(ControlFlow::Break(()));
        }
        let flow = self.emit(payload);
        // Spool no other record before this one is stored (or dropped):
        // /tmp holds at most this one and the next.
        let _ = stored.recv();
        Ok(flow)
    }

    fn emit(&mut self, chunk: Chunk) -> ControlFlow<()> {
        self.report.stats.chunks += 1;
        (self.on_chunk)(chunk)
    }

    /// Packs the projection in `self.record` of the record `origin`.
    fn pack(&mut self, origin: Origin<'_>, line: u64, offset: u64) -> ControlFlow<()> {
        match self.packer.push(&self.record) {
            Ok(Some(chunk)) => {
                self.report.stats.records_out += 1;
                self.emit(chunk)
            }
            Ok(None) => {
                self.report.stats.records_out += 1;
                ControlFlow::Continue(())
            }
            Err(_) if self.settings.large_records == LargeRecords::Offload => {
                self.report.stats.records_out += 1;
                self.report.stats.offloaded += 1;
                let (before, payload) = self.packer.offload(&self.record);
                if let Some(chunk) = before
                    && self.emit(chunk).is_break()
                {
                    return ControlFlow::Break(());
                }
                self.emit(payload)
            }
            Err(too_big) => {
                let (length, excerpt) = origin.extent();
                self.reject_region(length, excerpt, line, offset, too_big.to_string());
                ControlFlow::Continue(())
            }
        }
    }

    /// Counts the fields a record lacks. Returns the reason to reject it
    /// when it has none of them and such records are rejected.
    fn note_fields(&mut self, found: impl Iterator<Item = bool>) -> Option<String> {
        let missing = &mut self.report.stats.field_missing;
        let mut any = false;
        for (i, hit) in found.enumerate() {
            if let Some(m) = missing.get_mut(i)
                && !hit
            {
                *m += 1;
            }
            any |= hit;
        }
        let projection = &self.settings.projection;
        (!any && projection.empty_records() == EmptyRecords::Reject).then(|| {
            format!(
                "none of the fields {} is present (a mistyped field list? RELAY_EMPTY_RECORDS=send sends such records as {{}})",
                projection.names().join(", ")
            )
        })
    }

    /// Why a record is rejected, if it is: the first rule it breaks (counted
    /// per field and rule), or else having none of the fields.
    fn verdict(&mut self, broken: Result<(), Violation>, empty: Option<String>) -> Option<String> {
        match broken {
            Ok(()) => empty,
            Err(v) => {
                if let Some(counts) = self.report.stats.schema_rejects.get_mut(v.slot) {
                    counts[v.broken.rule()] += 1;
                }
                Some(v.to_string())
            }
        }
    }

    /// A record the reader validated, with its wanted values' spans.
    fn record(
        &mut self,
        bytes: &[u8],
        fields: &[Option<Span>],
        line: u64,
        offset: u64,
    ) -> ControlFlow<()> {
        self.report.stats.records_in += 1;
        let empty = self.note_fields(fields.iter().map(Option::is_some));
        let values = fields
            .iter()
            .map(|s| s.map(|(a, b)| &bytes[a as usize..b as usize]));
        let broken = self.settings.projection.check_values(values);
        if let Some(reason) = self.verdict(broken, empty) {
            self.reject_record(bytes, line, offset, reason);
            return ControlFlow::Continue(());
        }
        self.record.clear();
        self.settings
            .projection
            .write(bytes, fields, &mut self.record);
        self.pack(Origin::Bytes(bytes), line, offset)
    }

    /// In wrapper mode each top-level value holds the records at a pointer.
    fn wrapper(&mut self, pointer: &str, bytes: &[u8], line: u64, offset: u64) -> ControlFlow<()> {
        let records = match records_at(bytes, pointer) {
            Ok(records) => records,
            Err(reason) => {
                self.reject_record(bytes, line, offset, reason);
                return ControlFlow::Continue(());
            }
        };
        for r in records {
            let inner = r.get().as_bytes();
            self.record.clear();
            match self
                .settings
                .projection
                .project_found(inner, &mut self.record)
            {
                Ok(found) => {
                    self.report.stats.records_in += 1;
                    match self.note_fields(found.into_iter()) {
                        Some(reason) => self.reject_record(inner, line, offset, reason),
                        None => self.pack(Origin::Bytes(inner), line, offset)?,
                    }
                }
                Err(e) => {
                    let reason = match e {
                        RecordError::NotAnObject => {
                            "a record in the wrapper is not a JSON object".to_owned()
                        }
                        RecordError::Invalid(why) => format!("invalid JSON: {why}"),
                        RecordError::Rule { violation, found } => {
                            self.report.stats.records_in += 1;
                            let empty = self.note_fields(found.into_iter());
                            self.verdict(Err(violation), empty).unwrap_or_default()
                        }
                    };
                    self.reject_record(inner, line, offset, reason);
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// The elements of the array at `pointer` (RFC 6901) inside a wrapper value.
fn records_at<'a>(bytes: &'a [u8], pointer: &str) -> Result<Vec<&'a RawValue>, String> {
    let mut value: &RawValue =
        serde_json::from_slice(bytes).map_err(|e| format!("the wrapper is not valid JSON: {e}"))?;
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        let text = value.get();
        let next = if text.starts_with('{') {
            let map: std::collections::HashMap<String, &RawValue> =
                serde_json::from_str(text).map_err(|e| e.to_string())?;
            map.get(&seg).copied()
        } else if text.starts_with('[') {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| e.to_string())?;
            seg.parse::<usize>()
                .ok()
                .and_then(|i| items.get(i).copied())
        } else {
            None
        };
        value = next.ok_or_else(|| format!("the wrapper has nothing at {pointer}"))?;
    }
    if !value.get().starts_with('[') {
        return Err(format!("the value at {pointer} is not an array"));
    }
    serde_json::from_str(value.get()).map_err(|e| e.to_string())
}

/// Runs the pipeline over one raw object. `on_chunk` receives every chunk in
/// order and may stop the run (for example when a lease is lost).
pub fn run(
    src: impl Read + Send,
    settings: &Settings,
    on_chunk: impl FnMut(Chunk) -> ControlFlow<()>,
) -> Result<Report, Unreadable> {
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut src = Source {
        inner: BufReader::with_capacity(128 * 1024, src),
        failed: failed.clone(),
    };
    let head = src.fill_buf().map_err(Unreadable::Io)?;
    let zstd = head.starts_with(&ZSTD_MAGIC);
    let limit = settings.max_decompressed_bytes;
    if !zstd {
        let plain = Limited {
            inner: src,
            read: 0,
            limit,
        };
        return parse(plain, settings, on_chunk, &failed, false);
    }
    let decoder = zstd::stream::read::Decoder::with_buffer(src).map_err(Unreadable::Corrupt)?;
    let decoded = Limited {
        inner: decoder,
        read: 0,
        limit,
    };
    if !settings.decode_thread {
        return parse(decoded, settings, on_chunk, &failed, true);
    }
    // Decoding and parsing cost about the same: on two cores they overlap,
    // with at most a few buffers between them.
    let (tx, rx) = std::sync::mpsc::sync_channel(HANDOFF_BUFFERS);
    let (back_tx, back_rx) = std::sync::mpsc::sync_channel(HANDOFF_BUFFERS + 1);
    std::thread::scope(|scope| {
        scope.spawn(move || decode_ahead(decoded, tx, back_rx));
        let handoff = Handoff {
            rx,
            back: back_tx,
            cur: Vec::new(),
            pos: 0,
        };
        // Dropping the hand-off on return (a stop, an error) ends the
        // decoding thread at its next buffer.
        parse(handoff, settings, on_chunk, &failed, true)
    })
}

/// Frames, projects and packs the decoded bytes of one object.
fn parse(
    decoded: impl Read,
    settings: &Settings,
    on_chunk: impl FnMut(Chunk) -> ControlFlow<()>,
    failed: &std::sync::atomic::AtomicBool,
    zstd: bool,
) -> Result<Report, Unreadable> {
    let limit = settings.max_decompressed_bytes;
    // In wrapper mode the top-level values are wrappers, projected later.
    let projection = settings
        .records_pointer
        .is_none()
        .then(|| (settings.projection.root(), settings.projection.slots()));
    let mut reader = Reader::new(decoded, settings.max_record_bytes, projection);
    if settings.max_large_record_bytes > settings.max_record_bytes as u64 {
        reader = reader.with_large(settings.max_large_record_bytes);
    }
    let mut run = Run {
        settings,
        packer: Packer::new(settings.max_body_bytes, settings.format),
        report: Report {
            stats: Stats {
                field_missing: vec![0; settings.projection.slots()],
                schema_rejects: if settings.projection.has_rules() {
                    vec![[0; RULES.len()]; settings.projection.slots()]
                } else {
                    Vec::new()
                },
                ..Stats::default()
            },
            ..Report::default()
        },
        record: Vec::with_capacity(4096),
        moved: 0,
        on_chunk,
    };
    let classify = |e: io::Error| {
        if e.get_ref().is_some_and(|inner| inner.is::<LimitExceeded>()) {
            Unreadable::TooLarge { limit }
        } else if failed.load(std::sync::atomic::Ordering::Relaxed) {
            Unreadable::Io(e)
        } else if zstd {
            Unreadable::Corrupt(e)
        } else {
            Unreadable::Io(e)
        }
    };
    let mut stopped = false;
    while let Some(item) = reader.next_item().map_err(classify)? {
        let flow = match item {
            Item::Record {
                bytes,
                line,
                offset,
                fields,
            } => match &settings.records_pointer {
                Some(p) => run.wrapper(p, bytes, line, offset),
                None => run.record(bytes, fields, line, offset),
            },
            Item::Reject(r) => {
                run.reject(r);
                ControlFlow::Continue(())
            }
            Item::Large(l) => run.large(l).map_err(|e| {
                Unreadable::Io(io::Error::other(format!(
                    "a spool of a record too large for memory failed: {e}"
                )))
            })?,
        };
        if flow.is_break() {
            stopped = true;
            break;
        }
    }
    let (acct, read) = (reader.accounting(), reader.bytes_read());
    run.report.stats.set_accounting(acct, run.moved, read);
    run.report.stats.preamble_lines = reader.preamble_lines();
    if stopped {
        return Ok(run.report);
    }
    if let Some(chunk) = run.packer.take()
        && run.emit(chunk).is_break()
    {
        return Ok(run.report);
    }
    run.report.complete = true;
    Ok(run.report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::project::{Missing, parse_fields};

    fn settings(fields: &str) -> Settings {
        Settings {
            projection: Projection::new(&parse_fields(fields).unwrap(), Missing::Omit),
            format: BodyFormat::Ndjson,
            max_body_bytes: 64,
            max_record_bytes: 1 << 20,
            max_decompressed_bytes: 1 << 30,
            records_pointer: None,
            large_records: crate::pipeline::LargeRecords::Reject,
            max_large_record_bytes: 0,
            decode_thread: true,
        }
    }

    #[test]
    fn a_record_with_none_of_the_fields_is_rejected_unless_asked_to_send_it() {
        let input = b"{\"id\":1,\"u\":{\"n\":2}}\n{\"x\":3}\n{\"id\":4}\n";
        let (bodies, report) = collect(input, &settings("id,n=u.n")).unwrap();
        assert_eq!(bodies.concat(), "{\"id\":1,\"n\":2}\n{\"id\":4}");
        let s = &report.stats;
        assert_eq!((s.records_in, s.records_out, s.rejected), (3, 2, 1));
        assert_eq!(s.field_missing, [1, 2], "id lacks once, n twice");
        assert!(
            report.rejects[0]
                .reason
                .contains("none of the fields id, n is present"),
            "{:?}",
            report.rejects
        );
        assert_eq!((report.rejects[0].line, report.rejects[0].length), (2, 7));
        assert!(s.accounted(), "{s:?}");

        let mut sending = settings("id,n=u.n");
        sending.projection = sending.projection.with_empty(EmptyRecords::Send);
        let (bodies, report) = collect(input, &sending).unwrap();
        assert!(bodies.concat().contains("\n{}\n"), "{bodies:?}");
        assert_eq!(report.stats.rejected, 0);
        assert!(report.stats.accounted());
    }

    #[test]
    fn wrapped_records_with_none_of_the_fields_are_rejected_too() {
        let mut s = settings("id");
        s.records_pointer = Some("/r".into());
        let input = b"{\"r\":[{\"id\":1},{\"y\":2}]}\n";
        let (bodies, report) = collect(input, &s).unwrap();
        assert_eq!(bodies.concat(), "{\"id\":1}");
        assert_eq!(
            (report.stats.rejected, report.stats.field_missing[0]),
            (1, 1)
        );
        assert!(report.stats.accounted(), "{:?}", report.stats);
    }

    /// Every chunk's body (a streamed payload read whole), and whether it
    /// is a payload.
    fn collect_payloads(input: &[u8], s: &Settings) -> (Vec<(Vec<u8>, bool)>, Report) {
        let mut out = Vec::new();
        let report = run(input, s, |mut c| {
            let mut body = Vec::new();
            c.write_body(&mut body).unwrap();
            if let Some(size) = c.payload_size {
                assert_eq!(size, body.len() as u64, "the announced size");
            }
            out.push((body, c.payload_size.is_some()));
            ControlFlow::Continue(())
        })
        .unwrap();
        (out, report)
    }

    /// Records over the window, between small ones: projected from their
    /// spools to the same bytes as the window gives them, offloaded when
    /// too large for a message, packed like any other when not, and their
    /// bytes counted as records.
    #[test]
    fn records_over_the_window_are_streamed_to_the_bytes_the_window_gives() {
        let big = |i: usize, n: usize| {
            format!(
                "{{\"skip\":\"{}\",\"id\":{i},\"blob\":\"{}\\u00e9\u{FFFE}\"}}\n",
                "s".repeat(n),
                "é".repeat(n)
            )
        };
        let mut text = String::from("# junk\n{\"id\":0}\n");
        text.push_str(&big(1, 3_000));
        text.push_str("{\"id\":2}\n");
        text.push_str(&big(3, 40)); // over the window, but small projected
        text.push_str(&big(4, 200_000));
        text.push_str("{\"id\":5,\"blob\":1}\n");
        let window = Settings {
            max_record_bytes: 1 << 20,
            max_body_bytes: 1024,
            large_records: LargeRecords::Offload,
            ..settings("id,blob")
        };
        let streamed = Settings {
            max_record_bytes: 100,
            max_large_record_bytes: 1 << 20,
            ..window.clone()
        };
        let (want, want_report) = collect_payloads(text.as_bytes(), &window);
        let (got, report) = collect_payloads(text.as_bytes(), &streamed);
        assert_eq!(got, want);
        assert_eq!(report.stats, want_report.stats);
        assert_eq!(want.iter().filter(|(_, p)| *p).count(), 2, "two payloads");
        assert!(report.stats.accounted(), "{:?}", report.stats);
        assert_eq!((report.stats.records_out, report.stats.rejected), (6, 0));

        // Rejecting what no message holds: the two whose projection is too
        // large, with their whole raw extent; the one over the window whose
        // projection fits is sent.
        let rejecting = Settings {
            large_records: LargeRecords::Reject,
            ..streamed.clone()
        };
        let (got, report) = collect_payloads(text.as_bytes(), &rejecting);
        assert!(got.iter().all(|(_, payload)| !payload));
        assert_eq!((report.stats.records_out, report.stats.rejected), (4, 2));
        for r in &report.rejects {
            assert!(
                r.reason.contains("a message body can hold at most"),
                "{r:?}"
            );
        }
        assert_eq!(report.rejects[1].length as usize, big(4, 200_000).len() - 1);
        assert!(report.stats.accounted(), "{:?}", report.stats);

        // Over the largest record read: rejected with the limit.
        let tight = Settings {
            max_large_record_bytes: 200_000,
            ..streamed
        };
        let (got, report) = collect_payloads(text.as_bytes(), &tight);
        assert_eq!(report.stats.rejected, 1);
        let r = &report.rejects[0];
        assert!(
            r.reason.contains("RELAY_MAX_RECORD_BYTES, 200000 bytes"),
            "{r:?}"
        );
        assert_eq!(
            r.length as usize,
            big(4, 200_000).len() - 1,
            "the whole record"
        );
        assert_eq!(report.stats.records_out, 5, "only that record is missing");
        assert!(got.iter().all(|(b, _)| !b.starts_with(b"{\"id\":4")));
        assert!(report.stats.accounted(), "{:?}", report.stats);
    }

    /// A streamed payload holds up the reader until it is stored: the
    /// next large record is spooled only after the last one is dropped, so
    /// /tmp holds at most two, however far the sender lags.
    #[test]
    fn the_next_large_record_waits_until_the_last_is_stored() {
        let s = Settings {
            max_record_bytes: 64,
            max_large_record_bytes: 1 << 20,
            max_body_bytes: 100,
            large_records: LargeRecords::Offload,
            ..settings("id,p")
        };
        let pad = "x".repeat(500);
        let text: String = (0..4)
            .map(|i| format!("{{\"id\":{i},\"p\":\"{pad}\"}}\n"))
            .collect();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<Chunk>();
        let slow = {
            let log = log.clone();
            std::thread::spawn(move || {
                for c in rx {
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    log.lock().unwrap().push(format!("stored {}", c.index));
                }
            })
        };
        let report = run(text.as_bytes(), &s, |c| {
            log.lock().unwrap().push(format!("emitted {}", c.index));
            tx.send(c).unwrap();
            ControlFlow::Continue(())
        })
        .unwrap();
        drop(tx);
        slow.join().unwrap();
        assert_eq!(report.stats.offloaded, 4);
        let want: Vec<String> = (0..4)
            .flat_map(|i| [format!("emitted {i}"), format!("stored {i}")])
            .collect();
        assert_eq!(*log.lock().unwrap(), want);
    }

    /// The documented difference: past the window, a record with a line
    /// that starts with `{` at the records' indentation is taken for one
    /// cut short there. It is a reject that says so, never lost silently;
    /// in the window the same record is sent.
    #[test]
    fn past_the_window_a_brace_at_the_records_indentation_ends_the_record() {
        let text = format!(
            "{{\"id\":1,\"pad\":\"{}\",\"n\":\n{{\"x\":1}}}}\n{{\"id\":2}}\n",
            "p".repeat(200)
        );
        let window = Settings {
            max_body_bytes: 4096,
            ..settings("id")
        };
        let streamed = Settings {
            max_record_bytes: 64,
            max_large_record_bytes: 1 << 20,
            ..window.clone()
        };
        let (sent, report) = collect(text.as_bytes(), &window).unwrap();
        assert_eq!(sent.concat(), "{\"id\":1}\n{\"id\":2}");
        assert_eq!(report.stats.rejected, 0);
        let (sent, report) = collect(text.as_bytes(), &streamed).unwrap();
        assert!(sent.concat().ends_with("{\"id\":2}"), "{sent:?}");
        assert!(report.stats.rejected >= 1);
        assert!(
            report.rejects[0].reason.contains("incomplete"),
            "{:?}",
            report.rejects
        );
        assert!(report.stats.accounted(), "{:?}", report.stats);
    }

    /// A record over the window that is invalid at its very end, or cut
    /// off by the end of the file, is a reject that says why.
    #[test]
    fn a_bad_record_over_the_window_is_rejected_with_its_reason() {
        let s = Settings {
            max_record_bytes: 64,
            max_large_record_bytes: 1 << 20,
            large_records: LargeRecords::Offload,
            ..settings("id")
        };
        let pad = "x".repeat(500);
        let text = format!(
            "{{\"id\":1,\"p\":\"{pad}\",\"n\":NaN}}\n{{\"id\":2}}\n{{\"id\":3,\"p\":\"{pad}"
        );
        let (got, report) = collect_payloads(text.as_bytes(), &s);
        assert_eq!(got, [(b"{\"id\":2}".to_vec(), false)]);
        let reasons: Vec<&str> = report.rejects.iter().map(|r| r.reason.as_str()).collect();
        assert!(
            reasons[0]
                .starts_with("invalid JSON: expected a JSON value (at byte 519 of the record)"),
            "{reasons:?}"
        );
        assert!(reasons[1].contains("truncated"), "{reasons:?}");
        assert!(report.stats.accounted(), "{:?}", report.stats);
    }

    fn collect(input: &[u8], s: &Settings) -> Result<(Vec<String>, Report), Unreadable> {
        let mut bodies = Vec::new();
        let report = run(input, s, |c| {
            bodies.push(String::from_utf8(c.body).unwrap());
            ControlFlow::Continue(())
        })?;
        Ok((bodies, report))
    }

    /// The benchmark's file and fields (`benches/pipeline.rs`), smaller:
    /// every record comes out as serde_json's reference projection writes
    /// it, in order, with the decoding thread and without.
    #[test]
    fn the_benchmark_file_comes_out_as_the_reference_writes_it() {
        let (text, records) = relay_shared::sample::SampleGen::new(7).file(3 << 20);
        let s = Settings {
            max_body_bytes: 256 * 1024 - 200,
            ..settings(crate::testing::SAMPLE_FIELDS)
        };
        let want = crate::testing::sample_reference(7, &text, &s.projection);
        assert_eq!(want.len(), records);
        let compressed = zstd::encode_all(text.as_bytes(), 3).unwrap();
        for decode_thread in [false, true] {
            let s = Settings {
                decode_thread,
                ..s.clone()
            };
            let (bodies, report) = collect(&compressed, &s).unwrap();
            assert_eq!(report.stats.rejected, 0);
            let got: Vec<&[u8]> = bodies
                .iter()
                .flat_map(|b| b.as_bytes().split(|&c| c == b'\n'))
                .collect();
            assert_eq!(got.len(), want.len(), "decode thread: {decode_thread}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    String::from_utf8_lossy(g),
                    String::from_utf8_lossy(w),
                    "record {i}, decode thread: {decode_thread}"
                );
            }
        }
    }

    /// Larger than the hand-off's buffers many times over, with rejects
    /// among the records: the decoding thread changes nothing.
    #[test]
    fn decoding_ahead_gives_the_chunks_of_the_plain_text() {
        let text: String = (0..150_000)
            .map(|i| match i % 997 {
                0 => "not json\n".to_owned(),
                _ => format!("{{\"a\":{i},\"b\":\"{}\"}}\n", "é".repeat(i % 7)),
            })
            .collect();
        assert!(text.len() > 8 * HANDOFF_BYTES);
        let s = Settings {
            max_body_bytes: 4096,
            ..settings("a")
        };
        let packed = zstd::encode_all(text.as_bytes(), 3).unwrap();
        let (plain, plain_report) = collect(text.as_bytes(), &s).unwrap();
        let (decoded, decoded_report) = collect(&packed, &s).unwrap();
        assert_eq!(plain, decoded);
        assert_eq!(plain_report, decoded_report);
        assert!(decoded_report.complete && decoded_report.stats.accounted());
    }

    /// A stop mid-object returns at once: the decoding thread, blocked on
    /// a full hand-off, ends when the parser hangs up.
    #[test]
    fn a_stop_mid_object_ends_the_decoding_thread() {
        let text = b"{\"a\":1}\n".repeat(2_000_000);
        let packed = zstd::encode_all(&text[..], 3).unwrap();
        let mut chunks = 0;
        let report = run(&packed[..], &settings("a"), |_| {
            chunks += 1;
            ControlFlow::Break(())
        })
        .unwrap();
        assert_eq!(chunks, 1);
        assert!(!report.complete);
        assert!(report.stats.bytes_decompressed < text.len() as u64);
    }

    #[test]
    fn zstd_and_plain_give_the_same_chunks() {
        let text =
            "# c\n{\"a\":1,\"b\":\"x\"}\nbad\n{\"a\":2}\n{\"a\":\"three\",\"z\":[1]}\n".repeat(5);
        let s = settings("a");
        let plain = collect(text.as_bytes(), &s).unwrap();
        let packed = zstd::encode_all(text.as_bytes(), 3).unwrap();
        let zst = collect(&packed, &s).unwrap();
        assert_eq!(plain.0, zst.0);
        assert_eq!(plain.1.stats.records_out, 15);
        assert!(plain.0.iter().all(|b| b.len() <= 64));
        // "# c" after the first copy is not preamble any more: it is garbage.
        assert_eq!(zst.1.stats.rejected, 5 + 4);
        assert!(zst.1.complete);
    }

    #[test]
    fn oversized_and_invalid_records_are_reported() {
        let long = format!("{{\"a\":\"{}\"}}", "y".repeat(100));
        let text = format!("{{\"a\":1}}\n{long}\n{{\"a\":[1,,]}}\n{{\"a\":2}}\n");
        let (bodies, report) = collect(text.as_bytes(), &settings("a")).unwrap();
        assert_eq!(bodies, ["{\"a\":1}\n{\"a\":2}"]);
        assert_eq!(report.stats.rejected, 2);
        assert!(
            report.rejects[0].reason.contains("at most 64"),
            "{:?}",
            report.rejects[0]
        );
        assert_eq!(report.rejects[0].line, 2);
        assert!(report.rejects[1].reason.starts_with("invalid JSON"));
    }

    /// The first `n` bytes of `data`, then a connection reset.
    struct Breaks<'a> {
        data: &'a [u8],
        n: usize,
    }

    impl Read for Breaks<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.n == 0 {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
            }
            let k = buf.len().min(self.n).min(self.data.len());
            buf[..k].copy_from_slice(&self.data[..k]);
            self.data = &self.data[k..];
            self.n -= k;
            Ok(k)
        }
    }

    #[test]
    fn a_broken_download_is_a_read_failure_not_corruption() {
        let s = settings("a");
        let text = b"{\"a\":1}\n".repeat(50_000);
        let packed = zstd::encode_all(&text[..], 3).unwrap();
        for input in [&packed[..], &text[..]] {
            let broken = Breaks {
                data: input,
                n: input.len() / 2,
            };
            let got = run(broken, &s, |_| ControlFlow::Continue(()));
            assert!(
                matches!(&got, Err(Unreadable::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset),
                "{got:?}"
            );
        }
    }

    #[test]
    fn unreadable_objects_are_classified() {
        let s = settings("a");
        let mut packed = zstd::encode_all(&b"{\"a\":1}\n".repeat(10_000)[..], 3).unwrap();
        packed.truncate(packed.len() / 2);
        assert!(matches!(collect(&packed, &s), Err(Unreadable::Corrupt(_))));

        // A bomb: 64 MiB of zeros compresses to a few KiB.
        let bomb = zstd::encode_all(std::io::repeat(0).take(64 << 20), 19).unwrap();
        assert!(bomb.len() < 100_000);
        let small = Settings {
            max_decompressed_bytes: 1 << 20,
            ..s.clone()
        };
        assert!(matches!(
            collect(&bomb, &small),
            Err(Unreadable::TooLarge { limit: 1048576 })
        ));
    }

    #[test]
    fn wrapper_pointer_mode() {
        let text = "# x\n{\"meta\":{\"n\":2},\"data\":{\"records\":[{\"a\":1},7,{\"a\":2}]}}\n{\"data\":{}}\n";
        let s = Settings {
            records_pointer: Some("/data/records".into()),
            large_records: crate::pipeline::LargeRecords::Reject,
            ..settings("a")
        };
        let (bodies, report) = collect(text.as_bytes(), &s).unwrap();
        assert_eq!(bodies, ["{\"a\":1}\n{\"a\":2}"]);
        let reasons: Vec<_> = report.rejects.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "a record in the wrapper is not a JSON object",
                "the wrapper has nothing at /data/records"
            ]
        );
    }

    #[test]
    fn rules_hold_inside_wrappers_and_rejects_are_counted_per_field_and_rule() {
        let text = "{\"data\":[{\"a\":1,\"b\":\"x\"},{\"a\":\"1\"},{\"b\":\"y\"},{\"a\":2}]}\n";
        let s = Settings {
            records_pointer: Some("/data".into()),
            ..settings("a:int!,b:string")
        };
        let (bodies, report) = collect(text.as_bytes(), &s).unwrap();
        assert_eq!(bodies, ["{\"a\":1,\"b\":\"x\"}\n{\"a\":2}"]);
        let reasons: Vec<_> = report.rejects.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "field `a`: expected int, found string",
                "field `a`: required, but missing"
            ]
        );
        let [required, types, _] = [0, 1, 2];
        let a = report.stats.schema_rejects[0];
        assert_eq!((a[required], a[types]), (1, 1));
        assert_eq!(report.stats.schema_rejects[1], [0, 0, 0]);
        assert_eq!(report.stats.records_in, 4);
        assert_eq!(report.stats.field_missing, [1, 2]);
        assert!(report.stats.accounted());
    }

    #[test]
    fn stopping_early_is_reported_as_incomplete() {
        let text = "{\"a\":1}\n".repeat(100);
        let mut seen = 0;
        let report = run(text.as_bytes(), &settings("a"), |_| {
            seen += 1;
            if seen == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert!(!report.complete);
        assert_eq!(seen, 2);
    }
}
