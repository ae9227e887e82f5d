//! The ways the processor runs.

pub mod check;
pub mod lambda_api;
pub mod poll;
pub mod process;
pub mod replay;
pub mod serve;
pub mod tools;
