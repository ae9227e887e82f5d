//! Uploads over the in-memory store: single and multipart, duplicates and
//! conflicts, files that change or vanish, retries and shutdown.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use relay_shared::keys::KeyScheme;
use relay_shared::meta::{CONTENT_HASH, content_hash_hex};
use relay_shared::store::{ObjectStore, PutMode, PutOptions};

use super::compress::{REUSED, compress_whole, whole};
use super::*;
use crate::tracker::FileStat;
use relay_shared::testing::{Fault, MemStore};
use std::sync::Mutex;

/// The in-memory S3 every unit test of the upload runs against.
fn store() -> MemStore {
    MemStore::new("b")
}

fn body(s3: &MemStore, key: &str) -> Vec<u8> {
    s3.bytes(key).expect("stored")
}

fn job_for(dir: &Path, name: &str, content: &[u8]) -> Job {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    let stat = FileStat::of(&std::fs::metadata(&path).unwrap());
    let keys = KeyScheme::new("raw/", "s", relay_shared::keys::TimeFormat::Auto).unwrap();
    Job {
        path,
        rel: name.into(),
        key: keys.raw_key(name).unwrap().key,
        keys,
        stat,
        lease: None,
        meta: ObjectMeta {
            original_name: name.into(),
            original_size: content.len() as u64,
            source_id: "s".into(),
            content_hash: 0,
            canary: false,
            written_ms: 1_763_800_000_000,
        },
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        permanent_delay: Duration::from_millis(5),
    }
}

/// Pseudo-random bytes, so zstd cannot shrink them below a part.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn single_put_round_trips_and_second_is_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let content = b"# comment\n{\"a\":1}\n".repeat(100);
    let job = job_for(dir.path(), "1.json", &content);
    let s3 = store();
    let out = upload_once(&s3, &job, 3, 5 << 20).await.unwrap();
    assert!(matches!(out, Outcome::Uploaded { parts: 1, .. }), "{out:?}");
    let stored = body(&s3, &job.key);
    assert_eq!(zstd::decode_all(&stored[..]).unwrap(), content);
    assert_eq!(
        upload_once(&s3, &job, 3, 5 << 20).await.unwrap(),
        Outcome::Duplicate {
            content_hash: xxhash_rust::xxh3::xxh3_128(&content)
        }
    );
}

/// The frame's header: (content size, checksum flag).
fn frame_header(frame: &[u8]) -> (Option<u64>, bool) {
    let size = zstd::zstd_safe::get_frame_content_size(frame).unwrap();
    // Frame header descriptor, after the 4-byte magic: bit 2 is the
    // content checksum flag.
    (size, frame[4] & 0b100 != 0)
}

/// One context per thread serves file after file: each frame must
/// stand alone (nothing carried over from the previous file), record
/// its size and checksum as the streaming path does, and come with the
/// hash of exactly its content.
#[test]
fn the_kept_context_makes_frames_that_stand_alone() {
    let dir = tempfile::tempdir().unwrap();
    let contents = [
        b"# c\n{\"a\":1}\n".repeat(5000),
        Vec::new(),
        noise(70_000),
        b"# c\n{\"a\":1}\n".repeat(5000),
        b"{\"b\":2}\n".repeat(3),
    ];
    let mut frames = Vec::new();
    for (i, content) in contents.iter().enumerate() {
        // A level change on the same thread takes a new context.
        let level = if i == 3 { 19 } else { 3 };
        let job = job_for(dir.path(), &format!("{i}.json"), content);
        let file = File::open(&job.path).unwrap();
        let (frame, hash) = compress_whole(file, job.stat, level).unwrap().unwrap();
        assert_eq!(zstd::decode_all(&frame[..]).unwrap(), *content, "file {i}");
        assert_eq!(hash, xxhash_rust::xxh3::xxh3_128(content), "file {i}");
        assert_eq!(frame_header(&frame), (Some(content.len() as u64), true));
        assert_eq!(
            REUSED.with_borrow(|r| r.as_ref().map(|r| r.level)),
            Some(level)
        );
        frames.push(frame);
    }
    // The same content at the same level gives the same frame whatever
    // came before it.
    let again = job_for(dir.path(), "99.json", &contents[0]);
    let (frame, _) = compress_whole(File::open(&again.path).unwrap(), again.stat, 3)
        .unwrap()
        .unwrap();
    assert_eq!(frame, frames[0]);
}

