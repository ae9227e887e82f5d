//! The HTTP-level soak: the real agent (delete mode) and two real pollers
//! talk to the emulator through a proxy that answers a share of requests
//! as S3 and SQS answer when they struggle: S3's XML `SlowDown` and
//! `InternalError`, SQS's JSON `ThrottlingException` and `InternalFailure`,
//! SendMessageBatch answered with some entries failed, downloads cut short,
//! and answers to writes and deletes that reached the emulator lost or
//! replaced by a 500. Run with the module's timings scaled down, into a
//! FIFO output queue and into a standard one.
//!
//! It asserts what the relay promises under such faults: every record
//! arrives; none under two deduplication ids (FIFO), and into a standard
//! queue no more copies than the lost SendMessageBatch answers explain; no
//! lease is left once the backlog is drained and `audit` finds nothing; no
//! notification reaches the dead-letter queue; no attempt left its lease
//! behind for another to wait out; and `relay_aws_retries_total` counts the
//! faults the proxy injected, by cause.
//!
//! `RELAY_STORM_PERCENT` (default 10), `RELAY_STORM_SEED` (1) and
//! `RELAY_STORM_SECS` (25) set the storm; `scripts/soak.sh` runs it longer
//! with several seeds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::relay::*;
use common::setup;
use relay_shared::store::ObjectStore;
use relay_shared::testing::{FaultProxy, StormFault, free_port, http_get};

/// The module's shipped timings scaled down twelvefold, as in the other
/// soaks: its 60 s lease becomes 5 s, its 150 s visibility timeout 13 s.
const LEASE_TTL_SECS: u32 = 5;
const VISIBILITY_SECS: u32 = 13;
/// The module's dead-letter threshold.
const FILE_EVERY: Duration = Duration::from_millis(250);
const RECORDS_PER_FILE: usize = 200;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The three processes, each serving /metrics on a port of its own.
struct Fleet {
    procs: Vec<Proc>,
    ports: Vec<u16>,
}

