//! The once-only protocol: S3 objects written with conditional writes, and
//! nothing else (no DynamoDB, no Redis).
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
//! A crash between a send and its progress write re-sends that one batch
//! on resume. SQS drops the resend for FIFO queues within its 5-minute
//! deduplication window. For standard queues it is the one possible duplicate.

use std::future::Future;

use relay_shared::s3::{Bucket, PutMode, PutOptions, S3Error};
use serde::{Deserialize, Serialize};

/// What the processor keeps about an object in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    pub expires_at_ms: u64,
    /// Of everything that decides how records are cut into chunks.
    pub fingerprint: String,
    /// Chunks below this index were acknowledged by SQS.
    pub next_chunk: u32,
}

/// Written when an object is finished (sent, or quarantined).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneMarker {
    pub outcome: String,
    pub owner: String,
    pub finished_at_ms: u64,
    pub fingerprint: String,
    pub etag: String,
    pub records_in: u64,
    pub records_out: u64,
    pub rejected: u64,
    pub messages: u32,
    pub bytes_decompressed: u64,
    /// Where the decompressed bytes went; the four add up to
    /// `bytes_decompressed` (markers written before this was kept have 0).
    #[serde(default)]
    pub preamble_bytes: u64,
    #[serde(default)]
    pub record_bytes: u64,
    #[serde(default)]
    pub rejected_bytes: u64,
    #[serde(default)]
    pub separator_bytes: u64,
    pub elapsed_ms: u64,
    /// Chunks this owner resumed after (0 for a run from the start).
    pub resumed_from_chunk: u32,
}

