//! A captured value's spool: compact JSON text in memory, then in a
//! temporary file, with the characters SQS refuses escaped on the way in.

use std::io::{self, Read, Seek, SeekFrom, Write};

use tempfile::SpooledTempFile;

use crate::pipeline::rules::{self, Kind};

/// What a spool holds in memory before it moves to a temporary file.
const SPOOL_MEMORY_BYTES: usize = 1 << 20;
/// Bytes gathered before they are escaped and written to the spool.
const SPOOL_BATCH_BYTES: usize = 64 << 10;

/// A captured value: compact JSON text, with U+FFFE and U+FFFF escaped as
/// [`crate::pipeline::compact::escape_for_sqs`] does.
#[derive(Debug)]
pub struct Spool {
    pub(super) file: SpooledTempFile,
    batch: Vec<u8>,
    pub(super) len: u64,
    /// The value's first byte, and whether a number has a fraction or an
    /// exponent: enough to know its kind.
    first: Option<u8>,
    fraction: bool,
}

impl Spool {
    pub(super) fn new() -> Self {
        Self {
            file: SpooledTempFile::new(SPOOL_MEMORY_BYTES),
            batch: Vec::new(),
            len: 0,
            first: None,
            fraction: false,
        }
    }

    /// The value's kind and length (compact, as it is sent).
    pub(super) fn seen(&self) -> (Kind, u64) {
        let first = self.first.unwrap_or(b'n');
        (
            Kind::from_first(first, self.fraction),
            self.len + self.batch.len() as u64,
        )
    }

    /// The whole value, read back: for `hmac()`, whose values are bounded.
    pub(super) fn read_all(mut self) -> io::Result<Vec<u8>> {
        self.flush(true)?;
        self.file.seek(SeekFrom::Start(0))?;
        let mut text = Vec::new();
        self.file.take(self.len).read_to_end(&mut text)?;
        Ok(text)
    }

    pub(super) fn push(&mut self, run: &[u8]) -> io::Result<()> {
        let first = *self
            .first
            .get_or_insert(run.first().copied().unwrap_or(b'n'));
        if rules::is_number_start(first) {
            self.fraction |= rules::has_fraction(run);
        }
        self.batch.extend_from_slice(run);
        if self.batch.len() >= SPOOL_BATCH_BYTES {
            self.flush(false)?;
        }
        Ok(())
    }

    /// Writes the batch, escaped. Unless `last`, a tail that may begin U+FFFE
    /// or U+FFFF (`EF` or `EF BF`) waits for the bytes that decide it.
    pub(super) fn flush(&mut self, last: bool) -> io::Result<()> {
        let hold = if last {
            0
        } else {
            match self.batch[..] {
                [.., 0xEF, 0xBF] => 2,
                [.., 0xEF] => 1,
                _ => 0,
            }
        };
        let held = self.batch.split_off(self.batch.len() - hold);
        crate::pipeline::compact::escape_for_sqs(&mut self.batch, 0);
        self.file.write_all(&self.batch)?;
        self.len += self.batch.len() as u64;
        self.batch.clear();
        self.batch.extend_from_slice(&held);
        Ok(())
    }
}
