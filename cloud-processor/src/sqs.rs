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
        class: Class,
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
    let class = classify(&e);
    let message = match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        _ => relay_shared::client::describe(&e),
    };
    SqsError::Call {
        queue: queue.to_owned(),
        op,
        message,
        class,
    }
}

impl relay_shared::retry::Classified for SqsError {
    /// Whether trying again may help, by the workspace's one classification:
    /// a call by its answer (or the lack of one); a queue's refusal of a
    /// message never; a batch still failing after retries may.
    fn class(&self) -> Class {
        match self {
            Self::Call { class, .. } => *class,
            Self::Refused { .. } | Self::TooLarge { .. } => Class::Permanent,
            Self::GaveUp { .. } => Class::Transient,
        }
    }
}
