//! The send loop: an object's chunks, in order, batched and sent through a
//! [`MessageSink`], with the lease recording every chunk SQS settled, so that no
//! retry resends one SQS stored, and a chunk SQS refuses for good holds up
//! nothing after it. Generic over the store and the sink, so the cases that
//! need faults (a partly accepted batch, a lost answer, a refusal) are unit
//! tests.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use std::io::Read;

use relay_shared::meta::{CONTENT_HASH, content_hash_hex};
use relay_shared::store::{ObjectStore, PutMode, PutOptions, S3Error};
use xxhash_rust::xxh3::Xxh3;

use crate::object::state::{self, Held, StateError, StateKeys};
use crate::output::sqs::{MessageSink, SendError};
use crate::pipeline::body::{Batcher, Chunk, DEFAULT_MAX_BATCH_BYTES, pointer_body};
use crate::pipeline::stream::Body;

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

/// Where offloaded records go: a store addressing the payload bucket, and
/// a key prefix.
#[derive(Debug)]
pub struct Payloads<'a, S> {
    pub store: &'a S,
    pub prefix: &'a str,
}

/// The payload key of chunk `index` of the object read as `dedup_base`:
/// the same object version and chunk always give the same key, so a resend
/// after a crash finds its payload instead of writing a second one.
pub fn payload_key(prefix: &str, source_key: &str, dedup_base: &str, index: u32) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(dedup_base.as_bytes());
    let version = format!("{digest:x}");
    format!("{prefix}{source_key}/{}/{index:06}.json", &version[..16])
}

/// Why an offloaded record could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error("s3://{bucket}/{key} holds other bytes than this record; it was not overwritten")]
    Clash { bucket: String, key: String },
    #[error("chunk {index} is a record too large for a message, and no payload location is set")]
    Nowhere { index: u32 },
    #[error("reading the spooled record for s3://{bucket}/{key} failed: {source}")]
    Spool {
        bucket: String,
        key: String,
        source: std::io::Error,
    },
}

/// Parts of a streamed payload (S3 wants at least 5 MiB but for the last).
pub const PAYLOAD_PART_BYTES: usize = 8 << 20;

/// Stores `chunk`'s record as its payload object (a conditional create; a
/// payload already there with the same bytes is one an earlier attempt
/// wrote) and turns the chunk into its claim check.
async fn offload<S: ObjectStore, K>(
    t: &Target<'_, S, K>,
    mut chunk: Chunk,
) -> Result<Chunk, PayloadError> {
    let p = t
        .payloads
        .as_ref()
        .ok_or(PayloadError::Nowhere { index: chunk.index })?;
    let key = payload_key(p.prefix, t.source_key, t.dedup_base, chunk.index);
    let options = PutOptions {
        content_type: Some("application/json".into()),
        ..PutOptions::default()
    };
    if let Some(body) = chunk.stream.take() {
        store_streamed(p, &key, body, options).await?;
        metrics::counter!(crate::metrics::OFFLOADED).increment(1);
        chunk.body = pointer_body(p.store.name(), &key);
        return Ok(chunk);
    }
    match p
        .store
        .put(&key, chunk.body.clone(), &PutMode::Create, &options)
        .await
    {
        Ok(_) => {}
        Err(S3Error::AlreadyExists { .. }) => {
            if p.store.get_small(&key).await?.bytes != chunk.body {
                return Err(PayloadError::Clash {
                    bucket: p.store.name().to_owned(),
                    key,
                });
            }
        }
        Err(e) => return Err(e.into()),
    }
    metrics::counter!(crate::metrics::OFFLOADED).increment(1);
    chunk.body = pointer_body(p.store.name(), &key);
    Ok(chunk)
}

/// Runs `f` on the body where blocking is allowed, and hands the body back.
async fn with_body<T: Send + 'static>(
    mut body: Body,
    f: impl FnOnce(&mut Body) -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<(Body, T)> {
    tokio::task::spawn_blocking(move || f(&mut body).map(|t| (body, t)))
        .await
        .map_err(std::io::Error::other)?
}

/// The next part of a streamed body: up to [`PAYLOAD_PART_BYTES`].
fn next_part(body: &mut Body) -> std::io::Result<Vec<u8>> {
    let mut part = Vec::with_capacity(PAYLOAD_PART_BYTES);
    body.take(PAYLOAD_PART_BYTES as u64)
        .read_to_end(&mut part)?;
    Ok(part)
}

/// Stores a record read from its spools, a part at a time, so it is never
/// held whole: a conditional create as for any payload. Its xxh3 goes in
/// the metadata first (a pass over the spools), so a payload already there
/// proves it holds the same bytes without a download.
async fn store_streamed<S: ObjectStore>(
    p: &Payloads<'_, S>,
    key: &str,
    body: Body,
    mut options: PutOptions,
) -> Result<(), PayloadError> {
    let spool = |source| PayloadError::Spool {
        bucket: p.store.name().to_owned(),
        key: key.to_owned(),
        source,
    };
    let (mut body, hash) = with_body(body, |b| {
        let mut h = Xxh3::new();
        std::io::copy(b, &mut HashWriter(&mut h))?;
        b.rewind()?;
        Ok(h.digest128())
    })
    .await
    .map_err(spool)?;
    let hash = content_hash_hex(hash);
    options
        .metadata
        .insert(CONTENT_HASH.to_owned(), hash.clone());
    let stored = if body.len() <= PAYLOAD_PART_BYTES as u64 {
        let (_, bytes) = with_body(body, next_part).await.map_err(spool)?;
        p.store.put(key, bytes, &PutMode::Create, &options).await
    } else {
        let id = p.store.start_multipart(key, &options).await?;
        let mut parts = Vec::new();
        let done = loop {
            let (b, bytes) = with_body(body, next_part).await.map_err(spool)?;
            body = b;
            if bytes.is_empty() {
                break p
                    .store
                    .complete_multipart(key, &id, parts, &PutMode::Create)
                    .await;
            }
            let number = parts.len() as i32 + 1;
            match p.store.put_part(key, &id, number, bytes).await {
                Ok(part) => parts.push(part),
                Err(e) => break Err(e),
            }
        };
        if done.is_err() {
            // Parts of an upload that never completes are billed until
            // aborted (the bucket's lifecycle also cleans them up).
            let _ = p.store.abort_multipart(key, &id).await;
        }
        done
    };
    match stored {
        Ok(_) => Ok(()),
        Err(S3Error::AlreadyExists { .. }) => {
            let theirs = p.store.head(key).await?;
            if theirs.is_some_and(|h| h.metadata.get(CONTENT_HASH) == Some(&hash)) {
                Ok(())
            } else {
                Err(PayloadError::Clash {
                    bucket: p.store.name().to_owned(),
                    key: key.to_owned(),
                })
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Feeds what is written to a hasher.
struct HashWriter<'a>(&'a mut Xxh3);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Why sending stopped before the chunks ran out.
#[derive(Debug)]
pub enum Stopped {
    /// SQS did not take a batch. The lease is still ours: release it, which
    /// records what SQS did take.
    Send(SendError),
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
                            Some(_) => offload(t, c).await.map_err(Stopped::Payload)?,
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
                    state::renew(t.store, t.keys, held, now_ms()).await.map_err(Stopped::State)?;
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
            state::renew(t.store, t.keys, held, now_ms())
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
            state::renew(t.store, t.keys, held, now_ms())
                .await
                .map_err(Stopped::State)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::state::{Acquired, acquire, release};
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
