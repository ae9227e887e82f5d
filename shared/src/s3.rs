//! S3 adapter: the [`ObjectStore`] capability over the AWS SDK, with
//! conditional writes mapped to `object_store`-style modes and errors.
//!
//! `PutMode::Create` sends `If-None-Match: *` and a 412 becomes
//! [`S3Error::AlreadyExists`]; `PutMode::Update` sends `If-Match` and a 412
//! becomes [`S3Error::Precondition`]. This is the only place the relay's
//! object operations name an `aws_sdk_s3` type.

use std::error::Error as StdError;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart,
};

use crate::checksum::{ChecksumMismatch, crc32c, crc32c_base64, crc32c_combine};

use crate::client::{ClientOptions, SdkConfig, s3_client};
use crate::retry::{Class, classify};
use crate::store::{
    Children, Download, Failure, Head, Listed, Listing, ObjectStore, PAGE_LIMIT, Page, Part,
    PutMode, PutOptions, PutResult, S3Error, SmallObject,
};

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
        (Some(501), _, _) | (_, "NotImplemented", _) => {
            return S3Error::Unsupported { bucket, key, op };
        }
        (Some(404), "", _) => return S3Error::NotFound { bucket, key },
        _ => {}
    }
    let class = classify(&err);
    let cause = crate::retry::cause_of(&err);
    let message = err
        .message()
        .map(str::to_owned)
        .unwrap_or_else(|| error_chain(&err));
    S3Error::Other(Box::new(Failure {
        bucket,
        key,
        op,
        class,
        cause,
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

/// How long one attempt of a request that sends a body may take: a base
/// for the answer, plus the body's time at a slow but moving rate. A
/// small file's upload stuck in a black hole is abandoned within seconds,
/// and a large part on a slow link is never cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptBudget {
    pub base: std::time::Duration,
    pub bytes_per_sec: u64,
}

impl AttemptBudget {
    /// The budget of an attempt that sends `bytes`.
    pub fn for_bytes(&self, bytes: u64) -> std::time::Duration {
        self.base + std::time::Duration::from_secs(bytes.div_ceil(self.bytes_per_sec.max(1)))
    }
}

/// One bucket, with the few operations the relay needs.
#[derive(Debug, Clone)]
pub struct Bucket {
    client: Client,
    name: String,
    /// Per-request attempt timeouts sized to the body, where set.
    budget: Option<AttemptBudget>,
}

impl Bucket {
    /// One bucket, through an S3 client built from `sdk`.
    pub fn connect(sdk: &SdkConfig, options: ClientOptions, name: &str) -> Self {
        Self::new(s3_client(sdk, options), name)
    }

    pub fn new(client: Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
            budget: None,
        }
    }

    /// Gives each request that sends a body an attempt timeout sized to it
    /// (the client's own attempt timeout applies to the others).
    #[must_use]
    pub fn with_attempt_budget(mut self, budget: AttemptBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The client's timeouts, with the attempt timeout sized to `bytes`.
    fn sized(&self, bytes: u64) -> Option<aws_sdk_s3::config::Builder> {
        let budget = self.budget?;
        let base = self
            .client
            .config()
            .timeout_config()
            .cloned()
            .unwrap_or_else(|| aws_sdk_s3::config::timeout::TimeoutConfig::builder().build());
        let mut timeouts = base.to_builder();
        timeouts.set_operation_attempt_timeout(Some(budget.for_bytes(bytes)));
        Some(aws_sdk_s3::config::Builder::default().timeout_config(timeouts.build()))
    }

    /// Reads a whole small object and its ETag.
    pub async fn get_bytes(&self, key: &str) -> Result<(Vec<u8>, Option<String>), S3Error> {
        self.get_small(key).await.map(|s| (s.bytes, s.etag))
    }

    fn err<E>(
        &self,
        key: &str,
        op: &'static str,
        mode: Option<&PutMode>,
    ) -> impl FnOnce(SdkError<E, HttpResponse>) -> S3Error + '_
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let (key, mode) = (key.to_owned(), mode.cloned());
        move |e| map_sdk_error(e, &self.name, &key, op, mode.as_ref())
    }

    /// A body that broke off while being read.
    fn body_error(
        &self,
        key: &str,
        op: &'static str,
        e: impl StdError + Send + Sync + 'static,
    ) -> S3Error {
        S3Error::Other(Box::new(Failure {
            bucket: self.name.clone(),
            key: key.to_owned(),
            op,
            class: Class::Transient,
            cause: crate::retry::Cause::Response,
            code: "body".into(),
            message: e.to_string(),
            source: Box::new(e),
        }))
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
                        class: Class::Permanent,
                        cause: crate::retry::Cause::Other,
                        code: "NoSuchBucket".into(),
                        source: "404 from HeadBucket".into(),
                    }));
                }
                err
            })
    }
}

