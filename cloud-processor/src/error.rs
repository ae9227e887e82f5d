//! What can go wrong with one object or event, and when a notification that
//! failed that way is worth trying again.

use std::time::Duration;

use relay_shared::store::S3Error;

use crate::ingest::event::{EventError, ObjectRef};
use crate::object::lease::StateError;
use crate::sqs::SqsError;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error("s3://{bucket}/{key}: sending to SQS: {source}")]
    Send {
        bucket: String,
        key: String,
        source: SqsError,
    },
    #[error(
        "s3://{bucket}/{key}: reading the object failed after {sent} messages were sent: {message}; \
         the next attempt resumes after them"
    )]
    Read {
        bucket: String,
        key: String,
        sent: u32,
        message: String,
    },
    #[error("s3://{bucket}/{key}: storing a record too large for a message: {source}")]
    Payload {
        bucket: String,
        key: String,
        source: crate::output::payload::PayloadError,
    },
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("s3://{bucket}/{key}: the pipeline task failed: {message}")]
    Task {
        bucket: String,
        key: String,
        message: String,
    },
    #[error("s3://{bucket}/{key}: {source}")]
    State {
        bucket: String,
        key: String,
        source: StateError,
    },
    #[error(
        "s3://{bucket}/{key} is being processed by {owner} (its lease expires in {expires_in_ms} ms); try again later"
    )]
    Busy {
        bucket: String,
        key: String,
        owner: String,
        expires_in_ms: u64,
    },
    #[error(
        "s3://{bucket}/{key} was left half-sent ({next_chunk} chunks) by {owner} under other settings \
         (fingerprint {theirs}, now {ours}), and resuming would cut its chunks differently. Restore the old \
         settings, or delete the lease {lease} to send the object again from the start (its first \
         {next_chunk} chunks then arrive twice)"
    )]
    ConfigChanged {
        bucket: String,
        key: String,
        owner: String,
        next_chunk: u32,
        theirs: String,
        ours: String,
        lease: String,
    },
    #[error(
        "s3://{bucket}/{key}: the invocation's deadline is near; stopped after {sent} messages with \
         them recorded, and the next attempt resumes after them"
    )]
    Deadline {
        bucket: String,
        key: String,
        sent: u32,
    },
}

impl ProcessError {
    /// When a notification that failed this way is worth trying again. A
    /// busy object is free when its lease ends; a settings mismatch needs a
    /// person, so it waits the queue's visibility timeout (`None`); anything
    /// else soon, so that a resend still lands inside SQS FIFO's 5-minute
    /// deduplication window rather than after the queue's full visibility
    /// timeout.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Busy { expires_in_ms, .. } => {
                Some(Duration::from_millis(*expires_in_ms) + Duration::from_secs(2))
            }
            Self::ConfigChanged { .. } => None,
            _ => Some(Duration::from_secs(10)),
        }
    }

    pub(crate) fn state(obj: &ObjectRef, source: StateError) -> Self {
        Self::State {
            bucket: obj.bucket.clone(),
            key: obj.key.clone(),
            source,
        }
    }
}
