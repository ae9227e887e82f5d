//! The record loop: framed records projected, checked against the field
//! rules, packed into chunks, or rejected with their byte range and reason.

use std::io::{self, Read};
use std::ops::ControlFlow;

use serde_json::value::RawValue;

use crate::pipeline::body::{Chunk, Packer};
use crate::pipeline::json::Span;
use crate::pipeline::limit::LimitExceeded;
use crate::pipeline::project::{EmptyRecords, RecordError};
use crate::pipeline::reader::{Item, Large, Reader, Reject, excerpt};
use crate::pipeline::report::{MAX_REPORTED_REJECTS, Report, Stats, Unreadable};
use crate::pipeline::resume::{Position, position};
use crate::pipeline::rules::{RULES, Violation};
use crate::pipeline::settings::{LargeRecords, Settings};
use crate::pipeline::source::SourceFailure;

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
    /// Into `settings.resume.earlier`, for [`crate::pipeline::Resume::is_earlier`].
    cursor: usize,
    on_chunk: F,
}

impl<'a, F: FnMut(Chunk) -> ControlFlow<()>> Run<'a, F> {
    fn new(settings: &'a Settings, on_chunk: F) -> Self {
        let slots = settings.projection.slots();
        Run {
            settings,
            packer: Packer::new(settings.max_body_bytes, settings.format)
                .numbered_from(settings.resume.first_chunk),
            report: Report {
                stats: Stats {
                    field_missing: vec![0; slots],
                    schema_rejects: if settings.projection.has_rules() {
                        vec![[0; RULES.len()]; slots]
                    } else {
                        Vec::new()
                    },
                    ..Stats::default()
                },
                ..Report::default()
            },
            record: Vec::with_capacity(4096),
            moved: 0,
            cursor: 0,
            on_chunk,
        }
    }

    /// Whether the record at `pos` was handled by an earlier run under
    /// other settings: if so it is counted and skipped.
    fn earlier(&mut self, pos: Position) -> bool {
        let earlier = self.settings.resume.is_earlier(pos, &mut self.cursor);
        self.report.stats.earlier += u64::from(earlier);
        earlier
    }

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
    fn large(&mut self, l: Large, pos: Position) -> io::Result<ControlFlow<()>> {
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
            return Ok(self.pack(origin, l.line, l.offset, pos));
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
        let (before, payload) = self.packer.offload_body(body, pos);
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
    fn pack(
        &mut self,
        origin: Origin<'_>,
        line: u64,
        offset: u64,
        pos: Position,
    ) -> ControlFlow<()> {
        match self.packer.push(&self.record, pos) {
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
                let (before, payload) = self.packer.offload(&self.record, pos);
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
        pos: Position,
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
        self.pack(Origin::Bytes(bytes), line, offset, pos)
    }

    /// In wrapper mode each top-level value holds the records at a pointer.
    /// The wrapper is top-level value `item`; its records' positions count
    /// inside it.
    fn wrapper(
        &mut self,
        pointer: &str,
        bytes: &[u8],
        at: (u64, u64),
        item: u64,
    ) -> ControlFlow<()> {
        let (line, offset) = at;
        let records = match records_at(bytes, pointer) {
            Ok(records) => records,
            Err(reason) => {
                if !self.earlier(position(item, 0)) {
                    self.reject_record(bytes, line, offset, reason);
                }
                return ControlFlow::Continue(());
            }
        };
        for (i, r) in records.into_iter().enumerate() {
            let pos = position(item, i as u64);
            if self.earlier(pos) {
                continue;
            }
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
                        None => self.pack(Origin::Bytes(inner), line, offset, pos)?,
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

/// Frames, projects and packs the decoded bytes of one object.
pub(super) fn parse(
    decoded: impl Read,
    settings: &Settings,
    on_chunk: impl FnMut(Chunk) -> ControlFlow<()>,
    failed: &SourceFailure,
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
    let mut run = Run::new(settings, on_chunk);
    let classify = |e: io::Error| {
        if e.get_ref().is_some_and(|inner| inner.is::<LimitExceeded>()) {
            Unreadable::TooLarge { limit }
        } else if failed.mismatched() {
            Unreadable::Checksum(e)
        } else if failed.broke() {
            Unreadable::Io(e)
        } else if zstd {
            Unreadable::Corrupt(e)
        } else {
            Unreadable::Io(e)
        }
    };
    let mut stopped = false;
    let mut index = 0u64;
    while let Some(item) = reader.next_item().map_err(classify)? {
        let (n, pos) = (index, position(index, 0));
        index += 1;
        let wrapped = settings.records_pointer.as_deref();
        // A wrapper's records have positions of their own, checked inside.
        let wrapper = wrapped.is_some() && matches!(item, Item::Record { .. });
        if !wrapper && run.earlier(pos) {
            continue;
        }
        let flow = match item {
            Item::Record {
                bytes,
                line,
                offset,
                fields,
            } => match wrapped {
                Some(p) => run.wrapper(p, bytes, (line, offset), n),
                None => run.record(bytes, fields, line, offset, pos),
            },
            Item::Reject(r) => {
                run.reject(r);
                ControlFlow::Continue(())
            }
            Item::Large(l) => run.large(l, pos).map_err(|e| {
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