fn fleet(relay: &Relay) -> Fleet {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let agent = relay.agent_with(
        0,
        &[
            ("RELAY_AWS_ATTEMPT_TIMEOUT_SECS", "5"),
            ("RELAY_METRICS_ADDR", &addr(0)),
        ],
    );
    let mut procs = vec![agent];
    for n in 1..3 {
        let env = [
            ("RELAY_METRICS_ADDR", addr(n)),
            // Small messages: several batches per file.
            ("RELAY_MAX_MESSAGE_BYTES", "16384".to_owned()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        procs.push(relay.processor_with_env(n, LEASE_TTL_SECS, VISIBILITY_SECS, &env));
    }
    Fleet { procs, ports }
}

/// `relay_aws_retries_total` summed over the fleet, by cause.
fn retries_by_cause(fleet: &Fleet) -> BTreeMap<String, u64> {
    let mut by_cause = BTreeMap::new();
    for port in &fleet.ports {
        let page = http_get(&format!("127.0.0.1:{port}"), "/metrics");
        for line in page
            .lines()
            .filter(|l| l.starts_with("relay_aws_retries_total{"))
        {
            let cause = line
                .split("cause=\"")
                .nth(1)
                .and_then(|c| c.split('"').next())
                .unwrap_or("?");
            let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            *by_cause.entry(cause.to_owned()).or_default() += n as u64;
        }
    }
    by_cause
}

/// What the proxy injected, summed by the cause a retry of it counts under.
fn injected_by_cause(
    injected: &[(&'static str, String, StormFault, u64)],
) -> BTreeMap<String, u64> {
    let mut by_cause = BTreeMap::new();
    for (_, _, fault, n) in injected {
        if let Some(cause) = fault.retry_cause() {
            *by_cause.entry(cause.to_owned()).or_default() += n;
        }
    }
    by_cause
}

/// Lost or replaced answers to SendMessageBatch: each can leave one more
/// copy of its batch in a standard queue.
fn ambiguous_sends(injected: &[(&'static str, String, StormFault, u64)]) -> u64 {
    injected
        .iter()
        .filter(|(_, op, f, _)| {
            op == "SendMessageBatch"
                && matches!(f, StormFault::LoseAnswer | StormFault::AnswerReplaced)
        })
        .map(|i| i.3)
        .sum()
}

async fn storm(fifo: bool) {
    let percent = env_u64("RELAY_STORM_PERCENT", 10) as u32;
    let seed = env_u64("RELAY_STORM_SEED", 1);
    let secs = env_u64("RELAY_STORM_SECS", 25);
    let s = setup(if fifo { "storm-f" } else { "storm" }, fifo).await;
    let dlq = common::dead_letters_behind(&s.emu, &s.notifications, "storm-dlq").await;
    let proxy = FaultProxy::start(&s.emu.endpoint).await;
    let relay = Relay::new(s, Some(proxy.endpoint()));
    let mut fleet = fleet(&relay);

    proxy.faults.start_storm(percent, seed);
    let mut w = Writer::new();
    let mut tally = if fifo {
        Tally::by_dedup_id()
    } else {
        Tally::default()
    };
    let started = Instant::now();
    let writing = Duration::from_secs(secs);
    let writer = async {
        while started.elapsed() < writing {
            w.burst(&relay.dir(), 1, RECORDS_PER_FILE, FILE_EVERY).await;
        }
    };
    let reader = read_until(&relay, &mut tally, || 0, || started.elapsed() > writing);
    tokio::join!(writer, reader);
    let report = proxy.faults.stop_storm();
    let injected = report.injected.clone();

    let expected = w.records;
    let collecting = async {
        read_until(&relay, &mut tally, || expected, || true).await;
        while relay.count("state/done/").await < w.files {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(120), collecting)
        .await
        .is_err()
    {
        let lost = tally.lost(expected);
        panic!(
            "{} of {expected} records missing 120 s after the storm (first: {:?})\n{}",
            lost.len(),
            &lost[..lost.len().min(5)],
            relay.logs()
        );
    }
    // Anything sent twice has arrived by now.
    let mut empty = 0;
    while empty < 2 {
        if tally.receive(&relay.s.emu, &relay.s.output).await == 0 {
            empty += 1;
        }
    }
    for p in &mut fleet.procs {
        p.assert_running();
    }
    let counted = retries_by_cause(&fleet);
    let expected_by_cause = injected_by_cause(&injected);
    eprintln!(
        "storm ({}): {percent}% of requests, seed {seed}: {} records in {} files; injected {injected:?}; \
         SDK retries of them {:?}; retries counted {counted:?}; duplicated records {}",
        if fifo { "FIFO" } else { "standard" },
        w.records,
        w.files,
        report.sdk_retries,
        tally.duplicated_records()
    );

    assert!(
        tally.lost(expected).is_empty(),
        "records lost\n{}",
        relay.logs()
    );
    assert_eq!(tally.unknown(expected), 0, "records nobody wrote");
    if fifo {
        assert_eq!(
            tally.duplicated_records(),
            0,
            "records under two deduplication ids (chunks {:?})\n{}",
            tally.duplicated_chunks(),
            relay.logs()
        );
    } else {
        // Each lost answer to a batch of at most ten chunks can leave one
        // more copy of each (docs/guarantees.md).
        let copies = tally.duplicated_chunks().len() as u64;
        assert!(
            copies <= 10 * ambiguous_sends(&injected),
            "{copies} chunks arrived twice, more than {} lost SendMessageBatch answers explain",
            ambiguous_sends(&injected)
        );
    }
    // No lease is left, and audit has nothing to report.
    let leases_gone = Instant::now();
    while relay.count("state/leases/").await > 0 {
        assert!(
            leases_gone.elapsed() < Duration::from_secs(10),
            "leases left after the backlog drained\n{}",
            relay.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let sel = cloud_processor::tools::Selection {
        bucket: relay.s.bucket.name().to_owned(),
        prefix: "raw/".into(),
        raw_prefix: "raw/".into(),
        state_prefix: "state/".into(),
        since: None,
        until: None,
    };
    let now = jiff::Timestamp::now().as_second();
    let audit = cloud_processor::tools::audit(&relay.s.bucket, &sel, 0, now)
        .await
        .unwrap();
    assert!(
        audit.unprocessed.is_empty()
            && audit.stale_leases.is_empty()
            && audit.finished_leases.is_empty(),
        "{audit:?}"
    );
    assert_eq!(
        common::queue_depth(&relay.s.emu, &dlq).await,
        0,
        "notifications in the dead-letter queue"
    );
    // No attempt left its lease for another to wait out.
    let logs = relay.logs();
    for stall in [
        "could not release the lease",
        "an attempt ended without settling its lease",
    ] {
        assert!(!logs.contains(stall), "{stall}\n{logs}");
    }
    // Every retry the SDK made of an injected fault (the proxy tells them
    // by their invocation id and attempt number) is counted under its
    // cause; the agent's own retry loop, and the processors', count more.
    for (cause, n) in &report.sdk_retries {
        let got = counted.get(*cause).copied().unwrap_or(0);
        assert!(
            got >= *n,
            "{cause}: the SDK retried {n} injected faults, {got} retries counted ({counted:?}; injected by cause {expected_by_cause:?})"
        );
    }
    assert!(
        !report.sdk_retries.is_empty(),
        "the storm hit requests the SDK retried"
    );
    assert!(
        counted.get("throttled").copied().unwrap_or(0)
            <= expected_by_cause.get("throttled").copied().unwrap_or(0),
        "more throttled retries counted than throttles injected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_errors_lose_nothing_and_leave_nothing_behind_fifo() {
    storm(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_errors_lose_nothing_and_leave_nothing_behind_standard() {
    storm(false).await;
}
