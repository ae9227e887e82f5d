//! Inside AWS Lambda (the default mode): the runtime loop over one [`App`],
//! its settings from the environment, and metrics in CloudWatch Embedded
//! Metric Format on stdout after each invocation.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;

use crate::aws::{SqsNotifications, Startup, connect};
use crate::cli::{Aws, Config};
use crate::ingest::Handler;
use crate::modes::ServeError;

/// In Lambda there are no arguments: settings come from the environment.
pub fn from_env<T: clap::Args>() -> Result<T, ServeError> {
    #[derive(Parser)]
    struct Env<T: clap::Args> {
        #[command(flatten)]
        inner: T,
    }
    Env::<T>::try_parse_from(["cloud-processor"])
        .map(|e| e.inner)
        .map_err(|e| ServeError::Environment(e.to_string()))
}

/// `RELAY_NOTIFICATION_QUEUE_URL` (optional) names the queue the event
/// source mapping reads, so a failed notification can be made visible
/// again early rather than after the queue's whole visibility timeout.
#[derive(clap::Args)]
struct NotificationQueue {
    #[arg(long, env = "RELAY_NOTIFICATION_QUEUE_URL")]
    notification_queue_url: Option<String>,
}

/// The queue the event source mapping reads, if the environment names it.
pub fn notification_queue() -> Option<String> {
    from_env::<NotificationQueue>()
        .ok()
        .and_then(|n| n.notification_queue_url)
        .filter(|u| !u.is_empty())
}

/// Runs inside AWS Lambda until the runtime stops. `notification_queue`
/// (RELAY_NOTIFICATION_QUEUE_URL) lets a failed notification come back early.
pub async fn run(
    config: Config,
    aws: Aws,
    notification_queue: Option<String>,
) -> Result<(), ServeError> {
    // No waiting at init: a failure fails the invocation, and Lambda
    // retries it (the notification comes back, or the event is retried).
    let (processor, sdk) = connect(config, aws, &Startup::no_wait()).await?;
    let queue = notification_queue.map(|url| SqsNotifications::connect(&sdk, url));
    if queue.is_none() {
        tracing::warn!(
            "RELAY_NOTIFICATION_QUEUE_URL is not set: a failed notification comes back only after the queue's visibility timeout"
        );
    }
    // Metrics leave as CloudWatch Embedded Metric Format on stdout after each
    // invocation; CloudWatch extracts them from the log stream.
    let emf = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace("relay")
        .init()
        .map_err(|e| ServeError::Metrics(e.to_string()))?;
    crate::metrics::describe();
    let handler = &Handler::new(&processor).with_queue(&queue);
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
            let result = handler.handle_until(event.payload, deadline).await;
            // Before the answer: Lambda may freeze the process after it.
            crate::spans::flush().await;
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
