//! What the agent's benchmarks share: process CPU and peak RSS from
//! /proc, sample files, and a scrape of the agent's /metrics.

#![allow(dead_code)] // Each benchmark uses some of these.

use std::io::Read;
use std::path::{Path, PathBuf};

use relay_shared::sample::SampleGen;

/// Linux reports process CPU time in clock ticks of 1/100 s.
const TICKS_PER_SEC: f64 = 100.0;

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (user + system) CPU seconds of a live process, from /proc.
pub fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / TICKS_PER_SEC
}

/// CPU seconds of this process's waited-for children (cutime + cstime).
pub fn children_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[13].parse::<f64>().unwrap() + f[14].parse::<f64>().unwrap()) / TICKS_PER_SEC
}

pub fn peak_rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

pub fn generate(dir: &Path, files: usize, bytes: usize) -> (Vec<PathBuf>, u64) {
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

/// Reads one sample from the agent's /metrics (plain HTTP/1.0, no client needed).
pub fn scrape(addr: &str, metric: &str) -> f64 {
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

/// The release agent, run over one directory with the shipped defaults
/// (keep mode, read leases, concurrency 4) and its /metrics on a free port.
pub struct Agent {
    pub child: std::process::Child,
    pub pid: String,
    pub metrics_addr: String,
}

impl Agent {
    pub fn spawn(endpoint: &str, dir: &Path, bucket: &str, state_dir: &Path) -> Self {
        let metrics_addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_edge-agent"));
        let child = relay_shared::testing::loopback_aws_env(&mut cmd, endpoint)
            .args([
                "--watch-dir",
                &dir.display().to_string(),
                "--bucket",
                bucket,
            ])
            .args(["--source-id", "bench", "--settle-ms", "200"])
            .args(["--metrics-addr", &metrics_addr, "--s3-path-style", "true"])
            .args(["--state-dir", &state_dir.display().to_string()])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        Self {
            child,
            pid,
            metrics_addr,
        }
    }

    /// Files S3 now holds, by the agent's own count.
    pub fn uploaded(&self) -> usize {
        scrape(
            &self.metrics_addr,
            "relay_agent_files_total{outcome=\"uploaded\"}",
        ) as usize
    }

    /// Polls until `files` are uploaded, reporting progress every 10 s.
    pub fn wait_for(&self, files: usize, started: std::time::Instant) {
        let mut last_report = std::time::Instant::now();
        loop {
            let done = self.uploaded();
            if done >= files {
                return;
            }
            if last_report.elapsed() > std::time::Duration::from_secs(10) {
                eprintln!("  {done} / {files} files after {:.0?}", started.elapsed());
                last_report = std::time::Instant::now();
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(1800),
                "agent did not finish"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn peak_rss_mib(&self) -> f64 {
        peak_rss_kib(&self.pid) as f64 / 1024.0
    }

    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(&self.pid)
    }

    pub fn stop(mut self) {
        std::process::Command::new("kill")
            .args(["-TERM", &self.pid])
            .status()
            .unwrap();
        self.child.wait().unwrap();
    }
}