/// What GetObject's and HeadObject's outputs (two types with the same
/// fields) say about an object.
/// It moves those fields only, so a GetObject's body stays.
macro_rules! head_of {
    ($out:ident) => {
        Head {
            size: $out
                .content_length
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            etag: $out.e_tag,
            version_id: $out.version_id,
            content_type: $out.content_type,
            content_encoding: $out.content_encoding,
            metadata: $out.metadata.unwrap_or_default(),
            checksum_crc32c: $out.checksum_crc32_c,
        }
    };
}

/// A download's body, its checksum failure made recognisable: the SDK
/// checks the bytes against the CRC32C S3 stored and fails the read at its
/// end; the failure reaches the reader as [`ChecksumMismatch`].
struct Verified<R>(R);

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Verified<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.0).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(e)) if error_chain(&e).contains("checksum mismatch") => {
                let mismatch = ChecksumMismatch {
                    detail: error_chain(&e),
                };
                std::task::Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    mismatch,
                )))
            }
            other => other,
        }
    }
}

/// One object of a ListObjectsV2 page.
fn listed(o: &aws_sdk_s3::types::Object) -> Listed {
    Listed {
        key: o.key().unwrap_or_default().to_owned(),
        size: o.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
        etag: o.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
        last_modified_ms: millis(o.last_modified),
        version_id: None,
    }
}

fn millis(t: Option<aws_sdk_s3::primitives::DateTime>) -> Option<i64> {
    t.and_then(|t| t.to_millis().ok())
}

impl ObjectStore for Bucket {
    fn name(&self) -> &str {
        &self.name
    }

