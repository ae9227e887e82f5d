//! The replay tool: its options, the walk over every partition (retried
//! from its checkpoint after a transient failure), and the command with
//! its confirmation, progress and Ctrl-C.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use relay_shared::store::ObjectStore;

use super::checkpoint::{Checkpoint, Walked};
use super::partition;
use super::progress::{self, Counters, ReplaySummary, add};
use super::selection::Selection;
use super::send::Target;
use super::walk::{Pace, Shared};
use crate::aws::{Function, SqsNotifications};
use crate::cli::ReplayArgs;
use crate::modes::replay::Mode;
use crate::modes::{Exit, ToolError, tool_store};

/// How a replay runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    /// Count what would be sent; change nothing.
    pub dry_run: bool,
    /// In a dry run, print each object that would be sent on stdout.
    pub print_would_send: bool,
    /// Objects sent per second at most (0: no ceiling).
    pub rate_per_sec: u32,
    /// Objects named in one notification.
    pub objects_per_event: u16,
    /// Partitions walked at once.
    pub concurrency: u16,
}

impl Options {
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            dry_run: false,
            print_would_send: false,
            rate_per_sec: 0,
            objects_per_event: 10,
            concurrency: 8,
        }
    }

    pub(super) fn per_event(&self) -> usize {
        usize::from(self.objects_per_event.max(1))
    }
}

/// Re-sends events for the selected objects, walking `concurrency`
/// partitions at once. With `checkpoint` (a path), progress is saved there
/// after every batch, and read from there if it exists: a resumed replay
/// sends nothing the stopped one sent. `stop` set (Ctrl-C) lets each walk
/// finish its batch in flight and save, then returns what was done.
pub async fn replay<S: ObjectStore>(
    store: &S,
    target: &Target,
    sel: &Selection,
    opts: &Options,
    checkpoint: Option<&Path>,
    stop: &AtomicBool,
) -> Result<ReplaySummary, ToolError> {
    if !sel.prefix.starts_with(&sel.raw_prefix) {
        return Err(ToolError::Prefix {
            prefix: sel.prefix.clone(),
            raw_prefix: sel.raw_prefix.clone(),
        });
    }
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let _reporter = progress::Reporter::start(counters.clone(), started, Duration::from_secs(10));
    let checkpoint = open_checkpoint(store, sel, opts, checkpoint, &counters).await?;
    let todo: Vec<String> = checkpoint
        .partitions()
        .filter(|(_, walked)| *walked != Some(&Walked::Done))
        .map(|(p, _)| p.to_owned())
        .collect();
    add(&counters.partitions, checkpoint.partitions().count() as u64);
    add(
        &counters.partitions_done,
        (checkpoint.partitions().count() - todo.len()) as u64,
    );
    let checkpoint = std::sync::Mutex::new(checkpoint);
    let pace = Pace::new(opts.rate_per_sec);
    let raw_listing = crate::object::listing::raw_listing(store).await?;
    add(&counters.list_requests, 1);
    let shared = Shared {
        store,
        target,
        sel,
        opts,
        counters: &counters,
        checkpoint: &checkpoint,
        pace: &pace,
        raw_listing,
        stop,
        failed: &AtomicBool::new(false),
    };
    walk_all(&shared, todo).await?;
    Ok(counters.summary(started))
}

/// The checkpoint to resume from, or a fresh one over the selection's
/// partitions (saved at `path` if given; a dry run saves nothing).
async fn open_checkpoint<S: ObjectStore>(
    store: &S,
    sel: &Selection,
    opts: &Options,
    path: Option<&Path>,
    counters: &Counters,
) -> Result<Checkpoint, ToolError> {
    let path = path.filter(|_| !opts.dry_run);
    if let Some(path) = path
        && let Some(resumed) = Checkpoint::load(path, sel, opts.mode)?
    {
        tracing::warn!(checkpoint = %path.display(), "resuming the replay this checkpoint records");
        return Ok(resumed);
    }
    let want = usize::from(opts.concurrency) * 2;
    let (parts, requests) = partition::partitions(store, &sel.prefix, want).await?;
    add(&counters.list_requests, requests);
    let fresh = Checkpoint::new(sel, opts.mode, &parts);
    match path {
        Some(path) => fresh.saved_at(path),
        None => Ok(fresh),
    }
}

