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

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::HashMap;

use relay_shared::keys::KeyScheme;
use relay_shared::meta::{self, CONTENT_HASH, ORIGINAL_SIZE, content_hash_hex};
use relay_shared::store::{ObjectStore, PutMode, PutOptions, S3Error};
use xxhash_rust::xxh3::Xxh3;

use crate::tracker::FileStat;

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
}

/// S3 caps a multipart upload at this many parts.
pub const MAX_PARTS: usize = 10_000;

/// How an object's metadata is sent: the content type and encoding of a
/// raw object, the file's name and size, the source and the content hash.
pub fn put_options(m: &ObjectMeta) -> PutOptions {
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
    Uploaded { compressed_bytes: u64, parts: u32 },
    /// S3 already had the key (412) with exactly this file's bytes (its
    /// content hash and size match): an earlier run or a peer agent uploaded it.
    Duplicate,
    /// S3 had the key with other bytes: the name was used again. This file
    /// is stored (now, or already by an earlier attempt) under `key`, next
    /// to the first.
    Conflict { key: String, compressed_bytes: u64 },
    /// S3 has the key, but its object carries no content hash (an older
    /// agent stored it), so whether it holds these bytes is unknown. The
    /// file is kept on disk.
    Unverified,
    /// The file disappeared before it could be read: a peer agent took it.
    Gone,
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

/// Reads through to `inner` while hashing what passes.
struct Hashing<R> {
    inner: R,
    hasher: Xxh3,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads a file through a zstd encoder in bounded chunks, hashing its bytes.
struct Compressor {
    enc: zstd::stream::read::Encoder<'static, BufReader<Hashing<File>>>,
    done: bool,
}

pub(crate) enum Opened {
    Ready(File),
    Gone,
    NotRegular,
}

/// Opens `path` for reading only if it is a regular file, without following
/// a symlink (`O_NOFOLLOW`) and without blocking on a FIFO (`O_NONBLOCK`),
/// then checks the type of what was opened: a name swapped for a link or a
/// special file between the check and the open is never read.
pub(crate) fn open_regular(path: &Path) -> io::Result<Opened> {
    use rustix::fs::{FileType, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(Opened::Gone),
        Err(rustix::io::Errno::LOOP) => return Ok(Opened::NotRegular),
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Ok(Opened::NotRegular);
    }
    Ok(Opened::Ready(File::from(fd)))
}

impl Compressor {
    fn new(file: File, expect: FileStat, level: i32) -> io::Result<Self> {
        let hashing = Hashing {
            inner: file,
            hasher: Xxh3::new(),
        };
        let mut enc = zstd::stream::read::Encoder::with_buffer(
            BufReader::with_capacity(128 * 1024, hashing),
            level,
        )?;
        // The frame records its content size (the processor can check it
        // against its limit before decoding) and a checksum of the content;
        // a size pledge also makes the encoder fail if the file grows mid-read.
        enc.include_checksum(true)?;
        enc.include_contentsize(true)?;
        enc.set_pledged_src_size(Some(expect.size))?;
        Ok(Self { enc, done: false })
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

    /// The hash of everything read (final once `done`).
    fn hash(&self) -> u128 {
        self.enc.get_ref().get_ref().hasher.digest128()
    }
}

/// Files up to this size are read whole and compressed in one call on a
/// context kept by the compressing thread: most files. A fresh context per
/// file costs more than compressing a 100 KB file, in zeroing and faulting
/// in its tables and buffers. Larger files stream through their own
/// context, one part at a time, and amortise it.
pub const WHOLE_FILE_MAX_BYTES: u64 = 2 << 20;

/// A compression context and input buffer kept by one blocking-pool thread
/// for as long as the thread lives (tokio ends idle ones after 10 s), so at
/// most `RELAY_CONCURRENCY` of them, each sized by the largest file it read.
struct Reused {
    level: i32,
    cctx: zstd::zstd_safe::CCtx<'static>,
    input: Vec<u8>,
}

thread_local! {
    static REUSED: std::cell::RefCell<Option<Reused>> = const { std::cell::RefCell::new(None) };
}

fn zstd_error(code: usize) -> io::Error {
    io::Error::other(format!("zstd: {}", zstd::zstd_safe::get_error_name(code)))
}

impl Reused {
    fn new(level: i32) -> io::Result<Self> {
        use zstd::zstd_safe::CParameter;
        let mut cctx = zstd::zstd_safe::CCtx::try_create()
            .ok_or_else(|| io::Error::other("zstd: cannot allocate a compression context"))?;
        // As the streaming path: the frame records its content size and a
        // checksum of the content.
        for p in [
            CParameter::CompressionLevel(level),
            CParameter::ChecksumFlag(true),
            CParameter::ContentSizeFlag(true),
        ] {
            cctx.set_parameter(p).map_err(zstd_error)?;
        }
        Ok(Self {
            level,
            cctx,
            input: Vec::new(),
        })
    }
}

/// Whether a file of `size` bytes takes the whole-file path: small enough,
/// and its frame sure to fit one part.
fn whole(size: u64, part_bytes: u64) -> bool {
    size <= WHOLE_FILE_MAX_BYTES
        && zstd::zstd_safe::compress_bound(size as usize) as u64 <= part_bytes
}

/// Reads `file` whole and compresses it on this thread's kept context:
/// the frame and the content's xxh3-128, or `None` if the file no longer
/// has the size it was judged finished with.
fn compress_whole(file: File, expect: FileStat, level: i32) -> io::Result<Option<(Vec<u8>, u128)>> {
    REUSED.with_borrow_mut(|slot| {
        let kept = match slot {
            Some(kept) if kept.level == level => kept,
            _ => slot.insert(Reused::new(level)?),
        };
        let input = &mut kept.input;
        input.clear();
        // One byte more than expected shows a file that grew.
        input.reserve(expect.size as usize + 1);
        file.take(expect.size + 1).read_to_end(input)?;
        if input.len() as u64 != expect.size {
            return Ok(None);
        }
        let hash = xxhash_rust::xxh3::xxh3_128(input);
        let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(input.len()));
        kept.cctx.compress2(&mut frame, input).map_err(zstd_error)?;
        Ok(Some((frame, hash)))
    })
}

/// The content hash of a whole file, read separately: a multipart upload's
/// metadata is set before its parts are read.
fn hash_file(file: File) -> io::Result<u128> {
    let mut h = Hashing {
        inner: BufReader::with_capacity(128 * 1024, file),
        hasher: Xxh3::new(),
    };
    io::copy(&mut h, &mut io::sink())?;
    Ok(h.hasher.digest128())
}

/// The 16 hex digits that name a conflict copy: the top of the content hash.
pub fn conflict_tag(hash: u128) -> String {
    format!("{:016x}", (hash >> 64) as u64)
}

/// Runs blocking file work off the async threads; a failure names the file.
async fn blocking<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, UploadError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join| io::Error::other(join.to_string()))
        .and_then(|r| r)
        .map_err(|source| UploadError::Read {
            path: path.to_owned(),
            source,
        })
}

