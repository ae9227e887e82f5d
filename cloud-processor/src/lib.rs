//! The cloud processor: raw objects from the edge agent to packed SQS
//! messages, exactly once. One object's way through it reads top-down, and
//! imports only go down it: `modes` (how it runs), `aws` (the SDK adapters,
//! the only code that names an AWS SDK type), `ingest` (events that name
//! objects), `object` (each object claimed, run and settled once), `output`
//! (chunks to SQS) and `pipeline` (pure: bytes to chunks). `cli` (settings)
//! and `metrics` (names) sit beside them and import only `pipeline`;
//! `spans` (the OTLP export of each object's spans) imports only `metrics`.
//! `tests/layering.rs` holds the tree to that.
//!
//! The modules are private; what the binary, the tests, the benchmarks and
//! the fuzz targets use is re-exported here.

mod aws;
mod cli;
mod ingest;
mod metrics;
mod modes;
mod object;
mod output;
mod pipeline;
mod spans;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

// Settings.
pub use cli::{AwsTimeouts, Cli, Config, ConfigError, Protocol, RECORD_WINDOW_BYTES, parse_from};
// The processor's spans, over OTLP.
pub use spans::{SettingsError as SpanSettingsError, layer_from_env as spans_layer};
// How it runs.
pub use modes::{Exit, RunError, is_tool, run};
// The AWS adapters.
pub use aws::{AwsProcessor, Function, HMAC_KEY_PLACEHOLDER, SqsNotifications, SqsOutput};
// What arrives.
pub use ingest::{HandleError, Handler, MAX_HANDOFFS};
// One object, exactly once.
pub use object::{
    DoneMarker, Failure, ObjectRef, Outcome, ProcessError, Processor, STATE_FOLDERS, StateKeys,
};
// Chunks to SQS.
pub use output::{MessageSink, Origin, QueueError, attributes_size};
// The pure pipeline.
pub use pipeline::body::{BodyFormat, Chunk};
pub use pipeline::project::{Missing, Projection, parse_fields};
pub use pipeline::rules::{HmacKey, RULES};
pub use pipeline::{LargeRecords, Report, Resume, Settings, run as run_pipeline};

/// The operator tools' library side, as the tests drive them.
pub mod tools {
    pub use crate::modes::audit::audit;
    pub use crate::modes::poll::follow as poll;
    pub use crate::modes::replay::{
        Mode, Options, RawObject, Selection, Target, event_for, replay,
    };
}

/// The pipeline's inner parts that only the fuzz targets reach for.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::pipeline::json::is_ws;
    pub use crate::pipeline::project::RecordError;
    pub use crate::pipeline::reader::{Accounting, Item, Reader};
    pub use crate::pipeline::stream::{FeedOutcome, Streamer};
}
