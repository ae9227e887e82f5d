//! The projection of one record too large for the reader's window, as a push
//! parser: it checks the record as [`crate::pipeline::json`] does while the reader
//! streams it past, and copies the wanted values into spools (memory, then a
//! temporary file), so that no part of the record is ever held whole.
//!
//! Speed matters little here (records over the window are rare); agreement
//! with the in-window path matters a lot, and is what the tests check: the
//! same input gives the same validity and the same projected bytes whichever
//! path reads it, however the input is split.

mod captured;
mod spool;
mod streamer;

pub use captured::{Body, Captured};
pub use streamer::{Failure, FeedOutcome, Streamer};
