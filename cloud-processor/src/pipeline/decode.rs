//! An object's bytes to decoded text: zstd (known by its magic bytes) or
//! plain, within the decompressed-size limit, decoded on a thread of its own
//! ahead of the parser where two cores are there; then [`run`] hands the
//! text to the record loop.

use std::io::{self, BufRead, BufReader, Read};
use std::ops::ControlFlow;

use relay_shared::checksum::ChecksumMismatch;

use crate::pipeline::body::Chunk;
use crate::pipeline::limit::Limited;
use crate::pipeline::records::parse;
use crate::pipeline::report::{Report, Unreadable};
use crate::pipeline::settings::Settings;
use crate::pipeline::source::{Source, SourceFailure};

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// How much decoded data the decoding thread may hold ahead of the parser:
/// `HANDOFF_BUFFERS` buffers of `HANDOFF_BYTES` in the channel, plus one
/// being filled and one being parsed.
pub(super) const HANDOFF_BYTES: usize = 64 * 1024;
const HANDOFF_BUFFERS: usize = 4;

/// The parser's side of the hand-off: decoded bytes from the decoding
/// thread, in order, then its error if it failed. Buffers go back to it
/// for reuse.
struct Handoff {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    back: std::sync::mpsc::SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for Handoff {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    let used = std::mem::replace(&mut self.cur, next);
                    // A full return channel only costs an allocation.
                    let _ = self.back.try_send(used);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The decoder finished: every byte was handed over.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The decoding thread: reads `decoded` to its end in buffers, hands each
/// over (waiting while the parser is behind), and then its error, if any,
/// after the bytes read before it. Stops when the parser hangs up.
fn decode_ahead(
    mut decoded: impl Read,
    tx: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
) {
    loop {
        // A returned buffer is full length already: only a new one is
        // zeroed, once.
        let mut buf = back.try_recv().unwrap_or_default();
        buf.resize(HANDOFF_BYTES, 0);
        let mut filled = 0;
        let mut failure = None;
        while filled < HANDOFF_BYTES {
            match decoded.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        buf.truncate(filled);
        let end = failure.is_some() || filled < HANDOFF_BYTES;
        if filled > 0 && tx.send(Ok(buf)).is_err() {
            return;
        }
        if let Some(e) = failure {
            let _ = tx.send(Err(e));
        }
        if end {
            return;
        }
    }
}

/// Runs the pipeline over one raw object. `on_chunk` receives every chunk in
/// order and may stop the run (for example when a lease is lost).
pub fn run(
    src: impl Read + Send,
    settings: &Settings,
    on_chunk: impl FnMut(Chunk) -> ControlFlow<()>,
) -> Result<Report, Unreadable> {
    let failed = std::sync::Arc::new(SourceFailure::default());
    let mut src = Source {
        inner: BufReader::with_capacity(128 * 1024, src),
        failed: failed.clone(),
    };
    let head = src.fill_buf().map_err(|e| match ChecksumMismatch::is(&e) {
        true => Unreadable::Checksum(e),
        false => Unreadable::Io(e),
    })?;
    let zstd = head.starts_with(&ZSTD_MAGIC);
    let limit = settings.max_decompressed_bytes;
    if !zstd {
        let plain = Limited::new(src, limit);
        return parse(plain, settings, on_chunk, &failed, false);
    }
    let decoder = zstd::stream::read::Decoder::with_buffer(src).map_err(Unreadable::Corrupt)?;
    let decoded = Limited::new(decoder, limit);
    if !settings.decode_thread {
        return parse(decoded, settings, on_chunk, &failed, true);
    }
    // Decoding and parsing cost about the same: on two cores they overlap,
    // with at most a few buffers between them.
    let (tx, rx) = std::sync::mpsc::sync_channel(HANDOFF_BUFFERS);
    let (back_tx, back_rx) = std::sync::mpsc::sync_channel(HANDOFF_BUFFERS + 1);
    std::thread::scope(|scope| {
        scope.spawn(move || decode_ahead(decoded, tx, back_rx));
        let handoff = Handoff {
            rx,
            back: back_tx,
            cur: Vec::new(),
            pos: 0,
        };
        // Dropping the hand-off on return (a stop, an error) ends the
        // decoding thread at its next buffer.
        parse(handoff, settings, on_chunk, &failed, true)
    })
}
