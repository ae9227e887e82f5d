//! Peak memory of the processor: on a large object (about 1 GB of
//! decompressed JSON; RELAY_BENCH_GB sets the size), and on small hostile
//! objects that decompress to long runs of whitespace, separators or junk
//! between records, and single records of 200 MiB. Each runs the release binary's `process` mode (the same
//! pipeline the Lambda runs) and reports the child's peak RSS.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark: failing loudly is right.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use relay_shared::sample::SampleGen;

fn main() {
    let gb: f64 = std::env::var("RELAY_BENCH_GB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let target = (gb * 1e9) as u64;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("1763800000000.json.zst");
    let mut enc =
        zstd::stream::write::Encoder::new(std::fs::File::create(&path).unwrap(), 3).unwrap();
    let mut g = SampleGen::new(11);
    let (mut written, mut records) = (0u64, 0u64);
    let mut text = String::new();
    g.preamble(&mut text);
    while written < target {
        for _ in 0..1000 {
            g.record(&mut text);
            text.push('\n');
            records += 1;
        }
        enc.write_all(text.as_bytes()).unwrap();
        written += text.len() as u64;
        text.clear();
    }
    enc.finish().unwrap();
    let compressed = std::fs::metadata(&path).unwrap().len();

    println!("| object | peak RSS | wall time | throughput |");
    println!("|---|---|---|---|");
    let (peak, secs) = measure(&path, target * 2, records);
    println!(
        "| {:.2} GB of JSON ({records} records), {:.0} MB zstd | {:.1} MiB | {secs:.1} s | {:.0} MB/s |",
        written as f64 / 1e9,
        compressed as f64 / 1e6,
        peak,
        written as f64 / 1e6 / secs
    );

    // Runs that once were held whole: 400 MB between two records.
    let run = 400usize << 20;
    for (what, head, fill, tail) in [
        (
            "spaces between two records",
            "# c\n{\"id\":1}",
            b' ',
            "{\"id\":2}\n",
        ),
        (
            "blank lines between two records",
            "# c\n{\"id\":1}\n",
            b'\n',
            "{\"id\":2}\n",
        ),
        (
            "spaces between two array elements",
            "[{\"id\":1},",
            b' ',
            "{\"id\":2}]\n",
        ),
        ("one preamble line", "#", b'#', "\n{\"id\":1}\n{\"id\":2}\n"),
    ] {
        let path = dir.path().join("1763800000001.json.zst");
        let (compressed, peak, secs) =
            measure_run(&path, head.as_bytes(), fill, run, tail.as_bytes());
        println!(
            "| 400 MiB of {what}, {:.0} kB zstd | {peak:.1} MiB | {secs:.1} s | {:.0} MB/s |",
            compressed as f64 / 1e3,
            run as f64 / 1e6 / secs
        );
    }
    large_records(dir.path());
}

/// Records over the 1 MiB window stream through the parser: with the big
/// value unwanted (dropped as it passes), and wanted (kept in a temporary
/// file past 1 MiB, then written out from it).
fn large_records(dir: &std::path::Path) {
    let size = 200usize << 20;
    for (what, key) in [("unwanted", "pad"), ("projected", "type")] {
        let path = dir.join("1763800000002.json.zst");
        let head = format!("# c\n{{\"id\":1,\"{key}\":\"");
        let (compressed, peak, secs) =
            measure_run(&path, head.as_bytes(), b'x', size, b"\"}\n{\"id\":2}\n");
        println!(
            "| one 200 MiB record, its big value {what}, {:.0} kB zstd | {peak:.1} MiB | {secs:.1} s | {:.0} MB/s |",
            compressed as f64 / 1e3,
            size as f64 / 1e6 / secs
        );
    }
}

/// Writes `head`, `run` bytes of `fill` and `tail` to `path` as zstd, then
/// processes it: (compressed bytes, peak RSS in MiB, seconds). Two records.
fn measure_run(
    path: &std::path::Path,
    head: &[u8],
    fill: u8,
    run: usize,
    tail: &[u8],
) -> (u64, f64, f64) {
    let mut enc =
        zstd::stream::write::Encoder::new(std::fs::File::create(path).unwrap(), 3).unwrap();
    enc.write_all(head).unwrap();
    std::io::copy(&mut std::io::repeat(fill).take(run as u64), &mut enc).unwrap();
    enc.write_all(tail).unwrap();
    enc.finish().unwrap();
    let compressed = std::fs::metadata(path).unwrap().len();
    let (peak, secs) = measure(path, 2 * run as u64, 2);
    (compressed, peak, secs)
}

/// Runs `process` on `path` and returns its peak RSS (MiB) and wall time.
fn measure(path: &std::path::Path, limit: u64, records: u64) -> (f64, f64) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloud-processor"))
        .args([
            "--fields",
            "id,ts=timestamp,type,user_id=user.id,country=geo.country,first_tag=tags.0",
        ])
        .args(["--max-decompressed-bytes", &limit.to_string(), "process"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(&status_path)
            && let Some(v) = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))
        {
            peak_kib = peak_kib.max(v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    let out = child.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{summary}");
    assert!(
        summary.contains(&format!("\"records_out\":{records}")),
        "every record out: {summary}"
    );
    (peak_kib as f64 / 1024.0, secs)
}
