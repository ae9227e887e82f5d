//! Bodies: projected records, in order, packed into SQS message bodies as
//! large as the queue allows, each a [`Chunk`] numbered in sequence.
//!
//! Sizes are UTF-8 bytes, as SQS counts them (the emulator counts characters,
//! so these rules are tested here, not there). The body limit is fixed per
//! object (the queue's limit minus the worst case of the attributes, see
//! `output::batch`), so how records are cut into chunks depends only on the
//! object and the config, which is what lets a resumed run re-create the
//! same chunks.

use crate::pipeline::resume::Position;
use crate::pipeline::stream::Body;

/// How records are joined in a body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// One record per line, no trailing newline.
    #[default]
    Ndjson,
    /// A JSON array of records.
    Array,
}

/// One SQS message body.
#[derive(Debug)]
pub struct Chunk {
    pub index: u32,
    pub records: u32,
    /// The positions of its first record and one past its last: what a run
    /// under other settings skips once the chunk is settled.
    pub span: [Position; 2],
    pub body: Vec<u8>,
    /// Set for a record too large for any message: the chunk's body (a
    /// body of that one record) goes to S3 as a payload object of this many
    /// bytes, and the message carries a pointer to it in the SQS Extended
    /// Client's format instead (a claim check).
    pub payload_size: Option<u64>,
    /// For a record over the reader's window: the payload, read from its
    /// spools (then `body` is empty), so it is never held whole.
    pub stream: Option<Body>,
}

impl Chunk {
    /// Writes the body, from its spools if it has them (which it consumes).
    pub fn write_body(&mut self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        match &mut self.stream {
            Some(s) => std::io::copy(s, w).map(drop),
            None => w.write_all(&self.body),
        }
    }
}

/// A record too large for any message, even alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the projected record is {size} bytes; a message body can hold at most {limit}")]
pub struct Oversized {
    pub size: usize,
    pub limit: usize,
}

/// Accumulates records into bodies of at most `max_body_bytes`.
#[derive(Debug)]
pub struct Packer {
    max_body_bytes: usize,
    format: BodyFormat,
    body: Vec<u8>,
    records: u32,
    next_index: u32,
    /// The span of the records in `body`.
    span: [Position; 2],
}

impl Packer {
    pub fn new(max_body_bytes: usize, format: BodyFormat) -> Self {
        Self {
            max_body_bytes,
            format,
            body: Vec::new(),
            records: 0,
            next_index: 0,
            span: [0, 0],
        }
    }

    /// Numbers chunks from `first` (see [`crate::pipeline::Resume`]).
    #[must_use]
    pub fn numbered_from(mut self, first: u32) -> Self {
        self.next_index = first;
        self
    }

    /// The size of a body holding just this record.
    fn alone(&self, record: &[u8]) -> usize {
        match self.format {
            BodyFormat::Ndjson => record.len(),
            BodyFormat::Array => record.len() + 2,
        }
    }

    /// Adds the record at `pos`. Returns the finished chunk when the record
    /// did not fit in the current one (the record then starts the next chunk).
    pub fn push(&mut self, record: &[u8], pos: Position) -> Result<Option<Chunk>, Oversized> {
        if self.alone(record) > self.max_body_bytes {
            return Err(Oversized {
                size: self.alone(record),
                limit: self.max_body_bytes,
            });
        }
        // Adding to a non-empty body costs a separator; the array's closing
        // bracket is already counted in `body.len() + 1`.
        let grown = match (self.format, self.records) {
            (_, 0) => self.alone(record),
            (BodyFormat::Ndjson, _) => self.body.len() + 1 + record.len(),
            (BodyFormat::Array, _) => self.body.len() + 1 + record.len() + 1,
        };
        let finished = if grown > self.max_body_bytes {
            self.take()
        } else {
            None
        };
        match (self.format, self.records) {
            (BodyFormat::Ndjson, 0) => {}
            (BodyFormat::Ndjson, _) => self.body.push(b'\n'),
            (BodyFormat::Array, 0) => self.body.push(b'['),
            (BodyFormat::Array, _) => self.body.push(b','),
        }
        self.body.extend_from_slice(record);
        if self.records == 0 {
            self.span[0] = pos;
        }
        self.span[1] = pos + 1;
        self.records += 1;
        Ok(finished)
    }

