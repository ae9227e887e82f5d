//! The notification queue, as handling an event needs it: a failed
//! notification made visible again when retrying makes sense, and an
//! unfinished one handed on as a fresh notification. SQS's is
//! `aws::notification_queue`.

use std::future::Future;
use std::time::Duration;

use crate::output::QueueError;

/// The queue notifications come from.
pub trait NotificationQueue: Send + Sync {
    /// Makes a received notification visible again `after` from now.
    fn show_again(
        &self,
        receipt: &str,
        after: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Sends `body` again as a fresh notification, visible `after` from
    /// now, counting `handoffs`. `Ok(false)`: there is no queue to send to.
    fn hand_on(
        &self,
        body: &str,
        after: Duration,
        handoffs: u32,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;
}

/// No notification queue: a failed notification comes back after the
/// queue's visibility timeout.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoQueue;

impl NotificationQueue for NoQueue {
    async fn show_again(&self, _receipt: &str, _after: Duration) -> Result<(), QueueError> {
        Ok(())
    }

    async fn hand_on(&self, _body: &str, _after: Duration, _n: u32) -> Result<bool, QueueError> {
        Ok(false)
    }
}

/// A queue that may not be configured: without one, nothing is shown again
/// early.
impl<N: NotificationQueue> NotificationQueue for Option<N> {
    async fn show_again(&self, receipt: &str, after: Duration) -> Result<(), QueueError> {
        match self {
            Some(queue) => queue.show_again(receipt, after).await,
            None => Ok(()),
        }
    }

    async fn hand_on(
        &self,
        body: &str,
        after: Duration,
        handoffs: u32,
    ) -> Result<bool, QueueError> {
        match self {
            Some(queue) => queue.hand_on(body, after, handoffs).await,
            None => Ok(false),
        }
    }
}
