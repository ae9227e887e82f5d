//! A bucket with an attempt budget gives each upload its own attempt
//! timeout, sized to its body: against an endpoint that reads requests
//! and never answers, a small put fails at the budget's base, not at the
//! client's much longer attempt timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use relay_shared::client::{ClientOptions, s3_client, with_attempt_timeout};
use relay_shared::s3::{AttemptBudget, Bucket};
use relay_shared::store::{ObjectStore, PutMode, PutOptions};
use tokio::io::AsyncReadExt;

/// Accepts connections and reads them, never answering.
async fn silent() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    format!("http://{addr}")
}

async fn bucket(endpoint: &str) -> Bucket {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "t", "t", None, None, "test",
        ))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .load()
        .await;
    // The client's own attempt timeout: far longer than the test waits.
    let sdk = with_attempt_timeout(&sdk, Duration::from_secs(600));
    Bucket::new(
        s3_client(
            &sdk,
            ClientOptions {
                s3_path_style: true,
            },
        ),
        "b",
    )
}

#[tokio::test]
async fn a_small_put_to_a_silent_endpoint_fails_at_the_budget() {
    let bucket = bucket(&silent().await)
        .await
        .with_attempt_budget(AttemptBudget {
            base: Duration::from_secs(1),
            bytes_per_sec: 64 * 1024,
        });
    let options = PutOptions::default();
    let put = bucket.put("k", vec![7u8; 1000], &PutMode::Create, &options);
    let answer = tokio::time::timeout(Duration::from_secs(60), put)
        .await
        .expect("the put ends at its budget, not the client's 600 s");
    let error = answer.expect_err("nothing answers");
    assert!(
        format!("{error:#}").contains("timeout") || format!("{error:?}").contains("Timeout"),
        "{error:?}"
    );
}
