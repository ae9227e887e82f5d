//! The wanted values of one large record, and the projected record read
//! back from them as a body of known length.

use std::collections::VecDeque;
use std::io::{self, Read, Seek, SeekFrom};

use tempfile::SpooledTempFile;

use super::spool::Spool;
use crate::pipeline::project::{Missing, Projection, Seen};
use crate::pipeline::rules::Transform;

/// The wanted values of one large record.
#[derive(Debug)]
pub struct Captured {
    pub(super) slots: Vec<Option<Spool>>,
}

impl Captured {
    /// Per configured field, whether the record has it.
    pub fn found(&self) -> impl Iterator<Item = bool> + '_ {
        self.slots.iter().map(Option::is_some)
    }

    /// Per configured field, its value's kind and length, for the rules.
    pub fn seen(&self) -> impl Iterator<Item = Seen> + '_ {
        self.slots.iter().map(|s| s.as_ref().map(Spool::seen))
    }

    /// The projected record (as [`Projection::write`] writes it), to be read.
    pub fn into_body(self, projection: &Projection) -> io::Result<Body> {
        let mut body = Body::default();
        body.push_bytes(b"{".to_vec());
        let mut first = true;
        let fields = projection.fields().iter();
        for ((key, field), slot) in projection.encoded_keys().iter().zip(fields).zip(self.slots) {
            let value = match (slot, projection.missing()) {
                (Some(s), _) => Some(s),
                (None, Missing::Null) => None,
                (None, Missing::Omit) => continue,
            };
            let mut head = Vec::new();
            if !first {
                head.push(b',');
            }
            first = false;
            head.extend_from_slice(key.as_bytes());
            crate::pipeline::compact::escape_for_sqs(&mut head, 0);
            body.push_bytes(head);
            match value {
                // Checked to be at most [`rules::MAX_HASHED_BYTES`].
                Some(s) if field.transform != Transform::Copy => {
                    let text = match field.transform {
                        t if t.hashes() => s.read_all()?,
                        _ => Vec::new(),
                    };
                    let mut out = Vec::new();
                    projection.write_value(field.transform, &text, &mut out);
                    body.push_bytes(out);
                }
                Some(mut s) => {
                    s.flush(true)?;
                    s.file.seek(SeekFrom::Start(0))?;
                    body.len += s.len;
                    body.pieces
                        .push_back(Piece::Spool(s.file.take(s.len), s.len));
                }
                None => body.push_bytes(b"null".to_vec()),
            }
        }
        body.push_bytes(b"}".to_vec());
        Ok(body)
    }
}

#[derive(Debug)]
enum Piece {
    Bytes(io::Cursor<Vec<u8>>),
    /// A spool, read up to its length.
    Spool(io::Take<SpooledTempFile>, u64),
}

/// A projected record read from its pieces, of a length known in advance.
#[derive(Debug, Default)]
pub struct Body {
    pieces: VecDeque<Piece>,
    /// The piece being read.
    at: usize,
    len: u64,
    /// Dropped with the body: see [`Body::in_flight`].
    guard: Option<std::sync::mpsc::SyncSender<()>>,
}

impl Body {
    fn push_bytes(&mut self, b: Vec<u8>) {
        self.len += b.len() as u64;
        self.pieces.push_back(Piece::Bytes(io::Cursor::new(b)));
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A receiver whose `recv` returns once this body is dropped (read and
    /// stored, or given up), so its producer can wait before spooling the
    /// next one: at most two large records use /tmp at a time.
    pub fn in_flight(&mut self) -> std::sync::mpsc::Receiver<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel(0);
        self.guard = Some(tx);
        rx
    }

    /// Goes back to the start, to be read again.
    pub fn rewind(&mut self) -> io::Result<()> {
        for piece in &mut self.pieces {
            match piece {
                Piece::Bytes(c) => c.set_position(0),
                Piece::Spool(t, len) => {
                    t.get_mut().seek(SeekFrom::Start(0))?;
                    t.set_limit(*len);
                }
            }
        }
        self.at = 0;
        Ok(())
    }

    /// Puts `prefix` before and `suffix` after it (a body format's brackets).
    #[must_use]
    pub fn wrap(mut self, prefix: &[u8], suffix: &[u8]) -> Self {
        if !prefix.is_empty() {
            self.len += prefix.len() as u64;
            self.pieces
                .push_front(Piece::Bytes(io::Cursor::new(prefix.to_vec())));
        }
        if !suffix.is_empty() {
            self.push_bytes(suffix.to_vec());
        }
        self
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(piece) = self.pieces.get_mut(self.at) {
            let n = match piece {
                Piece::Bytes(c) => c.read(buf)?,
                Piece::Spool(s, _) => s.read(buf)?,
            };
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.at += 1;
        }
        Ok(0)
    }
}
