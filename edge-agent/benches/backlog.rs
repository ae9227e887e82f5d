//! Edge agent under a backlog and after an outage, against a keep-alive S3
//! stand-in in this process that stores nothing (`SinkS3`), so the numbers
//! are the agent's own:
//!
//! - **Backlog memory**: peak RSS, drain rate and CPU per file over a
//!   start-up backlog of each size in `RELAY_BENCH_BACKLOGS` (default
//!   `10000,100000`) of small files (`RELAY_BENCH_BACKLOG_FILE_BYTES`,
//!   default 2000): what the agent holds per waiting file.
//! - **Outage recovery**: `RELAY_BENCH_OUTAGE_FILES` (default 2000) files
//!   wait while S3 is a black hole for `RELAY_BENCH_OUTAGE_SECS` (default
//!   30): connections are accepted and never answered, nor reset, so the
//!   attempts under way when S3 returns end only at their own timeout.
//!   Reported: the time from S3's return to the first upload and to the
//!   backlog cleared, with the shipped timeouts.
//!
//! `scripts/bench.sh backlog` runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark: failing loudly is right.

use std::time::{Duration, Instant};

use relay_shared::testing::{SinkS3, TransportProxy, Weather};

mod common;
use common::{Agent, env_usize, generate};

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("RELAY_BENCH_BACKLOGS")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("RELAY_BENCH_BACKLOGS: numbers"))
        .collect();
    let bytes = env_usize("RELAY_BENCH_BACKLOG_FILE_BYTES", 2000);
    println!(
        "| start-up backlog of {bytes}-byte files | agent peak RSS | drained at | agent CPU per file |"
    );
    println!("|---|---|---|---|");
    for files in sizes {
        let m = backlog(files, bytes).await;
        println!(
            "| {files} files | {:.1} MiB | {:.0} files/s | {:.2} ms |",
            m.rss_mib,
            files as f64 / m.wall,
            m.cpu * 1000.0 / files as f64
        );
    }
    let files = env_usize("RELAY_BENCH_OUTAGE_FILES", 2000);
    let secs = env_usize("RELAY_BENCH_OUTAGE_SECS", 30) as u64;
    let r = outage(files, Duration::from_secs(secs)).await;
    println!();
    println!(
        "| {files} files waiting through a {secs} s black hole | time after S3 answers again |"
    );
    println!("|---|---|");
    println!("| first file stored | {:.1} s |", r.first.as_secs_f64());
    println!("| backlog cleared | {:.1} s |", r.cleared.as_secs_f64());
}

struct Drain {
    wall: f64,
    cpu: f64,
    rss_mib: f64,
}

/// Relays a start-up backlog of `files` to a keep-alive endpoint.
async fn backlog(files: usize, bytes: usize) -> Drain {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("in");
    std::fs::create_dir(&dir).unwrap();
    eprintln!("generating {files} files of ~{bytes} bytes");
    generate(&dir, files, bytes);
    let sink = SinkS3::start().await;
    let agent = Agent::spawn(&sink.endpoint(), &dir, "bench", &work.path().join("state"));
    let started = Instant::now();
    tokio::task::block_in_place(|| agent.wait_for(files, started));
    let drain = Drain {
        wall: started.elapsed().as_secs_f64(),
        cpu: agent.cpu_secs(),
        rss_mib: agent.peak_rss_mib(),
    };
    agent.stop();
    drain
}

struct Recovery {
    first: Duration,
    cleared: Duration,
}

/// A backlog waits out a black hole; the clock starts when S3 answers again.
async fn outage(files: usize, black_hole: Duration) -> Recovery {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("in");
    std::fs::create_dir(&dir).unwrap();
    generate(&dir, files, 2000);
    let sink = SinkS3::start().await;
    let proxy = TransportProxy::start(&sink.endpoint(), 1).await;
    proxy.set(Weather::BlackHole);
    let agent = Agent::spawn(&proxy.endpoint(), &dir, "bench", &work.path().join("state"));
    eprintln!("S3 is a black hole for {black_hole:?}");
    tokio::time::sleep(black_hole).await;
    assert_eq!(agent.uploaded(), 0, "nothing passes a black hole");
    proxy.set(Weather::Clear);
    let back = Instant::now();
    let first = tokio::task::block_in_place(|| {
        while agent.uploaded() == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        back.elapsed()
    });
    tokio::task::block_in_place(|| agent.wait_for(files, back));
    let cleared = back.elapsed();
    eprintln!("{}", proxy.stats.summary());
    agent.stop();
    Recovery { first, cleared }
}
