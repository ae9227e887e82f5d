//! Differential test of the data path on generated dirty files.
//!
//! The generator writes files the way real writers do (NDJSON, pretty
//! printed objects, `json.dump(indent=2)` arrays, arrays on one line or one
//! element per line) with junk preambles, and puts bad records of every kind
//! at random positions, first and last included: Python's `NaN`, invalid
//! UTF-8, control characters, trailing commas, truncations and oversized
//! records. It knows which records are good and where every record is, so
//! the reference is the generator itself plus serde_json, with no part of
//! the relay's reader: every good record must come out exactly once and
//! unchanged, every bad one must lie inside a reported reject, no good one
//! may, and the byte accounting must add up.
//!
//! Each file is also read with a window of a few dozen bytes and records
//! offloaded (`Mode::Streamed`): then nearly every record, good or bad, goes
//! through the large-record path (checked and projected as it streams, see
//! `stream.rs`), whose verdicts and bytes must be the same, except that an
//! oversized record is a good one there.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A test: a panic is a failure.

use std::ops::ControlFlow;

use cloud_processor::BodyFormat;
use cloud_processor::{Missing, Projection, parse_fields};
use cloud_processor::{Settings, run_pipeline};
use proptest::prelude::*;
use serde_json::{Value, json};

const MAX_RECORD: usize = 600;

/// xorshift64*: the file is a pure function of the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    Ndjson,
    PrettyConcatenated,
    /// `json.dump(records, f, indent=2)`.
    PrettyArray,
    OneLineArray,
    OneElementPerLine,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Bad {
    NaN,
    InvalidUtf8,
    ControlChar,
    TrailingComma,
    Truncated,
    Oversized,
    /// Over the window and over the reader's 64 KiB buffer, made of many
    /// short strings with escapes: the walk past the window must keep its
    /// place as it drops consumed bytes (a stale index once broke it).
    Huge,
    SingleQuotes,
}

const BADS: [Bad; 8] = [
    Bad::NaN,
    Bad::InvalidUtf8,
    Bad::ControlChar,
    Bad::TrailingComma,
    Bad::Truncated,
    Bad::Oversized,
    Bad::Huge,
    Bad::SingleQuotes,
];

fn record(rng: &mut Rng, id: usize) -> Value {
    let names = [
        "Ana",
        "Björn",
        "東京",
        "a \"quoted\" name",
        "tab\there",
        "x\\y",
        "€uro",
    ];
    json!({
        "id": id,
        "user": {"name": names[rng.below(names.len())], "n": rng.below(1000)},
        "tags": (0..rng.below(4)).map(|k| format!("t{k}")).collect::<Vec<_>>(),
        "v": [1.5, -2e-3, 123456789012345678u64, null, true],
        "noise": {"deep": {"deeper": [{"a": rng.below(9)}, {}, []]}, "s": "}{][,\"\\"},
    })
}

fn render(v: &Value, pretty: bool) -> String {
    if pretty {
        serde_json::to_string_pretty(v).unwrap()
    } else {
        serde_json::to_string(v).unwrap()
    }
}

/// Indents every line after the first (pretty elements inside an array).
fn indent(text: &[u8]) -> Vec<u8> {
    text.iter()
        .flat_map(|&b| {
            if b == b'\n' {
                b"\n  ".to_vec()
            } else {
                vec![b]
            }
        })
        .collect()
}

