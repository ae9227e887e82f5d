//! Compress one finished file and store it under its key, exactly once.
//!
//! A file up to 2 MiB (most) is read and compressed whole, on a context its
//! thread keeps; a larger one is read through a streaming zstd encoder in
//! chunks of at most the multipart threshold, so memory per upload is
//! bounded by one part whatever the file's size. Both the single put and
//! the multipart completion carry `If-None-Match: *`, and every object
//! carries the xxh3-128 of its uncompressed bytes. A 412 means S3 has the
//! key, which is not yet proof that it has this file: the object's hash and
//! size must match. If they do not (a name used again), the file is stored
//! under a conflict key next to the first, so nothing is discarded that S3
//! does not hold.

use relay_shared::meta::{CONTENT_HASH, ORIGINAL_SIZE, content_hash_hex};
use relay_shared::store::{ObjectStore, PutMode, S3Error};

use super::compress::{
    Compressor, First, blocking, compress_whole, conflict_tag, hash_file, next_chunk, whole,
};
use super::error::UploadError;
use super::file::{open_expected, recheck};
use super::job::{Job, MAX_PARTS, ObjectMeta, Outcome, put_options};

/// What a conditional store of the file under one key found.
enum Stored {
    New {
        compressed_bytes: u64,
        parts: u32,
    },
    /// The key was taken (412).
    Taken,
    Early(Outcome),
}

/// What the object already at a key holds, by its metadata.
enum Held {
    Same,
    Other,
    Unknown,
}

async fn held<S: ObjectStore>(sink: &S, key: &str, meta: &ObjectMeta) -> Result<Held, UploadError> {
    let Some(found) = sink.head(key).await?.map(|h| h.metadata) else {
        // Gone between the 412 and now (a lifecycle rule, a person): the
        // next attempt stores it again.
        return Err(UploadError::Vanished {
            key: key.to_owned(),
        });
    };
    let want = content_hash_hex(meta.content_hash);
    Ok(match found.get(CONTENT_HASH) {
        None => Held::Unknown,
        Some(h)
            if *h == want && found.get(ORIGINAL_SIZE) == Some(&meta.original_size.to_string()) =>
        {
            Held::Same
        }
        Some(_) => Held::Other,
    })
}

/// A file gone before it was stored: whether a peer agent stored it (its
/// key is in S3), which only the log line tells apart.
async fn gone<S: ObjectStore>(sink: &S, key: &str) -> Result<Outcome, UploadError> {
    let in_s3 = sink.head(key).await?.is_some();
    Ok(Outcome::Gone { in_s3 })
}

/// One attempt to store the file: under its key, or, if S3 holds other
/// bytes there, under its conflict key.
pub async fn upload_once<S: ObjectStore>(
    sink: &S,
    job: &Job,
    level: i32,
    part_bytes: u64,
) -> Result<Outcome, UploadError> {
    let mut meta = job.meta.clone();
    let stored = match store(sink, job, &job.key, &mut meta, level, part_bytes).await? {
        Stored::New {
            compressed_bytes,
            parts,
        } => {
            return Ok(Outcome::Uploaded {
                compressed_bytes,
                parts,
                content_hash: meta.content_hash,
            });
        }
        Stored::Early(Outcome::Gone { .. }) => return gone(sink, &job.key).await,
        Stored::Early(outcome) => return Ok(outcome),
        Stored::Taken => held(sink, &job.key, &meta).await?,
    };
    match stored {
        Held::Same => {
            return Ok(Outcome::Duplicate {
                content_hash: meta.content_hash,
            });
        }
        Held::Unknown => return Ok(Outcome::Unverified),
        Held::Other => {}
    }
    let conflict = job
        .keys
        .conflict_key(&meta.original_name, &conflict_tag(meta.content_hash))
        .map_err(|source| UploadError::ConflictKey {
            path: job.path.clone(),
            source,
        })?
        .key;
    match store(sink, job, &conflict, &mut meta, level, part_bytes).await? {
        Stored::New {
            compressed_bytes, ..
        } => Ok(Outcome::Conflict {
            key: conflict,
            compressed_bytes,
            content_hash: meta.content_hash,
        }),
        Stored::Early(outcome) => Ok(outcome),
        Stored::Taken => match held(sink, &conflict, &meta).await? {
            Held::Same => Ok(Outcome::Conflict {
                key: conflict,
                compressed_bytes: 0,
                content_hash: meta.content_hash,
            }),
            Held::Other | Held::Unknown => Err(UploadError::HashClash {
                key: conflict,
                path: job.path.clone(),
            }),
        },
    }
}

/// Compresses the file and stores it under `key` with `If-None-Match: *`,
/// filling in `meta.content_hash`. A read that fails because the file
/// changed under it (it shrank or grew past the size pledged to zstd) is a
/// changed file, waited for again, not an unreadable one.
async fn store<S: ObjectStore>(
    sink: &S,
    job: &Job,
    key: &str,
    meta: &mut ObjectMeta,
    level: i32,
    part_bytes: u64,
) -> Result<Stored, UploadError> {
    let result = store_as_judged(sink, job, key, meta, level, part_bytes).await;
    if let Err(UploadError::Read { .. }) = result
        && let Some(outcome) = recheck(&job.path, job.stat)
    {
        return Ok(Stored::Early(outcome));
    }
    result
}

