//! A fault-injecting HTTP proxy in front of the emulator: S3 requests answered
//! `503 SlowDown`, SQS batch sends with some entries reported failed (and
//! never delivered), the two partial failures real AWS produces under load,
//! downloads that break halfway, sends that are never answered, writes
//! whose answer is lost after they took effect, and PUTs under a path
//! refused `403 AccessDenied` (a policy that leaves a prefix out).
//!
//! It speaks HTTP/1.1 on both sides, buffers each body (test objects are
//! small), and forwards everything else untouched. moto does not check
//! signatures, so rewriting an SQS body does not need re-signing.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_LENGTH, HeaderValue, TRANSFER_ENCODING};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::storm::{Attempt, Call, Storm, StormFault, StormReport, error_answer, operation};

/// What the proxy injects, adjustable while it runs, and what it has injected.
#[derive(Debug, Default)]
pub struct Faults {
    /// Every n-th S3 request is answered `503 SlowDown` without reaching the
    /// emulator (0: never).
    pub s3_slowdown_every: AtomicU64,
    /// Every n-th SendMessageBatch has every second entry (or its only entry)
    /// withheld from the emulator and reported in `Failed` (0: never).
    pub sqs_fail_every: AtomicU64,
    /// Every SendMessageBatch is held this long before it is forwarded, like
    /// a slow link, so a test can kill a sender between two batches.
    pub sqs_batch_delay_ms: AtomicU64,
    /// The next this-many SendMessageBatch requests have every second entry
    /// (or the only one) withheld and reported as the sender's fault
    /// (`InvalidParameterValue`): refused for good, as for a bad message.
    pub sqs_refuse_batches: AtomicU64,
    /// The next this-many SendMessageBatch requests are never answered
    /// (nor forwarded): a silent connection, as when a link dies quietly.
    pub sqs_silent_batches: AtomicU64,
    /// SendMessageBatch requests left unanswered so far.
    pub silenced: AtomicU64,
    /// The next this-many downloads (GETs answering over 1 KiB) break
    /// halfway: the connection drops after half the promised bytes.
    pub s3_get_cuts: AtomicU64,
    /// Per entry, the first S3 PUT whose path contains it is forwarded and
    /// takes effect, and its answer is lost: the connection closes before
    /// any of it, so the client cannot tell whether the write happened.
    pub s3_lose_put_answers: std::sync::Mutex<Vec<String>>,
    /// PUT answers lost so far.
    pub lost_answers: AtomicU64,
    /// The next this-many downloads of raw objects (GETs of a key under
    /// `raw/`) have one byte of their body flipped, their checksum header
    /// untouched: corrupted on the way, as a verified read must catch.
    pub s3_get_corruptions: AtomicU64,
    /// While set, S3 PUTs whose path contains it are answered
    /// `403 AccessDenied` without reaching the emulator: a policy that does
    /// not allow writing there.
    pub s3_deny_puts_under: std::sync::Mutex<Option<String>>,
    /// While set, S3 DELETE requests are answered `500 InternalError`
    /// without reaching the emulator (a cleanup that fails).
    pub s3_fail_deletes: std::sync::atomic::AtomicBool,
    s3_requests: AtomicU64,
    sqs_batches: AtomicU64,
    /// S3 requests answered with SlowDown so far.
    pub slowdowns: AtomicU64,
    /// Batch entries reported failed so far.
    pub failed_entries: AtomicU64,
    /// Requests forwarded to the emulator so far.
    pub forwarded: AtomicU64,
    /// S3 PUT requests forwarded so far (objects and parts).
    pub s3_puts: AtomicU64,
    /// While set, a share of all requests gets one of AWS's own faults
    /// (see [`Storm`]).
    storm: std::sync::Mutex<Option<Storm>>,
}

impl Faults {
    /// Starts a storm: AWS-shaped faults on `percent`% of requests, chosen
    /// from `seed`, until [`Faults::stop_storm`].
    pub fn start_storm(&self, percent: u32, seed: u64) {
        *self.storm.lock().unwrap_or_else(|e| e.into_inner()) = Some(Storm::new(percent, seed));
    }

    /// Ends the storm; returns what it injected and the SDK's retries.
    pub fn stop_storm(&self) -> StormReport {
        self.storm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map(|s| s.report())
            .unwrap_or_default()
    }

    fn storm_pick(&self, call: Call<'_>, attempt: Option<&Attempt>) -> Option<StormFault> {
        self.storm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .and_then(|s| s.pick(call, attempt))
    }

