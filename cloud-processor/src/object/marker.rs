//! The state objects of one raw object, under the state prefix, mirroring
//! its key: the done marker (written once the object is finished), the
//! lease, and the rejects and quarantine reports. Every request on them goes
//! through [`StateObjects`], which counts it.

use relay_shared::store::{ObjectStore, PutMode, PutOptions, S3Error, SmallObject};
use serde::{Deserialize, Serialize};

fn is_zero(v: &u64) -> bool {
    *v == 0
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
    /// Per field: records that lacked it (markers written before this was
    /// kept have none).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub field_missing: std::collections::BTreeMap<String, u64>,
    /// Records too large for a message, sent as S3 pointers.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offloaded: u64,
    /// Per field and rule: records rejected for breaking it (only those
    /// that did).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub schema_rejects: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
    /// Records (and rejected regions) handled under earlier settings, when
    /// the object was half-sent as they changed: the counts above are of
    /// the rest.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub earlier: u64,
    /// The file's W3C trace id, as the agent stored it with the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl DoneMarker {
    /// The marker of an object `owner` sends, read at `etag` under
    /// `fingerprint`'s settings, resuming after `resumed_from_chunk`
    /// chunks; its counts are filled in as the object finishes.
    pub fn new(owner: &str, fingerprint: &str, etag: &str, resumed_from_chunk: u32) -> Self {
        Self {
            outcome: "sent".into(),
            owner: owner.to_owned(),
            finished_at_ms: 0,
            fingerprint: fingerprint.to_owned(),
            etag: etag.to_owned(),
            records_in: 0,
            records_out: 0,
            rejected: 0,
            messages: 0,
            bytes_decompressed: 0,
            preamble_bytes: 0,
            record_bytes: 0,
            rejected_bytes: 0,
            separator_bytes: 0,
            elapsed_ms: 0,
            resumed_from_chunk,
            field_missing: std::collections::BTreeMap::new(),
            offloaded: 0,
            schema_rejects: std::collections::BTreeMap::new(),
            earlier: 0,
            trace_id: None,
        }
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
/// Every folder written under the state prefix: the Terraform module's
/// lifecycle rules cover each (`tests/docs.rs` holds them to this).
pub const STATE_FOLDERS: [&str; 4] = [DONE, LEASES, REJECTS, QUARANTINE];

/// A raw key, or a prefix of raw keys, mirrored under one state folder:
/// `raw/<rel>` becomes `state/<folder><rel>`.
pub fn mirrored(state_prefix: &str, folder: &str, raw_prefix: &str, raw_key: &str) -> String {
    let rel = raw_key.strip_prefix(raw_prefix).unwrap_or(raw_key);
    format!("{state_prefix}{folder}{rel}")
}

impl StateKeys {
    /// The state keys of the object whose lease is at `lease_key`.
    pub fn of_lease(state_prefix: &str, raw_prefix: &str, lease_key: &str) -> Self {
        let rel = lease_key
            .strip_prefix(state_prefix)
            .and_then(|k| k.strip_prefix(LEASES))
            .unwrap_or(lease_key);
        Self::new(state_prefix, raw_prefix, &format!("{raw_prefix}{rel}"))
    }

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

/// The state objects of one bucket, read and written through its store,
/// each request counted (`relay_processor_state_requests_total{op}`).
#[derive(Debug, Clone, Copy)]
pub struct StateObjects<'a, S> {
    store: &'a S,
}

fn count(op: &'static str) {
    metrics::counter!(crate::metrics::STATE_REQUESTS, "op" => op).increment(1);
}

impl<'a, S: ObjectStore> StateObjects<'a, S> {
    pub fn new(store: &'a S) -> Self {
        Self { store }
    }

    /// The store under them.
    pub fn inner(&self) -> &'a S {
        self.store
    }

    /// The object with its ETag and S3's times, or `None` if it does not exist.
    pub async fn read(&self, key: &str) -> Result<Option<SmallObject>, S3Error> {
        count("get");
        match self.store.get_small(key).await {
            Ok(small) => Ok(Some(small)),
            Err(S3Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes under `mode`; returns the new ETag.
    pub async fn write(&self, key: &str, body: Vec<u8>, mode: PutMode) -> Result<String, S3Error> {
        count("put");
        let options = PutOptions {
            content_type: Some("application/json".into()),
            ..PutOptions::default()
        };
        self.store
            .put(key, body, &mode, &options)
            .await
            .map(|r| r.etag.unwrap_or_default())
    }

    /// Deletes the object; with `if_match`, only while its ETag is that one
    /// ([`S3Error::Precondition`] otherwise).
    pub async fn remove(&self, key: &str, if_match: Option<&str>) -> Result<(), S3Error> {
        count("delete");
        self.store.delete(key, if_match).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(StateKeys::of_lease("state/", "raw/", &k.lease), k);
    }
}
