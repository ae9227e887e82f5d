//! The agent over the in-memory store and real files: canaries, lost
//! answers, conflicts, set-aside files, deletion only while S3 holds the
//! file, and shutdown.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use relay_shared::store::ObjectStore;
use tokio::task::JoinSet;

use super::outcome::unless_reopened;
use super::owner::Agent;
use super::run;
use crate::config::Config;
use crate::lease::Leases;
use crate::tracker::{FileStat, Judge};
use crate::upload::RetryPolicy;
use clap::Parser;
use relay_shared::testing::{Fault, MemStore};

fn store() -> MemStore {
    MemStore::new("b")
}

/// A delete-mode agent on `dir` (unless `extra` names another), with
/// `extra` flags.
fn config(dir: &Path, extra: &[&str]) -> Config {
    let mut args = vec![
        "edge-agent",
        "--watch-dir",
        dir.to_str().unwrap(),
        "--bucket",
        "b",
        "--source-id",
        "s",
        "--settle-ms",
        "50",
        "--metrics-addr",
        "off",
    ];
    if !extra.contains(&"--on-success") {
        args.extend(["--on-success", "delete"]);
    }
    args.extend_from_slice(extra);
    Config::resolve(crate::config::Args::parse_from(args), || None).unwrap()
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        permanent_delay: Duration::from_secs(3600),
    }
}

/// An agent over `s3`, with `files` written into `dir` and judged
/// finished, without the watcher and the settle time.
fn agent_with(dir: &Path, s3: &MemStore, files: &[(&str, &[u8])]) -> Agent<MemStore> {
    let mut agent = Agent::new(config(dir, &[]), s3.clone(), fast(), None, None);
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        let stat = FileStat::of(&std::fs::metadata(&path).unwrap());
        agent.enqueue(path, stat, Judge::Settle);
    }
    agent
}

/// A canary goes the data's way: under the source's prefix, named for
/// its creation time, marked in its metadata, one record with the
/// source, a sequence number and the time. Its file is removed once
/// stored, and it is not counted as data.
#[tokio::test]
async fn canaries_take_the_datas_path_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = store();
    let c = config(dir.path(), &["--canary-secs", "1"]);
    assert_eq!(c.canary, Some(Duration::from_secs(1)));
    let mut agent = Agent::new(c, s3.clone(), fast(), None, None);
    let before = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    agent.canary();
    // Canaries are named by the millisecond: one per interval.
    std::thread::sleep(Duration::from_millis(5));
    agent.canary();
    drain(&mut agent).await;
    let keys = s3.keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for (n, key) in keys.iter().enumerate() {
        let canary = relay_shared::keys::canary_of("raw/", key).unwrap();
        assert_eq!(canary.source_id, "s");
        assert!(canary.created_ms >= before, "{key}");
        let record: serde_json::Value = serde_json::from_slice(&decoded(&s3, key)).unwrap();
        assert_eq!(record["source"], "s");
        assert_eq!(record["created_ms"], canary.created_ms);
        assert_eq!(record["seq"], n as u64 + 1, "{record}");
        let head = s3.head(key).await.unwrap().unwrap();
        assert_eq!(head.metadata.get("canary").map(String::as_str), Some("1"));
    }
    let left: Vec<_> = std::fs::read_dir(agent.canary_dir()).unwrap().collect();
    assert!(left.is_empty(), "canary files left: {left:?}");
    assert_eq!(agent.summary.uploaded, 0, "canaries are not data");
}

/// Stores the manifest that is due, as the owning task does.
async fn manifest(agent: &mut Agent<MemStore>) {
    let mut puts = super::book::Puts::new();
    agent.book.due = true;
    agent.start_manifest(&mut puts);
    agent.manifest_done(puts.join_next().await.unwrap());
}

fn manifests(s3: &MemStore) -> Vec<relay_shared::manifest::Manifest> {
    let keys = s3.keys().into_iter().filter(|k| k.starts_with("ledger/"));
    keys.map(|k| relay_shared::manifest::Manifest::parse(&k, &s3.bytes(&k).unwrap()).unwrap())
        .collect()
}

