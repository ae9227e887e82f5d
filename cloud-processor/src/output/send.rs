//! The send loop: an object's chunks, in order, batched and sent through a
//! [`MessageSink`], with its [`Progress`] recording every chunk SQS settled,
//! so that no retry resends one SQS stored, and a chunk SQS refuses for good
//! holds up nothing after it. Generic over the sink and the progress, so the
//! cases that need faults (a partly accepted batch, a lost answer, a
//! refusal, a deadline) are unit tests.

use std::future::Future;
use std::time::{Duration, Instant};

use relay_shared::store::ObjectStore;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::output::batch::{Batcher, DEFAULT_MAX_BATCH_BYTES};
use crate::output::payload::{PayloadError, Payloads, offload};
use crate::output::sink::{BatchOutcome, MessageSink, Origin, QueueError};
use crate::pipeline::body::Chunk;

/// Why the send loop stopped before every chunk was settled. `E` is the
/// progress's own error (the claim's, in production).
#[derive(Debug, thiserror::Error)]
pub enum SendError<E> {
    #[error("sending to SQS: {0}")]
    Queue(QueueError),
    #[error("storing a record too large for a message: {0}")]
    Payload(PayloadError),
    #[error(
        "the invocation's deadline is near; stopped after {sent} messages with them recorded, \
         and the next attempt resumes after them"
    )]
    Deadline { sent: u32 },
    #[error(transparent)]
    Progress(E),
}

/// Where one object's chunks go.
#[derive(Debug)]
pub struct Target<'a, S, K> {
    /// The object, as every message names it.
    pub origin: Origin<'a>,
    pub sink: &'a K,
    /// Start no batch after this (an invocation's deadline, less a margin).
    pub stop_at: Option<Instant>,
    /// Where records too large for a message go.
    pub payloads: Option<Payloads<'a, S>>,
}

