//! Edge agent benchmark: CPU seconds per GB relayed against zstd -3 alone on
//! the same files, sustained files per second, and peak RSS while draining a
//! large backlog. Runs the release binary twice over the same backlog:
//! against the local emulator, and against a keep-alive endpoint in this
//! process that stores nothing (moto closes every connection, which charges
//! the agent a TCP handshake per file that S3 would not).
//!
//! CPU time on a shared VM varies by 20% from run to run, so zstd alone
//! and the keep-alive run are repeated and the least of each is reported
//! (the least disturbed), with the range beside it.
//!
//! `scripts/bench.sh` runs it with the emulator. Knobs (environment):
//! RELAY_BENCH_FILES (default 10000), RELAY_BENCH_FILE_BYTES (default
//! 100000), RELAY_BENCH_RUNS (default 3).

#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark: failing loudly is right.

use relay_shared::store::ObjectStore;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use relay_shared::testing::Emulator;

mod common;
use common::{children_cpu_secs, cpu_secs, env_usize, generate};

/// Reads every file, so that each run reads from the page cache as the
/// agent does in use (it reads files just written). This VM reclaims cold
/// pages within seconds: a profile of a run after the emulator run showed
/// a tenth of the agent's time reading from disk.
fn warm(paths: &[PathBuf]) {
    for p in paths {
        std::fs::File::open(p)
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap();
    }
}

/// zstd -3 alone, in this process: each file streamed through a fresh
/// encoder, as the `zstd` tool does (compressing it whole on a kept
/// context, as the agent does, measured the same).
fn zstd_alone_cpu_secs(paths: &[PathBuf]) -> f64 {
    let before = cpu_secs("self");
    let mut sink = std::io::sink();
    for p in paths {
        let file = BufReader::with_capacity(128 * 1024, std::fs::File::open(p).unwrap());
        let mut enc = zstd::stream::read::Encoder::with_buffer(file, 3).unwrap();
        std::io::copy(&mut enc, &mut sink).unwrap();
    }
    cpu_secs("self") - before
}

/// The zstd command-line tool on the same files, when it is installed.
fn zstd_cli_cpu_secs(paths: &[PathBuf], list: &Path) -> Option<f64> {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    std::fs::write(list, names.join("\n")).unwrap();
    let before = children_cpu_secs();
    let status = Command::new("zstd")
        .args(["-3", "-q", "-c", "--filelist"])
        .arg(list)
        .stdout(Stdio::null())
        .status()
        .ok()?;
    status.success().then(|| children_cpu_secs() - before)
}

