//! The edge agent against the real S3 protocol (the local emulator): every
//! finished file arrives once, with its content, whatever happens around it.

use crate::common;

use relay_shared::store::ObjectStore;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use relay_shared::testing::{Emulator, TransportProxy, Weather};

const PREFIX: &str = "raw/edge-test/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_and_live_files_arrive_once_with_their_content() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("agent-backlog").await;
    let dir = tempfile::tempdir().unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..20 {
        expected.insert(key_for(&name(i)), write_file(dir.path(), &name(i), i));
    }
    // Files the agent must ignore.
    std::fs::write(dir.path().join(".hidden.json"), "{}").unwrap();
    std::fs::write(dir.path().join("1763800000000.json.tmp"), "{}").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "x").unwrap();

    let agent = start(config(dir.path(), bucket.name(), &[]), bucket.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 20..30 {
        let body = content(i);
        if i % 2 == 0 {
            // Written in place and closed.
            write_file(dir.path(), &name(i), i);
        } else {
            // Written under a temporary name and renamed in, as many writers do.
            let tmp = dir.path().join(format!(".{}.tmp", name(i)));
            std::fs::write(&tmp, &body).unwrap();
            std::fs::rename(&tmp, dir.path().join(name(i))).unwrap();
        }
        expected.insert(key_for(&name(i)), body);
    }
    wait_for_count(&bucket, PREFIX, 30, Duration::from_secs(30)).await;
    let summary = agent.stop().await;

    let stored = objects(&bucket, "raw/").await;
    assert_eq!(
        stored, expected,
        "exactly the expected keys, each with its bytes"
    );
    // The manifest stored at shutdown names each of them, and nothing the
    // agent ignores on purpose.
    let mut listed = std::collections::BTreeSet::new();
    for key in keys(&bucket, "ledger/").await {
        let (body, _) = bucket.get_bytes(&key).await.unwrap();
        let m = relay_shared::manifest::Manifest::parse(&key, &body).unwrap();
        assert!(m.refused.is_empty() && m.waiting.is_empty(), "{m:?}");
        for u in m.uploaded {
            // The hash the manifest names is the one stored with the object.
            let head = bucket.head(&u.key).await.unwrap().unwrap();
            let stored = head.metadata.get(relay_shared::meta::CONTENT_HASH);
            assert_eq!(stored, Some(&u.hash), "{}", u.key);
            listed.insert(u.key);
        }
    }
    assert_eq!(listed, expected.keys().cloned().collect());
    assert_eq!(
        (summary.uploaded, summary.duplicates, summary.rejected),
        (30, 0, 0)
    );

    let head = bucket.head(&key_for(&name(3))).await.unwrap().unwrap();
    assert_eq!(head.content_encoding.as_deref(), Some("zstd"));
    assert_eq!(head.content_type.as_deref(), Some("application/json"));
    let meta = head.metadata;
    assert_eq!(meta["original-name"], name(3));
    assert_eq!(meta["original-size"], content(3).len().to_string());
    assert_eq!(meta["source-id"], SOURCE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_being_written_waits_until_it_is_closed() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("agent-partial").await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start(config(dir.path(), bucket.name(), &[]), bucket.clone());
    // The file must be created after the watch is in place: a file found by
    // the start-up scan has no close event and relies on settling alone.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let path = dir.path().join(name(1));
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"# header\n{\"a\":1}\n").unwrap();
    f.flush().unwrap();
    // Far longer than the settle time: still open, so never uploaded.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        count(&bucket, PREFIX).await,
        0,
        "an open file must not be uploaded"
    );
    f.write_all(b"{\"b\":2}\n").unwrap();
    drop(f);

    wait_for_count(&bucket, PREFIX, 1, Duration::from_secs(15)).await;
    agent.stop().await;
    let stored = objects(&bucket, PREFIX).await;
    assert_eq!(
        stored[&key_for(&name(1))],
        b"# header\n{\"a\":1}\n{\"b\":2}\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_go_multipart_and_arrive_whole() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("agent-multipart").await;
    let dir = tempfile::tempdir().unwrap();
    // Incompressible, so 12 MiB stays above the 5 MiB part size.
    let mut x: u64 = 88172645463325252;
    let body: Vec<u8> = (0..12 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.path().join(name(7)), &body).unwrap();
    let agent = start(
        config(
            dir.path(),
            bucket.name(),
            &["--multipart-threshold-bytes", "5242880"],
        ),
        bucket.clone(),
    );
    wait_for_count(&bucket, PREFIX, 1, Duration::from_secs(60)).await;
    let summary = agent.stop().await;
    assert_eq!(summary.uploaded, 1);
    let stored = objects(&bucket, PREFIX).await;
    assert!(
        stored[&key_for(&name(7))] == body,
        "multipart object decodes to the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_drains_after_s3_comes_back() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("agent-outage").await;
    let proxy = TransportProxy::start(&emu.endpoint, 0).await;
    let via_proxy =
        relay_shared::s3::Bucket::new(emu.s3_via(&proxy.endpoint()).await, bucket.name());
    let dir = tempfile::tempdir().unwrap();
    for i in 0..15 {
        write_file(dir.path(), &name(i), i);
    }
    proxy.set(Weather::Refuse);
    let agent = start(
        config(dir.path(), bucket.name(), &["--on-success", "delete"]),
        via_proxy,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&bucket, PREFIX).await,
        0,
        "nothing can arrive while S3 is down"
    );
    assert_eq!(
        files_in(dir.path()).len(),
        15,
        "nothing is deleted while S3 is down"
    );

    proxy.set(Weather::Clear);
    wait_for_count(&bucket, PREFIX, 15, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !files_in(dir.path()).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summary = agent.stop().await;
    assert_eq!(summary.uploaded, 15);
    assert!(
        files_in(dir.path()).is_empty(),
        "each file deleted once S3 had it"
    );
    for i in 0..15 {
        assert_eq!(
            objects(&bucket, &key_for(&name(i)))
                .await
                .into_values()
                .next()
                .unwrap(),
            content(i)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_success_modes_delete_move_and_keep() {
    let emu = Emulator::connect().await;

    // delete
    let bucket = emu.bucket("agent-delete").await;
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        write_file(dir.path(), &name(i), i);
    }
    let agent = start(
        config(dir.path(), bucket.name(), &["--on-success", "delete"]),
        bucket.clone(),
    );
    wait_for_count(&bucket, PREFIX, 3, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.stop().await;
    assert!(files_in(dir.path()).is_empty());

    // move:<dir>
    let bucket = emu.bucket("agent-move").await;
    let dir = tempfile::tempdir().unwrap();
    let done = tempfile::tempdir().unwrap();
    for i in 0..3 {
        write_file(dir.path(), &name(i), i);
    }
    let mv = format!("move:{}", done.path().display());
    let agent = start(
        config(dir.path(), bucket.name(), &["--on-success", &mv]),
        bucket.clone(),
    );
    wait_for_count(&bucket, PREFIX, 3, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.stop().await;
    assert!(files_in(dir.path()).is_empty());
    let moved: Vec<_> = files_in(done.path())
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(moved, (0..3).map(content).collect::<Vec<_>>());

    // keep: files stay, and a restart uploads nothing again.
    let bucket = emu.bucket("agent-keep").await;
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        write_file(dir.path(), &name(i), i);
    }
    let agent = start(config(dir.path(), bucket.name(), &[]), bucket.clone());
    wait_for_count(&bucket, PREFIX, 3, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(agent.stop().await.uploaded, 3);
    assert_eq!(files_in(dir.path()).len(), 3);
    let agent = start(config(dir.path(), bucket.name(), &[]), bucket.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let again = agent.stop().await;
    assert_eq!(
        (again.uploaded, again.duplicates),
        (0, 0),
        "the ledger stops re-uploads: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_loses_nothing_and_reuploads_almost_nothing() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("agent-kill").await;
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    const N: usize = 200;
    for i in 0..N {
        write_file(dir.path(), &name(i), i);
    }
    let mut first = spawn_agent(
        dir.path(),
        bucket.name(),
        &logs.path().join("1.log"),
        &["--concurrency", "4"],
    );
    let start = Instant::now();
    while count(&bucket, PREFIX).await < 20 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "agent made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let before = count(&bucket, PREFIX).await;
    assert!(
        before < N,
        "the kill must land mid-burst ({before} already uploaded)"
    );

    let second_log = logs.path().join("2.log");
    let mut second = spawn_agent(
        dir.path(),
        bucket.name(),
        &second_log,
        &["--concurrency", "4"],
    );
    wait_for_count(&bucket, PREFIX, N, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(&second);
    assert!(second.wait().unwrap().success(), "SIGTERM exits 0");

    let lines = log_lines(&second_log);
    let uploaded = count_messages(&lines, "uploaded");
    let duplicates = count_messages(&lines, "already in S3 (412); counted as a duplicate");
    assert_eq!(
        uploaded,
        N - before,
        "the restart uploads exactly what S3 lacked"
    );
    // Only files whose ledger line the kill cut off can be tried again, and
    // S3 refuses those (412): at most the uploads that were in flight.
    assert!(duplicates <= 4, "{duplicates} duplicates after restart");
    let stored = objects(&bucket, PREFIX).await;
    assert_eq!(stored.len(), N);
    for i in 0..N {
        assert_eq!(stored[&key_for(&name(i))], content(i), "{}", name(i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_on_one_directory_store_each_file_once_without_errors() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("agent-pair").await;
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let (log_a, log_b) = (logs.path().join("a.log"), logs.path().join("b.log"));
    // Separate state dirs, as two hosts sharing a directory would have.
    let state_a = logs.path().join("state-a").display().to_string();
    let state_b = logs.path().join("state-b").display().to_string();
    let mut a = spawn_agent(
        dir.path(),
        bucket.name(),
        &log_a,
        &["--on-success", "delete", "--state-dir", &state_a],
    );
    let mut b = spawn_agent(
        dir.path(),
        bucket.name(),
        &log_b,
        &["--on-success", "delete", "--state-dir", &state_b],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    const N: usize = 100;
    for i in 0..N {
        write_file(dir.path(), &name(i), i);
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    wait_for_count(&bucket, PREFIX, N, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !files_in(dir.path()).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(&a);
    sigterm(&b);
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());

    assert!(files_in(dir.path()).is_empty(), "every file deleted");
    let (la, lb) = (log_lines(&log_a), log_lines(&log_b));
    assert_eq!(
        problems(&la),
        Vec::<String>::new(),
        "agent A reported problems"
    );
    assert_eq!(
        problems(&lb),
        Vec::<String>::new(),
        "agent B reported problems"
    );
    let uploaded = count_messages(&la, "uploaded") + count_messages(&lb, "uploaded");
    assert_eq!(uploaded, N, "each file stored by exactly one agent");
    let stored = objects(&bucket, PREFIX).await;
    for i in 0..N {
        assert_eq!(stored[&key_for(&name(i))], content(i));
    }
}

/// The same name written again with other bytes, in each after-success mode,
/// through the real binary: S3's 412 is not taken for proof. Both contents
/// end up in S3 (the second under a conflict key next to the first), and
/// the second file is removed or moved only once its own bytes are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_used_again_keeps_both_contents_in_every_mode() {
    let emu = Emulator::connect().await;
    let done = tempfile::tempdir().unwrap();
    let mv = format!("move:{}", done.path().display());
    for mode in ["delete", "keep", mv.as_str()] {
        let bucket = emu.bucket("agent-reuse").await;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent.log");
        let state = tempfile::tempdir().unwrap();
        let state_arg = state.path().display().to_string();
        let mut agent = spawn_agent(
            dir.path(),
            bucket.name(),
            &log,
            &["--on-success", mode, "--state-dir", &state_arg],
        );
        let name = name(0);
        let first = write_file(dir.path(), &name, 1);
        wait_for_count(&bucket, PREFIX, 1, Duration::from_secs(20)).await;
        // Let the after-success action happen, then use the name again.
        let start = Instant::now();
        while mode != "keep" && dir.path().join(&name).exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{mode}: first file still there"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = content(2);
        std::fs::write(dir.path().join(&name), &second).unwrap();
        wait_for_count(&bucket, PREFIX, 2, Duration::from_secs(20)).await;
        let stored = objects(&bucket, PREFIX).await;
        let original = key_for(&name);
        let conflict: Vec<&String> = stored.keys().filter(|k| **k != original).collect();
        assert_eq!(conflict.len(), 1, "{mode}: {:?}", stored.keys());
        let stem = original.trim_end_matches(".json.zst");
        let tag = conflict[0]
            .strip_prefix(&format!("{stem}."))
            .and_then(|t| t.strip_suffix(".json.zst"));
        assert!(
            tag.is_some_and(|t| t.len() == 16 && t.bytes().all(|b| b.is_ascii_hexdigit())),
            "{mode}: conflict key {}",
            conflict[0]
        );
        assert_eq!(stored[&original], first, "{mode}: the first bytes kept");
        assert_eq!(stored[conflict[0]], second, "{mode}: the new bytes stored");
        let start = Instant::now();
        while mode != "keep" && dir.path().join(&name).exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{mode}: second file never removed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sigterm(&agent);
        assert!(agent.wait().unwrap().success());
        let lines = log_lines(&log);
        assert!(
            lines
                .iter()
                .any(|l| l["conflict_key"].as_str() == Some(conflict[0].as_str())),
            "{mode}: the conflict is logged with its key"
        );
        if mode == "keep" {
            assert_eq!(std::fs::read(dir.path().join(&name)).unwrap(), second);
        }
    }
}

/// A file hard-linked into the directory (as `link()` or `O_TMPFILE` plus
/// `linkat` publish it) sends only IN_CREATE, and is relayed. A symlink to a
/// file outside, and a FIFO named like a data file, are never opened, never
/// waited on, and named in the log; the other files keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_links_are_relayed_and_links_and_fifos_are_left_alone() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("agent-links").await;
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir_in(dir.path().parent().unwrap()).unwrap();
    let log = outside.path().join("agent.log");
    let mut agent = spawn_agent(dir.path(), bucket.name(), &log, &["--on-success", "delete"]);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let linked = write_file(outside.path(), "staged.json", 3);
    std::fs::hard_link(outside.path().join("staged.json"), dir.path().join(name(1))).unwrap();
    std::fs::write(outside.path().join("secret.json"), b"{\"secret\":1}\n").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.json"), dir.path().join(name(2)))
        .unwrap();
    let fifo = dir.path().join(name(3));
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let plain = write_file(dir.path(), &name(4), 4);

    wait_for_count(&bucket, PREFIX, 2, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stored = objects(&bucket, PREFIX).await;
    assert_eq!(
        stored.keys().cloned().collect::<Vec<_>>(),
        [key_for(&name(1)), key_for(&name(4))],
        "the hard link and the plain file, nothing else"
    );
    assert_eq!(stored[&key_for(&name(1))], linked);
    assert_eq!(stored[&key_for(&name(4))], plain);
    assert!(
        dir.path().join(name(2)).is_symlink() && fifo.exists(),
        "left alone"
    );
    assert_eq!(
        std::fs::read(outside.path().join("secret.json")).unwrap(),
        b"{\"secret\":1}\n"
    );
    sigterm(&agent);
    assert!(
        agent.wait().unwrap().success(),
        "no upload was waiting on the FIFO"
    );
    let lines = log_lines(&log);
    let named = |n: &str| {
        lines.iter().any(|l| {
            l["path"].as_str().is_some_and(|p| p.ends_with(n))
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("not relayed"))
        })
    };
    assert!(named(&name(2)) && named(&name(3)), "both named in the log");
}

/// The start-up check proves write access without writing: no object (so no
/// event), and no multipart upload left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_probe_writes_nothing() {
    use edge_agent::s3::{Access, probe_put_access};
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("agent-probe").await;
    assert!(matches!(
        probe_put_access(&bucket, PREFIX).await,
        Access::Allowed
    ));
    assert_eq!(count(&bucket, "").await, 0);
    let uploads = emu
        .s3
        .list_multipart_uploads()
        .bucket(bucket.name())
        .send()
        .await
        .unwrap();
    assert!(
        uploads.uploads.unwrap_or_default().is_empty(),
        "the probe's upload was aborted"
    );
    let missing = relay_shared::s3::Bucket::new(
        emu.s3.clone(),
        relay_shared::testing::unique_name("missing"),
    );
    assert!(matches!(
        probe_put_access(&missing, PREFIX).await,
        Access::Denied(_)
    ));
}

/// A relative --watch-dir: inotify reports absolute paths, which once made
/// every live file look foreign ("not valid UTF-8") until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_watch_dir_uploads_live_files() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("agent-relative").await;
    let base = tempfile::tempdir().unwrap();
    std::fs::create_dir(base.path().join("wk")).unwrap();
    let log = base.path().join("agent.log");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .current_dir(base.path())
        .args([
            "--watch-dir",
            "wk",
            "--bucket",
            bucket.name(),
            "--source-id",
            SOURCE,
        ])
        .args([
            "--settle-ms",
            "150",
            "--metrics-addr",
            "off",
            "--log-format",
            "json",
        ])
        .args(["--s3-path-style", "true"])
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live = write_file(&base.path().join("wk"), &name(5), 5);
    wait_for_count(&bucket, PREFIX, 1, Duration::from_secs(20)).await;
    assert_eq!(objects(&bucket, PREFIX).await[&key_for(&name(5))], live);
    sigterm(&agent);
    assert!(agent.wait().unwrap().success());
    assert!(
        problems(&log_lines(&log)).is_empty(),
        "{:?}",
        problems(&log_lines(&log))
    );
}

/// What an operator sees from the first minute: every counter at zero,
/// build and process metrics, an index at `/`, the version and settings
/// at start-up, one stop line with plain fields, and no colour codes in a
/// log that is not a terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_logs_are_complete_from_the_start() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("agent-metrics").await;
    let dir = tempfile::tempdir().unwrap();
    let port = relay_shared::testing::free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = dir.path().join("agent.log");
    let watch = dir.path().join("in");
    std::fs::create_dir(&watch).unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["--watch-dir", &watch.display().to_string()])
        .args(["--bucket", bucket.name(), "--source-id", SOURCE])
        .args(["--metrics-addr", &addr, "--s3-path-style", "true"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let metrics = relay_shared::testing::first_metrics(&addr, &log).await;
    for series in [
        "relay_agent_files_total{outcome=\"uploaded\"} 0",
        "relay_agent_files_total{outcome=\"set_aside\"} 0",
        "relay_agent_errors_total{kind=\"throttled\"} 0",
        "relay_agent_errors_total{kind=\"access_denied\"} 0",
        "relay_agent_retries_total{kind=\"transient\"} 0",
        "relay_agent_rejected_files_total 0",
        "relay_agent_errors_total{kind=\"after_success\"} 0",
        "relay_agent_lease_refusals_total{reason=\"not_owner\"} 0",
        "relay_agent_healthy 1",
        "relay_build_info{binary=\"edge-agent\",version=\"",
        "process_resident_memory_bytes ",
        "process_open_fds ",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("by reason"),
        "no HELP text promises a label that does not exist"
    );
    // How files are judged is known once the agent runs, after its S3 probe.
    let started = Instant::now();
    while !relay_shared::testing::http_get(&addr, "/metrics")
        .contains("relay_agent_leases_enabled 1")
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no lease gauge"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = relay_shared::testing::http_get(&addr, "/healthz");
    assert!(
        health.contains("200 OK") && health.contains("finished files: read leases"),
        "{health}"
    );
    let index = relay_shared::testing::http_get(&addr, "/");
    assert!(
        index.contains("/metrics") && index.contains("/healthz"),
        "{index}"
    );
    sigterm(&agent);
    assert!(agent.wait().unwrap().success());
    let text = relay_shared::testing::assert_plain_log_with_start_line(
        &log,
        "edge-agent",
        &format!("\"watch_dir\":\"{}\"", watch.display()),
    );
    assert_eq!(text.matches("stopped").count(), 1, "one stop line:\n{text}");
    assert!(!text.contains("Summary {"), "no Debug strings:\n{text}");
}

/// An S3 endpoint that accepts connections and reads requests but never
/// answers (a peer gone silent behind a NAT or a stuck proxy) fails each
/// request after `RELAY_AWS_ATTEMPT_TIMEOUT_SECS`, instead of holding it
/// until TCP gives up. Without the timeout this command never ends.
#[test]
fn a_silent_s3_endpoint_fails_requests_at_the_attempt_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut sink = [0u8; 4096];
                while matches!(std::io::Read::read(&mut conn, &mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-agent"));
    let mut child = relay_shared::testing::loopback_aws_env(&mut cmd, &endpoint)
        .arg("check")
        .args(["--watch-dir", &dir.path().display().to_string()])
        .args(["--bucket", "silent", "--source-id", SOURCE])
        .args(["--metrics-addr", "off", "--s3-path-style", "true"])
        .env("RELAY_AWS_ATTEMPT_TIMEOUT_SECS", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // One attempt per call: the agent retries uploads itself.
    let deadline = started + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("edge-agent check still waiting on a silent endpoint after 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("timeout")),
        "the failure names the timeout:\n{text}"
    );
}

/// `edge-agent check`: one line per check, exit 0 when all pass, and a
/// failing line naming the resource and the fix when one does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_each_problem_on_one_line_and_exits_non_zero() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("agent-check").await;
    let dir = tempfile::tempdir().unwrap();
    let run = |bucket: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_edge-agent"))
            .arg("check")
            .args(["--watch-dir", &dir.path().display().to_string()])
            .args(["--bucket", bucket, "--source-id", SOURCE])
            .args(["--metrics-addr", "off", "--s3-path-style", "true"])
            .args(extra)
            .output()
            .unwrap()
    };
    let good = run(bucket.name(), &[]);
    let text = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{text}");
    assert!(
        text.lines().all(|l| l.starts_with("ok "))
            && text.contains("S3: may write under")
            && text.contains(&format!(
                "S3: may write completeness manifests under s3://{}/ledger/{SOURCE}/",
                bucket.name()
            )),
        "{text}"
    );
    assert!(
        bucket
            .get_bytes(&format!("{PREFIX}.relay-agent-access-probe"))
            .await
            .is_err(),
        "check writes nothing"
    );

    let missing = relay_shared::testing::unique_name("missing");
    let bad = run(&missing, &[]);
    let text = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{text}");
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(failed.len(), 1, "{text}");
    assert!(
        failed[0].contains(&missing) && failed[0].contains("does not exist"),
        "{text}"
    );

    let nowhere = dir.path().join("nowhere");
    let bad = run(
        bucket.name(),
        &["--on-success", &format!("move:{}", nowhere.display())],
    );
    let text = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("FAIL config:") && text.contains("nowhere"),
        "{text}"
    );
}

/// `check --unit` checks what the service will run: only the unit's
/// environment file (the caller's own `RELAY_BUCKET` is ignored), the
/// configured paths against its sandbox (drop-ins included), and, as root,
/// the unit's user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_the_unit_fails_where_the_service_would() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("agent-unit").await;
    let dir = tempfile::tempdir().unwrap();
    let (watch, state) = (dir.path().join("out"), dir.path().join("state"));
    std::fs::create_dir(&watch).unwrap();
    let env_file = dir.path().join("agent.env");
    std::fs::write(
        &env_file,
        format!(
            "RELAY_WATCH_DIR={}\nRELAY_BUCKET={}\nRELAY_SOURCE_ID={SOURCE}\nRELAY_ON_SUCCESS=delete\n\
             RELAY_STATE_DIR={}\nRELAY_METRICS_ADDR=off\nRELAY_S3_PATH_STYLE=true\n\
             AWS_ENDPOINT_URL={}\nAWS_EC2_METADATA_DISABLED=true\nAWS_ACCESS_KEY_ID=test\n\
             AWS_SECRET_ACCESS_KEY=test\nAWS_REGION=us-east-1\n",
            watch.display(),
            bucket.name(),
            state.display(),
            emu.endpoint
        ),
    )
    .unwrap();
    let unit = dir.path().join("relay-edge-agent.service");
    let write_unit = |user: &str| {
        std::fs::write(
            &unit,
            format!(
                "[Service]\nEnvironmentFile={}\n{user}ProtectSystem=strict\nReadWritePaths={}\n",
                env_file.display(),
                state.display()
            ),
        )
        .unwrap();
    };
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
            .args(["check", "--unit", &unit.display().to_string()])
            .env("RELAY_BUCKET", "not-this-one")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), text)
    };
    write_unit("");
    let (code, text) = run();
    assert_eq!(code, Some(1), "{text}");
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        failed.len() == 1
            && failed[0].contains("unit sandbox: watch directory")
            && failed[0].contains(&format!("ReadWritePaths={}", watch.display())),
        "{text}"
    );
    assert!(text.contains(&format!("s3://{}/", bucket.name())), "{text}");

    let drop_ins = dir.path().join("relay-edge-agent.service.d");
    std::fs::create_dir(&drop_ins).unwrap();
    std::fs::write(
        drop_ins.join("override.conf"),
        format!("[Service]\nReadWritePaths={}\n", watch.display()),
    )
    .unwrap();
    let (code, text) = run();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("unit sandbox: watch directory"), "{text}");

    // The directories are root's: the unit's user may not delete files
    // from the watch directory nor create the state directory.
    write_unit("User=nobody\nGroup=nogroup\n");
    let (code, text) = run();
    if rustix::process::geteuid().is_root() {
        assert_eq!(code, Some(1), "{text}");
        for what in ["FAIL watch directory", "FAIL state directory"] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(what) && l.contains("this user")),
                "checked as nobody, not root:\n{text}"
            );
        }
    } else {
        assert!(
            text.contains("only root can check as another user"),
            "{text}"
        );
    }
}