/// Walks every partition in `todo`, `concurrency` at once. The first
/// failure that retrying cannot mend stops new batches everywhere; the
/// other walks finish theirs.
async fn walk_all<S: ObjectStore>(
    shared: &Shared<'_, S>,
    todo: Vec<String>,
) -> Result<(), ToolError> {
    let queue = std::sync::Mutex::new(todo.into_iter());
    let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).next();
    let worker = || async {
        while !shared.stopped() {
            let Some(partition) = next() else {
                return Ok(());
            };
            if let Err(e) = walk_retrying(shared, &partition).await {
                shared.failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(())
    };
    let workers: Vec<_> = (0..shared.opts.concurrency.max(1))
        .map(|_| worker())
        .collect();
    let results = futures_util::future::join_all(workers).await;
    results.into_iter().collect()
}

/// Walks after a failure retrying may mend (S3 or SQS did not answer, or
/// throttled) this many times more, each from where the checkpoint has it.
const PARTITION_RETRIES: u32 = 5;

/// Walks `partition` from where the checkpoint has it to its end (or a
/// stop), again after a retryable failure.
async fn walk_retrying<S: ObjectStore>(
    shared: &Shared<'_, S>,
    partition: &str,
) -> Result<(), ToolError> {
    let mut delays = relay_shared::retry::backoff(Duration::from_secs(1), Duration::from_secs(30));
    let mut retries = 0;
    loop {
        let after = match shared.walked(partition) {
            Some(Walked::Done) => return Ok(()),
            Some(Walked::After(key)) => Some(key),
            None => None,
        };
        match shared.walk(partition, after.as_deref()).await {
            Ok(true) => {
                add(&shared.counters.partitions_done, 1);
                return Ok(());
            }
            Ok(false) => return Ok(()),
            Err(e) if e.is_retryable() && retries < PARTITION_RETRIES && !shared.stopped() => {
                retries += 1;
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(partition, error = %e, retries, delay_ms = delay.as_millis() as u64,
                    "walking a partition failed; trying again from its checkpoint");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Asks before `reprocess` sends everything again, unless `--yes`.
fn confirm(sel: &Selection) -> Result<(), ToolError> {
    if !std::io::stdin().is_terminal() {
        return Err(ToolError::NeedsYes);
    }
    eprint!(
        "Reprocess every object under s3://{}/{}? Consumers will see their records again. Type 'reprocess': ",
        sel.bucket, sel.prefix
    );
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(ToolError::Prompt)?;
    if answer.trim() == "reprocess" {
        Ok(())
    } else {
        Err(ToolError::NotConfirmed)
    }
}

/// `replay`: progress on stderr (a dry run lists each object on stdout),
/// then its summary as one JSON line on stderr. The first Ctrl-C or
/// SIGTERM stops it cleanly: batches in flight finish and the checkpoint
/// is saved (exit status 130).
pub async fn run(
    r: ReplayArgs,
    raw_prefix: &str,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Exit, ToolError> {
    let sel = Selection::of(&r.range, raw_prefix)?;
    if r.mode == Mode::Reprocess && !r.dry_run && !r.yes {
        confirm(&sel)?;
    }
    let (sdk, store) = tool_store(&r.range).await;
    let target = match (r.notification_queue_url, r.function_name) {
        (Some(url), _) => Target::Queue(SqsNotifications::connect(&sdk, url)),
        (None, Some(name)) => Target::Function(Function::new(&sdk, name)),
        (None, None) => return Err(ToolError::NoTarget),
    };
    let opts = Options {
        mode: r.mode,
        dry_run: r.dry_run,
        print_would_send: r.dry_run,
        rate_per_sec: r.rate_per_sec,
        objects_per_event: r.objects_per_event,
        concurrency: r.concurrency,
    };
    let stop = AtomicBool::new(false);
    let replaying = replay(&store, &target, &sel, &opts, r.checkpoint.as_deref(), &stop);
    tokio::pin!(replaying, shutdown);
    let summary = tokio::select! {
        done = &mut replaying => done?,
        () = &mut shutdown => {
            eprintln!("stopping: batches in flight finish, then the checkpoint is saved");
            stop.store(true, Ordering::Relaxed);
            let summary = replaying.await?;
            eprintln!("{}", serde_json::json!({"stopped": summary}));
            return Ok(Exit::Interrupted);
        }
    };
    eprintln!("{}", serde_json::to_string(&summary).unwrap_or_default());
    Ok(Exit::Success)
}
