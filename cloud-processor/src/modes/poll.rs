//! `cloud-processor poll`: the Lambda's handler outside Lambda, fed by
//! long-polling the S3 notification queue. A message is deleted only after
//! every object it names is done; while one is in progress its visibility is
//! extended, so a long file is not handed to a second worker. A message that
//! failed comes back as soon as retrying makes sense, not after the whole
//! visibility timeout.

use std::future::Future;
use std::time::Duration;

use relay_shared::store::ObjectStore;
use tracing::{error, info, warn};

use crate::cli::{Aws, Config};
use crate::ingest::sqs::Notifications;
use crate::modes::connect::{ServeError, connect};
use crate::object::App;
use crate::output::sink::MessageSink;

/// Polls until `shutdown` resolves. A message being worked on at shutdown
/// is finished first.
pub async fn follow<S: ObjectStore, Q: MessageSink>(
    app: &App<S, Q>,
    queue: &Notifications,
    visibility_secs: u32,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    info!(queue = queue.queue_url(), "polling for S3 notifications");
    let full = Duration::from_secs(u64::from(visibility_secs));
    loop {
        let out = tokio::select! {
            () = &mut shutdown => break,
            out = queue.receive(visibility_secs) => out,
        };
        let messages = match out {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "receiving notifications failed; retrying in 5 s");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_secs(5)) => continue,
                }
            }
        };
        for m in messages {
            let result = tokio::select! {
                r = app.process_message_body(&m.body) => r,
                never = heartbeat(queue, &m.receipt, full) => match never {},
            };
            match result {
                Ok(_) => {
                    if let Err(e) = queue.delete(&m.receipt).await {
                        // The work is done; a redelivery is skipped or resent
                        // according to the once-only protocol.
                        warn!(error = %e, "deleting a processed notification failed");
                    }
                }
                Err(e) => {
                    // Back sooner than the visibility timeout where that
                    // helps (see `ProcessError::retry_after`).
                    let after = e.retry_after().map(|d| d.min(full));
                    error!(error = %e, retry_in_secs = after.unwrap_or(full).as_secs(),
                        "processing failed; the notification will be redelivered");
                    if let Some(after) = after {
                        crate::ingest::handle::show_again(queue, &m.receipt, after).await;
                    }
                }
            }
        }
    }
    info!("poller stopped");
}

/// `poll`: consumes `queue_url` until `shutdown` (SIGTERM or Ctrl-C),
/// serving `/metrics` and `/healthz` on `metrics_addr` unless it is `off`.
pub async fn run(
    config: Config,
    aws: Aws,
    queue_url: &str,
    visibility_secs: u32,
    metrics_addr: &str,
    shutdown: impl Future<Output = ()>,
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
    follow(&app, &queue, visibility_secs, shutdown).await;
    Ok(())
}

/// Extends a message's visibility every half timeout, forever; dropped when
/// the work finishes.
async fn heartbeat(
    queue: &Notifications,
    receipt: &str,
    visibility: Duration,
) -> std::convert::Infallible {
    let every = (visibility / 2).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = queue.show_again(receipt, visibility).await {
            warn!(error = %e, "extending visibility failed");
        }
    }
}
