//! The [`ObjectStore`] contract: one suite, run over the in-memory store in
//! unit tests and over S3 on the emulator, so the fake every orchestration
//! test relies on cannot drift from the real thing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A test suite: failing is its job.

use std::collections::HashMap;

use tokio::io::AsyncReadExt;

use crate::retry::Class;
use crate::store::{Children, Listing, ObjectStore, PutMode, PutOptions, S3Error};

fn options(tag: &str) -> PutOptions {
    PutOptions {
        content_type: Some("application/json".into()),
        content_encoding: Some("zstd".into()),
        metadata: HashMap::from([("tag".to_owned(), tag.to_owned())]),
    }
}

/// Runs every part of the contract with keys under `prefix`, which must be
/// fresh for each run.
pub async fn object_store<S: ObjectStore>(store: &S, prefix: &str) {
    conditional_writes(store, prefix).await;
    reads(store, prefix).await;
    deletes(store, prefix).await;
    listing(store, prefix).await;
    multipart(store, prefix).await;
    racing_creates(store, prefix).await;
}

/// Create once only; update only over the ETag it names.
pub async fn conditional_writes<S: ObjectStore>(store: &S, prefix: &str) {
    let key = format!("{prefix}cw/lease");
    let none = PutOptions::default();
    let first = store
        .put(&key, b"1".to_vec(), &PutMode::Create, &none)
        .await
        .unwrap();
    let first = first.etag.expect("a put returns its ETag");
    match store
        .put(&key, b"2".to_vec(), &PutMode::Create, &none)
        .await
    {
        Err(e @ S3Error::AlreadyExists { .. }) => {
            assert_eq!((e.kind(), e.class()), ("already_exists", Class::Permanent));
            let S3Error::AlreadyExists { bucket, key: k } = e else {
                unreachable!()
            };
            assert_eq!((bucket.as_str(), k.as_str()), (store.name(), key.as_str()));
        }
        other => panic!("a second create must be AlreadyExists, got {other:?}"),
    }
    assert_eq!(store.get_small(&key).await.unwrap().bytes, b"1");

    let update = |etag: &str| PutMode::Update {
        etag: etag.to_owned(),
    };
    let second = store
        .put(&key, b"2".to_vec(), &update(&first), &none)
        .await
        .unwrap()
        .etag
        .unwrap();
    assert_ne!(second, first, "a new ETag per write");
    assert!(matches!(
        store.put(&key, b"3".to_vec(), &update(&first), &none).await,
        Err(S3Error::Precondition { .. })
    ));
    assert_eq!(store.get_small(&key).await.unwrap().bytes, b"2");
    assert!(
        matches!(
            store
                .put(
                    &format!("{prefix}cw/none"),
                    b"x".to_vec(),
                    &update(&first),
                    &none
                )
                .await,
            Err(S3Error::Precondition { .. } | S3Error::NotFound { .. })
        ),
        "an update of a missing key fails"
    );
    store
        .put(&key, b"4".to_vec(), &PutMode::Overwrite, &none)
        .await
        .unwrap();
    assert_eq!(store.get_small(&key).await.unwrap().bytes, b"4");
}

/// Reads give back the bytes, ETag, metadata and S3's times.
pub async fn reads<S: ObjectStore>(store: &S, prefix: &str) {
    let key = format!("{prefix}read/a b+c.json.zst");
    assert!(matches!(
        store.get_small(&key).await,
        Err(S3Error::NotFound { .. })
    ));
    assert!(matches!(
        store.get(&key, None).await,
        Err(S3Error::NotFound { .. })
    ));
    assert_eq!(store.head(&key).await.unwrap(), None);

    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let put = store
        .put(&key, body.clone(), &PutMode::Create, &options("r"))
        .await
        .unwrap();

    let small = store.get_small(&key).await.unwrap();
    assert_eq!(small.bytes, body);
    assert_eq!(small.etag, put.etag);
    let (written, now) = (
        small.last_modified_ms.expect("Last-Modified"),
        small.server_now_ms.expect("the Date of the answer"),
    );
    assert!(
        now + 1000 >= written,
        "one clock: written {written}, now {now}"
    );

    let mut got = store.get(&key, None).await.unwrap();
    let mut streamed = Vec::new();
    got.body.read_to_end(&mut streamed).await.unwrap();
    assert_eq!(streamed, body);
    assert_eq!(got.head.etag, put.etag);
    assert_eq!(got.head.metadata.get("tag").map(String::as_str), Some("r"));
    assert_eq!(got.head.content_encoding.as_deref(), Some("zstd"));

    let head = store.head(&key).await.unwrap().expect("present");
    assert_eq!(head.size, body.len() as u64);
    assert_eq!(head.etag, put.etag);
    assert_eq!(head.metadata.get("tag").map(String::as_str), Some("r"));
    assert_eq!(
        (
            head.content_type.as_deref(),
            head.content_encoding.as_deref()
        ),
        (Some("application/json"), Some("zstd"))
    );
}

