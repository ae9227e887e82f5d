//! When a file is finished, told by read leases: the real agent binary
//! against the emulator, with writers that pause, hold files open, or close
//! and open them again, and an agent that may not lease the files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use relay_shared::store::ObjectStore;
use relay_shared::testing::Emulator;

const PREFIX: &str = "raw/edge-test/";
/// `spawn_agent`'s settle time.
const SETTLE: Duration = Duration::from_millis(150);
/// How long a test waits for what it expects.
const WITHIN: Duration = Duration::from_secs(20);

fn append(path: &Path) -> File {
    OpenOptions::new().append(true).open(path).unwrap()
}

/// The one test the settle time alone fails: a writer that holds its file
/// open and pauses three times longer than the settle time, across a
/// `kill -9` and restart of the agent, in `delete` mode. The restarted
/// agent finds the file by its scan, with no close event, and the settle
/// time long passed: only the lease tells that the writer still holds it.
/// Nothing is uploaded or removed until the writer closes, and then the
/// object holds everything it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_pausing_across_an_agent_restart_loses_nothing_in_delete_mode() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("lease-pause").await;
    let dir = tempfile::tempdir().unwrap();
    let watch = dir.path().join("in");
    std::fs::create_dir(&watch).unwrap();
    let log = dir.path().join("agent.log");
    let delete = ["--on-success", "delete"];
    let mut agent = Reaped(spawn_agent(&watch, bucket.name(), &log, &delete));
    wait_for_log(&log, "finished files are judged by read leases").await;

    let path = watch.join(name(1));
    let mut writer = File::create(&path).unwrap();
    writer.write_all(b"# collector\n{\"part\":1}\n").unwrap();
    writer.flush().unwrap();
    tokio::time::sleep(SETTLE * 3).await;
    agent.kill().unwrap();
    agent.wait().unwrap();
    writer.write_all(b"{\"part\":2}\n").unwrap();
    let log2 = dir.path().join("agent2.log");
    let mut agent = Reaped(spawn_agent(&watch, bucket.name(), &log2, &delete));
    wait_for_log(&log2, "watching").await;
    tokio::time::sleep(SETTLE * 3).await;
    assert!(
        path.exists(),
        "nothing is removed while the writer holds it"
    );
    assert_eq!(count(&bucket, PREFIX).await, 0, "nor uploaded");
    writer.write_all(b"{\"part\":3}\n").unwrap();
    drop(writer);

    wait_for_count(&bucket, PREFIX, 1, Duration::from_secs(15)).await;
    wait_until(
        || !path.exists(),
        "the file is deleted once S3 holds it",
        WITHIN,
    )
    .await;
    sigterm(&agent);
    assert!(agent.wait().unwrap().success());
    let stored = objects(&bucket, PREFIX).await;
    assert_eq!(
        stored[&key_for(&name(1))],
        b"# collector\n{\"part\":1}\n{\"part\":2}\n{\"part\":3}\n"
    );
    assert_eq!(stored.len(), 1, "one object, no conflict copy: {stored:?}");
}

/// A file that is complete, renamed in (which the settle rule takes as
/// finished), but held open for writing by a process that never writes:
/// not uploaded until that process closes it, whatever the settle time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_held_open_by_a_silent_writer_waits_for_its_close() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("lease-held").await;
    let dir = tempfile::tempdir().unwrap();
    let watch = dir.path().join("in");
    std::fs::create_dir(&watch).unwrap();
    let log = dir.path().join("agent.log");
    let mut agent = Reaped(spawn_agent(
        &watch,
        bucket.name(),
        &log,
        &["--on-success", "delete", "--settle-ms", "20"],
    ));
    wait_for_log(&log, "watching").await;
    let hidden = watch.join(format!(".{}", name(2)));
    std::fs::write(&hidden, b"{\"whole\":true}\n").unwrap();
    let holder = append(&hidden);
    std::fs::rename(&hidden, watch.join(name(2))).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&bucket, PREFIX).await,
        0,
        "held open for writing: not finished"
    );
    drop(holder);
    wait_for_count(&bucket, PREFIX, 1, Duration::from_secs(15)).await;
    sigterm(&agent);
    assert!(agent.wait().unwrap().success());
    assert_eq!(
        objects(&bucket, PREFIX).await[&key_for(&name(2))],
        b"{\"whole\":true}\n"
    );
}

