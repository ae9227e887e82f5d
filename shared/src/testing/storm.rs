//! A storm for the fault proxy: on a seeded share of requests, one of the
//! faults AWS really answers with when it struggles, shaped as AWS shapes
//! them: S3's XML errors (`503 SlowDown`, `500 InternalError`), SQS's JSON
//! errors (`ThrottlingException`, `InternalFailure`), SendMessageBatch
//! answered with some entries failed, downloads cut short, and answers to
//! writes and deletes that reached the emulator lost or replaced by a 500.
//! It counts what it injected, by service, operation and kind, and which
//! of those the SDK tried again (its `amz-sdk-invocation-id` and
//! `amz-sdk-request: attempt=N` headers tell), so a test can hold the
//! relay's retry counter to the retries that happened.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};

/// One fault the storm can inject into a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StormFault {
    /// S3 `503 SlowDown`, SQS `400 ThrottlingException`; not forwarded.
    Throttle,
    /// `500 InternalError` / `InternalFailure`; not forwarded.
    ServerError,
    /// Forwarded, and its answer lost: the connection closes first.
    LoseAnswer,
    /// Forwarded, and its answer replaced by `500 InternalError`.
    AnswerReplaced,
    /// SendMessageBatch: every second entry (or the only one) withheld and
    /// reported failed on SQS's side.
    PartialBatch,
    /// A download answered with half its body, then the connection drops.
    CutBody,
}

impl StormFault {
    /// The cause `relay_aws_retries_total` counts a retry of it under, if a
    /// retry of the same request follows it (a cut body is retried as a
    /// whole object, not as a request).
    pub fn retry_cause(self) -> Option<&'static str> {
        match self {
            Self::Throttle => Some("throttled"),
            Self::ServerError | Self::AnswerReplaced => Some("server_error"),
            Self::LoseAnswer => Some("connection"),
            Self::PartialBatch => Some("partial_batch"),
            Self::CutBody => None,
        }
    }
}

/// A request as the storm sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call<'a> {
    pub service: &'static str,
    pub operation: &'a str,
}

impl Call<'_> {
    /// Whether the request changes state (a lost answer leaves the client
    /// unsure whether it took effect).
    fn writes(&self) -> bool {
        matches!(
            self.operation,
            "PutObject"
                | "UploadPart"
                | "CompleteMultipartUpload"
                | "DeleteObject"
                | "SendMessageBatch"
                | "DeleteMessage"
                | "ChangeMessageVisibility"
        )
    }

    /// The faults this request may get.
    fn eligible(&self) -> Vec<StormFault> {
        let mut faults = vec![StormFault::Throttle, StormFault::ServerError];
        if self.writes() {
            faults.extend([StormFault::LoseAnswer, StormFault::AnswerReplaced]);
        }
        if self.operation == "SendMessageBatch" {
            faults.push(StormFault::PartialBatch);
        }
        if self.operation == "GetObject" {
            faults.push(StormFault::CutBody);
        }
        faults
    }
}

/// The storm's state: its rate, its random source, what it injected, and
/// the SDK's retries of the requests it hit.
#[derive(Debug)]
pub struct Storm {
    percent: u32,
    rng: fastrand::Rng,
    injected: BTreeMap<(&'static str, String, StormFault), u64>,
    /// The fault last injected into each SDK invocation, until its next attempt.
    hit: HashMap<String, StormFault>,
    /// SDK attempts that followed an injected fault, by the fault's cause.
    sdk_retries: BTreeMap<&'static str, u64>,
}

/// An SDK attempt, from its headers: the invocation (the same for every
/// attempt of one call) and the attempt's number, from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub invocation: String,
    pub number: u32,
}

impl Attempt {
    /// From `amz-sdk-invocation-id` and `amz-sdk-request` (`attempt=2; max=3`).
    pub fn of(headers: &hyper::HeaderMap) -> Option<Self> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let number = header("amz-sdk-request")?
            .split(';')
            .find_map(|part| part.trim().strip_prefix("attempt="))?
            .parse()
            .ok()?;
        Some(Self {
            invocation: header("amz-sdk-invocation-id")?.to_owned(),
            number,
        })
    }
}

