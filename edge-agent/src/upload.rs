//! Compress one finished file and store it under its key, exactly once.
//!
//! The file is read through a streaming zstd encoder in chunks of at most the
//! multipart threshold, so memory per upload is bounded by one part whatever
//! the file's size. Both the single put and the multipart completion carry
//! `If-None-Match: *`: a 412 means S3 already has the key, which is success.

use std::fs::File;
use std::future::Future;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use relay_shared::s3::{Retry, S3Error};

use crate::tracker::FileStat;

/// Metadata stored with every raw object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub original_name: String,
    pub original_size: u64,
    pub source_id: String,
}

/// One uploaded part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub number: i32,
    pub etag: String,
    pub checksum_crc32c: Option<String>,
}

/// The S3 capabilities an upload needs. The real one is [`crate::s3::S3Sink`].
pub trait Sink: Clone + Send + Sync + 'static {
    /// PutObject with `If-None-Match: *`.
    fn put_new(
        &self,
        key: &str,
        body: Vec<u8>,
        meta: &ObjectMeta,
    ) -> impl Future<Output = Result<(), S3Error>> + Send;
    fn start_multipart(
        &self,
        key: &str,
        meta: &ObjectMeta,
    ) -> impl Future<Output = Result<String, S3Error>> + Send;
    fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<Part, S3Error>> + Send;
    /// CompleteMultipartUpload with `If-None-Match: *`.
    fn complete_new(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<Part>,
    ) -> impl Future<Output = Result<(), S3Error>> + Send;
    /// Best effort: a leftover upload is also removed by the bucket's lifecycle rule.
    fn abort(&self, key: &str, upload_id: &str) -> impl Future<Output = ()> + Send;
}

/// A file that is due for upload.
#[derive(Debug, Clone)]
pub struct Job {
    pub path: PathBuf,
    /// Path relative to the watch directory (the ledger's key).
    pub rel: String,
    pub key: String,
    pub stat: FileStat,
    pub meta: ObjectMeta,
}

/// How an upload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// S3 stored it now.
    Uploaded { compressed_bytes: u64, parts: u32 },
    /// S3 already had the key (412): an earlier run or a peer agent uploaded it.
    Duplicate,
    /// The file disappeared before it could be read: a peer agent took it.
    Gone,
    /// The file changed after it was judged finished; it goes back to settling.
    Changed,
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(transparent)]
    S3(#[from] S3Error),
}

impl UploadError {
    /// Whether retrying soon may succeed. Unreadable files and permanent S3
    /// errors need a person, so they are retried slowly.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::S3(e) if e.retry() == Retry::Transient)
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::S3(e) => e.kind(),
        }
    }
}

/// Reads a file through a zstd encoder in bounded chunks.
struct Compressor {
    enc: zstd::stream::read::Encoder<'static, BufReader<File>>,
    done: bool,
}

enum Opened {
    Ready(Compressor),
    Gone,
    Changed,
}

impl Compressor {
    fn open(path: &Path, expect: FileStat, level: i32) -> io::Result<Opened> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Gone),
            Err(e) => return Err(e),
        };
        if stat_of(&file.metadata()?) != expect {
            return Ok(Opened::Changed);
        }
        let mut enc = zstd::stream::read::Encoder::with_buffer(
            BufReader::with_capacity(128 * 1024, file),
            level,
        )?;
        // The frame records its content size (the processor can check it
        // against its limit before decoding) and a checksum of the content;
        // a size pledge also makes the encoder fail if the file grows mid-read.
        enc.include_checksum(true)?;
        enc.include_contentsize(true)?;
        enc.set_pledged_src_size(Some(expect.size))?;
        Ok(Opened::Ready(Self { enc, done: false }))
    }

    /// The next chunk of compressed output, at most `max` bytes.
    fn next_chunk(&mut self, max: u64) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        let n = (&mut self.enc).take(max).read_to_end(&mut buf)?;
        if (n as u64) < max {
            self.done = true;
        }
        Ok(buf)
    }
}