/// What keeps an object's progress while its chunks are sent: its claim on
/// the object, in production. When a send may start, and how long it may
/// retry, are the claim's rules.
pub trait Progress: Send {
    /// Why recording progress failed.
    type Error: Send;
    /// Whether SQS already settled `chunk`: stored it, or refused it for good.
    fn is_settled(&self, chunk: u32) -> bool;
    /// How often the claim is renewed while chunks are awaited.
    fn renew_every(&self) -> Duration;
    /// Called before each send: renews the claim if too little of it is
    /// left, and returns until when the send may retry.
    fn before_send(&mut self) -> impl Future<Output = Result<Instant, Self::Error>> + Send;
    /// What SQS did with `batch`, kept until [`Progress::record`] writes it.
    fn settle(&mut self, batch: &[Chunk], outcome: &BatchOutcome);
    /// Writes what is settled, renewing the claim.
    fn record(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Sends every chunk from `chunks` that `progress` does not record as
/// settled, renewing it while chunks are awaited and recording progress
/// after every batch but the last (the done marker that follows records
/// it). Returns how many chunks SQS stored now.
pub async fn send_all<S: ObjectStore, K: MessageSink, P: Progress>(
    t: &Target<'_, S, K>,
    chunks: &mut mpsc::Receiver<Chunk>,
    progress: &mut P,
) -> Result<u32, SendError<P::Error>> {
    let mut batcher = Batcher::new(DEFAULT_MAX_BATCH_BYTES, t.origin.source_key);
    let mut renew = tokio::time::interval(progress.renew_every());
    renew.tick().await;
    let mut sent = 0u32;
    let mut flushing = false;
    loop {
        let batch = if flushing {
            match batcher.take() {
                Some(b) => b,
                None => return Ok(sent),
            }
        } else {
            tokio::select! {
                chunk = chunks.recv() => match chunk {
                    Some(c) if progress.is_settled(c.index) => continue,
                    Some(c) => match batcher.push(prepared(t, c).await.map_err(SendError::Payload)?) {
                        Some(b) => b,
                        None => continue,
                    },
                    None => {
                        flushing = true;
                        continue;
                    }
                },
                _ = renew.tick() => {
                    progress.record().await.map_err(SendError::Progress)?;
                    continue;
                }
            }
        };
        sent += send_batch(t, &batch, progress, sent, !flushing).await?;
    }
}

/// A chunk ready to batch: a record too large for a message is stored as
/// its payload first, and the chunk becomes its claim check.
async fn prepared<S: ObjectStore, K>(
    t: &Target<'_, S, K>,
    c: Chunk,
) -> Result<Chunk, PayloadError> {
    if c.payload_size.is_none() {
        return Ok(c);
    }
    let o = &t.origin;
    offload(t.payloads.as_ref(), o.source_key, o.dedup_base, c).await
}

/// Sends one batch, `sent` chunks into the object, and settles what SQS
/// did with it; with `record`, writes that progress. Returns how many
/// chunks SQS stored.
async fn send_batch<S, K: MessageSink, P: Progress>(
    t: &Target<'_, S, K>,
    batch: &[Chunk],
    progress: &mut P,
    sent: u32,
    record: bool,
) -> Result<u32, SendError<P::Error>> {
    if t.stop_at.is_some_and(|stop| Instant::now() >= stop) {
        return Err(SendError::Deadline { sent });
    }
    let until = progress.before_send().await.map_err(SendError::Progress)?;
    let span = tracing::info_span!(
        "send_message_batch",
        messages = batch.len(),
        accepted = tracing::field::Empty,
        error = tracing::field::Empty
    );
    let outcome = t
        .sink
        .send(&t.origin, batch, until)
        .instrument(span.clone())
        .await;
    span.record("accepted", outcome.accepted.len());
    if let Some(e) = &outcome.failed {
        span.record(crate::spans::ERROR_FIELD, e.to_string());
    }
    drop(span);
    progress.settle(batch, &outcome);
    for (chunk, reason) in &outcome.refused {
        tracing::error!(chunk, %reason, "SQS refused a message for good; the object will be quarantined once everything else is sent");
    }
    if let Some(e) = outcome.failed {
        return Err(SendError::Queue(e));
    }
    // The last batch's progress is recorded by the done marker that
    // follows at once: a progress write here would only add a PUT to
    // every object (a third for a single-batch one). A crash before the
    // marker resends this batch, as a crash before any progress write
    // would.
    if record {
        progress.record().await.map_err(SendError::Progress)?;
    }
    Ok(outcome.accepted.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::claim::Claim;
    use crate::object::lease::{Lease, StateError};
    use crate::object::marker::StateKeys;
    use crate::testing::{FakeQueue as Queue, SendFault as Fault};
    use relay_shared::testing::MemStore as Mem;

    const CHUNKS: u32 = 30;
    const KEY: &str = "raw/s/o.json.zst";

    /// One attempt at the object, as the object layer makes it: claim it,
    /// send every chunk the claim does not record, release it after a
    /// failure. Returns the result and the lease as the attempt left it.
    async fn attempt(
        store: &Mem,
        queue: &Queue,
        at_ms: i64,
    ) -> (Result<u32, SendError<StateError>>, Lease) {
        attempt_until(store, queue, at_ms, None).await
    }

    async fn attempt_until(
        store: &Mem,
        queue: &Queue,
        at_ms: i64,
        stop_at: Option<Instant>,
    ) -> (Result<u32, SendError<StateError>>, Lease) {
        let keys = StateKeys::new("state/", "raw/", KEY);
        let ttl = Duration::from_secs(60);
        let mut claim = Claim::take(
            store.at(at_ms),
            &keys,
            crate::object::lease::Claimant {
                owner: "p",
                sole: true,
            },
            "fp",
            ttl,
        )
        .await
        .unwrap()
        .expect("the lease should be free");
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for index in 0..CHUNKS {
                let chunk = Chunk {
                    index,
                    records: 1,
                    span: [u64::from(index), u64::from(index) + 1],
                    body: b"{}".to_vec(),
                    payload_size: None,
                    stream: None,
                };
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
        });
        let target: Target<'_, Mem, Queue> = Target {
            origin: Origin {
                source_key: KEY,
                dedup_base: "b/raw/s/o.json.zst\0v1",
                trace: None,
            },
            sink: queue,
            stop_at,
            payloads: None,
        };
        let result = send_all(&target, &mut rx, &mut claim).await;
        let lease = claim.lease().clone();
        if matches!(
            result,
            Err(SendError::Queue(_) | SendError::Deadline { .. })
        ) {
            claim.release().await;
        }
        (result, lease)
    }

    #[tokio::test]
    async fn a_partly_accepted_batch_is_never_sent_again() {
        let store = Mem::default();
        let queue = Queue::scripted(&[Fault::StoreEvenOnly]);
        let (first, _) = attempt(&store, &queue, 0).await;
        assert!(matches!(first, Err(SendError::Queue(_))), "{first:?}");
        let (second, lease) = attempt(&store, &queue, 1000).await;
        assert_eq!(second.unwrap(), CHUNKS - 5);
        let counts = queue.counts();
        assert_eq!(counts.len() as u32, CHUNKS, "every chunk arrived");
        assert!(
            counts.values().all(|n| *n == 1),
            "the even chunks SQS took the first time were not sent again: {counts:?}"
        );
        assert_eq!(lease.next_chunk, CHUNKS);
    }

    #[tokio::test]
    async fn a_deadline_stops_between_batches_with_everything_sent_recorded() {
        let store = Mem::default();
        let queue = Queue::default().slow(Duration::from_millis(100));
        // Time for about two of the three batches.
        let stop_at = Instant::now() + Duration::from_millis(150);
        let (first, lease) = attempt_until(&store, &queue, 0, Some(stop_at)).await;
        let Err(SendError::Deadline { sent }) = first else {
            panic!("{first:?}")
        };
        assert!(
            (10..CHUNKS).contains(&sent),
            "stopped between batches: {sent}"
        );
        assert_eq!(lease.next_chunk, sent, "what was sent is recorded");
        // The next attempt resumes: every chunk once, none twice.
        let (second, _) = attempt(&store, &queue, 1000).await;
        assert_eq!(second.unwrap(), CHUNKS - sent);
        let counts = queue.counts();
        assert_eq!(counts.len() as u32, CHUNKS);
        assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    }

    #[tokio::test]
    async fn a_lost_answer_resends_that_batch_and_nothing_else() {
        let store = Mem::default();
        // The second batch (chunks 10..20) is stored, but its answer is lost.
        let queue = Queue::scripted(&[Fault::None, Fault::LoseAnswer]);
        let (first, _) = attempt(&store, &queue, 0).await;
        assert!(matches!(first, Err(SendError::Queue(_))), "{first:?}");
        attempt(&store, &queue, 1000).await.0.unwrap();
        let twice = queue.resent();
        // The one-batch bound: SQS offers no conditional send, so a batch
        // whose answer is lost is sent again (FIFO drops it by its
        // deduplication ids, which do not change).
        assert_eq!(twice, (10..20).collect::<Vec<_>>());
        assert_eq!(queue.counts().len() as u32, CHUNKS);
    }

    /// What docs/guarantees.md states for a standard queue: each lost
    /// answer can add one copy of its batch, so two in a row give three
    /// copies of it, and nothing else is sent twice.
    #[tokio::test]
    async fn two_lost_answers_in_a_row_give_three_copies_of_that_batch_and_no_more() {
        let store = Mem::default();
        let queue = Queue::scripted(&[Fault::None, Fault::LoseAnswer, Fault::LoseAnswer]);
        for at in [0, 1000] {
            let (lost, _) = attempt(&store, &queue, at).await;
            assert!(matches!(lost, Err(SendError::Queue(_))), "{lost:?}");
        }
        attempt(&store, &queue, 2000).await.0.unwrap();
        let counts = queue.counts();
        assert_eq!(counts.len() as u32, CHUNKS);
        for (chunk, n) in counts {
            let want = if (10..20).contains(&chunk) { 3 } else { 1 };
            assert_eq!(n, want, "chunk {chunk}");
        }
    }

    #[tokio::test]
    async fn a_refused_chunk_holds_up_nothing_after_it_and_is_recorded() {
        let store = Mem::default();
        let queue = Queue::scripted(&[Fault::Refuse(3)]);
        let (result, lease) = attempt(&store, &queue, 0).await;
        assert_eq!(result.unwrap(), CHUNKS - 1);
        let counts = queue.counts();
        assert!(!counts.contains_key(&3));
        assert_eq!(counts.len() as u32, CHUNKS - 1, "every other chunk arrived");
        assert!(counts.values().all(|n| *n == 1));
        assert_eq!(lease.refused_count, 1);
        assert_eq!(lease.refused[0].chunk, 3);
        assert!(lease.refused[0].reason.contains("InvalidParameterValue"));
        assert_eq!(lease.next_chunk, CHUNKS);
    }
}
