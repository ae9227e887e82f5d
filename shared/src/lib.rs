//! What both stages of the relay must agree on: the key scheme, S3 conditional
//! writes, AWS client set-up and telemetry.
//!
//! The object store is a trait ([`store`]) with S3 behind it ([`s3`]) and
//! an in-memory fake for tests; [`retry`] is the one classification of AWS
//! failures. Imports run one way: `retry` ← `store` ← `s3` → `client`.

pub mod attempts;
pub mod check;
pub mod checksum;
pub mod cli;
pub mod client;
pub mod keys;
pub mod manifest;
pub mod meta;
pub mod retry;
pub mod s3;
pub mod sample;
pub mod store;
pub mod telemetry;
pub mod trace;

#[cfg(feature = "test-support")]
pub mod testing;