pub fn stat_of(m: &std::fs::Metadata) -> FileStat {
    FileStat {
        size: m.len(),
        mtime: m.modified().unwrap_or(std::time::UNIX_EPOCH),
    }
}

/// Runs a blocking read off the async threads, keeping the compressor's state.
async fn next_chunk(
    mut c: Compressor,
    max: u64,
    path: &Path,
) -> Result<(Compressor, Vec<u8>), UploadError> {
    let res = tokio::task::spawn_blocking(move || c.next_chunk(max).map(|chunk| (c, chunk))).await;
    match res {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(UploadError::Read {
            path: path.to_owned(),
            source,
        }),
        Err(join) => Err(UploadError::Read {
            path: path.to_owned(),
            source: io::Error::other(join.to_string()),
        }),
    }
}

/// The file must still be what was judged finished when it was opened, or
/// the bytes just compressed may not be the file's final content. A file that
/// vanished meanwhile was taken by a peer agent: the bytes read are complete
/// (an open descriptor keeps an unlinked file readable), but storing them
/// would only race the peer, so the upload stops.
fn recheck(path: &Path, expect: FileStat) -> Option<Outcome> {
    match std::fs::metadata(path) {
        Ok(m) if stat_of(&m) == expect => None,
        Ok(_) => Some(Outcome::Changed),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(Outcome::Gone),
        Err(_) => Some(Outcome::Changed),
    }
}

/// One attempt to store the file.
pub async fn upload_once<S: Sink>(
    sink: &S,
    job: &Job,
    level: i32,
    part_bytes: u64,
) -> Result<Outcome, UploadError> {
    // Opening and compressing the first part share one trip to the blocking
    // pool: most files fit in one part, so this is their only one.
    let (path, expect) = (job.path.clone(), job.stat);
    let first = tokio::task::spawn_blocking(
        move || -> io::Result<Result<(Compressor, Vec<u8>), Outcome>> {
            Ok(match Compressor::open(&path, expect, level)? {
                Opened::Ready(mut c) => {
                    let chunk = c.next_chunk(part_bytes)?;
                    Ok((c, chunk))
                }
                Opened::Gone => Err(Outcome::Gone),
                Opened::Changed => Err(Outcome::Changed),
            })
        },
    )
    .await
    .map_err(|e| io::Error::other(e.to_string()))
    .and_then(|r| r)
    .map_err(|source| UploadError::Read {
        path: job.path.clone(),
        source,
    })?;
    let (mut compressor, first) = match first {
        Ok(v) => v,
        Err(outcome) => return Ok(outcome),
    };
    if compressor.done {
        if let Some(outcome) = recheck(&job.path, job.stat) {
            return Ok(outcome);
        }
        let compressed_bytes = first.len() as u64;
        return match sink.put_new(&job.key, first, &job.meta).await {
            Ok(()) => Ok(Outcome::Uploaded {
                compressed_bytes,
                parts: 1,
            }),
            Err(S3Error::AlreadyExists { .. }) => Ok(Outcome::Duplicate),
            Err(e) => Err(e.into()),
        };
    }

    let upload_id = sink.start_multipart(&job.key, &job.meta).await?;
    let result = async {
        let mut parts = Vec::new();
        let mut compressed_bytes = first.len() as u64;
        parts.push(sink.put_part(&job.key, &upload_id, 1, first).await?);
        while !compressor.done {
            let (c, chunk) = next_chunk(compressor, part_bytes, &job.path).await?;
            compressor = c;
            if chunk.is_empty() {
                break;
            }
            compressed_bytes += chunk.len() as u64;
            let number = i32::try_from(parts.len() + 1).unwrap_or(i32::MAX);
            parts.push(sink.put_part(&job.key, &upload_id, number, chunk).await?);
        }
        if let Some(outcome) = recheck(&job.path, job.stat) {
            return Ok(outcome);
        }
        let n = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        match sink.complete_new(&job.key, &upload_id, parts).await {
            Ok(()) => Ok(Outcome::Uploaded {
                compressed_bytes,
                parts: n,
            }),
            Err(S3Error::AlreadyExists { .. }) => Ok(Outcome::Duplicate),
            Err(e) => Err(UploadError::from(e)),
        }
    }
    .await;
    if !matches!(result, Ok(Outcome::Uploaded { .. })) {
        sink.abort(&job.key, &upload_id).await;
    }
    result
}

