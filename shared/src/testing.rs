//! Test support: AWS clients against the local emulator and uniquely named
//! buckets and queues. Compiled only with the `test-support` feature.
//!
//! An unreachable emulator is always a loud test failure, never a skip, so a
//! CI run without the emulator cannot pass by accident.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::config::{Credentials, Region};

use crate::client::{ClientOptions, s3_client, sqs_client};

pub mod contract;
mod fault_proxy;
mod mem;
mod sink_s3;
pub mod source;
mod transport;
use crate::s3::Bucket;
pub use fault_proxy::{FaultProxy, Faults};
pub use mem::{Fault, MemStore};
pub use sink_s3::{SinkCounts, SinkS3};
pub use transport::{TransportProxy, TransportStats, Weather};

const HOW_TO_START: &str = "start it with `scripts/moto.sh start` and export the variables it prints, \
     or run the whole suite with `scripts/test.sh`";

/// Handles to the emulator named by `AWS_ENDPOINT_URL`.
#[derive(Debug, Clone)]
pub struct Emulator {
    pub endpoint: String,
    pub sdk: SdkConfig,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
}

/// A name no other test (or earlier run against the same emulator) has used.
/// S3 bucket rules: lowercase letters, digits and `-`, at most 63 characters.
pub fn unique_name(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(24)
        .collect();
    format!("{label}-{}-{n}-{:x}", std::process::id(), nanos % (1 << 40))
}

impl Emulator {
    /// Connects to the emulator or panics with instructions.
    pub async fn connect() -> Self {
        let endpoint = match std::env::var("AWS_ENDPOINT_URL") {
            Ok(e) if !e.is_empty() => e,
            _ => panic!(
                "AWS_ENDPOINT_URL is not set, so there is no emulator to test against: {HOW_TO_START}"
            ),
        };
        Self::connect_to(endpoint).await
    }

    /// Connects to the emulator at `endpoint` (a test's private instance) or
    /// panics with instructions.
    pub async fn connect_to(endpoint: String) -> Self {
        assert!(
            endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:"),
            "AWS_ENDPOINT_URL={endpoint} is not on loopback; tests only talk to a local emulator"
        );
        // Explicit region and credentials: the SDK must never fall back to
        // probing the instance metadata address.
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "relay-tests"))
            .load()
            .await;
        let s3 = s3_client(
            &sdk,
            ClientOptions {
                s3_path_style: true,
            },
        );
        let sqs = sqs_client(&sdk);
        let probe = tokio::time::timeout(Duration::from_secs(10), s3.list_buckets().send()).await;
        match probe {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!(
                "the emulator at {endpoint} is unreachable ({}): {HOW_TO_START}",
                crate::s3::map_sdk_error(e, "-", "-", "ListBuckets", None)
            ),
            Err(_) => {
                panic!("the emulator at {endpoint} did not answer within 10 s: {HOW_TO_START}")
            }
        }
        Self {
            endpoint,
            sdk,
            s3,
            sqs,
        }
    }

    /// Creates a fresh bucket for one test.
    pub async fn bucket(&self, label: &str) -> Bucket {
        let name = unique_name(label);
        if let Err(e) = self.s3.create_bucket().bucket(&name).send().await {
            panic!("creating bucket {name} on {}: {e:?}", self.endpoint);
        }
        Bucket::new(self.s3.clone(), name)
    }

    /// Turns versioning on for `bucket`, as the module's bucket has it.
    pub async fn enable_versioning(&self, bucket: &str) {
        use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
        let enabled = VersioningConfiguration::builder()
            .status(BucketVersioningStatus::Enabled)
            .build();
        if let Err(e) = self
            .s3
            .put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(enabled)
            .send()
            .await
        {
            panic!("versioning bucket {bucket} on {}: {e:?}", self.endpoint);
        }
    }

    /// Creates a fresh queue for one test and returns its URL. Fresh names
    /// matter: PurgeQueue is allowed only once a minute per queue.
    pub async fn queue(&self, label: &str, fifo: bool) -> String {
        let mut name = unique_name(label);
        let mut req = self.sqs.create_queue();
        if fifo {
            name.push_str(".fifo");
            req = req.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
        }
        match req.queue_name(&name).send().await {
            Ok(out) => out
                .queue_url
                .unwrap_or_else(|| panic!("no URL for queue {name}")),
            Err(e) => panic!("creating queue {name} on {}: {e:?}", self.endpoint),
        }
    }
}

