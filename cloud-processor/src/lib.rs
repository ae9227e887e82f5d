//! The cloud processor: turns raw objects from the edge agent into packed SQS
//! messages. Pure stages (reader, projection, packing) have no I/O; the
//! pipeline drives them over a stream; AWS adapters are leaf modules.

pub mod pack;
pub mod pipeline;
pub mod project;
pub mod reader;
