//! What arrives: events naming raw objects ([`event`]), and the handling of
//! one event ([`Handler`]), which hands each object to the processor. The
//! queue notifications come from is a capability ([`NotificationQueue`]);
//! its SQS adapter is `aws::notification_queue`.

pub mod event;
mod handler;
mod queue;
#[cfg(test)]
mod tests;

pub use event::HANDOFFS_ATTRIBUTE;
pub use handler::{HandleError, Handler, MAX_HANDOFFS, hand_on, note_failed, show_again};
pub use queue::NotificationQueue;