/// A manifest names every file S3 holds since the last one (by its key),
/// every file the agent refuses (with why) and every file still waiting;
/// one that fails to store is stored later under the same key with nothing
/// dropped, and a restart goes on with the next sequence number.
#[tokio::test]
async fn manifests_name_stored_refused_and_waiting_files() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = store();
    let (a, b) = ("1763800000010.json", "1763800000011.json");
    let mut agent = agent_with(dir.path(), &s3, &[(a, b"{}\n"), ("notes.txt", b"x")]);
    drain(&mut agent).await;
    let waiting = dir.path().join("1763800000012.json");
    std::fs::write(&waiting, b"{").unwrap();
    let stat = FileStat::of(&std::fs::metadata(&waiting).unwrap());
    let signal = crate::tracker::Signal::Changed;
    agent
        .tracker
        .observe(&waiting, Some(stat), signal, Instant::now());
    s3.fail_on("PutObject", "ledger/", Fault::Unavailable);
    manifest(&mut agent).await;
    assert!(manifests(&s3).is_empty(), "failed");
    // More is stored before the retry: the retry lists both, same key.
    let path = dir.path().join(b);
    std::fs::write(&path, b"{}\n").unwrap();
    agent.enqueue(
        path.clone(),
        FileStat::of(&std::fs::metadata(&path).unwrap()),
        Judge::Settle,
    );
    drain(&mut agent).await;
    manifest(&mut agent).await;
    let [m] = &manifests(&s3)[..] else {
        panic!("{:?}", s3.keys())
    };
    assert_eq!((m.source.as_str(), m.seq, m.interval_secs), ("s", 1, 60));
    let stored: Vec<_> = m
        .uploaded
        .iter()
        .map(|u| (u.file.as_str(), u.key.clone()))
        .collect();
    assert_eq!(stored, [(a, key_of(a)), (b, key_of(b))]);
    let hash = relay_shared::meta::content_hash_hex(xxhash_rust::xxh3::xxh3_128(b"{}\n"));
    assert!(m.uploaded.iter().all(|u| u.hash == hash), "{m:?}");
    assert_eq!(m.refused.len(), 1, "{m:?}");
    assert_eq!(m.refused[0].file, "notes.txt");
    assert!(m.refused[0].reason.contains("timestamp"), "{m:?}");
    assert_eq!(m.waiting.len(), 1, "{m:?}");
    assert_eq!(m.waiting[0].file, "1763800000012.json");
    // Stored files are named once; a new agent on the same state goes on.
    let mut again = agent_with(dir.path(), &s3, &[]);
    manifest(&mut again).await;
    let all = manifests(&s3);
    assert_eq!(all.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(all[1].epoch_ms, all[0].epoch_ms);
    assert!(all[1].uploaded.is_empty());
}

/// A manifest a shutdown could not store is kept in the state directory
/// and stored first, under its own key, by the next start.
#[tokio::test]
async fn a_manifest_unstored_at_shutdown_is_stored_by_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = store();
    let a = "1763800000020.json";
    let mut agent = agent_with(dir.path(), &s3, &[(a, b"{}\n")]);
    drain(&mut agent).await;
    s3.fail_on("PutObject", "ledger/", Fault::Unavailable);
    agent.final_manifest(Duration::from_secs(5)).await;
    assert!(manifests(&s3).is_empty());
    let mut next = agent_with(dir.path(), &s3, &[]);
    manifest(&mut next).await;
    let [m] = &manifests(&s3)[..] else {
        panic!("{:?}", s3.keys())
    };
    assert_eq!(m.seq, 1);
    let files: Vec<_> = m.uploaded.iter().map(|u| u.key.clone()).collect();
    assert_eq!(files, [key_of(a)]);
    assert!(!dir.path().join(".relay-agent/manifest-pending").exists());
}

#[test]
fn canaries_are_on_by_default_and_zero_turns_them_off() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        config(dir.path(), &[]).canary,
        Some(Duration::from_secs(60))
    );
    assert_eq!(config(dir.path(), &["--canary-secs", "0"]).canary, None);
}

/// Uploads everything ready and acts on each outcome, as `run` does.
async fn drain(agent: &mut Agent<MemStore>) {
    let mut uploads = JoinSet::new();
    loop {
        while let Some(job) = agent.next_job() {
            agent.spawn(&mut uploads, job);
        }
        match uploads.join_next().await {
            Some(done) => agent.finish(done),
            None => break,
        }
    }
}

fn decoded(s3: &MemStore, key: &str) -> Vec<u8> {
    zstd::decode_all(&s3.bytes(key).unwrap()[..]).unwrap()
}

fn key_of(name: &str) -> String {
    relay_shared::keys::KeyScheme::new("raw/", "s", relay_shared::keys::TimeFormat::Auto)
        .unwrap()
        .raw_key(name)
        .unwrap()
        .key
}

