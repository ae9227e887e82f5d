//! The two long-running modes: the Lambda runtime loop and `poll`, each
//! over one [`App`] whose clients are built once here.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use relay_shared::client::{ClientOptions, SdkConfig, load_sdk_config, with_timeouts};

use crate::cli::{Aws, Config, ConfigError, timeout_warning};
use crate::ingest::sqs::Notifications;
use crate::object::App;
use crate::output::sink::MessageSink;
use crate::output::sqs::Output;
use crate::sqs::SqsError;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading the output queue's attributes: {0}")]
    Output(SqsError),
    #[error("installing the metrics recorder: {0}")]
    Metrics(String),
    #[error("RELAY_METRICS_ADDR {0:?} is not an address such as 0.0.0.0:9898 (or `off`)")]
    MetricsAddr(String),
    #[error("the Lambda runtime stopped: {0}")]
    Runtime(String),
}

/// The processor with its clients, built once: S3 with timeouts that fit
/// inside the lease, and the output queue with its limits read.
pub async fn connect(config: Config, aws: Aws) -> Result<(App, SdkConfig), ServeError> {
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
    // Objects are read from the bucket each event names.
    let store = relay_shared::s3::Bucket::connect(
        &sdk,
        ClientOptions {
            s3_path_style: aws.s3_path_style,
        },
        "",
    );
    let output = Output::open(
        &sdk,
        &aws.output_queue_url,
        &aws.fifo_group_id,
        aws.max_message_bytes,
    )
    .await
    .map_err(ServeError::Output)?;
    tracing::info!(queue = %output.queue_url(), max_message_bytes = output.max_message_bytes(), fifo = output.is_fifo(), "output queue");
    let mut app = App::new(config, protocol, store, output);
    if let Some(url) = aws.canary_queue_url.as_deref().filter(|u| !u.is_empty()) {
        let canary = Output::open(&sdk, url, &aws.fifo_group_id, None)
            .await
            .map_err(ServeError::Output)?;
        tracing::info!(queue = %canary.queue_url(), "canary queue");
        app = app.with_canary_queue(canary);
    }
    Ok((app, sdk))
}

/// Runs inside AWS Lambda until the runtime stops. `notification_queue`
/// (RELAY_NOTIFICATION_QUEUE_URL) lets a failed notification come back early.
pub async fn lambda(
    config: Config,
    aws: Aws,
    notification_queue: Option<String>,
) -> Result<(), ServeError> {
    let (mut app, sdk) = connect(config, aws).await?;
    match notification_queue {
        Some(url) => app = app.with_notification_queue(Notifications::connect(&sdk, url)),
        None => tracing::warn!(
            "RELAY_NOTIFICATION_QUEUE_URL is not set: a failed notification comes back only after the queue's visibility timeout"
        ),
    }
    // Metrics leave as CloudWatch Embedded Metric Format on stdout after each
    // invocation; CloudWatch extracts them from the log stream.
    let emf = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace("relay")
        .init()
        .map_err(|e| ServeError::Metrics(e.to_string()))?;
    crate::metrics::describe();
    let app = &app;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<serde_json::Value>| async move {
            // The runtime's deadline, on this host's clocks: sending stops
            // in time to record progress and release the lease.
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            // A deadline already past is no deadline (cargo-lambda's
            // emulator sends the timeout itself, 600000, not an instant).
            let deadline = Duration::from_millis(event.context.deadline)
                .checked_sub(now)
                .map(|left| Instant::now() + left);
            let result = app.handle_until(event.payload, deadline).await;
            if let Err(e) = emf.flush(std::io::stdout()) {
                tracing::warn!(error = %e, "writing metrics failed");
            }
            // The error's text reaches the Lambda error report and CloudWatch.
            result.map_err(|e| {
                lambda_runtime::Diagnostic::from(
                    Box::new(e) as Box<dyn std::error::Error + Send + Sync>
                )
            })
        },
    ))
    .await
    .map_err(|e| ServeError::Runtime(e.to_string()))
}

/// `poll`: consumes `queue_url` until SIGTERM or Ctrl-C, serving
/// `/metrics` and `/healthz` on `metrics_addr` unless it is `off`.
pub async fn poll(
    config: Config,
    aws: Aws,
    queue_url: &str,
    visibility_secs: u32,
    metrics_addr: &str,
) -> Result<(), ServeError> {
    let (app, sdk) = connect(config, aws).await?;
    if !matches!(metrics_addr, "" | "off") {
        let addr = metrics_addr
            .parse()
            .map_err(|_| ServeError::MetricsAddr(metrics_addr.to_owned()))?;
        let health: relay_shared::telemetry::HealthCheck =
            std::sync::Arc::new(|| relay_shared::telemetry::Health::Ok(Vec::new()));
        let buckets = [(
            crate::metrics::OBJECT_SECONDS,
            crate::metrics::OBJECT_SECONDS_BUCKETS,
        )];
        let bound =
            relay_shared::telemetry::serve_metrics(addr, "cloud-processor", &buckets, health)
                .await
                .map_err(|e| ServeError::Metrics(e.to_string()))?;
        crate::metrics::describe();
        crate::metrics::register_at_zero(app.config.projection.names());
        tracing::info!(%bound, "serving /metrics and /healthz");
    }
    let queue = Notifications::connect(&sdk, queue_url.to_owned());
    crate::modes::poll::run(
        &app,
        &queue,
        visibility_secs,
        relay_shared::telemetry::shutdown_signal(),
    )
    .await;
    Ok(())
}
