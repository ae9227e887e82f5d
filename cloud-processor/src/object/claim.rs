//! The claim on one object: its lease, held by one attempt, with one owner.
//!
//! A claim ends one way: finished (the done marker is written and the lease
//! deleted), released after a failure (its progress recorded and the
//! object free at once), abandoned (the object is gone), or left to expire
//! (its lease was lost to another processor, or the attempt broke). No
//! error can drop a held claim: the attempt's one way out, its settling,
//! releases it on every early return, and confirming a fresh lease releases
//! it if the marker cannot be read. While the object's chunks are sent
//! it is their [`Progress`]: it knows which chunks are settled, and it
//! decides when a send may start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay_shared::store::ObjectStore;
use tracing::{info, warn};

use crate::metrics as m;
use crate::object::ObjectRef;
use crate::object::error::Failure;
use crate::object::lease::{self, Acquired, Claimant, Held, Lease, StateError};
use crate::object::marker::{DoneMarker, StateKeys};
use crate::output::{BatchOutcome, Progress};
use crate::pipeline::body::Chunk;

/// This attempt's lease on one object.
#[derive(Debug)]
pub struct Claim<'a, S: ObjectStore> {
    store: &'a S,
    keys: &'a StateKeys,
    held: Held,
    /// The chunk the lease recorded when it was taken: where this attempt
    /// resumes (0 for a fresh start).
    resumed_from: u32,
    /// The lease is not written again: another processor took it over, or
    /// a write of it failed (it may be someone else's by now).
    lost: bool,
    /// Left to expire instead of released: the attempt broke (a bug), and
    /// the retry resumes from its last record.
    leave: bool,
    /// Not yet finished, released or abandoned.
    open: bool,
}

/// The objects this process's attempts are on, so that a live lease in the
/// process's own name tells a sibling attempt (wait for it) from one of our
/// own calls whose answer was lost (take it on at once). Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Attempts(Arc<Mutex<HashMap<String, u32>>>);

/// One attempt's place in [`Attempts`], until it is dropped.
#[derive(Debug)]
pub struct Entered<'a> {
    attempts: &'a Attempts,
    object: String,
    /// No other attempt of this process is on the object.
    pub sole: bool,
}

impl Attempts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts an attempt on `obj` in, until the guard drops.
    pub fn enter(&self, obj: &ObjectRef) -> Entered<'_> {
        let object = format!("{}/{}", obj.bucket, obj.key);
        let mut on = self.lock();
        let n = on.entry(object.clone()).or_default();
        *n += 1;
        Entered {
            attempts: self,
            sole: *n == 1,
            object,
        }
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        let mut on = self.attempts.lock();
        if let Some(n) = on.get_mut(&self.object) {
            *n -= 1;
            if *n == 0 {
                on.remove(&self.object);
            }
        }
    }
}

pub(crate) use crate::object::lease::now_ms;

