//! Completeness manifests: what an edge agent saw of its files, so the cloud
//! can say which files a host wrote that are not in SQS, and why.
//!
//! Every interval (and at shutdown) the agent uploads one manifest per
//! source: the files it stored in S3 since the one before (name, key and
//! content hash), the files it cannot upload (name and reason), and the
//! files still waiting to be finished (since when). Manifests carry a
//! sequence number that counts from 1 within an *epoch* (the start of the
//! agent's state directory), so a missing manifest is itself a finding,
//! and a clock that jumps on the host moves no sequence number.
//!
//! Key: `ledger/<source>/<epoch ms>/<seq, 10 digits>.<created ms>.json`.
//! The sequence sorts the listing; the creation time lets `audit` pick a
//! time window from the listing alone.

use serde::{Deserialize, Serialize};

/// Where manifests live: outside the raw and state prefixes, with an S3
/// notification of its own to the processor.
pub const PREFIX: &str = "ledger/";
/// The format's version, in every manifest.
pub const VERSION: u32 = 1;
/// At most this many files of each list in one manifest; the rest are
/// counted (`*_more`), so a manifest stays small whatever the backlog.
pub const MAX_LISTED: usize = 1000;
/// A manifest larger than this is refused unread (one with every list full
/// is about 600 KB).
pub const MAX_BYTES: usize = 4 << 20;

/// One manifest, as the agent uploads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    pub source: String,
    pub epoch_ms: u64,
    pub seq: u64,
    pub created_ms: u64,
    /// The agent's manifest interval: how far apart manifests are meant to be.
    pub interval_secs: u64,
    /// Files S3 was known to hold with their exact bytes since the
    /// previous manifest (uploaded, found there, or stored under a
    /// conflict key).
    pub uploaded: Vec<Uploaded>,
    /// Files the agent cannot upload now: a name that gives no key, or a
    /// failure set aside for a later retry.
    pub refused: Vec<Refused>,
    #[serde(default)]
    pub refused_more: u64,
    /// Files seen but not yet finished or uploaded, oldest first.
    pub waiting: Vec<Waiting>,
    #[serde(default)]
    pub waiting_more: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uploaded {
    /// The file's path under the watch directory.
    pub file: String,
    pub key: String,
    /// The xxh3-128 of the file's bytes, as the object's `content-hash`
    /// metadata has it.
    pub hash: String,
    /// When S3 was known to hold it (the agent's clock).
    pub stored_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refused {
    pub file: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waiting {
    pub file: String,
    /// The file's last write (its mtime).
    pub since_ms: u64,
}

/// Where a manifest is, read from its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub epoch_ms: u64,
    pub seq: u64,
    pub created_ms: u64,
}

/// A manifest or its key that cannot be used, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("{key}: not a manifest key (want {PREFIX}<source>/<epoch ms>/<seq>.<created ms>.json)")]
    Key { key: String },
    #[error("{key}: {bytes} bytes, more than a manifest may hold ({MAX_BYTES})")]
    TooLarge { key: String, bytes: usize },
    #[error("{key}: not a manifest: {reason}")]
    Malformed { key: String, reason: String },
    #[error("{key}: its body says {body}, its key says {named}")]
    Mismatch {
        key: String,
        body: String,
        named: String,
    },
}

/// The key of a manifest.
pub fn key(source: &str, at: Position) -> String {
    format!(
        "{}{}.json",
        seq_prefix(source, at.epoch_ms, at.seq),
        at.created_ms
    )
}

/// The prefix every key of one source's manifests starts with.
pub fn source_prefix(source: &str) -> String {
    format!("{PREFIX}{source}/")
}

/// The prefix of manifest `seq` of an epoch, whatever its creation time:
/// one listing finds it.
pub fn seq_prefix(source: &str, epoch_ms: u64, seq: u64) -> String {
    format!("{PREFIX}{source}/{epoch_ms}/{seq:010}.")
}

