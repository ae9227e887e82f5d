//! The once-only protocol's lease: S3 objects written with conditional
//! writes, and nothing else (no DynamoDB, no Redis).
//!
//! Per raw object `raw/<rel>` there are two state objects:
//! - `state/done/<rel>`, the done marker, created with `If-None-Match: *` once
//!   every chunk is sent. If it exists, an event for the object is a duplicate.
//! - `state/leases/<rel>`, the lease, created with `If-None-Match: *`. It names
//!   an owner, an expiry, a fingerprint of the settings that shape the
//!   chunks, and the next chunk to send. The owner advances it with `If-Match`
//!   after each acknowledged SendMessageBatch, which also renews it. A failed
//!   precondition means the lease was lost: the owner stops sending. An expired
//!   lease is taken over with `If-Match`, and the new owner resumes from the
//!   recorded chunk. That works because packing is deterministic.
//!
//! A lease left mid-file under other settings (an upgrade that changed the
//! fields, say) is resumed by record, not by chunk: the lease keeps the
//! position past the last record of its settled chunks, so the new holder
//! skips every record sent under the old settings and sends the rest under
//! the new ones, numbering its chunks after the old ones.
//!
//! A crash between a send and its progress write re-sends that one batch
//! on resume. SQS drops the resend for FIFO queues within its 5-minute
//! deduplication window. For standard queues it is the one possible duplicate.

use std::future::Future;
use std::time::Instant;

use std::collections::BTreeMap;

use relay_shared::retry::{Class, Classified};

use relay_shared::store::{ObjectStore, PutMode, S3Error, SmallObject};
use serde::{Deserialize, Serialize};

use crate::object::marker::{DoneMarker, StateKeys, StateObjects};
use crate::pipeline::{Position, Resume};

/// This host's clock, in ms since the epoch: it only fills a lease's
/// `expires_at_ms` for people, and judges leases of older processors.
pub(crate) use relay_shared::meta::now_ms;

/// SQS FIFO drops a resent message only within this long of the first send.
pub const FIFO_DEDUP_WINDOW_MS: u64 = 5 * 60 * 1000;

/// Time from taking a lease over to resending its first batch, at most,
/// when judging whether the resend is still inside FIFO's window.
const RESEND_LEAD_MS: u64 = 10_000;

/// Whether a takeover may resend its previous holder's unrecorded batch
/// outside SQS FIFO's deduplication window, given that the batch was
/// started at most `age_ms` ago ([`Held::taken_over_after_ms`]).
pub fn outside_fifo_window(age_ms: u64) -> bool {
    age_ms + RESEND_LEAD_MS > FIFO_DEDUP_WINDOW_MS
}

/// S3 gives `Last-Modified` and `Date` in whole seconds: a lease is judged
/// expired only once S3's clock is past its write plus TTL by this much.
const S3_CLOCK_GRAIN_MS: u64 = 1000;

/// What the processor keeps about an object in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    /// The holder's wall clock, for people reading the lease. Takers judge
    /// expiry by `ttl_ms` on S3's clock, so skewed hosts cannot disagree.
    pub expires_at_ms: u64,
    /// The lease binds for this long after its last write, measured from
    /// its `Last-Modified` against S3's `Date`; 0 means released. Leases of
    /// older processors lack it and are judged by `expires_at_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// Of everything that decides how records are cut into chunks.
    pub fingerprint: String,
    /// Chunks below this index are settled: SQS stored them, or refused
    /// them for good.
    pub next_chunk: u32,
    /// Settled chunks above `next_chunk`, from a batch SQS took in part: no
    /// retry sends them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settled: Vec<u32>,
    /// Chunks SQS refused for good (the first [`MAX_REFUSED_KEPT`], with
    /// reasons): once everything else is sent, the object is quarantined.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<Refused>,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub refused_count: u32,
    /// Written on release after a failure: how long before this write the
    /// holder started a send that SQS may have applied unrecorded (0: none).
    /// Crashed holders leave no such note, and need none: their last write
    /// came before any unrecorded send.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unrecorded_for_ms: u64,
    /// Reads of the object whose bytes did not match S3's checksum: after
    /// [`MAX_CHECKSUM_FAILURES`], it is quarantined.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub checksum_failures: u32,
    /// Chunks are numbered from here under this lease's settings, after
    /// every number used under earlier ones (0 unless they changed).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub first_chunk: u32,
    /// Records handled under earlier settings (see [`Resume`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<[Position; 2]>,
    /// One past the position of the last record in the chunks below
    /// `next_chunk`: every record before it was sent or rejected. `None`
    /// when no chunk is, or when a lease of an older processor never said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<Position>,
    /// The record spans of the chunks in `settled`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub spans: BTreeMap<u32, [Position; 2]>,
}

/// Reads that may fail S3's checksum before the object is quarantined.
pub const MAX_CHECKSUM_FAILURES: u32 = 3;

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// Refused chunks whose reasons a lease keeps; the count is exact.
pub const MAX_REFUSED_KEPT: usize = 100;

/// A chunk SQS refused as the sender's fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub chunk: u32,
    pub reason: String,
}

impl Lease {
    /// A lease on an object nothing was sent of yet.
    pub fn fresh(owner: &str, fingerprint: &str, ttl_ms: u64, now_ms: u64) -> Self {
        Self {
            owner: owner.to_owned(),
            expires_at_ms: now_ms + ttl_ms,
            ttl_ms: Some(ttl_ms),
            fingerprint: fingerprint.to_owned(),
            next_chunk: 0,
            settled: Vec::new(),
            refused: Vec::new(),
            refused_count: 0,
            unrecorded_for_ms: 0,
            checksum_failures: 0,
            first_chunk: 0,
            earlier: Vec::new(),
            through: None,
            spans: BTreeMap::new(),
        }
    }

    /// Whether `chunk` needs no sending: SQS stored it or refused it.
    pub fn is_settled(&self, chunk: u32) -> bool {
        chunk < self.next_chunk || self.settled.contains(&chunk)
    }

