//! What arrives: events naming raw objects, the queue they come from, and
//! the handling of one event, which hands each object to `object`.

pub mod event;
pub mod handle;
pub mod sqs;
