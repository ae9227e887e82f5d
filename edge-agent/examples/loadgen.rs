//! Load generator: writes files the way the edge container does, timestamp
//! names, junk comment preambles and many short JSON messages each, at a set
//! message rate. Deterministic from its seed (content, not timing).
//!
//!   cargo run --example loadgen -p edge-agent -- --dir DIR [--rate 6000] [--duration-secs 30]

#![allow(clippy::unwrap_used, clippy::expect_used)] // A demo tool: fail loudly.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use relay_shared::sample::SampleGen;

#[derive(Debug, Parser)]
struct Args {
    /// Directory to write into (the edge agent's watch directory).
    #[arg(long, env = "RELAY_LOADGEN_DIR")]
    dir: PathBuf,
    /// Messages per second, in all.
    #[arg(long, env = "RELAY_LOADGEN_RATE", default_value_t = 6000)]
    rate: u64,
    /// How long to write for.
    #[arg(long, env = "RELAY_LOADGEN_DURATION_SECS", default_value_t = 30)]
    duration_secs: u64,
    /// Messages per file.
    #[arg(long, env = "RELAY_LOADGEN_RECORDS_PER_FILE", default_value_t = 1000)]
    records_per_file: u64,
    /// Seed for the content.
    #[arg(long, env = "RELAY_LOADGEN_SEED", default_value_t = 1)]
    seed: u64,
}

fn main() {
    let args = Args::parse();
    assert!(
        args.rate > 0 && args.records_per_file > 0,
        "rate and records per file must be positive"
    );
    let mut sample = SampleGen::new(args.seed);
    let per_file = Duration::from_secs_f64(args.records_per_file as f64 / args.rate as f64);
    let total_files = (args.rate * args.duration_secs).div_ceil(args.records_per_file);
    let start = Instant::now();
    let (mut bytes, mut last_ms) = (0u64, 0u128);
    for i in 0..total_files {
        let due = start + per_file * u32::try_from(i).unwrap();
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // Names are epoch millis; two files in one millisecond get the next one.
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        last_ms = now_ms.max(last_ms + 1);
        let mut text = String::new();
        sample.preamble(&mut text);
        for _ in 0..args.records_per_file {
            sample.record(&mut text);
            text.push('\n');
        }
        // Written in a few pieces, as a real writer does, then closed.
        let mut f = std::fs::File::create(args.dir.join(format!("{last_ms}.json"))).unwrap();
        for piece in text.as_bytes().chunks(64 * 1024) {
            f.write_all(piece).unwrap();
        }
        drop(f);
        bytes += text.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "loadgen: {total_files} files, {} records, {:.1} MB in {secs:.1} s ({:.0} records/s)",
        total_files * args.records_per_file,
        bytes as f64 / 1e6,
        (total_files * args.records_per_file) as f64 / secs
    );
}
