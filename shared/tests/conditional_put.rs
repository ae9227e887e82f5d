//! Conditional writes against the real S3 protocol (the local emulator): the
//! primitive that both the edge agent's uploads and the processor's markers
//! rest on.

use relay_shared::s3::{PutMode, PutOptions, Retry, S3Error};
use relay_shared::testing::Emulator;

#[tokio::test]
async fn create_twice_gives_already_exists_and_keeps_the_first() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("cond-put").await;
    let opts = PutOptions::default();

    let first = bucket
        .put(
            "raw/a/1.json.zst",
            b"first".to_vec(),
            &PutMode::Create,
            &opts,
        )
        .await
        .expect("first create succeeds");
    assert!(first.etag.is_some());

    let second = bucket
        .put(
            "raw/a/1.json.zst",
            b"second".to_vec(),
            &PutMode::Create,
            &opts,
        )
        .await
        .expect_err("second create must fail");
    assert!(
        matches!(&second, S3Error::AlreadyExists { key, .. } if key == "raw/a/1.json.zst"),
        "{second:?}"
    );
    assert_eq!(second.retry(), Retry::Permanent);
    assert_eq!(second.kind(), "already_exists");

    let (body, _) = bucket.get_bytes("raw/a/1.json.zst").await.unwrap();
    assert_eq!(body, b"first");
}

#[tokio::test]
async fn sixteen_concurrent_creates_exactly_one_wins() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("cond-race").await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let bucket = bucket.clone();
            tokio::spawn(async move {
                let body = format!("writer {i}").into_bytes();
                (
                    i,
                    bucket
                        .put("race", body, &PutMode::Create, &PutOptions::default())
                        .await,
                )
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (i, res) = t.await.unwrap();
        match res {
            Ok(_) => winners.push(i),
            // Real S3 may also answer 409 to a racing conditional write.
            Err(S3Error::AlreadyExists { .. } | S3Error::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let (body, _) = bucket.get_bytes("race").await.unwrap();
    assert_eq!(body, format!("writer {}", winners[0]).into_bytes());
}

#[tokio::test]
async fn update_needs_the_current_etag() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("cond-update").await;
    let opts = PutOptions::default();
    let v1 = bucket
        .put("lease", b"v1".to_vec(), &PutMode::Create, &opts)
        .await
        .unwrap();
    let etag1 = v1.etag.unwrap();
    let v2 = bucket
        .put(
            "lease",
            b"v2".to_vec(),
            &PutMode::Update {
                etag: etag1.clone(),
            },
            &opts,
        )
        .await
        .unwrap();
    assert_ne!(v2.etag.as_deref(), Some(etag1.as_str()));

    let stale = bucket
        .put(
            "lease",
            b"v3".to_vec(),
            &PutMode::Update { etag: etag1 },
            &opts,
        )
        .await
        .expect_err("stale etag must fail");
    assert!(matches!(stale, S3Error::Precondition { .. }), "{stale:?}");
    assert_eq!(bucket.get_bytes("lease").await.unwrap().0, b"v2");
}

#[tokio::test]
async fn missing_bucket_is_reported_as_permanent() {
    let emu = Emulator::connect().await;
    let missing = relay_shared::s3::Bucket::new(emu.s3.clone(), "no-such-bucket-relay-test");
    let err = missing
        .check_access()
        .await
        .expect_err("bucket does not exist");
    assert_eq!(err.retry(), Retry::Permanent, "{err:?}");
    assert_eq!(err.kind(), "no_such_bucket", "{err:?}");
    assert!(
        err.to_string().contains("no-such-bucket-relay-test"),
        "{err}"
    );

    let err = missing
        .put("k", b"x".to_vec(), &PutMode::Create, &PutOptions::default())
        .await
        .expect_err("put into a missing bucket fails");
    assert_eq!(err.kind(), "no_such_bucket", "{err:?}");
    assert_eq!(err.retry(), Retry::Permanent);
}
