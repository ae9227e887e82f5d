//! The processor's hot path on one core: decompress, strip, parse and validate,
//! project 6 of ~26 fields, pack. Input: realistic generated records of about
//! 800 bytes (`relay_shared::sample`), zstd -3. Reports MB/s of decompressed
//! JSON and records/s, as the median of several runs, and the same for
//! zstd decoding alone, the ceiling.
//!
//! Times are CPU time of the benchmark's thread (`/proc/thread-self/schedstat`),
//! so other load on the machine does not count against it. With
//! RELAY_BENCH_PYTHON set to a Python that has `zstandard`, it also runs
//! `scripts/bench_python.py`, the obvious Python Lambda, on the same file
//! and prints the ratio.
//!
//! RELAY_BENCH_MB (default 64) sets the input size.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark: failing loudly is right.

use std::ops::ControlFlow;

use cloud_processor::pack::BodyFormat;
use cloud_processor::pipeline::{Settings, run};
use cloud_processor::project::{Missing, Projection, parse_fields};
use relay_shared::sample::SampleGen;

const FIELDS: &str = "id,ts=timestamp,type,user_id=user.id,country=geo.country,first_tag=tags.0";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mb: usize = std::env::var("RELAY_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let (text, records) = SampleGen::new(7).file(mb << 20);
    let compressed = zstd::encode_all(text.as_bytes(), 3).unwrap();
    let settings = Settings {
        projection: Projection::new(&parse_fields(FIELDS).unwrap(), Missing::Omit),
        format: BodyFormat::Ndjson,
        max_body_bytes: 256 * 1024 - 200,
        max_record_bytes: 1 << 20,
        max_decompressed_bytes: 1 << 40,
        records_pointer: None,
        large_records: cloud_processor::pipeline::LargeRecords::Reject,
    };
    // CPU nanoseconds this thread has run.
    let cpu = || -> f64 {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        stat.split_whitespace()
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            / 1e9
    };
    let runs = 7;
    let mut decode = Vec::new();
    let mut full = Vec::new();
    let mut out_bytes = 0;
    for _ in 0..runs {
        let t = cpu();
        let mut d = zstd::stream::read::Decoder::new(&compressed[..]).unwrap();
        std::io::copy(&mut d, &mut std::io::sink()).unwrap();
        decode.push(cpu() - t);

        let t = cpu();
        out_bytes = 0;
        let report = run(&compressed[..], &settings, |c| {
            out_bytes += c.body.len();
            ControlFlow::Continue(())
        })
        .unwrap();
        full.push(cpu() - t);
        assert_eq!(report.stats.records_out as usize, records);
        assert_eq!(report.stats.rejected, 0);
    }
    let mbytes = text.len() as f64 / 1e6;
    let (d, f) = (median(decode), median(full));
    println!(
        "| stage (one core, {:.0} MB of JSON, {records} records of ~{} B, zstd ratio {:.1}) | MB/s | records/s |",
        mbytes,
        text.len() / records,
        text.len() as f64 / compressed.len() as f64
    );
    println!("|---|---|---|");
    println!("| zstd decode alone (ceiling) | {:.0} | |", mbytes / d);
    println!(
        "| decode + strip + parse/validate + project 6 fields + pack | {:.0} ({:.0}% of zstd alone) | {:.0} |",
        mbytes / f,
        100.0 * d / f,
        records as f64 / f
    );
    if let Ok(python) = std::env::var("RELAY_BENCH_PYTHON") {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.json.zst");
        std::fs::write(&path, &compressed).unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/bench_python.py");
        let out = std::process::Command::new(python)
            .arg(script)
            .arg(&path)
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{line}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let py: f64 = line.split_whitespace().next().unwrap().parse().unwrap();
        println!("| the obvious Python Lambda (json module), same file | {py:.0} | |");
        println!(
            "| relay / Python, per CPU-second | {:.1}x | |",
            mbytes / f / py
        );
    }
    println!(
        "| output | {:.1} MB in 256 KiB bodies | |",
        out_bytes as f64 / 1e6
    );
}
