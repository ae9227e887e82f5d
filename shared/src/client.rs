//! AWS client construction, done once here so every binary and test agrees on
//! endpoints, addressing and timeouts. How a failure is retried is
//! [`crate::retry`]'s.
//!
//! Endpoints follow the SDK's own conventions (`AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_S3`, ...), which aws-config reads. The relay adds one
//! switch, `RELAY_S3_PATH_STYLE=true`, because S3 emulators on 127.0.0.1
//! cannot serve virtual-hosted bucket names.

use std::time::Duration;

use aws_config::BehaviorVersion;
/// Re-exported, so the binaries need no dependency on aws-config.
pub use aws_config::SdkConfig;
use aws_config::timeout::{TimeoutConfig, TimeoutConfigBuilder};

use crate::attempts::RetryCounter;

/// The environment variable that forces path-style S3 addressing.
pub const S3_PATH_STYLE_ENV: &str = "RELAY_S3_PATH_STYLE";

/// Options every binary exposes for its AWS clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// Address buckets as `endpoint/bucket/key` instead of `bucket.endpoint/key`.
    pub s3_path_style: bool,
}

/// Loads region, credentials and endpoints from the standard AWS sources.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// How long one AWS call may take, so that a silent connection fails and
/// is retried instead of holding its work until TCP gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// One HTTP attempt, up to the response's headers (a download's body is
    /// guarded by the SDK's stalled-stream protection instead).
    pub attempt: Duration,
    /// The whole call, the SDK's own retries included.
    pub operation: Duration,
}

/// Applies `timeouts` on top of the SDK's own timeout settings (which keep
/// their connect timeout).
pub fn with_timeouts(sdk: &SdkConfig, timeouts: Timeouts) -> SdkConfig {
    with_timeout_config(sdk, |b| {
        b.operation_attempt_timeout(timeouts.attempt)
            .operation_timeout(timeouts.operation)
    })
}

/// Limits each HTTP attempt only, for a caller that retries whole calls on
/// its own schedule (the edge agent, which never gives up on a file).
pub fn with_attempt_timeout(sdk: &SdkConfig, attempt: Duration) -> SdkConfig {
    with_timeout_config(sdk, |b| b.operation_attempt_timeout(attempt))
}

/// `sdk` making one attempt per call, for a caller that retries every call
/// itself, without limit: each failed attempt then reaches it (to be
/// logged, counted and backed off at once) instead of hiding behind the
/// SDK's two more, up to three attempt timeouts long in a black hole.
pub fn with_single_attempt(sdk: &SdkConfig) -> SdkConfig {
    sdk.to_builder()
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .build()
}

/// `sdk` with its timeout settings (or the defaults) changed by `set`.
fn with_timeout_config(
    sdk: &SdkConfig,
    set: impl FnOnce(TimeoutConfigBuilder) -> TimeoutConfigBuilder,
) -> SdkConfig {
    let base = sdk
        .timeout_config()
        .cloned()
        .unwrap_or_else(|| TimeoutConfig::builder().build());
    sdk.to_builder()
        .timeout_config(set(base.to_builder()).build())
        .build()
}

/// An S3 client whose every retried request is counted
/// ([`crate::attempts`]).
pub fn s3_client(sdk: &SdkConfig, options: ClientOptions) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(options.s3_path_style)
        .interceptor(RetryCounter)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// An SQS client whose every retried request is counted.
pub fn sqs_client(sdk: &SdkConfig) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::config::Builder::from(sdk)
        .interceptor(RetryCounter)
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

/// One line for an AWS SDK error, as an operator should read it: the
/// service's code and message (`NoSuchBucket: The specified bucket does not
/// exist`), or for a request that never got an answer, what went wrong on
/// the way (`dispatch failure: io error: ... Connection refused`). Never the
/// SDK's `Debug` dump of its error metadata.
pub fn describe<E, R>(err: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
    match (err, err.code(), err.message()) {
        (_, Some(code), Some(message)) => format!("{code}: {message}"),
        (_, Some(code), None) => code.to_owned(),
        (SdkError::TimeoutError(_), _, _) => "timed out waiting for an answer".to_owned(),
        _ => {
            let mut out = err.to_string();
            let mut cur = std::error::Error::source(err);
            while let Some(e) = cur {
                out.push_str(": ");
                out.push_str(&e.to_string());
                cur = e.source();
            }
            out
        }
    }
}
