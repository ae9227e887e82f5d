//! `replay` at scale, through the real binary against the emulator: a
//! backfill over thousands of objects in two sources and several days, a
//! random third already done, sends each missing object once and no done
//! one; stopped (Ctrl-C, or `kill -9`) and run again with its checkpoint,
//! it sends nothing twice that the first run recorded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use relay_shared::s3::Bucket;
use relay_shared::store::{ObjectStore, PutMode, PutOptions};
use relay_shared::testing::Emulator;

/// Raw objects, and those of them that are done.
struct Objects {
    bucket: Bucket,
    missing: BTreeSet<String>,
    done: BTreeSet<String>,
}

/// `per_day` objects a day for five days in each of two sources, a third
/// of them (at random) with a done marker.
async fn objects(emu: &Emulator, label: &str, per_day: usize) -> Objects {
    let bucket = emu.bucket(label).await;
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut missing, mut done) = (BTreeSet::new(), BTreeSet::new());
    let mut puts = Vec::new();
    for source in ["edge-a", "edge-b"] {
        for day in 20..25 {
            for i in 0..per_day {
                let key = format!("raw/{source}/2026/11/{day}/{:02}/{i:05}.json.zst", i % 24);
                if rng.u8(0..3) == 0 {
                    let marker = key.replacen("raw/", "state/done/", 1);
                    puts.push(marker);
                    done.insert(key.clone());
                } else {
                    missing.insert(key.clone());
                }
                puts.push(key);
            }
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in puts.chunks(puts.len().div_ceil(16)) {
        let (bucket, chunk) = (bucket.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for key in chunk {
                bucket
                    .put(
                        &key,
                        b"{}".to_vec(),
                        &PutMode::Create,
                        &PutOptions::default(),
                    )
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    Objects {
        bucket,
        missing,
        done,
    }
}

/// `cloud-processor replay` for `objects` into `queue`.
fn replay(emu: &Emulator, objects: &Objects, queue: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloud-processor"));
    relay_shared::testing::loopback_aws_env(&mut cmd, &emu.endpoint)
        .args(["replay", "--bucket", objects.bucket.name()])
        .args(["--notification-queue-url", queue, "--s3-path-style"])
        .args(extra)
        .stdin(Stdio::null());
    cmd
}

/// Every object named by the notifications in `queue`, with how many
/// times, read until the queue stays empty.
async fn named(emu: &Emulator, queue: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for m in common::receive_all(emu, queue).await {
        let event: serde_json::Value = serde_json::from_str(&m.body).unwrap();
        for record in event["Records"].as_array().unwrap() {
            let key = record["s3"]["object"]["key"].as_str().unwrap().to_owned();
            *counts.entry(key).or_default() += 1;
        }
    }
    counts
}

fn summary(stderr: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no summary line in:\n{text}"));
    serde_json::from_str(line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backfill_sends_each_missing_object_once_and_no_done_one() {
    let emu = Emulator::connect().await;
    let objects = objects(&emu, "replay-scale", 300).await;
    let queue = emu.queue("replay-scale-q", false).await;
    let out = replay(&emu, &objects, &queue, &["--rate-per-sec", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&out.stderr);
    let total = objects.missing.len() + objects.done.len();
    assert_eq!(s["listed"], total as u64, "{s}");
    assert_eq!(s["already_done"], objects.done.len() as u64, "{s}");
    assert_eq!(s["sent"], objects.missing.len() as u64, "{s}");
    // A list per thousand raw objects and per thousand markers, a batch
    // per hundred objects sent, and the partitions' listings.
    let per_object = s["requests_per_object"].as_f64().unwrap();
    assert!(per_object < 0.05, "{s}");

    let named = named(&emu, &queue).await;
    let sent: BTreeSet<String> = named.keys().cloned().collect();
    assert_eq!(
        sent, objects.missing,
        "every missing object, and only those"
    );
    assert!(named.values().all(|&n| n == 1), "each once");
}

/// Runs `cmd`, stops it with `signal` once `checkpoint` records some
/// progress, and returns its exit status.
async fn stopped(mut cmd: Command, checkpoint: &Path, signal: &str) -> std::process::ExitStatus {
    let mut child = cmd.stderr(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(checkpoint).unwrap_or_default();
        if text.contains("\"after\"") || text.contains("\"done\"") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no progress recorded: {text}"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    child.wait().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_replay_resumes_from_its_checkpoint() {
    let emu = Emulator::connect().await;
    let objects = objects(&emu, "replay-resume", 60).await;
    let dir = tempfile::tempdir().unwrap();
    // Slow enough to stop halfway: about 4 s in all.
    let paced = ["--rate-per-sec", "100", "--concurrency", "4"];

    // Ctrl-C: batches in flight finish and the checkpoint is saved, so the
    // second run sends exactly the rest.
    let queue = emu.queue("replay-resume-int", false).await;
    let checkpoint = dir.path().join("int.json");
    let cp = checkpoint.to_str().unwrap();
    let with_cp = [&paced[..], &["--checkpoint", cp]].concat();
    let status = stopped(replay(&emu, &objects, &queue, &with_cp), &checkpoint, "INT").await;
    assert_eq!(status.code(), Some(130), "{status:?}");
    let first = named(&emu, &queue).await;
    assert!(first.len() < objects.missing.len(), "stopped halfway");
    let out = replay(&emu, &objects, &queue, &with_cp).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = named(&emu, &queue).await;
    let both: BTreeSet<&String> = first.keys().chain(second.keys()).collect();
    assert_eq!(
        both,
        objects.missing.iter().collect(),
        "every missing object"
    );
    assert!(
        first.keys().all(|k| !second.contains_key(k)),
        "nothing sent twice"
    );
    assert!(first.values().chain(second.values()).all(|&n| n == 1));
    // Done: a third run has nothing left to do.
    let out = replay(&emu, &objects, &queue, &with_cp).output().unwrap();
    assert_eq!(summary(&out.stderr)["sent"], 0);

    // kill -9: what the checkpoint recorded is not sent again; the batches
    // in flight at the kill (one per partition at most) may be.
    let queue = emu.queue("replay-resume-kill", false).await;
    let checkpoint = dir.path().join("kill.json");
    let cp = checkpoint.to_str().unwrap();
    let with_cp = [&paced[..], &["--checkpoint", cp]].concat();
    let status = stopped(
        replay(&emu, &objects, &queue, &with_cp),
        &checkpoint,
        "KILL",
    )
    .await;
    assert_eq!(status.code(), None, "killed");
    let out = replay(&emu, &objects, &queue, &with_cp).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = named(&emu, &queue).await;
    let sent: BTreeSet<String> = all.keys().cloned().collect();
    assert_eq!(sent, objects.missing, "every missing object, no done one");
    let twice = all.values().filter(|&&n| n > 1).count();
    assert!(
        twice <= 4 * 100,
        "at most a batch per partition twice: {twice}"
    );
}