    /// Finishes the current chunk, if it has any records.
    pub fn take(&mut self) -> Option<Chunk> {
        if self.records == 0 {
            return None;
        }
        let mut body = std::mem::take(&mut self.body);
        if self.format == BodyFormat::Array {
            body.push(b']');
        }
        let chunk = Chunk {
            index: self.next_index,
            records: self.records,
            span: self.span,
            body,
            payload_size: None,
            stream: None,
        };
        self.next_index += 1;
        self.records = 0;
        Some(chunk)
    }

    /// A record too large for any message, as a chunk of its own to be
    /// offloaded (a body of that one record, in the body format), after the
    /// chunk in progress (returned first), so order within the object is
    /// kept and chunk numbers stay deterministic.
    pub fn offload(&mut self, record: &[u8], pos: Position) -> (Option<Chunk>, Chunk) {
        let before = self.take();
        let mut body = Vec::with_capacity(record.len() + 2);
        match self.format {
            BodyFormat::Ndjson => body.extend_from_slice(record),
            BodyFormat::Array => {
                body.push(b'[');
                body.extend_from_slice(record);
                body.push(b']');
            }
        }
        let chunk = Chunk {
            index: self.next_index,
            records: 1,
            span: [pos, pos + 1],
            payload_size: Some(body.len() as u64),
            body,
            stream: None,
        };
        self.next_index += 1;
        (before, chunk)
    }

    /// As [`Packer::offload`], for a record read from spools.
    pub fn offload_body(&mut self, record: Body, pos: Position) -> (Option<Chunk>, Chunk) {
        let before = self.take();
        let body = match self.format {
            BodyFormat::Ndjson => record,
            BodyFormat::Array => record.wrap(b"[", b"]"),
        };
        let chunk = Chunk {
            index: self.next_index,
            records: 1,
            span: [pos, pos + 1],
            payload_size: Some(body.len()),
            body: Vec::new(),
            stream: Some(body),
        };
        self.next_index += 1;
        (before, chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Records of the given sizes, with multi-byte UTF-8 in them.
    fn records_of(lens: &[usize]) -> Vec<Vec<u8>> {
        lens.iter()
            .enumerate()
            .map(|(i, &n)| format!("{{\"i\":{i},\"p\":\"{}\"}}", "é".repeat(n / 2)).into_bytes())
            .collect()
    }

    fn pack_all(records: &[Vec<u8>], limit: usize, format: BodyFormat) -> (Vec<Chunk>, Vec<usize>) {
        let mut p = Packer::new(limit, format);
        let (mut chunks, mut oversized) = (Vec::new(), Vec::new());
        for (i, r) in records.iter().enumerate() {
            match p.push(r, i as u64) {
                Ok(Some(c)) => chunks.push(c),
                Ok(None) => {}
                Err(_) => oversized.push(i),
            }
        }
        chunks.extend(p.take());
        (chunks, oversized)
    }

    fn unpack(chunk: &Chunk, format: BodyFormat) -> Vec<Vec<u8>> {
        match format {
            BodyFormat::Ndjson => chunk
                .body
                .split(|&b| b == b'\n')
                .map(<[u8]>::to_vec)
                .collect(),
            BodyFormat::Array => serde_json::from_slice::<Vec<serde_json::Value>>(&chunk.body)
                .unwrap()
                .iter()
                .map(|v| v.to_string().into_bytes())
                .collect(),
        }
    }

    #[test]
    fn exact_fit_and_one_byte_over() {
        // Two 4-byte records and a newline: exactly 9 bytes.
        let recs = vec![b"{\"a\"".to_vec(), b"{\"b\"".to_vec(), b"{\"c\"".to_vec()];
        let (chunks, _) = pack_all(&recs, 9, BodyFormat::Ndjson);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].body, b"{\"a\"\n{\"b\"");
        assert_eq!((chunks[0].records, chunks[1].records), (2, 1));
        let (chunks, _) = pack_all(&recs, 8, BodyFormat::Ndjson);
        assert_eq!(chunks.len(), 3);
        // Array: `[` + 4 + `,` + 4 + `]` = 11.
        let (chunks, _) = pack_all(&recs, 11, BodyFormat::Array);
        assert_eq!(chunks[0].body, b"[{\"a\",{\"b\"]");
    }

