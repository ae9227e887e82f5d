//! How a failed AWS call is treated, the same for S3 and SQS and in both
//! stages: throttled, transient or permanent. The one classification; every
//! error type of the workspace that wraps an AWS failure carries a [`Class`].

use std::fmt;
use std::time::Duration;

/// How a failed AWS call should be treated, the same for S3 and SQS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The service asked us to slow down: retry, with backoff.
    Throttled,
    /// A timeout, a lost connection or a server-side failure: retry.
    Transient,
    /// The request itself is wrong or not allowed: retrying cannot help.
    Permanent,
}

/// Classifies a service's error code (and HTTP status, where known). The
/// throttling and transient codes are the SDK's own lists (`aws-runtime`),
/// so this agrees with the SDK's retry classifier; S3's `InternalError` and
/// SQS's `ServiceUnavailable`, `InternalFailure` and `KMS.Throttling*`
/// codes are added, as are 429 and every 5xx.
pub fn classify_code(status: Option<u16>, code: &str) -> Class {
    use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
    if THROTTLING_ERRORS.contains(&code) || code.contains("Throttl") || status == Some(429) {
        Class::Throttled
    } else if TRANSIENT_ERRORS.contains(&code)
        || matches!(
            code,
            "InternalError" | "InternalFailure" | "ServiceUnavailable" | "503"
        )
        || matches!(status, Some(500..=599))
    {
        Class::Transient
    } else {
        Class::Permanent
    }
}

/// Classifies any AWS SDK error: no answer at all (timeout, connection,
/// unreadable response) is transient; a service's answer by its code and
/// HTTP status.
pub fn classify<E>(
    err: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Class
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Class::Transient
        }
        SdkError::ServiceError(_) => {
            let status = err.raw_response().map(|r| r.status().as_u16());
            classify_code(status, err.code().unwrap_or_default())
        }
        _ => Class::Permanent,
    }
}

/// Why a request was tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The service asked us to slow down (429, SlowDown, Throttling...).
    Throttled,
    /// A 5xx answer that is not throttling.
    ServerError,
    /// No answer in time.
    Timeout,
    /// The connection failed or broke before an answer.
    Connection,
    /// An answer that could not be read (cut short, malformed).
    Response,
    /// A SendMessageBatch answered with some entries failed.
    PartialBatch,
    /// Anything else the caller chose to retry.
    Other,
}

impl Cause {
    pub fn label(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::ServerError => "server_error",
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Response => "response",
            Self::PartialBatch => "partial_batch",
            Self::Other => "other",
        }
    }

    /// Every cause, for registering the counter at zero.
    pub const ALL: [Cause; 7] = [
        Self::Throttled,
        Self::ServerError,
        Self::Timeout,
        Self::Connection,
        Self::Response,
        Self::PartialBatch,
        Self::Other,
    ];

    /// The cause of an answer with HTTP `status` and `body` (S3's XML and
    /// SQS's JSON errors both name their code in it).
    pub fn of_answer(status: u16, body: &[u8]) -> Self {
        let head = &body[..body.len().min(2048)];
        let names = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
        if status == 429
            || names(b"SlowDown")
            || names(b"Throttl")
            || names(b"RequestLimitExceeded")
        {
            Self::Throttled
        } else if status >= 500 {
            Self::ServerError
        } else {
            Self::Other
        }
    }
}

/// The cause of a failed call, as the SDK reports it (after its own
/// attempts): no answer in time, no connection, an unreadable answer, or
/// the service's answer.
pub fn cause_of<E>(
    err: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Cause {
    use aws_sdk_s3::error::SdkError;
    match err {
        SdkError::TimeoutError(_) => Cause::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => Cause::Timeout,
        SdkError::DispatchFailure(_) => Cause::Connection,
        SdkError::ResponseError(_) => Cause::Response,
        SdkError::ServiceError(s) => Cause::of_answer(
            s.raw().status().as_u16(),
            s.raw().body().bytes().unwrap_or_default(),
        ),
        _ => Cause::Other,
    }
}

/// Delays between attempts: exponential from `min` to `max`, with jitter,
/// for as many attempts as the caller makes. The one shape every retry loop
/// of the workspace waits by.
pub fn backoff(min: Duration, max: Duration) -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// An error that knows its [`Class`]: all a retry loop needs to decide
/// between waiting and giving up.
pub trait Classified: std::error::Error {
    fn class(&self) -> Class;
}

impl Class {
    /// Whether the same request may succeed if tried again: throttled and
    /// transient failures pass; permanent ones need someone to change
    /// something.
    pub fn is_retryable(self) -> bool {
        self != Self::Permanent
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Throttled => "throttled",
            Self::Transient => "transient",
            Self::Permanent => "permanent",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_services_codes_are_classified_alike() {
        for code in [
            "SlowDown",
            "Throttling",
            "ThrottlingException",
            "RequestThrottled",
            "KMS.ThrottlingException",
        ] {
            assert_eq!(classify_code(None, code), Class::Throttled, "{code}");
        }
        for code in [
            "RequestTimeout",
            "InternalError",
            "ServiceUnavailable",
            "InternalFailure",
        ] {
            assert_eq!(classify_code(None, code), Class::Transient, "{code}");
        }
        assert_eq!(classify_code(Some(503), "Whatever"), Class::Transient);
        assert_eq!(classify_code(Some(429), ""), Class::Throttled);
        for code in ["AccessDenied", "NoSuchBucket", "InvalidParameterValue", ""] {
            assert_eq!(classify_code(Some(400), code), Class::Permanent, "{code}");
        }
    }

    #[test]
    fn causes_are_read_from_s3_and_sqs_answers() {
        let s3_slow = b"<Error><Code>SlowDown</Code><Message>Reduce</Message></Error>";
        let sqs_throttled = br#"{"__type":"com.amazonaws.sqs#ThrottlingException","message":"x"}"#;
        let s3_internal = b"<Error><Code>InternalError</Code></Error>";
        assert_eq!(Cause::of_answer(503, s3_slow), Cause::Throttled);
        assert_eq!(Cause::of_answer(400, sqs_throttled), Cause::Throttled);
        assert_eq!(Cause::of_answer(429, b""), Cause::Throttled);
        assert_eq!(Cause::of_answer(500, s3_internal), Cause::ServerError);
        assert_eq!(
            Cause::of_answer(400, b"<Code>InvalidArgument</Code>"),
            Cause::Other
        );
    }
}
