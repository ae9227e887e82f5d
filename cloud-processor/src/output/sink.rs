//! Where one object's chunks go: the capability the send loop is written
//! against (SQS in production, a fake in tests), what became of a batch,
//! and the route of a canary with no queue of its own.

use std::time::Instant;

use crate::pipeline::body::Chunk;
use crate::sqs::SqsError;

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
    pub failed: Option<SqsError>,
}

impl BatchOutcome {
    /// Adds the entries of `pending` that are not in `failed`: SQS stored them.
    pub(crate) fn note_accepted(
        &mut self,
        pending: &[&Chunk],
        failed: &[aws_sdk_sqs::types::BatchResultErrorEntry],
    ) {
        self.accepted.extend(
            pending
                .iter()
                .filter(|c| !failed.iter().any(|f| f.id == format!("c{}", c.index)))
                .map(|c| c.index),
        );
    }

    pub(crate) fn failing(mut self, e: SqsError) -> Self {
        self.failed = Some(e);
        self
    }
}

/// Where batches of chunks go: SQS, or a fake in tests.
pub trait MessageSink: Send + Sync {
    /// Sends one batch, retrying what failed for a transient reason, but
    /// starting no attempt after `until` (while the sender's lease lasts).
    fn send(
        &self,
        source_key: &str,
        dedup_base: &str,
        batch: &[Chunk],
        until: Instant,
    ) -> impl std::future::Future<Output = BatchOutcome> + Send;
    /// The message size limit chunks are packed for.
    fn max_message_bytes(&self) -> usize;
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
    async fn send(
        &self,
        source_key: &str,
        dedup_base: &str,
        batch: &[Chunk],
        until: Instant,
    ) -> BatchOutcome {
        match self {
            Self::Queue(q) => q.send(source_key, dedup_base, batch, until).await,
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
