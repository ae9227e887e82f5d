//! The reports an object can leave under the state prefix for people to
//! read: the records it rejected, and why it was quarantined. Written
//! through the state store like every other state object.

use relay_shared::store::{ObjectStore, PutMode};
use serde_json::{Value, json};
use tracing::{error, warn};

use relay_shared::store::S3Error;

use crate::object::ObjectRef;
use crate::object::lease::Lease;
use crate::object::marker::{DoneMarker, StateObjects};
use crate::pipeline::Report;

async fn put_json<S: ObjectStore>(store: &S, key: &str, value: &Value) -> Result<(), S3Error> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    StateObjects::new(store)
        .write(key, body, PutMode::Overwrite)
        .await
        .map(drop)
}

/// Lists the records `report` rejected, with their byte ranges and reasons,
/// for the object `marker` finishes (its ETag and trace).
pub async fn rejects<S: ObjectStore>(
    store: &S,
    obj: &ObjectRef,
    key: &str,
    marker: &DoneMarker,
    report: &Report,
) -> Result<(), S3Error> {
    let s = &report.stats;
    let doc = json!({
        "source": format!("s3://{}/{}", obj.bucket, obj.key),
        "etag": marker.etag,
        "trace_id": marker.trace_id,
        "rejected": s.rejected,
        "reported": report.rejects.len(),
        "rejects": report.rejects,
    });
    put_json(store, key, &doc).await?;
    warn!(rejected = s.rejected, report = %key, "some records were rejected");
    Ok(())
}

/// Says why the object is quarantined; returns the reason.
pub async fn quarantine<S: ObjectStore>(
    store: &S,
    obj: &ObjectRef,
    key: &str,
    marker: &DoneMarker,
    reason: &str,
    sent: u32,
) -> Result<String, S3Error> {
    let doc = json!({
        "source": format!("s3://{}/{}", obj.bucket, obj.key),
        "etag": marker.etag,
        "trace_id": marker.trace_id,
        "reason": reason,
        "messages_sent_before_the_error": sent,
    });
    put_json(store, key, &doc).await?;
    error!(%reason, record = %key, messages_sent = sent, "quarantined");
    Ok(reason.to_owned())
}

/// Why an object whose chunks SQS refused is quarantined.
pub fn refused_reason(lease: &Lease) -> String {
    let listed: Vec<String> = lease
        .refused
        .iter()
        .map(|r| format!("chunk {}: {}", r.chunk, r.reason))
        .collect();
    let more = (lease.refused_count as usize).saturating_sub(listed.len());
    format!(
        "SQS refused {} message(s) for good, and their records were not delivered ({}{})",
        lease.refused_count,
        listed.join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        }
    )
}
