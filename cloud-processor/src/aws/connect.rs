//! The processor with its clients, built once for the long-running modes
//! (Lambda and `poll`): S3 with timeouts that fit inside the lease, and the
//! output and canary queues with their limits read, waited for as
//! [`Startup`] says.

use relay_shared::client::{ClientOptions, SdkConfig, load_sdk_config, with_timeouts};
use relay_shared::s3::Bucket;

use super::output_queue::SqsOutput;
use super::ssm::{SsmError, read_keys};
use super::startup::{Startup, StartupError};
use crate::cli::{Aws, Config, ConfigError, timeout_warning};
use crate::object::Processor;
use crate::output::{MessageSink, QueueError};

/// Why the processor could not be built with its clients.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Queue(Box<StartupError<QueueError>>),
    #[error(transparent)]
    Key(Box<StartupError<SsmError>>),
}

impl From<StartupError<SsmError>> for ConnectError {
    fn from(e: StartupError<SsmError>) -> Self {
        Self::Key(Box::new(e))
    }
}

impl From<StartupError<QueueError>> for ConnectError {
    fn from(e: StartupError<QueueError>) -> Self {
        Self::Queue(Box::new(e))
    }
}

/// The processor as it runs on AWS: objects in S3, chunks to SQS.
pub type AwsProcessor = Processor<Bucket, SqsOutput>;

/// The processor with its clients, built once: S3 with timeouts that fit
/// inside the lease, and the output queue with its limits read.
pub async fn connect(
    config: Config,
    aws: Aws,
    startup: &Startup,
) -> Result<(AwsProcessor, SdkConfig), ConnectError> {
    let protocol = aws.protocol(&config.raw_prefix)?;
    let mut settings = config.summary();
    settings.extend(aws.summary());
    relay_shared::telemetry::log_start("cloud-processor", &settings);
    if let Some(warning) = timeout_warning(&aws) {
        tracing::warn!("{warning}");
    }
    let sdk = with_timeouts(
        &load_sdk_config().await,
        aws.timeouts.resolve(Some(aws.lease_ttl_secs)),
    );
    let config = read_keys(config, &sdk, startup).await?;
    // Objects are read from the bucket each event names.
    let store = Bucket::connect(
        &sdk,
        ClientOptions {
            s3_path_style: aws.s3_path_style,
        },
        "",
    );
    let output = startup
        .wait_for("SQS", "reading the output queue's attributes", || {
            SqsOutput::open(
                &sdk,
                &aws.output_queue_url,
                &aws.fifo_group_id,
                aws.max_message_bytes,
            )
        })
        .await?;
    tracing::info!(queue = %output.queue_url(), max_message_bytes = output.max_message_bytes(), fifo = output.is_fifo(), "output queue");
    let mut app = Processor::new(config, protocol, store, output);
    if let Some(url) = aws.canary_queue_url.as_deref().filter(|u| !u.is_empty()) {
        let canary = startup
            .wait_for("SQS", "reading the canary queue's attributes", || {
                SqsOutput::open(&sdk, url, &aws.fifo_group_id, None)
            })
            .await?;
        tracing::info!(queue = %canary.queue_url(), "canary queue");
        app = app.with_canary_queue(canary);
    }
    Ok((app, sdk))
}
