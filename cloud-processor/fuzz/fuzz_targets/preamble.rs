//! The preamble rule: any junk lines (here free of `{` and `[`, so none can
//! start the body), then known records. All the junk and only the junk must
//! be dropped, and the records found exactly where they are.
#![no_main]

use cloud_processor::fuzzing::{Item, Reader};
use libfuzzer_sys::fuzz_target;

const BODY: &[&str] = &[
    "{\"id\":\"a\",\"n\":1}",
    "{\"id\":\"b\",\"nested\":{\"x\":[1,2,{\"y\":\"}\"}]}}",
    "{\"id\":\"c\",\"s\":\"line\\nbreak { [\"}",
];

fuzz_target!(|junk: Vec<Vec<u8>>| {
    let mut text = Vec::new();
    for line in &junk {
        text.extend(line.iter().map(|&b| match b {
            b'\n' | b'{' | b'[' => b'.',
            b => b,
        }));
        text.push(b'\n');
    }
    let junk_bytes = text.len() as u64;
    let mut expected = Vec::new();
    for record in BODY {
        expected.push((text.len() as u64, record.as_bytes().to_vec()));
        text.extend_from_slice(record.as_bytes());
        text.push(b'\n');
    }

    let mut reader = Reader::new(&text[..], 1 << 16, None);
    let mut found = Vec::new();
    while let Some(item) = reader.next_item().expect("reading from memory cannot fail") {
        match item {
            Item::Record { bytes, offset, .. } => found.push((offset, bytes.to_vec())),
            Item::Reject(r) => panic!("junk leaked past the preamble: {r:?}"),
            Item::Large(l) => panic!("no large records without a projection: {l:?}"),
        }
    }
    assert_eq!(found, expected);
    assert_eq!(reader.preamble_lines(), junk.len() as u64);
    let acct = reader.accounting();
    assert_eq!(acct.preamble_bytes, junk_bytes, "exactly the junk is preamble");
    assert_eq!(acct.total(), text.len() as u64);
});