/// Reads the next chunk off the async threads, keeping the compressor's state.
async fn next_chunk(
    mut c: Compressor,
    max: u64,
    path: &Path,
) -> Result<(Compressor, Vec<u8>), UploadError> {
    blocking(path, move || c.next_chunk(max).map(|chunk| (c, chunk))).await
}

/// A regular file opened for a lease probe, or `None` (gone, a link, a
/// special file, unreadable).
pub(crate) fn open_for_probe(path: &Path) -> Option<File> {
    match open_regular(path) {
        Ok(Opened::Ready(f)) => Some(f),
        _ => None,
    }
}

/// Opens the file if it is still a regular file with the size and mtime it
/// was judged finished with and, if it was judged by a lease, no process
/// holds it open for writing; otherwise why not.
fn open_expected(
    path: &Path,
    expect: FileStat,
    lease: Option<crate::lease::Leases>,
) -> io::Result<Result<File, Outcome>> {
    let file = match open_regular(path)? {
        Opened::Ready(f) => f,
        Opened::Gone => return Ok(Err(Outcome::Gone)),
        Opened::NotRegular => return Ok(Err(Outcome::NotRegular)),
    };
    if FileStat::of(&file.metadata()?) != expect {
        return Ok(Err(Outcome::Changed));
    }
    if let Some(leases) = lease
        && leases.probe(&file) == crate::lease::Probe::OpenForWrite
    {
        return Ok(Err(Outcome::Open));
    }
    Ok(Ok(file))
}

