//! The cloud processor: turns raw objects from the edge agent into packed SQS
//! messages. Pure stages (reader, projection, packing) have no I/O; the
//! pipeline drives them over a stream; AWS adapters are leaf modules.

pub mod check;
pub mod config;
pub mod error;
pub mod event;
pub mod handler;
pub mod json;
pub mod lambda;
pub mod local;
pub mod metrics;
pub mod pack;
pub mod pipeline;
pub mod poll;
pub mod project;
pub mod reader;
pub mod replay;
pub mod reports;
pub mod send;
pub mod serve;
pub mod sqs;
pub mod state;
pub mod stream;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod tools;
