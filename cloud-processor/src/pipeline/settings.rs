//! Everything that shapes one object's output: two runs with equal
//! settings over the same object produce the same chunks.

use crate::pipeline::body::BodyFormat;
use crate::pipeline::project::Projection;
use crate::pipeline::resume::Resume;

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
    /// Records handled by an earlier run under other settings.
    pub resume: Resume,
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
