//! A file due for upload, what is stored with it, and how its upload ended.

use std::collections::HashMap;
use std::path::PathBuf;

use relay_shared::keys::KeyScheme;
use relay_shared::meta;
use relay_shared::store::PutOptions;
use relay_shared::trace::TraceContext;
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

use crate::tracker::FileStat;

/// S3 caps a multipart upload at this many parts.
pub const MAX_PARTS: usize = 10_000;

/// Metadata stored with every raw object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub original_name: String,
    pub original_size: u64,
    pub source_id: String,
    /// xxh3-128 of the uncompressed bytes (set by the upload once known).
    pub content_hash: u128,
    /// A canary (a heartbeat), not data.
    pub canary: bool,
    /// The file's last write (its mtime), in ms since the Unix epoch.
    pub written_ms: u64,
}

impl ObjectMeta {
    /// The file's trace: derived from its key and content hash, so every
    /// attempt at the same file (across restarts too) continues one trace,
    /// and the same bytes under another key (another host, another name)
    /// start another.
    pub fn trace(&self, key: &str) -> TraceContext {
        let seed = format!("{key}\0{}", meta::content_hash_hex(self.content_hash));
        let trace = xxh3_128(seed.as_bytes()).max(1);
        let span = xxh3_64(format!("{seed}\0upload").as_bytes()).max(1);
        TraceContext {
            trace_id: trace,
            parent_id: span,
            sampled: true,
        }
    }
}

/// How the object at `key` is stored: the content type and encoding of a
/// raw object, the file's name, size and last write, the source, the
/// content hash, and the file's trace.
pub fn put_options(key: &str, m: &ObjectMeta) -> PutOptions {
    let mut metadata = HashMap::from([
        (
            meta::ORIGINAL_NAME.to_owned(),
            meta::encode_header_value(&m.original_name),
        ),
        (meta::ORIGINAL_SIZE.to_owned(), m.original_size.to_string()),
        (meta::SOURCE_ID.to_owned(), m.source_id.clone()),
        (
            meta::CONTENT_HASH.to_owned(),
            meta::content_hash_hex(m.content_hash),
        ),
        (meta::WRITTEN_MS.to_owned(), m.written_ms.to_string()),
        (meta::TRACEPARENT.to_owned(), m.trace(key).to_string()),
    ]);
    if m.canary {
        metadata.insert(meta::CANARY.to_owned(), "1".to_owned());
    }
    PutOptions {
        content_type: Some(meta::RAW_CONTENT_TYPE.to_owned()),
        content_encoding: Some(meta::RAW_CONTENT_ENCODING.to_owned()),
        metadata,
    }
}

/// A file that is due for upload.
#[derive(Debug, Clone)]
pub struct Job {
    pub path: PathBuf,
    /// Path relative to the watch directory (the ledger's key).
    pub rel: String,
    pub key: String,
    /// Where the file goes if `key` holds other bytes (see [`conflict_tag`]).
    pub keys: KeyScheme,
    pub stat: FileStat,
    /// Where the file was judged finished by a read lease: the right to
    /// probe it again on the descriptor it is read from.
    pub lease: Option<crate::lease::Leases>,
    pub meta: ObjectMeta,
}

/// How an upload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// S3 stored it now.
    Uploaded {
        compressed_bytes: u64,
        parts: u32,
        /// The xxh3-128 of the file's bytes, as its metadata has it.
        content_hash: u128,
    },
    /// S3 already had the key (412) with exactly this file's bytes (its
    /// content hash and size match): an earlier run or a peer agent uploaded it.
    Duplicate { content_hash: u128 },
    /// S3 had the key with other bytes: the name was used again. This file
    /// is stored (now, or already by an earlier attempt) under `key`, next
    /// to the first.
    Conflict {
        key: String,
        compressed_bytes: u64,
        content_hash: u128,
    },
    /// S3 has the key, but its object carries no content hash (an older
    /// agent stored it), so whether it holds these bytes is unknown. The
    /// file is kept on disk.
    Unverified,
    /// The file disappeared before it was stored. `in_s3`: its key is in
    /// S3 (a peer agent sharing the directory stored it, then removed it);
    /// otherwise someone removed it before any agent stored it.
    Gone { in_s3: bool },
    /// The file changed after it was judged finished; it goes back to settling.
    Changed,
    /// A writer opened the file again after it was judged finished (its
    /// lease probe, on the descriptor it was to be read from, found one).
    Open,
    /// Not a regular file at the moment it was opened (a symlink, FIFO,
    /// socket or device swapped in): never read.
    NotRegular,
    /// A failure retrying soon will not fix (unreadable, too many parts, a
    /// permanent S3 error): the file waits outside the upload slots.
    Failed { error: String, kind: &'static str },
    /// Shutdown came while the upload waited to retry: the file stays on
    /// disk and is relayed on the next start.
    Interrupted,
}
