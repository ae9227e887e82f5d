//! What arrives: events naming raw objects, and the queue they come from.

pub mod event;
pub mod sqs;