/// Makes a record bad in the given way. Every bad record keeps its id in
/// its first bytes, so none can be mistaken for a good one.
fn spoil(rng: &mut Rng, v: &Value, bad: Bad, pretty: bool) -> Vec<u8> {
    let text = render(v, pretty);
    let mut marked = v.clone();
    marked["mark"] = json!("MARK");
    let marked = render(&marked, pretty);
    match bad {
        Bad::NaN => marked.replace("\"MARK\"", "NaN").into_bytes(),
        Bad::InvalidUtf8 => {
            let at = marked.find("MARK").unwrap();
            let mut bytes = marked.into_bytes();
            bytes.splice(at..at + 4, *b"\xff\xfe");
            bytes
        }
        Bad::ControlChar => marked.replace("MARK", "a\u{7}b").into_bytes(),
        Bad::TrailingComma => {
            let close = text.rfind('}').unwrap();
            format!("{},{}", &text[..close], &text[close..]).into_bytes()
        }
        Bad::Truncated => {
            // Somewhere after the id, before the end.
            let from = text.find("\"user\"").unwrap();
            let cut = from + rng.below(text.len() - 1 - from);
            text.as_bytes()[..cut].to_vec()
        }
        Bad::Oversized => {
            let mut big = v.clone();
            big["pad"] = json!("p".repeat(MAX_RECORD));
            render(&big, pretty).into_bytes()
        }
        Bad::Huge => {
            let mut big = v.clone();
            let strings = 7_000 + rng.below(10_000);
            big["pad"] = json!(
                (0..strings)
                    .map(|k| format!("s{k}\"}}{{\\"))
                    .collect::<Vec<_>>()
            );
            render(&big, pretty).into_bytes()
        }
        Bad::SingleQuotes => marked.replace("\"MARK\"", "'MARK'").into_bytes(),
    }
}

struct Generated {
    layout: Layout,
    bytes: Vec<u8>,
    /// Good records in order, with their byte ranges.
    good: Vec<(Value, std::ops::Range<usize>)>,
    /// Byte ranges of bad records, with the value each spoils.
    bad: Vec<(Bad, std::ops::Range<usize>, Value)>,
}

/// How the file is read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// The pipeline's defaults, but for a small record window.
    Window,
    /// A window of 48 bytes, and larger records streamed up to 1 GiB.
    Streamed,
}

fn generate(seed: u64) -> Generated {
    let mut rng = Rng(seed | 1);
    let layouts = [
        Layout::Ndjson,
        Layout::PrettyConcatenated,
        Layout::PrettyArray,
        Layout::OneLineArray,
        Layout::OneElementPerLine,
    ];
    let layout = layouts[rng.below(layouts.len())];
    let mut out = Vec::new();
    let preambles = [
        "# collector v2",
        "// edge-writer",
        "[INFO] started",
        "{not json",
        "",
        "-- x",
        "[WARN] clock 12ms",
    ];
    for _ in 0..rng.below(4) {
        out.extend_from_slice(preambles[rng.below(preambles.len())].as_bytes());
        out.push(b'\n');
    }
    let n = 1 + rng.below(25);
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    let pretty = matches!(layout, Layout::PrettyConcatenated | Layout::PrettyArray);
    match layout {
        Layout::PrettyArray => out.extend_from_slice(b"[\n  "),
        Layout::OneLineArray | Layout::OneElementPerLine => out.push(b'['),
        _ => {}
    }
    for i in 0..n {
        if i > 0 {
            let sep: &[u8] = match layout {
                Layout::Ndjson | Layout::PrettyConcatenated => b"\n",
                Layout::PrettyArray => b",\n  ",
                Layout::OneLineArray => b",",
                Layout::OneElementPerLine => b",\n",
            };
            out.extend_from_slice(sep);
        }
        let v = record(&mut rng, i);
        // Bad records are likelier first and last, where readers slip.
        let edge = i == 0 || i == n - 1;
        let start = out.len();
        if rng.chance(if edge { 40 } else { 20 }) {
            let kind = BADS[rng.below(BADS.len())];
            let mut text = spoil(&mut rng, &v, kind, pretty);
            if layout == Layout::PrettyArray {
                text = indent(&text);
            }
            out.extend_from_slice(&text);
            bad.push((kind, start..out.len(), v));
        } else {
            let mut text = render(&v, pretty).into_bytes();
            if layout == Layout::PrettyArray {
                text = indent(&text);
            }
            out.extend_from_slice(&text);
            good.push((v, start..out.len()));
        }
    }
    match layout {
        Layout::PrettyArray => out.extend_from_slice(b"\n]\n"),
        Layout::OneLineArray => out.extend_from_slice(b"]\n"),
        Layout::OneElementPerLine => out.extend_from_slice(b"\n]\n"),
        _ => out.push(b'\n'),
    }
    Generated {
        layout,
        bytes: out,
        good,
        bad,
    }
}

