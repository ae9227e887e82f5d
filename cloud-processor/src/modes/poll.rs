//! `cloud-processor poll`: the Lambda's handler outside Lambda, fed by
//! long-polling the S3 notification queue. A message is deleted only after
//! every object it names is done; while one is in progress its visibility is
//! extended, so a long file is not handed to a second worker. A message that
//! failed comes back as soon as retrying makes sense, not after the whole
//! visibility timeout.

use std::future::Future;
use std::time::Duration;

use relay_shared::store::ObjectStore;
use relay_shared::telemetry::HealthCheck;
use tracing::{error, info, warn};

use crate::aws::{AwsProcessor, Readiness, SqsNotifications, Startup, connect};
use crate::cli::{Aws, Config, ConfigError, PollArgs, queue_url_problem};
use crate::ingest::{Handler, hand_on, note_failed, show_again};
use crate::modes::ServeError;
use crate::object::Processor;
use crate::output::MessageSink;

/// Polls until `shutdown` resolves. A message being worked on at shutdown
/// is finished first.
pub async fn follow<S: ObjectStore, Q: MessageSink>(
    processor: &Processor<S, Q>,
    queue: &SqsNotifications,
    visibility_secs: u32,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let handler = Handler::new(processor);
    info!(queue = queue.queue_url(), "polling for S3 notifications");
    let full = Duration::from_secs(u64::from(visibility_secs));
    // Failed receives in a row: an outage is logged when it starts and ends.
    let mut failing = 0u32;
    loop {
        let out = tokio::select! {
            () = &mut shutdown => break,
            out = queue.receive(visibility_secs) => out,
        };
        let messages = match out {
            Ok(m) => m,
            Err(e) => {
                failing += 1;
                if let crate::output::QueueError::Call { cause, .. } = &e {
                    relay_shared::attempts::count("sqs", "ReceiveMessage", *cause);
                }
                if failing == 1 {
                    warn!(error = %e, "receiving notifications failed; retrying every 5 s");
                } else {
                    tracing::debug!(error = %e, failing, "receiving notifications failed again");
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_secs(5)) => continue,
                }
            }
        };
        if failing > 0 {
            info!(failed_receives = failing, "receiving notifications again");
            failing = 0;
        }
        for m in messages {
            let result = tokio::select! {
                r = handler.process_message_body(&m.body) => r,
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
                Err(e) if hand_on(queue, &m.body, m.handoffs, &e).await => {
                    // A fresh notification goes on with the object.
                    if let Err(d) = queue.delete(&m.receipt).await {
                        warn!(error = %d, "deleting a handed-on notification failed; its redelivery is skipped or goes on as the once-only protocol says");
                    }
                }
                Err(e) => {
                    note_failed(&e);
                    // Back sooner than the visibility timeout where that
                    // helps (see `HandleError::retry_after`).
                    let after = e.retry_after().map(|d| d.min(full));
                    error!(error = %e, retry_in_secs = after.unwrap_or(full).as_secs(),
                        "processing failed; the notification will be redelivered");
                    if let Some(after) = after {
                        show_again(queue, &m.receipt, after).await;
                    }
                }
            }
        }
    }
    info!("poller stopped");
}

/// How often `poll` sends the spans it has (with an OTLP endpoint set), as
/// OpenTelemetry's batch span processor does by default.
const SPAN_FLUSH_EVERY: Duration = Duration::from_secs(5);

/// `poll`: consumes the notification queue until `shutdown` (SIGTERM or
/// Ctrl-C), serving `/metrics` and `/healthz` unless its address is `off`.
/// The metrics server comes first, so `/healthz` tells the truth while
/// start-up waits for SQS; a shutdown during that wait is a clean exit.
pub async fn run(
    config: Config,
    args: PollArgs,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    tokio::pin!(shutdown);
    if let Some(reason) = queue_url_problem(&args.notification_queue_url) {
        let name = "RELAY_NOTIFICATION_QUEUE_URL";
        return Err(ConfigError::Invalid { name, reason }.into());
    }
    let startup = Startup::new(args.startup_wait_secs.map(Duration::from_secs));
    let fields = config.projection.fields();
    serve_metrics(&args.metrics_addr, startup.readiness.clone()).await?;
    crate::metrics::describe();
    crate::metrics::register_at_zero(fields);
    let started = tokio::select! {
        started = start(config, args.aws, args.notification_queue_url, &startup) => started?,
        () = &mut shutdown => {
            info!("stopped while starting");
            return Ok(());
        }
    };
    startup.readiness.ready();
    let (processor, queue) = started;
    let spans = tokio::spawn(async {
        let mut every = tokio::time::interval(SPAN_FLUSH_EVERY);
        loop {
            every.tick().await;
            crate::spans::flush().await;
        }
    });
    follow(&processor, &queue, args.visibility_timeout_secs, shutdown).await;
    spans.abort();
    crate::spans::flush().await;
    Ok(())
}

/// The processor and the notification queue, each waited for until it
/// answers as `startup` says.
async fn start(
    config: Config,
    aws: Aws,
    notification_queue_url: String,
    startup: &Startup,
) -> Result<(AwsProcessor, SqsNotifications), ServeError> {
    let (processor, sdk) = connect(config, aws, startup).await?;
    let queue = SqsNotifications::connect(&sdk, notification_queue_url);
    startup
        .wait_for("SQS", "reading the notification queue's attributes", || {
            queue.probe()
        })
        .await
        .map_err(crate::aws::ConnectError::from)?;
    Ok((processor, queue))
}

/// Serves `/metrics` and `/healthz` (from `readiness`) on `addr`, unless
/// it is `off`.
async fn serve_metrics(addr: &str, readiness: Readiness) -> Result<(), ServeError> {
    if matches!(addr, "" | "off") {
        return Ok(());
    }
    let parsed = addr
        .parse()
        .map_err(|_| ServeError::MetricsAddr(addr.to_owned()))?;
    let health: HealthCheck = {
        let readiness = readiness.clone();
        std::sync::Arc::new(move || readiness.health())
    };
    let buckets = [
        (
            crate::metrics::OBJECT_SECONDS,
            crate::metrics::OBJECT_SECONDS_BUCKETS,
        ),
        (
            crate::metrics::FILE_LATENCY,
            crate::metrics::FILE_LATENCY_BUCKETS,
        ),
    ];
    let bound = relay_shared::telemetry::serve_metrics(parsed, "cloud-processor", &buckets, health)
        .await
        .map_err(|e| ServeError::Metrics(e.to_string()))?;
    readiness.publish();
    info!(%bound, "serving /metrics and /healthz");
    Ok(())
}

/// Extends a message's visibility every half timeout, forever; dropped when
/// the work finishes.
async fn heartbeat(
    queue: &SqsNotifications,
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
