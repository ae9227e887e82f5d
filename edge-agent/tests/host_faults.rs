//! The edge agent (the real binary, against the emulator) under what hosts
//! do to it: the watch directory removed, renamed away or replaced, a
//! populated directory renamed into a recursive watch, a subdirectory in a
//! non-recursive one, S3 turned into a black hole, S3 refusing the
//! manifests alone, and a full state disk.
//! In each, nothing is lost, and the agent says what is happening in its
//! log, its metrics and `/healthz`, never answering "ok" while it stalls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use relay_shared::store::ObjectStore;
use relay_shared::testing::{Emulator, TransportProxy, Weather};

const PREFIX: &str = "raw/edge-test/";
const WITHIN: Duration = Duration::from_secs(30);

/// The watch directory removed and created again, or renamed away and
/// replaced (log rotation, a container's restart): while it is missing
/// `/healthz` is 503 naming it and no canary is sent; once a directory is
/// back, it is watched (one INFO line, one count) and every file written
/// into it is relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_watch_directory_is_watched_again() {
    let emu = Emulator::connect().await;
    for how in ["removed", "renamed"] {
        let bucket = emu.bucket(&format!("agent-rewatch-{how}")).await;
        let work = tempfile::tempdir().unwrap();
        let watch = work.path().join("in");
        std::fs::create_dir(&watch).unwrap();
        let state = work.path().join("state");
        let extra = [
            "--on-success",
            "delete",
            "--state-dir",
            &state.display().to_string(),
        ];
        let log = work.path().join("agent.log");
        let agent = Observed::spawn(&watch, bucket.name(), &log, None, &extra).await;
        write_file(&watch, &name(0), 0);
        wait_for_count(&bucket, PREFIX, 1, WITHIN).await;

        match how {
            "removed" => std::fs::remove_dir_all(&watch).unwrap(),
            _ => std::fs::rename(&watch, work.path().join("in.1")).unwrap(),
        }
        wait_until(
            || agent.health().contains("503"),
            "/healthz says the watch directory is missing",
            WITHIN,
        )
        .await;
        let health = agent.health();
        assert!(
            health.contains(&format!("watch directory {} is missing", watch.display())),
            "{how}: {health}"
        );
        assert_eq!(
            agent.value("relay_agent_watch_dir_changes_total{change=\"missing\"}"),
            1.0
        );
        assert_eq!(
            agent.logged("the watch directory is gone").len(),
            1,
            "{how}"
        );

        std::fs::create_dir(&watch).unwrap();
        for i in 1..=10 {
            write_file(&watch, &name(i), i);
        }
        wait_for_count(&bucket, PREFIX, 11, WITHIN).await;
        for i in 1..=10 {
            assert_eq!(
                objects(&bucket, &key_for(&name(i)))
                    .await
                    .into_values()
                    .next(),
                Some(content(i)),
                "{how}: file {i}"
            );
        }
        assert!(
            agent.health().contains("200 OK"),
            "{how}: {}",
            agent.health()
        );
        assert_eq!(
            agent.value("relay_agent_watch_dir_changes_total{change=\"rewatched\"}"),
            1.0,
            "{how}"
        );
        assert_eq!(agent.logged("the watch directory was replaced").len(), 1);
        agent.stop();
    }
}

/// A populated directory renamed into a recursive watch has the files it
/// brought relayed; in a non-recursive watch, only files directly in the
/// watch directory are relayed, never those in a subdirectory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_moved_in_follow_one_rule_per_mode() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("agent-moved-dirs").await;
    let work = tempfile::tempdir().unwrap();
    let watch = work.path().join("in");
    std::fs::create_dir(&watch).unwrap();
    let outside = work.path().join("batch");
    std::fs::create_dir(&outside).unwrap();
    for i in 0..5 {
        write_file(&outside, &name(i), i);
    }
    let log = work.path().join("agent.log");
    let state = work.path().join("state").display().to_string();
    let recursive = ["--recursive", "--state-dir", &state];
    let agent = Observed::spawn(&watch, bucket.name(), &log, None, &recursive).await;
    std::fs::rename(&outside, watch.join("batch")).unwrap();
    wait_for_count(&bucket, PREFIX, 5, WITHIN).await;
    agent.stop();

    let bucket = emu.bucket("agent-flat-dirs").await;
    let flat = work.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    let log = work.path().join("flat.log");
    let agent = Observed::spawn(&flat, bucket.name(), &log, None, &["--state-dir", &state]).await;
    let sub = flat.join("sub");
    std::fs::create_dir(&sub).unwrap();
    for i in 0..3 {
        write_file(&sub, &name(i), i);
    }
    // Written after the subdirectory's: once it is in S3, they had their chance.
    write_file(&flat, &name(9), 9);
    wait_for_count(&bucket, PREFIX, 1, WITHIN).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(keys(&bucket, PREFIX).await, [key_for(&name(9))]);
    agent.stop();
}