fn settings() -> Settings {
    settings_for(Mode::Window)
}

fn settings_for(mode: Mode) -> Settings {
    let streamed = mode == Mode::Streamed;
    Settings {
        projection: Projection::new(
            &parse_fields("id,name=user.name,tags,noise").unwrap(),
            Missing::Omit,
        ),
        format: BodyFormat::Ndjson,
        max_body_bytes: 4096,
        max_record_bytes: if streamed { 48 } else { MAX_RECORD },
        max_decompressed_bytes: 1 << 30,
        records_pointer: None,
        large_records: if streamed {
            cloud_processor::LargeRecords::Offload
        } else {
            cloud_processor::LargeRecords::Reject
        },
        max_large_record_bytes: if streamed { 1 << 30 } else { 0 },
        decode_thread: true,
        resume: cloud_processor::Resume::default(),
    }
}

/// What the projection must give, computed from the value itself.
fn expected(v: &Value) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("id".into(), v["id"].clone());
    out.insert("name".into(), v["user"]["name"].clone());
    out.insert("tags".into(), v["tags"].clone());
    out.insert("noise".into(), v["noise"].clone());
    Value::Object(out)
}

fn check(seed: u64, compressed: bool) {
    check_in(seed, compressed, Mode::Window);
    check_in(seed, compressed, Mode::Streamed);
}

