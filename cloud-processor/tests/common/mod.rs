//! Helpers for the processor's integration tests against the local emulator.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test-only helpers: a panic is a test failure.

pub mod relay;

use relay_shared::store::ObjectStore;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use clap::Parser;
use cloud_processor::SqsOutput;
use cloud_processor::{AwsProcessor, Processor};
use cloud_processor::{Cli, Config, Protocol};
use relay_shared::s3::Bucket;
use relay_shared::store::{PutMode, PutOptions};
use relay_shared::testing::Emulator;

pub const FIELDS: &str = "id,ts=timestamp,user_id=user.id,country=geo.country,first_tag=tags.0,big";

pub struct Setup {
    pub emu: Emulator,
    pub bucket: Bucket,
    pub notifications: String,
    pub output: String,
}

pub async fn setup(label: &str, fifo: bool) -> Setup {
    setup_on(Emulator::connect().await, label, fifo).await
}

/// The notification filter every test bucket uses: keys under `raw/`.
pub fn raw_filter() -> NotificationConfigurationFilter {
    NotificationConfigurationFilter::builder()
        .key(
            S3KeyFilter::builder()
                .filter_rules(
                    FilterRule::builder()
                        .name(FilterRuleName::Prefix)
                        .value("raw/")
                        .build(),
                )
                .build(),
        )
        .build()
}

/// A bucket whose `raw/` notifications go to a fresh queue, and an output
/// queue, on the emulator `emu`.
pub async fn setup_on(emu: Emulator, label: &str, fifo: bool) -> Setup {
    let bucket = emu.bucket(label).await;
    let notifications = emu.queue(&format!("{label}-n"), false).await;
    let output = emu.queue(&format!("{label}-o"), fifo).await;
    let arn = queue_arn(&emu, &notifications).await;
    let filter = raw_filter();
    emu.s3
        .put_bucket_notification_configuration()
        .bucket(bucket.name())
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(arn)
                        .events(Event::from("s3:ObjectCreated:*"))
                        .filter(filter)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    Setup {
        emu,
        bucket,
        notifications,
        output,
    }
}

pub async fn app(s: &Setup, cap: Option<usize>) -> AwsProcessor {
    app_with(s, cap, FIELDS, 120).await
}

pub async fn app_with(
    s: &Setup,
    cap: Option<usize>,
    fields: &str,
    lease_ttl_secs: u64,
) -> AwsProcessor {
    app_on(s, s.emu.s3.clone(), cap, fields, lease_ttl_secs).await
}

/// A processor whose S3 requests go through `s3` (a client via a proxy).
pub async fn app_on(
    s: &Setup,
    s3: aws_sdk_s3::Client,
    cap: Option<usize>,
    fields: &str,
    lease_ttl_secs: u64,
) -> AwsProcessor {
    let cli = Cli::try_parse_from(["cloud-processor", "--fields", fields]).unwrap();
    let config = Config::from_common(&cli.common).unwrap();
    let output = SqsOutput::connect(s.emu.sqs.clone(), &s.output, "relay", cap)
        .await
        .unwrap();
    Processor::new(
        config,
        // Unchecked: tests use leases shorter than an operator may set.
        Protocol::new(
            "state/",
            lease_ttl_secs,
            cloud_processor::AwsTimeouts::default(),
        ),
        relay_shared::s3::Bucket::new(s3, ""),
        output,
    )
}

/// Stores `records` generated records, zstd-compressed, at `key`, and
/// returns the notification S3 sent for it.
pub async fn put_sample(s: &Setup, key: &str, records: usize) -> String {
    put(
        s,
        key,
        zstd::encode_all(sample_file(records).as_bytes(), 3).unwrap(),
    )
    .await;
    notification(s).await
}

/// A processor whose S3 requests go through a fresh fault proxy, with a
/// lease of `lease_ttl_secs`: the proxy, to inject faults, and the processor.
pub async fn app_behind_proxy(
    s: &Setup,
    cap: Option<usize>,
    lease_ttl_secs: u64,
) -> (relay_shared::testing::FaultProxy, AwsProcessor) {
    let proxy = relay_shared::testing::FaultProxy::start(&s.emu.endpoint).await;
    let s3 = s.emu.s3_via(&proxy.endpoint()).await;
    let app = app_on(s, s3, cap, FIELDS, lease_ttl_secs).await;
    (proxy, app)
}

