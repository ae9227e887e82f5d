//! The record reader over arbitrary bytes: it must not panic, every record
//! it frames must be the input's own bytes at the offset it reports, a valid
//! JSON object within the size limit, records and rejected regions must not
//! overlap and come in order, every byte must be accounted for exactly once
//! (preamble, record, rejected or separator), and the result must not
//! depend on how the bytes arrive (whole, or a few at a time across every
//! buffer boundary).
#![no_main]

use std::io::Read;

use cloud_processor::fuzzing::{Accounting, Item, Reader};
use libfuzzer_sys::fuzz_target;

/// Hands out at most `step` bytes per read.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Found {
    Record {
        bytes: Vec<u8>,
        line: u64,
        offset: u64,
    },
    Reject {
        line: u64,
        offset: u64,
        length: u64,
        reason: String,
        excerpt: String,
    },
}

fn read_all(src: impl Read, max_record: usize) -> (Vec<Found>, u64, Accounting, u64) {
    let mut reader = Reader::new(src, max_record, None);
    let mut found = Vec::new();
    while let Some(item) = reader.next_item().expect("reading from memory cannot fail") {
        found.push(match item {
            Item::Record {
                bytes,
                line,
                offset,
                ..
            } => Found::Record {
                bytes: bytes.to_vec(),
                line,
                offset,
            },
            Item::Reject(r) => Found::Reject {
                line: r.line,
                offset: r.offset,
                length: r.length,
                reason: r.reason,
                excerpt: r.excerpt,
            },
            Item::Large(l) => panic!("no large records without a projection: {l:?}"),
        });
    }
    (found, reader.preamble_lines(), reader.accounting(), reader.bytes_read())
}

fuzz_target!(|input: &[u8]| {
    let Some((&knob, data)) = input.split_first() else {
        return;
    };
    let step = usize::from(knob % 61) + 1;
    let max_record = 64 + usize::from(knob) * 8;
    let whole = read_all(data, max_record);
    let trickled = read_all(Trickle { data, step }, max_record);
    assert_eq!(
        whole, trickled,
        "the read size changed what was found (step {step})"
    );

    let (found, _, acct, read) = &whole;
    assert_eq!(*read, data.len() as u64);
    assert_eq!(acct.total(), data.len() as u64, "every byte accounted for once: {acct:?}");
    let (mut records, mut rejected) = (0u64, 0u64);
    // The end of the last item: items are in order and never overlap.
    let mut covered = 0u64;
    for f in found {
        let (line, offset, length) = match f {
            Found::Record {
                bytes,
                line,
                offset,
            } => {
                let at = *offset as usize;
                assert!(bytes.len() <= max_record, "a record over the limit was framed");
                assert_eq!(&data[at..at + bytes.len()], &bytes[..], "a record is not the input's bytes");
                // Valid JSON by the grammar: serde_json checking syntax only.
                // A number's range is not judged (RFC 8259 leaves it to the
                // reader): `1e400` is relayed exactly as written, so a
                // `Value`, which refuses numbers past f64, is the wrong test.
                let text = std::str::from_utf8(bytes).expect("a record is UTF-8");
                serde_json::from_str::<serde::de::IgnoredAny>(text).expect("a record is valid JSON");
                assert_eq!(text.trim_start_matches([' ', '\t', '\n', '\r']).as_bytes()[0], b'{', "a record is an object");
                records += bytes.len() as u64;
                (*line, *offset, bytes.len() as u64)
            }
            Found::Reject {
                line,
                offset,
                length,
                reason,
                ..
            } => {
                assert!(!reason.is_empty());
                rejected += length;
                (*line, *offset, *length)
            }
        };
        assert!(line >= 1);
        let newlines = data[..offset as usize].iter().filter(|&&b| b == b'\n').count() as u64;
        assert_eq!(line, newlines + 1, "line numbers count newlines");
        assert!(offset >= covered, "items overlap or are out of order");
        covered = offset + length;
    }
    assert_eq!(acct.record_bytes, records);
    assert_eq!(acct.rejected_bytes, rejected);
});
