//! What the adapters of both queues share: an SQS call's error, classified
//! once by the workspace's retry classification.

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use relay_shared::retry::{Class, classify};

#[derive(Debug, thiserror::Error)]
pub enum SqsError {
    #[error("queue {queue}: {op} failed: {message}")]
    Call {
        queue: String,
        op: &'static str,
        message: String,
        transient: bool,
    },
    #[error("queue {queue} refused message {id}: {code}: {message}")]
    Refused {
        queue: String,
        id: String,
        code: String,
        message: String,
    },
    #[error("queue {queue}: {failed} messages still failing after retries (last: {last})")]
    GaveUp {
        queue: String,
        failed: usize,
        last: String,
    },
    #[error(
        "queue {queue} refused a message as too large ({message}); its size limit is now {limit} bytes, \
         and the object is retried with it"
    )]
    TooLarge {
        queue: String,
        message: String,
        limit: usize,
    },
}

/// An SQS call's SDK error, as the queue's adapters report it.
pub(crate) fn call_error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    queue: &str,
    op: &'static str,
    e: SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> SqsError {
    let transient = classify(&e) != Class::Permanent;
    let message = match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        _ => relay_shared::client::describe(&e),
    };
    SqsError::Call {
        queue: queue.to_owned(),
        op,
        message,
        transient,
    }
}