/// The put took effect but its answer was lost: the retry meets a 412,
/// the object's hash proves it holds these bytes, and only then is the
/// file deleted.
#[tokio::test]
async fn a_lost_answer_then_a_412_is_verified_before_the_file_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = store();
    s3.fail_next(1, Fault::LoseResponse);
    let name = "1763800000001.json";
    let mut agent = agent_with(dir.path(), &s3, &[(name, b"{\"a\":1}\n")]);
    drain(&mut agent).await;
    assert_eq!(
        (agent.summary.uploaded, agent.summary.duplicates),
        (0, 1),
        "{:?}",
        agent.summary
    );
    assert_eq!(decoded(&s3, &key_of(name)), b"{\"a\":1}\n");
    assert!(!dir.path().join(name).exists(), "deleted once verified");
    let ops: Vec<&str> = s3.calls().iter().map(|(op, _)| *op).collect();
    assert_eq!(ops, ["PutObject", "PutObject", "HeadObject"]);
}

/// A name used again: S3 holds other bytes under the key. The file is
/// deleted only after its own bytes are stored under the conflict key.
#[tokio::test]
async fn a_412_with_other_bytes_stores_the_file_aside_before_deleting_it() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = store();
    let name = "1763800000002.json";
    let mut first = agent_with(dir.path(), &s3, &[(name, b"{\"v\":1}\n")]);
    drain(&mut first).await;
    let mut again = agent_with(dir.path(), &s3, &[(name, b"{\"v\":2}\n")]);
    drain(&mut again).await;
    assert_eq!(again.summary.conflicts, 1, "{:?}", again.summary);
    assert!(!dir.path().join(name).exists());
    let keys = s3.keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(decoded(&s3, &key_of(name)), b"{\"v\":1}\n");
    let conflict = keys.iter().find(|k| **k != key_of(name)).unwrap();
    assert_eq!(decoded(&s3, conflict), b"{\"v\":2}\n");

    // Unverifiable (no content hash): kept on disk, never deleted.
    let other = "1763800000003.json";
    s3.put(
        &key_of(other),
        b"old".to_vec(),
        &relay_shared::store::PutMode::Create,
        &relay_shared::store::PutOptions::default(),
    )
    .await
    .unwrap();
    let mut third = agent_with(dir.path(), &s3, &[(other, b"{\"v\":3}\n")]);
    drain(&mut third).await;
    assert_eq!(third.summary.unverified, 1);
    assert!(dir.path().join(other).exists());
}

/// A permanent error sets the file aside on disk, out of the upload
/// slots; nothing is deleted.
#[tokio::test]
async fn a_permanent_error_keeps_the_file_and_sets_it_aside() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = store();
    s3.deny("raw/");
    let name = "1763800000004.json";
    let mut agent = agent_with(dir.path(), &s3, &[(name, b"{\"a\":4}\n")]);
    drain(&mut agent).await;
    assert_eq!(agent.summary.set_aside, 1);
    let held = &agent.held_back[&dir.path().join(name)];
    assert!(held.set_aside.is_some(), "{held:?}");
    assert!(agent.inflight.is_empty());
    assert!(dir.path().join(name).exists());
    assert!(s3.keys().is_empty());
}

/// After its upload, a file is deleted only while it is still the file
/// S3 holds: a file that changed since it was read, or that a writer
/// holds open again, is left in place (and followed again), and the
/// lease is held while the file is removed.
#[tokio::test]
async fn a_file_is_deleted_only_while_it_is_what_s3_holds_and_no_writer_has_it() {
    let leases = Leases::enable().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s3 = store();
    let agent = agent_with(dir.path(), &s3, &[]);
    let job = |name: &str, content: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let stat = FileStat::of(&std::fs::metadata(&path).unwrap());
        let mut job = agent.job(path, name.into(), key_of(name), name.into(), stat, false);
        job.lease = Some(leases);
        job
    };
    let remove = |p: &Path| std::fs::remove_file(p);

    let closed = job("1763800000010.json", b"{}\n");
    assert_eq!(unless_reopened(&closed, remove).unwrap(), None);
    assert!(!closed.path.exists());

    let reopened = job("1763800000011.json", b"{}\n");
    let writer = std::fs::OpenOptions::new()
        .append(true)
        .open(&reopened.path)
        .unwrap();
    assert_eq!(
        unless_reopened(&reopened, remove).unwrap(),
        Some("a writer opened it again")
    );
    assert!(reopened.path.exists());
    drop(writer);

    let changed = job("1763800000012.json", b"{}\n");
    std::fs::write(&changed.path, b"{}\n{}\n").unwrap();
    assert_eq!(
        unless_reopened(&changed, remove).unwrap(),
        Some("it changed after it was read")
    );
    assert!(changed.path.exists());

    // Without a lease (judged by settle time), the stat alone decides.
    let mut settled = job("1763800000013.json", b"{}\n");
    settled.lease = None;
    assert_eq!(unless_reopened(&settled, remove).unwrap(), None);
    assert!(!settled.path.exists());
}

