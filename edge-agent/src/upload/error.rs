//! Why an upload attempt failed, whether trying again soon may help, and
//! what an operator should do about one that will not.

use std::io;
use std::path::PathBuf;

use relay_shared::store::S3Error;

use super::job::MAX_PARTS;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} needs more than {MAX_PARTS} parts of {part_bytes} bytes; raise RELAY_MULTIPART_THRESHOLD_BYTES"
    )]
    TooManyParts { path: PathBuf, part_bytes: u64 },
    #[error("{key} holds other bytes than {path} although its name carries the same content hash")]
    HashClash { key: String, path: PathBuf },
    #[error(
        "{path}: S3 holds other bytes under its name, and there is no conflict key for it: {source}"
    )]
    ConflictKey {
        path: PathBuf,
        source: relay_shared::keys::KeyError,
    },
    #[error(
        "{key} was taken (412), then gone before its content hash could be read; storing it again"
    )]
    Vanished { key: String },
    #[error(transparent)]
    S3(#[from] S3Error),
}

impl UploadError {
    /// Whether retrying soon may succeed. Unreadable files and permanent S3
    /// errors need a person: the file is set aside and retried slowly.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::S3(e) => e.class().is_retryable(),
            Self::Vanished { .. } => true,
            _ => false,
        }
    }

    /// The S3 request that failed and why, if a retry may fix it.
    pub fn retry_site(&self) -> Option<(&'static str, relay_shared::retry::Cause)> {
        match self {
            Self::S3(e) => e.retry_site(),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::TooManyParts { .. } => "too_many_parts",
            Self::HashClash { .. } => "hash_clash",
            Self::ConflictKey { .. } => "conflict_key",
            Self::Vanished { .. } => "vanished",
            Self::S3(e) => e.kind(),
        }
    }
}

/// What an operator should do about a permanent error.
pub fn fix_hint(kind: &str, bucket: &str, prefix: &str) -> String {
    match kind {
        "access_denied" => format!(
            "check the agent's credentials and that its policy allows s3:PutObject on arn:aws:s3:::{bucket}/{prefix}*"
        ),
        "no_such_bucket" => {
            format!("bucket {bucket:?} does not exist: create it or fix RELAY_BUCKET")
        }
        "read" => "check the file's permissions; the agent retries until it can read it".to_owned(),
        _ => "the request was rejected; see the message for details".to_owned(),
    }
}
