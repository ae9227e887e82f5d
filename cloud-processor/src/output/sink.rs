//! Where one object's chunks go: the capability the send loop is written
//! against (SQS in production, a fake in tests), what became of a batch,
//! a queue's errors, and the route of a canary with no queue of its own.
//! This module knows nothing of its implementations: SQS's is
//! `aws::output_queue`, the fake is `testing::FakeQueue`.

use std::time::Instant;

use relay_shared::retry::{Cause, Class, Classified};

use crate::output::batch;
use crate::pipeline::body::Chunk;
use relay_shared::trace::TraceContext;

/// What can go wrong with a queue, either of them: a call, a message the
/// queue refused, a batch still failing after retries, a size refusal.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue {queue}: {op} failed: {message}")]
    Call {
        queue: String,
        op: &'static str,
        message: String,
        class: Class,
        /// Why, as a retry counts it.
        cause: Cause,
    },
    #[error("queue {queue} refused message {id}: {code}: {message}")]
    Refused {
        queue: String,
        id: String,
        code: String,
        message: String,
    },
    #[error("queue {queue}: {failed} messages still failing after retries (last: {last})")]
    GaveUp {
        queue: String,
        failed: usize,
        last: String,
    },
    #[error(
        "queue {queue} refused a message as too large ({message}); its size limit is now {limit} bytes, \
         and the object is retried with it"
    )]
    TooLarge {
        queue: String,
        message: String,
        limit: usize,
    },
}

impl Classified for QueueError {
    /// Whether trying again may help, by the workspace's one classification:
    /// a call by its answer (or the lack of one); a queue's refusal of a
    /// message never; a batch still failing after retries may.
    fn class(&self) -> Class {
        match self {
            Self::Call { class, .. } => *class,
            Self::Refused { .. } | Self::TooLarge { .. } => Class::Permanent,
            Self::GaveUp { .. } => Class::Transient,
        }
    }
}

/// What became of one batch's chunks.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Chunks SQS stored.
    pub accepted: Vec<u32>,
    /// Chunks SQS refused as the sender's fault, with its code and message:
    /// sending them again cannot help.
    pub refused: Vec<(u32, String)>,
    /// Why the other chunks were not sent (after retries). SQS may have
    /// stored them anyway if its answer was lost.
    pub failed: Option<QueueError>,
}

impl BatchOutcome {
    pub fn failing(mut self, e: QueueError) -> Self {
        self.failed = Some(e);
        self
    }
}

/// The object a batch comes from, as each of its messages says: its key
/// (`relay.source_key`), the base of its FIFO deduplication ids, and the
/// file's trace, continued (`traceparent` and `AWSTraceHeader`).
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub source_key: &'a str,
    pub dedup_base: &'a str,
    pub trace: Option<TraceContext>,
}

/// Where batches of chunks go: SQS, or a fake in tests.
pub trait MessageSink: Send + Sync {
    /// Sends one batch, retrying what failed for a transient reason, but
    /// starting no attempt after `until` (while the sender's lease lasts).
    fn send(
        &self,
        origin: &Origin<'_>,
        batch: &[Chunk],
        until: Instant,
    ) -> impl std::future::Future<Output = BatchOutcome> + Send;
    /// The message size limit chunks are packed for.
    fn max_message_bytes(&self) -> usize;
    /// The largest body of a message from `source_key`: the size limit less
    /// the worst case of the attributes every message carries.
    fn max_body_bytes(&self, source_key: &str) -> usize {
        batch::max_body_bytes(self.max_message_bytes(), source_key)
    }
    /// Whether the queue is FIFO (deduplication ids, a 5-minute window).
    fn is_fifo(&self) -> bool;
    /// The queue's URL, which names it in fingerprints and messages.
    fn queue_url(&self) -> &str;
}

/// Where one object's chunks go: its queue, or nowhere (a canary with no
/// canary queue), which takes every batch as sent.
#[derive(Debug)]
pub enum Route<'a, Q> {
    Queue(&'a Q),
    Discard { max_message_bytes: usize },
}

impl<Q: MessageSink> MessageSink for Route<'_, Q> {
    async fn send(&self, origin: &Origin<'_>, batch: &[Chunk], until: Instant) -> BatchOutcome {
        match self {
            Self::Queue(q) => q.send(origin, batch, until).await,
            Self::Discard { .. } => BatchOutcome {
                accepted: batch.iter().map(|c| c.index).collect(),
                refused: Vec::new(),
                failed: None,
            },
        }
    }

    fn max_message_bytes(&self) -> usize {
        match self {
            Self::Queue(q) => q.max_message_bytes(),
            Self::Discard { max_message_bytes } => *max_message_bytes,
        }
    }

    fn is_fifo(&self) -> bool {
        matches!(self, Self::Queue(q) if q.is_fifo())
    }

    fn queue_url(&self) -> &str {
        match self {
            Self::Queue(q) => q.queue_url(),
            Self::Discard { .. } => "",
        }
    }
}
