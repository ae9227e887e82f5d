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
    // as it has no `id`); serde_json skips it without recursing.
    text.extend_from_slice("{\"a\":".repeat(10_000).as_bytes());
    text.extend_from_slice(b"1");
    text.extend_from_slice("}".repeat(10_000).as_bytes());
    text.extend_from_slice(b"\n{\"id\":4}\n{\"id\":\"");
    text.extend(std::iter::repeat_n(b'x', 100 << 20)); // a 100 MB single line
    text.extend_from_slice(b"\"}\n{\"id\":5}\n");
    let file = write(dir.path(), "hostile.json", &text);
    let mut gz = Vec::new();
    zstd::stream::write::Encoder::new(&mut gz, 1)
        .unwrap()
        .auto_finish()
        .write_all(&text)
        .unwrap();
    let packed = write(dir.path(), "hostile.json.zst", &gz);

    for f in [&file, &packed] {
        let (out, elapsed) = run(&[f], &[]);
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
                "{\"id\":5}"
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
            short[2].contains(":9: ") && short[2].contains("record size limit"),
            "{}",
            short[2]
        );
        assert!(elapsed < Duration::from_secs(60), "{name} took {elapsed:?}");
    }
}

#[test]
fn a_record_over_the_message_limit_is_rejected_with_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let big = format!("{{\"id\":\"{}\"}}\n", "y".repeat(5000));
    let file = write(
        dir.path(),
        "big.json",
        format!("{{\"id\":1}}\n{big}{{\"id\":2}}\n").as_bytes(),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_cloud-processor"))
        .env_clear()
        .args(["--fields", "id", "process", "--max-message-bytes", "2000"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"id\":1}\n{\"id\":2}\n"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("big.json:2: offset 9: the projected record is 5009 bytes; a message body can hold at most 1898"), "{}", &err[..err.len().min(300)]);
}
