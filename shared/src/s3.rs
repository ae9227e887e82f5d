//! S3 adapter: conditional writes with `object_store`-style modes and errors.
//!
//! Conditional writes are the relay's only coordination primitive, so their
//! outcomes are first-class errors here rather than HTTP status codes leaking
//! into callers: `PutMode::Create` sends `If-None-Match: *` and a 412 becomes
//! [`S3Error::AlreadyExists`]; `PutMode::Update` sends `If-Match` and a 412
//! becomes [`S3Error::Precondition`].

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;

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
#[derive(Debug, Clone, Default)]
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

/// Whether retrying the same request can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Throttling, 5xx, timeouts, connection failures: retry with backoff.
    Transient,
    /// Access denied, missing bucket, bad request: retrying will not help until
    /// someone changes the configuration.
    Permanent,
}

impl fmt::Display for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
        })
    }
}

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

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
    /// Anything else, boxed: it is the rare path, and a small error keeps
    /// every `Result` in the hot path small.
    #[error(transparent)]
    Other(Box<Failure>),
}

/// An S3 failure that is not a conditional-write outcome.
#[derive(Debug, thiserror::Error)]
#[error("s3://{bucket}/{key}: {op} failed ({retry}, {code}): {message}")]
pub struct Failure {
    pub bucket: String,
    pub key: String,
    pub op: &'static str,
    pub retry: Retry,
    pub code: String,
    pub message: String,
    #[source]
    pub source: BoxError,
}

impl S3Error {
    /// Whether the same request may succeed later. Conditional outcomes are
    /// answers, not failures: retrying them cannot change the result, except
    /// a 409 conflict, which AWS says to retry.
    pub fn retry(&self) -> Retry {
        match self {
            Self::Conflict { .. } => Retry::Transient,
            Self::AlreadyExists { .. } | Self::Precondition { .. } | Self::NotFound { .. } => {
                Retry::Permanent
            }
            Self::Other(f) => f.retry,
        }
    }

    /// A short stable label for metrics and logs (`already_exists`, `throttled`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AlreadyExists { .. } => "already_exists",
            Self::Precondition { .. } => "precondition",
            Self::Conflict { .. } => "conflict",
            Self::NotFound { .. } => "not_found",
            Self::Other(f) => match (f.code.as_str(), f.retry) {
                ("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded", _) => {
                    "throttled"
                }
                ("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch", _) => {
                    "access_denied"
                }
                ("NoSuchBucket", _) => "no_such_bucket",
                (_, Retry::Transient) => "transient",
                (_, Retry::Permanent) => "permanent",
            },
        }
    }
}

/// Maps any S3 operation's SDK error into [`S3Error`]. `mode` decides what a 412
/// means; `op` names the operation in the message.
pub fn map_sdk_error<E>(
    err: SdkError<E, HttpResponse>,
    bucket: &str,
    key: &str,
    op: &'static str,
    mode: Option<&PutMode>,
) -> S3Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let (bucket, key) = (bucket.to_owned(), key.to_owned());
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or_default().to_owned();
    match (status, code.as_str(), mode) {
        (Some(412), _, Some(PutMode::Create))
        | (_, "PreconditionFailed", Some(PutMode::Create)) => {
            return S3Error::AlreadyExists { bucket, key };
        }
        (Some(412), _, _) | (_, "PreconditionFailed", _) => {
            return S3Error::Precondition { bucket, key };
        }
        (Some(409), _, _) | (_, "ConditionalRequestConflict", _) => {
            return S3Error::Conflict { bucket, key };
        }
        (_, "NoSuchKey" | "NotFound", _) => return S3Error::NotFound { bucket, key },
        (Some(404), "", _) => return S3Error::NotFound { bucket, key },
        _ => {}
    }
    let retry = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Retry::Transient
        }
        SdkError::ServiceError(_) => match (status, code.as_str()) {
            (Some(429), _) | (Some(500..=599), _) => Retry::Transient,
            (_, "SlowDown" | "RequestTimeout" | "InternalError" | "Throttling") => Retry::Transient,
            _ => Retry::Permanent,
        },
        _ => Retry::Permanent,
    };
    let message = err
        .message()
        .map(str::to_owned)
        .unwrap_or_else(|| error_chain(&err));
    S3Error::Other(Box::new(Failure {
        bucket,
        key,
        op,
        retry,
        code: if code.is_empty() {
            status.map_or_else(|| "no response".to_owned(), |s| format!("HTTP {s}"))
        } else {
            code
        },
        message,
        source: Box::new(err),
    }))
}

/// The SDK's top-level message for connection failures is just "dispatch
/// failure"; the cause chain says what actually went wrong.
fn error_chain(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

/// A small object read whole, with S3's times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Small {
    pub bytes: Vec<u8>,
    pub etag: Option<String>,
    /// `Last-Modified`, in ms since the epoch (S3 keeps whole seconds).
    pub last_modified_ms: Option<i64>,
    /// The response's `Date`, in ms since the epoch (whole seconds).
    pub server_now_ms: Option<i64>,
}

/// Keeps the `Date` header of the response it sees: S3's clock, which
/// the SDK's typed outputs do not expose.
#[derive(Debug, Clone, Default)]
struct ServerDate(std::sync::Arc<std::sync::Mutex<Option<i64>>>);

