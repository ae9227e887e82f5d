//! A minimal S3 endpoint that keeps connections alive and stores nothing, so
//! a benchmark measures the agent's own CPU per request, not the emulator's
//! (moto closes every connection and is slow). It answers what an agent
//! uploading new files asks: PutObject (honouring `If-None-Match: *` for the
//! keys it has seen), the multipart calls, and HeadObject (404).

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// What the endpoint has been asked, for the benchmark's progress.
#[derive(Debug, Default)]
pub struct SinkCounts {
    /// Objects created (PutObject or CompleteMultipartUpload).
    pub objects: AtomicU64,
    /// Body bytes received.
    pub bytes: AtomicU64,
}

/// The running endpoint; stops when dropped.
#[derive(Debug)]
pub struct SinkS3 {
    addr: SocketAddr,
    pub counts: Arc<SinkCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl SinkS3 {
    pub async fn start() -> Self {
        let (listener, addr) = super::loopback::bind_loopback().await;
        let counts = Arc::new(SinkCounts::default());
        let keys = Arc::new(Mutex::new(HashSet::new()));
        let shared = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counts, keys) = (shared.clone(), keys.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, counts.clone(), keys.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, counts, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SinkS3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("etag", hyper::header::HeaderValue::from_static("\"0\""));
    r
}

async fn handle(
    req: Request<Incoming>,
    counts: Arc<SinkCounts>,
    keys: Arc<Mutex<HashSet<String>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let received = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    counts.bytes.fetch_add(received as u64, Ordering::Relaxed);
    let query = parts.uri.query().unwrap_or_default();
    let key = parts.uri.path().to_owned();
    let create = parts.headers.get("if-none-match").is_some_and(|v| v == "*");
    let store = |key: String| {
        let mut keys = keys.lock().unwrap_or_else(|e| e.into_inner());
        if create && !keys.insert(key) {
            return answer(
                StatusCode::PRECONDITION_FAILED,
                "<Error><Code>PreconditionFailed</Code></Error>",
            );
        }
        counts.objects.fetch_add(1, Ordering::Relaxed);
        answer(StatusCode::OK, "")
    };
    Ok(match parts.method {
        Method::POST if query.contains("uploads") => answer(
            StatusCode::OK,
            "<InitiateMultipartUploadResult><UploadId>u</UploadId></InitiateMultipartUploadResult>",
        ),
        Method::POST if query.contains("uploadId") => {
            let mut r = store(key);
            if r.status() == StatusCode::OK {
                *r.body_mut() = Full::new(Bytes::from_static(
                    b"<CompleteMultipartUploadResult><ETag>\"0\"</ETag></CompleteMultipartUploadResult>",
                ));
            }
            r
        }
        Method::PUT if query.contains("uploadId") => answer(StatusCode::OK, ""),
        Method::PUT => store(key),
        Method::DELETE => answer(StatusCode::NO_CONTENT, ""),
        Method::HEAD | Method::GET => answer(
            StatusCode::NOT_FOUND,
            "<Error><Code>NoSuchKey</Code></Error>",
        ),
        _ => answer(StatusCode::BAD_REQUEST, ""),
    })
}