/// Deletes, with `If-Match` only the object they name, or, on a store that
/// does not support conditional deletes (LocalStack), refused as
/// [`S3Error::Unsupported`] without deleting anything: never a silent
/// unconditional delete.
pub async fn deletes<S: ObjectStore>(store: &S, prefix: &str) {
    let key = format!("{prefix}del/lease");
    let none = PutOptions::default();
    let first = store
        .put(&key, b"1".to_vec(), &PutMode::Create, &none)
        .await
        .unwrap()
        .etag
        .unwrap();
    let second = store
        .put(&key, b"2".to_vec(), &PutMode::Overwrite, &none)
        .await
        .unwrap()
        .etag
        .unwrap();
    let refused = store.delete(&key, Some(&first)).await;
    assert!(
        matches!(
            refused,
            Err(S3Error::Precondition { .. } | S3Error::Unsupported { .. })
        ),
        "{refused:?}"
    );
    assert!(
        store.head(&key).await.unwrap().is_some(),
        "a refused delete deletes nothing"
    );
    if matches!(refused, Err(S3Error::Unsupported { .. })) {
        assert!(matches!(
            store.delete(&key, Some(&second)).await,
            Err(S3Error::Unsupported { .. })
        ));
        store.delete(&key, None).await.unwrap();
        assert_eq!(store.head(&key).await.unwrap(), None);
        return;
    }
    store.delete(&key, Some(&second)).await.unwrap();
    assert_eq!(store.head(&key).await.unwrap(), None);
    store.delete(&key, None).await.unwrap();
    assert!(matches!(
        store.delete(&key, Some(&second)).await,
        Ok(()) | Err(S3Error::NotFound { .. })
    ));
    store
        .put(&key, b"3".to_vec(), &PutMode::Create, &none)
        .await
        .expect("a key can be created again after its delete");
}

