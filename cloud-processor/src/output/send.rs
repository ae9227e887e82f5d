//! The send loop: an object's chunks, in order, batched and sent through a
//! [`MessageSink`], with the lease recording every chunk SQS settled, so that no
//! retry resends one SQS stored, and a chunk SQS refuses for good holds up
//! nothing after it. Generic over the store and the sink, so the cases that
//! need faults (a partly accepted batch, a lost answer, a refusal) are unit
//! tests.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use relay_shared::store::ObjectStore;
use tokio::sync::mpsc;

use crate::object::lease::{Held, StateError};
use crate::object::marker::StateKeys;
use crate::output::batch::{Batcher, DEFAULT_MAX_BATCH_BYTES};
use crate::output::payload::{PayloadError, Payloads, offload};
use crate::output::sink::MessageSink;
use crate::pipeline::body::Chunk;
use crate::sqs::SqsError;

/// Where one object's chunks go, and what records their progress.
#[derive(Debug)]
pub struct Target<'a, S, K> {
    pub store: &'a S,
    pub keys: &'a StateKeys,
    pub sink: &'a K,
    pub source_key: &'a str,
    pub dedup_base: &'a str,
    /// Start no batch after this (an invocation's deadline, less a margin).
    pub stop_at: Option<Instant>,
    /// Where records too large for a message go.
    pub payloads: Option<Payloads<'a, S>>,
}

