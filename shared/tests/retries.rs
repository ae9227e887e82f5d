//! Every retried AWS request is counted, the SDK's own attempts included:
//! an S3 client built by `relay_shared::client` against a server that
//! answers the first request `503 SlowDown` and the second `500
//! InternalError` before it succeeds shows two retries, by cause.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use relay_shared::client::{ClientOptions, s3_client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers each request on loopback with the next of `answers`, then with
/// the last one forever.
async fn serve(answers: Vec<(u16, &'static str)>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            let (status, body) = answers[n.min(answers.len() - 1)];
            n += 1;
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => request.extend_from_slice(&buf[..k]),
                }
            }
            let answer = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn the_sdks_own_retries_are_counted_by_cause() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();
    let ok = "<ListAllMyBucketsResult><Buckets></Buckets></ListAllMyBucketsResult>";
    let endpoint = serve(vec![
        (503, "<Error><Code>SlowDown</Code><Message>Reduce your request rate</Message></Error>"),
        (500, "<Error><Code>InternalError</Code><Message>We encountered an internal error</Message></Error>"),
        (200, ok),
    ])
    .await;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "t", "t", None, None, "test",
        ))
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1)),
        )
        .load()
        .await;
    let s3 = s3_client(
        &sdk,
        ClientOptions {
            s3_path_style: true,
        },
    );
    s3.list_buckets()
        .send()
        .await
        .expect("the third attempt succeeds");
    let page = handle.render();
    let line = |cause: &str| {
        page.lines()
            .find(|l| {
                l.starts_with("relay_aws_retries_total")
                    && l.contains(&format!("cause=\"{cause}\""))
            })
            .unwrap_or_else(|| panic!("no {cause} retry counted:\n{page}"))
            .to_owned()
    };
    for cause in ["throttled", "server_error"] {
        let l = line(cause);
        assert!(
            l.contains("service=\"s3\"")
                && l.contains("operation=\"ListBuckets\"")
                && l.ends_with(" 1"),
            "{l}"
        );
    }
}