    fn in_bucket(&self, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..self.clone()
        }
    }

    async fn get(&self, key: &str, version_id: Option<&str>) -> Result<Download, S3Error> {
        let out = self
            .client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(self.err(key, "GetObject", None))?;
        let head = head_of!(out);
        if !head.verified() {
            tracing::debug!(key, checksum = ?head.checksum_crc32c,
                "the object has no CRC32C of all its bytes (an older multipart upload): its read is not verified");
        }
        Ok(Download {
            head,
            body: Box::new(Verified(out.body.into_async_read())),
        })
    }

    async fn get_small(&self, key: &str) -> Result<SmallObject, S3Error> {
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
            .map_err(self.err(key, "GetObject", None))?;
        let etag = out.e_tag.clone();
        let last_modified_ms = millis(out.last_modified);
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| self.body_error(key, "GetObject", e))?;
        Ok(SmallObject {
            bytes: bytes.to_vec(),
            etag,
            last_modified_ms,
            server_now_ms: date.millis(),
        })
    }

    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        mode: &PutMode,
        options: &PutOptions,
    ) -> Result<PutResult, S3Error> {
        let sized = self.sized(body.len() as u64);
        let req = self
            .client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(body.into())
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .set_content_type(options.content_type.clone())
            .set_content_encoding(options.content_encoding.clone())
            .set_metadata(Some(options.metadata.clone()).filter(|m| !m.is_empty()));
        let req = match mode {
            PutMode::Overwrite => req,
            PutMode::Create => req.if_none_match("*"),
            PutMode::Update { etag } => req.if_match(etag),
        };
        let mut req = req.customize();
        if let Some(sized) = sized {
            req = req.config_override(sized);
        }
        let out = req
            .send()
            .await
            .map_err(self.err(key, "PutObject", Some(mode)))?;
        Ok(PutResult {
            etag: out.e_tag,
            version_id: out.version_id,
        })
    }

    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), S3Error> {
        self.client
            .delete_object()
            .bucket(&self.name)
            .key(key)
            .set_if_match(if_match.map(str::to_owned))
            .send()
            .await
            .map(drop)
            .map_err(self.err(key, "DeleteObject", None))
    }

    async fn head(&self, key: &str) -> Result<Option<Head>, S3Error> {
        match self
            .client
            .head_object()
            .bucket(&self.name)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(self.err(key, "HeadObject", None))
        {
            Ok(out) => Ok(Some(head_of!(out))),
            Err(S3Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<Listed>, S3Error> {
        let mut out = Vec::new();
        let mut token = None;
        while out.len() < limit {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.name)
                .prefix(prefix)
                .max_keys(i32::try_from(limit - out.len()).unwrap_or(1000).min(1000))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(self.err(prefix, "ListObjectsV2", None))?;
            out.extend(page.contents().iter().map(listed));
            match page.next_continuation_token {
                Some(t) if page.is_truncated == Some(true) => token = Some(t),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        listing: Listing,
        limit: usize,
    ) -> Result<Page, S3Error> {
        let max_keys = i32::try_from(limit.clamp(1, PAGE_LIMIT)).unwrap_or(1000);
        match listing {
            Listing::Plain => {
                let page = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.name)
                    .prefix(prefix)
                    .max_keys(max_keys)
                    .set_start_after(after.map(str::to_owned))
                    .send()
                    .await
                    .map_err(self.err(prefix, "ListObjectsV2", None))?;
                let objects: Vec<Listed> = page.contents().iter().map(listed).collect();
                let next_after = (page.is_truncated == Some(true))
                    .then(|| objects.last().map(|o| o.key.clone()))
                    .flatten();
                Ok(Page {
                    objects,
                    next_after,
                })
            }
            Listing::Current => {
                // A key marker without a version marker starts after every
                // version of that key: its latest came first, on this page.
                let page = self
                    .client
                    .list_object_versions()
                    .bucket(&self.name)
                    .prefix(prefix)
                    .max_keys(max_keys)
                    .set_key_marker(after.map(str::to_owned))
                    .send()
                    .await
                    .map_err(self.err(prefix, "ListObjectVersions", None))?;
                let objects: Vec<Listed> = page
                    .versions()
                    .iter()
                    .filter(|v| v.is_latest() == Some(true))
                    .map(|v| Listed {
                        key: v.key().unwrap_or_default().to_owned(),
                        size: v.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                        etag: v.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
                        last_modified_ms: millis(v.last_modified),
                        // An unversioned bucket's objects are version `null`.
                        version_id: v.version_id().filter(|id| *id != "null").map(str::to_owned),
                    })
                    .collect();
                let mut objects = objects;
                let mut next_after = (page.is_truncated() == Some(true))
                    .then(|| page.next_key_marker().map(str::to_owned))
                    .flatten();
                // Some implementations ignore MaxKeys here (LocalStack, on an
                // unversioned bucket): a page holds at most `limit` objects
                // whatever the store answered, and the next starts after it.
                let limit = usize::try_from(max_keys).unwrap_or(PAGE_LIMIT);
                if objects.len() > limit {
                    objects.truncate(limit);
                    next_after = objects.last().map(|o| o.key.clone());
                }
                Ok(Page {
                    objects,
                    next_after,
                })
            }
        }
    }

    async fn versioned(&self) -> Result<bool, S3Error> {
        match self
            .client
            .get_bucket_versioning()
            .bucket(&self.name)
            .send()
            .await
        {
            Ok(out) => Ok(out.status.is_some()),
            // The emulator (moto 5.2.5) answers under the root element
            // `GetBucketVersioningResponse`, which the SDK refuses: read
            // the status from the answer itself.
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 200 => {
                let body = e.raw().body().bytes().unwrap_or_default();
                let body = String::from_utf8_lossy(body);
                Ok(["<Status>Enabled</Status>", "<Status>Suspended</Status>"]
                    .iter()
                    .any(|s| body.contains(s)))
            }
            Err(e) => Err(self.err("", "GetBucketVersioning", None)(e)),
        }
    }

    async fn list_children(&self, prefix: &str) -> Result<Children, S3Error> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.name)
            .prefix(prefix)
            .delimiter("/")
            .send()
            .await
            .map_err(self.err(prefix, "ListObjectsV2", None))?;
        Ok(Children {
            prefixes: page
                .common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(str::to_owned))
                .collect(),
            objects: page.contents().len(),
            complete: page.is_truncated != Some(true),
        })
    }

    async fn start_multipart(&self, key: &str, options: &PutOptions) -> Result<String, S3Error> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .set_content_type(options.content_type.clone())
            .set_content_encoding(options.content_encoding.clone())
            .set_metadata(Some(options.metadata.clone()).filter(|m| !m.is_empty()))
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            // One CRC32C of all the object's bytes, not a checksum of its
            // parts' checksums: every read of it can be verified.
            .checksum_type(ChecksumType::FullObject)
            .send()
            .await
            .map_err(self.err(key, "CreateMultipartUpload", None))?;
        out.upload_id.ok_or_else(|| {
            S3Error::failure(
                &self.name,
                key,
                "CreateMultipartUpload",
                "InternalError",
                "the response had no upload id",
            )
        })
    }

    async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<Part, S3Error> {
        // Our own CRC32C, which S3 verifies: the whole object's is combined
        // from the parts' at completion.
        let (crc, size) = (crc32c(&body), body.len() as u64);
        let mut req = self
            .client
            .upload_part()
            .bucket(&self.name)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .checksum_crc32_c(crc32c_base64(crc))
            .body(body.into())
            .customize();
        if let Some(sized) = self.sized(size) {
            req = req.config_override(sized);
        }
        let out = req
            .send()
            .await
            .map_err(self.err(key, "UploadPart", None))?;
        Ok(Part {
            number,
            etag: out.e_tag.unwrap_or_default(),
            crc32c: crc,
            size,
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<Part>,
        mode: &PutMode,
    ) -> Result<PutResult, S3Error> {
        let mut parts = parts;
        parts.sort_by_key(|p| p.number);
        let whole = parts
            .iter()
            .skip(1)
            .fold(parts.first().map_or(0, |p| p.crc32c), |crc, p| {
                crc32c_combine(crc, p.crc32c, p.size)
            });
        let parts = parts
            .into_iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(p.etag)
                    .checksum_crc32_c(crc32c_base64(p.crc32c))
                    .build()
            })
            .collect();
        let req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .upload_id(upload_id)
            .checksum_crc32_c(crc32c_base64(whole))
            .checksum_type(ChecksumType::FullObject)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        let req = match mode {
            PutMode::Overwrite => req,
            PutMode::Create => req.if_none_match("*"),
            PutMode::Update { etag } => req.if_match(etag),
        };
        let out = req
            .send()
            .await
            .map_err(self.err(key, "CompleteMultipartUpload", Some(mode)))?;
        Ok(PutResult {
            etag: out.e_tag,
            version_id: out.version_id,
        })
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map(drop)
            .map_err(self.err(key, "AbortMultipartUpload", None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::put_object::PutObjectError;
    use aws_sdk_s3::primitives::SdkBody;

    fn answer(status: u16, code: &str) -> SdkError<PutObjectError, HttpResponse> {
        let meta = ErrorMetadata::builder().code(code).message("m").build();
        let raw = HttpResponse::new(status.try_into().expect("a status"), SdkBody::empty());
        SdkError::service_error(PutObjectError::generic(meta), raw)
    }

    /// S3's answers become the conditional outcomes callers act on, and
    /// everything else is classified once (the emulator gives no 409).
    #[test]
    fn statuses_and_codes_map_to_conditional_outcomes_and_classes() {
        let map = |status, code, mode: Option<&PutMode>| {
            map_sdk_error(answer(status, code), "b", "k", "PutObject", mode)
        };
        let update = PutMode::Update { etag: "e".into() };
        assert!(matches!(
            map(412, "PreconditionFailed", Some(&PutMode::Create)),
            S3Error::AlreadyExists { .. }
        ));
        assert!(matches!(
            map(412, "PreconditionFailed", Some(&update)),
            S3Error::Precondition { .. }
        ));
        assert!(matches!(map(412, "", None), S3Error::Precondition { .. }));
        let conflict = map(409, "ConditionalRequestConflict", Some(&PutMode::Create));
        assert!(matches!(conflict, S3Error::Conflict { .. }), "{conflict:?}");
        assert_eq!(
            conflict.class(),
            Class::Transient,
            "AWS says to retry a 409"
        );
        assert!(matches!(
            map(404, "NoSuchKey", None),
            S3Error::NotFound { .. }
        ));
        let refused = map(501, "NotImplemented", None);
        assert!(
            matches!(refused, S3Error::Unsupported { .. }),
            "{refused:?}"
        );
        assert_eq!(
            (refused.kind(), refused.class()),
            ("unsupported", Class::Permanent),
            "a store that does not support a request is not a transient failure"
        );
        for (status, code, kind, class) in [
            (503, "SlowDown", "throttled", Class::Throttled),
            (500, "InternalError", "transient", Class::Transient),
            (403, "AccessDenied", "access_denied", Class::Permanent),
            (404, "NoSuchBucket", "no_such_bucket", Class::Permanent),
            (400, "InvalidArgument", "permanent", Class::Permanent),
        ] {
            let e = map(status, code, None);
            assert_eq!((e.kind(), e.class()), (kind, class), "{code}: {e}");
            assert!(e.to_string().contains("s3://b/k: PutObject failed"), "{e}");
        }
    }
}