    /// Records what SQS did with some chunks, whose record spans `span_of`
    /// gives, keeping the lease compact: `next_chunk` moves past every
    /// settled chunk in a row.
    pub fn settle(
        &mut self,
        accepted: &[u32],
        refused: &[(u32, String)],
        span_of: impl Fn(u32) -> Option<[Position; 2]>,
    ) {
        for &chunk in accepted.iter().chain(refused.iter().map(|(c, _)| c)) {
            if !self.is_settled(chunk) {
                self.settled.push(chunk);
                if let Some(span) = span_of(chunk) {
                    self.spans.insert(chunk, span);
                }
            }
        }
        for (chunk, reason) in refused {
            self.refused_count += 1;
            if self.refused.len() < MAX_REFUSED_KEPT {
                self.refused.push(Refused {
                    chunk: *chunk,
                    reason: reason.clone(),
                });
            }
        }
        while let Some(at) = self.settled.iter().position(|&c| c == self.next_chunk) {
            self.settled.swap_remove(at);
            // Spans grow with the chunk number: the last one absorbed ends
            // the prefix.
            self.through = self.spans.remove(&self.next_chunk).map(|[_, end]| end);
            self.next_chunk += 1;
        }
        self.settled.sort_unstable();
    }

    /// How a run under this lease's settings picks up the object.
    pub fn resume(&self) -> Resume {
        Resume {
            earlier: self.earlier.clone(),
            first_chunk: self.first_chunk,
        }
    }

    /// Everything this lease handled, as a run under other settings would
    /// skip it; `None` if it cannot say (an older processor's lease that
    /// settled chunks without recording their records).
    pub fn handled(&self) -> Option<Resume> {
        let mut ranges = self.earlier.clone();
        if self.next_chunk > self.first_chunk {
            ranges.push([0, self.through?]);
        }
        for chunk in &self.settled {
            ranges.push(*self.spans.get(chunk)?);
        }
        let used = self.settled.iter().max().map_or(0, |&c| c + 1);
        Some(Resume::new(ranges, used.max(self.next_chunk)))
    }

    /// Whether the lease records any progress: chunks settled under its
    /// settings, or records handled under earlier ones.
    fn has_progress(&self) -> bool {
        self.next_chunk > self.first_chunk || !self.settled.is_empty() || !self.earlier.is_empty()
    }
}

/// How much longer a lease read as `stored` binds other processors. By
/// S3's clock where S3 gave its times; by the holder's written expiry
/// against `local_now_ms` only for leases of older processors.
pub fn remaining_ms(lease: &Lease, stored: &SmallObject, local_now_ms: u64) -> u64 {
    match (lease.ttl_ms, stored.last_modified_ms, stored.server_now_ms) {
        (Some(0), _, _) => 0,
        (Some(ttl), Some(written), Some(now)) => {
            let end =
                written.saturating_add(i64::try_from(ttl + S3_CLOCK_GRAIN_MS).unwrap_or(i64::MAX));
            u64::try_from(end.saturating_sub(now)).unwrap_or(0)
        }
        _ => lease.expires_at_ms.saturating_sub(local_now_ms),
    }
}

/// At most how long ago, by S3's clock, the lease's holder may have started
/// a send it never recorded: its last write, plus what a releasing holder
/// noted. `None` without S3's times.
pub fn unrecorded_age_ms(lease: &Lease, stored: &SmallObject) -> Option<u64> {
    let (written, now) = (stored.last_modified_ms?, stored.server_now_ms?);
    let since_write = u64::try_from(now.saturating_sub(written)).unwrap_or(0) + S3_CLOCK_GRAIN_MS;
    Some(since_write + lease.unrecorded_for_ms)
}

/// A lease this processor holds, with the ETag that proves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub lease: Lease,
    pub etag: String,
    /// When our last write of the lease started, on our monotonic clock: we
    /// count it as ending `ttl` after that, never later than S3 will.
    pub renewed: Instant,
    /// Set when we took the lease over: at most how long ago the previous
    /// holder may have started a send it never recorded (S3's clock).
    pub taken_over_after_ms: Option<u64>,
    /// When we started a send that is not recorded yet: SQS may have
    /// applied it even if we saw it fail.
    pub unrecorded_since: Option<Instant>,
    /// Whether the lease we took had been released by its holder (a
    /// deadline stop, a failure): resuming it is planned, not a recovery.
    pub took_released: bool,
    /// The fingerprint of the settings the object was half-sent under, when
    /// they were not ours: the rest of its records go under ours.
    pub changed_from: Option<String>,
}

impl Held {
    /// How much of the lease is left by our own clock.
    pub fn left_ms(&self) -> u64 {
        let ttl = self.lease.ttl_ms.unwrap_or(0);
        ttl.saturating_sub(self.renewed.elapsed().as_millis() as u64)
    }
}

/// The result of trying to take an object on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// Ours; send from `held.lease.next_chunk` (0 for a fresh start).
    Ours(Box<Held>),
    /// Already finished: the event is a duplicate.
    Done,
    /// Someone else holds a live lease: try again later.
    Busy { owner: String, expires_in_ms: u64 },
    /// An expired lease was left mid-file under different settings by a
    /// processor that did not record its records' positions: nothing says
    /// which records to skip.
    ConfigChanged {
        owner: String,
        next_chunk: u32,
        theirs: String,
        ours: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error("state object {key} is not valid: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the lease {key} was taken over by another processor; stopping without sending more")]
    Lost { key: String },
}

impl Classified for StateError {
    fn class(&self) -> Class {
        match self {
            Self::S3(e) => e.class(),
            Self::Corrupt { .. } | Self::Lost { .. } => Class::Permanent,
        }
    }
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Who asks for a lease: this process's owner id, and whether it is the
/// process's only attempt on the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimant<'a> {
    pub owner: &'a str,
    /// No other attempt of this process is on the object, so a live lease
    /// in `owner`'s name was left by one of our own calls (a write whose
    /// answer was lost, or an attempt that ended without releasing): it is
    /// taken on at once instead of waited out.
    pub sole: bool,
}

