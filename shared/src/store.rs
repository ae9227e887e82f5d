//! The object-store capability both stages are written against, with S3's
//! conditional-write semantics as its contract.
//!
//! Conditional writes are the relay's only coordination primitive, so their
//! outcomes are first-class errors rather than HTTP status codes leaking into
//! callers: `PutMode::Create` is `If-None-Match: *` and a 412 is
//! [`S3Error::AlreadyExists`]; `PutMode::Update` is `If-Match` and a 412 is
//! [`S3Error::Precondition`]. This module knows nothing of its
//! implementations: S3's is `s3::Bucket`, the in-memory one for unit tests
//! is `testing::MemStore`, and one contract suite (`testing::contract`)
//! runs against both.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;

use crate::retry::{Class, classify_code};

/// How a put treats an existing object at the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Unconditional: last writer wins.
    Overwrite,
    /// `If-None-Match: *`: fails with [`S3Error::AlreadyExists`] if the key exists.
    Create,
    /// `If-Match: <etag>`: fails with [`S3Error::Precondition`] if the object changed.
    Update { etag: String },
}

/// Headers and metadata for a put. Checksums are always requested (CRC32C), so
/// S3 verifies the bytes it stores against the bytes that were sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub metadata: HashMap<String, String>,
}

/// What S3 reported about a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    pub etag: Option<String>,
    pub version_id: Option<String>,
}

/// A small object read whole, with S3's times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmallObject {
    pub bytes: Vec<u8>,
    pub etag: Option<String>,
    /// `Last-Modified`, in ms since the epoch (S3 keeps whole seconds).
    pub last_modified_ms: Option<i64>,
    /// The response's `Date`, in ms since the epoch (whole seconds).
    pub server_now_ms: Option<i64>,
}

/// What HeadObject tells about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub size: u64,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// User metadata (`x-amz-meta-*`), keys without the prefix.
    pub metadata: HashMap<String, String>,
    /// The CRC32C S3 keeps for the whole object (base64), if it keeps one:
    /// a read of it is verified. A multipart object of an older agent has
    /// only a checksum of its parts' checksums (`...-N`), which cannot be.
    pub checksum_crc32c: Option<String>,
}

impl Head {
    /// Whether a download of the object is checked against a CRC32C of
    /// all its bytes.
    pub fn verified(&self) -> bool {
        self.checksum_crc32c
            .as_deref()
            .is_some_and(|c| !c.contains('-'))
    }
}

/// An object's body, read as it arrives: raw objects can be gigabytes.
pub type Body = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// An object being read: what S3 said about it, then its bytes.
pub struct Download {
    pub head: Head,
    pub body: Body,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("head", &self.head)
            .finish()
    }
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// Without quotes.
    pub etag: String,
    pub last_modified_ms: Option<i64>,
    /// The version a live event would name: set by a [`Listing::Current`]
    /// page in a versioned bucket, else `None`.
    pub version_id: Option<String>,
}

/// Which listing a page is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Every object (ListObjectsV2).
    Plain,
    /// The current version of every object, with its version id where the
    /// bucket is versioned (ListObjectVersions); delete markers and older
    /// versions are left out.
    Current,
}

/// The most objects one listing request returns.
pub const PAGE_LIMIT: usize = 1000;

/// One page of a listing, in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub objects: Vec<Listed>,
    /// Where the next page starts (pass it as `after`); `None` after the
    /// last page. A key, so it is also a place to resume from.
    pub next_after: Option<String>,
}

/// What is directly under a prefix, as a listing with the delimiter `/`
/// shows it on its first page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Children {
    /// The sub-prefixes, each ending in `/`, in key order.
    pub prefixes: Vec<String>,
    /// How many objects are directly under the prefix.
    pub objects: usize,
    /// Whether the page held all of them: no more prefixes or objects follow.
    pub complete: bool,
}

/// One uploaded part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub number: i32,
    pub etag: String,
    /// The part's CRC32C, computed by us and verified by S3 on upload.
    pub crc32c: u32,
    /// Its length in bytes: with the CRC32Cs of all parts, it gives the
    /// whole object's.
    pub size: u64,
}

