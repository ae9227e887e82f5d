//! What the reader hands out: records, rejected regions with their reason,
//! records too large for the window, and where every byte went.

use serde::Serialize;

use crate::pipeline::json::Span;
use crate::pipeline::stream::Captured;

pub(super) const EXCERPT_BYTES: usize = 120;

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

/// The first bytes of a rejected region, lossily decoded, for reports.
pub fn excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(EXCERPT_BYTES)];
    String::from_utf8_lossy(cut).into_owned()
}
