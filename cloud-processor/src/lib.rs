//! The cloud processor: turns raw objects from the edge agent into packed SQS
//! messages. Pure stages (reader, projection, packing) have no I/O; the
//! pipeline drives them over a stream; AWS adapters are leaf modules.

pub mod cli;
pub mod error;
pub mod ingest;
pub mod metrics;
pub mod modes;
pub mod object;
pub mod output;
pub mod pipeline;
pub mod sqs;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
