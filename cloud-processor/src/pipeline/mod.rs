//! The processor's data path over one raw object, with no I/O of its own:
//! decompress (zstd, detected by magic bytes, or plain), read records, project,
//! pack. Chunks go to a callback as soon as they are full, so memory stays at
//! a few message sizes plus the decoder's buffers whatever the object size.

pub mod body;
pub mod compact;
mod decode;
pub mod grammar;
pub mod json;
mod limit;
pub mod project;
pub mod reader;
mod records;
mod report;
mod resume;
pub mod rules;
mod settings;
mod source;
pub mod stream;
#[cfg(test)]
mod tests;

pub use decode::run;
pub use report::{Report, Stats, Unreadable};
pub use resume::{Position, Resume};
pub use settings::{LargeRecords, Settings};