/// The operations the relay needs from one bucket, and no more.
pub trait ObjectStore: Clone + Send + Sync + 'static {
    /// The bucket's name, for messages and for events that name it.
    fn name(&self) -> &str;
    /// The same store and credentials, addressing another bucket.
    fn in_bucket(&self, name: &str) -> Self;
    /// Starts reading an object (a version of it, if given).
    fn get(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> impl Future<Output = Result<Download, S3Error>> + Send;
    /// Reads a whole small object with the times S3 gave: when it was stored,
    /// and S3's own clock when it answered, so an age is judged by one clock.
    fn get_small(&self, key: &str) -> impl Future<Output = Result<SmallObject, S3Error>> + Send;
    /// Stores `body` at `key` under `mode`.
    fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        mode: &PutMode,
        options: &PutOptions,
    ) -> impl Future<Output = Result<PutResult, S3Error>> + Send;
    /// Deletes `key`; with `if_match`, only while its ETag is that one
    /// ([`S3Error::Precondition`] otherwise). Deleting a missing key succeeds,
    /// or with `if_match` may say [`S3Error::NotFound`].
    fn delete(
        &self,
        key: &str,
        if_match: Option<&str>,
    ) -> impl Future<Output = Result<(), S3Error>> + Send;
    /// HeadObject, or `None` if there is no object.
    fn head(&self, key: &str) -> impl Future<Output = Result<Option<Head>, S3Error>> + Send;
    /// The objects under `prefix` in key order, at most `limit` of them.
    fn list(
        &self,
        prefix: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Listed>, S3Error>> + Send;
    /// One page of `listing` under `prefix`, after the key `after`: at most
    /// `limit` objects (and at most [`PAGE_LIMIT`]), in key order. Walking
    /// a listing page by page holds one page, however many objects it has.
    fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        listing: Listing,
        limit: usize,
    ) -> impl Future<Output = Result<Page, S3Error>> + Send;
    /// Whether the bucket keeps versions (enabled, or suspended after it
    /// was): its events name a version id, and [`Listing::Current`] finds it.
    fn versioned(&self) -> impl Future<Output = Result<bool, S3Error>> + Send;
    /// The sub-prefixes directly under `prefix` (delimiter `/`), from one
    /// listing request.
    fn list_children(&self, prefix: &str)
    -> impl Future<Output = Result<Children, S3Error>> + Send;
    /// Starts a multipart upload; returns its id.
    fn start_multipart(
        &self,
        key: &str,
        options: &PutOptions,
    ) -> impl Future<Output = Result<String, S3Error>> + Send;
    fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<Part, S3Error>> + Send;
    /// Completes a multipart upload under `mode` (`Create` is the same
    /// `If-None-Match: *` as a single put).
    fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<Part>,
        mode: &PutMode,
    ) -> impl Future<Output = Result<PutResult, S3Error>> + Send;
    fn abort_multipart(
        &self,
        key: &str,
        upload_id: &str,
    ) -> impl Future<Output = Result<(), S3Error>> + Send;
}

pub(crate) type BoxError = Box<dyn StdError + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("s3://{bucket}/{key} already exists")]
    AlreadyExists { bucket: String, key: String },
    #[error("s3://{bucket}/{key} changed since it was read (precondition failed)")]
    Precondition { bucket: String, key: String },
    /// 409 ConditionalRequestConflict: a concurrent conditional write raced us.
    #[error("s3://{bucket}/{key}: a concurrent conditional write conflicted")]
    Conflict { bucket: String, key: String },
    #[error("s3://{bucket}/{key} does not exist")]
    NotFound { bucket: String, key: String },
    /// 501 NotImplemented: the store does not support this request (one
    /// S3 implementation refuses conditional deletes). Retrying cannot help;
    /// a caller with a safe alternative uses it.
    #[error("s3://{bucket}/{key}: {op} with these conditions is not supported by this store")]
    Unsupported {
        bucket: String,
        key: String,
        op: &'static str,
    },
    /// Anything else, boxed: it is the rare path, and a small error keeps
    /// every `Result` in the hot path small.
    #[error(transparent)]
    Other(Box<Failure>),
}

/// An S3 failure that is not a conditional-write outcome.
#[derive(Debug, thiserror::Error)]
#[error("s3://{bucket}/{key}: {op} failed ({class}, {code}): {message}")]
pub struct Failure {
    pub bucket: String,
    pub key: String,
    pub op: &'static str,
    pub class: Class,
    /// Why the call failed, as a retry counts it.
    pub cause: crate::retry::Cause,
    pub code: String,
    pub message: String,
    #[source]
    pub source: BoxError,
}

impl crate::retry::Classified for S3Error {
    fn class(&self) -> Class {
        S3Error::class(self)
    }
}

impl S3Error {
    /// A failure that is not a conditional outcome, classified by its code.
    pub fn failure(bucket: &str, key: &str, op: &'static str, code: &str, message: &str) -> Self {
        let class = classify_code(None, code);
        Self::Other(Box::new(Failure {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            op,
            class,
            cause: match class {
                Class::Throttled => crate::retry::Cause::Throttled,
                Class::Transient => crate::retry::Cause::ServerError,
                Class::Permanent => crate::retry::Cause::Other,
            },
            code: code.to_owned(),
            message: message.to_owned(),
            source: message.to_owned().into(),
        }))
    }

    /// Whether the same request may succeed later. Conditional outcomes are
    /// answers, not failures: retrying them cannot change the result, except
    /// a 409 conflict, which AWS says to retry.
    pub fn class(&self) -> Class {
        match self {
            Self::Conflict { .. } => Class::Transient,
            Self::AlreadyExists { .. }
            | Self::Precondition { .. }
            | Self::NotFound { .. }
            | Self::Unsupported { .. } => Class::Permanent,
            Self::Other(f) => f.class,
        }
    }

    /// Where and why a retried call failed, for `relay_aws_retries_total`:
    /// its operation and cause, if it is a failure a retry may fix.
    pub fn retry_site(&self) -> Option<(&'static str, crate::retry::Cause)> {
        match self {
            Self::Other(f) if f.class.is_retryable() => Some((f.op, f.cause)),
            Self::Conflict { .. } => Some(("ConditionalWrite", crate::retry::Cause::Other)),
            _ => None,
        }
    }

    /// A short stable label for metrics and logs (`already_exists`, `throttled`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AlreadyExists { .. } => "already_exists",
            Self::Precondition { .. } => "precondition",
            Self::Conflict { .. } => "conflict",
            Self::NotFound { .. } => "not_found",
            Self::Unsupported { .. } => "unsupported",
            Self::Other(f) => match f.code.as_str() {
                "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" => "access_denied",
                "NoSuchBucket" => "no_such_bucket",
                _ => match f.class {
                    Class::Throttled => "throttled",
                    Class::Transient => "transient",
                    Class::Permanent => "permanent",
                },
            },
        }
    }
}
