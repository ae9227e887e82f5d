//! The one object an attempt is about, as an event names it.

/// One object to process: its bucket and key, and what the event that
/// named it said of its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    /// Decoded: the key as S3 stores it.
    pub key: String,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    pub size: Option<u64>,
}
