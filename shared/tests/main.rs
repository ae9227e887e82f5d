//! relay-shared's integration tests, one binary (each file below would
//! otherwise link the AWS SDK again). `retries.rs` stays its own binary: it
//! installs the process's global metrics recorder.

mod attempt_budget;
mod docs;
mod layering;
mod sink_s3;
mod store_contract;