/// A file whose size is not the one it was judged finished with is not
/// compressed from what happens to be there.
#[test]
fn a_file_of_another_size_than_judged_is_not_compressed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let job = job_for(dir.path(), "1.json", &b"{}\n".repeat(100));
    for size in [job.stat.size - 1, job.stat.size + 1] {
        let stat = FileStat { size, ..job.stat };
        let file = File::open(&job.path).unwrap();
        assert!(compress_whole(file, stat, 3).unwrap().is_none(), "{size}");
    }
}

/// Both ways of compressing a file that fits one part: whole (up to
/// WHOLE_FILE_MAX_BYTES), or streaming into a single part above it.
#[tokio::test]
async fn files_either_side_of_the_whole_file_limit_are_stored_in_one_part() {
    let dir = tempfile::tempdir().unwrap();
    let line = b"{\"id\":1,\"text\":\"some words\"}\n";
    let limit = WHOLE_FILE_MAX_BYTES as usize;
    let s3 = store();
    for (name, len) in [("1.json", limit), ("2.json", limit + 1)] {
        let content: Vec<u8> = line.iter().copied().cycle().take(len).collect();
        let job = job_for(dir.path(), name, &content);
        assert_eq!(whole(job.stat.size, 5 << 20), len == limit);
        let out = upload_once(&s3, &job, 3, 5 << 20).await.unwrap();
        assert!(matches!(out, Outcome::Uploaded { parts: 1, .. }), "{out:?}");
        let stored = body(&s3, &job.key);
        assert_eq!(zstd::decode_all(&stored[..]).unwrap(), content);
        assert_eq!(frame_header(&stored), (Some(len as u64), true));
        let meta = s3.head(&job.key).await.unwrap().unwrap().metadata;
        assert_eq!(
            meta.get(CONTENT_HASH),
            Some(&content_hash_hex(xxhash_rust::xxh3::xxh3_128(&content)))
        );
    }
    // Never whole when the frame might not fit one part.
    assert!(!whole(1 << 20, 1 << 20));
}

/// Every object carries its file's last write and a trace context, the
/// same for the same file, whether stored whole or in parts, and another
/// for the same bytes under another name.
#[tokio::test]
async fn objects_carry_the_files_last_write_and_one_trace_per_file() {
    use relay_shared::meta::{TRACEPARENT, WRITTEN_MS};
    use relay_shared::trace::TraceContext;
    let dir = tempfile::tempdir().unwrap();
    let s3 = store();
    let content = noise(3 << 20);
    let mut traces = Vec::new();
    for (name, part_bytes) in [("1.json", 5 << 20), ("2.json", 1 << 20)] {
        let job = job_for(dir.path(), name, &content);
        let out = upload_once(&s3, &job, 3, part_bytes).await.unwrap();
        assert!(matches!(out, Outcome::Uploaded { .. }), "{out:?}");
        let meta = s3.head(&job.key).await.unwrap().unwrap().metadata;
        assert_eq!(meta[WRITTEN_MS], "1763800000000");
        let trace = TraceContext::parse(&meta[TRACEPARENT]).expect("a valid traceparent");
        let mut hashed = job.meta.clone();
        hashed.content_hash = xxhash_rust::xxh3::xxh3_128(&content);
        assert_eq!(
            trace,
            hashed.trace(&job.key),
            "derived from key and content"
        );
        traces.push(trace.trace_id);
    }
    assert_ne!(traces[0], traces[1]);
}

#[tokio::test]
async fn large_files_go_multipart_and_decode_whole() {
    let dir = tempfile::tempdir().unwrap();
    let content = noise(2_500_000);
    let job = job_for(dir.path(), "2.json", &content);
    let s3 = store();
    // A tiny part size, to exercise several parts without megabytes of data.
    let out = upload_once(&s3, &job, 3, 1_000_000).await.unwrap();
    assert!(matches!(out, Outcome::Uploaded { parts: 3, .. }), "{out:?}");
    let stored = body(&s3, &job.key);
    assert_eq!(zstd::decode_all(&stored[..]).unwrap(), content);

    // A second multipart upload of the same key completes as a duplicate
    // and its parts are aborted.
    assert_eq!(
        upload_once(&s3, &job, 3, 1_000_000).await.unwrap(),
        Outcome::Duplicate {
            content_hash: xxhash_rust::xxh3::xxh3_128(&content)
        }
    );
    let aborted = s3
        .calls()
        .iter()
        .filter(|(op, _)| *op == "AbortMultipartUpload")
        .count();
    assert_eq!(aborted, 1);
    assert_eq!(s3.open_uploads(), 0);
}

