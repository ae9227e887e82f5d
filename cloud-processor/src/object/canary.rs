//! Canaries: the agents' heartbeat objects, taken the data's way through
//! the once-only protocol, projected to their own fields, sent to the
//! canary queue (never the consumers'), and measured: the lag from their
//! creation on the host to SQS, per source.

use std::collections::BTreeMap;
use std::sync::Mutex;

use relay_shared::keys::Canary;
use tracing::info;

use crate::metrics as m;
use crate::object::claim::now_ms;
use crate::pipeline::project::{Field, Missing, Projection};

/// What a canary's record holds, and so its projection.
pub fn projection() -> Projection {
    Projection::new(
        &["source", "seq", "created_ms"].map(|f| Field::plain(f, &[f])),
        Missing::Omit,
    )
}

/// A canary went through: its lag from creation (by the agent's clock) to
/// now, when SQS has it (or, with no canary queue, when it is processed),
/// and the newest creation time per source.
pub fn note(newest: &Mutex<BTreeMap<String, f64>>, c: &Canary, sent: bool, records: u64) {
    let lag = now_ms().saturating_sub(c.created_ms) as f64 / 1000.0;
    let outcome = match (sent, records) {
        (_, 0) => "empty",
        (true, _) => "sent",
        (false, _) => "discarded",
    };
    metrics::counter!(m::CANARIES, "outcome" => outcome).increment(1);
    metrics::gauge!(m::CANARY_LAG, "source" => c.source_id.clone()).set(lag);
    // Canaries that waited may be processed out of order: keep the newest.
    let created = metrics::gauge!(m::CANARY_CREATED, "source" => c.source_id.clone());
    let made = c.created_ms as f64 / 1000.0;
    let newest = newest.lock().map(|mut seen| {
        let slot = seen.entry(c.source_id.clone()).or_insert(made);
        *slot = slot.max(made);
        *slot
    });
    created.set(newest.unwrap_or(made));
    info!(source = %c.source_id, lag_secs = lag, outcome, "canary");
}