    #[test]
    fn sizes_are_utf8_bytes_not_characters() {
        // 4 characters, 12 bytes: a character-counting emulator would accept
        // what SQS refuses.
        let rec = "\"日本語\"".as_bytes().to_vec();
        assert_eq!(rec.len(), 11);
        let (chunks, oversized) = pack_all(&[rec.clone(), rec], 11, BodyFormat::Ndjson);
        assert_eq!((chunks.len(), oversized.len()), (2, 0));
        let (_, oversized) = pack_all(&["\"日本語\"".as_bytes().to_vec()], 10, BodyFormat::Ndjson);
        assert_eq!(oversized, [0]);
    }

    proptest! {
        /// Packing never exceeds the limit, keeps order, loses and duplicates
        /// nothing, and rejects exactly the records too big to send alone.
        #[test]
        fn packing_is_lossless_ordered_and_bounded(
            lens in proptest::collection::vec(1usize..300, 0..200),
            limit in 50usize..1000,
            array in any::<bool>(),
        ) {
            let format = if array { BodyFormat::Array } else { BodyFormat::Ndjson };
            let records = records_of(&lens);
            let (chunks, oversized) = pack_all(&records, limit, format);
            let mut seen = Vec::new();
            for (n, c) in chunks.iter().enumerate() {
                prop_assert!(c.body.len() <= limit, "chunk of {} bytes over {}", c.body.len(), limit);
                prop_assert_eq!(c.index as usize, n);
                let parts = unpack(c, format);
                prop_assert_eq!(parts.len(), c.records as usize);
                seen.extend(parts);
            }
            let expected: Vec<Vec<u8>> = records.iter().enumerate()
                .filter(|(i, _)| !oversized.contains(i))
                .map(|(_, r)| r.clone())
                .collect();
            prop_assert_eq!(seen, expected);
            for i in oversized {
                let alone = records[i].len() + if array { 2 } else { 0 };
                prop_assert!(alone > limit);
            }
        }

        /// Offloading keeps every record, in order: each record too large
        /// for a message is a payload chunk of its own, numbered in
        /// sequence with the others, and every other chunk fits.
        #[test]
        fn offloading_keeps_every_record_in_order(
            lens in proptest::collection::vec(1usize..300, 0..200),
            limit in 50usize..1000,
            array in any::<bool>(),
        ) {
            let format = if array { BodyFormat::Array } else { BodyFormat::Ndjson };
            let records = records_of(&lens);
            let mut p = Packer::new(limit, format);
            let mut chunks = Vec::new();
            for (i, r) in records.iter().enumerate() {
                match p.push(r, i as u64) {
                    Ok(c) => chunks.extend(c),
                    Err(_) => {
                        let (before, payload) = p.offload(r, i as u64);
                        chunks.extend(before);
                        chunks.push(payload);
                    }
                }
            }
            chunks.extend(p.take());
            let mut seen = Vec::new();
            for (n, c) in chunks.iter().enumerate() {
                prop_assert_eq!(c.index as usize, n);
                let parts = unpack(c, format);
                match c.payload_size {
                    Some(size) => {
                        prop_assert_eq!(size, c.body.len() as u64);
                        prop_assert!(c.body.len() > limit);
                        prop_assert_eq!(parts.len(), 1);
                    }
                    None => prop_assert!(c.body.len() <= limit),
                }
                // A chunk's span covers exactly the positions of its records.
                let at = seen.len() as u64;
                prop_assert_eq!(c.span, [at, at + parts.len() as u64]);
                seen.extend(parts);
            }
            prop_assert_eq!(seen, records);
        }

    }
}
