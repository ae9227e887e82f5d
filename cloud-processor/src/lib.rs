//! The cloud processor: raw objects from the edge agent to packed SQS
//! messages, exactly once. One object's way through it reads top-down:
//! [`modes`] (how it runs), `ingest` (events that name objects), `object`
//! (each object claimed, run and settled once), `pipeline` (pure: bytes to
//! chunks) and `output` (chunks to SQS). AWS SDK calls are made only in the
//! adapters named after their service (`ingest::sqs`, `output::sqs`,
//! `modes::lambda_api`, and S3 in `relay_shared::s3`).
//!
//! The modules are private; what the binary, the tests, the benchmarks and
//! the fuzz targets use is re-exported here.

mod cli;
mod error;
mod ingest;
mod metrics;
pub mod modes;
mod object;
mod output;
mod pipeline;
mod sqs;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

// Settings.
pub use cli::{AwsTimeouts, Cli, Config, ConfigError, Protocol, RECORD_WINDOW_BYTES, parse_from};
// What arrives.
pub use ingest::sqs::Notifications;
// One object, exactly once.
pub use error::ProcessError;
pub use object::marker::{DoneMarker, StateKeys};
pub use object::{App, Outcome};
// The pure pipeline.
pub use modes::ssm::PLACEHOLDER as HMAC_KEY_PLACEHOLDER;
pub use pipeline::body::{BodyFormat, Chunk};
pub use pipeline::json::is_ws;
pub use pipeline::project::{Missing, Projection, RecordError, parse_fields};
pub use pipeline::reader::{Accounting, Item, Reader};
pub use pipeline::rules::{HmacKey, RULES};
pub use pipeline::stream::{Fed, Streamer};
pub use pipeline::{LargeRecords, Report, Settings, run as run_pipeline};
// Chunks to SQS.
pub use output::batch::attributes_size;
pub use output::sink::MessageSink;
pub use output::sqs::Output;
pub use sqs::SqsError;