/// Why sending stopped before the chunks ran out.
#[derive(Debug)]
pub enum Stopped {
    /// SQS did not take a batch. The lease is still ours: release it, which
    /// records what SQS did take.
    Send(SqsError),
    /// The lease is someone else's now, or could not be written.
    State(StateError),
    /// `stop_at` came: every batch sent is recorded in `held`; release it.
    Deadline { sent: u32 },
    /// An offloaded record could not be stored. The lease is still ours.
    Payload(PayloadError),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sends every chunk from `chunks` that `held`'s lease does not record as
/// settled, renewing the lease while chunks are awaited and recording
/// progress after every batch but the last (the done marker that follows
/// records it). Returns how many chunks SQS stored now.
pub async fn send_all<S: ObjectStore, K: MessageSink>(
    t: &Target<'_, S, K>,
    chunks: &mut mpsc::Receiver<Chunk>,
    held: &mut Held,
) -> Result<u32, Stopped> {
    let ttl_ms = held.lease.ttl_ms.unwrap_or(0);
    let mut batcher = Batcher::new(DEFAULT_MAX_BATCH_BYTES, t.source_key);
    let mut renew = tokio::time::interval(Duration::from_millis((ttl_ms / 3).max(1000)));
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
                    Some(c) if held.lease.is_settled(c.index) => continue,
                    Some(c) => {
                        let c = match c.payload_size {
                            Some(_) => offload(t.payloads.as_ref(), t.source_key, t.dedup_base, c)
                                .await
                                .map_err(Stopped::Payload)?,
                            None => c,
                        };
                        match batcher.push(c) {
                            Some(b) => b,
                            None => continue,
                        }
                    }
                    None => {
                        flushing = true;
                        continue;
                    }
                },
                _ = renew.tick() => {
                    crate::object::lease::renew(t.store, t.keys, held, now_ms()).await.map_err(Stopped::State)?;
                    continue;
                }
            }
        };
        if t.stop_at.is_some_and(|stop| Instant::now() >= stop) {
            return Err(Stopped::Deadline { sent });
        }
        // Start a send only with most of the lease left: one that starts
        // late may land after another processor took the object over,
        // which on a standard queue is a duplicate.
        if held.left_ms() < ttl_ms / 3 {
            crate::object::lease::renew(t.store, t.keys, held, now_ms())
                .await
                .map_err(Stopped::State)?;
        }
        held.unrecorded_since = Some(Instant::now());
        // Retries start only while two thirds of the lease remain: each
        // call's operation timeout is at most the last third.
        let until = held.renewed + Duration::from_millis(ttl_ms - ttl_ms / 3);
        let outcome = t.sink.send(t.source_key, t.dedup_base, &batch, until).await;
        held.lease.settle(&outcome.accepted, &outcome.refused);
        sent += outcome.accepted.len() as u32;
        for (chunk, reason) in &outcome.refused {
            tracing::error!(chunk, %reason, "SQS refused a message for good; the object will be quarantined once everything else is sent");
        }
        if let Some(e) = outcome.failed {
            return Err(Stopped::Send(e));
        }
        // The last batch's progress is recorded by the done marker that
        // follows at once: a progress write here would only add a PUT to
        // every object (a third for a single-batch one). A crash before
        // the marker resends this batch, as a crash before any progress
        // write would.
        if !flushing {
            crate::object::lease::renew(t.store, t.keys, held, now_ms())
                .await
                .map_err(Stopped::State)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::lease::{Acquired, acquire, release};
    use crate::testing::{FakeQueue as Queue, SendFault as Fault};
    use relay_shared::testing::MemStore as Mem;

    const CHUNKS: u32 = 30;

    /// One attempt at the object, as the handler makes it: take the lease,
    /// send every chunk it does not record, release it after a failure.
    async fn attempt(store: &Mem, queue: &Queue, at_ms: i64) -> (Result<u32, Stopped>, Held) {
        attempt_until(store, queue, at_ms, None).await
    }

    async fn attempt_until(
        store: &Mem,
        queue: &Queue,
        at_ms: i64,
        stop_at: Option<Instant>,
    ) -> (Result<u32, Stopped>, Held) {
        let keys = StateKeys::new("state/", "raw/", "raw/s/o.json.zst");
        let Acquired::Ours(mut held) = acquire(store.at(at_ms), &keys, "p", "fp", 60_000, 0)
            .await
            .unwrap()
        else {
            panic!("the lease should be free")
        };
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for index in 0..CHUNKS {
                let chunk = Chunk {
                    index,
                    records: 1,
                    body: b"{}".to_vec(),
                    payload_size: None,
                    stream: None,
                };
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
        });
        let target = Target {
            store,
            keys: &keys,
            sink: queue,
            source_key: "raw/s/o.json.zst",
            dedup_base: "b/raw/s/o.json.zst\0v1",
            stop_at,
            payloads: None,
        };
        let result = send_all(&target, &mut rx, &mut held).await;
        if matches!(result, Err(Stopped::Send(_) | Stopped::Deadline { .. })) {
            release(store, &keys, &mut held, 0).await.unwrap();
        }
        (result, held)
    }

    #[tokio::test]
    async fn a_partly_accepted_batch_is_never_sent_again() {
        let store = Mem::default();
        let queue = Queue::scripted(&[Fault::StoreEvenOnly]);
        let (first, _) = attempt(&store, &queue, 0).await;
        assert!(matches!(first, Err(Stopped::Send(_))), "{first:?}");
        let (second, held) = attempt(&store, &queue, 1000).await;
        assert_eq!(second.unwrap(), CHUNKS - 5);
        let counts = queue.counts();
        assert_eq!(counts.len() as u32, CHUNKS, "every chunk arrived");
        assert!(
            counts.values().all(|n| *n == 1),
            "the even chunks SQS took the first time were not sent again: {counts:?}"
        );
        assert_eq!(held.lease.next_chunk, CHUNKS);
    }

    #[tokio::test]
    async fn a_deadline_stops_between_batches_with_everything_sent_recorded() {
        let store = Mem::default();
        let queue = Queue::default().slow(Duration::from_millis(100));
        // Time for about two of the three batches.
        let stop_at = Instant::now() + Duration::from_millis(150);
        let (first, held) = attempt_until(&store, &queue, 0, Some(stop_at)).await;
        let Err(Stopped::Deadline { sent }) = first else {
            panic!("{first:?}")
        };
        assert!(
            (10..CHUNKS).contains(&sent),
            "stopped between batches: {sent}"
        );
        assert_eq!(held.lease.next_chunk, sent, "what was sent is recorded");
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
        assert!(matches!(first, Err(Stopped::Send(_))), "{first:?}");
        attempt(&store, &queue, 1000).await.0.unwrap();
        let twice = queue.resent();
        // The one-batch bound: SQS offers no conditional send, so a batch
        // whose answer is lost is sent again (FIFO drops it by its
        // deduplication ids, which do not change).
        assert_eq!(twice, (10..20).collect::<Vec<_>>());
        assert_eq!(queue.counts().len() as u32, CHUNKS);
    }

    #[tokio::test]
    async fn a_refused_chunk_holds_up_nothing_after_it_and_is_recorded() {
        let store = Mem::default();
        let queue = Queue::scripted(&[Fault::Refuse(3)]);
        let (result, held) = attempt(&store, &queue, 0).await;
        assert_eq!(result.unwrap(), CHUNKS - 1);
        let counts = queue.counts();
        assert!(!counts.contains_key(&3));
        assert_eq!(counts.len() as u32, CHUNKS - 1, "every other chunk arrived");
        assert!(counts.values().all(|n| *n == 1));
        assert_eq!(held.lease.refused_count, 1);
        assert_eq!(held.lease.refused[0].chunk, 3);
        assert!(
            held.lease.refused[0]
                .reason
                .contains("InvalidParameterValue")
        );
        assert_eq!(held.lease.next_chunk, CHUNKS);
    }
}
