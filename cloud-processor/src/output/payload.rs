//! Claim checks: a record too large for any message is stored in S3 under a
//! key fixed by the object version and chunk (a conditional create, so a
//! resend after a crash finds its payload instead of writing a second one),
//! and its message becomes a pointer in the SQS Extended Client's format.
//! A record from spools is stored a part at a time, never held whole.

use std::io::Read;

use relay_shared::meta::{CONTENT_HASH, content_hash_hex};
use relay_shared::store::{ObjectStore, PutMode, PutOptions, S3Error};
use xxhash_rust::xxh3::Xxh3;

use crate::output::batch::pointer_body;
use crate::pipeline::body::Chunk;
use crate::pipeline::stream::Body;

/// Where offloaded records go: a store addressing the payload bucket, and
/// a key prefix.
#[derive(Debug)]
pub struct Payloads<'a, S> {
    pub store: &'a S,
    pub prefix: &'a str,
}

/// The payload key of chunk `index` of the object read as `dedup_base`:
/// the same object version and chunk always give the same key, so a resend
/// after a crash finds its payload instead of writing a second one.
pub fn payload_key(prefix: &str, source_key: &str, dedup_base: &str, index: u32) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(dedup_base.as_bytes());
    let version = hex::encode(digest);
    format!("{prefix}{source_key}/{}/{index:06}.json", &version[..16])
}

/// Why an offloaded record could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error("s3://{bucket}/{key} holds other bytes than this record; it was not overwritten")]
    Clash { bucket: String, key: String },
    #[error("chunk {index} is a record too large for a message, and no payload location is set")]
    Nowhere { index: u32 },
    #[error("reading the spooled record for s3://{bucket}/{key} failed: {source}")]
    Spool {
        bucket: String,
        key: String,
        source: std::io::Error,
    },
}

/// Parts of a streamed payload (S3 wants at least 5 MiB but for the last).
pub const PAYLOAD_PART_BYTES: usize = 8 << 20;

/// Stores `chunk`'s record as its payload object (a conditional create; a
/// payload already there with the same bytes is one an earlier attempt
/// wrote) and turns the chunk into its claim check.
pub(crate) async fn offload<S: ObjectStore>(
    payloads: Option<&Payloads<'_, S>>,
    source_key: &str,
    dedup_base: &str,
    mut chunk: Chunk,
) -> Result<Chunk, PayloadError> {
    let p = payloads.ok_or(PayloadError::Nowhere { index: chunk.index })?;
    let key = payload_key(p.prefix, source_key, dedup_base, chunk.index);
    let options = PutOptions {
        content_type: Some("application/json".into()),
        ..PutOptions::default()
    };
    if let Some(body) = chunk.stream.take() {
        store_streamed(p, &key, body, options).await?;
        metrics::counter!(crate::metrics::OFFLOADED).increment(1);
        chunk.body = pointer_body(p.store.name(), &key);
        return Ok(chunk);
    }
    match p
        .store
        .put(&key, chunk.body.clone(), &PutMode::Create, &options)
        .await
    {
        Ok(_) => {}
        Err(S3Error::AlreadyExists { .. }) => {
            if p.store.get_small(&key).await?.bytes != chunk.body {
                return Err(PayloadError::Clash {
                    bucket: p.store.name().to_owned(),
                    key,
                });
            }
        }
        Err(e) => return Err(e.into()),
    }
    metrics::counter!(crate::metrics::OFFLOADED).increment(1);
    chunk.body = pointer_body(p.store.name(), &key);
    Ok(chunk)
}

/// Runs `f` on the body where blocking is allowed, and hands the body back.
async fn with_body<T: Send + 'static>(
    mut body: Body,
    f: impl FnOnce(&mut Body) -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<(Body, T)> {
    tokio::task::spawn_blocking(move || f(&mut body).map(|t| (body, t)))
        .await
        .map_err(std::io::Error::other)?
}

/// The next part of a streamed body: up to [`PAYLOAD_PART_BYTES`].
fn next_part(body: &mut Body) -> std::io::Result<Vec<u8>> {
    let mut part = Vec::with_capacity(PAYLOAD_PART_BYTES);
    body.take(PAYLOAD_PART_BYTES as u64)
        .read_to_end(&mut part)?;
    Ok(part)
}

/// Stores a record read from its spools, a part at a time, so it is never
/// held whole: a conditional create as for any payload. Its xxh3 goes in
/// the metadata first (a pass over the spools), so a payload already there
/// proves it holds the same bytes without a download.
async fn store_streamed<S: ObjectStore>(
    p: &Payloads<'_, S>,
    key: &str,
    body: Body,
    mut options: PutOptions,
) -> Result<(), PayloadError> {
    let spool = |source| PayloadError::Spool {
        bucket: p.store.name().to_owned(),
        key: key.to_owned(),
        source,
    };
    let (mut body, hash) = with_body(body, |b| {
        let mut h = Xxh3::new();
        std::io::copy(b, &mut HashWriter(&mut h))?;
        b.rewind()?;
        Ok(h.digest128())
    })
    .await
    .map_err(spool)?;
    let hash = content_hash_hex(hash);
    options
        .metadata
        .insert(CONTENT_HASH.to_owned(), hash.clone());
    let stored = if body.len() <= PAYLOAD_PART_BYTES as u64 {
        let (_, bytes) = with_body(body, next_part).await.map_err(spool)?;
        p.store.put(key, bytes, &PutMode::Create, &options).await
    } else {
        let id = p.store.start_multipart(key, &options).await?;
        let mut parts = Vec::new();
        let done = loop {
            let (b, bytes) = with_body(body, next_part).await.map_err(spool)?;
            body = b;
            if bytes.is_empty() {
                break p
                    .store
                    .complete_multipart(key, &id, parts, &PutMode::Create)
                    .await;
            }
            let number = parts.len() as i32 + 1;
            match p.store.put_part(key, &id, number, bytes).await {
                Ok(part) => parts.push(part),
                Err(e) => break Err(e),
            }
        };
        if done.is_err() {
            // Parts of an upload that never completes are billed until
            // aborted (the bucket's lifecycle also cleans them up).
            let _ = p.store.abort_multipart(key, &id).await;
        }
        done
    };
    match stored {
        Ok(_) => Ok(()),
        Err(S3Error::AlreadyExists { .. }) => {
            let theirs = p.store.head(key).await?;
            if theirs.is_some_and(|h| h.metadata.get(CONTENT_HASH) == Some(&hash)) {
                Ok(())
            } else {
                Err(PayloadError::Clash {
                    bucket: p.store.name().to_owned(),
                    key: key.to_owned(),
                })
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Feeds what is written to a hasher.
struct HashWriter<'a>(&'a mut Xxh3);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
