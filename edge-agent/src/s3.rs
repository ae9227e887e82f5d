//! The agent's S3 adapter: conditional single and multipart uploads with
//! CRC32C checksums, so S3 verifies every stored byte.

use std::collections::HashMap;

use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use relay_shared::meta;
use relay_shared::s3::{Bucket, Failure, PutMode, PutOptions, Retry, S3Error, map_sdk_error};

use crate::upload::{ObjectMeta, Part, Sink};

#[derive(Debug, Clone)]
pub struct S3Sink {
    bucket: Bucket,
}

impl S3Sink {
    pub fn new(bucket: Bucket) -> Self {
        Self { bucket }
    }

    fn metadata(m: &ObjectMeta) -> HashMap<String, String> {
        HashMap::from([
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
        ])
    }
}

impl Sink for S3Sink {
    async fn put_new(&self, key: &str, body: Vec<u8>, m: &ObjectMeta) -> Result<(), S3Error> {
        let options = PutOptions {
            content_type: Some(meta::RAW_CONTENT_TYPE.to_owned()),
            content_encoding: Some(meta::RAW_CONTENT_ENCODING.to_owned()),
            metadata: Self::metadata(m),
        };
        self.bucket
            .put(key, body, &PutMode::Create, &options)
            .await
            .map(drop)
    }

    async fn start_multipart(&self, key: &str, m: &ObjectMeta) -> Result<String, S3Error> {
        let name = self.bucket.name();
        let out = self
            .bucket
            .client()
            .create_multipart_upload()
            .bucket(name)
            .key(key)
            .content_type(meta::RAW_CONTENT_TYPE)
            .content_encoding(meta::RAW_CONTENT_ENCODING)
            .set_metadata(Some(Self::metadata(m)))
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .send()
            .await
            .map_err(|e| map_sdk_error(e, name, key, "CreateMultipartUpload", None))?;
        out.upload_id.ok_or_else(|| {
            S3Error::Other(Box::new(Failure {
                bucket: name.to_owned(),
                key: key.to_owned(),
                op: "CreateMultipartUpload",
                retry: Retry::Transient,
                code: "NoUploadId".into(),
                message: "response had no upload id".into(),
                source: "missing UploadId".into(),
            }))
        })
    }

    async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<Part, S3Error> {
        let name = self.bucket.name();
        let out = self
            .bucket
            .client()
            .upload_part()
            .bucket(name)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .body(body.into())
            .send()
            .await
            .map_err(|e| map_sdk_error(e, name, key, "UploadPart", None))?;
        Ok(Part {
            number,
            etag: out.e_tag.unwrap_or_default(),
            checksum_crc32c: out.checksum_crc32_c,
        })
    }

    async fn complete_new(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<Part>,
    ) -> Result<(), S3Error> {
        let name = self.bucket.name();
        let parts = parts
            .into_iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(p.etag)
                    .set_checksum_crc32_c(p.checksum_crc32c)
                    .build()
            })
            .collect();
        self.bucket
            .client()
            .complete_multipart_upload()
            .bucket(name)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .if_none_match("*")
            .send()
            .await
            .map(drop)
            .map_err(|e| {
                map_sdk_error(
                    e,
                    name,
                    key,
                    "CompleteMultipartUpload",
                    Some(&PutMode::Create),
                )
            })
    }

    async fn metadata(&self, key: &str) -> Result<Option<HashMap<String, String>>, S3Error> {
        self.head(key).await
    }

    async fn abort(&self, key: &str, upload_id: &str) {
        let name = self.bucket.name();
        if let Err(e) = self
            .bucket
            .client()
            .abort_multipart_upload()
            .bucket(name)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            tracing::warn!(key, upload_id, error = %map_sdk_error(e, name, key, "AbortMultipartUpload", None),
                "could not abort a multipart upload; the bucket's lifecycle rule will remove it");
        }
    }
}

impl S3Sink {
    /// HeadObject: the object's user metadata, or `None` if it is missing.
    /// It needs `s3:GetObject` on the agent's raw prefix (HeadObject has no
    /// permission of its own), used only when a put finds its key taken.
    async fn head(&self, key: &str) -> Result<Option<HashMap<String, String>>, S3Error> {
        let name = self.bucket.name();
        match self
            .bucket
            .client()
            .head_object()
            .bucket(name)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.metadata.unwrap_or_default())),
            Err(e) => match map_sdk_error(e, name, key, "HeadObject", None) {
                S3Error::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }
}

/// What the start-up check learned.
#[derive(Debug)]
pub enum Access {
    Allowed,
    /// Missing bucket, bad credentials or no s3:PutObject: a human must act.
    Denied(S3Error),
    /// S3 could not be reached; the agent starts anyway and keeps retrying.
    Unknown(S3Error),
}

/// Checks that the agent may write under `prefix` without writing anything:
/// it starts a multipart upload there and aborts it. Starting one needs
/// exactly `s3:PutObject`, and works under a bucket policy that requires
/// `If-None-Match` for object creation (parts are exempt from it); aborting
/// needs `s3:AbortMultipartUpload`, which the agent uses anyway. No object
/// is created, so no event reaches the processor.
pub async fn probe_put_access(bucket: &Bucket, prefix: &str) -> Access {
    let key = format!("{prefix}.relay-agent-access-probe");
    let name = bucket.name();
    let started = bucket
        .client()
        .create_multipart_upload()
        .bucket(name)
        .key(&key)
        .send()
        .await
        .map_err(|e| map_sdk_error(e, name, &key, "CreateMultipartUpload", None));
    match started {
        Ok(out) => {
            if let Some(id) = out.upload_id {
                S3Sink::new(bucket.clone()).abort(&key, &id).await;
            }
            Access::Allowed
        }
        Err(e) if e.retry() == Retry::Transient => Access::Unknown(e),
        Err(e) => Access::Denied(e),
    }
}