/// A writer that closes its file and opens it again to append (outside the
/// container's contract, which writes each file once) loses nothing, and
/// S3 receives what the docs say. Within the quiet period the reopening is
/// unseen and one object holds everything; after it, the first part is
/// relayed alone, and then, in `keep` mode, the whole file under the
/// conflict key, or, in `delete` mode, a new file with the appended part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_and_reopening_to_append_loses_nothing() {
    let emu = Emulator::connect().await;
    let (part1, part2) = (&b"{\"part\":1}\n"[..], &b"{\"part\":2}\n"[..]);
    for (mode, quiet_ms, label) in [
        ("keep", "3000", "lease-reopen-quiet"),
        ("keep", "100", "lease-reopen-keep"),
        ("delete", "100", "lease-reopen-delete"),
    ] {
        let bucket = emu.bucket(label).await;
        let dir = tempfile::tempdir().unwrap();
        let watch = dir.path().join("in");
        std::fs::create_dir(&watch).unwrap();
        let log = dir.path().join("agent.log");
        let state = dir.path().join("state").display().to_string();
        let mut agent = Reaped(spawn_agent(
            &watch,
            bucket.name(),
            &log,
            &[
                "--on-success",
                mode,
                "--settle-ms",
                quiet_ms,
                "--state-dir",
                &state,
            ],
        ));
        wait_for_log(&log, "watching").await;
        let path = watch.join(name(3));
        std::fs::write(&path, part1).unwrap();
        let within_quiet = quiet_ms == "3000";
        if within_quiet {
            tokio::time::sleep(Duration::from_millis(200)).await;
        } else {
            wait_for_count(&bucket, PREFIX, 1, Duration::from_secs(15)).await;
            if mode == "delete" {
                wait_until(|| !path.exists(), "deleted once stored", WITHIN).await;
            }
        }
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap()
            .write_all(part2)
            .unwrap();
        let want = if within_quiet { 1 } else { 2 };
        wait_for_count(&bucket, PREFIX, want, Duration::from_secs(15)).await;
        // Long enough for anything else to have been uploaded.
        tokio::time::sleep(Duration::from_millis(500)).await;
        sigterm(&agent);
        assert!(agent.wait().unwrap().success());
        let stored = objects(&bucket, PREFIX).await;
        let first = &stored[&key_for(&name(3))];
        let others: Vec<&Vec<u8>> = stored
            .iter()
            .filter(|(k, _)| **k != key_for(&name(3)))
            .map(|(_, v)| v)
            .collect();
        let whole = [part1, part2].concat();
        match (within_quiet, mode) {
            (true, _) => {
                assert_eq!(first, &whole, "{label}");
                assert!(others.is_empty(), "{label}: {stored:?}");
            }
            (false, "keep") => {
                assert_eq!(first, part1, "{label}");
                assert_eq!(others, [&whole], "{label}: the whole file, aside");
            }
            (false, _) => {
                assert_eq!(first, part1, "{label}");
                assert_eq!(others, [&part2.to_vec()], "{label}: the new file");
            }
        }
    }
}

