//! The transport soak: the real agent (delete mode) and two real pollers
//! talk to the emulator through a TCP proxy that, on a schedule, cuts
//! requests and responses at random bytes, goes silent for longer than the
//! AWS attempt timeouts and then resets, and refuses connections, while
//! the agent and a poller are each killed with SIGKILL and restarted. The
//! output queue is FIFO. Every record must arrive, and none twice under
//! different deduplication ids.
//!
//! It reports how long after each fault the backlog was clear, and the
//! file-to-SQS latency under the schedule (docs/benchmarks.md).
//! `RELAY_SOAK_ROUNDS` repeats the schedule and `RELAY_SOAK_SILENCE_SECS`
//! sets the black hole's length (12 s here; `scripts/soak.sh` runs a longer
//! soak with a 40 s one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::relay::*;
use common::setup;
use relay_shared::testing::{TransportProxy, Weather};

/// The module's shipped timings scaled down twelvefold, as in the fault
/// suite: its 60 s lease becomes 5 s, its 150 s visibility timeout 13 s.
const LEASE_TTL_SECS: u32 = 5;
const VISIBILITY_SECS: u32 = 13;
/// AWS attempt timeouts of both stages here: the silence outlasts them.
const ATTEMPT_TIMEOUT_SECS: &str = "5";
/// A file every this often, of this many records.
const FILE_EVERY: Duration = Duration::from_millis(250);
const RECORDS_PER_FILE: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Sky(Weather),
    KillAgent,
    StartAgent,
    KillPoller,
    StartPoller,
}

/// One round of the schedule: (seconds into the round, step), and the
/// round's length. Each fault is followed by clear weather long enough to
/// see it recover.
fn round(silence_secs: u64) -> (Vec<(u64, Step)>, u64) {
    let quiet = 10;
    let mut t = 5;
    let mut steps = Vec::new();
    let mut fault = |steps: &mut Vec<(u64, Step)>, start: Step, end: Step, secs: u64| {
        steps.push((t, start));
        steps.push((t + secs, end));
        t += secs + quiet;
    };
    fault(
        &mut steps,
        Step::Sky(Weather::CutRequests),
        Step::Sky(Weather::Clear),
        4,
    );
    fault(
        &mut steps,
        Step::Sky(Weather::CutResponses),
        Step::Sky(Weather::Clear),
        4,
    );
    fault(&mut steps, Step::KillAgent, Step::StartAgent, 2);
    fault(
        &mut steps,
        Step::Sky(Weather::Silent),
        Step::Sky(Weather::Clear),
        silence_secs,
    );
    fault(&mut steps, Step::KillPoller, Step::StartPoller, 2);
    fault(
        &mut steps,
        Step::Sky(Weather::Refuse),
        Step::Sky(Weather::Clear),
        4,
    );
    (steps, t)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A fault as it happened: what, and when it started and ended.
struct Fault {
    what: String,
    start_ms: u64,
    end_ms: u64,
}

/// The faults so far, and those under way by kind.
#[derive(Default)]
struct Faults {
    ended: Vec<Fault>,
    open: HashMap<&'static str, (String, u64)>,
}

impl Faults {
    fn note(&mut self, step: Step) {
        let now = ms(SystemTime::now());
        let (kind, started) = match step {
            Step::Sky(Weather::Clear) => ("weather", None),
            Step::Sky(w) => ("weather", Some(format!("{w:?}"))),
            Step::KillAgent => ("agent", Some("agent killed (kill -9)".into())),
            Step::KillPoller => ("poller", Some("poller killed (kill -9)".into())),
            Step::StartAgent => ("agent", None),
            Step::StartPoller => ("poller", None),
        };
        match started {
            Some(what) => {
                self.open.insert(kind, (what, now));
            }
            None => {
                if let Some((what, start_ms)) = self.open.remove(kind) {
                    self.ended.push(Fault {
                        what,
                        start_ms,
                        end_ms: now,
                    });
                }
            }
        }
    }
}

/// The processes under test, restarted under new numbers after a kill.
struct Fleet<'r> {
    relay: &'r Relay,
    agent: Option<Proc>,
    pollers: Vec<Option<Proc>>,
    started: usize,
}

impl<'r> Fleet<'r> {
    fn new(relay: &'r Relay) -> Self {
        let mut fleet = Self {
            relay,
            agent: None,
            pollers: vec![None, None],
            started: 0,
        };
        fleet.start_agent();
        for slot in 0..2 {
            fleet.start_poller(slot);
        }
        fleet
    }

    fn start_agent(&mut self) {
        self.started += 1;
        let env = [("RELAY_AWS_ATTEMPT_TIMEOUT_SECS", ATTEMPT_TIMEOUT_SECS)];
        self.agent = Some(self.relay.agent_with(self.started, &env));
    }

    fn start_poller(&mut self, slot: usize) {
        self.started += 1;
        let env = [
            ("RELAY_AWS_ATTEMPT_TIMEOUT_SECS", ATTEMPT_TIMEOUT_SECS),
            // One message per file or so: FIFO hands out one group's
            // messages to one receiver at a time, and the test reads them all.
            ("RELAY_MAX_MESSAGE_BYTES", "16384"),
        ];
        let poller =
            self.relay
                .processor_with_env(self.started, LEASE_TTL_SECS, VISIBILITY_SECS, &env);
        self.pollers[slot] = Some(poller);
    }

