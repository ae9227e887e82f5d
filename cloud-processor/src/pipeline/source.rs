//! The object's stream as the pipeline reads it, remembering how it failed:
//! a broken download, or bytes that do not match S3's checksum, are told
//! apart from corrupt data.

use std::io::{self, BufRead, Read};

use relay_shared::checksum::ChecksumMismatch;

/// How the object's stream failed, if it did: a download that breaks
/// inside the zstd decoder is not corrupt data, and one whose bytes do not
/// match S3's checksum is told apart from both.
#[derive(Debug, Default)]
pub(super) struct SourceFailure(std::sync::atomic::AtomicU8);

impl SourceFailure {
    const BROKE: u8 = 1;
    const MISMATCH: u8 = 2;

    fn note(&self, e: &io::Error) {
        let kind = if ChecksumMismatch::is(e) {
            Self::MISMATCH
        } else {
            Self::BROKE
        };
        self.0.store(kind, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the stream broke (a network fault).
    pub(super) fn broke(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed) == Self::BROKE
    }

    /// Whether the bytes did not match S3's checksum.
    pub(super) fn mismatched(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed) == Self::MISMATCH
    }
}

/// The object's stream, remembering how it failed (see [`SourceFailure`]).
pub(super) struct Source<R> {
    pub(super) inner: R,
    pub(super) failed: std::sync::Arc<SourceFailure>,
}

impl<R: BufRead> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.inner.read(buf);
        if let Err(e) = &r {
            self.failed.note(e);
        }
        r
    }
}

impl<R: BufRead> BufRead for Source<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let r = self.inner.fill_buf();
        if let Err(e) = &r {
            self.failed.note(e);
        }
        r
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
    }
}
