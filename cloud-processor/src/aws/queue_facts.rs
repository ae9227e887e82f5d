//! SQS adapter for any queue's attributes: the size limit and type the
//! output queue packs for, and what `check` reports about a queue.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;

use super::sqs::call_error;
use crate::output::QueueError;

/// What `check` reports about a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFacts {
    pub fifo: bool,
    pub max_message_bytes: usize,
    pub visibility_timeout_secs: u32,
    /// Deliveries before the dead-letter queue, if the queue has one.
    pub max_receive_count: Option<u32>,
}

/// Any queue, as `check` sees it.
#[derive(Debug, Clone)]
pub struct Queues {
    client: Client,
}

impl Queues {
    pub fn connect(sdk: &relay_shared::client::SdkConfig) -> Self {
        Self {
            client: relay_shared::client::sqs_client(sdk),
        }
    }

    /// The queue's attributes, as `check` reports them.
    pub async fn facts(&self, queue_url: &str) -> Result<QueueFacts, QueueError> {
        queue_facts(&self.client, queue_url).await
    }
}

async fn queue_facts(client: &Client, queue_url: &str) -> Result<QueueFacts, QueueError> {
    let attrs = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(|e| call_error(queue_url, "GetQueueAttributes", e))?
        .attributes
        .unwrap_or_default();
    let number = |name: QueueAttributeName| attrs.get(&name).and_then(|v| v.parse::<u32>().ok());
    let max_receive_count = attrs
        .get(&QueueAttributeName::RedrivePolicy)
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        .and_then(|p| match &p["maxReceiveCount"] {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        })
        .and_then(|n| u32::try_from(n).ok());
    Ok(QueueFacts {
        fifo: attrs
            .get(&QueueAttributeName::FifoQueue)
            .is_some_and(|v| v == "true"),
        max_message_bytes: number(QueueAttributeName::MaximumMessageSize)
            .map_or(262_144, |n| n as usize),
        visibility_timeout_secs: number(QueueAttributeName::VisibilityTimeout).unwrap_or(30),
        max_receive_count,
    })
}

/// The queue's MaximumMessageSize and whether it is FIFO.
pub(super) async fn read_limits(
    client: &Client,
    queue_url: &str,
) -> Result<(usize, bool), QueueError> {
    let attrs = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::MaximumMessageSize)
        .attribute_names(QueueAttributeName::FifoQueue)
        .send()
        .await
        .map_err(|e| call_error(queue_url, "GetQueueAttributes", e))?;
    let attrs = attrs.attributes.unwrap_or_default();
    let queue_max = attrs
        .get(&QueueAttributeName::MaximumMessageSize)
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(262_144);
    let fifo = attrs
        .get(&QueueAttributeName::FifoQueue)
        .is_some_and(|v| v == "true");
    Ok((queue_max, fifo))
}
