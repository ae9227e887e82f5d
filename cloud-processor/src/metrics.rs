//! The processor's metrics, through the `metrics` facade. In Lambda they are
//! written as CloudWatch Embedded Metric Format after each invocation (no
//! agent, no API calls); under `poll` they are served for Prometheus.

use crate::pipeline::project::Field;

pub const EVENTS: &str = "relay_processor_events_total";
pub const OBJECTS: &str = "relay_processor_objects_total";
pub const RECORDS_IN: &str = "relay_processor_records_in_total";
pub const RECORDS_OUT: &str = "relay_processor_records_out_total";
pub const REJECTED: &str = "relay_processor_rejected_records_total";
pub const MESSAGES: &str = "relay_processor_messages_total";
pub const BYTES: &str = "relay_processor_bytes_decompressed_total";
pub const INPUT_BYTES: &str = "relay_processor_input_bytes_total";
pub const ACCOUNTING_ERRORS: &str = "relay_processor_accounting_errors_total";
pub const OBJECT_SECONDS: &str = "relay_processor_object_seconds";
pub const FILE_LATENCY: &str = "relay_file_latency_seconds";
pub const SEND_RETRIES: &str = "relay_processor_send_retries_total";
pub const STATE_REQUESTS: &str = "relay_processor_state_requests_total";
pub const FIFO_WINDOW_EXCEEDED: &str = "relay_processor_fifo_window_exceeded_total";
pub const FIELD_MISSING: &str = "relay_processor_field_missing_total";
pub const SCHEMA_REJECTS: &str = "relay_processor_schema_rejects_total";
pub const OFFLOADED: &str = "relay_processor_records_offloaded_total";
pub const CANARIES: &str = "relay_processor_canaries_total";
pub const CANARY_LAG: &str = "relay_canary_lag_seconds";
pub const CANARY_CREATED: &str = "relay_canary_last_created_timestamp_seconds";
pub const READY: &str = "relay_processor_ready";
pub const LEASES_CLEANED: &str = "relay_processor_leases_cleaned_total";
pub const CHECKSUM_FAILURES: &str = "relay_processor_checksum_failures_total";
pub const SETTINGS_CHANGED: &str = "relay_processor_settings_changed_total";
pub const LEDGER_FINDINGS: &str = "relay_processor_ledger_findings_total";
pub const SPANS_EXPORTED: &str = "relay_processor_spans_exported_total";
pub const SPANS_DROPPED: &str = "relay_processor_spans_dropped_total";

/// Registers every counter, with each of its label values (the configured
/// fields and their rules included), at zero, so a `rate()` alert has a
/// series from the first scrape (under `poll`).
pub fn register_at_zero(fields: &[Field]) {
    relay_shared::attempts::register_at_zero(&[
        ("s3", "GetObject"),
        ("s3", "PutObject"),
        ("sqs", "SendMessageBatch"),
        ("sqs", "ReceiveMessage"),
    ]);
    for field in fields {
        metrics::counter!(FIELD_MISSING, "field" => field.name.clone()).increment(0);
        for rule in field.rules() {
            metrics::counter!(SCHEMA_REJECTS, "field" => field.name.clone(), "rule" => rule)
                .increment(0);
        }
    }
    for outcome in ["processed", "ignored", "unknown", "failed", "handed_on"] {
        metrics::counter!(EVENTS, "outcome" => outcome).increment(0);
    }
    for outcome in [
        "sent",
        "quarantined",
        "missing",
        "duplicate",
        "ignored",
        "paused",
        "busy",
        "failed",
        "reconciled",
    ] {
        metrics::counter!(OBJECTS, "outcome" => outcome).increment(0);
    }
    for outcome in ["sent", "discarded", "empty"] {
        metrics::counter!(CANARIES, "outcome" => outcome).increment(0);
    }
    for kind in ["preamble", "record", "rejected", "separator"] {
        metrics::counter!(INPUT_BYTES, "kind" => kind).increment(0);
    }
    for op in ["get", "put", "delete"] {
        metrics::counter!(STATE_REQUESTS, "op" => op).increment(0);
    }
    for name in [
        RECORDS_IN,
        RECORDS_OUT,
        REJECTED,
        MESSAGES,
        BYTES,
        ACCOUNTING_ERRORS,
        SEND_RETRIES,
        FIFO_WINDOW_EXCEEDED,
        OFFLOADED,
        LEASES_CLEANED,
        CHECKSUM_FAILURES,
        SETTINGS_CHANGED,
    ] {
        metrics::counter!(name).increment(0);
    }
}

/// Histogram buckets for the Prometheus exporter.
pub const OBJECT_SECONDS_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// From a tenth of a second to an outage's backlog. Up to 10 s each bound
/// is about 1.2 times the last, so a quantile read from them
/// (`histogram_quantile`, per source: 34 series) is within about 10% of the
/// true one where the relay usually is; beyond, coarser.
pub const FILE_LATENCY_BUCKETS: &[f64] = &[
    0.1, 0.12, 0.15, 0.18, 0.22, 0.27, 0.33, 0.4, 0.5, 0.6, 0.72, 0.86, 1.0, 1.2, 1.5, 1.8, 2.2,
    2.7, 3.3, 4.0, 5.0, 6.0, 7.2, 8.6, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 900.0,
    3600.0,
];

