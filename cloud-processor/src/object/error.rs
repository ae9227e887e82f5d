//! What can go wrong with one object, and when a notification that failed
//! that way is worth trying again. The object is named once, in
//! [`ProcessError`]; each [`Failure`] keeps the error of the layer it came
//! from (the store's, the lease's, the queue's, the send loop's).

use std::time::Duration;

use relay_shared::store::S3Error;

use crate::object::ObjectRef;
use crate::object::lease::StateError;
use crate::output::{PayloadError, QueueError, SendError};

/// One object's failure: which object, and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("s3://{}/{}: {failure}", object.bucket, object.key)]
pub struct ProcessError {
    pub object: Box<ObjectRef>,
    pub failure: Failure,
}

/// What went wrong with an object.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("sending to SQS: {0}")]
    Queue(QueueError),
    #[error(
        "reading the object failed after {sent} messages were sent: {message}; \
         the next attempt resumes after them"
    )]
    Read { sent: u32, message: String },
    #[error(
        "read {reads} time(s) with bytes that do not match the CRC32C S3 stored ({message}); \
         {sent} messages were sent, and the next attempt reads it again"
    )]
    Checksum {
        reads: u32,
        sent: u32,
        message: String,
    },
    #[error("storing a record too large for a message: {0}")]
    Payload(PayloadError),
    #[error("the pipeline task failed: {0}")]
    Task(String),
    #[error(
        "being processed by {owner} (its lease expires in {expires_in_ms} ms); try again later"
    )]
    Busy { owner: String, expires_in_ms: u64 },
    #[error(
        "left half-sent ({next_chunk} chunks) by {owner} under other settings \
         (fingerprint {theirs}, now {ours}) by a processor that did not record which records it sent, \
         so nothing says where to resume. Roll back to the old version and settings to finish it, or \
         delete the lease {lease} to send the object again from the start (its first {next_chunk} \
         chunks then arrive twice)"
    )]
    ConfigChanged {
        owner: String,
        next_chunk: u32,
        theirs: String,
        ours: String,
        lease: String,
    },
    #[error(
        "the invocation's deadline is near; stopped after {sent} messages with them recorded, and \
         the next attempt resumes after them"
    )]
    Deadline { sent: u32 },
}

impl From<SendError<StateError>> for Failure {
    fn from(e: SendError<StateError>) -> Self {
        match e {
            SendError::Queue(e) => Self::Queue(e),
            SendError::Payload(e) => Self::Payload(e),
            SendError::Deadline { sent } => Self::Deadline { sent },
            SendError::Progress(e) => Self::State(e),
        }
    }
}

impl ProcessError {
    pub fn new(object: &ObjectRef, failure: Failure) -> Self {
        Self {
            object: Box::new(object.clone()),
            failure,
        }
    }

    /// Whether the object is unfinished rather than failing, and when to
    /// go on with it: stopped at the invocation's deadline after sending
    /// (its progress recorded), at once; busy in another processor's
    /// hands, when that lease ends. Its notification is then handed on as
    /// a fresh one instead of failed (if the invocation made progress: see
    /// `ingest`), so a long object does not reach the dead-letter queue for
    /// the deliveries it takes.
    pub fn unfinished(&self) -> Option<Duration> {
        match &self.failure {
            Failure::Deadline { .. } => Some(Duration::ZERO),
            Failure::Busy { expires_in_ms, .. } => {
                Some(Duration::from_millis(*expires_in_ms) + Duration::from_secs(2))
            }
            _ => None,
        }
    }

    /// The label `relay_processor_objects_total` counts this under:
    /// `paused` (stopped at the deadline, its progress recorded), `busy`,
    /// or `failed`.
    pub fn outcome_label(&self) -> &'static str {
        match &self.failure {
            Failure::Deadline { .. } => "paused",
            Failure::Busy { .. } => "busy",
            _ => "failed",
        }
    }

    /// Whether this attempt sent anything.
    pub fn sent_some(&self) -> bool {
        matches!(self.failure, Failure::Deadline { sent } if sent > 0)
    }

    /// When a notification that failed this way is worth trying again. A
    /// busy object is free when its lease ends; a settings mismatch needs a
    /// person, so it waits the queue's visibility timeout (`None`); anything
    /// else soon, so that a resend still lands inside SQS FIFO's 5-minute
    /// deduplication window rather than after the queue's full visibility
    /// timeout.
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.failure {
            Failure::Busy { expires_in_ms, .. } => {
                Some(Duration::from_millis(*expires_in_ms) + Duration::from_secs(2))
            }
            Failure::ConfigChanged { .. } => None,
            _ => Some(Duration::from_secs(10)),
        }
    }
}