/// How long to wait between attempts.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Permanent errors (access denied, missing bucket) need a human; retrying
    /// them fast would only flood the logs.
    pub permanent_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            permanent_delay: Duration::from_secs(60),
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

/// Retries [`upload_once`] until the file is in S3 (or gone, or changed).
/// Transient errors back off exponentially with jitter, without limit;
/// permanent ones are retried slowly. Nothing is ever given up on: the caller
/// cancels the task at shutdown instead, and the file is relayed on restart.
pub async fn upload_with_retry<S: Sink>(
    sink: &S,
    job: &Job,
    level: i32,
    part_bytes: u64,
    policy: &RetryPolicy,
    on_error: impl Fn(&UploadError, u32, Duration),
) -> (Outcome, u32) {
    let mut backoff = backon::ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_jitter()
        .without_max_times()
        .build();
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let started = Instant::now();
        match upload_once(sink, job, level, part_bytes).await {
            Ok(outcome) => return (outcome, attempt - 1),
            Err(e) => {
                let delay = if e.is_transient() {
                    backoff.next().unwrap_or(policy.max_delay)
                } else {
                    policy.permanent_delay
                };
                on_error(&e, attempt, delay);
                tracing::trace!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "attempt failed"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_shared::s3::Failure;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    type Staged = Vec<(i32, Vec<u8>)>;

    /// An in-memory S3 that can be told to fail the next N calls.
    #[derive(Clone, Default)]
    struct FakeS3 {
        objects: Arc<Mutex<HashMap<String, Vec<u8>>>>,
        uploads: Arc<Mutex<HashMap<String, Staged>>>,
        fail_next: Arc<Mutex<Vec<S3Error>>>,
        aborted: Arc<Mutex<u32>>,
    }

    fn failure(retry: Retry, code: &str) -> S3Error {
        S3Error::Other(Box::new(Failure {
            bucket: "b".into(),
            key: "k".into(),
            op: "PutObject",
            retry,
            code: code.into(),
            message: format!("injected {code}"),
            source: "injected".into(),
        }))
    }

    impl FakeS3 {
        fn injected(&self) -> Result<(), S3Error> {
            match self.fail_next.lock().unwrap().pop() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    }

    impl Sink for FakeS3 {
        async fn put_new(&self, key: &str, body: Vec<u8>, _: &ObjectMeta) -> Result<(), S3Error> {
            self.injected()?;
            let mut objects = self.objects.lock().unwrap();
            if objects.contains_key(key) {
                return Err(S3Error::AlreadyExists {
                    bucket: "b".into(),
                    key: key.into(),
                });
            }
            objects.insert(key.into(), body);
            Ok(())
        }
        async fn start_multipart(&self, key: &str, _: &ObjectMeta) -> Result<String, S3Error> {
            self.injected()?;
            self.uploads.lock().unwrap().insert(key.into(), Vec::new());
            Ok(format!("upload-{key}"))
        }
        async fn put_part(
            &self,
            key: &str,
            _: &str,
            number: i32,
            body: Vec<u8>,
        ) -> Result<Part, S3Error> {
            self.injected()?;
            self.uploads
                .lock()
                .unwrap()
                .get_mut(key)
                .unwrap()
                .push((number, body));
            Ok(Part {
                number,
                etag: format!("e{number}"),
                checksum_crc32c: None,
            })
        }
        async fn complete_new(&self, key: &str, _: &str, parts: Vec<Part>) -> Result<(), S3Error> {
            self.injected()?;
            let staged = self.uploads.lock().unwrap().remove(key).unwrap();
            assert_eq!(parts.len(), staged.len());
            let mut objects = self.objects.lock().unwrap();
            if objects.contains_key(key) {
                return Err(S3Error::AlreadyExists {
                    bucket: "b".into(),
                    key: key.into(),
                });
            }
            objects.insert(
                key.into(),
                staged.into_iter().flat_map(|(_, b)| b).collect(),
            );
            Ok(())
        }
        async fn abort(&self, _: &str, _: &str) {
            *self.aborted.lock().unwrap() += 1;
        }
    }

    fn job_for(dir: &Path, name: &str, content: &[u8]) -> Job {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        let stat = stat_of(&std::fs::metadata(&path).unwrap());
        Job {
            path,
            rel: name.into(),
            key: format!("raw/s/{name}.zst"),
            stat,
            meta: ObjectMeta {
                original_name: name.into(),
                original_size: content.len() as u64,
                source_id: "s".into(),
            },
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            permanent_delay: Duration::from_millis(5),
        }
    }

    /// Pseudo-random bytes, so zstd cannot shrink them below a part.
    fn noise(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[tokio::test]
    async fn single_put_round_trips_and_second_is_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let content = b"# comment\n{\"a\":1}\n".repeat(100);
        let job = job_for(dir.path(), "1.json", &content);
        let s3 = FakeS3::default();
        let out = upload_once(&s3, &job, 3, 5 << 20).await.unwrap();
        assert!(matches!(out, Outcome::Uploaded { parts: 1, .. }), "{out:?}");
        let stored = s3.objects.lock().unwrap()[&job.key].clone();
        assert_eq!(zstd::decode_all(&stored[..]).unwrap(), content);
        assert_eq!(
            upload_once(&s3, &job, 3, 5 << 20).await.unwrap(),
            Outcome::Duplicate
        );
    }

    #[tokio::test]
    async fn large_files_go_multipart_and_decode_whole() {
        let dir = tempfile::tempdir().unwrap();
        let content = noise(2_500_000);
        let job = job_for(dir.path(), "2.json", &content);
        let s3 = FakeS3::default();
        // A tiny part size, to exercise several parts without megabytes of data.
        let out = upload_once(&s3, &job, 3, 1_000_000).await.unwrap();
        assert!(matches!(out, Outcome::Uploaded { parts: 3, .. }), "{out:?}");
        let stored = s3.objects.lock().unwrap()[&job.key].clone();
        assert_eq!(zstd::decode_all(&stored[..]).unwrap(), content);

        // A second multipart upload of the same key completes as a duplicate
        // and its parts are aborted.
        assert_eq!(
            upload_once(&s3, &job, 3, 1_000_000).await.unwrap(),
            Outcome::Duplicate
        );
        assert_eq!(*s3.aborted.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn changed_and_vanished_files_are_not_uploaded() {
        let dir = tempfile::tempdir().unwrap();
        let job = job_for(dir.path(), "3.json", b"{\"a\":1}\n");
        std::fs::write(&job.path, b"{\"a\":1}\n{\"b\":2}\n").unwrap();
        let s3 = FakeS3::default();
        assert_eq!(
            upload_once(&s3, &job, 3, 5 << 20).await.unwrap(),
            Outcome::Changed
        );
        std::fs::remove_file(&job.path).unwrap();
        assert_eq!(
            upload_once(&s3, &job, 3, 5 << 20).await.unwrap(),
            Outcome::Gone
        );
        assert!(s3.objects.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn transient_and_permanent_errors_are_retried_until_stored() {
        let dir = tempfile::tempdir().unwrap();
        let job = job_for(dir.path(), "4.json", b"{\"a\":1}\n");
        let s3 = FakeS3::default();
        *s3.fail_next.lock().unwrap() = vec![
            failure(Retry::Transient, "SlowDown"),
            failure(Retry::Permanent, "AccessDenied"),
            failure(Retry::Transient, "SlowDown"),
        ];
        let seen = Mutex::new(Vec::new());
        let (out, retries) = upload_with_retry(&s3, &job, 3, 5 << 20, &fast(), |e, _, _| {
            seen.lock().unwrap().push(e.kind());
        })
        .await;
        assert!(matches!(out, Outcome::Uploaded { .. }));
        assert_eq!(retries, 3);
        assert_eq!(
            *seen.lock().unwrap(),
            ["throttled", "access_denied", "throttled"]
        );
        assert!(s3.objects.lock().unwrap().contains_key(&job.key));
    }
}