/// Takes the object on, unless it is done or busy. `now_ms` is this host's
/// clock: it only fills `expires_at_ms` for people, and judges leases of
/// older processors.
pub async fn acquire<S: ObjectStore>(
    store: &S,
    keys: &StateKeys,
    claimant: Claimant<'_>,
    fingerprint: &str,
    ttl_ms: u64,
    now_ms: u64,
) -> Result<Acquired, StateError> {
    let store = StateObjects::new(store);
    if store.read(&keys.done).await?.is_some() {
        clear_finished_lease(&store, keys).await;
        return Ok(Acquired::Done);
    }
    let fresh = Lease::fresh(claimant.owner, fingerprint, ttl_ms, now_ms);
    let started = Instant::now();
    let bytes = encode(&fresh);
    let held = |etag| Held {
        lease: fresh.clone(),
        etag,
        renewed: started,
        taken_over_after_ms: None,
        unrecorded_since: None,
        took_released: false,
        changed_from: None,
    };
    match store
        .write(&keys.lease, bytes.clone(), PutMode::Create)
        .await
    {
        Ok(etag) => return confirm(&store, keys, held(etag), now_ms).await,
        Err(S3Error::AlreadyExists { .. }) => {}
        // The write may have landed with its answer lost.
        Err(e) => match ours_after_all(&store, &keys.lease, &bytes).await {
            Some(etag) => return confirm(&store, keys, held(etag), now_ms).await,
            None => return Err(e.into()),
        },
    }
    let Some(stored) = store.read(&keys.lease).await? else {
        // Released between our two calls: the holder finished or gave up.
        return Ok(if store.read(&keys.done).await?.is_some() {
            Acquired::Done
        } else {
            Acquired::Busy {
                owner: "(released)".into(),
                expires_in_ms: 0,
            }
        });
    };
    // Our own write, whose answer was lost and whose retry met it (412).
    if stored.bytes == bytes
        && let Some(etag) = stored.etag.clone()
    {
        note_own_write(&keys.lease);
        return confirm(&store, keys, held(etag), now_ms).await;
    }
    take_over(&store, keys, &stored, fresh, claimant.sole, now_ms).await
}

/// The ETag of the object at `key` if it holds exactly `bytes`: how a write
/// whose answer was lost is recognised as our own. Every lease and marker
/// names its writer and the time it was written, so no other write holds
/// the same bytes.
async fn ours_after_all<S: ObjectStore>(
    store: &StateObjects<'_, S>,
    key: &str,
    bytes: &[u8],
) -> Option<String> {
    match store.read(key).await {
        Ok(Some(SmallObject {
            bytes: stored,
            etag: Some(etag),
            ..
        })) if stored == bytes => {
            note_own_write(key);
            Some(etag)
        }
        _ => None,
    }
}

fn note_own_write(key: &str) {
    tracing::info!(
        key,
        "a write of ours took effect though its answer was lost; carrying on with it"
    );
}

/// Runs `op` again, up to three times in all with a short backoff, while it
/// fails for a reason a retry may fix: a lease left behind by a failed
/// delete or release costs another attempt its TTL, or stays for good.
pub(crate) async fn retried<T, E: Classified, F: Future<Output = Result<T, E>>>(
    mut op: impl FnMut() -> F,
) -> Result<T, E> {
    let mut backoff = relay_shared::retry::backoff(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(1),
    );
    let mut tries = 1;
    loop {
        match op().await {
            Err(e) if tries < 3 && e.class().is_retryable() => {
                tries += 1;
                tokio::time::sleep(backoff.next().unwrap_or_default()).await;
            }
            other => return other,
        }
    }
}

/// Deletes the lease, only while its ETag is `etag` where one is given. A
/// store that refuses conditional deletes (501 NotImplemented) gets an
/// unconditional one instead, which is safe because a lease is deleted only
/// once its object's done marker exists or the object is gone: no holder
/// may send then, and one that tries finds its lease lost at its next write.
pub(crate) async fn remove_lease<S: ObjectStore>(
    store: &StateObjects<'_, S>,
    keys: &StateKeys,
    etag: Option<&str>,
) -> Result<(), S3Error> {
    match retried(|| store.remove(&keys.lease, etag)).await {
        Err(S3Error::Unsupported { .. }) if etag.is_some() => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::info!(
                    "this S3 store refuses conditional deletes (501 NotImplemented); leases of finished objects are deleted unconditionally, which is safe once the done marker exists"
                );
            });
            retried(|| store.remove(&keys.lease, None)).await
        }
        other => other,
    }
}

/// The object is done: a lease still there was left behind (its holder's
/// delete failed, or the answer to its marker write was lost). Whoever sees
/// both removes the lease. Best effort: `audit` names any that stay.
async fn clear_finished_lease<S: ObjectStore>(store: &StateObjects<'_, S>, keys: &StateKeys) {
    let lease = match store.read(&keys.lease).await {
        Ok(Some(lease)) => lease,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(lease = %keys.lease, error = %e, "could not look for a finished object's leftover lease; audit names it if it stays");
            return;
        }
    };
    match remove_lease(store, keys, lease.etag.as_deref()).await {
        // Gone or rewritten meanwhile: its holder is on it.
        Ok(()) | Err(S3Error::NotFound { .. } | S3Error::Precondition { .. }) => {
            metrics::counter!(crate::metrics::LEASES_CLEANED).increment(1);
            tracing::info!(lease = %keys.lease, "deleted the lease a finished object left behind");
        }
        Err(e) => {
            tracing::warn!(lease = %keys.lease, error = %e, "could not delete a finished object's leftover lease; audit names it if it stays");
        }
    }
}

/// The lease a taker writes over `theirs`: their progress under the same
/// settings; under other ones, what they handled as records to skip, with
/// chunks numbered after theirs; `None` if they sent chunks without saying
/// which records (an older processor's lease).
fn carried_over(theirs: &Lease, fresh: Lease) -> Option<Lease> {
    let kept = Lease {
        refused: theirs.refused.clone(),
        refused_count: theirs.refused_count,
        checksum_failures: theirs.checksum_failures,
        ..fresh
    };
    if theirs.fingerprint == kept.fingerprint {
        return Some(Lease {
            next_chunk: theirs.next_chunk,
            settled: theirs.settled.clone(),
            first_chunk: theirs.first_chunk,
            earlier: theirs.earlier.clone(),
            through: theirs.through,
            spans: theirs.spans.clone(),
            ..kept
        });
    }
    if !theirs.has_progress() {
        // Nothing was sent under other settings: a fresh start.
        return Some(kept);
    }
    let handled = theirs.handled()?;
    Some(Lease {
        next_chunk: handled.first_chunk,
        first_chunk: handled.first_chunk,
        earlier: handled.earlier,
        ..kept
    })
}