/// The source and position a manifest key names.
pub fn parse_key(key: &str) -> Result<(String, Position), ManifestError> {
    let bad = || ManifestError::Key {
        key: key.to_owned(),
    };
    let rest = key.strip_prefix(PREFIX).ok_or_else(bad)?;
    let mut parts = rest.split('/');
    let (Some(source), Some(epoch), Some(name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (seq, created) = name
        .strip_suffix(".json")
        .and_then(|n| n.split_once('.'))
        .ok_or_else(bad)?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (number(epoch), number(seq), number(created)) {
        (Some(epoch_ms), Some(seq), Some(created_ms)) if !source.is_empty() && seq > 0 => Ok((
            source.to_owned(),
            Position {
                epoch_ms,
                seq,
                created_ms,
            },
        )),
        _ => Err(bad()),
    }
}

impl Manifest {
    /// Where this manifest goes.
    pub fn key(&self) -> String {
        key(&self.source, self.position())
    }

    pub fn position(&self) -> Position {
        Position {
            epoch_ms: self.epoch_ms,
            seq: self.seq,
            created_ms: self.created_ms,
        }
    }

    /// The manifest as stored: JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Strings and integers only: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads the manifest stored under `key`: it must be one, of the
    /// version this build reads, and say what its key says.
    pub fn parse(key: &str, body: &[u8]) -> Result<Self, ManifestError> {
        let (source, at) = parse_key(key)?;
        if body.len() > MAX_BYTES {
            return Err(ManifestError::TooLarge {
                key: key.to_owned(),
                bytes: body.len(),
            });
        }
        let m: Self = serde_json::from_slice(body).map_err(|e| ManifestError::Malformed {
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
        if m.version != VERSION {
            return Err(ManifestError::Malformed {
                key: key.to_owned(),
                reason: format!("version {} (this build reads {VERSION})", m.version),
            });
        }
        if m.source != source || m.position() != at {
            return Err(ManifestError::Mismatch {
                key: key.to_owned(),
                body: format!("{} {:?}", m.source, m.position()),
                named: format!("{source} {at:?}"),
            });
        }
        Ok(m)
    }
}

/// A manifest for tests: `source`'s manifest `seq` of epoch 1, made at
/// `seq` minutes, naming `files` stored then under one hour's raw keys.
#[cfg(any(test, feature = "test-support"))]
pub fn sample(source: &str, seq: u64, files: &[&str]) -> Manifest {
    let made_ms = seq * 60_000;
    Manifest {
        version: VERSION,
        source: source.to_owned(),
        epoch_ms: 1,
        seq,
        created_ms: made_ms,
        interval_secs: 60,
        uploaded: files
            .iter()
            .map(|f| Uploaded {
                file: (*f).to_owned(),
                key: format!("raw/{source}/2026/12/05/12/{f}.zst"),
                hash: String::new(),
                stored_ms: made_ms,
            })
            .collect(),
        refused: vec![],
        refused_more: 0,
        waiting: vec![],
        waiting_more: 0,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn manifest(source: &str, at: Position) -> Manifest {
        Manifest {
            version: VERSION,
            source: source.into(),
            epoch_ms: at.epoch_ms,
            seq: at.seq,
            created_ms: at.created_ms,
            interval_secs: 60,
            uploaded: vec![Uploaded {
                file: "a/1.json".into(),
                key: "raw/s/2026/12/05/12/1.json.zst".into(),
                hash: "00ff".into(),
                stored_ms: 5,
            }],
            refused: vec![Refused {
                file: "bad name".into(),
                reason: "no timestamp".into(),
            }],
            refused_more: 0,
            waiting: vec![],
            waiting_more: 3,
        }
    }

    #[test]
    fn the_key_names_source_epoch_sequence_and_time() {
        let at = Position {
            epoch_ms: 17,
            seq: 3,
            created_ms: 99,
        };
        assert_eq!(key("host-a", at), "ledger/host-a/17/0000000003.99.json");
        assert!(key("host-a", at).starts_with(&seq_prefix("host-a", 17, 3)));
    }

    #[test]
    fn bad_keys_and_bodies_say_what_is_wrong() {
        for k in [
            "raw/a/1/0000000001.5.json",
            "ledger/a/1/0000000001.json",
            "ledger/a/x/0000000001.5.json",
            "ledger/a/1/0000000000.5.json",
            "ledger//1/0000000001.5.json",
            "ledger/a/1/2/0000000001.5.json",
        ] {
            assert_eq!(
                parse_key(k),
                Err(ManifestError::Key { key: k.into() }),
                "{k}"
            );
        }
        let at = Position {
            epoch_ms: 1,
            seq: 1,
            created_ms: 5,
        };
        let k = key("a", at);
        let e = Manifest::parse(&k, b"{\"version\":1").unwrap_err();
        assert!(
            e.to_string().starts_with(&format!("{k}: not a manifest:")),
            "{e}"
        );
        let other = serde_json::to_vec(&manifest("b", at)).unwrap();
        assert!(matches!(
            Manifest::parse(&k, &other),
            Err(ManifestError::Mismatch { .. })
        ));
        let mut newer = manifest("a", at);
        newer.version = 2;
        let e = Manifest::parse(&k, &serde_json::to_vec(&newer).unwrap()).unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
    }

    proptest! {
        #[test]
        fn a_manifest_reads_back_from_its_key(
            source in "[A-Za-z0-9_.-]{1,40}",
            epoch_ms in 0u64..u64::MAX,
            seq in 1u64..u64::MAX,
            created_ms in 0u64..u64::MAX,
        ) {
            let at = Position { epoch_ms, seq, created_ms };
            let m = manifest(&source, at);
            let k = m.key();
            prop_assert_eq!(parse_key(&k), Ok((source.clone(), at)));
            prop_assert_eq!(Manifest::parse(&k, &serde_json::to_vec(&m).unwrap()), Ok(m));
        }

        #[test]
        fn any_body_is_read_or_refused_never_a_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let k = key("a", Position { epoch_ms: 1, seq: 1, created_ms: 1 });
            let _ = Manifest::parse(&k, &body);
        }
    }
}
