//! Test support: an in-memory queue that follows a script of faults, a
//! sink that crashes the process's send path at a chosen batch, and a
//! notification queue that records what is handed on or shown again. With
//! `relay_shared::testing::MemStore` they run the handler and the lease
//! protocol with no emulator. Compiled for tests and the `test-support`
//! feature only.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test support: failing loudly is its job.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::output::{BatchOutcome, MessageSink, Origin, QueueError};
use crate::pipeline::body::Chunk;
use relay_shared::trace::TraceContext;

/// What the fake queue does with one SendMessageBatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFault {
    /// Stores every chunk.
    None,
    /// Stores the even chunks; the odd ones fail and keep failing.
    StoreEvenOnly,
    /// Stores every chunk, but the answer is lost (a timeout).
    LoseAnswer,
    /// Refuses this chunk as the sender's fault and stores the rest.
    Refuse(u32),
}

/// A chunk's index and body, as stored.
type Stored = (u32, Vec<u8>);

/// A queue that keeps every message it stored, duplicates included, and
/// follows a script of faults, one per call. Clones share the queue.
#[derive(Debug, Clone)]
pub struct FakeQueue {
    stored: Arc<Mutex<Vec<Stored>>>,
    /// The trace each batch was sent under, in order.
    traces: Arc<Mutex<Vec<Option<TraceContext>>>>,
    script: Arc<Mutex<VecDeque<SendFault>>>,
    /// How long each send takes.
    delay: Duration,
    max_message_bytes: usize,
}

impl Default for FakeQueue {
    fn default() -> Self {
        Self::scripted(&[])
    }
}

fn gave_up() -> QueueError {
    QueueError::GaveUp {
        queue: "fake".into(),
        failed: 1,
        last: "ServiceUnavailable".into(),
    }
}

impl FakeQueue {
    /// A queue of 1 KiB messages that applies `faults` to its first calls.
    pub fn scripted(faults: &[SendFault]) -> Self {
        Self {
            stored: Arc::default(),
            traces: Arc::default(),
            script: Arc::new(Mutex::new(faults.iter().copied().collect())),
            delay: Duration::ZERO,
            max_message_bytes: 1024,
        }
    }

    /// Each send takes `delay`.
    pub fn slow(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// How often each chunk was stored.
    pub fn counts(&self) -> BTreeMap<u32, usize> {
        let mut counts = BTreeMap::new();
        for (c, _) in self.stored.lock().unwrap().iter() {
            *counts.entry(*c).or_default() += 1;
        }
        counts
    }

    /// The chunks stored more than once, in order.
    pub fn resent(&self) -> Vec<u32> {
        self.counts()
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(c, _)| c)
            .collect()
    }

    /// The trace each batch was sent under, in order.
    pub fn traces(&self) -> Vec<Option<TraceContext>> {
        self.traces.lock().unwrap().clone()
    }

    /// Every message body stored, in order, duplicates included.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.stored
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Every record stored, one per line of each body (NDJSON bodies), in
    /// order, duplicates included.
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.bodies()
            .iter()
            .flat_map(|b| b.split(|c| *c == b'\n'))
            .map(|line| serde_json::from_slice(line).unwrap())
            .collect()
    }
}

impl MessageSink for FakeQueue {
    async fn send(&self, origin: &Origin<'_>, batch: &[Chunk], _until: Instant) -> BatchOutcome {
        tokio::time::sleep(self.delay).await;
        self.traces.lock().unwrap().push(origin.trace);
        let fault = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(SendFault::None);
        let mut out = BatchOutcome::default();
        for c in batch {
            match fault {
                SendFault::StoreEvenOnly if c.index % 2 == 1 => out.failed = Some(gave_up()),
                SendFault::Refuse(r) if r == c.index => {
                    out.refused
                        .push((c.index, "InvalidParameterValue: no".into()));
                }
                _ => {
                    self.stored.lock().unwrap().push((c.index, c.body.clone()));
                    if fault != SendFault::LoseAnswer {
                        out.accepted.push(c.index);
                    }
                }
            }
        }
        if fault == SendFault::LoseAnswer {
            out.failed = Some(gave_up());
        }
        out
    }

    fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    fn is_fifo(&self) -> bool {
        false
    }

    fn queue_url(&self) -> &str {
        "fake"
    }
}

/// A notification queue that records each notification handed on (its
/// body, delay and hand-on count) and each one shown again early.
#[derive(Debug, Clone, Default)]
pub struct FakeNotifications {
    pub handed_on: Arc<Mutex<Vec<(String, Duration, u32)>>>,
    pub shown_again: Arc<Mutex<Vec<(String, Duration)>>>,
    /// Every hand-on fails, as SendMessage does when SQS is unreachable.
    pub refuse_hand_on: bool,
}

impl crate::ingest::NotificationQueue for FakeNotifications {
    async fn show_again(&self, receipt: &str, after: Duration) -> Result<(), QueueError> {
        self.shown_again
            .lock()
            .unwrap()
            .push((receipt.to_owned(), after));
        Ok(())
    }

    async fn hand_on(
        &self,
        body: &str,
        after: Duration,
        handoffs: u32,
    ) -> Result<bool, QueueError> {
        if self.refuse_hand_on {
            return Err(QueueError::Call {
                queue: "notifications".into(),
                op: "SendMessage",
                message: "unreachable".into(),
                class: relay_shared::retry::Class::Transient,
                cause: relay_shared::retry::Cause::Connection,
            });
        }
        self.handed_on
            .lock()
            .unwrap()
            .push((body.to_owned(), after, handoffs));
        Ok(true)
    }
}

/// A sink that passes batches on until the `batches`-th, which it sends
/// and then never answers: the process "dies" between a send SQS took and
/// the progress write after it. Run the work with [`until_crash`], which
/// drops it there, as a crash would: no lease release, no further write.
#[derive(Debug)]
pub struct CrashAfter<Q> {
    inner: Q,
    batches: u32,
    seen: AtomicU32,
    crashed: Arc<tokio::sync::Notify>,
}

impl<Q> CrashAfter<Q> {
    pub fn new(inner: Q, batches: u32) -> Self {
        Self {
            inner,
            batches,
            seen: AtomicU32::new(0),
            crashed: Arc::default(),
        }
    }
}

impl<Q: MessageSink> MessageSink for CrashAfter<Q> {
    async fn send(&self, origin: &Origin<'_>, batch: &[Chunk], until: Instant) -> BatchOutcome {
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        let outcome = self.inner.send(origin, batch, until).await;
        if n == self.batches {
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
        outcome
    }

    fn max_message_bytes(&self) -> usize {
        self.inner.max_message_bytes()
    }

    fn is_fifo(&self) -> bool {
        self.inner.is_fifo()
    }

    fn queue_url(&self) -> &str {
        self.inner.queue_url()
    }
}

/// Runs `work` until `sink` crashes, then drops it. `Some` with the work's
/// result if it finished without crashing.
pub async fn until_crash<T, Q>(work: impl Future<Output = T>, sink: &CrashAfter<Q>) -> Option<T> {
    tokio::select! {
        out = work => Some(out),
        () = sink.crashed.notified() => None,
    }
}

/// The benchmark's projection of `relay_shared::sample` records: 6 of
/// their ~26 fields, nested and indexed ones among them.
pub const SAMPLE_FIELDS: &str =
    "id,ts=timestamp,type,user_id=user.id,country=geo.country,first_tag=tags.0";

/// What serde_json's reference projection writes for each record of `text`,
/// a file from `SampleGen::new(seed).file(..)`, one entry per record in order.
pub fn sample_reference(
    seed: u64,
    text: &str,
    projection: &crate::pipeline::project::Projection,
) -> Vec<Vec<u8>> {
    let mut preamble = String::new();
    relay_shared::sample::SampleGen::new(seed).preamble(&mut preamble);
    assert!(text.starts_with(&preamble), "a file from another seed");
    text[preamble.len()..]
        .lines()
        .map(|record| {
            let mut out = Vec::new();
            projection
                .project_reference(record.as_bytes(), &mut out)
                .unwrap();
            out
        })
        .collect()
}
