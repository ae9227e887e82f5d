//! The reader over generated and hostile input: framing, preamble,
//! recovery, accounting, and the same items however the input is split.

use std::io::{self, Read};

use super::item::EXCERPT_BYTES;
use super::*;
use crate::pipeline::json::Node;
use proptest::prelude::*;

/// Hands out at most `chunk` bytes per read, to exercise refills.
struct Trickle<'a>(&'a [u8], usize);

impl Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.0.len().min(self.1).min(out.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[derive(Debug, PartialEq)]
struct All {
    records: Vec<String>,
    /// (offset, length, reason) of each reject.
    rejects: Vec<Reject>,
    preamble_lines: u64,
    acct: Accounting,
}

/// Reads everything, checking the accounting on the way out.
fn read_all(input: &[u8], max: usize, chunk: usize) -> All {
    let mut r = Reader::new(Trickle(input, chunk), max, None);
    let (mut records, mut rejects) = (Vec::new(), Vec::new());
    let mut record_bytes = 0;
    while let Some(item) = r.next_item().unwrap() {
        match item {
            Item::Record { bytes, offset, .. } => {
                assert_eq!(&input[offset as usize..][..bytes.len()], bytes);
                record_bytes += bytes.len() as u64;
                records.push(String::from_utf8_lossy(bytes).into_owned())
            }
            Item::Reject(rj) => rejects.push(rj),
            Item::Large(l) => panic!("no large records without a projection: {l:?}"),
        }
    }
    let acct = r.accounting();
    assert_eq!(acct.total(), input.len() as u64, "accounting: {acct:?}");
    assert_eq!(r.bytes_read(), input.len() as u64);
    assert_eq!(acct.record_bytes, record_bytes);
    assert_eq!(
        acct.rejected_bytes,
        rejects.iter().map(|r| r.length).sum::<u64>(),
        "rejected bytes are the rejects' lengths"
    );
    All {
        records,
        rejects,
        preamble_lines: r.preamble_lines(),
        acct,
    }
}

/// Reads in several read sizes and checks they agree.
fn read(input: &str, max: usize) -> All {
    let whole = read_all(input.as_bytes(), max, 1 << 20);
    for chunk in [1, 2, 3, 7, 64] {
        assert_eq!(
            read_all(input.as_bytes(), max, chunk),
            whole,
            "reads of {chunk}"
        );
    }
    whole
}

fn reasons(all: &All) -> Vec<&str> {
    all.rejects.iter().map(|r| r.reason.as_str()).collect()
}

#[test]
fn every_preamble_style_is_dropped() {
    let input = "\u{feff}# hash\r\n// slashes\n-- dashes\n; semi\n/* block\n   still block */\n[INFO] collector started\n{not json\n[also not\n[2026-11-27 10:00] x\n\n{\"a\":1}\r\n{\"b\":2}\n";
    let all = read(input, 1 << 20);
    assert_eq!(all.records, ["{\"a\":1}", "{\"b\":2}"]);
    assert!(all.rejects.is_empty(), "{:?}", all.rejects);
    assert_eq!(all.preamble_lines, 11);
    assert_eq!(
        all.acct.preamble_bytes,
        input.find("{\"a\"").unwrap() as u64
    );
}

#[test]
fn pretty_concatenated_and_array_bodies() {
    let pretty =
        "# c\n{\n  \"a\": {\"x\": [1, 2]},\n  \"s\": \"}{\\\"\"\n}\n{\n  \"b\": 2\n}{\"c\":3}";
    let all = read(pretty, 1 << 20);
    assert_eq!(all.records.len(), 3, "{:?}", all.records);
    assert!(all.records[0].contains("\"}{\\\"\"") && all.rejects.is_empty());

    let array = "// header\n[\n  {\"a\":1},\n  {\"b\":2} ,{\"c\":3}\n]\n";
    let all = read(array, 1 << 20);
    assert_eq!(all.records, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
    assert!(all.rejects.is_empty(), "{:?}", all.rejects);

    // Elements at column 0, and an array far larger than the record limit.
    let mut big = String::from("[INFO] banner\n[\n");
    for i in 0..2000 {
        big.push_str(&format!("{{\"i\":{i}}},\n"));
    }
    big.push_str("{\"last\":1}\n]\n");
    let all = read_all(big.as_bytes(), 100, 999);
    assert_eq!(
        (all.records.len(), all.rejects.len(), all.preamble_lines),
        (2001, 0, 1)
    );
}

/// `json.dump(records, f, indent=2)` with one element over the limit:
/// only that element is lost.
#[test]
fn an_oversized_element_of_a_pretty_array_costs_only_itself() {
    let mut text = String::from("# c\n[\n");
    for i in 0..6 {
        if i > 0 {
            text.push_str(",\n");
        }
        let filler = if i == 2 { "x".repeat(500) } else { "y".into() };
        text.push_str(&format!(
            "  {{\n    \"id\": {i},\n    \"s\": \"{filler}\"\n  }}"
        ));
    }
    text.push_str("\n]");
    let all = read(&text, 200);
    let ids: Vec<bool> = (0..6)
        .map(|i| {
            all.records
                .iter()
                .any(|r| r.contains(&format!("\"id\": {i},")))
        })
        .collect();
    assert_eq!(ids, [true, true, false, true, true, true]);
    assert_eq!(reasons(&all).len(), 1);
    assert!(
        reasons(&all)[0].contains("size limit"),
        "{:?}",
        reasons(&all)
    );
    assert!(all.rejects[0].length > 500);
}

/// Python writes `NaN`: a bad first element is a reject, not preamble.
#[test]
fn a_bad_first_element_is_rejected_not_taken_for_preamble() {
    let text = "[\n  {\n    \"id\": 0,\n    \"v\": NaN\n  },\n  {\n    \"id\": 1,\n    \"v\": 1.5\n  },\n  {\n    \"id\": 2,\n    \"v\": Infinity\n  },\n  {\n    \"id\": 3\n  }\n]\n";
    let all = read(text, 1 << 20);
    assert_eq!(all.preamble_lines, 0);
    assert_eq!(all.records.len(), 2, "{:?}", all.records);
    assert!(all.records[0].contains("\"id\": 1") && all.records[1].contains("\"id\": 3"));
    assert_eq!(all.rejects.len(), 2);
    assert_eq!((all.rejects[0].line, all.rejects[0].offset), (2, 4));
    assert!(
        all.rejects[0].reason.contains("invalid JSON"),
        "{}",
        all.rejects[0].reason
    );
    assert!(all.rejects[0].excerpt.contains("NaN"));

    // And the same on one line, and one element per line.
    let line = "[{\"id\":0,\"v\":NaN},{\"id\":1},{\"id\":2,\"v\":-Infinity},{\"id\":3}]";
    let all = read(line, 1 << 20);
    assert_eq!(all.records, ["{\"id\":1}", "{\"id\":3}"]);
    let per_line =
        "[{\"id\":0,\"v\":NaN},\n{\"id\":1},\n{\"id\":2,\"v\":-Infinity},\n{\"id\":3}\n]";
    assert_eq!(
        read(per_line, 1 << 20).records,
        ["{\"id\":1}", "{\"id\":3}"]
    );
}

#[test]
fn a_bad_first_record_after_a_preamble_is_rejected() {
    let all = read("# c\n{\"a\":NaN}\n{\"b\":2}\n", 1 << 20);
    assert_eq!(all.records, ["{\"b\":2}"]);
    assert_eq!((all.preamble_lines, all.rejects.len()), (1, 1));
    assert_eq!(all.rejects[0].line, 2);

    // A trailing comma after each record: the commas are separators.
    let all = read("# c\n{\"a\":1},\n{\"b\":2},\n", 1 << 20);
    assert_eq!(all.records, ["{\"a\":1}", "{\"b\":2}"]);
    assert_eq!(all.acct.separator_bytes, 4);
    assert_eq!((all.preamble_lines, all.rejects.len()), (1, 0));
}

#[test]
fn invalid_utf8_anywhere_in_a_record_rejects_it() {
    let mut input = b"{\"a\":1}\n{\"a\":2,\"unwanted\":\"".to_vec();
    input.extend_from_slice(b"\xff\xfe\"}\n{\"a\":3}\n");
    let all = read_all(&input, 1 << 20, 5);
    assert_eq!(all.records, ["{\"a\":1}", "{\"a\":3}"]);
    assert!(all.rejects[0].reason.contains("UTF-8"), "{:?}", all.rejects);
}

#[test]
fn a_broken_record_spares_the_next_line() {
    let input = "{\"a\":1}\n{\"b\":2,\"c\":\n{\"d\":4}\n{\"e\":\"unterminated\n{\"f\":6}\n";
    let all = read(input, 1 << 20);
    assert_eq!(all.records, ["{\"a\":1}", "{\"d\":4}", "{\"f\":6}"]);
    assert_eq!(all.rejects.len(), 2);
    assert_eq!((all.rejects[0].line, all.rejects[0].offset), (2, 8));
    assert_eq!(
        all.rejects[0].length, 12,
        "the region stops where the next record begins"
    );
    assert_eq!(all.rejects[1].line, 4);
    assert!(
        all.rejects[1].excerpt.starts_with("{\"e\""),
        "{}",
        all.rejects[1].excerpt
    );
}

#[test]
fn a_truncated_pretty_record_and_a_nested_value_at_column_0() {
    // The first record is cut short; the next begins at column 0.
    let text = "{\n  \"a\": [\n    1,\n{\n  \"b\": 2\n}\n{\"c\":3}\n";
    let all = read(text, 1 << 20);
    assert_eq!(all.records, ["{\n  \"b\": 2\n}", "{\"c\":3}"]);
    // A record whose nested object sits at column 0 and holds an error:
    // the object is not a resume point, because it is not followed by a
    // line end (the outer record's `}` follows).
    let text = "{\"a\": NaN, \"b\":\n{\"c\": 1}}\n{\"d\": 2}\n";
    let all = read(text, 1 << 20);
    assert_eq!(all.records, ["{\"d\": 2}"]);
    assert_eq!(all.rejects.len(), 1);
}

#[test]
fn truncated_elements_of_arrays_in_every_layout() {
    let pretty = "[\n  {\n    \"id\": 0,\n    \"s\": \"cut\n  {\n    \"id\": 1\n  },\n  {\n    \"id\": 2,\n    \"t\": [\n  {\n    \"id\": 3\n  }\n]";
    let all = read(pretty, 1 << 20);
    assert_eq!(all.records.len(), 2, "{:?} {:?}", all.records, all.rejects);
    assert!(all.records[0].contains("\"id\": 1") && all.records[1].contains("\"id\": 3"));
    let line = "[{\"id\":0,\"s\":\"cut,{\"id\":1,\"x\":\"y\"},{\"id\":2,\"t\":[1,{\"id\":3}]";
    let all = read(line, 1 << 20);
    // The last element may have been cut before `,{"id":3}]` or may hold
    // it: on one line nothing tells, so it is rejected with it, never
    // sent as a part.
    assert_eq!(all.records, ["{\"id\":1,\"x\":\"y\"}"], "{:?}", all.rejects);
    assert_eq!(all.rejects[1].length, 24);
    let line = "[{\"id\":0,\"s\":\"cut,{\"id\":1},{\"id\":2,\"t\":[1,{\"id\":3}]},{\"id\":4}]";
    assert_eq!(
        read(line, 1 << 20).records,
        [
            "{\"id\":1}",
            "{\"id\":2,\"t\":[1,{\"id\":3}]}",
            "{\"id\":4}"
        ]
    );
}

#[test]
fn garbage_truncation_and_non_objects() {
    let input = "{\"a\":1}\ntrailing garbage\n{\"b\":2}\n[1,2]\n{\"c\":";
    let all = read(input, 1 << 20);
    assert_eq!(all.records, ["{\"a\":1}", "{\"b\":2}"]);
    let reasons = reasons(&all);
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].contains("not a JSON object"));
    assert!(reasons[1].contains("not a JSON object") && reasons[2].contains("not a JSON object"));
    assert!(reasons[3].contains("truncated"));
    assert_eq!(all.rejects[3].line, 5);

    let array = "[{\"a\":1}, 7, \"s\", [1], null, {\"b\":2}";
    let all = read(array, 1 << 20);
    assert_eq!(all.records, ["{\"a\":1}", "{\"b\":2}"]);
    assert_eq!(all.rejects.len(), 5, "{:?}", all.rejects);
    assert!(all.rejects[4].reason.contains("missing `]`"));
    assert_eq!(all.rejects[4].length, 0);
}