/// In `keep` mode, a file appended to after it was read but before its
/// upload ended (its events are ignored while it is in flight) is
/// recorded as S3 holds it and followed again, so the appended part is
/// relayed; a file unchanged is recorded and left alone.
#[tokio::test]
async fn a_kept_file_changed_while_in_flight_is_followed_again() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let s3 = store();
    let keep = [
        "--on-success",
        "keep",
        "--state-dir",
        state.path().to_str().unwrap(),
    ];
    let mut agent = Agent::new(config(dir.path(), &keep), s3.clone(), fast(), None, None);
    let mut uploads = JoinSet::new();
    for (name, append) in [("1763800000020.json", true), ("1763800000021.json", false)] {
        let path = dir.path().join(name);
        std::fs::write(&path, b"{\"part\":1}\n").unwrap();
        let stat = FileStat::of(&std::fs::metadata(&path).unwrap());
        agent.enqueue(path.clone(), stat, Judge::Settle);
        let job = agent.next_job().unwrap();
        agent.spawn(&mut uploads, job);
        let done = uploads.join_next().await.unwrap();
        if append {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            std::io::Write::write_all(&mut f, b"{\"part\":2}\n").unwrap();
        }
        agent.finish(done);
        assert_eq!(decoded(&s3, &key_of(name)), b"{\"part\":1}\n");
        assert_eq!(agent.tracker.contains(&path), append, "{name}");
    }
}

/// A file removed before it was read: it is gone, which is counted and is
/// not an error, and nothing is stored; one HEAD tells whether a peer
/// agent stored it (a DEBUG line) or nobody did (a WARN).
#[tokio::test]
async fn a_file_a_peer_took_first_is_counted_gone() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = store();
    let name = "1763800000005.json";
    let mut agent = agent_with(dir.path(), &s3, &[(name, b"{\"a\":5}\n")]);
    std::fs::remove_file(dir.path().join(name)).unwrap();
    drain(&mut agent).await;
    assert_eq!(agent.summary.gone, 1, "{:?}", agent.summary);
    assert!(s3.keys().is_empty());
    assert_eq!(s3.calls(), [("HeadObject", key_of(name))]);
}

/// Shutdown while an upload waits out a long backoff: the agent stops
/// at once, counts the file unfinished, and leaves it on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_upload_leaves_the_file_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let name = "1763800000006.json";
    std::fs::write(dir.path().join(name), b"{\"a\":6}\n").unwrap();
    let s3 = store();
    s3.fail_next(100, Fault::Unavailable);
    let slow = RetryPolicy {
        min_delay: Duration::from_secs(600),
        max_delay: Duration::from_secs(600),
        permanent_delay: Duration::from_secs(600),
    };
    let watched = s3.clone();
    let stop = async move {
        while watched.calls().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let started = Instant::now();
    let summary = run(config(dir.path(), &[]), s3.clone(), slow, stop)
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        (summary.unfinished, summary.uploaded),
        (1, 0),
        "{summary:?}"
    );
    assert!(dir.path().join(name).exists());
    assert!(s3.keys().is_empty());
}

/// Four files that fail for good at concurrency 4 hold no upload slot:
/// the good files around them still flow, and the bad ones wait aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanently_failing_files_do_not_block_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &["--concurrency", "4"]);
    let s3 = store();
    for i in 0..4 {
        let name = format!("17638000001{i:02}.json");
        s3.deny(&config.keys.raw_key(&name).unwrap().key);
        std::fs::write(dir.path().join(&name), b"{\"bad\":1}\n").unwrap();
    }
    for i in 0..6 {
        std::fs::write(
            dir.path().join(format!("17638000002{i:02}.json")),
            b"{\"good\":1}\n",
        )
        .unwrap();
    }
    let policy = RetryPolicy {
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        permanent_delay: Duration::from_secs(3600),
    };
    let watched = s3.clone();
    let stop = async move {
        for _ in 0..200 {
            if watched
                .keys()
                .iter()
                .filter(|k| k.starts_with("raw/"))
                .count()
                == 6
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let summary = crate::run(config, s3.clone(), policy, stop).await.unwrap();
    let raw = s3
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("raw/"))
        .count();
    assert_eq!(raw, 6, "every good file stored");
    assert_eq!((summary.uploaded, summary.set_aside), (6, 4));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(left.len(), 4, "the set-aside files stay on disk: {left:?}");
}
