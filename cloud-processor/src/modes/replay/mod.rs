//! `replay`: re-sends S3 events for raw objects, to the notification queue
//! the processor consumes or to the function itself, so replayed objects go
//! through the same once-only protocol as live ones: only objects without a
//! done marker (backfill), or all of them (reprocess).
//!
//! Built for a month of objects, not a day. The selection is split into
//! partitions (its sub-prefixes: sources, then dates; `partition.rs`) that
//! are walked at once, each page by page in key order (`walk.rs`). Which
//! objects are done is learnt by listing their markers in step, a merge of
//! two sorted listings: about one LIST per thousand objects, no request per
//! object. Events go several objects to a notification and ten
//! notifications to a SendMessageBatch (`send.rs`). Progress is counted and
//! shown as it goes (`progress.rs`) and, with `--checkpoint`, saved after
//! every batch (`checkpoint.rs`), so a stopped replay resumes.

mod checkpoint;
mod partition;
mod progress;
mod selection;
mod send;
mod tool;
mod walk;

pub use self::selection::Selection;
#[cfg(test)]
pub use self::send::events_for;
pub use self::send::{RawObject, Target, event_for};
pub use self::tool::{Options, replay, run};
pub use crate::cli::ReplayMode as Mode;