/// Takes over the lease read as `stored` if it has ended, or if it is our
/// own (`sole`: see [`Claimant::sole`]): it keeps the progress recorded
/// under the same settings, and is refused if another processor left the
/// object half-sent under other ones.
async fn take_over<S: ObjectStore>(
    store: &StateObjects<'_, S>,
    keys: &StateKeys,
    stored: &SmallObject,
    fresh: Lease,
    sole: bool,
    now_ms: u64,
) -> Result<Acquired, StateError> {
    let theirs: Lease = decode(&keys.lease, &stored.bytes)?;
    let own = sole && theirs.owner == fresh.owner && theirs.fingerprint == fresh.fingerprint;
    let left = remaining_ms(&theirs, stored, now_ms);
    if own && left > 0 {
        tracing::info!(lease = %keys.lease, left_ms = left,
            "the lease is this processor's own, from a call whose answer was lost; taking it on at once");
    } else if left > 0 {
        if store.read(&keys.done).await?.is_some() {
            return Ok(Acquired::Done);
        }
        return Ok(Acquired::Busy {
            expires_in_ms: left,
            owner: theirs.owner,
        });
    }
    let ttl_ms = fresh.ttl_ms.unwrap_or(0);
    let ours = fresh.fingerprint.clone();
    let changed_from =
        (theirs.fingerprint != ours && theirs.has_progress()).then(|| theirs.fingerprint.clone());
    let Some(taken) = carried_over(&theirs, fresh) else {
        return Ok(Acquired::ConfigChanged {
            owner: theirs.owner,
            next_chunk: theirs.next_chunk,
            theirs: theirs.fingerprint,
            ours,
        });
    };
    let etag = stored.etag.clone().unwrap_or_default();
    let started = Instant::now();
    let bytes = encode(&taken);
    let written = store
        .write(&keys.lease, bytes.clone(), PutMode::Update { etag })
        .await;
    let etag = match written {
        Ok(etag) => etag,
        // A 412 is another taker's write, or our own whose answer was lost
        // and whose retry met it: the lease's bytes tell which.
        Err(e) => match (ours_after_all(store, &keys.lease, &bytes).await, e) {
            (Some(etag), _) => etag,
            (None, S3Error::Precondition { .. }) => {
                return Ok(Acquired::Busy {
                    owner: "(another taker)".into(),
                    expires_in_ms: ttl_ms,
                });
            }
            (None, e) => return Err(e.into()),
        },
    };
    let held = Held {
        lease: taken,
        etag,
        renewed: started,
        taken_over_after_ms: unrecorded_age_ms(&theirs, stored),
        unrecorded_since: None,
        took_released: theirs.ttl_ms == Some(0),
        changed_from,
    };
    confirm(store, keys, held, now_ms).await
}

/// Re-checks the done marker once the lease is ours. A holder writes its
/// marker before it deletes its lease, so if the previous holder finished
/// between our first check and our write, the marker is visible now (S3 reads
/// are strongly consistent) and the object must not be sent again.
///
/// If the marker cannot be read, the lease is released (with the progress
/// it carries) before the error is returned: a failed attempt never keeps
/// a lease for its TTL.
async fn confirm<S: ObjectStore>(
    store: &StateObjects<'_, S>,
    keys: &StateKeys,
    mut held: Held,
    now_ms: u64,
) -> Result<Acquired, StateError> {
    match store.read(&keys.done).await {
        Ok(None) => Ok(Acquired::Ours(Box::new(held))),
        Ok(Some(_)) => {
            if let Err(e) = remove_lease(store, keys, Some(&held.etag)).await {
                tracing::warn!(lease = %keys.lease, error = %e, "could not delete the lease taken on a finished object; the next event for it does");
            }
            Ok(Acquired::Done)
        }
        Err(e) => {
            if let Err(released) = release(store.inner(), keys, &mut held, now_ms).await {
                tracing::warn!(lease = %keys.lease, error = %released, "could not release the lease after the done marker could not be read; it expires");
            }
            Err(e.into())
        }
    }
}

/// Writes the lease's progress as `held` has it (only chunks SQS settled),
/// renewing it for its TTL.
pub async fn renew<S: ObjectStore>(
    store: &S,
    keys: &StateKeys,
    held: &mut Held,
    now_ms: u64,
) -> Result<(), StateError> {
    let ttl_ms = held.lease.ttl_ms.unwrap_or(0);
    rewrite(store, keys, held, ttl_ms, now_ms, 0).await
}

/// Gives the lease up after a clean failure, so the next attempt need not
/// wait for it to expire. It records the progress `held` has (chunks SQS
/// settled since the last write included) and notes any send that may be
/// unrecorded (see [`Lease::unrecorded_for_ms`]).
pub async fn release<S: ObjectStore>(
    store: &S,
    keys: &StateKeys,
    held: &mut Held,
    now_ms: u64,
) -> Result<(), StateError> {
    let unrecorded_for_ms = held
        .unrecorded_since
        .map_or(0, |t| t.elapsed().as_millis() as u64);
    rewrite(store, keys, held, 0, now_ms, unrecorded_for_ms).await
}

/// [`release`], tried again (up to three times in all) while it fails for
/// a reason a retry may fix: a lease a failed attempt could not release
/// costs the next attempt its TTL.
pub async fn release_retried<S: ObjectStore>(
    store: &S,
    keys: &StateKeys,
    held: &mut Held,
) -> Result<(), StateError> {
    let mut backoff = relay_shared::retry::backoff(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(1),
    );
    let mut tries = 1;
    loop {
        match release(store, keys, held, now_ms()).await {
            Err(e) if tries < 3 && e.class().is_retryable() => {
                tries += 1;
                tokio::time::sleep(backoff.next().unwrap_or_default()).await;
            }
            other => return other,
        }
    }
}

