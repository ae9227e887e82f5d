//! Edge agent benchmark: CPU seconds per GB relayed against zstd -3 alone on
//! the same files, sustained files per second, and peak RSS while draining a
//! large backlog. Runs the release binary against the local emulator.
//!
//! `scripts/bench.sh` runs it with the emulator. Knobs (environment):
//! RELAY_BENCH_FILES (default 10000), RELAY_BENCH_FILE_BYTES (default 100000).

#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark: failing loudly is right.

use relay_shared::s3::ObjectStore;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use relay_shared::sample::SampleGen;
use relay_shared::testing::Emulator;

/// Linux reports process CPU time in clock ticks of 1/100 s.
const TICKS_PER_SEC: f64 = 100.0;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (user + system) CPU seconds of a live process, from /proc.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / TICKS_PER_SEC
}

/// CPU seconds of this process's waited-for children (cutime + cstime).
fn children_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[13].parse::<f64>().unwrap() + f[14].parse::<f64>().unwrap()) / TICKS_PER_SEC
}

fn peak_rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn generate(dir: &Path, files: usize, bytes: usize) -> (Vec<PathBuf>, u64) {
    let mut sample = SampleGen::new(42);
    let mut total = 0;
    let paths = (0..files)
        .map(|i| {
            let (text, _) = sample.file(bytes);
            let path = dir.join(format!("{}.json", 1_763_800_000_000u64 + i as u64 * 10));
            std::fs::write(&path, &text).unwrap();
            total += text.len() as u64;
            path
        })
        .collect();
    (paths, total)
}

/// zstd -3 alone, in this process, streaming each file the way the agent does.
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

/// Reads one sample from the agent's /metrics (plain HTTP/1.0, no client needed).
fn scrape(addr: &str, metric: &str) -> f64 {
    use std::io::Write;
    let Ok(mut conn) = std::net::TcpStream::connect(addr) else {
        return 0.0;
    };
    let mut body = String::new();
    if conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").is_err()
        || conn.read_to_string(&mut body).is_err()
    {
        return 0.0;
    }
    body.lines()
        .find(|l| l.starts_with(metric))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
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

    // Warm the page cache so both sides read from memory.
    for p in &paths {
        std::fs::File::open(p)
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap();
    }
    let alone = zstd_alone_cpu_secs(&paths);
    let cli = zstd_cli_cpu_secs(&paths, &work.path().join("list"));

    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut agent = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args([
            "--watch-dir",
            &dir.display().to_string(),
            "--bucket",
            bucket.name(),
        ])
        .args(["--source-id", "bench", "--settle-ms", "200"])
        .args(["--metrics-addr", &metrics_addr, "--s3-path-style", "true"])
        .args([
            "--state-dir",
            &work.path().join("state").display().to_string(),
        ])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let pid = agent.id().to_string();
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let done = scrape(
            &metrics_addr,
            "relay_agent_files_total{outcome=\"uploaded\"}",
        );
        if done as usize >= files {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("  {done} / {files} files after {:.0?}", started.elapsed());
            last_report = Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "agent did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let agent_cpu = cpu_secs(&pid);
    let rss_mib = peak_rss_kib(&pid) as f64 / 1024.0;
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    agent.wait().unwrap();

    println!("| metric | value |");
    println!("|---|---|");
    println!("| input | {files} files, {:.2} GB of JSON |", gb);
    println!("| zstd -3 alone, in process | {:.2} CPU-s/GB |", alone / gb);
    if let Some(cli) = cli {
        println!("| zstd -3 command-line tool | {:.2} CPU-s/GB |", cli / gb);
    }
    println!(
        "| edge agent (compress + checksum + sign + upload) | {:.2} CPU-s/GB |",
        agent_cpu / gb
    );
    println!("| agent / zstd alone | {:.2}x |", agent_cpu / alone);
    println!(
        "| sustained rate (moto-bound) | {:.0} files/s, {:.1} MB/s |",
        files as f64 / wall,
        total_bytes as f64 / 1e6 / wall
    );
    println!("| agent peak RSS, {files}-file backlog | {rss_mib:.1} MiB |");
}
