//! What both stages of the relay must agree on: the key scheme, S3 conditional
//! writes, AWS client set-up and telemetry.

pub mod check;
pub mod cli;
pub mod client;
pub mod keys;
pub mod meta;
pub mod s3;
pub mod sample;
pub mod store;
pub mod telemetry;

#[cfg(feature = "test-support")]
pub mod testing;
