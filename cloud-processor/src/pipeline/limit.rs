//! The decompressed-size limit: a reader that counts what passes and fails
//! past the limit, so a zstd bomb stops early.

use std::io::{self, Read};

/// Counts bytes and fails past the limit, so a zstd bomb stops early.
pub(super) struct Limited<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R> Limited<R> {
    pub(super) fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            read: 0,
            limit,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("decompressed size limit exceeded")]
pub(super) struct LimitExceeded;

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other(LimitExceeded));
        }
        Ok(n)
    }
}