/// S3 as a black hole (connections accepted, never answered, never
/// reset): the failing uploads are one WARN per kind of failure, not one
/// per file, and counted as retries; after the threshold `/healthz` says
/// "degraded" (still 200: nothing is lost). Once S3 answers, uploads go
/// on within the shipped attempt timeout, one INFO line says so, and the
/// degraded state clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_black_hole_is_logged_counted_and_degraded() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("agent-black-hole").await;
    let proxy = TransportProxy::start(&emu.endpoint, 3).await;
    let work = tempfile::tempdir().unwrap();
    let watch = work.path().join("in");
    std::fs::create_dir(&watch).unwrap();
    let log = work.path().join("agent.log");
    let state = work.path().join("state").display().to_string();
    let extra = ["--degraded-after-secs", "1", "--state-dir", &state];
    let agent = Observed::spawn(&watch, bucket.name(), &log, Some(&proxy.endpoint()), &extra).await;
    wait_until(
        || agent.metrics().contains("relay_agent_leases_enabled"),
        "the agent runs",
        WITHIN,
    )
    .await;
    proxy.set(Weather::BlackHole);
    for i in 0..8 {
        write_file(&watch, &name(i), i);
    }
    wait_until(
        || agent.health().contains("degraded: S3 unreachable for"),
        "/healthz says degraded",
        Duration::from_secs(60),
    )
    .await;
    assert!(agent.health().contains("200 OK"), "{}", agent.health());
    // The gauges follow on the agent's next tick.
    wait_until(
        || agent.value("relay_agent_degraded") == 1.0,
        "relay_agent_degraded is 1",
        WITHIN,
    )
    .await;
    assert_eq!(agent.value("relay_agent_healthy"), 1.0);
    assert!(agent.sum("relay_agent_retries_total") >= 1.0);
    assert!(agent.value("relay_agent_s3_failing_seconds") >= 1.0);
    let warned = agent.logged("uploads to S3 are failing");
    assert!(
        (1..=3).contains(&warned.len()),
        "one WARN per kind of failure, not per file: {warned:?}"
    );
    assert!(warned[0]["retry_in_ms"].is_u64(), "{:?}", warned[0]);
    assert_eq!(count(&bucket, PREFIX).await, 0);

    proxy.set(Weather::Clear);
    // The attempts caught in the hole end at their attempt timeout (10 s
    // for a small file); a wait of minutes would mean the old 158 s.
    wait_for_count(&bucket, PREFIX, 8, Duration::from_secs(45)).await;
    wait_until(
        || agent.value("relay_agent_degraded") == 0.0,
        "degraded clears",
        WITHIN,
    )
    .await;
    assert!(!agent.health().contains("degraded"), "{}", agent.health());
    assert_eq!(agent.logged("S3 answers again").len(), 1);
    agent.stop();
}

/// S3 refusing the agent's manifests (a policy without `ledger/`) while it
/// takes every upload: each refusal is a WARN naming the manifest's key and
/// a count; from the second in a row `/healthz` is 503 saying the cloud
/// side cannot account for this host's files, and the health gauge
/// follows. Once S3 takes them, the manifest is stored under the key it
/// was tried with and the agent is healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_manifests_make_the_agent_unhealthy_until_one_is_stored() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("agent-ledger-denied").await;
    let proxy = relay_shared::testing::FaultProxy::start(&emu.endpoint).await;
    *proxy.faults.s3_deny_puts_under.lock().unwrap() = Some("/ledger/".to_owned());
    let work = tempfile::tempdir().unwrap();
    let watch = work.path().join("in");
    std::fs::create_dir(&watch).unwrap();
    let log = work.path().join("agent.log");
    let state = work.path().join("state").display().to_string();
    let extra = ["--canary-secs", "1", "--state-dir", &state];
    let agent = Observed::spawn(&watch, bucket.name(), &log, Some(&proxy.endpoint()), &extra).await;
    write_file(&watch, &name(0), 0);
    wait_for_count(&bucket, PREFIX, 1, WITHIN).await;
    wait_until(
        || agent.health().contains("manifests in a row not stored"),
        "/healthz names the manifests",
        WITHIN,
    )
    .await;
    let health = agent.health();
    assert!(
        health.contains("503") && health.contains("ledger/edge-test/"),
        "{health}"
    );
    assert!(health.contains("AccessDenied"), "{health}");
    wait_until(
        || agent.value("relay_agent_healthy") == 0.0,
        "relay_agent_healthy is 0",
        WITHIN,
    )
    .await;
    let failed = r#"relay_agent_manifests_total{outcome="failed"}"#;
    assert!(agent.value(failed) >= 2.0, "{}", agent.metrics());
    let warned = agent.logged("a manifest was not stored");
    assert!(warned.len() >= 2, "{warned:?}");
    let key = warned[0]["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("ledger/edge-test/"), "{key}");
    assert_eq!(count(&bucket, "ledger/").await, 0);

    *proxy.faults.s3_deny_puts_under.lock().unwrap() = None;
    wait_until(
        || agent.value("relay_agent_healthy") == 1.0,
        "healthy again",
        WITHIN,
    )
    .await;
    assert!(agent.health().contains("200 OK"), "{}", agent.health());
    // The manifest tried first is stored under its key, listing the file.
    let (body, _) = bucket.get_bytes(&key).await.unwrap();
    let manifest = String::from_utf8(body).unwrap();
    assert!(manifest.contains(&key_for(&name(0))), "{manifest}");
    agent.stop();
}