/// The file must still be what was judged finished when it was opened, or
/// the bytes just compressed may not be the file's final content. A file that
/// vanished meanwhile was taken by a peer agent: the bytes read are complete
/// (an open descriptor keeps an unlinked file readable), but storing them
/// would only race the peer, so the upload stops.
fn recheck(path: &Path, expect: FileStat) -> Option<Outcome> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && FileStat::of(&m) == expect => None,
        Ok(_) => Some(Outcome::Changed),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(Outcome::Gone),
        Err(_) => Some(Outcome::Changed),
    }
}

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
            });
        }
        Stored::Early(outcome) => return Ok(outcome),
        Stored::Taken => held(sink, &job.key, &meta).await?,
    };
    match stored {
        Held::Same => return Ok(Outcome::Duplicate),
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
        }),
        Stored::Early(outcome) => Ok(outcome),
        Stored::Taken => match held(sink, &conflict, &meta).await? {
            Held::Same => Ok(Outcome::Conflict {
                key: conflict,
                compressed_bytes: 0,
            }),
            Held::Other | Held::Unknown => Err(UploadError::HashClash {
                key: conflict,
                path: job.path.clone(),
            }),
        },
    }
}

/// Compresses the file and stores it under `key` with `If-None-Match: *`,
/// filling in `meta.content_hash`.
async fn store<S: ObjectStore>(
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
    let upload_id = sink.start_multipart(key, &put_options(meta)).await?;
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

/// How a file's compression began: done in one call, or streaming with
/// its first part compressed.
enum First {
    Whole(Vec<u8>, u128),
    Streaming(Box<Compressor>, Vec<u8>),
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
        .put(key, frame, &PutMode::Create, &put_options(meta))
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
/// Transient errors back off exponentially with jitter, without limit,
/// holding the upload slot: they pass. A permanent one (an unreadable file,
/// too many parts, access denied) returns [`Outcome::Failed`] at once, so
/// the caller sets the file aside and its slot goes to other files. Nothing
/// is given up on: the caller retries set-aside files slowly. Once
/// `stopping` turns true (shutdown), a backoff ends at once with
/// [`Outcome::Interrupted`], so SIGTERM does not wait out a long backoff;
/// an attempt already under way may finish.
pub async fn upload_with_retry<S: ObjectStore>(
    sink: &S,
    job: &Job,
    level: i32,
    part_bytes: u64,
    policy: &RetryPolicy,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    on_error: impl Fn(&UploadError, u32, Duration),
) -> (Outcome, u32) {
    let mut backoff = relay_shared::retry::backoff(policy.min_delay, policy.max_delay);
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        match upload_once(sink, job, level, part_bytes).await {
            Ok(outcome) => return (outcome, attempt - 1),
            Err(e) if e.is_transient() => {
                let delay = backoff.next().unwrap_or(policy.max_delay);
                on_error(&e, attempt, delay);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    // An error means the agent is gone; stop as for shutdown.
                    _ = stopping.wait_for(|stop| *stop) => return (Outcome::Interrupted, attempt),
                }
            }
            Err(e) => {
                on_error(&e, attempt, policy.permanent_delay);
                let failed = Outcome::Failed {
                    error: e.to_string(),
                    kind: e.kind(),
                };
                return (failed, attempt - 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_shared::testing::{Fault, MemStore};
    use std::sync::Mutex;

    /// The in-memory S3 every unit test of the upload runs against.
    fn store() -> MemStore {
        MemStore::new("b")
    }

    fn body(s3: &MemStore, key: &str) -> Vec<u8> {
        s3.bytes(key).expect("stored")
    }

    fn job_for(dir: &Path, name: &str, content: &[u8]) -> Job {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        let stat = FileStat::of(&std::fs::metadata(&path).unwrap());
        let keys = KeyScheme::new("raw/", "s", relay_shared::keys::TimeFormat::Auto).unwrap();
        Job {
            path,
            rel: name.into(),
            key: keys.raw_key(name).unwrap().key,
            keys,
            stat,
            lease: None,
            meta: ObjectMeta {
                original_name: name.into(),
                original_size: content.len() as u64,
                source_id: "s".into(),
                content_hash: 0,
                canary: false,
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
        let s3 = store();
        let out = upload_once(&s3, &job, 3, 5 << 20).await.unwrap();
        assert!(matches!(out, Outcome::Uploaded { parts: 1, .. }), "{out:?}");
        let stored = body(&s3, &job.key);
        assert_eq!(zstd::decode_all(&stored[..]).unwrap(), content);
        assert_eq!(
            upload_once(&s3, &job, 3, 5 << 20).await.unwrap(),
            Outcome::Duplicate
        );
    }

    /// The frame's header: (content size, checksum flag).
    fn frame_header(frame: &[u8]) -> (Option<u64>, bool) {
        let size = zstd::zstd_safe::get_frame_content_size(frame).unwrap();
        // Frame header descriptor, after the 4-byte magic: bit 2 is the
        // content checksum flag.
        (size, frame[4] & 0b100 != 0)
    }

    /// One context per thread serves file after file: each frame must
    /// stand alone (nothing carried over from the previous file), record
    /// its size and checksum as the streaming path does, and come with the
    /// hash of exactly its content.
    #[test]
    fn the_kept_context_makes_frames_that_stand_alone() {
        let dir = tempfile::tempdir().unwrap();
        let contents = [
            b"# c\n{\"a\":1}\n".repeat(5000),
            Vec::new(),
            noise(70_000),
            b"# c\n{\"a\":1}\n".repeat(5000),
            b"{\"b\":2}\n".repeat(3),
        ];
        let mut frames = Vec::new();
        for (i, content) in contents.iter().enumerate() {
            // A level change on the same thread takes a new context.
            let level = if i == 3 { 19 } else { 3 };
            let job = job_for(dir.path(), &format!("{i}.json"), content);
            let file = File::open(&job.path).unwrap();
            let (frame, hash) = compress_whole(file, job.stat, level).unwrap().unwrap();
            assert_eq!(zstd::decode_all(&frame[..]).unwrap(), *content, "file {i}");
            assert_eq!(hash, xxhash_rust::xxh3::xxh3_128(content), "file {i}");
            assert_eq!(frame_header(&frame), (Some(content.len() as u64), true));
            assert_eq!(
                REUSED.with_borrow(|r| r.as_ref().map(|r| r.level)),
                Some(level)
            );
            frames.push(frame);
        }
        // The same content at the same level gives the same frame whatever
        // came before it.
        let again = job_for(dir.path(), "99.json", &contents[0]);
        let (frame, _) = compress_whole(File::open(&again.path).unwrap(), again.stat, 3)
            .unwrap()
            .unwrap();
        assert_eq!(frame, frames[0]);
    }

    /// A file whose size is not the one it was judged finished with is not
    /// compressed from what happens to be there.
    #[test]
    fn a_file_of_another_size_than_judged_is_not_compressed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let job = job_for(dir.path(), "1.json", &b"{}\n".repeat(100));
        for size in [job.stat.size - 1, job.stat.size + 1] {
            let stat = FileStat { size, ..job.stat };
            let file = File::open(&job.path).unwrap();
            assert!(compress_whole(file, stat, 3).unwrap().is_none(), "{size}");
        }
    }

    /// Both ways of compressing a file that fits one part: whole (up to
    /// WHOLE_FILE_MAX_BYTES), or streaming into a single part above it.
    #[tokio::test]
    async fn files_either_side_of_the_whole_file_limit_are_stored_in_one_part() {
        let dir = tempfile::tempdir().unwrap();
        let line = b"{\"id\":1,\"text\":\"some words\"}\n";
        let limit = WHOLE_FILE_MAX_BYTES as usize;
        let s3 = store();
        for (name, len) in [("1.json", limit), ("2.json", limit + 1)] {
            let content: Vec<u8> = line.iter().copied().cycle().take(len).collect();
            let job = job_for(dir.path(), name, &content);
            assert_eq!(whole(job.stat.size, 5 << 20), len == limit);
            let out = upload_once(&s3, &job, 3, 5 << 20).await.unwrap();
            assert!(matches!(out, Outcome::Uploaded { parts: 1, .. }), "{out:?}");
            let stored = body(&s3, &job.key);
            assert_eq!(zstd::decode_all(&stored[..]).unwrap(), content);
            assert_eq!(frame_header(&stored), (Some(len as u64), true));
            let meta = s3.head(&job.key).await.unwrap().unwrap().metadata;
            assert_eq!(
                meta.get(CONTENT_HASH),
                Some(&content_hash_hex(xxhash_rust::xxh3::xxh3_128(&content)))
            );
        }
        // Never whole when the frame might not fit one part.
        assert!(!whole(1 << 20, 1 << 20));
    }

    #[tokio::test]
    async fn large_files_go_multipart_and_decode_whole() {
        let dir = tempfile::tempdir().unwrap();
        let content = noise(2_500_000);
        let job = job_for(dir.path(), "2.json", &content);
        let s3 = store();
        // A tiny part size, to exercise several parts without megabytes of data.
        let out = upload_once(&s3, &job, 3, 1_000_000).await.unwrap();
        assert!(matches!(out, Outcome::Uploaded { parts: 3, .. }), "{out:?}");
        let stored = body(&s3, &job.key);
        assert_eq!(zstd::decode_all(&stored[..]).unwrap(), content);

        // A second multipart upload of the same key completes as a duplicate
        // and its parts are aborted.
        assert_eq!(
            upload_once(&s3, &job, 3, 1_000_000).await.unwrap(),
            Outcome::Duplicate
        );
        let aborted = s3
            .calls()
            .iter()
            .filter(|(op, _)| *op == "AbortMultipartUpload")
            .count();
        assert_eq!(aborted, 1);
        assert_eq!(s3.open_uploads(), 0);
    }

    #[tokio::test]
    async fn changed_and_vanished_files_are_not_uploaded() {
        let dir = tempfile::tempdir().unwrap();
        let job = job_for(dir.path(), "3.json", b"{\"a\":1}\n");
        std::fs::write(&job.path, b"{\"a\":1}\n{\"b\":2}\n").unwrap();
        let s3 = store();
        assert_eq!(
            upload_once(&s3, &job, 3, 5 << 20).await.unwrap(),
            Outcome::Changed
        );
        std::fs::remove_file(&job.path).unwrap();
        assert_eq!(
            upload_once(&s3, &job, 3, 5 << 20).await.unwrap(),
            Outcome::Gone
        );
        assert!(s3.keys().is_empty());
    }

    /// A shutdown signal that never fires.
    fn running() -> tokio::sync::watch::Receiver<bool> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        std::mem::forget(tx);
        rx
    }

    #[tokio::test]
    async fn shutdown_ends_a_backoff_at_once_and_leaves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let job = job_for(dir.path(), "1763800000009.json", b"{\"a\":9}\n");
        let s3 = store();
        s3.fail_next(1, Fault::Throttle);
        let slow = RetryPolicy {
            min_delay: Duration::from_secs(600),
            max_delay: Duration::from_secs(600),
            permanent_delay: Duration::from_secs(600),
        };
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let started = std::time::Instant::now();
        let upload = upload_with_retry(&s3, &job, 3, 5 << 20, &slow, stopping, |_, _, _| {});
        let (out, _) = tokio::join!(upload, async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stop.send_replace(true);
        })
        .0;
        assert!(matches!(out, Outcome::Interrupted), "{out:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "waited out the backoff"
        );
        assert!(job.path.exists(), "the file stays for the next start");
        assert!(s3.keys().is_empty());
    }

    #[tokio::test]
    async fn transient_errors_are_retried_and_permanent_ones_set_the_file_aside() {
        let dir = tempfile::tempdir().unwrap();
        let job = job_for(dir.path(), "1763800000004.json", b"{\"a\":1}\n");
        let s3 = store();
        s3.fail_next(2, Fault::Throttle);
        let seen = Mutex::new(Vec::new());
        let (out, retries) =
            upload_with_retry(&s3, &job, 3, 5 << 20, &fast(), running(), |e, _, _| {
                seen.lock().unwrap().push(e.kind());
            })
            .await;
        assert!(matches!(out, Outcome::Uploaded { .. }));
        assert_eq!(retries, 2);
        assert_eq!(*seen.lock().unwrap(), ["throttled", "throttled"]);
        assert!(s3.bytes(&job.key).is_some());

        // A permanent error returns at once, so the upload slot is freed.
        let job = job_for(dir.path(), "1763800000005.json", b"{\"a\":2}\n");
        s3.fail_next(1, Fault::Denied);
        let (out, retries) =
            upload_with_retry(&s3, &job, 3, 5 << 20, &fast(), running(), |_, _, _| {}).await;
        assert!(
            matches!(
                out,
                Outcome::Failed {
                    kind: "access_denied",
                    ..
                }
            ),
            "{out:?}"
        );
        assert_eq!(retries, 0);
    }

    /// A name used again with other bytes: the 412 is not taken for success.
    /// The new bytes go to a conflict key next to the first, and the same
    /// bytes offered again are a verified duplicate of that conflict copy.
    #[tokio::test]
    async fn a_name_used_again_with_other_bytes_goes_to_a_conflict_key() {
        let dir = tempfile::tempdir().unwrap();
        let s3 = store();
        let first = job_for(dir.path(), "1763800000006.json", b"{\"v\":1}\n");
        assert!(matches!(
            upload_once(&s3, &first, 3, 5 << 20).await.unwrap(),
            Outcome::Uploaded { .. }
        ));
        let second = job_for(dir.path(), "1763800000006.json", b"{\"v\":2}\n{\"v\":3}\n");
        let Outcome::Conflict { key, .. } = upload_once(&s3, &second, 3, 5 << 20).await.unwrap()
        else {
            panic!()
        };
        assert!(
            key.starts_with("raw/s/2025/11/22/08/1763800000006.") && key.ends_with(".json.zst"),
            "{key}"
        );
        assert_ne!(key, first.key);
        assert_eq!(
            zstd::decode_all(&body(&s3, &first.key)[..]).unwrap(),
            b"{\"v\":1}\n"
        );
        assert_eq!(
            zstd::decode_all(&body(&s3, &key)[..]).unwrap(),
            b"{\"v\":2}\n{\"v\":3}\n"
        );
        // After a crash, the same bytes again: verified against the conflict copy.
        assert_eq!(
            upload_once(&s3, &second, 3, 5 << 20).await.unwrap(),
            Outcome::Conflict {
                key,
                compressed_bytes: 0
            }
        );
        assert_eq!(s3.keys().len(), 2);
        // And the first file's bytes again: a plain duplicate.
        std::fs::write(&first.path, b"{\"v\":1}\n").unwrap();
        let first = job_for(dir.path(), "1763800000006.json", b"{\"v\":1}\n");
        assert_eq!(
            upload_once(&s3, &first, 3, 5 << 20).await.unwrap(),
            Outcome::Duplicate
        );
    }

    #[tokio::test]
    async fn an_object_without_a_content_hash_is_not_taken_for_proof() {
        let dir = tempfile::tempdir().unwrap();
        let s3 = store();
        let job = job_for(dir.path(), "1763800000007.json", b"{\"v\":1}\n");
        s3.put(
            &job.key,
            b"old".to_vec(),
            &PutMode::Create,
            &PutOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            upload_once(&s3, &job, 3, 5 << 20).await.unwrap(),
            Outcome::Unverified
        );
    }

    #[tokio::test]
    async fn symlinks_and_fifos_are_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        let s3 = store();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), b"{\"secret\":1}\n").unwrap();
        let mut job = job_for(dir.path(), "1763800000008.json", b"x");
        std::fs::remove_file(&job.path).unwrap();
        std::os::unix::fs::symlink(outside.path(), &job.path).unwrap();
        job.stat = FileStat::of(&std::fs::metadata(&job.path).unwrap());
        assert_eq!(
            upload_once(&s3, &job, 3, 5 << 20).await.unwrap(),
            Outcome::NotRegular
        );

        let fifo = dir.path().join("1763800000009.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        job.path = fifo;
        // Opening a FIFO for reading would block until a writer came; here
        // it returns at once.
        let out =
            tokio::time::timeout(Duration::from_secs(5), upload_once(&s3, &job, 3, 5 << 20)).await;
        assert_eq!(out.unwrap().unwrap(), Outcome::NotRegular);
        assert!(s3.keys().is_empty());
    }
}
