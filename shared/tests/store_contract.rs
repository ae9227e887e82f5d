//! The object-store contract, over the in-memory store and over S3 on both
//! local implementations (moto and LocalStack): the same suite, so the fake
//! cannot drift from S3, and the adapter is held to two implementations.

#![allow(clippy::unwrap_used)]

use relay_shared::testing::{Emulator, MemStore, contract};

#[tokio::test]
async fn the_in_memory_store_keeps_the_contract() {
    contract::object_store(&MemStore::new("mem"), "t/").await;
    // As a store without conditional deletes (LocalStack) keeps it.
    let refusing = MemStore::new("mem");
    refusing.without_conditional_deletes();
    contract::object_store(&refusing, "t/").await;
}

#[tokio::test]
async fn s3_keeps_the_contract() {
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("contract").await;
    contract::object_store(&bucket, "t/").await;
}

#[tokio::test]
async fn localstack_keeps_the_contract() {
    let emu = Emulator::localstack().await;
    let bucket = emu.bucket("contract").await;
    contract::object_store(&bucket, "t/").await;
}

#[tokio::test]
async fn a_missing_bucket_is_reported_as_permanent_and_named() {
    use relay_shared::retry::Class;
    use relay_shared::s3::Bucket;
    use relay_shared::store::{ObjectStore, PutMode, PutOptions};
    let emu = Emulator::connect().await;
    let missing = Bucket::new(emu.s3.clone(), "no-such-bucket-relay-test");
    let err = missing
        .check_access()
        .await
        .expect_err("bucket does not exist");
    assert_eq!(err.class(), Class::Permanent, "{err:?}");
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
    assert_eq!(err.class(), Class::Permanent);
}

/// A versioned bucket says so, and its current versions are listed with
/// their ids, as its events name them (the module's bucket is versioned).
#[tokio::test]
async fn a_versioned_bucket_lists_current_versions_with_their_ids() {
    versioned_listing(Emulator::connect().await).await;
}

#[tokio::test]
async fn a_versioned_bucket_lists_current_versions_with_their_ids_on_localstack() {
    versioned_listing(Emulator::localstack().await).await;
}

async fn versioned_listing(emu: Emulator) {
    use relay_shared::store::{Listing, ObjectStore, PutMode, PutOptions};
    let bucket = emu.bucket("contract-versioned").await;
    emu.enable_versioning(bucket.name()).await;
    assert!(bucket.versioned().await.unwrap());
    let stored = bucket
        .put(
            "v/a",
            b"1".to_vec(),
            &PutMode::Create,
            &PutOptions::default(),
        )
        .await
        .unwrap();
    bucket.delete("v/gone", None).await.unwrap();
    let page = bucket
        .list_page("v/", None, Listing::Current, 10)
        .await
        .unwrap();
    assert_eq!(page.objects.len(), 1, "{page:?}");
    assert_eq!(page.objects[0].version_id, stored.version_id);
    assert!(page.objects[0].version_id.is_some());
}
