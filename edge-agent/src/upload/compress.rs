//! A file's bytes to one zstd frame and their content hash: small files
//! whole on a context each thread keeps, larger ones streamed a part at a
//! time, off the async threads.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use super::error::UploadError;
use crate::tracker::FileStat;

/// Reads through to `inner` while hashing what passes.
pub(super) struct Hashing<R> {
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
pub(super) struct Compressor {
    enc: zstd::stream::read::Encoder<'static, BufReader<Hashing<File>>>,
    pub(super) done: bool,
}

impl Compressor {
    pub(super) fn new(file: File, expect: FileStat, level: i32) -> io::Result<Self> {
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
    pub(super) fn next_chunk(&mut self, max: u64) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        let n = (&mut self.enc).take(max).read_to_end(&mut buf)?;
        if (n as u64) < max {
            self.done = true;
        }
        Ok(buf)
    }

    /// The hash of everything read (final once `done`).
    pub(super) fn hash(&self) -> u128 {
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
pub(super) struct Reused {
    pub(super) level: i32,
    cctx: zstd::zstd_safe::CCtx<'static>,
    input: Vec<u8>,
}

thread_local! {
    pub(super) static REUSED: std::cell::RefCell<Option<Reused>> = const { std::cell::RefCell::new(None) };
}

pub(super) fn zstd_error(code: usize) -> io::Error {
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
pub(super) fn whole(size: u64, part_bytes: u64) -> bool {
    size <= WHOLE_FILE_MAX_BYTES
        && zstd::zstd_safe::compress_bound(size as usize) as u64 <= part_bytes
}

/// Reads `file` whole and compresses it on this thread's kept context:
/// the frame and the content's xxh3-128, or `None` if the file no longer
/// has the size it was judged finished with.
pub(super) fn compress_whole(
    file: File,
    expect: FileStat,
    level: i32,
) -> io::Result<Option<(Vec<u8>, u128)>> {
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
pub(super) fn hash_file(file: File) -> io::Result<u128> {
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
pub(super) async fn blocking<T: Send + 'static>(
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
pub(super) async fn next_chunk(
    mut c: Compressor,
    max: u64,
    path: &Path,
) -> Result<(Compressor, Vec<u8>), UploadError> {
    blocking(path, move || c.next_chunk(max).map(|chunk| (c, chunk))).await
}

/// How a file's compression began: done in one call, or streaming with
/// its first part compressed.
pub(super) enum First {
    Whole(Vec<u8>, u128),
    Streaming(Box<Compressor>, Vec<u8>),
}