fn check_in(seed: u64, compressed: bool, mode: Mode) {
    let mut g = generate(seed);
    if mode == Mode::Streamed {
        // Streamed up to 1 GiB, an oversized record is a good one.
        let (over, bad) = g
            .bad
            .into_iter()
            .partition(|(k, ..)| matches!(k, Bad::Oversized | Bad::Huge));
        g.bad = bad;
        let over: Vec<(Bad, std::ops::Range<usize>, Value)> = over;
        g.good.extend(over.into_iter().map(|(_, r, v)| (v, r)));
        g.good.sort_by_key(|(_, r)| r.start);
    }
    let input = if compressed {
        zstd::encode_all(&g.bytes[..], 1).unwrap()
    } else {
        g.bytes.clone()
    };
    let mut got = Vec::new();
    let report = run_pipeline(&input[..], &settings_for(mode), |chunk| {
        for line in chunk.body.split(|&b| b == b'\n') {
            got.push(serde_json::from_slice::<Value>(line).unwrap());
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    let layout = |ranges: Vec<String>| ranges.join(" ");
    let ctx = || {
        format!(
            "seed {seed}, {mode:?}, {:?}, {} bytes\ngood: {}\nbad:  {}\nrejects: {}\nfile: {:?}",
            g.layout,
            g.bytes.len(),
            layout(
                g.good
                    .iter()
                    .map(|(v, r)| format!("{}@{r:?}", v["id"]))
                    .collect()
            ),
            layout(
                g.bad
                    .iter()
                    .map(|(k, r, _)| format!("{k:?}@{r:?}"))
                    .collect()
            ),
            layout(
                report
                    .rejects
                    .iter()
                    .map(|r| format!("{}+{}:{}", r.offset, r.length, r.reason))
                    .collect()
            ),
            String::from_utf8_lossy(&g.bytes[..g.bytes.len().min(3000)]),
        )
    };
    let ids = |vs: &[Value]| {
        vs.iter()
            .map(|v| v["id"].to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let regions: Vec<std::ops::Range<u64>> = report
        .rejects
        .iter()
        .map(|r| r.offset..r.offset + r.length)
        .collect();
    let within = |r: &std::ops::Range<usize>| {
        regions
            .iter()
            .find(|reg| reg.start <= r.start as u64 && r.end as u64 <= reg.end)
    };
    let mut want: Vec<Value> = g.good.iter().map(|(v, _)| expected(v)).collect();
    if g.layout == Layout::OneLineArray {
        // The one ambiguity no reader can resolve: in an array on one line,
        // elements after one cut short may continue it as valid JSON (they
        // read as values nested in it). They must then be inside the cut
        // element's reject region: reported, never sent as parts.
        want = g
            .good
            .iter()
            .filter(|(_, r)| {
                let swallowed = within(r).is_some_and(|reg| {
                    g.bad.iter().any(|(k, b, _)| {
                        *k == Bad::Truncated && reg.contains(&(b.start as u64)) && b.start < r.start
                    })
                });
                !swallowed
            })
            .map(|(v, _)| expected(v))
            .collect();
    }
    assert!(
        got == want,
        "got ids {} want {}\n{}",
        ids(&got),
        ids(&want),
        ctx()
    );

    let s = &report.stats;
    assert!(s.accounted(), "{}: {s:?}", ctx());
    assert_eq!(s.bytes_decompressed, g.bytes.len() as u64);
    for (kind, range, _) in &g.bad {
        assert!(
            regions.iter().any(|r| r.contains(&(range.start as u64))),
            "bad record {kind:?} at {range:?} is in no reject\n{}",
            ctx()
        );
    }
    for (_, range) in &g.good {
        if g.layout == Layout::OneLineArray && within(range).is_some() {
            continue;
        }
        assert!(
            !regions
                .iter()
                .any(|r| r.start < range.end as u64 && (range.start as u64) < r.end),
            "good record at {range:?} overlaps a reject\n{}",
            ctx()
        );
    }
    assert_eq!(s.records_out, want.len() as u64);
    assert!(s.rejected >= 1 || g.bad.is_empty());
}

#[test]
fn one_seed() {
    if let Ok(seed) = std::env::var("SEED") {
        let seed = seed.parse().unwrap();
        if let Ok(path) = std::env::var("DUMP") {
            std::fs::write(path, generate(seed).bytes).unwrap();
        }
        check(seed, false);
    }
}

#[test]
fn each_layout_and_each_kind_of_bad_record() {
    // Enough seeds that every layout meets every kind, first and last.
    for seed in 1..400 {
        check(seed, seed % 7 == 0);
    }
}

proptest! {
    // 512 files by default; PROPTEST_CASES=100000 for a long run.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
    ))]
    #[test]
    fn generated_dirty_files(seed in any::<u64>(), compressed in any::<bool>()) {
        check(seed, compressed);
    }
}

proptest! {
    /// Records that have any subset of the projected fields, none
    /// included, as NDJSON or pretty-printed after a junk line. Checked
    /// against a reference built from the values alone: a record with none
    /// of the fields is a reject with that reason, the others come out in
    /// order with exactly the fields they have, every byte is accounted
    /// for, and the misses per field are the values' own count.
    #[test]
    fn records_with_none_of_the_fields_are_rejects_and_misses_are_counted(
        recs in proptest::collection::vec((any::<u32>(), any::<bool>(), any::<bool>(), any::<bool>()), 1..40),
        pretty in any::<bool>(),
    ) {
        let mut text = String::from("# junk before the records\n");
        let mut want = Vec::new();
        let mut empty = 0u64;
        // Fields: id, name=user.name, tags, noise (which no record has).
        let mut missing = [0u64; 4];
        for &(n, has_id, has_name, has_tags) in &recs {
            let mut v = json!({ "other": n });
            let mut out = serde_json::Map::new();
            if has_id {
                v["id"] = json!(n);
                out.insert("id".into(), json!(n));
            }
            if has_name {
                v["user"] = json!({ "name": format!("u{n}") });
                out.insert("name".into(), json!(format!("u{n}")));
            }
            if has_tags {
                v["tags"] = json!([n % 7]);
                out.insert("tags".into(), json!([n % 7]));
            }
            for (m, has) in missing.iter_mut().zip([has_id, has_name, has_tags, false]) {
                *m += u64::from(!has);
            }
            if out.is_empty() {
                empty += 1;
            } else {
                want.push(Value::Object(out));
            }
            text.push_str(&render(&v, pretty));
            text.push('\n');
        }
        let mut got = Vec::new();
        let report = run_pipeline(text.as_bytes(), &settings(), |chunk| {
            for line in chunk.body.split(|&b| b == b'\n') {
                got.push(serde_json::from_slice::<Value>(line).unwrap());
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        let s = &report.stats;
        prop_assert_eq!(&got, &want);
        prop_assert_eq!((s.records_in, s.records_out, s.rejected), (recs.len() as u64, want.len() as u64, empty));
        prop_assert!(report.rejects.iter().all(|r| r.reason.contains("none of the fields")), "{:?}", report.rejects);
        prop_assert!(s.accounted(), "{:?}", s);
        prop_assert_eq!(&s.field_missing[..], &missing[..]);
    }
}

/// One chunk of a run: its number, its records' span, and their ids.
type Sent = (u32, [u64; 2], Vec<String>);

/// Every chunk of a run over `input` under `settings`.
fn chunks_of(input: &[u8], settings: &Settings) -> (Vec<Sent>, cloud_processor::Report) {
    let mut chunks = Vec::new();
    let report = run_pipeline(input, settings, |mut chunk| {
        let mut body = Vec::new();
        chunk.write_body(&mut body).unwrap();
        let ids = body
            .split(|&b| b == b'\n')
            .map(|line| serde_json::from_slice::<Value>(line).unwrap()["id"].to_string())
            .collect();
        chunks.push((chunk.index, chunk.span, ids));
        ControlFlow::Continue(())
    })
    .unwrap();
    (chunks, report)
}

/// An object half-sent under one field list is finished under another, as
/// after an upgrade that changed the fields: a run under the old settings
/// settles its first `cut` chunks and, as a batch SQS took in part, some
/// chunks after them; the run under the new settings skips their records by
/// position. Every record the object holds is sent exactly once across the
/// two, and the new run's chunks are numbered after every old number.
fn check_settings_change(seed: u64, mode: Mode, cut: usize, ahead: u8) {
    let g = generate(seed);
    let old = Settings {
        max_body_bytes: 300,
        ..settings_for(mode)
    };
    let new = Settings {
        projection: Projection::new(&parse_fields("id,tags").unwrap(), Missing::Omit),
        max_body_bytes: 700,
        ..settings_for(mode)
    };
    let (all, _) = chunks_of(&g.bytes, &old);
    let cut = cut % (all.len() + 1);
    // Settled: chunks below the cut, and those above it picked by `ahead`'s bits.
    let settled: Vec<&Sent> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < cut || (*i - cut < 8 && ahead & (1 << (*i - cut)) != 0))
        .map(|(_, c)| c)
        .collect();
    let resume = cloud_processor::Resume {
        earlier: settled.iter().map(|c| c.1).collect(),
        first_chunk: settled.iter().map(|c| c.0 + 1).max().unwrap_or(0),
    };
    let (rest, report) = chunks_of(
        &g.bytes,
        &Settings {
            resume: resume.clone(),
            ..new
        },
    );
    let mut got: Vec<&String> = settled
        .iter()
        .copied()
        .chain(&rest)
        .flat_map(|c| &c.2)
        .collect();
    let mut want: Vec<&String> = all.iter().flat_map(|c| &c.2).collect();
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "seed {seed} {mode:?} cut {cut} ahead {ahead:#b}: {resume:?}"
    );
    let first = resume.first_chunk;
    assert!(
        rest.iter()
            .map(|c| c.0)
            .eq(first..first + rest.len() as u32)
    );
    let skipped: usize = settled.iter().map(|c| c.2.len()).sum();
    assert!(report.stats.earlier >= skipped as u64);
    assert!(report.stats.accounted());
}

proptest! {
    #[test]
    fn a_settings_change_mid_object_sends_every_record_once(
        seed in any::<u64>(),
        streamed in any::<bool>(),
        cut in any::<usize>(),
        ahead in any::<u8>(),
    ) {
        let mode = if streamed { Mode::Streamed } else { Mode::Window };
        check_settings_change(seed, mode, cut, ahead);
    }
}
