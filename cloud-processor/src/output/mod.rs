//! Chunks to SQS: batched within SendMessageBatch's limits, sent through a
//! [`MessageSink`] with every settled chunk recorded, with claim checks for
//! records too large for a message and deterministic FIFO deduplication
//! ids. Knows no SDK: the SQS adapter is `aws::output_queue`.

pub mod batch;
mod dedup;
pub mod payload;
pub mod send;
pub mod sink;

pub use batch::{attributes_size, max_body_bytes};
pub use dedup::{dedup_base, dedup_id};
pub use payload::{PayloadError, Payloads};
pub use send::{Progress, SendError, Target, send_all};
pub use sink::{BatchOutcome, MessageSink, Origin, QueueError, Route};