pub fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    relay_shared::attempts::describe();
    describe_counter!(
        EVENTS,
        "Notifications by outcome: processed, ignored (test events, events that create nothing), unknown (no known shape: not acknowledged, so retried into the DLQ), failed (retried, then the DLQ), handed_on (an object unfinished at the deadline or busy elsewhere: sent again as a fresh notification)"
    );
    describe_counter!(
        OBJECTS,
        "Objects handled, by outcome: sent, quarantined, missing, duplicate, ignored, paused (stopped at the invocation's deadline with its progress recorded; it goes on), busy (another processor holds it), failed, reconciled (an edge agent's manifest)"
    );
    describe_counter!(RECORDS_IN, "Records read from objects, good or bad");
    describe_counter!(
        CANARIES,
        "Canaries (the agents' heartbeat objects) by outcome: sent to the canary queue, discarded (no RELAY_CANARY_QUEUE_URL), empty (no canary record in it)"
    );
    metrics::describe_gauge!(
        READY,
        "1 once start-up has what it needs from SQS; 0 while it waits (see /healthz)"
    );
    metrics::describe_gauge!(
        CANARY_LAG,
        Unit::Seconds,
        "Per source: the last canary's age from its creation on the edge host to SQS's acknowledgement (to its processing without a canary queue)"
    );
    metrics::describe_gauge!(
        CANARY_CREATED,
        Unit::Seconds,
        "Per source: when the newest canary processed was made (the agent's clock); time() minus it is how stale the source is"
    );
    describe_counter!(
        OFFLOADED,
        "Records too large for a message, stored as S3 payloads and sent as Extended Client pointers"
    );
    describe_counter!(RECORDS_OUT, "Records sent to SQS");
    describe_counter!(
        REJECTED,
        "Rejected regions (invalid, not an object, truncated, oversized)"
    );
    describe_counter!(MESSAGES, "SQS messages sent");
    describe_counter!(BYTES, Unit::Bytes, "Decompressed bytes read");
    describe_counter!(
        INPUT_BYTES,
        Unit::Bytes,
        "Decompressed bytes by kind: preamble, record (sent), rejected, separator; they add up to relay_processor_bytes_decompressed_total"
    );
    describe_counter!(
        ACCOUNTING_ERRORS,
        "Objects whose byte accounting did not add up (a bug: every byte should be counted once)"
    );
    describe_histogram!(OBJECT_SECONDS, Unit::Seconds, "Time to process one object");
    describe_histogram!(
        FILE_LATENCY,
        Unit::Seconds,
        "Per source: from a file's last write on the edge host (its mtime, stored with the object) to its last message accepted by SQS"
    );
    describe_counter!(
        SEND_RETRIES,
        "SendMessageBatch attempts retried (throttling, partial failures)"
    );
    describe_counter!(
        STATE_REQUESTS,
        "S3 requests on state objects (markers, leases, reports), by op: get, put, delete. Divided by relay_processor_objects_total, the state cost per object"
    );
    describe_counter!(
        FIELD_MISSING,
        "Records that lacked a configured field, by field: a field that is always missing is most likely a mistyped path"
    );
    describe_counter!(
        SCHEMA_REJECTS,
        "Records rejected for breaking a field's rule, by field and rule: required, type, hmac_length (a value over 1 MiB to hash)"
    );
    describe_counter!(
        CHECKSUM_FAILURES,
        "Reads of an object whose bytes did not match the CRC32C S3 stored with it: read again, and quarantined after three"
    );
    describe_counter!(
        LEASES_CLEANED,
        "Leases of finished objects deleted by the next event for them (their holder's delete failed, or the answer to its done marker was lost)"
    );
    describe_counter!(
        SETTINGS_CHANGED,
        "Objects taken over half-sent under other settings (an upgrade that changed them): their records sent before keep the old shape, the rest are sent under the new settings"
    );
    describe_checks();
}

/// The metrics of what watches the data path: the ledger, the FIFO
/// window, the span export.
fn describe_checks() {
    use metrics::describe_counter;
    describe_counter!(
        LEDGER_FINDINGS,
        "Per source, from its agent's manifests: files stored without a done marker after RELAY_LEDGER_GRACE_SECS, files the agent cannot upload (each manifest again while they stay), files waiting on the host longer than the grace period, missing manifests, and manifests that cannot be read. Each is logged with its file, key and fix; `audit` lists them"
    );
    describe_counter!(
        SPANS_EXPORTED,
        "Spans sent to the OTLP collector (only with OTEL_EXPORTER_OTLP_ENDPOINT set)"
    );
    describe_counter!(
        SPANS_DROPPED,
        "Spans not exported, by reason: export_failed (the collector did not take them), buffer_full (more than 16384 waiting), too_many_children (an object's spans beyond 4096 in one attempt). Traces only: no record is lost"
    );
    describe_counter!(
        FIFO_WINDOW_EXCEEDED,
        "Takeovers of a FIFO object whose previous holder may have sent a batch unrecorded more than 5 minutes before: that batch, if it was sent, arrives twice"
    );
}
