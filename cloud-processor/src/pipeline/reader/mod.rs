//! Finds where the JSON starts and cuts the body into records, streaming,
//! and accounts for every byte.
//!
//! **Accounting.** Every byte of the input is exactly one of: preamble,
//! record, rejected region, or separator (whitespace, commas and the
//! brackets of a top-level array). [`Accounting`] keeps the four sums, and
//! they always add up to the bytes read. Nothing is skipped without being
//! counted, so a silent loss shows up as a broken sum.
//!
//! **Preamble.** Before the body starts, each line is looked at once. A line
//! that opens a real JSON object (`{` followed by `"` or `}`) or an array
//! followed by a value (`[` then `{`, `[`, `"`, `]` or a whole scalar) starts
//! the body, whether or not it then parses: a bad first record is a rejected
//! record, never preamble. Any other line (`#`, `//`, `[INFO] ...`,
//! `{not json`) is preamble.
//!
//! **Body.** Records are JSON objects: one per line, concatenated (pretty
//! printed ones too), or the elements of top-level arrays. Each is validated
//! whole by [`crate::pipeline::json`] before it is handed out.
//!
//! **Recovery** from a bad record is `framing/recover.rs`'s: a bad record costs
//! only itself.
//!
//! **Memory.** The buffer holds at most one record window (the record limit
//! plus one byte) plus one read. Over-long records, whitespace runs and
//! junk are walked through, never held, and what comes out does not depend
//! on how the input was split into reads (resuming after a crash relies on
//! every run over an object cutting the same chunks).

mod framing;
mod item;
#[cfg(test)]
mod tests;

pub use framing::Reader;
pub use item::{Accounting, Item, Large, Reject, excerpt};