/// A file that shrinks or grows while its parts are read fails the read
/// (zstd was pledged its size): that is a changed file, waited for again,
/// not an unreadable one set aside with a permissions hint. Nothing is
/// stored, and the multipart upload is aborted.
#[tokio::test]
async fn a_file_changed_while_its_parts_are_read_is_changed_not_unreadable() {
    for (what, change) in [("shrinks", 1_200_000usize), ("grows", 4_000_000)] {
        let dir = tempfile::tempdir().unwrap();
        let content = noise(2_500_000);
        let job = job_for(dir.path(), "2.json", &content);
        let s3 = store();
        let path = job.path.clone();
        s3.meanwhile("UploadPart", "", move |_| {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(change as u64).unwrap();
        });
        let out = upload_once(&s3, &job, 3, 1_000_000).await;
        assert!(matches!(out, Ok(Outcome::Changed)), "{what}: {out:?}");
        assert!(s3.bytes(&job.key).is_none(), "{what}: nothing stored");
        assert_eq!(s3.open_uploads(), 0, "{what}: the upload is aborted");
    }
}

#[tokio::test]
async fn changed_and_vanished_files_are_not_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let job = job_for(dir.path(), "3.json", b"{\"a\":1}\n");
    std::fs::write(&job.path, b"{\"a\":1}\n{\"b\":2}\n").unwrap();
    let s3 = store();
    assert_eq!(
        upload_once(&s3, &job, 3, 5 << 20).await.unwrap(),
        Outcome::Changed
    );
    std::fs::remove_file(&job.path).unwrap();
    assert_eq!(
        upload_once(&s3, &job, 3, 5 << 20).await.unwrap(),
        Outcome::Gone { in_s3: false }
    );
    assert!(s3.keys().is_empty());
    // Removed by a peer agent once it had stored the file: told apart.
    s3.insert(&job.key, b"stored by a peer");
    assert_eq!(
        upload_once(&s3, &job, 3, 5 << 20).await.unwrap(),
        Outcome::Gone { in_s3: true }
    );
}

/// A shutdown signal that never fires.
fn running() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    std::mem::forget(tx);
    rx
}

#[tokio::test]
async fn shutdown_ends_a_backoff_at_once_and_leaves_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let job = job_for(dir.path(), "1763800000009.json", b"{\"a\":9}\n");
    let s3 = store();
    s3.fail_next(1, Fault::Throttle);
    let slow = RetryPolicy {
        min_delay: Duration::from_secs(600),
        max_delay: Duration::from_secs(600),
        permanent_delay: Duration::from_secs(600),
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let started = std::time::Instant::now();
    let upload = upload_with_retry(&s3, &job, 3, 5 << 20, &slow, stopping, |_, _, _| {});
    let (out, _) = tokio::join!(upload, async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send_replace(true);
    })
    .0;
    assert!(matches!(out, Outcome::Interrupted), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited out the backoff"
    );
    assert!(job.path.exists(), "the file stays for the next start");
    assert!(s3.keys().is_empty());
}

