//! The processor's own spans, exported over OTLP when an endpoint is set
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` and the other `OTEL_EXPORTER_OTLP_*`
//! variables): each object's claim, download, pipeline and every
//! SendMessageBatch, under the trace the edge agent gave its file. Spans
//! wait in a bounded buffer and leave in one request per [`flush`]: after
//! each Lambda invocation (before Lambda freezes the process) and every
//! few seconds under `poll`. Losing spans never loses a record: failures
//! are logged and counted (`relay_processor_spans_dropped_total`).
//!
//! `collect` is the tracing layer, `otlp` the protobuf encoding (both pure),
//! `export` the settings and the POST, `installed` the process's one
//! exporter that the layer feeds and [`flush`] empties.

mod collect;
mod export;
mod installed;
mod otlp;

pub use collect::{ERROR_FIELD, SPAN_ID_FIELD, TRACEPARENT_FIELD};
pub use export::SettingsError;
pub use installed::{flush, layer_from_env};
