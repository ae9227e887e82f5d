//! The AWS adapters: the only place the processor names an AWS SDK type.
//! Each implements a capability a lower layer defines (the output queue is
//! `output`'s `MessageSink`, the notification queue `ingest`'s
//! `NotificationQueue`) or serves the modes directly (start-up waits, the
//! clients built once, the Lambda and SSM calls of the tools). S3 is
//! `relay_shared::s3`, shared with the edge agent.

pub mod connect;
pub mod lambda;
pub mod notification_queue;
pub mod output_queue;
pub mod queue_facts;
mod sqs;
pub mod ssm;
pub mod startup;

pub use connect::{AwsProcessor, ConnectError, connect};
pub use lambda::Function;
pub use notification_queue::SqsNotifications;
pub use output_queue::SqsOutput;
pub use queue_facts::Queues;
pub use ssm::{PLACEHOLDER as HMAC_KEY_PLACEHOLDER, read_keys};
pub use startup::{Readiness, Startup};
