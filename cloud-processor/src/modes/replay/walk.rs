//! One partition's walk: its raw objects page by page, each known done (or
//! leased) by merging in the state listing of the same keys, and the ones
//! to replay sent in full batches. Nothing is asked per object, and nothing
//! but a page and a batch is held.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use relay_shared::store::{Listing, ObjectStore, PAGE_LIMIT, S3Error};

use crate::object::listing::SortedKeys;

use crate::modes::ToolError;
use crate::modes::replay::checkpoint::{Checkpoint, Walked};
use crate::modes::replay::progress::{Counters, add};
use crate::modes::replay::send::{RawObject, Target};
use crate::modes::replay::{Mode, Options, Selection};
use crate::object::marker::{DONE, LEASES, StateObjects, mirrored};

/// Paces sends to at most `per_second` objects a second, across every
/// partition (0: no ceiling).
pub struct Pace {
    every: std::time::Duration,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Pace {
    pub fn new(per_second: u32) -> Self {
        Self {
            every: if per_second == 0 {
                std::time::Duration::ZERO
            } else {
                std::time::Duration::from_secs_f64(1.0 / f64::from(per_second))
            },
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    async fn take(&self, objects: usize) {
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(tokio::time::Instant::now());
            *next = at + self.every * u32::try_from(objects).unwrap_or(u32::MAX);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// What every partition's walk shares.
pub struct Shared<'a, S> {
    pub store: &'a S,
    pub target: &'a Target,
    pub sel: &'a Selection,
    pub opts: &'a Options,
    pub counters: &'a Counters,
    pub checkpoint: &'a Mutex<Checkpoint>,
    pub pace: &'a Pace,
    /// How raw objects are listed: their current versions in a versioned
    /// bucket (so events name them), else plainly.
    pub raw_listing: Listing,
    /// Set on Ctrl-C or SIGTERM: no new batch starts.
    pub stop: &'a AtomicBool,
    /// Set when a walk failed for good: no new batch starts either.
    pub failed: &'a AtomicBool,
}

impl<S: ObjectStore> Shared<'_, S> {
    /// Whether to start no new batch.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.failed.load(Ordering::Relaxed)
    }

    /// Where `partition` stands in the checkpoint.
    pub fn walked(&self, partition: &str) -> Option<Walked> {
        self.checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .walked(partition)
            .cloned()
    }

    fn advance(&self, partition: &str, walked: Walked) -> Result<(), ToolError> {
        self.checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .advance(partition, walked)
    }

    fn state_prefix(&self, folder: &str, partition: &str) -> String {
        mirrored(
            &self.sel.state_prefix,
            folder,
            &self.sel.raw_prefix,
            partition,
        )
    }

    /// Walks `partition` from after `after` (a raw key) to its end, or until
    /// a stop. Returns whether it reached the end.
    pub async fn walk(&self, partition: &str, after: Option<&str>) -> Result<bool, ToolError> {
        let rel = |key: &str| key.strip_prefix(partition).map(str::to_owned);
        let after_rel = after.and_then(rel);
        let mut done = SortedKeys::new(
            self.store,
            self.state_prefix(DONE, partition),
            after_rel.as_deref(),
        );
        // Leases are few: listed in step in both modes, so that missing mode
        // deletes the ones finished objects left behind.
        let mut leases = SortedKeys::new(
            self.store,
            self.state_prefix(LEASES, partition),
            after_rel.as_deref(),
        );
        let mut batch = Batch::default();
        let mut next = after.map(str::to_owned);
        let reached_end = loop {
            let page = self
                .store
                .list_page(partition, next.as_deref(), self.raw_listing, PAGE_LIMIT)
                .await?;
            add(&self.counters.list_requests, 1);
            add(&self.counters.listed, page.objects.len() as u64);
            for obj in page.objects.into_iter().map(RawObject::from) {
                let Some(rel) = rel(&obj.key) else { continue };
                if !self.sel.in_range(&obj) {
                    add(&self.counters.outside_range, 1);
                    batch.passed = Some(obj.key);
                    continue;
                }
                let is_done = done.contains(&rel).await?;
                let leased = leases.contains(&rel).await?;
                if is_done && self.opts.mode == Mode::Missing {
                    add(&self.counters.already_done, 1);
                    if leased && !self.opts.dry_run {
                        self.clear_finished_lease(&obj).await?;
                    }
                    batch.passed = Some(obj.key);
                    continue;
                }
                if self.opts.dry_run {
                    add(&self.counters.would_send, 1);
                    if self.opts.print_would_send {
                        println!("would send\t{}", obj.key);
                    }
                    continue;
                }
                if self.opts.mode == Mode::Reprocess {
                    self.clear_state(&obj, leased, is_done).await?;
                }
                batch.objects.push(obj);
                if batch.objects.len() >= self.target.objects_per_request(self.opts.per_event()) {
                    if self.stopped() {
                        break;
                    }
                    self.send(partition, &mut batch).await?;
                }
            }
            if self.stopped() {
                break false;
            }
            self.send(partition, &mut batch).await?;
            match page.next_after {
                Some(last) => {
                    self.advance(partition, Walked::After(last.clone()))?;
                    next = Some(last);
                }
                None => break true,
            }
        };
        add(
            &self.counters.list_requests,
            done.requests + leases.requests,
        );
        if reached_end {
            self.advance(partition, Walked::Done)?;
        }
        Ok(reached_end)
    }

    /// A done object's lease, left behind by its holder: deleted, as the
    /// processor deletes one it finds beside a done marker.
    async fn clear_finished_lease(&self, obj: &RawObject) -> Result<(), S3Error> {
        let keys = crate::object::marker::StateKeys::new(
            &self.sel.state_prefix,
            &self.sel.raw_prefix,
            &obj.key,
        );
        match StateObjects::new(self.store)
            .remove(&keys.lease, None)
            .await
        {
            Ok(()) | Err(S3Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        add(&self.counters.leases_deleted, 1);
        add(&self.counters.delete_requests, 1);
        Ok(())
    }

    /// Reprocess: the lease first, then the marker. Stopped in between, the
    /// object is still done, and running reprocess again finishes the job.
    /// The other order could leave a lease recording every chunk as sent
    /// and no marker, so the next attempt would send nothing and call the
    /// object sent.
    async fn clear_state(&self, obj: &RawObject, leased: bool, done: bool) -> Result<(), S3Error> {
        let keys = crate::object::marker::StateKeys::new(
            &self.sel.state_prefix,
            &self.sel.raw_prefix,
            &obj.key,
        );
        let state = StateObjects::new(self.store);
        if leased {
            state.remove(&keys.lease, None).await?;
            add(&self.counters.leases_deleted, 1);
            add(&self.counters.delete_requests, 1);
        }
        if done {
            state.remove(&keys.done, None).await?;
            add(&self.counters.markers_deleted, 1);
            add(&self.counters.delete_requests, 1);
        }
        Ok(())
    }

    /// Sends what `batch` holds, paced, then records it in the checkpoint.
    async fn send(&self, partition: &str, batch: &mut Batch) -> Result<(), ToolError> {
        if let Some(last) = batch.objects.last() {
            self.pace.take(batch.objects.len()).await;
            let requests = self
                .target
                .send(&self.sel.bucket, &batch.objects, self.opts.per_event())
                .await?;
            add(&self.counters.send_requests, requests);
            add(&self.counters.sent, batch.objects.len() as u64);
            let last = last.key.clone();
            batch.passed = Some(batch.passed.take().map_or(last.clone(), |p| p.max(last)));
            batch.objects.clear();
        }
        if let Some(passed) = batch.passed.take() {
            self.advance(partition, Walked::After(passed))?;
        }
        Ok(())
    }
}

/// Objects waiting for their send, and the last key handled without one.
#[derive(Default)]
struct Batch {
    objects: Vec<RawObject>,
    passed: Option<String>,
}