#[test]
fn a_huge_line_is_skipped_without_being_held() {
    let mut input = b"{\"a\":1}\n{\"big\":\"".to_vec();
    input.extend(std::iter::repeat_n(b'x', 3_000_000));
    input.extend_from_slice(b"\"}\n{\"b\":2}\n");
    let all = read_all(&input, 100_000, 65_536);
    assert_eq!(all.records, ["{\"a\":1}", "{\"b\":2}"]);
    assert_eq!(all.rejects.len(), 1);
    assert!(all.rejects[0].reason.contains("size limit"));
    assert_eq!(all.rejects[0].length, 3_000_010);
    assert!(all.rejects[0].excerpt.len() <= EXCERPT_BYTES);
}

/// The buffer stays small whatever the runs of whitespace, separators or
/// junk, and wherever they are.
#[test]
fn long_runs_are_walked_through_not_held() {
    let run = 5_000_000;
    for (head, filler, tail) in [
        ("# c\n{\"a\":1}", b' ', "{\"b\":2}\n"),
        ("# c\n{\"a\":1}", b'\n', "{\"b\":2}\n"),
        ("# c\n{\"a\":1}", b',', "{\"b\":2}\n"),
        ("# c\n[{\"a\":1},", b' ', "{\"b\":2}]\n"),
        ("# c\n[{\"a\":1},", b'\n', "{\"b\":2}]\n"),
        ("", b' ', "{\"a\":1}\n{\"b\":2}\n"),
        ("# c\n{\"a\":1}\n", b'x', "\n{\"b\":2}\n"),
        ("# c\n[{\"a\":1},", b'7', ",{\"b\":2}]\n"),
        ("#", b'#', "\n{\"a\":1}\n{\"b\":2}\n"),
    ] {
        let mut input = head.as_bytes().to_vec();
        input.extend(std::iter::repeat_n(filler, run));
        input.extend_from_slice(tail.as_bytes());
        let mut r = Reader::new(&input[..], 4096, None);
        let mut records = 0;
        let mut peak = 0;
        while let Some(item) = r.next_item().unwrap() {
            records += matches!(item, Item::Record { .. }) as usize;
            peak = peak.max(r.buffer_capacity());
        }
        peak = peak.max(r.buffer_capacity());
        assert!(records >= 1, "{head:?} {filler}");
        assert!(
            peak < 1 << 20,
            "{head:?} + {filler:?}: buffer grew to {peak}"
        );
        assert_eq!(r.accounting().total(), input.len() as u64);
    }
}