impl ServerDate {
    fn millis(&self) -> Option<i64> {
        self.0.lock().ok().and_then(|d| *d)
    }
}

impl aws_sdk_s3::config::Intercept for ServerDate {
    fn name(&self) -> &'static str {
        "relay::ServerDate"
    }

    fn read_after_transmit(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let parsed = context
            .response()
            .headers()
            .get("date")
            .and_then(|d| {
                aws_sdk_s3::primitives::DateTime::from_str(
                    d,
                    aws_sdk_s3::primitives::DateTimeFormat::HttpDate,
                )
                .ok()
            })
            .and_then(|d| d.to_millis().ok());
        if let (Some(ms), Ok(mut slot)) = (parsed, self.0.lock()) {
            *slot = Some(ms);
        }
        Ok(())
    }
}

/// One bucket, with the few operations the relay needs.
#[derive(Debug, Clone)]
pub struct Bucket {
    client: Client,
    name: String,
}

impl Bucket {
    pub fn new(client: Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Stores `body` at `key` under the given mode.
    pub async fn put(
        &self,
        key: &str,
        body: impl Into<ByteStream>,
        mode: &PutMode,
        options: &PutOptions,
    ) -> Result<PutResult, S3Error> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(body.into())
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .set_content_type(options.content_type.clone())
            .set_content_encoding(options.content_encoding.clone());
        for (k, v) in &options.metadata {
            req = req.metadata(k, v);
        }
        req = match mode {
            PutMode::Overwrite => req,
            PutMode::Create => req.if_none_match("*"),
            PutMode::Update { etag } => req.if_match(etag),
        };
        let out = req
            .send()
            .await
            .map_err(|e| map_sdk_error(e, &self.name, key, "PutObject", Some(mode)))?;
        Ok(PutResult {
            etag: out.e_tag,
            version_id: out.version_id,
        })
    }

    /// Reads a whole small object (markers, leases). Large objects should be
    /// streamed by the caller from [`Bucket::client`].
    pub async fn get_bytes(&self, key: &str) -> Result<(Vec<u8>, Option<String>), S3Error> {
        self.get_small(key).await.map(|s| (s.bytes, s.etag))
    }

    /// Reads a whole small object with the times S3 gave: when it was
    /// stored, and S3's own clock when it answered (its `Date` header), so
    /// an age can be judged by one clock, S3's.
    pub async fn get_small(&self, key: &str) -> Result<Small, S3Error> {
        let date = ServerDate::default();
        let out = self
            .client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .customize()
            .interceptor(date.clone())
            .send()
            .await
            .map_err(|e| map_sdk_error(e, &self.name, key, "GetObject", None))?;
        let etag = out.e_tag.clone();
        let last_modified_ms = out.last_modified.and_then(|t| t.to_millis().ok());
        let bytes = out.body.collect().await.map_err(|e| {
            S3Error::Other(Box::new(Failure {
                bucket: self.name.clone(),
                key: key.to_owned(),
                op: "GetObject",
                retry: Retry::Transient,
                code: "body".into(),
                message: e.to_string(),
                source: Box::new(e),
            }))
        })?;
        Ok(Small {
            bytes: bytes.to_vec(),
            etag,
            last_modified_ms,
            server_now_ms: date.millis(),
        })
    }

    /// Deletes `key`. Deleting a key that does not exist succeeds, as in S3.
    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        self.client
            .delete_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .map(drop)
            .map_err(|e| map_sdk_error(e, &self.name, key, "DeleteObject", None))
    }

    /// Deletes `key` only while its ETag is `etag` (`If-Match`): a 412 is
    /// [`S3Error::Precondition`], a missing key [`S3Error::NotFound`].
    pub async fn delete_if_match(&self, key: &str, etag: &str) -> Result<(), S3Error> {
        self.client
            .delete_object()
            .bucket(&self.name)
            .key(key)
            .if_match(etag)
            .send()
            .await
            .map(drop)
            .map_err(|e| map_sdk_error(e, &self.name, key, "DeleteObject", None))
    }

    /// How many objects are under `prefix`, up to `limit` (one ListObjectsV2
    /// page): proves list access to the prefix.
    pub async fn count_under(&self, prefix: &str, limit: i32) -> Result<usize, S3Error> {
        self.client
            .list_objects_v2()
            .bucket(&self.name)
            .prefix(prefix)
            .max_keys(limit)
            .send()
            .await
            .map(|out| out.contents().len())
            .map_err(|e| map_sdk_error(e, &self.name, prefix, "ListObjectsV2", None))
    }

    /// Checks that the bucket exists and is reachable with these credentials,
    /// so misconfiguration is reported at start-up, not on the first file.
    pub async fn check_access(&self) -> Result<(), S3Error> {
        self.client
            .head_bucket()
            .bucket(&self.name)
            .send()
            .await
            .map(drop)
            .map_err(|e| {
                let mut err = map_sdk_error(e, &self.name, "", "HeadBucket", None);
                // HeadBucket has no body, so a missing bucket is a bare 404.
                if let S3Error::NotFound { bucket, key } = err {
                    err = S3Error::Other(Box::new(Failure {
                        message: format!("bucket {bucket:?} does not exist"),
                        bucket,
                        key,
                        op: "HeadBucket",
                        retry: Retry::Permanent,
                        code: "NoSuchBucket".into(),
                        source: "404 from HeadBucket".into(),
                    }));
                }
                err
            })
    }
}