/// An agent that may not lease the files (they belong to root, it runs as
/// another user without CAP_LEASE) relays them by settle time, and says
/// so: `check` warns, `/metrics` and `/healthz` show the settle-only mode,
/// and a file refused at run time is counted. With CAP_LEASE (ambient, as
/// the packaged unit grants it) the same user may lease them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_may_not_lease_falls_back_to_settle_time_and_says_so() {
    let me = edge_agent::lease::Identity::current().unwrap();
    if me.euid != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root, and this test needs it to be another user"
        );
        return;
    }
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("lease-refused").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let watch = dir.path().join("in");
    std::fs::create_dir(&watch).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let chown = Command::new("chown")
        .args(["65534:65534", &state.display().to_string()])
        .status()
        .unwrap();
    assert!(chown.success());
    // Root's file, readable by all: the backlog the start-up probe tries.
    std::fs::write(watch.join(name(4)), b"{\"backlog\":1}\n").unwrap();

    let check = as_nobody(&[])
        .arg("check")
        .args(agent_args(&watch, &state, bucket.name(), "off"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("WARN finished files: settle time only")
                && l.contains("EACCES")
                && l.contains("without CAP_LEASE")),
        "{text}"
    );
    assert!(check.status.success(), "a warning, not a failure:\n{text}");
    let with_cap = as_nobody(&["--inh-caps=+lease", "--ambient-caps=+lease"])
        .arg("check")
        .args(agent_args(&watch, &state, bucket.name(), "off"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&with_cap.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok   finished files: read leases work")
                && l.contains("with CAP_LEASE")),
        "{text}"
    );

    let port = relay_shared::testing::free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = dir.path().join("agent.log");
    let mut agent = Reaped(
        as_nobody(&[])
            .args(agent_args(&watch, &state, bucket.name(), &addr))
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let metrics = relay_shared::testing::first_metrics(&addr, &log).await;
    assert!(
        metrics.contains("relay_agent_leases_enabled 0"),
        "{metrics}"
    );
    let health = relay_shared::testing::http_get(&addr, "/healthz");
    assert!(
        health.contains("200 OK") && health.contains("finished files: settle time only"),
        "{health}"
    );
    std::fs::write(watch.join(name(5)), b"{\"live\":1}\n").unwrap();
    wait_for_count(&bucket, PREFIX, 2, Duration::from_secs(15)).await;
    sigterm(&agent);
    assert!(agent.wait().unwrap().success());
    let warned = std::fs::read_to_string(&log).unwrap();
    assert!(
        warned.contains("read leases are refused in the watch directory"),
        "{warned}"
    );

    // An empty directory at start-up: leases are assumed, each file's
    // probe is refused, and it is relayed by settle time and counted.
    let watch2 = dir.path().join("in2");
    std::fs::create_dir(&watch2).unwrap();
    let log2 = dir.path().join("agent2.log");
    let mut agent = Reaped(
        as_nobody(&[])
            .args(agent_args(&watch2, &state, bucket.name(), &addr))
            .stderr(File::create(&log2).unwrap())
            .spawn()
            .unwrap(),
    );
    relay_shared::testing::first_metrics(&addr, &log2).await;
    // The mode is chosen after the S3 check: a file written before then
    // would be the one the start-up probe tries, and is refused there.
    wait_until(
        || {
            relay_shared::testing::http_get(&addr, "/metrics")
                .contains("relay_agent_leases_enabled 1")
        },
        "the agent has chosen read leases for the empty directory",
        WITHIN,
    )
    .await;
    std::fs::write(watch2.join(name(6)), b"{\"live\":2}\n").unwrap();
    wait_for_count(&bucket, PREFIX, 3, Duration::from_secs(15)).await;
    let metrics = relay_shared::testing::http_get(&addr, "/metrics");
    // A file this user cannot read is set aside, and both /healthz and the
    // health gauge say so.
    let unreadable = watch2.join(name(7));
    std::fs::write(&unreadable, b"{\"secret\":1}\n").unwrap();
    std::fs::set_permissions(&unreadable, std::fs::Permissions::from_mode(0o600)).unwrap();
    wait_until(
        || {
            relay_shared::testing::http_get(&addr, "/metrics")
                .contains("relay_agent_set_aside_files 1")
        },
        "the unreadable file is set aside",
        WITHIN,
    )
    .await;
    let unhealthy = relay_shared::testing::http_get(&addr, "/metrics");
    assert!(unhealthy.contains("relay_agent_healthy 0"), "{unhealthy}");
    let health = relay_shared::testing::http_get(&addr, "/healthz");
    assert!(
        health.contains("503") && health.contains(&unreadable.display().to_string()),
        "{health}"
    );
    sigterm(&agent);
    assert!(agent.wait().unwrap().success());
    assert!(
        metrics.contains("relay_agent_leases_enabled 1")
            && metrics.contains("relay_agent_lease_refusals_total{reason=\"not_owner\"} 1")
            && metrics.contains("relay_agent_healthy 1"),
        "{metrics}"
    );
    let stored = objects(&bucket, PREFIX).await;
    assert_eq!(stored[&key_for(&name(6))], b"{\"live\":2}\n");
}

/// The agent binary as uid 65534 with no capabilities but `extra`.
fn as_nobody(extra: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(if extra.is_empty() {
            &["--inh-caps=-all", "--bounding-set=-all"][..]
        } else {
            extra
        })
        .arg(env!("CARGO_BIN_EXE_edge-agent"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped());
    cmd
}

fn agent_args(watch: &Path, state: &Path, bucket: &str, metrics: &str) -> Vec<String> {
    [
        "--watch-dir",
        &watch.display().to_string(),
        "--state-dir",
        &state.display().to_string(),
        "--bucket",
        bucket,
        "--source-id",
        SOURCE,
        "--settle-ms",
        "150",
        "--metrics-addr",
        metrics,
        "--s3-path-style",
        "true",
    ]
    .map(String::from)
    .to_vec()
}

async fn wait_for_log(log: &Path, message: &str) {
    wait_until(
        || std::fs::read_to_string(log).is_ok_and(|t| t.contains(message)),
        message,
        WITHIN,
    )
    .await;
}