#[test]
fn only_comments_or_nothing_gives_no_records() {
    for input in ["", "\n\n", "# only\n// comments\n", "[INFO] x\n{broken"] {
        let all = read(input, 1 << 20);
        assert!(
            all.records.is_empty() && all.rejects.is_empty(),
            "{input:?}"
        );
        assert_eq!(all.acct.preamble_bytes, input.len() as u64);
    }
}

#[test]
fn a_scalar_array_start_is_judged_whole() {
    // Found by cargo-fuzz: with `[6` in one read and `\0` in the next,
    // the line was taken for the start of an array body.
    for input in ["\0\n[6\0", "# c\n[12x\n{\"a\":1}\n"] {
        read(input, 1 << 20);
    }
    assert_eq!(read("\0\n[6\0", 1 << 20).preamble_lines, 2);
    assert_eq!(read("[1, {\"a\":1}]", 1 << 20).records, ["{\"a\":1}"]);
}

#[test]
fn a_resume_point_after_a_comma_does_not_depend_on_read_sizes() {
    // Found by cargo-fuzz: whether a `{` after a comma resumed a one-line
    // array was decided by looking back into the buffer for the comma,
    // which one-byte reads had already dropped.
    let input = b"\x5b\x5b\x7b\x5b\x5b\x5b\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x5b\x7b\x5b\x5b\x5b\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\xff\xff\xff\xff\xff\xff\xff\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x7b\x5b\x33\x2c\x7b\x20\x20\x20\x20\x7b\x5b\x7b\x20\x20\x20\x20\x20\x20\x20\x20\x20";
    let whole = read_all(input, 64, 1 << 20);
    for chunk in [1, 2, 3, 7] {
        assert_eq!(read_all(input, 64, chunk), whole, "reads of {chunk}");
    }
    assert_eq!(whole.rejects.len(), 3, "{:?}", whole.rejects);
}