    fn apply(&mut self, step: Step, proxy: &TransportProxy) {
        match step {
            Step::Sky(w) => proxy.set(w),
            Step::KillAgent => self.agent.take().unwrap().kill9(),
            Step::StartAgent => self.start_agent(),
            Step::KillPoller => self.pollers[0].take().unwrap().kill9(),
            Step::StartPoller => self.start_poller(0),
        }
    }

    fn running(&mut self) -> Vec<&mut Proc> {
        let Self { agent, pollers, .. } = self;
        agent
            .iter_mut()
            .chain(pollers.iter_mut().flatten())
            .collect()
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transport_faults_and_kills_lose_nothing_and_send_nothing_twice() {
    let rounds = env_u64("RELAY_SOAK_ROUNDS", 1);
    let silence = env_u64("RELAY_SOAK_SILENCE_SECS", 12);
    let s = setup("soak", true).await;
    let proxy = TransportProxy::start(&s.emu.endpoint, 32).await;
    let relay = Relay::new(s, Some(proxy.endpoint()));
    let mut fleet = Fleet::new(&relay);
    let (one, length) = round(silence);
    let schedule: Vec<(Duration, Step)> = (0..rounds)
        .flat_map(|r| {
            one.iter()
                .map(move |(t, step)| (Duration::from_secs(r * length + t), *step))
        })
        .collect();
    let writing_for = Duration::from_secs(rounds * length);

    // The writer and the schedule run in one loop, a file every FILE_EVERY
    // and each step when its time comes, while the output queue is read.
    let mut w = Writer::new();
    let mut faults = Faults::default();
    let started = Instant::now();
    let writer = async {
        let mut next = 0;
        while started.elapsed() < writing_for {
            while next < schedule.len() && schedule[next].0 <= started.elapsed() {
                faults.note(schedule[next].1);
                fleet.apply(schedule[next].1, &proxy);
                next += 1;
            }
            for p in fleet.running() {
                p.assert_running();
            }
            w.burst(&relay.dir(), 1, RECORDS_PER_FILE, FILE_EVERY).await;
        }
    };
    let mut tally = Tally::by_dedup_id();
    let reader = read_until(&relay, &mut tally, || 0, || started.elapsed() > writing_for);
    tokio::join!(writer, reader);
    let written_by = Instant::now();
    let deadline = Duration::from_secs(180);
    let expected = w.records;
    let collecting = read_until(&relay, &mut tally, || expected, || true);
    if tokio::time::timeout(deadline, collecting).await.is_err() {
        let lost = tally.lost(expected);
        panic!(
            "{} of {expected} records missing {deadline:?} after the writer stopped \
             (first: {:?}); {}\n{}",
            lost.len(),
            &lost[..lost.len().min(5)],
            proxy.stats.summary(),
            relay.logs()
        );
    }
    let backlog_clear = written_by.elapsed();
    for p in fleet.running() {
        p.assert_running();
    }
    assert_eq!(tally.unknown(expected), 0, "records nobody wrote");
    assert_eq!(
        relay.count("raw/").await,
        w.files,
        "each file stored once under its own key"
    );
    assert!(tally.lost(expected).is_empty());
    assert_eq!(
        tally.duplicated_records(),
        0,
        "records delivered under two deduplication ids (chunks {:?})\n{}",
        tally.duplicated_chunks(),
        relay.logs()
    );
    let stats = &proxy.stats;
    for (what, n) in [
        ("requests cut", &stats.cut_requests),
        ("responses cut", &stats.cut_responses),
        ("connections silenced", &stats.silenced),
        ("connections refused", &stats.refused),
    ] {
        assert!(
            n.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "the schedule injected no {what}: {}",
            stats.summary()
        );
    }
    report(&w, &tally, &faults.ended, backlog_clear, stats.summary());
}

/// Prints the soak's figures: per fault, how long after it ended every file
/// written before its end had reached SQS; and file-to-SQS latency.
fn report(w: &Writer, tally: &Tally, faults: &[Fault], tail: Duration, stats: String) {
    let written: HashMap<&str, u64> = w
        .written
        .iter()
        .map(|(name, t)| (name.as_str(), ms(*t)))
        .collect();
    // Per file: when it was written, and when its last message reached SQS.
    let mut files: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut latencies = Vec::new();
    for (key, sent_ms) in &tally.arrivals {
        let name = key.rsplit('/').next().unwrap().trim_end_matches(".zst");
        let Some(&at) = written.get(name) else {
            continue;
        };
        latencies.push(sent_ms.saturating_sub(at));
        let e = files.entry(name).or_insert((at, 0));
        e.1 = e.1.max(*sent_ms);
    }
    latencies.sort_unstable();
    eprintln!(
        "soak: {} records in {} files, {} messages; {} resends FIFO deduplicates; {stats}",
        w.records,
        w.files,
        tally.arrivals.len(),
        tally.resent_same_id
    );
    eprintln!(
        "soak: file-to-SQS latency p50 {} ms, p99 {} ms, max {} ms; last record {} ms after the writer stopped",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
        tail.as_millis()
    );
    for f in faults {
        let clear = files
            .values()
            .filter(|(at, _)| *at <= f.end_ms)
            .map(|(_, last)| last.saturating_sub(f.end_ms))
            .max()
            .unwrap_or(0);
        eprintln!(
            "soak: {:<28} {:>6} ms; backlog clear {:>6} ms after it ended",
            f.what,
            f.end_ms - f.start_ms,
            clear
        );
    }
}