    fn due(every: &AtomicU64, counter: &AtomicU64) -> bool {
        let every = every.load(Ordering::Relaxed);
        every != 0 && (counter.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(every)
    }
}

/// The proxy; dropped, it stops accepting connections.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    pub faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream`
    /// (`http://127.0.0.1:PORT`), injecting nothing until told to.
    pub async fn start(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("the proxy's upstream {upstream}: {e}"));
        let (listener, addr) = super::loopback::bind_loopback().await;
        let faults = Arc::new(Faults::default());
        let shared = faults.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let faults = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, upstream, faults.clone())
                    });
                    // A client that hangs up mid-request is not the proxy's concern.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, faults, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type ProxyBody = BoxBody<Bytes, std::io::Error>;

/// The proxy's answer, or a connection closed without one.
async fn handle(
    req: Request<Incoming>,
    upstream: SocketAddr,
    faults: Arc<Faults>,
) -> Result<Response<ProxyBody>, std::io::Error> {
    let is_get = req.method() == hyper::Method::GET;
    let raw_get = is_get && req.uri().path().contains("/raw/");
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let call = operation(req.method(), req.uri(), &target);
    let storm = faults.storm_pick(call, Attempt::of(req.headers()).as_ref());
    let lose = lose_answer(&req, &faults) || storm == Some(StormFault::LoseAnswer);
    let mut response = match respond(req, upstream, faults.clone(), storm).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if storm == Some(StormFault::AnswerReplaced) && response.status().is_success() {
        response = error_answer(call.service, StormFault::ServerError);
    }
    if lose && response.status().is_success() {
        faults.lost_answers.fetch_add(1, Ordering::Relaxed);
        // A service error makes hyper close the connection unanswered.
        return Err(std::io::Error::other(
            "answer lost by the test's fault proxy",
        ));
    }
    let (mut parts, body) = response.into_parts();
    let mut bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(never) => match never {},
    };
    if raw_get
        && parts.status.is_success()
        && !bytes.is_empty()
        && faults
            .s3_get_corruptions
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    {
        let mut flipped = bytes.to_vec();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x20;
        bytes = Bytes::from(flipped);
    }
    let cuttable = is_get && parts.status.is_success() && bytes.len() > 1024;
    let cut = cuttable
        && (storm == Some(StormFault::CutBody)
            || faults
                .s3_get_cuts
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok());
    if cut {
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        let half = bytes.slice(..bytes.len() / 2);
        return Ok(Response::from_parts(parts, Cut::new(half).boxed()));
    }
    let body = Full::new(bytes).map_err(|never| match never {}).boxed();
    Ok(Response::from_parts(parts, body))
}

/// Whether `req` is an S3 PUT whose answer is to be lost (and takes its
/// entry of [`Faults::s3_lose_put_answers`]).
fn lose_answer(req: &Request<Incoming>, faults: &Faults) -> bool {
    if req.method() != hyper::Method::PUT || req.headers().contains_key("x-amz-target") {
        return false;
    }
    let path = req.uri().path();
    let mut lose = faults
        .s3_lose_put_answers
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    match lose.iter().position(|part| path.contains(part.as_str())) {
        Some(at) => {
            lose.remove(at);
            true
        }
        None => false,
    }
}

/// A body that delivers its bytes, waits long enough for them to reach the
/// client, then fails, so hyper drops the connection short of the promised
/// length: the client has its answer and part of the body, as when a
/// download breaks.
struct Cut {
    data: Option<Bytes>,
    pause: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Cut {
    fn new(data: Bytes) -> Self {
        Self {
            data: Some(data),
            pause: Box::pin(tokio::time::sleep(std::time::Duration::from_millis(200))),
        }
    }
}

impl hyper::body::Body for Cut {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data))));
        }
        std::task::ready!(this.pause.as_mut().poll(cx));
        std::task::Poll::Ready(Some(Err(std::io::Error::other(
            "download cut by the test's fault proxy",
        ))))
    }
}