/// What a storm did: its faults, and the SDK's retries of them by cause.
#[derive(Debug, Clone, Default)]
pub struct StormReport {
    pub injected: Vec<(&'static str, String, StormFault, u64)>,
    pub sdk_retries: BTreeMap<&'static str, u64>,
}

impl Storm {
    /// Faults on `percent`% of requests, chosen from `seed`.
    pub fn new(percent: u32, seed: u64) -> Self {
        Self {
            percent: percent.min(100),
            rng: fastrand::Rng::with_seed(seed),
            injected: BTreeMap::new(),
            hit: HashMap::new(),
            sdk_retries: BTreeMap::new(),
        }
    }

    /// The fault for this request, if it gets one (and counts it). A
    /// later attempt of an invocation the storm hit counts as a retry of
    /// that fault.
    pub fn pick(&mut self, call: Call<'_>, attempt: Option<&Attempt>) -> Option<StormFault> {
        if let Some(a) = attempt
            && a.number >= 2
            && let Some(cause) = self
                .hit
                .remove(&a.invocation)
                .and_then(StormFault::retry_cause)
        {
            *self.sdk_retries.entry(cause).or_default() += 1;
        }
        if self.rng.u32(0..100) >= self.percent {
            return None;
        }
        let eligible = call.eligible();
        let fault = eligible[self.rng.usize(0..eligible.len())];
        *self
            .injected
            .entry((call.service, call.operation.to_owned(), fault))
            .or_default() += 1;
        if let Some(a) = attempt {
            self.hit.insert(a.invocation.clone(), fault);
        }
        Some(fault)
    }

    /// What was injected so far, and the SDK's retries of it.
    pub fn report(&self) -> StormReport {
        StormReport {
            injected: self
                .injected
                .iter()
                .map(|((s, o, f), n)| (*s, o.clone(), *f, *n))
                .collect(),
            sdk_retries: self.sdk_retries.clone(),
        }
    }
}

/// The operation an HTTP request to the emulator is, from its method, path
/// and query (S3) or its `X-Amz-Target` (SQS).
pub fn operation(method: &hyper::Method, uri: &hyper::Uri, target: &str) -> Call<'static> {
    if let Some(op) = target.strip_prefix("AmazonSQS.") {
        let op: &'static str = match op {
            "SendMessageBatch" => "SendMessageBatch",
            "SendMessage" => "SendMessage",
            "ReceiveMessage" => "ReceiveMessage",
            "DeleteMessage" => "DeleteMessage",
            "ChangeMessageVisibility" => "ChangeMessageVisibility",
            "GetQueueAttributes" => "GetQueueAttributes",
            _ => "OtherSqs",
        };
        return Call {
            service: "sqs",
            operation: op,
        };
    }
    let query = uri.query().unwrap_or_default();
    let has = |k: &str| {
        query
            .split('&')
            .any(|p| p == k || p.starts_with(&format!("{k}=")))
    };
    let operation = match *method {
        hyper::Method::PUT if has("partNumber") => "UploadPart",
        hyper::Method::PUT => "PutObject",
        hyper::Method::POST if has("uploads") => "CreateMultipartUpload",
        hyper::Method::POST if has("uploadId") => "CompleteMultipartUpload",
        hyper::Method::DELETE if has("uploadId") => "AbortMultipartUpload",
        hyper::Method::DELETE => "DeleteObject",
        hyper::Method::HEAD => "HeadObject",
        hyper::Method::GET if has("list-type") => "ListObjectsV2",
        hyper::Method::GET if has("versions") => "ListObjectVersions",
        hyper::Method::GET if has("versioning") => "GetBucketVersioning",
        hyper::Method::GET => "GetObject",
        _ => "OtherS3",
    };
    Call {
        service: "s3",
        operation,
    }
}