async fn rewrite<S: ObjectStore>(
    store: &S,
    keys: &StateKeys,
    held: &mut Held,
    ttl_ms: u64,
    now_ms: u64,
    unrecorded_for_ms: u64,
) -> Result<(), StateError> {
    let store = StateObjects::new(store);
    let lease = Lease {
        expires_at_ms: now_ms + ttl_ms,
        ttl_ms: Some(ttl_ms),
        unrecorded_for_ms,
        ..held.lease.clone()
    };
    let mode = PutMode::Update {
        etag: held.etag.clone(),
    };
    let started = Instant::now();
    let bytes = encode(&lease);
    let etag = match store.write(&keys.lease, bytes.clone(), mode).await {
        Ok(etag) => etag,
        // The write may have taken effect with its answer lost: after a 412
        // the SDK's retry met our own new ETag; after a server error it may
        // have landed all the same. The lease's bytes tell.
        Err(e) => match (ours_after_all(&store, &keys.lease, &bytes).await, e) {
            (Some(etag), _) => etag,
            (None, S3Error::Precondition { .. } | S3Error::NotFound { .. }) => {
                return Err(StateError::Lost {
                    key: keys.lease.clone(),
                });
            }
            (None, e) => return Err(e.into()),
        },
    };
    held.lease = lease;
    held.etag = etag;
    held.renewed = started;
    held.unrecorded_since = None;
    Ok(())
}

/// Gives up a lease whose object vanished: nothing is left to send, so
/// there is no progress to keep. Best effort: expiry does the same.
pub async fn abandon<S: ObjectStore>(store: &S, keys: &StateKeys, held: &Held) {
    let store = StateObjects::new(store);
    if let Err(e) = remove_lease(&store, keys, Some(&held.etag)).await {
        tracing::warn!(lease = %keys.lease, error = %e, "could not delete the lease of a vanished object; it expires");
    }
}