#[tokio::main]
async fn main() {
    let files = env_usize("RELAY_BENCH_FILES", 10_000);
    let file_bytes = env_usize("RELAY_BENCH_FILE_BYTES", 100_000);
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("bench-agent").await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("in");
    std::fs::create_dir(&dir).unwrap();

    eprintln!("generating {files} files of ~{file_bytes} bytes");
    let (paths, total_bytes) = generate(&dir, files, file_bytes);
    let gb = total_bytes as f64 / 1e9;

    warm(&paths);
    let runs = env_usize("RELAY_BENCH_RUNS", 3).max(1);
    let alone = Spread::of((0..runs).map(|_| zstd_alone_cpu_secs(&paths)));
    let cli = zstd_cli_cpu_secs(&paths, &work.path().join("list"));

    // Against the emulator: the whole path, but moto closes the connection
    // after every request and is slow, so its rate is moto's.
    warm(&paths);
    let moto = run_agent(&Run {
        dir: &dir,
        bucket: bucket.name(),
        endpoint: &emu.endpoint,
        state_dir: &work.path().join("state-moto"),
        files,
    })
    .await;
    // Against a keep-alive endpoint that stores nothing: the agent's own
    // cost per request, as against S3 itself.
    let mut kept_runs = Vec::new();
    for i in 0..runs {
        // A fresh endpoint and ledger each time: every file is new to both.
        let sink = relay_shared::testing::SinkS3::start().await;
        warm(&paths);
        kept_runs.push(
            run_agent(&Run {
                dir: &dir,
                bucket: "bench",
                endpoint: &sink.endpoint(),
                state_dir: &work.path().join(format!("state-keepalive-{i}")),
                files,
            })
            .await,
        );
    }
    let kept_cpu = Spread::of(kept_runs.iter().map(|c| c.cpu));
    let kept = kept_runs
        .into_iter()
        .min_by(|a, b| a.cpu.total_cmp(&b.cpu))
        .expect("at least one run");
    let alone_range = alone.range(gb);
    let kept_range = kept_cpu.range(gb);
    let alone = alone.min;

    println!("| metric | emulator (moto) | keep-alive endpoint |");
    println!("|---|---|---|");
    println!("| input | {files} files, {gb:.2} GB of JSON | same |");
    println!(
        "| zstd -3 alone, in process (least of {runs}; range) | {:.2} CPU-s/GB ({alone_range}) | same |",
        alone / gb
    );
    if let Some(cli) = cli {
        println!(
            "| zstd -3 command-line tool | {:.2} CPU-s/GB | same |",
            cli / gb
        );
    }
    println!(
        "| edge agent (compress + checksum + sign + upload; keep-alive: least of {runs}) | {:.2} CPU-s/GB | {:.2} CPU-s/GB ({kept_range}) |",
        moto.cpu / gb,
        kept.cpu / gb
    );
    println!(
        "| agent CPU per file | {:.2} ms | {:.2} ms |",
        moto.cpu * 1000.0 / files as f64,
        kept.cpu * 1000.0 / files as f64
    );
    println!(
        "| agent / zstd alone | {:.2}x | {:.2}x |",
        moto.cpu / alone,
        kept.cpu / alone
    );
    println!(
        "| sustained rate | {:.0} files/s, {:.1} MB/s | {:.0} files/s, {:.1} MB/s |",
        files as f64 / moto.wall,
        total_bytes as f64 / 1e6 / moto.wall,
        files as f64 / kept.wall,
        total_bytes as f64 / 1e6 / kept.wall
    );
    println!(
        "| agent peak RSS, {files}-file backlog | {:.1} MiB | {:.1} MiB |",
        moto.rss_mib, kept.rss_mib
    );
}

/// CPU seconds of repeated runs: the least, and the range.
struct Spread {
    min: f64,
    max: f64,
}

impl Spread {
    fn of(samples: impl Iterator<Item = f64>) -> Self {
        samples.fold(
            Self {
                min: f64::INFINITY,
                max: 0.0,
            },
            |s, x| Self {
                min: s.min.min(x),
                max: s.max.max(x),
            },
        )
    }

    /// "a to b", per GB.
    fn range(&self, gb: f64) -> String {
        format!("{:.2} to {:.2}", self.min / gb, self.max / gb)
    }
}

/// One agent run over the backlog in `dir`.
struct Run<'a> {
    dir: &'a Path,
    bucket: &'a str,
    endpoint: &'a str,
    state_dir: &'a Path,
    files: usize,
}

/// What one run cost.
struct Cost {
    cpu: f64,
    wall: f64,
    rss_mib: f64,
}

/// Runs the release agent over the backlog (keep mode, a fresh ledger) until
/// it has uploaded every file, then stops it.
async fn run_agent(run: &Run<'_>) -> Cost {
    let agent = common::Agent::spawn(run.endpoint, run.dir, run.bucket, run.state_dir);
    let started = Instant::now();
    let files = run.files;
    tokio::task::block_in_place(|| agent.wait_for(files, started));
    let wall = started.elapsed().as_secs_f64();
    let cost = Cost {
        cpu: agent.cpu_secs(),
        wall,
        rss_mib: agent.peak_rss_mib(),
    };
    agent.stop();
    cost
}
