//! Hostile input through the real binary (`process`): each case must give a
//! clear error naming the file, with no panic, OOM or hang, and without
//! losing the good records next to it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn run(files: &[&Path], extra: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_cloud-processor"))
        .env_clear()
        .args(["--fields", "id", "--max-decompressed-bytes", "200000000"])
        .args(extra)
        .arg("process")
        .args(files)
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "a panic: {err}");
    (out, elapsed)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

const GOOD: &[u8] = b"{\"id\":1}\n";

#[test]
fn empty_comment_only_and_garbage_files_give_no_records_and_no_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write(dir.path(), "empty.json", b"");
    let comments = write(
        dir.path(),
        "comments.json",
        b"# only\n// comments\n[INFO] banner\n",
    );
    let (out, _) = run(&[&empty, &comments], &[]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("empty.json: {") && err.contains("comments.json: {"),
        "a summary per file: {err}"
    );
    assert!(err.contains("\"preamble_lines\":3"), "{err}");
}

#[test]
fn broken_compression_is_named_and_the_next_file_still_goes_through() {
    let dir = tempfile::tempdir().unwrap();
    let mut truncated = zstd::encode_all(&GOOD.repeat(100_000)[..], 3).unwrap();
    truncated.truncate(truncated.len() / 2);
    let truncated = write(dir.path(), "truncated.json.zst", &truncated);
    // zstd magic, then garbage: "not zstd" that claims to be.
    let fake = write(
        dir.path(),
        "fake.json.zst",
        &[0x28, 0xB5, 0x2F, 0xFD, 0xFF, 0xFF, 0x00, 0x13],
    );
    let good = write(dir.path(), "good.json", GOOD);
    let (out, _) = run(&[&truncated, &fake, &good], &[]);
    assert!(!out.status.success(), "unreadable files fail the run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("truncated.json.zst: cannot be read: the zstd data is corrupt"),
        "{err}"
    );
    assert!(err.contains("fake.json.zst: cannot be read"), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("{\"id\":1}\n"),
        "the good file still went through"
    );
}

#[test]
fn a_zstd_bomb_stops_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    // 1 GB of zeros compresses to about 30 KB.
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    std::io::copy(&mut std::io::repeat(0).take(1 << 30), &mut enc).unwrap();
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let bomb = write(dir.path(), "bomb.json.zst", &bomb);
    let (out, elapsed) = run(&[&bomb], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "bomb.json.zst: cannot be read: it decompresses to more than the 200000000-byte limit"
        ),
        "{err}"
    );
    assert!(
        elapsed < Duration::from_secs(30),
        "stopped early: {elapsed:?}"
    );
}

