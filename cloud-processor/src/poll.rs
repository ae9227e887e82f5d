//! `cloud-processor poll`: the Lambda's handler outside Lambda, fed by
//! long-polling the S3 notification queue. A message is deleted only after
//! every object it names is done; while one is in progress its visibility is
//! extended, so a long file is not handed to a second worker. A message that
//! failed comes back as soon as retrying makes sense, not after the whole
//! visibility timeout.

use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::Client;
use tracing::{error, info, warn};

use crate::handler::App;

/// How long a receive waits for messages (SQS's longest long poll).
const WAIT_SECS: i32 = 20;

/// A long poll is silent for up to [`WAIT_SECS`] by design: its timeouts are
/// the client's plus that wait.
fn long_poll_timeouts(sqs: &Client) -> aws_sdk_sqs::config::Builder {
    let wait = Duration::from_secs(WAIT_SECS as u64);
    let base = sqs
        .config()
        .timeout_config()
        .cloned()
        .unwrap_or_else(|| aws_sdk_sqs::config::timeout::TimeoutConfig::builder().build());
    let extend = |t: Option<Duration>| t.map(|t| t + wait);
    let mut timeouts = base.to_builder();
    timeouts
        .set_operation_attempt_timeout(extend(base.operation_attempt_timeout()))
        .set_operation_timeout(extend(base.operation_timeout()));
    aws_sdk_sqs::config::Builder::default().timeout_config(timeouts.build())
}

/// Polls until `shutdown` resolves. A message being worked on at shutdown
/// is finished first.
pub async fn run(
    app: &App,
    sqs: &Client,
    queue_url: &str,
    visibility_secs: u32,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    info!(queue = queue_url, "polling for S3 notifications");
    let long_poll = long_poll_timeouts(sqs);
    loop {
        let receive = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(WAIT_SECS)
            .visibility_timeout(visibility_secs as i32)
            .customize()
            .config_override(long_poll.clone())
            .send();
        let out = tokio::select! {
            () = &mut shutdown => break,
            out = receive => out,
        };
        let messages = match out {
            Ok(o) => o.messages.unwrap_or_default(),
            Err(e) => {
                warn!(error = %relay_shared::client::describe(&e), "receiving notifications failed; retrying in 5 s");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_secs(5)) => continue,
                }
            }
        };
        for m in messages {
            let (Some(body), Some(receipt)) = (m.body(), m.receipt_handle()) else {
                continue;
            };
            let heartbeat = heartbeat(
                sqs.clone(),
                queue_url.to_owned(),
                receipt.to_owned(),
                visibility_secs,
            );
            let result = tokio::select! {
                r = app.process_message_body(body) => r,
                never = heartbeat => match never {},
            };
            match result {
                Ok(_) => {
                    if let Err(e) = sqs
                        .delete_message()
                        .queue_url(queue_url)
                        .receipt_handle(receipt)
                        .send()
                        .await
                    {
                        // The work is done; a redelivery is skipped or resent
                        // according to the once-only protocol.
                        warn!(error = %relay_shared::client::describe(&e), "deleting a processed notification failed");
                    }
                }
                Err(e) => {
                    // Back sooner than the visibility timeout where that
                    // helps (see `ProcessError::retry_after`).
                    let full = Duration::from_secs(u64::from(visibility_secs));
                    let after = e.retry_after().map(|d| d.min(full));
                    error!(error = %e, retry_in_secs = after.unwrap_or(full).as_secs(),
                        "processing failed; the notification will be redelivered");
                    if let Some(after) = after {
                        crate::handler::show_again(sqs, queue_url, receipt, after).await;
                    }
                }
            }
        }
    }
    info!("poller stopped");
}

/// Extends a message's visibility every half timeout, forever; dropped when
/// the work finishes.
async fn heartbeat(
    sqs: Client,
    queue_url: String,
    receipt: String,
    visibility_secs: u32,
) -> std::convert::Infallible {
    let every = Duration::from_secs(u64::from(visibility_secs.max(2) / 2));
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = sqs
            .change_message_visibility()
            .queue_url(&queue_url)
            .receipt_handle(&receipt)
            .visibility_timeout(visibility_secs as i32)
            .send()
            .await
        {
            warn!(error = %relay_shared::client::describe(&e), "extending visibility failed");
        }
    }
}
