//! What a replay has done so far, counted as it goes, and shown: a bar on
//! a terminal, one JSON line every ten seconds otherwise.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Counters the partitions' walks share.
#[derive(Debug, Default)]
pub struct Counters {
    pub listed: AtomicU64,
    pub outside_range: AtomicU64,
    pub already_done: AtomicU64,
    pub sent: AtomicU64,
    pub would_send: AtomicU64,
    pub markers_deleted: AtomicU64,
    pub leases_deleted: AtomicU64,
    /// LIST requests: raw objects, done markers, leases, partitions.
    pub list_requests: AtomicU64,
    /// SendMessageBatch or Invoke requests.
    pub send_requests: AtomicU64,
    pub delete_requests: AtomicU64,
    pub partitions: AtomicU64,
    pub partitions_done: AtomicU64,
}

pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// What a replay did, or has done so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplaySummary {
    pub listed: u64,
    /// Listed, and outside `--since`/`--until`.
    pub outside_range: u64,
    pub already_done: u64,
    pub markers_deleted: u64,
    /// Leases cleared by `reprocess` (left behind, or held by a run it restarts).
    pub leases_deleted: u64,
    pub sent: u64,
    /// In a dry run: what would have been sent (nothing is).
    pub would_send: u64,
    pub partitions: u64,
    pub partitions_done: u64,
    /// Every request made: lists, sends or invokes, deletes.
    pub requests: u64,
    /// Requests per object listed: what a backfill costs.
    pub requests_per_object: f64,
    pub elapsed_secs: f64,
    /// Objects listed per second.
    pub objects_per_sec: f64,
    /// At this pace, by partitions finished (absent until one is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_secs: Option<u64>,
}

impl Counters {
    pub fn summary(&self, started: Instant) -> ReplaySummary {
        let listed = get(&self.listed);
        let requests =
            get(&self.list_requests) + get(&self.send_requests) + get(&self.delete_requests);
        let elapsed = started.elapsed().as_secs_f64();
        let (partitions, partitions_done) = (get(&self.partitions), get(&self.partitions_done));
        let eta_secs = (partitions_done > 0 && partitions_done < partitions).then(|| {
            let per = elapsed / partitions_done as f64;
            (per * (partitions - partitions_done) as f64) as u64
        });
        ReplaySummary {
            listed,
            outside_range: get(&self.outside_range),
            already_done: get(&self.already_done),
            markers_deleted: get(&self.markers_deleted),
            leases_deleted: get(&self.leases_deleted),
            sent: get(&self.sent),
            would_send: get(&self.would_send),
            partitions,
            partitions_done,
            requests,
            requests_per_object: if listed == 0 {
                0.0
            } else {
                round2(requests as f64 / listed as f64)
            },
            elapsed_secs: round2(elapsed),
            objects_per_sec: if elapsed > 0.0 {
                round2(listed as f64 / elapsed)
            } else {
                0.0
            },
            eta_secs,
        }
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Shows progress until dropped: a bar if stderr is a terminal, else a
/// JSON line every `every`.
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
    bar: indicatif::ProgressBar,
}

impl Reporter {
    pub fn start(counters: std::sync::Arc<Counters>, started: Instant, every: Duration) -> Self {
        use std::io::IsTerminal;
        let bar = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new(0)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} partitions {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let tick = if shown.is_hidden() {
                every
            } else {
                Duration::from_millis(250)
            };
            let mut interval = tokio::time::interval(tick);
            interval.tick().await;
            loop {
                interval.tick().await;
                let s = counters.summary(started);
                if shown.is_hidden() {
                    eprintln!("{}", serde_json::json!({"progress": s}));
                } else {
                    shown.set_length(s.partitions);
                    shown.set_position(s.partitions_done);
                    shown.set_message(format!(
                        "listed {}, done already {}, sent {}, {:.0}/s{}",
                        s.listed,
                        s.already_done,
                        s.sent + s.would_send,
                        s.objects_per_sec,
                        s.eta_secs
                            .map_or(String::new(), |e| format!(", about {e} s left"))
                    ));
                }
            }
        });
        Self { task, bar }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}
