//! The Lambda's time per file, the figure docs/cost.md prices: the release
//! binary runs as the function against a Runtime API on loopback
//! (`relay_shared::testing::RuntimeApi`), fed by an event source mapping
//! played over the emulator's SQS in batches of five notifications, each
//! naming one file of 1,000 demo records (about 816 bytes each, 6 fields
//! projected), with the module's memory size and timeout. Per invocation it
//! measures the time from handing the event over to the function's answer
//! (what Lambda bills), and the function's CPU time from /proc.
//!
//! `scripts/bench.sh lambda` (starts a private moto). Knobs:
//! `RELAY_BENCH_LAMBDA_FILES` (default 200).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::Message;
use relay_shared::sample::SampleGen;
use relay_shared::store::{ObjectStore, PutMode, PutOptions};
use relay_shared::testing::{Emulator, RuntimeApi, s3_put_event, sqs_event};

const RECORDS_PER_FILE: usize = 1_000;
const FILES_PER_INVOCATION: i32 = 5;
/// The module's `lambda_memory_mb` and `lambda_timeout_secs`.
const MEMORY_MB: u32 = 1024;
const TIMEOUT: Duration = Duration::from_secs(120);

/// The function process's CPU time (user and system, every thread), from
/// /proc in USER_HZ (100 per second on Linux).
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = after_name
        .split(' ')
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    Duration::from_millis((fields[0] + fields[1]) * 10)
}

/// One file of the demo's records, compressed as the agent stores it.
fn file(seed: u64) -> Vec<u8> {
    let mut g = SampleGen::new(seed);
    let mut text = String::from("# collector v2\n");
    for _ in 0..RECORDS_PER_FILE {
        g.record(&mut text);
        text.push('\n');
    }
    zstd::encode_all(text.as_bytes(), 3).unwrap()
}

async fn receive(emu: &Emulator, queue: &str) -> Vec<Message> {
    let got = emu
        .sqs
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(FILES_PER_INVOCATION)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    got.messages.unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let files: usize = std::env::var("RELAY_BENCH_LAMBDA_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let emu = Emulator::connect().await;
    let bucket = emu.bucket("bench-lambda").await;
    let output = emu.queue("bench-lambda-out", false).await;
    let notifications = emu.queue("bench-lambda-notifications", false).await;
    for i in 0..files {
        let key = format!("raw/edge-1/2026/11/21/22/17638000{i:05}.json.zst");
        let body = file(i as u64);
        bucket
            .put(&key, body, &PutMode::Create, &PutOptions::default())
            .await
            .unwrap();
        let event = s3_put_event(bucket.name(), &key);
        emu.sqs
            .send_message()
            .queue_url(&notifications)
            .message_body(event.to_string())
            .send()
            .await
            .unwrap();
    }

    let api = RuntimeApi::start().await;
    let mut function = api
        .function(
            env!("CARGO_BIN_EXE_cloud-processor"),
            "relay-bench",
            MEMORY_MB,
        )
        .env("RELAY_FIELDS", cloud_processor::testing::SAMPLE_FIELDS)
        .env("RELAY_OUTPUT_QUEUE_URL", &output)
        .env("RELAY_NOTIFICATION_QUEUE_URL", &notifications)
        .env("RELAY_S3_PATH_STYLE", "true")
        .env("RELAY_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = function.id();

    let (mut done, mut warm_files) = (0usize, 0usize);
    let (mut cold, mut warm_wall, mut warm_cpu) = (None, Duration::ZERO, Duration::ZERO);
    while done < files {
        let messages = receive(&emu, &notifications).await;
        if messages.is_empty() {
            continue;
        }
        let cpu_before = cpu(pid);
        let started = Instant::now();
        let answer = api.invoke(sqs_event(&messages), TIMEOUT).await.unwrap();
        let wall = started.elapsed();
        let failed = answer["batchItemFailures"].as_array().map_or(0, Vec::len);
        assert_eq!(failed, 0, "{answer}");
        for m in &messages {
            emu.sqs
                .delete_message()
                .queue_url(&notifications)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        done += messages.len();
        // The first invocation also builds the clients: a cold start.
        if cold.is_none() {
            cold = Some((wall, messages.len()));
            continue;
        }
        warm_files += messages.len();
        warm_wall += wall;
        warm_cpu += cpu(pid) - cpu_before;
    }
    let _ = function.kill();
    let _ = function.wait();
    let per_file = |d: Duration| d.as_secs_f64() * 1000.0 / warm_files as f64;
    let (cold_wall, cold_files) = cold.unwrap();
    println!(
        "| {files} files of {RECORDS_PER_FILE} records, {FILES_PER_INVOCATION} per invocation, {MEMORY_MB} MB \
         | {:.0} ms | {:.0} ms | {:.0} ms ({cold_files} files) |",
        per_file(warm_wall),
        per_file(warm_cpu),
        cold_wall.as_secs_f64() * 1000.0,
    );
}
