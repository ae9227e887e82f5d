//! The benchmark's keep-alive S3 stand-in answers an agent's calls as S3
//! would, through the real SDK, so the numbers measured against it are the
//! agent's real request path.

use std::sync::atomic::Ordering;

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{Credentials, Region};
use relay_shared::client::ClientOptions;
use relay_shared::store::{ObjectStore, PutMode, PutOptions, S3Error};
use relay_shared::testing::SinkS3;

#[tokio::test]
async fn the_keep_alive_sink_answers_an_agents_calls() {
    let sink = SinkS3::start().await;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(sink.endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("t", "t", None, None, "test"))
        .load()
        .await;
    let bucket = relay_shared::s3::Bucket::connect(
        &sdk,
        ClientOptions {
            s3_path_style: true,
        },
        "b",
    );
    let none = PutOptions::default();
    bucket
        .put("raw/k", vec![7; 1000], &PutMode::Create, &none)
        .await
        .unwrap();
    assert!(matches!(
        bucket
            .put("raw/k", vec![7; 1000], &PutMode::Create, &none)
            .await,
        Err(S3Error::AlreadyExists { .. })
    ));
    let id = bucket.start_multipart("raw/m", &none).await.unwrap();
    let part = bucket.put_part("raw/m", &id, 1, vec![1; 10]).await.unwrap();
    bucket
        .complete_multipart("raw/m", &id, vec![part], &PutMode::Create)
        .await
        .unwrap();
    bucket.abort_multipart("raw/p", &id).await.unwrap();
    assert_eq!(bucket.head("raw/x").await.unwrap(), None);
    assert_eq!(sink.counts.objects.load(Ordering::Relaxed), 2);
    assert!(sink.counts.bytes.load(Ordering::Relaxed) >= 1010);
}
