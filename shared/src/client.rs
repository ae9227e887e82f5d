//! AWS client construction, done once here so every binary and test agrees on
//! endpoints, addressing and retries.
//!
//! Endpoints follow the SDK's own conventions (`AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_S3`, ...), which aws-config reads. The relay adds one
//! switch, `RELAY_S3_PATH_STYLE=true`, because S3 emulators on 127.0.0.1
//! cannot serve virtual-hosted bucket names.

use aws_config::{BehaviorVersion, SdkConfig};

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

pub fn s3_client(sdk: &SdkConfig, options: ClientOptions) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(options.s3_path_style)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

pub fn sqs_client(sdk: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(sdk)
}
