//! Chunks to SQS: batched, sent, with claim checks for records too large
//! for a message.

pub mod batch;
pub mod payload;
pub mod send;
pub mod sink;
pub mod sqs;