/// A processor whose output queue is reached through a fresh fault proxy
/// (S3 directly): the proxy, to inject SQS faults, and the processor.
pub async fn app_sending_through_proxy(
    s: &Setup,
    cap: Option<usize>,
) -> (relay_shared::testing::FaultProxy, AwsProcessor) {
    let proxy = relay_shared::testing::FaultProxy::start(&s.emu.endpoint).await;
    let sqs = relay_shared::client::sqs_client(&s.emu.sdk_via(&proxy.endpoint()));
    let base = app(s, cap).await;
    let output = SqsOutput::connect(sqs, &s.output, "relay", cap)
        .await
        .unwrap();
    (
        proxy,
        Processor::new(base.config, base.protocol, base.store, output),
    )
}

pub async fn put(s: &Setup, key: &str, body: Vec<u8>) {
    s.bucket
        .put(key, body, &PutMode::Create, &PutOptions::default())
        .await
        .unwrap();
}

pub async fn delete(s: &Setup, queue: &str, receipt: String) {
    s.emu
        .sqs
        .delete_message()
        .queue_url(queue)
        .receipt_handle(receipt)
        .send()
        .await
        .unwrap();
}

/// Waits for the notification S3 sent for our object and returns its body,
/// skipping the test event S3 sends when a notification is configured.
pub async fn notification(s: &Setup) -> String {
    let start = Instant::now();
    loop {
        let out = s
            .emu
            .sqs
            .receive_message()
            .queue_url(&s.notifications)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in out.messages.unwrap_or_default() {
            let body = m.body.unwrap();
            delete(s, &s.notifications, m.receipt_handle.unwrap()).await;
            if body.contains("ObjectCreated") {
                return body;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no S3 notification arrived"
        );
    }
}

/// The interpreter with the project's Python test tools (the Extended
/// Client, opentelemetry-proto): the project's .venv (scripts/moto.sh
/// installs them there), else `python3` on PATH.
pub fn python() -> std::path::PathBuf {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

/// One message from the output queue: its SQS id, body and string
/// attributes, its FIFO deduplication id, and when SQS took it (ms).
pub struct Received {
    pub message_id: String,
    pub body: String,
    pub attrs: BTreeMap<String, String>,
    pub dedup_id: Option<String>,
    pub sent_ms: Option<u64>,
    /// The `AWSTraceHeader` system attribute.
    pub trace_header: Option<String>,
}

impl Received {
    pub fn source_key(&self) -> &str {
        &self.attrs["relay.source_key"]
    }

    pub fn chunk(&self) -> u32 {
        self.attrs["relay.chunk"].parse().unwrap()
    }
}

/// One receive of up to ten messages (waiting up to a second), deleted from
/// `queue` in one batch.
pub async fn receive_batch(sqs: &aws_sdk_sqs::Client, queue: &str) -> Vec<Received> {
    let out = sqs
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    let messages = out.messages.unwrap_or_default();
    if messages.is_empty() {
        return Vec::new();
    }
    let mut delete = sqs.delete_message_batch().queue_url(queue);
    let mut got = Vec::new();
    for (i, m) in messages.into_iter().enumerate() {
        delete = delete.entries(
            aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle.unwrap())
                .build()
                .unwrap(),
        );
        let system = m.attributes.unwrap_or_default();
        got.push(Received {
            dedup_id: system
                .get(&MessageSystemAttributeName::MessageDeduplicationId)
                .cloned(),
            sent_ms: system
                .get(&MessageSystemAttributeName::SentTimestamp)
                .and_then(|t| t.parse().ok()),
            trace_header: system
                .get(&MessageSystemAttributeName::AwsTraceHeader)
                .cloned(),
            message_id: m.message_id.unwrap(),
            body: m.body.unwrap(),
            attrs: m
                .message_attributes
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.string_value.unwrap_or_default()))
                .collect(),
        });
    }
    let out = delete.send().await.unwrap();
    assert!(out.failed().is_empty(), "deleting: {:?}", out.failed());
    got
}

/// Receives and deletes every message in `queue` until it stays empty.
pub async fn receive_all(emu: &Emulator, queue: &str) -> Vec<Received> {
    let mut got = Vec::new();
    let mut empty = 0;
    while empty < 2 {
        let batch = receive_batch(&emu.sqs, queue).await;
        if batch.is_empty() {
            empty += 1;
        }
        got.extend(batch);
    }
    got
}

/// Every message in the output queue, keyed by source key and chunk index;
/// a chunk delivered twice fails the test.
pub async fn drain(s: &Setup) -> BTreeMap<(String, u32), (String, BTreeMap<String, String>)> {
    let mut got = BTreeMap::new();
    for m in receive_all(&s.emu, &s.output).await {
        let id = (m.source_key().to_owned(), m.chunk());
        assert!(
            got.insert(id.clone(), (m.body, m.attrs)).is_none(),
            "{id:?} delivered twice"
        );
    }
    got
}

