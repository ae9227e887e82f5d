//! What a raw object says of the file it came from, in the metadata the
//! edge agent stored: the file's trace, which this processor continues onto
//! every message and into the done marker and its log lines, the file's
//! last write, which the file-to-SQS latency is measured from, and the
//! edge source it is counted under.

use std::collections::HashMap;

use relay_shared::meta::{SOURCE_ID, TRACEPARENT, WRITTEN_MS};
use relay_shared::trace::TraceContext;
use sha2::Digest;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    /// The file's trace with this processor's span as the parent: what
    /// every message carries. `None` for an object stored without one (an
    /// older agent, a copy made by hand).
    pub trace: Option<TraceContext>,
    /// The file's last write, in ms since the Unix epoch.
    pub written_ms: Option<u64>,
    /// The edge source: as the metadata says, else as the key does.
    pub source: String,
}

impl Provenance {
    /// Read from the object's user metadata; `keyed_source` is the source
    /// its key names. The processor's span id is derived from the trace and
    /// `dedup_base` (the object as read), so a resumed object continues
    /// with the same span.
    pub fn of(metadata: &HashMap<String, String>, dedup_base: &str, keyed_source: &str) -> Self {
        let trace = metadata
            .get(TRACEPARENT)
            .and_then(|v| TraceContext::parse(v))
            .map(|t| t.child(span_id(&t, dedup_base)));
        let written_ms = metadata.get(WRITTEN_MS).and_then(|v| v.parse().ok());
        let source = metadata.get(SOURCE_ID).map_or(keyed_source, String::as_str);
        Self {
            trace,
            written_ms,
            source: source.to_owned(),
        }
    }

    /// The trace id, as the done marker and log lines write it.
    pub fn trace_id(&self) -> Option<String> {
        self.trace.map(|t| t.trace_id_hex())
    }

    /// Seconds from the file's last write to `now_ms`, if it was stored.
    pub fn latency_secs(&self, now_ms: u64) -> Option<f64> {
        self.written_ms
            .map(|w| now_ms.saturating_sub(w) as f64 / 1000.0)
    }
}

fn span_id(trace: &TraceContext, dedup_base: &str) -> u64 {
    let digest = sha2::Sha256::digest(format!("{}\0{dedup_base}", trace.trace_id_hex()));
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(id).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_trace_is_continued_under_a_span_of_the_processors_own() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let meta = HashMap::from([
            (TRACEPARENT.to_owned(), parent.to_owned()),
            (WRITTEN_MS.to_owned(), "1763800000000".to_owned()),
        ]);
        let p = Provenance::of(&meta, "b/raw/k\0v1", "e");
        let t = p.trace.unwrap();
        assert_eq!(p.trace_id().unwrap(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(
            t.parent_id, 0x00f0_67aa_0ba9_02b7,
            "the processor's span, not the agent's"
        );
        assert_eq!(p.source, "e", "as the key says when the metadata does not");
        let same = Provenance::of(&meta, "b/raw/k\0v1", "e");
        assert_eq!(same, p, "the same on a resume");
        assert_eq!(p.latency_secs(1_763_800_001_500), Some(1.5));
        // Nothing stored, or nothing valid: nothing made up.
        let bad = HashMap::from([
            (TRACEPARENT.to_owned(), "00-zz".to_owned()),
            (WRITTEN_MS.to_owned(), "soon".to_owned()),
        ]);
        let none = |m: &HashMap<String, String>| {
            let p = Provenance::of(m, "x", "e");
            (p.trace, p.written_ms)
        };
        assert_eq!(none(&bad), (None, None));
        assert_eq!(none(&HashMap::new()), (None, None));
        let named = HashMap::from([(SOURCE_ID.to_owned(), "edge-7".to_owned())]);
        assert_eq!(Provenance::of(&named, "x", "e").source, "edge-7");
    }
}
