//! The agent: one owning task (`owner.rs`) turns the watched directory
//! (`observe.rs`) into uploads, acts on each outcome (`outcome.rs`), and
//! queues its canaries behind the data (`canary.rs`); `run.rs` starts and
//! stops it.

mod canary;
mod observe;
mod outcome;
mod owner;
mod run;
#[cfg(test)]
mod tests;

pub use run::run;