/// Sample records with a junk preamble and one truncated record after the sixth.
pub fn sample_file(records: usize) -> String {
    let mut g = relay_shared::sample::SampleGen::new(3);
    let mut text =
        String::from("\u{feff}# collector v2\r\n// started\n[INFO] banner\n{not json\n\n");
    for i in 0..records {
        g.record(&mut text);
        text.push('\n');
        if i == 5 {
            text.push_str("{\"broken\": \n"); // a truncated record: the next line must survive
        }
    }
    text
}

/// One call of the SNS Query API on the emulator, returning the response
/// body. The tests need only two SNS calls (create a topic, subscribe a
/// queue), which does not justify building another SDK crate; the emulator
/// routes by the credential scope and does not check signatures.
pub async fn sns_call(emu: &Emulator, params: &[(&str, &str)]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body: String = params
        .iter()
        .chain(&[("Version", "2010-03-31")])
        .map(|(k, v)| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    let host = emu.endpoint.trim_start_matches("http://");
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20261127/us-east-1/sns/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "{params:?}: {response}"
    );
    response
}

/// The text between `<tag>` and `</tag>` in an XML response.
pub fn xml_field(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let from = xml.find(&open).map(|i| i + open.len()).unwrap();
    let to = xml[from..].find(&format!("</{tag}>")).unwrap();
    xml[from..from + to].to_owned()
}

pub async fn queue_arn(emu: &Emulator, url: &str) -> String {
    emu.sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone()
}

/// Kills the child when dropped, so a failing test leaves nothing running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The module's `max_receive_count`, read from infra/variables.tf, so the
/// tests' dead-letter queues move a message when the deployed one would.
pub fn module_max_receive_count() -> u32 {
    let tf = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/variables.tf"
    ))
    .unwrap();
    let block = tf.split_once("variable \"max_receive_count\" {").unwrap().1;
    block
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("default")?
                .trim()
                .strip_prefix('=')?
                .trim()
                .parse()
                .ok()
        })
        .expect("a default")
}

/// A dead-letter queue named `name` behind `queue`, with the module's
/// `max_receive_count`, as the module makes it; its URL.
pub async fn dead_letters_behind(emu: &Emulator, queue: &str, name: &str) -> String {
    let dlq = emu.queue(name, false).await;
    let arn = queue_arn(emu, &dlq).await;
    let count = module_max_receive_count();
    emu.sqs
        .set_queue_attributes()
        .queue_url(queue)
        .attributes(
            QueueAttributeName::RedrivePolicy,
            format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"{count}"}}"#),
        )
        .send()
        .await
        .unwrap();
    dlq
}

/// Messages in `queue`, visible or in flight.
pub async fn queue_depth(emu: &Emulator, queue: &str) -> u64 {
    let out = emu
        .sqs
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    out.attributes()
        .into_iter()
        .flatten()
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
}

/// `cloud-processor poll` running in this process on `queue`, stopped and
/// joined by [`Poller::stop`].
pub struct Poller {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

pub fn start_poller(
    app: AwsProcessor,
    sqs: aws_sdk_sqs::Client,
    queue: String,
    visibility_secs: u32,
) -> Poller {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let queue = cloud_processor::SqsNotifications::new(sqs, queue);
        cloud_processor::tools::poll(&app, &queue, visibility_secs, async {
            let _ = stopped.await;
        })
        .await;
    });
    Poller { stop, task }
}

impl Poller {
    /// Stops the poller and waits (at most 30 s) for it to finish.
    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// Replay's selection of everything under `prefix` in the setup's bucket.
pub fn selection(s: &Setup, prefix: &str) -> cloud_processor::tools::Selection {
    cloud_processor::tools::Selection {
        bucket: s.bucket.name().to_owned(),
        prefix: prefix.into(),
        raw_prefix: "raw/".into(),
        state_prefix: "state/".into(),
        since: None,
        until: None,
    }
}

/// Replay's target: the setup's notification queue.
pub fn replay_to_queue(s: &Setup) -> cloud_processor::tools::Target {
    cloud_processor::tools::Target::Queue(cloud_processor::SqsNotifications::new(
        s.emu.sqs.clone(),
        s.notifications.clone(),
    ))
}

/// A free port on 127.0.0.1 (for a process's runtime API or `/metrics`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