async fn store_as_judged<S: ObjectStore>(
    sink: &S,
    job: &Job,
    key: &str,
    meta: &mut ObjectMeta,
    level: i32,
    part_bytes: u64,
) -> Result<Stored, UploadError> {
    // Opening and compressing the first part share one trip to the blocking
    // pool: most files fit in one part, so this is their only one.
    let (path, expect, lease) = (job.path.clone(), job.stat, job.lease);
    let first = blocking(&job.path, move || {
        Ok(match open_expected(&path, expect, lease)? {
            Ok(file) if whole(expect.size, part_bytes) => {
                match compress_whole(file, expect, level)? {
                    Some((frame, hash)) => Ok(First::Whole(frame, hash)),
                    None => Err(Outcome::Changed),
                }
            }
            Ok(file) => {
                let mut c = Compressor::new(file, expect, level)?;
                let chunk = c.next_chunk(part_bytes)?;
                Ok(First::Streaming(Box::new(c), chunk))
            }
            Err(outcome) => Err(outcome),
        })
    })
    .await?;
    let (mut compressor, first) = match first {
        Ok(First::Whole(frame, hash)) => return put_whole(sink, job, key, meta, frame, hash).await,
        Ok(First::Streaming(c, chunk)) if c.done => {
            let hash = c.hash();
            return put_whole(sink, job, key, meta, chunk, hash).await;
        }
        Ok(First::Streaming(c, chunk)) => (*c, chunk),
        Err(outcome) => return Ok(Stored::Early(outcome)),
    };

    // A multipart upload: its metadata, the content hash included, is set
    // when it starts, so hash the whole file first.
    let (path, expect, lease) = (job.path.clone(), job.stat, job.lease);
    let pre = blocking(&job.path, move || {
        match open_expected(&path, expect, lease)? {
            Ok(file) => hash_file(file).map(Some),
            Err(_) => Ok(None),
        }
    })
    .await?;
    let Some(pre_hash) = pre else {
        return Ok(Stored::Early(Outcome::Changed));
    };
    meta.content_hash = pre_hash;
    let upload_id = sink.start_multipart(key, &put_options(key, meta)).await?;
    let result = async {
        let mut parts = Vec::new();
        let mut compressed_bytes = first.len() as u64;
        parts.push(sink.put_part(key, &upload_id, 1, first).await?);
        while !compressor.done {
            let (c, chunk) = next_chunk(compressor, part_bytes, &job.path).await?;
            compressor = c;
            if chunk.is_empty() {
                break;
            }
            if parts.len() == MAX_PARTS {
                return Err(UploadError::TooManyParts {
                    path: job.path.clone(),
                    part_bytes,
                });
            }
            compressed_bytes += chunk.len() as u64;
            let number = i32::try_from(parts.len() + 1).unwrap_or(i32::MAX);
            parts.push(sink.put_part(key, &upload_id, number, chunk).await?);
        }
        // What was compressed must be what was hashed, and the file must
        // still be what was judged finished.
        if compressor.hash() != pre_hash {
            return Ok(Stored::Early(Outcome::Changed));
        }
        if let Some(outcome) = recheck(&job.path, job.stat) {
            return Ok(Stored::Early(outcome));
        }
        let n = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        match sink
            .complete_multipart(key, &upload_id, parts, &PutMode::Create)
            .await
        {
            Ok(_) => Ok(Stored::New {
                compressed_bytes,
                parts: n,
            }),
            Err(S3Error::AlreadyExists { .. }) => Ok(Stored::Taken),
            Err(e) => Err(UploadError::from(e)),
        }
    }
    .await;
    if !matches!(result, Ok(Stored::New { .. })) {
        abort(sink, key, &upload_id).await;
    }
    result
}

/// Stores a file compressed whole with one conditional put, once the file
/// is known to be still what was judged finished.
async fn put_whole<S: ObjectStore>(
    sink: &S,
    job: &Job,
    key: &str,
    meta: &mut ObjectMeta,
    frame: Vec<u8>,
    hash: u128,
) -> Result<Stored, UploadError> {
    if let Some(outcome) = recheck(&job.path, job.stat) {
        return Ok(Stored::Early(outcome));
    }
    meta.content_hash = hash;
    let compressed_bytes = frame.len() as u64;
    match sink
        .put(key, frame, &PutMode::Create, &put_options(key, meta))
        .await
    {
        Ok(_) => Ok(Stored::New {
            compressed_bytes,
            parts: 1,
        }),
        Err(S3Error::AlreadyExists { .. }) => Ok(Stored::Taken),
        Err(e) => Err(e.into()),
    }
}

/// Best effort: a leftover upload is also removed by the bucket's lifecycle rule.
pub async fn abort<S: ObjectStore>(sink: &S, key: &str, upload_id: &str) {
    if let Err(e) = sink.abort_multipart(key, upload_id).await {
        tracing::warn!(key, upload_id, error = %e,
            "could not abort a multipart upload; the bucket's lifecycle rule will remove it");
    }
}