/// A small tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `kib` KiB at `dir`. Needs root (CI runs as root).
    fn mount(dir: &Path, kib: u64) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_owned()))
    }

    /// Fills it with a filler file; returns the filler's path.
    fn fill(&self) -> std::path::PathBuf {
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A full state directory in `keep` mode: uploads go on; the ledger's
/// failed write is counted under its own metric, logged once naming the
/// directory, and makes `/healthz` 503 naming it. Once space returns the
/// ledger is rewritten whole (no torn line), so a restart uploads nothing
/// again. An agent started on the full disk starts, uploads, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_directory_is_named_and_uploads_go_on() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let Some(disk) = Tmpfs::mount(&state, 64) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root, and this test mounts a small tmpfs"
        );
        return;
    };
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("agent-full-state").await;
    let watch = work.path().join("in");
    std::fs::create_dir(&watch).unwrap();
    let keep = [
        "--on-success",
        "keep",
        "--state-dir",
        &state.display().to_string(),
    ];
    let log = work.path().join("agent.log");
    let agent = Observed::spawn(&watch, bucket.name(), &log, None, &keep).await;
    wait_until(
        || agent.metrics().contains("relay_agent_leases_enabled"),
        "the agent runs",
        WITHIN,
    )
    .await;
    let filler = disk.fill();
    for i in 0..40 {
        write_file(&watch, &name(i), i);
    }
    wait_for_count(&bucket, PREFIX, 40, WITHIN).await;
    wait_until(
        || agent.health().contains("503"),
        "/healthz names the state directory",
        WITHIN,
    )
    .await;
    let health = agent.health();
    assert!(
        health.contains(&format!(
            "state directory {} cannot be written",
            state.display()
        )),
        "{health}"
    );
    assert!(agent.sum("relay_agent_state_errors_total") >= 1.0);
    assert_eq!(
        agent.value("relay_agent_errors_total{kind=\"after_success\"}"),
        0.0
    );
    assert_eq!(
        agent.logged("the state directory cannot be written").len(),
        1
    );

    std::fs::remove_file(&filler).unwrap();
    wait_until(
        || agent.health().contains("200 OK"),
        "the ledger is repaired once space returns",
        WITHIN,
    )
    .await;
    assert_eq!(
        agent
            .logged("the state directory can be written again")
            .len(),
        1
    );
    agent.stop();
    let ledger =
        std::fs::read_to_string(state.join(format!("uploaded-{}.log", bucket.name()))).unwrap();
    let lines: Vec<&str> = ledger.lines().collect();
    assert_eq!(lines.len(), 40, "{ledger}");
    for line in &lines {
        let fields: Vec<&str> = line.split('\t').collect();
        assert!(
            fields.len() == 3 && watch.join(fields[0]).is_file(),
            "a whole line naming a file: {line:?}"
        );
    }

    // A restart uploads nothing again: the ledger is whole.
    let log = work.path().join("agent2.log");
    let agent = Observed::spawn(&watch, bucket.name(), &log, None, &keep).await;
    write_file(&watch, &name(40), 40);
    wait_for_count(&bucket, PREFIX, 41, WITHIN).await;
    wait_until(
        || agent.value("relay_agent_files_total{outcome=\"uploaded\"}") == 1.0,
        "the new file is counted",
        WITHIN,
    )
    .await;
    assert_eq!(
        agent.value("relay_agent_files_total{outcome=\"duplicate\"}"),
        0.0
    );
    agent.stop();

    // Started on a full disk, with a ledger to compact: it starts and relays.
    std::fs::remove_file(watch.join(name(0))).unwrap();
    let filler = disk.fill();
    let log = work.path().join("agent3.log");
    let agent = Observed::spawn(&watch, bucket.name(), &log, None, &keep).await;
    write_file(&watch, &name(41), 41);
    wait_for_count(&bucket, PREFIX, 42, WITHIN).await;
    wait_until(
        || agent.health().contains("cannot be written"),
        "/healthz names the state directory from the start",
        WITHIN,
    )
    .await;
    assert_eq!(
        agent.logged("the state directory cannot be written").len(),
        1
    );
    std::fs::remove_file(&filler).unwrap();
    agent.stop();
}
