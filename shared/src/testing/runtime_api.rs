//! A Lambda Runtime API on loopback that gives each invocation a real
//! deadline (`Lambda-Runtime-Deadline-Ms`, Unix milliseconds, `timeout`
//! from when the function takes the event), as AWS does. cargo-lambda's
//! emulator sends its timeout itself there (600000), which a function
//! cannot read as a deadline, so behaviour at the deadline is tested
//! against this one. The function is the real binary with
//! `AWS_LAMBDA_RUNTIME_API` pointed here; it speaks the real protocol
//! (`lambda_runtime`): next invocation, response, error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};

/// How an invocation ended: the function's response, or its error (or
/// the deadline passing without either).
pub type Answer = Result<serde_json::Value, String>;

#[derive(Debug)]
struct Pending {
    id: String,
    event: serde_json::Value,
    timeout: Duration,
    answer: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct State {
    answers: HashMap<String, oneshot::Sender<Answer>>,
}

/// The runtime API; dropped, it stops serving.
#[derive(Debug)]
pub struct RuntimeApi {
    addr: SocketAddr,
    invoke: mpsc::Sender<Pending>,
    next_id: std::sync::atomic::AtomicU64,
    task: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    pub async fn start() -> Self {
        let (listener, addr) = super::loopback::bind_loopback().await;
        let (invoke, pending) = mpsc::channel::<Pending>(16);
        let pending = Arc::new(tokio::sync::Mutex::new(pending));
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (pending, state) = (pending.clone(), state.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        serve(req, pending.clone(), state.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            invoke,
            next_id: std::sync::atomic::AtomicU64::new(1),
            task,
        }
    }

    /// What `AWS_LAMBDA_RUNTIME_API` is set to.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// The binary at `exe` as Lambda starts a function named `name` with
    /// `memory_mb`, served by this API: its settings are the caller's.
    pub fn function(&self, exe: &str, name: &str, memory_mb: u32) -> std::process::Command {
        let mut cmd = std::process::Command::new(exe);
        cmd.env("AWS_LAMBDA_RUNTIME_API", self.address())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string());
        cmd
    }

    /// Invokes the function with `event`, giving it `timeout` from when it
    /// takes the event; waits for its answer, or `timeout` plus a second.
    pub async fn invoke(&self, event: serde_json::Value, timeout: Duration) -> Answer {
        let id = format!(
            "req-{}",
            self.next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            id,
            event,
            timeout,
            answer,
        };
        self.invoke
            .send(pending)
            .await
            .map_err(|_| "the runtime API stopped".to_owned())?;
        // The function may be slow to take it; the deadline runs from then.
        match tokio::time::timeout(timeout + Duration::from_secs(60), answered).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err("the runtime API dropped the invocation".to_owned()),
            Err(_) => Err(format!("no answer within {timeout:?} of the deadline")),
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = Full<Bytes>;

async fn serve(
    req: Request<Incoming>,
    pending: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Ok(match (method, parts.as_slice()) {
        (Method::GET, ["2018-06-01", "runtime", "invocation", "next"]) => {
            next(&pending, &state).await
        }
        (Method::POST, ["2018-06-01", "runtime", "invocation", id, kind]) => {
            let id = (*id).to_owned();
            let ok = *kind == "response";
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let answer = if ok {
                serde_json::from_slice(&body).map_err(|e| format!("{e}: {body:?}"))
            } else {
                Err(String::from_utf8_lossy(&body).into_owned())
            };
            let sender = state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .answers
                .remove(&id);
            if let Some(sender) = sender {
                let _ = sender.send(answer);
            }
            plain(StatusCode::ACCEPTED, "")
        }
        (Method::POST, ["2018-06-01", "runtime", "init", "error"]) => {
            plain(StatusCode::ACCEPTED, "")
        }
        _ => plain(StatusCode::NOT_FOUND, "no such runtime API path"),
    })
}

/// The next invocation, with its deadline counted from now.
async fn next(
    pending: &tokio::sync::Mutex<mpsc::Receiver<Pending>>,
    state: &Mutex<State>,
) -> Response<Body> {
    let Some(p) = pending.lock().await.recv().await else {
        return plain(StatusCode::GONE, "stopped");
    };
    let deadline_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        + p.timeout;
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .answers
        .insert(p.id.clone(), p.answer);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("lambda-runtime-aws-request-id", &p.id)
        .header(
            "lambda-runtime-deadline-ms",
            deadline_ms.as_millis().to_string(),
        )
        .header(
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:000000000000:function:relay-test",
        )
        .header(
            "lambda-runtime-trace-id",
            "Root=1-00000000-000000000000000000000000",
        )
        .body(Full::new(Bytes::from(p.event.to_string())))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_owned())));
    *r.status_mut() = status;
    r
}

/// An S3 `ObjectCreated:Put` notification for one object, as S3 sends it
/// to a queue.
pub fn s3_put_event(bucket: &str, key: &str) -> serde_json::Value {
    serde_json::json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]})
}

/// One delivery of an SQS event source mapping: up to ten messages in one
/// SQS event, as Lambda builds it.
pub fn sqs_event(messages: &[aws_sdk_sqs::types::Message]) -> serde_json::Value {
    let records: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, serde_json::Value> = m
                .message_attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        serde_json::json!({"stringValue": v.string_value(), "dataType": v.data_type()}),
                    )
                })
                .collect();
            serde_json::json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "messageAttributes": attributes,
                "eventSource": "aws:sqs",
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn http(addr: &str, request: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// An invocation reaches a function polling `next` with a deadline in
    /// Unix milliseconds `timeout` ahead, and its response comes back.
    #[tokio::test]
    async fn an_invocation_carries_a_real_deadline_and_returns_the_response() {
        let api = RuntimeApi::start().await;
        let addr = api.address();
        let function = tokio::spawn(async move {
            let next = http(
                &addr,
                "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            )
            .await;
            let deadline: u128 = next
                .lines()
                .find_map(|l| l.strip_prefix("lambda-runtime-deadline-ms: "))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let body = "{\"ok\":true}";
            http(
                &addr,
                &format!(
                    "POST /2018-06-01/runtime/invocation/req-1/response HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                ),
            )
            .await;
            deadline
        });
        let answer = api
            .invoke(serde_json::json!({"a": 1}), Duration::from_secs(3))
            .await;
        assert_eq!(answer, Ok(serde_json::json!({"ok": true})));
        let deadline = function.await.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert!(
            deadline > now && deadline <= now + 3000,
            "{deadline} vs {now}"
        );
    }
}
