//! Gaps in the timestamps of a source's file names: a stretch longer than
//! `--gap-mins` with no file. File names come from the host's clock, so a
//! clock that jumped forward shows here too; the manifests' sequence, which
//! counts instead, does not (see `ledger.rs`).

use std::collections::BTreeMap;

use relay_shared::keys::{self, KeyScheme, TimeFormat};
use serde::Serialize;

/// A stretch of a source's file names with no file in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameGap {
    pub source: String,
    /// The last key before the gap and the first after it.
    pub after: String,
    pub before: String,
    pub minutes: i64,
}

/// Follows raw keys in listing order (by source, then by time).
#[derive(Debug)]
pub struct NameGaps {
    max_gap_ms: i64,
    /// Per source, the newest data file seen: its time (ms) and key.
    last: BTreeMap<String, (i64, String)>,
    pub found: Vec<NameGap>,
}

impl NameGaps {
    pub fn new(gap_mins: u32) -> Self {
        Self {
            max_gap_ms: i64::from(gap_mins) * 60_000,
            last: BTreeMap::new(),
            found: Vec::new(),
        }
    }

    /// Notes the data file at `key`; canaries and names with no timestamp
    /// this build can read (a source's own pattern) are passed over.
    pub fn see(&mut self, raw_prefix: &str, key: &str) {
        if keys::canary_of(raw_prefix, key).is_some() {
            return;
        }
        let Some((source, name)) = key
            .strip_prefix(raw_prefix)
            .and_then(|rest| Some((rest.split('/').next()?, rest.rsplit('/').next()?)))
        else {
            return;
        };
        let name = name.strip_suffix(keys::RAW_SUFFIX).unwrap_or(name);
        let Some(at) = KeyScheme::new(raw_prefix, source, TimeFormat::Auto)
            .and_then(|k| k.raw_key(name))
            .ok()
            .map(|k| k.timestamp.as_millisecond())
        else {
            return;
        };
        if let Some((prev, prev_key)) = self.last.get(source)
            && at - prev > self.max_gap_ms
        {
            self.found.push(NameGap {
                source: source.to_owned(),
                after: prev_key.clone(),
                before: key.to_owned(),
                minutes: (at - prev) / 60_000,
            });
        }
        self.last.insert(source.to_owned(), (at, key.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stretch_without_files_is_a_gap_per_source_canaries_aside() {
        let mut gaps = NameGaps::new(10);
        let key = |source: &str, ms: u64| {
            KeyScheme::new("raw/", source, TimeFormat::Auto)
                .and_then(|k| k.raw_key(&format!("{ms}.json")))
                .map(|k| k.key)
                .unwrap_or_default()
        };
        let t = 1_796_454_000_000;
        let min = 60_000;
        let canary = KeyScheme::new("raw/", "a", TimeFormat::Auto)
            .map(|k| k.canary_key(t + 5 * min).1.key)
            .unwrap_or_default();
        for k in [
            key("a", t),
            canary,
            key("a", t + 9 * min),
            key("a", t + 30 * min),
            "raw/a/2026/12/05/07/notes.json.zst".to_owned(),
            key("b", t),
            key("b", t + 5 * min),
        ] {
            gaps.see("raw/", &k);
        }
        assert_eq!(
            gaps.found,
            [NameGap {
                source: "a".into(),
                after: key("a", t + 9 * min),
                before: key("a", t + 30 * min),
                minutes: 21,
            }]
        );
    }
}