/// Writes the done marker, then drops our lease. A lease that is no longer
/// ours (another processor took it over meanwhile) is left to its owner,
/// who finds the marker.
pub async fn finish<S: ObjectStore>(
    store: &S,
    keys: &StateKeys,
    held: &Held,
    marker: &DoneMarker,
) -> Result<(), StateError> {
    let store = StateObjects::new(store);
    match store
        .write(&keys.done, encode(marker), PutMode::Create)
        .await
    {
        Ok(_) | Err(S3Error::AlreadyExists { .. }) => {}
        // Written with its answer lost, or not: the marker tells.
        Err(e) => {
            if !matches!(store.read(&keys.done).await, Ok(Some(_))) {
                return Err(e.into());
            }
        }
    }
    match remove_lease(&store, keys, Some(&held.etag)).await {
        Ok(()) | Err(S3Error::NotFound { .. }) => Ok(()),
        Err(S3Error::Precondition { .. }) => {
            tracing::info!(lease = %keys.lease, "the lease was taken over before the done marker; leaving it to its owner");
            Ok(())
        }
        // The marker is what counts: the next event for the object (a
        // redelivery, a replay) finds both and deletes the lease, and
        // `audit` names it as a finished object's lease until then.
        Err(e) => {
            tracing::warn!(lease = %keys.lease, error = %e, "could not delete a finished object's lease");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_shared::testing::MemStore as Mem;

    /// Records chunks below `next` as settled and writes the lease.
    async fn advance(
        store: &Mem,
        keys: &StateKeys,
        held: &mut Held,
        next: u32,
        now_ms: u64,
    ) -> Result<(), StateError> {
        held.lease.next_chunk = next;
        renew(store, keys, held, now_ms).await
    }

    fn keys() -> StateKeys {
        StateKeys::new("state/", "raw/", "raw/s/2026/11/21/22/1.json.zst")
    }

    const TTL: u64 = 60_000;

    fn marker(owner: &str) -> DoneMarker {
        DoneMarker {
            outcome: "sent".into(),
            owner: owner.into(),
            finished_at_ms: 2000,
            fingerprint: "fp".into(),
            etag: "e".into(),
            records_in: 1,
            records_out: 1,
            rejected: 0,
            messages: 5,
            bytes_decompressed: 9,
            preamble_bytes: 1,
            record_bytes: 8,
            rejected_bytes: 0,
            separator_bytes: 0,
            elapsed_ms: 1,
            resumed_from_chunk: 3,
            field_missing: Default::default(),
            offloaded: 0,
            schema_rejects: Default::default(),
            earlier: 0,
            trace_id: None,
        }
    }

    /// Chunk `c`'s records in the tests: positions 10c to 10c + 9.
    fn span(c: u32) -> Option<[Position; 2]> {
        Some([u64::from(c) * 10, u64::from(c) * 10 + 9])
    }

    /// Another process's claimant: its leases are never its own.
    fn other(owner: &str) -> Claimant<'_> {
        Claimant { owner, sole: false }
    }

    async fn ours(store: &Mem, owner: &str, fp: &str, local_now_ms: u64) -> Held {
        match acquire(store, &keys(), other(owner), fp, TTL, local_now_ms)
            .await
            .unwrap()
        {
            Acquired::Ours(held) => *held,
            other => panic!("{owner} expected the lease, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn fresh_busy_expired_resume_and_done() {
        let store = Mem::default();
        let k = keys();
        let mut a = ours(store.at(0), "a", "fp", 0).await;
        assert_eq!(a.lease.next_chunk, 0);
        assert_eq!(a.taken_over_after_ms, None);
        advance(store.at(10_000), &k, &mut a, 3, 10_000)
            .await
            .unwrap();

        // B sees a live lease until S3's clock passes the last write plus
        // the TTL (and a second's grain), then takes over and resumes at 3.
        match acquire(store.at(40_000), &k, other("b"), "fp", TTL, 40_000)
            .await
            .unwrap()
        {
            Acquired::Busy {
                owner,
                expires_in_ms,
            } => assert_eq!((owner.as_str(), expires_in_ms), ("a", 31_000)),
            other => panic!("{other:?}"),
        }
        let b = ours(store.at(71_000), "b", "fp", 71_000).await;
        assert_eq!((b.lease.owner.as_str(), b.lease.next_chunk), ("b", 3));
        // A's last write was 61 s before (S3's clock), plus the grain.
        assert_eq!(b.taken_over_after_ms, Some(62_000));
        assert!(!b.took_released, "A never released it: a recovery");

        // A's next progress write fails: its lease is lost.
        assert!(matches!(
            advance(&store, &k, &mut a, 4, 72_000).await,
            Err(StateError::Lost { .. })
        ));

        finish(&store, &k, &b, &marker("b")).await.unwrap();
        assert!(store.bytes(&k.lease).is_none());
        assert_eq!(
            acquire(store.at(999_000), &k, other("c"), "fp", TTL, 999_000)
                .await
                .unwrap(),
            Acquired::Done
        );
    }

    #[tokio::test]
    async fn expiry_is_judged_by_s3s_clock_whatever_the_hosts_clocks_say() {
        let store = Mem::default();
        let k = keys();
        let _a = ours(store.at(1_000_000), "a", "fp", 1_000_000).await;
        // B's clock runs 10 minutes ahead: by it, A's lease ended long ago.
        // By S3's clock it was written 5 s ago, so it is A's.
        let skewed_ahead = 1_005_000 + 600_000;
        assert!(matches!(
            acquire(store.at(1_005_000), &k, other("b"), "fp", TTL, skewed_ahead)
                .await
                .unwrap(),
            Acquired::Busy { owner, .. } if owner == "a"
        ));
        // C's clock runs 10 minutes behind: by it, A's lease has 11 minutes
        // left. By S3's clock it expired, so C takes over.
        let skewed_behind = 1_062_000 - 600_000;
        let c = ours(store.at(1_062_000), "c", "fp", skewed_behind).await;
        assert_eq!(c.lease.owner, "c");
    }

    #[tokio::test]
    async fn a_lease_of_an_older_processor_is_judged_by_its_written_expiry() {
        let store = Mem::default();
        let k = keys();
        let old = br#"{"owner":"old","expires_at_ms":5000,"fingerprint":"fp","next_chunk":2}"#;
        store.insert(&k.lease, old);
        assert!(matches!(
            acquire(store.at(0), &k, other("b"), "fp", TTL, 4000)
                .await
                .unwrap(),
            Acquired::Busy {
                expires_in_ms: 1000,
                ..
            }
        ));
        let b = ours(&store, "b", "fp", 6000).await;
        assert_eq!(b.lease.next_chunk, 2);
    }

    #[tokio::test]
    async fn a_released_lease_is_free_at_once_and_says_how_old_its_unrecorded_send_is() {
        let store = Mem::default();
        let k = keys();
        let mut a = ours(store.at(0), "a", "fp", 0).await;
        advance(store.at(1000), &k, &mut a, 2, 1000).await.unwrap();
        a.unrecorded_since = Some(Instant::now() - std::time::Duration::from_secs(30));
        release(store.at(2000), &k, &mut a, 2000).await.unwrap();
        assert_eq!(a.unrecorded_since, None);
        let b = ours(store.at(2000), "b", "fp", 2000).await;
        assert_eq!(b.lease.next_chunk, 2);
        assert!(b.took_released, "a planned resume, not a recovery");
        assert!(!a.took_released, "a fresh lease");
        let age = b.taken_over_after_ms.unwrap();
        assert!(
            (31_000..33_000).contains(&age),
            "the unrecorded send began about 30 s before the release: {age}"
        );
    }

    #[test]
    fn settling_moves_next_chunk_past_every_settled_chunk_in_a_row() {
        let mut lease = Lease {
            next_chunk: 10,
            ..Lease::fresh("a", "fp", TTL, 0)
        };
        // A batch of 10..20 where SQS stored the even chunks only.
        lease.settle(&[10, 12, 14, 16, 18], &[], span);
        assert_eq!(
            (lease.next_chunk, &lease.settled[..]),
            (11, &[12, 14, 16, 18][..])
        );
        assert!(lease.is_settled(12) && !lease.is_settled(13));
        // The retry settles the odd ones; 15 is refused for good.
        lease.settle(
            &[11, 13, 17, 19],
            &[(15, "InvalidParameterValue: no".into())],
            span,
        );
        assert_eq!((lease.next_chunk, lease.settled.len()), (20, 0));
        assert_eq!((lease.refused_count, lease.refused[0].chunk), (1, 15));
        // Settling again changes nothing.
        lease.settle(&[12], &[], span);
        assert_eq!((lease.next_chunk, lease.settled.len()), (20, 0));
    }

    #[tokio::test]
    async fn a_takeover_keeps_partial_progress_and_says_when_fifo_cannot_help() {
        let store = Mem::default();
        let k = keys();
        let mut a = ours(store.at(0), "a", "fp", 0).await;
        a.lease.settle(&[0, 2, 3], &[], span);
        renew(store.at(1000), &k, &mut a, 1000).await.unwrap();
        // Taken over well inside the window: the takeover skips 0, 2 and 3.
        let b = ours(store.at(100_000), "b", "fp", 0).await;
        assert_eq!((b.lease.next_chunk, &b.lease.settled[..]), (1, &[2, 3][..]));
        assert!(!outside_fifo_window(b.taken_over_after_ms.unwrap()));
        // B crashes too, and C arrives five minutes later.
        let c = ours(store.at(400_000), "c", "fp", 0).await;
        let age = c.taken_over_after_ms.unwrap();
        assert!(outside_fifo_window(age), "{age} ms");
    }

    #[tokio::test]
    async fn finish_leaves_a_lease_another_processor_took_over() {
        let store = Mem::default();
        let k = keys();
        let a = ours(store.at(0), "a", "fp", 0).await;
        // A stalls past its lease; B takes the object over.
        let b = ours(store.at(120_000), "b", "fp", 120_000).await;
        // A comes back and finishes: the marker is written, B's lease stays.
        finish(&store, &k, &a, &marker("a")).await.unwrap();
        assert!(store.bytes(&k.done).is_some());
        let left = store.get_small(&k.lease).await.expect("B's lease");
        assert_eq!(left.etag.as_deref(), Some(b.etag.as_str()));
        // B finds the marker when it finishes, and deletes its own lease.
        finish(&store, &k, &b, &marker("b")).await.unwrap();
        assert!(store.bytes(&k.lease).is_none());
    }

    /// A lease that settled chunks without their records' positions (an
    /// older processor's) cannot say what to skip under other settings.
    #[tokio::test]
    async fn a_config_change_mid_file_without_positions_is_refused_but_not_before_any_send() {
        let store = Mem::default();
        let k = keys();
        let mut a = ours(store.at(0), "a", "old", 0).await;
        // Nothing sent yet: a new config may start over.
        let mut b = ours(store.at(100_000), "b", "new", 100_000).await;
        assert_eq!(
            (b.lease.fingerprint.as_str(), b.lease.next_chunk),
            ("new", 0)
        );
        assert!(advance(&store, &k, &mut a, 1, 100_000).await.is_err());

        advance(&store, &k, &mut b, 2, 100_000).await.unwrap();
        let got = acquire(store.at(200_000), &k, other("c"), "newer", TTL, 200_000)
            .await
            .unwrap();
        assert_eq!(
            got,
            Acquired::ConfigChanged {
                owner: "b".into(),
                next_chunk: 2,
                theirs: "new".into(),
                ours: "newer".into()
            }
        );
    }

    /// Under other settings, the new holder skips what the old one settled,
    /// by position, and numbers its chunks after the old ones; a second
    /// change adds what the second holder settled.
    #[tokio::test]
    async fn a_config_change_mid_file_resumes_by_position() {
        let store = Mem::default();
        let k = keys();
        let mut a = ours(store.at(0), "a", "old", 0).await;
        // 0..3 settled, 5 too (a batch SQS took in part); 3 and 4 not.
        a.lease.settle(&[0, 1, 2, 5], &[], span);
        assert_eq!((a.lease.through, a.lease.spans.len()), (Some(29), 1));
        renew(store.at(1000), &k, &mut a, 1000).await.unwrap();
        let mut b = ours(store.at(100_000), "b", "new", 100_000).await;
        assert_eq!(b.changed_from.as_deref(), Some("old"));
        let l = &b.lease;
        assert_eq!(
            (l.first_chunk, l.next_chunk, &l.earlier[..]),
            (6, 6, &[[0, 29], [50, 59]][..])
        );
        assert!(l.is_settled(5) && !l.is_settled(6));
        // B settles its first two chunks, whose records lie between.
        b.lease.settle(&[6, 7], &[], |c| {
            Some([u64::from(c) * 5, u64::from(c) * 5 + 4])
        });
        renew(store.at(101_000), &k, &mut b, 101_000).await.unwrap();
        let c = ours(store.at(200_000), "c", "newer", 200_000).await;
        assert_eq!(c.changed_from.as_deref(), Some("new"));
        assert_eq!(
            (c.lease.first_chunk, &c.lease.earlier[..]),
            (8, &[[0, 39], [50, 59]][..])
        );
        // Resumed under its own settings, C's lease keeps all of it.
        let again = ours(store.at(300_000), "c", "newer", 300_000).await;
        assert_eq!(again.changed_from, None);
        assert_eq!(
            (again.lease.first_chunk, &again.lease.earlier[..]),
            (8, &[[0, 39], [50, 59]][..])
        );
    }

    /// Another processor finishes the object right after our first look at
    /// the done marker: it writes its marker, then deletes its lease.
    #[tokio::test]
    async fn a_holder_finishing_between_check_and_create_is_seen() {
        let store = Mem::default();
        let k = keys();
        // Someone holds the object when we arrive.
        store.insert(&k.lease, b"{}");
        let (done, lease) = (k.done.clone(), k.lease.clone());
        store.meanwhile("GetObject", "/done/", move |m| {
            m.insert(&done, b"{}");
            m.remove(&lease);
        });
        assert_eq!(
            acquire(&store, &k, other("late"), "fp", TTL, 0)
                .await
                .unwrap(),
            Acquired::Done
        );
        assert!(
            store.bytes(&k.lease).is_none(),
            "our own lease was not left behind"
        );
    }

    /// A lease write takes effect, its answer is lost and the read that
    /// would show it is ours fails too: the attempt fails, and the retry
    /// finds the lease in our own name and takes it on without waiting out
    /// its TTL, unless another attempt of ours is on the object.
    #[tokio::test]
    async fn our_own_lease_back_from_a_lost_answer_is_taken_on_at_once() {
        use relay_shared::testing::Fault;
        let store = Mem::default();
        let k = keys();
        store.fail_on("PutObject", "/leases/", Fault::LoseResponse);
        store.fail_on("GetObject", "/leases/", Fault::Unavailable);
        let me = Claimant {
            owner: "me",
            sole: true,
        };
        assert!(acquire(store.at(0), &k, me, "fp", TTL, 0).await.is_err());
        assert!(store.bytes(&k.lease).is_some(), "the write took effect");
        // A sibling attempt of ours is on the object: it is not ours to take.
        let sibling = Claimant { sole: false, ..me };
        assert!(matches!(
            acquire(store.at(1000), &k, sibling, "fp", TTL, 1000).await.unwrap(),
            Acquired::Busy { owner, .. } if owner == "me"
        ));
        assert!(matches!(
            acquire(store.at(1000), &k, other("you"), "fp", TTL, 1000).await.unwrap(),
            Acquired::Busy { owner, .. } if owner == "me"
        ));
        let held = match acquire(store.at(1000), &k, me, "fp", TTL, 1000)
            .await
            .unwrap()
        {
            Acquired::Ours(held) => *held,
            other => panic!("waited on itself: {other:?}"),
        };
        assert_eq!(
            (held.lease.owner.as_str(), held.lease.next_chunk),
            ("me", 0)
        );
        // Under other settings it is not the same lease: refused as ever.
        let mut held = held;
        advance(store.at(2000), &k, &mut held, 2, 2000)
            .await
            .unwrap();
        assert!(matches!(
            acquire(store.at(3000), &k, me, "other", TTL, 3000)
                .await
                .unwrap(),
            Acquired::Busy { .. }
        ));
    }

    /// A renewal takes effect and its answer is lost (a timeout, or a
    /// server error on the SDK's last retry): the lease holds exactly what
    /// we wrote, so it is still ours, at once.
    #[tokio::test]
    async fn a_renewal_whose_answer_was_lost_keeps_the_lease() {
        use relay_shared::testing::Fault;
        let store = Mem::default();
        let k = keys();
        let mut a = ours(store.at(0), "a", "fp", 0).await;
        for (n, fault) in [Fault::LoseResponse, Fault::LoseThenFail]
            .into_iter()
            .enumerate()
        {
            a.lease.next_chunk = 3 + n as u32;
            store.fail_on("PutObject", "/leases/", fault);
            renew(store.at(1000), &k, &mut a, 1000).await.unwrap();
            let stored = store.get_small(&k.lease).await.unwrap();
            assert_eq!(stored.etag.as_deref(), Some(a.etag.as_str()), "{fault:?}");
        }
        // Someone else's write is not mistaken for ours.
        let b = ours(store.at(200_000), "b", "fp", 200_000).await;
        assert!(matches!(
            renew(store.at(200_000), &k, &mut a, 1000).await,
            Err(StateError::Lost { .. })
        ));
        assert_eq!(b.lease.next_chunk, 4);
    }

    /// Every kind of lease write whose answer is lost (a first write, a
    /// takeover, the done marker) is recognised as our own by its bytes
    /// and carried on with in the same attempt: nothing waits out a lease
    /// of its own failed call.
    #[tokio::test]
    async fn lost_answers_to_lease_and_marker_writes_are_carried_on_with_at_once() {
        use relay_shared::testing::Fault;
        let store = Mem::default();
        let k = keys();
        // A first write that landed, answered with a server error.
        store.fail_on("PutObject", "/leases/", Fault::LoseThenFail);
        let a = ours(store.at(0), "a", "fp", 0).await;
        assert_eq!(
            store.get_small(&k.lease).await.unwrap().etag.as_deref(),
            Some(a.etag.as_str())
        );
        // A takeover that landed, whose answer was lost (a timeout, or the
        // SDK's retry meeting its own write: 412). The takeover is the
        // fourth call of the attempt (marker, create, read, takeover).
        let mut b = None;
        for (n, fault) in [Fault::LoseResponse, Fault::LoseThenPrecondition]
            .into_iter()
            .enumerate()
        {
            let at = 70_000 * (n as i64 + 1);
            let theirs = store.get_small(&k.lease).await.unwrap();
            store.fail_in(3, fault);
            let owner = format!("b{n}");
            let taken = acquire(store.at(at), &k, other(&owner), "fp", TTL, at as u64)
                .await
                .unwrap();
            let Acquired::Ours(held) = taken else {
                panic!("a takeover waited on its own write ({fault:?}): {taken:?}");
            };
            assert_ne!(Some(held.etag.as_str()), theirs.etag.as_deref());
            b = Some(*held);
        }
        let b = b.unwrap();
        // A done marker that landed, answered with a server error: finished,
        // and the lease is gone.
        store.fail_on("PutObject", "/done/", Fault::LoseThenFail);
        finish(store.at(150_000), &k, &b, &marker("b"))
            .await
            .unwrap();
        assert!(store.bytes(&k.done).is_some() && store.bytes(&k.lease).is_none());
    }

    /// The done marker cannot be read right after the lease is taken: the
    /// attempt fails, and the lease is released with its progress, not kept
    /// for its TTL.
    #[tokio::test]
    async fn a_failed_check_of_the_marker_releases_the_lease_it_took() {
        use relay_shared::testing::Fault;
        let store = Mem::default();
        let k = keys();
        let mut a = ours(store.at(0), "a", "fp", 0).await;
        advance(store.at(1000), &k, &mut a, 5, 1000).await.unwrap();
        // B takes over A's expired lease, then fails to read the marker.
        store.fail_in(3, Fault::Unavailable);
        let failed = acquire(store.at(70_000), &k, other("b"), "fp", TTL, 70_000).await;
        assert!(matches!(failed, Err(StateError::S3(_))), "{failed:?}");
        // Free at once, with A's progress kept.
        let c = ours(store.at(70_500), "c", "fp", 70_500).await;
        assert_eq!(c.lease.next_chunk, 5);
    }

    /// A finished object's lease left behind (its holder's delete failed)
    /// is deleted by the next event for the object; on a store that refuses
    /// conditional deletes (501), unconditionally.
    #[tokio::test]
    async fn whoever_finds_a_done_object_with_a_lease_deletes_the_lease() {
        use relay_shared::testing::Fault;
        for refuses_conditional in [false, true] {
            let store = Mem::default();
            if refuses_conditional {
                store.without_conditional_deletes();
            }
            let k = keys();
            let a = ours(store.at(0), "a", "fp", 0).await;
            // The delete fails on every try (three).
            for _ in 0..3 {
                store.fail_on("DeleteObject", "/leases/", Fault::Unavailable);
            }
            finish(&store, &k, &a, &marker("a")).await.unwrap();
            assert!(store.bytes(&k.lease).is_some(), "the delete failed");
            assert_eq!(
                acquire(store.at(1000), &k, other("b"), "fp", TTL, 1000)
                    .await
                    .unwrap(),
                Acquired::Done
            );
            assert!(store.bytes(&k.lease).is_none(), "{refuses_conditional}");
        }
    }

    #[tokio::test]
    async fn of_many_concurrent_takers_exactly_one_wins() {
        let store = std::sync::Arc::new(Mem::default());
        let k = keys();
        let mut wins = 0;
        for owner in 0..10 {
            if let Acquired::Ours(_) = acquire(&*store, &k, other(&owner.to_string()), "fp", TTL, 0)
                .await
                .unwrap()
            {
                wins += 1;
            }
        }
        assert_eq!(wins, 1);
    }
}
