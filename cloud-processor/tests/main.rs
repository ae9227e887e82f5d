//! The processor's integration tests, one binary: each file below links the
//! AWS SDK once instead of once per file (about 2.5 GB less in `target/`,
//! and one link instead of twenty on every change).

mod cli;
mod common;
mod dirty_files;
mod docs;
mod faults;
mod hostile;
mod http_faults;
mod lambda_runtime;
mod layering;
mod ledger;
mod localstack;
mod long_objects;
mod offload;
mod once;
mod processor;
mod pseudonyms;
mod replay;
mod rules;
mod spans;
mod startup;
mod transport;