#[test]
fn invalid_utf8_nul_bytes_deep_nesting_and_a_huge_line_cost_only_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = Vec::new();
    text.extend_from_slice(b"# header\n{\"id\":1}\n");
    text.extend_from_slice(b"{\"id\":\"\xff\xfe\"}\n"); // invalid UTF-8 in a string
    text.extend_from_slice(b"{\"id\":2}\n");
    text.extend_from_slice(b"{\"id\":\"a\x00b\"}\n"); // a NUL byte
    text.extend_from_slice(b"{\"id\":3}\n");
    // Nested 10,000 deep: valid JSON, so it is a record (projected to `{}`,
    // as it has no `id`, with `--empty-records send`); the scanner skips it
    // without recursing.
    text.extend_from_slice("{\"a\":".repeat(10_000).as_bytes());
    text.extend_from_slice(b"1");
    text.extend_from_slice("}".repeat(10_000).as_bytes());
    text.extend_from_slice(b"\n{\"id\":4}\n{\"id\":\"");
    // A 12 MiB single line: a record, read as it streams (never whole).
    text.extend(std::iter::repeat_n(b'x', 12 << 20));
    text.extend_from_slice(b"\"}\n{\"id\":5}\n{\"id\":\"");
    // Over the largest record read (16 MiB here): rejected with the limit.
    text.extend(std::iter::repeat_n(b'y', 20 << 20));
    text.extend_from_slice(b"\"}\n{\"id\":6}\n");
    let file = write(dir.path(), "hostile.json", &text);
    let mut gz = Vec::new();
    zstd::stream::write::Encoder::new(&mut gz, 1)
        .unwrap()
        .auto_finish()
        .write_all(&text)
        .unwrap();
    let packed = write(dir.path(), "hostile.json.zst", &gz);

    for f in [&file, &packed] {
        let (out, elapsed) = run(
            &[f],
            &["--empty-records", "send", "--max-record-bytes", "16777216"],
        );
        assert!(out.status.success());
        let stdout = String::from_utf8(out.stdout).unwrap();
        // Compared as a short list, so a failure does not print megabytes.
        let lines: Vec<&str> = stdout.lines().map(|l| &l[..l.len().min(40)]).collect();
        assert_eq!(
            lines,
            [
                "{\"id\":1}",
                "{\"id\":2}",
                "{\"id\":3}",
                "{}",
                "{\"id\":4}",
                "{\"id\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                "{\"id\":5}",
                "{\"id\":6}"
            ],
            "every good record around the bad ones"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        let name = f.file_name().unwrap().to_string_lossy();
        let rejects: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with(&format!("{}:", f.display())) && l.contains("offset"))
            .collect();
        let short: Vec<&str> = rejects.iter().map(|l| &l[..l.len().min(200)]).collect();
        assert_eq!(rejects.len(), 3, "{name}: {short:?}");
        assert!(
            short[0].contains(":3: ") && short[0].contains("invalid JSON"),
            "{}",
            short[0]
        );
        assert!(
            short[1].contains(":5: ") && short[1].contains("invalid JSON"),
            "{}",
            short[1]
        );
        assert!(
            short[2].contains(":11: ")
                && short[2].contains("(RELAY_MAX_RECORD_BYTES, 16777216 bytes)"),
            "{}",
            short[2]
        );
        let xs = stdout
            .lines()
            .find(|l| l.starts_with("{\"id\":\"x"))
            .unwrap();
        assert_eq!(xs.len(), (12 << 20) + 9, "the 12 MiB record whole");
        assert!(elapsed < Duration::from_secs(60), "{name} took {elapsed:?}");
    }
}

#[test]
fn a_record_over_the_message_limit_is_rejected_with_its_size_if_asked() {
    let dir = tempfile::tempdir().unwrap();
    let big = format!("{{\"id\":\"{}\"}}\n", "y".repeat(5000));
    let file = write(
        dir.path(),
        "big.json",
        format!("{{\"id\":1}}\n{big}{{\"id\":2}}\n").as_bytes(),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_cloud-processor"))
        .env_clear()
        .args(["--fields", "id", "--large-records", "reject"])
        .args(["process", "--max-message-bytes", "2000"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"id\":1}\n{\"id\":2}\n"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("big.json:2: offset 9 (5009 bytes): the projected record is 5009 bytes; a message body can hold at most 1826"), "{}", &err[..err.len().min(300)]);
}

/// By default a record too large for a message is offloaded: `process`
/// writes it as a payload file of its own, in order, and says so; one over
/// the 1 MiB window too, written from its spools.
#[test]
fn a_record_over_the_message_limit_is_offloaded_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let big = format!("{{\"id\":\"{}\"}}", "y".repeat(5000));
    let huge = format!("{{\"id\":\"{}\"}}", "z".repeat(1_500_000));
    let file = write(
        dir.path(),
        "big.json",
        format!("{{\"id\":1}}\n{big}\n{{\"id\":2}}\n{huge}\n{{\"id\":3}}\n").as_bytes(),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_cloud-processor"))
        .env_clear()
        .args([
            "--fields",
            "id",
            "process",
            "--max-message-bytes",
            "2000",
            "--out",
        ])
        .arg(out_dir.path())
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut files: Vec<String> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "big.json.00000.json",
            "big.json.00001.payload.json",
            "big.json.00002.json",
            "big.json.00003.payload.json",
            "big.json.00004.json"
        ]
    );
    let read = |name: &str| std::fs::read_to_string(out_dir.path().join(name)).unwrap();
    assert_eq!(read("big.json.00001.payload.json"), big);
    assert_eq!(read("big.json.00002.json"), "{\"id\":2}");
    assert!(read("big.json.00003.payload.json") == huge);
    assert_eq!(read("big.json.00004.json"), "{\"id\":3}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"offloaded\":2") && err.contains("2 record(s) too large"),
        "{err}"
    );
}

fn ids(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l[..l.len().min(40)].to_owned())
        .collect()
}

fn reject_lines(out: &Output, file: &Path) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with(&format!("{}:", file.display())) && l.contains("offset"))
        .map(|l| l[..l.len().min(200)].to_owned())
        .collect()
}

