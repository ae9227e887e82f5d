//! What arrives.

pub mod event;
