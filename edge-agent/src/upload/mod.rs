//! Compress one finished file and store it under its key, exactly once.
//!
//! `file.rs` opens the file and checks it is still what was judged
//! finished; `compress.rs` makes its zstd frame and content hash; `put.rs`
//! stores it with `If-None-Match: *` (one put, or a multipart upload) and
//! proves a 412 by the stored hash, or stores the file under a conflict key;
//! `retry.rs` attempts until it is stored; `error.rs` says what failed and
//! what to do about it.

mod compress;
mod error;
mod file;
mod job;
mod put;
mod retry;
#[cfg(test)]
mod tests;

pub use compress::{WHOLE_FILE_MAX_BYTES, conflict_tag};
pub use error::{UploadError, fix_hint};
pub(crate) use file::{Opened, open_for_probe, open_regular};
pub use job::{Job, MAX_PARTS, ObjectMeta, Outcome, put_options};
pub use put::{abort, upload_once};
pub use retry::{RetryPolicy, upload_with_retry};