/// Listing: in key order, under the prefix only, up to the limit, across pages.
pub async fn listing<S: ObjectStore>(store: &S, prefix: &str) {
    let base = format!("{prefix}list/");
    let none = PutOptions::default();
    let mut keys: Vec<String> = (0..7).map(|i| format!("{base}k{}", 6 - i)).collect();
    for (i, k) in keys.iter().enumerate() {
        store
            .put(k, vec![b'x'; i], &PutMode::Create, &none)
            .await
            .unwrap();
    }
    store
        .put(
            &format!("{prefix}listx"),
            b"no".to_vec(),
            &PutMode::Create,
            &none,
        )
        .await
        .unwrap();
    keys.sort();
    let all = store.list(&base, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|l| l.key.clone()).collect::<Vec<_>>(),
        keys,
        "every key under the prefix, in order, and no other"
    );
    assert_eq!(all[0].size, 6, "k0 was written with 6 bytes");
    let some = store.list(&base, 3).await.unwrap();
    assert_eq!(some.len(), 3);
    assert_eq!(some[2].key, keys[2]);
    assert!(
        store
            .list(&format!("{prefix}nothing/"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Page by page: every key once, in order, in either listing (in an
    // unversioned bucket every object is current).
    for listing in [Listing::Plain, Listing::Current] {
        let (mut seen, mut after, mut pages) = (Vec::new(), None, 0);
        loop {
            let page = store
                .list_page(&base, after.as_deref(), listing, 3)
                .await
                .unwrap();
            pages += 1;
            assert!(page.objects.len() <= 3, "{listing:?}: {page:?}");
            seen.extend(page.objects.into_iter().map(|o| o.key));
            match page.next_after {
                Some(a) => after = Some(a),
                None => break,
            }
        }
        assert_eq!(seen, keys, "{listing:?}");
        assert!(pages >= 3, "{listing:?}: {pages} pages");
    }
    let rest = store
        .list_page(&base, Some(&keys[3]), Listing::Plain, 100)
        .await
        .unwrap();
    let rest_keys: Vec<String> = rest.objects.into_iter().map(|o| o.key).collect();
    assert_eq!((&rest_keys[..], rest.next_after), (&keys[4..], None));
    assert!(
        !store.versioned().await.unwrap(),
        "a fresh bucket keeps no versions"
    );
    // A prefix's children: its sub-prefixes, and objects directly under it.
    let tree = format!("{prefix}tree/");
    for k in ["a/1", "a/2", "b/c/3", "top"] {
        store
            .put(
                &format!("{tree}{k}"),
                b"t".to_vec(),
                &PutMode::Create,
                &none,
            )
            .await
            .unwrap();
    }
    let children = store.list_children(&tree).await.unwrap();
    assert_eq!(
        children,
        Children {
            prefixes: vec![format!("{tree}a/"), format!("{tree}b/")],
            objects: 1,
            complete: true,
        }
    );
}

/// Multipart: parts joined in order, metadata kept, `If-None-Match` on completion.
pub async fn multipart<S: ObjectStore>(store: &S, prefix: &str) {
    let key = format!("{prefix}mp/big.json.zst");
    // S3 wants every part but the last to hold at least 5 MiB.
    let a = vec![b'a'; 5 << 20];
    let b = b"tail".to_vec();
    let id = store.start_multipart(&key, &options("m")).await.unwrap();
    let p2 = store.put_part(&key, &id, 2, b.clone()).await.unwrap();
    let p1 = store.put_part(&key, &id, 1, a.clone()).await.unwrap();
    assert_eq!(
        store.head(&key).await.unwrap(),
        None,
        "nothing is visible before completion"
    );
    store
        .complete_multipart(&key, &id, vec![p1, p2], &PutMode::Create)
        .await
        .unwrap();
    let got = store.get_small(&key).await.unwrap();
    assert_eq!(got.bytes.len(), a.len() + b.len());
    assert!(got.bytes.ends_with(b"tail") && got.bytes.starts_with(b"aaaa"));
    let head = store.head(&key).await.unwrap().unwrap();
    assert_eq!(head.metadata.get("tag").map(String::as_str), Some("m"));

    // A second upload to the same key cannot complete over it.
    let id2 = store.start_multipart(&key, &options("m2")).await.unwrap();
    let q1 = store
        .put_part(&key, &id2, 1, b"other".to_vec())
        .await
        .unwrap();
    assert!(matches!(
        store
            .complete_multipart(&key, &id2, vec![q1], &PutMode::Create)
            .await,
        Err(S3Error::AlreadyExists { .. })
    ));
    store.abort_multipart(&key, &id2).await.unwrap();
    assert_eq!(
        store.get_small(&key).await.unwrap().bytes.len(),
        a.len() + b.len(),
        "the first object is untouched"
    );

    // An aborted upload cannot be completed.
    let id3 = store
        .start_multipart(&format!("{key}.3"), &options("m3"))
        .await
        .unwrap();
    let r1 = store
        .put_part(&format!("{key}.3"), &id3, 1, b"x".to_vec())
        .await
        .unwrap();
    store
        .abort_multipart(&format!("{key}.3"), &id3)
        .await
        .unwrap();
    assert!(
        store
            .complete_multipart(&format!("{key}.3"), &id3, vec![r1], &PutMode::Create)
            .await
            .is_err()
    );
    assert_eq!(store.head(&format!("{key}.3")).await.unwrap(), None);
}

/// Concurrent creates of one key: exactly one wins; every other gets a 412
/// (`AlreadyExists`) or a 409 (`Conflict`), never a second success.
pub async fn racing_creates<S: ObjectStore>(store: &S, prefix: &str) {
    let key = format!("{prefix}race/k");
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                store
                    .put(&key, vec![i], &PutMode::Create, &PutOptions::default())
                    .await
                    .map(|_| i)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(i) => winners.push(i),
            Err(S3Error::AlreadyExists { .. } | S3Error::Conflict { .. }) => {}
            Err(e) => panic!("a racing create failed otherwise: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create wins: {winners:?}");
    assert_eq!(store.get_small(&key).await.unwrap().bytes, vec![winners[0]]);
}
