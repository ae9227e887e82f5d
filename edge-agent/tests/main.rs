//! The agent's integration tests, one binary: each file below links the
//! AWS SDK once instead of once per file.

mod agent;
mod common;
mod docs;
mod host_faults;
mod layering;
mod leases;
mod packaging;