/// A record far past the window, made of many short strings: the walk
/// over it drops consumed bytes as it streams, and where the last string
/// closed must survive that (it once was a stale buffer index, which
/// underflowed in debug builds and misread bytes in release ones). As a
/// bad record (too large) and as a streamed one, whatever the reads.
#[test]
fn a_walk_far_past_the_window_over_many_strings_keeps_its_place() {
    let members: Vec<String> = (0..40_000).map(|i| format!("\"k{i}\":\"v\"")).collect();
    let record = format!("{{{}}}", members.join(","));
    let input = format!("{record}\n{{\"k1\":\"after\"}}\n");
    let whole = read_all(input.as_bytes(), 1024, 1 << 20);
    assert_eq!(whole.records, ["{\"k1\":\"after\"}"]);
    assert_eq!(whole.rejects.len(), 1, "{:?}", whole.rejects);
    assert_eq!(whole.rejects[0].length as usize, record.len());
    assert_eq!(
        read_all(input.as_bytes(), 1024, 4096),
        whole,
        "reads of 4096"
    );
    let mut root = Node::default();
    root.insert(&["k1".into()]).slots.push(0);
    for chunk in [4096, 1 << 20] {
        let mut r = Reader::new(Trickle(input.as_bytes(), chunk), 1024, Some((&root, 1)))
            .with_large(1 << 30);
        match r.next_item().unwrap() {
            Some(Item::Large(l)) => assert_eq!(l.length as usize, record.len()),
            other => panic!("reads of {chunk}: {other:?}"),
        }
        assert!(matches!(r.next_item().unwrap(), Some(Item::Record { .. })));
        assert!(r.next_item().unwrap().is_none());
        assert_eq!(r.accounting().total(), input.len() as u64);
    }
}

