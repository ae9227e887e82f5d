//! The agent: one owning task (`owner.rs`) turns the watched directory
//! (`observe.rs`, followed by its path in `root.rs`) into uploads, acts on each outcome (`outcome.rs`),
//! queues its canaries behind the data (`canary.rs`) and keeps its state
//! directory's health (`state.rs`); `run.rs` starts and stops it.

mod book;
mod canary;
mod manifest;
mod observe;
mod outcome;
mod owner;
mod root;
mod run;
mod state;
#[cfg(test)]
mod tests;

pub use run::run;