#[tokio::test]
async fn transient_errors_are_retried_and_permanent_ones_set_the_file_aside() {
    let dir = tempfile::tempdir().unwrap();
    let job = job_for(dir.path(), "1763800000004.json", b"{\"a\":1}\n");
    let s3 = store();
    s3.fail_next(2, Fault::Throttle);
    let seen = Mutex::new(Vec::new());
    let (out, retries) = upload_with_retry(&s3, &job, 3, 5 << 20, &fast(), running(), |e, _, _| {
        seen.lock().unwrap().push(e.kind());
    })
    .await;
    assert!(matches!(out, Outcome::Uploaded { .. }));
    assert_eq!(retries, 2);
    assert_eq!(*seen.lock().unwrap(), ["throttled", "throttled"]);
    assert!(s3.bytes(&job.key).is_some());

    // A permanent error returns at once, so the upload slot is freed.
    let job = job_for(dir.path(), "1763800000005.json", b"{\"a\":2}\n");
    s3.fail_next(1, Fault::Denied);
    let (out, retries) =
        upload_with_retry(&s3, &job, 3, 5 << 20, &fast(), running(), |_, _, _| {}).await;
    assert!(
        matches!(
            out,
            Outcome::Failed {
                kind: "access_denied",
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(retries, 0);
}

/// A name used again with other bytes: the 412 is not taken for success.
/// The new bytes go to a conflict key next to the first, and the same
/// bytes offered again are a verified duplicate of that conflict copy.
#[tokio::test]
async fn a_name_used_again_with_other_bytes_goes_to_a_conflict_key() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = store();
    let first = job_for(dir.path(), "1763800000006.json", b"{\"v\":1}\n");
    assert!(matches!(
        upload_once(&s3, &first, 3, 5 << 20).await.unwrap(),
        Outcome::Uploaded { .. }
    ));
    let second = job_for(dir.path(), "1763800000006.json", b"{\"v\":2}\n{\"v\":3}\n");
    let Outcome::Conflict { key, .. } = upload_once(&s3, &second, 3, 5 << 20).await.unwrap() else {
        panic!()
    };
    assert!(
        key.starts_with("raw/s/2025/11/22/08/1763800000006.") && key.ends_with(".json.zst"),
        "{key}"
    );
    assert_ne!(key, first.key);
    assert_eq!(
        zstd::decode_all(&body(&s3, &first.key)[..]).unwrap(),
        b"{\"v\":1}\n"
    );
    assert_eq!(
        zstd::decode_all(&body(&s3, &key)[..]).unwrap(),
        b"{\"v\":2}\n{\"v\":3}\n"
    );
    // After a crash, the same bytes again: verified against the conflict copy.
    assert_eq!(
        upload_once(&s3, &second, 3, 5 << 20).await.unwrap(),
        Outcome::Conflict {
            key,
            compressed_bytes: 0,
            content_hash: xxhash_rust::xxh3::xxh3_128(b"{\"v\":2}\n{\"v\":3}\n")
        }
    );
    assert_eq!(s3.keys().len(), 2);
    // And the first file's bytes again: a plain duplicate.
    std::fs::write(&first.path, b"{\"v\":1}\n").unwrap();
    let first = job_for(dir.path(), "1763800000006.json", b"{\"v\":1}\n");
    assert_eq!(
        upload_once(&s3, &first, 3, 5 << 20).await.unwrap(),
        Outcome::Duplicate {
            content_hash: xxhash_rust::xxh3::xxh3_128(b"{\"v\":1}\n")
        }
    );
}

#[tokio::test]
async fn an_object_without_a_content_hash_is_not_taken_for_proof() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = store();
    let job = job_for(dir.path(), "1763800000007.json", b"{\"v\":1}\n");
    s3.put(
        &job.key,
        b"old".to_vec(),
        &PutMode::Create,
        &PutOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        upload_once(&s3, &job, 3, 5 << 20).await.unwrap(),
        Outcome::Unverified
    );
}

#[tokio::test]
async fn symlinks_and_fifos_are_never_opened() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = store();
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(outside.path(), b"{\"secret\":1}\n").unwrap();
    let mut job = job_for(dir.path(), "1763800000008.json", b"x");
    std::fs::remove_file(&job.path).unwrap();
    std::os::unix::fs::symlink(outside.path(), &job.path).unwrap();
    job.stat = FileStat::of(&std::fs::metadata(&job.path).unwrap());
    assert_eq!(
        upload_once(&s3, &job, 3, 5 << 20).await.unwrap(),
        Outcome::NotRegular
    );

    let fifo = dir.path().join("1763800000009.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    job.path = fifo;
    // Opening a FIFO for reading would block until a writer came; here
    // it returns at once.
    let out =
        tokio::time::timeout(Duration::from_secs(5), upload_once(&s3, &job, 3, 5 << 20)).await;
    assert_eq!(out.unwrap().unwrap(), Outcome::NotRegular);
    assert!(s3.keys().is_empty());
}
