//! What a run over one object found: its counts, every byte accounted
//! for, its rejects, or why it could not be read at all.

use std::io;

use serde::Serialize;

use crate::pipeline::reader::{Accounting, Reject};
use crate::pipeline::rules::RULES;

/// A report with every reject of a garbage file would be as big as the file:
/// past this many, rejects are counted (exactly) but not listed.
pub const MAX_REPORTED_REJECTS: usize = 10_000;

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
    /// Records (and rejected regions) skipped because a run under earlier
    /// settings handled them: the object was resumed after a settings
    /// change. Their bytes are still counted above.
    #[serde(skip_serializing_if = "is_zero")]
    pub earlier: u64,
    /// Per configured field, in order: records read that lack it.
    pub field_missing: Vec<u64>,
    /// Per configured field, in order, and per rule in [`RULES`] order:
    /// records rejected because the field broke that rule (the first
    /// broken rule of a record counts). Empty when no field has a rule.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schema_rejects: Vec<[u64; RULES.len()]>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Stats {
    /// Whether the byte accounting adds up.
    pub fn accounted(&self) -> bool {
        self.preamble_bytes + self.record_bytes + self.rejected_bytes + self.separator_bytes
            == self.bytes_decompressed
    }

    pub(super) fn set_accounting(&mut self, acct: Accounting, moved: u64, read: u64) {
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
    /// The bytes read are not what S3 stored (their CRC32C differs):
    /// corrupted on the way or in storage; read again, it may pass.
    #[error("{0}")]
    Checksum(io::Error),
}