impl<'a, S: ObjectStore> Claim<'a, S> {
    /// Takes the object on: `None` if its done marker exists (the event is
    /// a duplicate). A live lease of another processor (or of another
    /// attempt of this one), or one left mid-file under other settings, is
    /// an error that says so.
    pub async fn take(
        store: &'a S,
        keys: &'a StateKeys,
        claimant: Claimant<'_>,
        fingerprint: &str,
        ttl: Duration,
    ) -> Result<Option<Self>, Failure> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let acquired = lease::acquire(store, keys, claimant, fingerprint, ttl_ms, now_ms()).await?;
        let held = match acquired {
            Acquired::Ours(held) => *held,
            Acquired::Done => return Ok(None),
            Acquired::Busy {
                owner,
                expires_in_ms,
            } => {
                return Err(Failure::Busy {
                    owner,
                    expires_in_ms,
                });
            }
            Acquired::ConfigChanged {
                owner,
                next_chunk,
                theirs,
                ours,
            } => {
                return Err(Failure::ConfigChanged {
                    owner,
                    next_chunk,
                    theirs,
                    ours,
                    lease: keys.lease.clone(),
                });
            }
        };
        Ok(Some(Self {
            store,
            keys,
            resumed_from: held.lease.next_chunk,
            held,
            lost: false,
            leave: false,
            open: true,
        }))
    }

    /// Says so when this claim takes over an object another processor left:
    /// resuming, and, on a FIFO queue, whether the batch it may have sent
    /// unrecorded is outside SQS's deduplication window.
    pub fn note_takeover(&self, fifo: bool) {
        let resumed_from = self.resumed_from();
        if let Some(age_ms) = self.held.taken_over_after_ms
            && fifo
            && lease::outside_fifo_window(age_ms)
        {
            metrics::counter!(m::FIFO_WINDOW_EXCEEDED).increment(1);
            warn!(
                age_ms,
                resumed_from,
                "taking over an object whose previous holder last recorded progress over 5 minutes ago: \
                 a batch it sent unrecorded, if any, is outside SQS FIFO's deduplication window and arrives twice"
            );
        }
        if let Some(theirs) = &self.held.changed_from {
            metrics::counter!(m::SETTINGS_CHANGED).increment(1);
            warn!(
                theirs = %theirs,
                ours = %self.held.lease.fingerprint,
                first_chunk = self.held.lease.first_chunk,
                "the object was half-sent under other settings: its records sent then keep their shape, \
                 the rest are sent under ours, numbered from first_chunk"
            );
            return;
        }
        if resumed_from == 0 {
            return;
        }
        if self.held.took_released {
            info!(
                resumed_from,
                "resuming an object from its recorded progress (an earlier attempt stopped and released it)"
            );
        } else {
            warn!(
                resumed_from,
                "resuming an object another processor left unfinished"
            );
        }
    }

    /// The chunk this claim resumes after (0 for a fresh start).
    pub fn resumed_from(&self) -> u32 {
        self.resumed_from
    }

    /// The lease as this claim holds it: its progress and refusals.
    pub fn lease(&self) -> &Lease {
        &self.held.lease
    }

    /// Counts a read whose bytes did not match S3's checksum (kept in the
    /// lease when it is released); returns how many there were.
    pub fn note_checksum_failure(&mut self) -> u32 {
        self.held.lease.checksum_failures += 1;
        self.held.lease.checksum_failures
    }

    /// Leaves the lease to expire rather than releasing it.
    pub fn leave(&mut self) {
        self.leave = true;
    }

    /// After a clean failure, lets the next attempt resume at once instead
    /// of waiting for the lease to expire, recording what SQS settled.
    /// Best effort: expiry does the same.
    /// Does nothing for a claim already finished, released or abandoned.
    pub async fn release(&mut self) {
        if !std::mem::replace(&mut self.open, false) || self.lost || self.leave {
            return;
        }
        if let Err(e) = lease::release_retried(self.store, self.keys, &mut self.held).await {
            warn!(lease = %self.keys.lease, error = %e, "could not release the lease; the next attempt waits for it to expire");
        }
    }

    /// Gives the lease up for an object that vanished: nothing is left to
    /// send, so there is no progress to keep.
    pub async fn abandon(&mut self) {
        self.open = false;
        lease::abandon(self.store, self.keys, &self.held).await;
    }

    /// Writes the done marker, then drops the lease. A claim whose marker
    /// could not be written stays open, to be released.
    pub async fn finish(&mut self, marker: &DoneMarker) -> Result<(), Failure> {
        lease::finish(self.store, self.keys, &self.held, marker).await?;
        self.open = false;
        Ok(())
    }
}

/// A claim dropped while still open means a way out of an attempt that
/// did not settle it (a bug, or a cancelled attempt, which a crash looks
/// like): its lease expires. Said, so that it is seen.
impl<S: ObjectStore> Drop for Claim<'_, S> {
    fn drop(&mut self) {
        if self.open && !self.lost && !self.leave {
            warn!(lease = %self.keys.lease, "an attempt ended without settling its lease; it expires");
        }
    }
}

impl<S: ObjectStore> Progress for Claim<'_, S> {
    type Error = StateError;

    fn is_settled(&self, chunk: u32) -> bool {
        self.held.lease.is_settled(chunk)
    }

    fn renew_every(&self) -> Duration {
        Duration::from_millis((self.ttl_ms() / 3).max(1000))
    }

    /// A send starts only with most of the lease left: one that starts late
    /// may land after another processor took the object over, which on a
    /// standard queue is a duplicate. Its retries start only while two
    /// thirds of the lease remain: each call's operation timeout is at most
    /// the last third.
    async fn before_send(&mut self) -> Result<Instant, StateError> {
        let ttl_ms = self.ttl_ms();
        if self.held.left_ms() < ttl_ms / 3 {
            self.record().await?;
        }
        self.held.unrecorded_since = Some(Instant::now());
        Ok(self.held.renewed + Duration::from_millis(ttl_ms - ttl_ms / 3))
    }

    fn settle(&mut self, batch: &[Chunk], outcome: &BatchOutcome) {
        let span_of = |index| batch.iter().find(|c| c.index == index).map(|c| c.span);
        self.held
            .lease
            .settle(&outcome.accepted, &outcome.refused, span_of);
    }

    /// A failed write of the lease may have left it someone else's by now:
    /// it is not written again.
    async fn record(&mut self) -> Result<(), StateError> {
        let renewed = lease::renew(self.store, self.keys, &mut self.held, now_ms()).await;
        self.lost |= renewed.is_err();
        renewed
    }
}

impl<S: ObjectStore> Claim<'_, S> {
    fn ttl_ms(&self) -> u64 {
        self.held.lease.ttl_ms.unwrap_or(0)
    }
}

/// Logs a duplicate event, found done.
pub fn note_duplicate() {
    info!("already processed (done marker exists); skipping the duplicate event");
}