/// The answer an S3 request gets without reaching the emulator, if a
/// fault is set for it: a denied PUT, a failing DELETE, a SlowDown. Counts
/// the PUTs on the way.
fn s3_refusal(
    faults: &Faults,
    parts: &hyper::http::request::Parts,
) -> Option<Response<Full<Bytes>>> {
    if parts.method == hyper::Method::PUT {
        faults.s3_puts.fetch_add(1, Ordering::Relaxed);
        let denied = faults
            .s3_deny_puts_under
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|under| parts.uri.path().contains(under.as_str()));
        if denied {
            return Some(plain(
                StatusCode::FORBIDDEN,
                "<Error><Code>AccessDenied</Code><Message>injected</Message></Error>".into(),
            ));
        }
    }
    if parts.method == hyper::Method::DELETE && faults.s3_fail_deletes.load(Ordering::Relaxed) {
        return Some(plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "<Error><Code>InternalError</Code><Message>injected</Message></Error>".into(),
        ));
    }
    if Faults::due(&faults.s3_slowdown_every, &faults.s3_requests) {
        faults.slowdowns.fetch_add(1, Ordering::Relaxed);
        return Some(slow_down());
    }
    None
}

async fn respond(
    req: Request<Incoming>,
    upstream: SocketAddr,
    faults: Arc<Faults>,
    storm: Option<StormFault>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    // Read the whole request first, so the client sees our answer and not a
    // connection reset in the middle of its upload.
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(plain(StatusCode::BAD_GATEWAY, format!("reading: {e}"))),
    };
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if let Some(fault @ (StormFault::Throttle | StormFault::ServerError)) = storm {
        let service = if target.starts_with("AmazonSQS.") {
            "sqs"
        } else {
            "s3"
        };
        return Ok(error_answer(service, fault));
    }
    if !target.starts_with("AmazonSQS.")
        && let Some(refusal) = s3_refusal(&faults, &parts)
    {
        return Ok(refusal);
    }
    if target == "AmazonSQS.SendMessageBatch"
        && faults
            .sqs_silent_batches
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    {
        faults.silenced.fetch_add(1, Ordering::Relaxed);
        // Silent far longer than any test waits; then let the task end.
        tokio::time::sleep(std::time::Duration::from_secs(600)).await;
        return Ok(plain(StatusCode::GATEWAY_TIMEOUT, "silent".into()));
    }
    if target == "AmazonSQS.SendMessageBatch" {
        let delay = faults.sqs_batch_delay_ms.load(Ordering::Relaxed);
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let batch = target == "AmazonSQS.SendMessageBatch";
    let refuse = batch
        && faults
            .sqs_refuse_batches
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
    let partial = storm == Some(StormFault::PartialBatch);
    let (body, withheld) =
        if refuse || partial || (batch && Faults::due(&faults.sqs_fail_every, &faults.sqs_batches))
        {
            withhold_entries(body)
        } else {
            (body, Vec::new())
        };
    faults
        .failed_entries
        .fetch_add(withheld.len() as u64, Ordering::Relaxed);
    let mut response = if body.is_empty() && !withheld.is_empty() {
        // Every entry withheld: SQS would still answer 200 with only failures.
        let mut r = Response::new(Full::new(Bytes::from_static(b"{}")));
        r.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("application/x-amz-json-1.0"),
        );
        r
    } else {
        match forward(parts, body, upstream).await {
            Ok(r) => {
                faults.forwarded.fetch_add(1, Ordering::Relaxed);
                r
            }
            Err(e) => return Ok(plain(StatusCode::BAD_GATEWAY, e)),
        }
    };
    if !withheld.is_empty() && response.status().is_success() {
        response = report_failed(response, &withheld, refuse).await;
    }
    Ok(response)
}

/// Removes every second entry (or the only one) from a SendMessageBatch body.
/// Returns the new body (empty if nothing is left to send) and the removed ids.
fn withhold_entries(body: Bytes) -> (Bytes, Vec<String>) {
    let Ok(mut doc) = serde_json::from_slice::<Value>(&body) else {
        return (body, Vec::new());
    };
    let Some(entries) = doc.get_mut("Entries").and_then(Value::as_array_mut) else {
        return (body, Vec::new());
    };
    let all: Vec<Value> = std::mem::take(entries);
    let only_one = all.len() == 1;
    let mut withheld = Vec::new();
    for (i, entry) in all.into_iter().enumerate() {
        if only_one || i % 2 == 1 {
            withheld.push(entry["Id"].as_str().unwrap_or_default().to_owned());
        } else {
            entries.push(entry);
        }
    }
    if entries.is_empty() {
        return (Bytes::new(), withheld);
    }
    match serde_json::to_vec(&doc) {
        Ok(v) => (Bytes::from(v), withheld),
        Err(_) => (body, Vec::new()),
    }
}

