//! What arrives: events naming raw objects ([`event`]), and the handling of
//! one event ([`Handler`]), which hands each object to the processor. The
//! queue notifications come from is a capability ([`NotificationQueue`]);
//! its SQS adapter is `aws::notification_queue`.

pub mod event;
mod handler;
mod queue;

pub use handler::{HandleError, Handler, show_again};
pub use queue::NotificationQueue;