#[test]
fn projected_spans_are_captured_relative_to_the_record() {
    let mut root = Node::default();
    root.insert(&["b".into()]).slots.push(0);
    let input = b"# c\n  {\"a\":1,\"b\":[2, 3]}\n";
    let mut r = Reader::new(&input[..], 1024, Some((&root, 1)));
    match r.next_item().unwrap() {
        Some(Item::Record { bytes, fields, .. }) => {
            let (a, b) = fields[0].unwrap();
            assert_eq!(&bytes[a as usize..b as usize], b"[2, 3]");
        }
        other => panic!("{other:?}"),
    }
    assert!(r.next_item().unwrap().is_none());
    assert_eq!(r.accounting().separator_bytes, 3, "indent and newline");
}

fn any_input() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        proptest::sample::select(vec![
            &b"{"[..],
            &b"}"[..],
            &b"["[..],
            &b"]"[..],
            &b"\""[..],
            &b"\\"[..],
            &b"\n"[..],
            &b","[..],
            &b":"[..],
            &b" "[..],
            &b"  "[..],
            &b"{\"a\":1}"[..],
            &b"{\"k\":"[..],
            &b"NaN"[..],
            &b"7"[..],
            &b"# c"[..],
            &b"\xff"[..],
            &b"\xef\xbb\xbf"[..],
            &b"\"s\""[..],
            &b"tru"[..],
        ]),
        0..60,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    /// NDJSON records survive any junk lines between them, whatever the
    /// read sizes: every good record comes out, in order, exactly once.
    #[test]
    fn good_records_survive_junk_lines(
        vals in proptest::collection::vec(any::<u32>(), 1..30),
        junk in proptest::collection::vec(prop_oneof![
            Just("{\"broken\":".to_owned()),
            Just("not json".to_owned()),
            Just("{\"s\":\"open".to_owned()),
            Just("{\"a\":NaN}".to_owned()),
            "[a-z ]{0,10}",
        ], 30),
        chunk in 1usize..50,
    ) {
        let mut input = String::from("# preamble\n");
        let mut want = Vec::new();
        for (i, v) in vals.iter().enumerate() {
            let rec = format!("{{\"v\":{v},\"i\":{i}}}");
            input.push_str(&rec);
            input.push('\n');
            want.push(rec);
            if i % 3 == 1 {
                input.push_str(&junk[i]);
                input.push('\n');
            }
        }
        prop_assert_eq!(read_all(input.as_bytes(), 1 << 20, chunk).records, want);
    }

    /// Arbitrary input: no panic, the accounting adds up (checked in
    /// `read_all`), records are valid JSON objects, and the same items
    /// come out whatever the read sizes.
    #[test]
    fn any_input_is_accounted_for(input in any_input(), chunk in 1usize..20, max in 8usize..64) {
        let whole = read_all(&input, max, 1 << 20);
        for r in &whole.records {
            prop_assert!(r.starts_with('{') && serde_json::from_str::<serde_json::Value>(r).is_ok(), "{r:?}");
        }
        prop_assert_eq!(read_all(&input, max, chunk), whole);
    }
}
