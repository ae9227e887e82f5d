//! Chunks to SQS.

pub mod send;
pub mod sqs;