/// The small set of S3 operations the protocol needs.
pub trait StateStore: Send + Sync {
    /// The object's bytes and ETag, or `None` if it does not exist.
    fn read(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<(Vec<u8>, String)>, S3Error>> + Send;
    /// Writes under `mode`; returns the new ETag.
    fn write(
        &self,
        key: &str,
        body: Vec<u8>,
        mode: PutMode,
    ) -> impl Future<Output = Result<String, S3Error>> + Send;
    fn remove(&self, key: &str) -> impl Future<Output = Result<(), S3Error>> + Send;
}

impl StateStore for Bucket {
    async fn read(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, S3Error> {
        match self.get_bytes(key).await {
            Ok((bytes, etag)) => Ok(Some((bytes, etag.unwrap_or_default()))),
            Err(S3Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn write(&self, key: &str, body: Vec<u8>, mode: PutMode) -> Result<String, S3Error> {
        let options = PutOptions {
            content_type: Some("application/json".into()),
            ..PutOptions::default()
        };
        self.put(key, body, &mode, &options)
            .await
            .map(|r| r.etag.unwrap_or_default())
    }

    async fn remove(&self, key: &str) -> Result<(), S3Error> {
        self.delete(key).await
    }
}

/// The state keys of one raw object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateKeys {
    pub done: String,
    pub lease: String,
    pub rejects: String,
    pub quarantine: String,
}

/// The folders under the state prefix. Each mirrors the raw key space.
pub const DONE: &str = "done/";
pub const LEASES: &str = "leases/";
pub const REJECTS: &str = "rejects/";
pub const QUARANTINE: &str = "quarantine/";

/// A raw key, or a prefix of raw keys, mirrored under one state folder:
/// `raw/<rel>` becomes `state/<folder><rel>`.
pub fn mirrored(state_prefix: &str, folder: &str, raw_prefix: &str, raw_key: &str) -> String {
    let rel = raw_key.strip_prefix(raw_prefix).unwrap_or(raw_key);
    format!("{state_prefix}{folder}{rel}")
}

impl StateKeys {
    /// `raw_key` must start with `raw_prefix`; the rest is kept verbatim.
    pub fn new(state_prefix: &str, raw_prefix: &str, raw_key: &str) -> Self {
        let at = |folder| mirrored(state_prefix, folder, raw_prefix, raw_key);
        Self {
            done: at(DONE),
            lease: at(LEASES),
            rejects: at(REJECTS) + ".json",
            quarantine: at(QUARANTINE) + ".json",
        }
    }
}

/// A lease this processor holds, with the ETag that proves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub lease: Lease,
    pub etag: String,
}

/// The result of trying to take an object on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// Ours; send from `held.lease.next_chunk` (0 for a fresh start).
    Ours(Held),
    /// Already finished: the event is a duplicate.
    Done,
    /// Someone else holds a live lease: try again later.
    Busy { owner: String, expires_in_ms: u64 },
    /// An expired lease was left mid-file under different settings: resuming
    /// would cut chunks differently and duplicate or lose records.
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

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Takes the object on, unless it is done or busy.
pub async fn acquire<S: StateStore>(
    store: &S,
    keys: &StateKeys,
    owner: &str,
    fingerprint: &str,
    ttl_ms: u64,
    now_ms: u64,
) -> Result<Acquired, StateError> {
    if store.read(&keys.done).await?.is_some() {
        return Ok(Acquired::Done);
    }
    let fresh = Lease {
        owner: owner.to_owned(),
        expires_at_ms: now_ms + ttl_ms,
        fingerprint: fingerprint.to_owned(),
        next_chunk: 0,
    };
    match store
        .write(&keys.lease, encode(&fresh), PutMode::Create)
        .await
    {
        Ok(etag) => return confirm(store, keys, Held { lease: fresh, etag }).await,
        Err(S3Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let Some((bytes, etag)) = store.read(&keys.lease).await? else {
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
    let theirs: Lease = decode(&keys.lease, &bytes)?;
    if theirs.expires_at_ms > now_ms {
        if store.read(&keys.done).await?.is_some() {
            return Ok(Acquired::Done);
        }
        return Ok(Acquired::Busy {
            expires_in_ms: theirs.expires_at_ms - now_ms,
            owner: theirs.owner,
        });
    }
    if theirs.fingerprint != fingerprint && theirs.next_chunk > 0 {
        return Ok(Acquired::ConfigChanged {
            owner: theirs.owner,
            next_chunk: theirs.next_chunk,
            theirs: theirs.fingerprint,
            ours: fingerprint.to_owned(),
        });
    }
    // Nothing was sent under other settings, so starting over is safe.
    let next_chunk = if theirs.fingerprint == fingerprint {
        theirs.next_chunk
    } else {
        0
    };
    let taken = Lease {
        next_chunk,
        ..fresh
    };
    match store
        .write(&keys.lease, encode(&taken), PutMode::Update { etag })
        .await
    {
        Ok(etag) => confirm(store, keys, Held { lease: taken, etag }).await,
        Err(S3Error::Precondition { .. }) => Ok(Acquired::Busy {
            owner: "(another taker)".into(),
            expires_in_ms: ttl_ms,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Re-checks the done marker once the lease is ours. A holder writes its
/// marker before it deletes its lease, so if the previous holder finished
/// between our first check and our write, the marker is visible now (S3 reads
/// are strongly consistent) and the object must not be sent again.
async fn confirm<S: StateStore>(
    store: &S,
    keys: &StateKeys,
    held: Held,
) -> Result<Acquired, StateError> {
    if store.read(&keys.done).await?.is_none() {
        return Ok(Acquired::Ours(held));
    }
    let _ = store.remove(&keys.lease).await;
    Ok(Acquired::Done)
}

/// Records that chunks below `next_chunk` are acknowledged, renewing the lease.
pub async fn advance<S: StateStore>(
    store: &S,
    keys: &StateKeys,
    held: &mut Held,
    next_chunk: u32,
    expires_at_ms: u64,
) -> Result<(), StateError> {
    let lease = Lease {
        next_chunk,
        expires_at_ms,
        ..held.lease.clone()
    };
    let mode = PutMode::Update {
        etag: held.etag.clone(),
    };
    match store.write(&keys.lease, encode(&lease), mode).await {
        Ok(etag) => {
            *held = Held { lease, etag };
            Ok(())
        }
        Err(S3Error::Precondition { .. } | S3Error::NotFound { .. }) => Err(StateError::Lost {
            key: keys.lease.clone(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Writes the done marker, then drops the lease.
pub async fn finish<S: StateStore>(
    store: &S,
    keys: &StateKeys,
    marker: &DoneMarker,
) -> Result<(), StateError> {
    match store
        .write(&keys.done, encode(marker), PutMode::Create)
        .await
    {
        Ok(_) | Err(S3Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    match store.remove(&keys.lease).await {
        Ok(()) | Err(S3Error::NotFound { .. }) => Ok(()),
        // The marker is what counts; a leftover lease only shows up in audits.
        Err(e) => {
            tracing::warn!(lease = %keys.lease, error = %e, "could not delete a finished object's lease");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// An in-memory store with S3's conditional-write semantics.
    #[derive(Default)]
    struct Mem {
        objects: Mutex<HashMap<String, (Vec<u8>, u64)>>,
        version: Mutex<u64>,
    }

    impl StateStore for Mem {
        async fn read(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, S3Error> {
            Ok(self
                .objects
                .lock()
                .unwrap()
                .get(key)
                .map(|(b, v)| (b.clone(), v.to_string())))
        }
        async fn write(&self, key: &str, body: Vec<u8>, mode: PutMode) -> Result<String, S3Error> {
            let mut objects = self.objects.lock().unwrap();
            let (bucket, key_s) = ("b".to_owned(), key.to_owned());
            match (&mode, objects.get(key)) {
                (PutMode::Create, Some(_)) => {
                    return Err(S3Error::AlreadyExists { bucket, key: key_s });
                }
                (PutMode::Update { etag }, Some((_, v))) if *etag != v.to_string() => {
                    return Err(S3Error::Precondition { bucket, key: key_s });
                }
                (PutMode::Update { .. }, None) => {
                    return Err(S3Error::NotFound { bucket, key: key_s });
                }
                _ => {}
            }
            let mut version = self.version.lock().unwrap();
            *version += 1;
            objects.insert(key.to_owned(), (body, *version));
            Ok(version.to_string())
        }
        async fn remove(&self, key: &str) -> Result<(), S3Error> {
            self.objects.lock().unwrap().remove(key);
            Ok(())
        }
    }

    fn keys() -> StateKeys {
        StateKeys::new("state/", "raw/", "raw/s/2026/11/21/22/1.json.zst")
    }

    #[test]
    fn state_keys_mirror_the_raw_key() {
        let k = keys();
        assert_eq!(k.done, "state/done/s/2026/11/21/22/1.json.zst");
        assert_eq!(k.lease, "state/leases/s/2026/11/21/22/1.json.zst");
        assert_eq!(k.rejects, "state/rejects/s/2026/11/21/22/1.json.zst.json");
        assert_eq!(
            k.quarantine,
            "state/quarantine/s/2026/11/21/22/1.json.zst.json"
        );
    }

    #[tokio::test]
    async fn fresh_busy_expired_resume_and_done() {
        let store = Mem::default();
        let k = keys();
        let Acquired::Ours(mut a) = acquire(&store, &k, "a", "fp", 1000, 0).await.unwrap() else {
            panic!()
        };
        assert_eq!(a.lease.next_chunk, 0);
        advance(&store, &k, &mut a, 3, 1500).await.unwrap();

        // B sees a live lease, then takes over after it expires and resumes at 3.
        assert!(matches!(
            acquire(&store, &k, "b", "fp", 1000, 1200).await.unwrap(),
            Acquired::Busy {
                expires_in_ms: 300,
                ..
            }
        ));
        let Acquired::Ours(b) = acquire(&store, &k, "b", "fp", 1000, 1600).await.unwrap() else {
            panic!()
        };
        assert_eq!((b.lease.owner.as_str(), b.lease.next_chunk), ("b", 3));

        // A's next progress write fails: its lease is lost.
        assert!(matches!(
            advance(&store, &k, &mut a, 4, 2000).await,
            Err(StateError::Lost { .. })
        ));

        let marker = DoneMarker {
            outcome: "sent".into(),
            owner: "b".into(),
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
        };
        finish(&store, &k, &marker).await.unwrap();
        assert!(store.read(&k.lease).await.unwrap().is_none());
        assert_eq!(
            acquire(&store, &k, "c", "fp", 1000, 9000).await.unwrap(),
            Acquired::Done
        );
    }

    #[tokio::test]
    async fn a_config_change_mid_file_is_refused_but_not_before_any_send() {
        let store = Mem::default();
        let k = keys();
        let Acquired::Ours(mut a) = acquire(&store, &k, "a", "old", 1000, 0).await.unwrap() else {
            panic!()
        };
        // Nothing sent yet: a new config may start over.
        let Acquired::Ours(b) = acquire(&store, &k, "b", "new", 1000, 5000).await.unwrap() else {
            panic!()
        };
        assert_eq!(
            (b.lease.fingerprint.as_str(), b.lease.next_chunk),
            ("new", 0)
        );
        assert!(advance(&store, &k, &mut a, 1, 6000).await.is_err());

        let mut b = b;
        advance(&store, &k, &mut b, 2, 6000).await.unwrap();
        let got = acquire(&store, &k, "c", "newer", 1000, 7000).await.unwrap();
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

    /// A store in which another processor finishes the object right after
    /// our first look at the done marker.
    struct FinishesMeanwhile {
        inner: Mem,
        looked: Mutex<bool>,
    }

    impl StateStore for FinishesMeanwhile {
        async fn read(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, S3Error> {
            let got = self.inner.read(key).await?;
            let first_look = key.contains("/done/")
                && !std::mem::replace(&mut *self.looked.lock().unwrap(), true);
            if first_look {
                // The holder writes its marker, then deletes its lease.
                self.inner
                    .write(key, b"{}".to_vec(), PutMode::Create)
                    .await?;
                self.inner
                    .remove(&key.replace("/done/", "/leases/"))
                    .await?;
            }
            Ok(got)
        }
        async fn write(&self, key: &str, body: Vec<u8>, mode: PutMode) -> Result<String, S3Error> {
            self.inner.write(key, body, mode).await
        }
        async fn remove(&self, key: &str) -> Result<(), S3Error> {
            self.inner.remove(key).await
        }
    }

    #[tokio::test]
    async fn a_holder_finishing_between_check_and_create_is_seen() {
        let store = FinishesMeanwhile {
            inner: Mem::default(),
            looked: Mutex::new(false),
        };
        let k = keys();
        // Someone holds the object when we arrive.
        store
            .inner
            .write(&k.lease, b"{}".to_vec(), PutMode::Create)
            .await
            .unwrap();
        assert_eq!(
            acquire(&store, &k, "late", "fp", 1000, 0).await.unwrap(),
            Acquired::Done
        );
        assert!(
            store.inner.read(&k.lease).await.unwrap().is_none(),
            "our own lease was not left behind"
        );
    }

    #[tokio::test]
    async fn of_many_concurrent_takers_exactly_one_wins() {
        let store = std::sync::Arc::new(Mem::default());
        let k = keys();
        let mut wins = 0;
        for owner in 0..10 {
            if let Acquired::Ours(_) = acquire(&*store, &k, &owner.to_string(), "fp", 1000, 0)
                .await
                .unwrap()
            {
                wins += 1;
            }
        }
        assert_eq!(wins, 1);
    }
}