impl Emulator {
    /// The emulator's SDK settings, reaching it through `endpoint` (a proxy).
    pub fn sdk_via(&self, endpoint: &str) -> SdkConfig {
        self.sdk.to_builder().endpoint_url(endpoint).build()
    }

    /// An S3 client that reaches the emulator through `endpoint` (a proxy).
    pub async fn s3_via(&self, endpoint: &str) -> aws_sdk_s3::Client {
        let sdk = self.sdk_via(endpoint);
        s3_client(
            &sdk,
            ClientOptions {
                s3_path_style: true,
            },
        )
    }
}

/// A plain HTTP/1.0 GET on loopback, for a binary's `/metrics` and `/`:
/// the whole answer, headers included.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let get = || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    };
    get().unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// Waits (20 s at most) until a binary serves on `addr`, then returns its
/// `/metrics`. On time-out, fails with the binary's log at `log`.
pub async fn first_metrics(addr: &str, log: &std::path::Path) -> String {
    let started = std::time::Instant::now();
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            return http_get(addr, "/metrics");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing served on {addr} within 20 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks a binary's text log at `log` (stderr piped to a file): no colour
/// codes, and a start line with the binary's version and `setting` (a
/// fragment of its settings). Returns the log.
pub fn assert_plain_log_with_start_line(
    log: &std::path::Path,
    binary: &str,
    setting: &str,
) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a piped log:\n{text}"
    );
    assert!(
        text.contains(&format!("{binary} starting"))
            && text.contains(env!("CARGO_PKG_VERSION"))
            && text.contains(setting),
        "no start line with the version and {setting}:\n{text}"
    );
    text
}

/// A free port on loopback, for a binary's metrics address.
/// Points a child process's AWS SDK at `endpoint` on loopback, with dummy
/// credentials and instance-metadata probing off (without it the SDK
/// reaches for the EC2 metadata address).
pub fn loopback_aws_env<'c>(
    cmd: &'c mut std::process::Command,
    endpoint: &str,
) -> &'c mut std::process::Command {
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("finding a free port: {e}"))
}

/// A listener on a free loopback port, for the test proxies.
async fn bind_loopback() -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding a proxy port: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("proxy address: {e}"));
    (listener, addr)
}

/// A TCP proxy in front of the emulator that a test can take down and bring
/// back, to simulate a network outage or an emulator restart without
/// disturbing other tests that share the emulator.
#[derive(Debug)]
pub struct TcpProxy {
    addr: std::net::SocketAddr,
    down: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream`
    /// (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> Self {
        let target = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let (listener, addr) = bind_loopback().await;
        let (down, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *watch.borrow() {
                    drop(inbound); // Down: the client sees the connection closed.
                    continue;
                }
                let mut cut = watch.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        Self { addr, down, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Takes the proxy down (refusing and cutting connections) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks that the part of the page at `path` (relative to the repository)
/// between `<!-- generated: {section} -->` and `<!-- end generated: {section} -->`
/// is `body`, as the code renders it now. With `RELAY_UPDATE_DOCS=1` it
/// writes `body` there instead: how to refresh a reference after a change.
pub fn check_generated(path: &str, section: &str, body: &str) {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (open, close) = (
        format!("<!-- generated: {section} -->\n"),
        format!("<!-- end generated: {section} -->"),
    );
    let start = text
        .find(&open)
        .unwrap_or_else(|| panic!("{path} has no `{}` marker", open.trim()))
        + open.len();
    let end = start
        + text[start..]
            .find(&close)
            .unwrap_or_else(|| panic!("{path} has no `{close}` marker"));
    let want = format!("\n{}\n", body.trim());
    if text[start..end] == want {
        return;
    }
    if std::env::var("RELAY_UPDATE_DOCS").as_deref() == Ok("1") {
        let updated = format!("{}{want}{}", &text[..start], &text[end..]);
        std::fs::write(&file, updated).unwrap_or_else(|e| panic!("{path}: {e}"));
        return;
    }
    let first = text[start..end]
        .lines()
        .zip(want.lines())
        .find(|(a, b)| a != b)
        .map_or_else(
            || "the two differ in length".to_owned(),
            |(a, b)| format!("the page says\n  {a}\nand the code\n  {b}"),
        );
    panic!(
        "{path}, section {section}, no longer matches the code: {first}\n\
         Refresh it with RELAY_UPDATE_DOCS=1 and the same test, then read the diff."
    );
}