/// Adds the withheld entries to a SendMessageBatch answer's `Failed` list.
/// Adds `ids` to a SendMessageBatch answer's `Failed` list: as the
/// sender's fault (refused for good) or as a service error (retryable).
async fn report_failed(
    response: Response<Full<Bytes>>,
    ids: &[String],
    sender_fault: bool,
) -> Response<Full<Bytes>> {
    let (parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(never) => match never {},
    };
    let mut doc: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({}));
    if !doc.is_object() {
        doc = json!({});
    }
    let failed = doc
        .as_object_mut()
        .map(|o| o.entry("Failed").or_insert_with(|| json!([])));
    if let Some(Value::Array(failed)) = failed {
        for id in ids {
            let (code, message) = if sender_fault {
                ("InvalidParameterValue", "refused by the test's fault proxy")
            } else {
                ("InternalError", "withheld by the test's fault proxy")
            };
            failed.push(json!({
                "Id": id,
                "SenderFault": sender_fault,
                "Code": code,
                "Message": message,
            }));
        }
    }
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    let mut response = Response::from_parts(parts, Full::new(Bytes::from(body)));
    response.headers_mut().remove(CONTENT_LENGTH);
    response
}

async fn forward(
    parts: hyper::http::request::Parts,
    body: Bytes,
    upstream: SocketAddr,
) -> Result<Response<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(upstream)
        .await
        .map_err(|e| format!("connecting to {upstream}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake with {upstream}: {e}"))?;
    tokio::spawn(conn);
    let mut req = Request::from_parts(parts, Full::new(body));
    // The body is buffered now: its length replaces any chunked framing.
    for h in [TRANSFER_ENCODING, CONTENT_LENGTH, CONNECTION] {
        req.headers_mut().remove(h);
    }
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| format!("forwarding to {upstream}: {e}"))?;
    let (mut parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| format!("reading the answer from {upstream}: {e}"))?
        .to_bytes();
    for h in [TRANSFER_ENCODING, CONTENT_LENGTH, CONNECTION] {
        parts.headers.remove(h);
    }
    Ok(Response::from_parts(parts, Full::new(bytes)))
}

fn slow_down() -> Response<Full<Bytes>> {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                <Message>Please reduce your request rate.</Message>\
                <RequestId>FAULTPROXY</RequestId></Error>";
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/xml"));
    r
}

fn plain(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(message)));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_second_entry_is_withheld() {
        let body = json!({"QueueUrl": "q", "Entries": [
            {"Id": "0", "MessageBody": "a"}, {"Id": "1", "MessageBody": "b"},
            {"Id": "2", "MessageBody": "c"}, {"Id": "3", "MessageBody": "d"},
        ]});
        let (rest, withheld) = withhold_entries(Bytes::from(body.to_string()));
        assert_eq!(withheld, ["1", "3"]);
        let rest: Value = serde_json::from_slice(&rest).unwrap();
        let ids: Vec<&str> = rest["Entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["Id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["0", "2"]);
        assert_eq!(rest["QueueUrl"], "q");
    }

    #[test]
    fn a_lone_entry_is_withheld_and_nothing_is_sent() {
        let body = json!({"QueueUrl": "q", "Entries": [{"Id": "7", "MessageBody": "a"}]});
        let (rest, withheld) = withhold_entries(Bytes::from(body.to_string()));
        assert_eq!(withheld, ["7"]);
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn failures_are_added_to_the_answer() {
        let answer = Response::new(Full::new(Bytes::from(
            json!({"Successful": [{"Id": "0", "MessageId": "m"}]}).to_string(),
        )));
        let r = report_failed(answer, &["1".to_owned()], false).await;
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc["Successful"][0]["Id"], "0");
        assert_eq!(doc["Failed"][0]["Id"], "1");
        assert_eq!(doc["Failed"][0]["SenderFault"], false);
    }

    #[test]
    fn due_counts_every_nth() {
        let f = Faults::default();
        f.s3_slowdown_every.store(3, Ordering::Relaxed);
        let hits: Vec<bool> = (0..6)
            .map(|_| Faults::due(&f.s3_slowdown_every, &f.s3_requests))
            .collect();
        assert_eq!(hits, [false, false, true, false, false, true]);
        assert!(!Faults::due(&f.sqs_fail_every, &f.sqs_batches));
    }
}