/// The error answer AWS gives for `fault` on `service`, as its SDK reads it.
pub fn error_answer(service: &str, fault: StormFault) -> Response<Full<Bytes>> {
    let throttle = fault == StormFault::Throttle;
    let (status, content_type, body, query_error) = match (service, throttle) {
        ("sqs", true) => (
            StatusCode::BAD_REQUEST,
            "application/x-amz-json-1.0",
            r#"{"__type":"com.amazonaws.sqs#ThrottlingException","message":"Rate exceeded"}"#,
            Some("ThrottlingException;Sender"),
        ),
        ("sqs", false) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/x-amz-json-1.0",
            r#"{"__type":"com.amazonaws.sqs#InternalFailure","message":"We encountered an internal error. Please try again."}"#,
            Some("InternalFailure;Receiver"),
        ),
        (_, true) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "application/xml",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
             <Message>Please reduce your request rate.</Message><RequestId>STORM</RequestId></Error>",
            None,
        ),
        (_, false) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/xml",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code>\
             <Message>We encountered an internal error. Please try again.</Message>\
             <RequestId>STORM</RequestId></Error>",
            None,
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    if let Some(q) = query_error {
        r.headers_mut()
            .insert("x-amzn-query-error", HeaderValue::from_static(q));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_named_as_the_sdk_names_them() {
        let uri = |s: &str| s.parse::<hyper::Uri>().unwrap();
        let s3 = |m, u: &str| operation(&m, &uri(u), "").operation;
        assert_eq!(
            s3(hyper::Method::PUT, "/b/k?partNumber=2&uploadId=x"),
            "UploadPart"
        );
        assert_eq!(s3(hyper::Method::PUT, "/b/k"), "PutObject");
        assert_eq!(
            s3(hyper::Method::POST, "/b/k?uploads"),
            "CreateMultipartUpload"
        );
        assert_eq!(
            s3(hyper::Method::GET, "/b?list-type=2&prefix=raw"),
            "ListObjectsV2"
        );
        assert_eq!(s3(hyper::Method::GET, "/b/k"), "GetObject");
        let sqs = operation(
            &hyper::Method::POST,
            &uri("/"),
            "AmazonSQS.SendMessageBatch",
        );
        assert_eq!((sqs.service, sqs.operation), ("sqs", "SendMessageBatch"));
    }

    #[test]
    fn the_storm_hits_about_its_rate_with_faults_the_call_can_take() {
        let mut storm = Storm::new(20, 7);
        let read = Call {
            service: "sqs",
            operation: "ReceiveMessage",
        };
        let hits: Vec<_> = (0..10_000).filter_map(|_| storm.pick(read, None)).collect();
        assert!((1_700..2_300).contains(&hits.len()), "{}", hits.len());
        assert!(
            hits.iter()
                .all(|f| matches!(f, StormFault::Throttle | StormFault::ServerError)),
            "a read's answer is never lost"
        );
        let total: u64 = storm.report().injected.iter().map(|i| i.3).sum();
        assert_eq!(total, hits.len() as u64);
    }

    /// A later attempt of an invocation the storm hit is the SDK's retry of
    /// that fault; a first attempt, or one after a clean answer, is not.
    #[test]
    fn the_sdks_attempts_after_a_fault_are_its_retries() {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("amz-sdk-invocation-id", HeaderValue::from_static("inv-1"));
        headers.insert(
            "amz-sdk-request",
            HeaderValue::from_static("attempt=2; max=3"),
        );
        let second = Attempt::of(&headers).unwrap();
        assert_eq!(second.number, 2);
        let first = Attempt {
            number: 1,
            ..second.clone()
        };
        let mut storm = Storm::new(100, 3);
        let read = Call {
            service: "sqs",
            operation: "ReceiveMessage",
        };
        let fault = storm.pick(read, Some(&first)).unwrap();
        storm.percent = 0;
        assert_eq!(storm.pick(read, Some(&second)), None);
        assert_eq!(storm.pick(read, Some(&second)), None, "counted once");
        let cause = fault.retry_cause().unwrap();
        assert_eq!(storm.report().sdk_retries, BTreeMap::from([(cause, 1)]));
    }
}