/// The cases that once lost records without a trace, each through the
/// binary, plain and zstd: every good record comes out, every bad one is
/// reported, and the summary's byte accounting adds up.
#[test]
fn files_that_once_lost_records_keep_all_their_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    // `json.dump(records, f, indent=2)` with one element over the largest
    // record read (1 MiB here) in the middle.
    let mut pretty = String::from("# export\n[\n");
    for i in 0..5 {
        let pad = if i == 2 {
            "p".repeat(1_100_000)
        } else {
            "q".into()
        };
        let sep = if i < 4 { "," } else { "" };
        pretty.push_str(&format!(
            "  {{\n    \"id\": {i},\n    \"pad\": \"{pad}\"\n  }}{sep}\n"
        ));
    }
    pretty.push_str("]\n");
    // Python writes NaN; here in the first element.
    let nan = "[\n  {\n    \"id\": 0,\n    \"v\": NaN\n  },\n  {\n    \"id\": 1,\n    \"v\": 2\n  },\n  {\n    \"id\": 2,\n    \"v\": Infinity\n  },\n  {\n    \"id\": 3\n  }\n]\n";
    // A preamble, then records with trailing commas.
    let commas = "# c\n{\"id\":1},\n{\"id\":2},\n";
    let mut utf8 = b"{\"id\":1,\"other\":\"ok\"}\n{\"id\":2,\"other\":\"".to_vec();
    utf8.extend_from_slice(b"\xc3\x28\"}\n{\"id\":3}\n");
    let cases: [(&str, Vec<u8>, &[&str], usize); 4] = [
        (
            "pretty.json",
            pretty.into_bytes(),
            &["{\"id\":0", "{\"id\":1", "{\"id\":3", "{\"id\":4"],
            1,
        ),
        (
            "nan.json",
            nan.as_bytes().to_vec(),
            &["{\"id\":1}", "{\"id\":3}"],
            2,
        ),
        (
            "commas.json",
            commas.as_bytes().to_vec(),
            &["{\"id\":1}", "{\"id\":2}"],
            0,
        ),
        ("utf8.json", utf8, &["{\"id\":1}", "{\"id\":3}"], 1),
    ];
    for (name, bytes, want, rejects) in cases {
        let plain = write(dir.path(), name, &bytes);
        let packed = write(
            dir.path(),
            &format!("{name}.zst"),
            &zstd::encode_all(&bytes[..], 1).unwrap(),
        );
        for f in [&plain, &packed] {
            let (out, _) = run(&[f], &["--max-record-bytes", "1048576"]);
            assert!(out.status.success(), "{name}");
            let got: Vec<String> = ids(&out)
                .iter()
                .map(|l| l[..l.len().min(want[0].len())].to_owned())
                .collect();
            assert_eq!(got, want, "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(
                reject_lines(&out, f).len(),
                rejects,
                "{name}: {:?}",
                reject_lines(&out, f)
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("accounting does not add up"), "{err}");
            assert!(
                err.contains(&format!("\"bytes_decompressed\":{}", bytes.len())),
                "{err}"
            );
        }
    }
}

/// 100 MB of spaces, or of newlines, between two records: both records come
/// out (peak memory for this is measured by the `rss` benchmark).
#[test]
fn long_whitespace_runs_between_records() {
    let dir = tempfile::tempdir().unwrap();
    for (name, fill) in [("spaces.json.zst", b' '), ("newlines.json.zst", b'\n')] {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.write_all(b"# c\n{\"id\":1}").unwrap();
        std::io::copy(&mut std::io::repeat(fill).take(100 << 20), &mut enc).unwrap();
        enc.write_all(b"{\"id\":2}\n").unwrap();
        let packed = enc.finish().unwrap();
        assert!(packed.len() < 100_000);
        let f = write(dir.path(), name, &packed);
        let (out, _) = run(&[&f], &[]);
        assert!(out.status.success());
        assert_eq!(ids(&out), ["{\"id\":1}", "{\"id\":2}"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("\"separator_bytes\":{}", (100 << 20) + 1)),
            "{err}"
        );
    }
}

/// SQS refuses U+FFFE and U+FFFF; they leave as escapes, the same value.
#[test]
fn characters_sqs_refuses_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "nonchar.json",
        "{\"id\":\"a\u{FFFF}b\u{FFFE}\"}\n".as_bytes(),
    );
    let (out, _) = run(&[&f], &[]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"id\":\"a\\uFFFFb\\uFFFE\"}\n"
    );
}
