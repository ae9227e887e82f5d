//! The edge agent: watches a directory and relays every finished file to S3,
//! zstd-compressed, under an immutable key, exactly once.
//!
//! One task owns all state (the tracker, the ready queue, the ledger); uploads
//! run as bounded concurrent tasks and report back. That keeps the agent free
//! of locks and its memory bounded by the number of files it knows about plus
//! one part buffer per upload in flight.

mod agent;
pub mod check;
pub mod config;
pub mod health;
pub mod lease;
pub mod ledger;
pub mod metrics;
pub mod s3;
mod start;
pub mod tracker;
pub mod unit;
pub mod upload;
mod watch;

use std::io;
use std::path::PathBuf;

pub use agent::run;
pub use start::{StartError, bucket, check, check_as_unit, start};

/// Counts from one run of the agent, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub uploaded: u64,
    pub duplicates: u64,
    /// Files whose name S3 already held with other bytes, stored under a
    /// conflict key.
    pub conflicts: u64,
    /// Files whose key S3 held without a content hash: kept on disk.
    pub unverified: u64,
    pub gone: u64,
    pub rejected: u64,
    /// Times a file was set aside after a permanent failure.
    pub set_aside: u64,
    /// Uploads still running at the shutdown deadline; relayed on next start.
    pub unfinished: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("watching {dir}: {source}")]
    Watch { dir: PathBuf, source: notify::Error },
    #[error("opening the upload ledger in {dir}: {source}")]
    Ledger { dir: PathBuf, source: io::Error },
}
