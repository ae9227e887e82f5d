//! The processor's hot path on one core: decompress, strip, parse and validate,
//! project 6 of ~26 fields, pack. Input: realistic generated records of about
//! 800 bytes (`relay_shared::sample`), zstd -3. Reports MB/s of decompressed
//! JSON and records/s, as the median of several runs, and the same for
//! zstd decoding alone, the ceiling.
//!
//! Times are CPU time of the whole process (`CLOCK_PROCESS_CPUTIME_ID`, both
//! the parsing thread and the decoding thread the pipeline starts), so other
//! load on the machine does not count against it, and wall time, which the
//! two threads shorten on a machine with two cores to spare. With
//! RELAY_BENCH_PYTHON set to a Python that has `zstandard`, it also runs
//! `scripts/bench_python.py`, the obvious Python Lambda, on the same file
//! and prints the ratio.
//!
//! Before printing, it checks that the output is byte for byte what the
//! serde_json reference projection writes for the same file.
//!
//! Then the cost of field rules: the same run with the fields typed and
//! required, and with two of them pseudonymized by `hmac()`.
//!
//! RELAY_BENCH_MB (default 64) sets the input size.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark: failing loudly is right.

use std::ops::ControlFlow;

use cloud_processor::BodyFormat;
use cloud_processor::{Missing, Projection, parse_fields};
use cloud_processor::{Resume, Settings, run_pipeline as run};
use relay_shared::sample::SampleGen;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The same fields typed and required, and with two of them pseudonymized.
const TYPED_FIELDS: &str = "id:string!,ts=timestamp:string!,type:string,user_id=user.id:int|string,\
                            country=geo.country:string,first_tag=tags.0:string";
const HMAC_FIELDS: &str = "id,ts=timestamp,type,uid=hmac(user.id),country=geo.country,\
                           mail=hmac(user.email)";

/// What rules and hashing cost: one thread, the plain list against the
/// typed one and the one with two `hmac()` fields, interleaved run by run
/// so that the machine's load falls on all three alike.
fn rules(compressed: &[u8], plain: &Settings, mbytes: f64, records: usize, runs: usize) {
    let cpu = || -> f64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
    };
    let with = |spec: &str| Settings {
        projection: Projection::new(&parse_fields(spec).unwrap(), Missing::Omit)
            .with_key(cloud_processor::HmacKey::new(b"bench key")),
        ..plain.clone()
    };
    let lists = [
        ("plain (as above)", plain.clone()),
        (TYPED_FIELDS, with(TYPED_FIELDS)),
        (HMAC_FIELDS, with(HMAC_FIELDS)),
    ];
    let mut times = vec![Vec::new(); lists.len()];
    for _ in 0..runs {
        for ((_, settings), t) in lists.iter().zip(&mut times) {
            let started = cpu();
            let report = run(compressed, settings, |_| ControlFlow::Continue(())).unwrap();
            t.push(cpu() - started);
            assert_eq!(
                report.stats.records_out as usize, records,
                "every record keeps the rules"
            );
        }
    }
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    println!();
    println!("| field list, one thread | MB/s | vs plain |");
    println!("|---|---|---|");
    for ((name, _), m) in lists.iter().zip(&medians) {
        println!(
            "| `{name}` | {:.0} | {:+.1}% |",
            mbytes / m,
            100.0 * (medians[0] / m - 1.0)
        );
    }
}

fn main() {
    let mb: usize = std::env::var("RELAY_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let (text, records) = SampleGen::new(7).file(mb << 20);
    let compressed = zstd::encode_all(text.as_bytes(), 3).unwrap();
    let settings = Settings {
        projection: Projection::new(
            &parse_fields(cloud_processor::testing::SAMPLE_FIELDS).unwrap(),
            Missing::Omit,
        ),
        format: BodyFormat::Ndjson,
        max_body_bytes: 256 * 1024 - 200,
        max_record_bytes: 1 << 20,
        max_decompressed_bytes: 1 << 40,
        records_pointer: None,
        large_records: cloud_processor::LargeRecords::Reject,
        max_large_record_bytes: 0,
        decode_thread: true,
        resume: Resume::default(),
    };
    // CPU seconds this process has run, every thread included.
    let cpu = || -> f64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
    };
    let runs = 7;
    let one_thread = Settings {
        decode_thread: false,
        ..settings.clone()
    };
    let mut decode = Vec::new();
    let mut single = Vec::new();
    let mut full = Vec::new();
    let mut full_wall = Vec::new();
    let mut out_bytes = 0;
    for _ in 0..runs {
        let t = cpu();
        let mut d = zstd::stream::read::Decoder::new(&compressed[..]).unwrap();
        std::io::copy(&mut d, &mut std::io::sink()).unwrap();
        decode.push(cpu() - t);

        let t = cpu();
        run(&compressed[..], &one_thread, |_| ControlFlow::Continue(())).unwrap();
        single.push(cpu() - t);
        let (t, wall) = (cpu(), std::time::Instant::now());
        out_bytes = 0;
        let report = run(&compressed[..], &settings, |c| {
            out_bytes += c.body.len();
            ControlFlow::Continue(())
        })
        .unwrap();
        full.push(cpu() - t);
        full_wall.push(wall.elapsed().as_secs_f64());
        assert_eq!(report.stats.records_out as usize, records);
        assert_eq!(report.stats.rejected, 0);
    }
    // Untimed: the output is the serde_json reference's, byte for byte, on
    // this very file (and `pipeline::tests` checks the same on a smaller one).
    let mut got = Vec::new();
    run(&compressed[..], &settings, |c| {
        got.push(c.body);
        ControlFlow::Continue(())
    })
    .unwrap();
    let want = cloud_processor::testing::sample_reference(7, &text, &settings.projection);
    assert!(
        got.join(&b'\n') == want.join(&b'\n'),
        "the output differs from the reference"
    );
    let mbytes = text.len() as f64 / 1e6;
    let (d, f, w) = (median(decode), median(full), median(full_wall));
    let one = median(single);
    println!(
        "| stage ({:.0} MB of JSON, {records} records of ~{} B, zstd ratio {:.1}) | MB/s | records/s |",
        mbytes,
        text.len() / records,
        text.len() as f64 / compressed.len() as f64
    );
    println!("|---|---|---|");
    println!("| zstd decode alone (ceiling) | {:.0} | |", mbytes / d);
    println!(
        "| decode + strip + parse/validate + project 6 fields + pack, one thread | {:.0} ({:.0}% of zstd alone) | {:.0} |",
        mbytes / one,
        100.0 * d / one,
        records as f64 / one
    );
    println!(
        "| the same, decoding on a thread of its own: per CPU-second | {:.0} ({:.0}% of zstd alone) | {:.0} |",
        mbytes / f,
        100.0 * d / f,
        records as f64 / f
    );
    println!(
        "| the same, decoding on a thread of its own: wall time | {:.0} ({:.0}% of zstd alone) | {:.0} |",
        mbytes / w,
        100.0 * d / w,
        records as f64 / w
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
            "| relay / Python, per CPU-second (one thread) | {:.1}x | |",
            mbytes / one / py
        );
    }
    println!(
        "| output | {:.1} MB in 256 KiB bodies | |",
        out_bytes as f64 / 1e6
    );
    rules(&compressed, &one_thread, mbytes, records, runs);
}
