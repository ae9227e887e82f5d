//! The processor: one object at a time, claimed, run and settled exactly
//! once. Built once per process with its store and queues; `ingest` hands it
//! the objects events name.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay_shared::keys::canary_of;
use relay_shared::store::{ObjectStore, S3Error};
use tracing::Instrument;

use crate::cli::{Config, Protocol};
use crate::metrics as m;
use crate::object::canary;
use crate::object::claim::{self, Attempts, Claim, now_ms};
use crate::object::error::ProcessError;
use crate::object::lease::Claimant;
use crate::object::marker::StateKeys;
use crate::object::plan::{self, Attempt, Plan};
use crate::object::reconcile::{self, ReconcileError};
use crate::object::{Failure, ObjectRef};
use crate::output::{MessageSink, Route};
use crate::pipeline::project::Projection;

/// The processor with everything an object needs, built once per process:
/// the object store (S3 in production, in memory in unit tests) and the
/// message sinks.
#[derive(Debug, Clone)]
pub struct Processor<S, Q> {
    pub config: Config,
    pub protocol: Protocol,
    /// The store; each object's bucket is addressed through it.
    pub store: S,
    pub output: Q,
    /// Names this processor (this `App`) in leases and markers; unique
    /// even among processors of one process.
    pub owner: String,
    /// The objects this processor's attempts are on.
    attempts: Attempts,
    /// Where canaries' messages go (`RELAY_CANARY_QUEUE_URL`); without it a
    /// canary is processed and counted, and nothing is sent.
    pub canary: Option<Q>,
    /// A canary's record, cut to what it holds.
    canary_projection: Projection,
    /// Per source, the newest canary's creation time processed here
    /// (canaries that waited may come out of order).
    newest_canary: Arc<Mutex<BTreeMap<String, f64>>>,
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every record that could be read went to SQS. `chunks` counts the
    /// object's chunks; after a resume, fewer were sent by this run.
    Sent {
        chunks: u32,
        records: u64,
        rejected: u64,
    },
    /// The done marker exists: the event was a duplicate and nothing was sent.
    Duplicate,
    /// The object cannot be read at all; a quarantine record says why.
    Quarantined { reason: String },
    /// Not ours: outside the raw prefix.
    Ignored,
    /// The object no longer exists.
    Missing,
    /// An edge agent's manifest, reconciled: this many findings need a person.
    Reconciled { findings: u64 },
}

impl<S: ObjectStore, Q: MessageSink> Processor<S, Q> {
    pub fn new(config: Config, protocol: Protocol, store: S, output: Q) -> Self {
        // Several processors may run in one process (tests do): the counter
        // keeps their leases apart, so none takes another's for its own.
        static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let owner = format!(
            "{}-{}-{:x}-{}",
            std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_else(|_| "processor".into()),
            std::process::id(),
            claim::now_ms(),
            MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        Self {
            config,
            protocol,
            store,
            output,
            owner,
            attempts: Attempts::default(),
            canary: None,
            canary_projection: canary::projection(),
            newest_canary: Arc::default(),
        }
    }

    /// Sends canaries' messages to `queue` instead of nowhere.
    #[must_use]
    pub fn with_canary_queue(mut self, queue: Q) -> Self {
        self.canary = Some(queue);
        self
    }

    /// How long before an invocation's deadline sending stops: one AWS call
    /// at its operation timeout, plus time to release the lease and make the
    /// notification visible again.
    pub fn stop_margin(&self) -> Duration {
        self.protocol.timeouts.operation + Duration::from_secs(5)
    }

    /// Processes one raw object: stream, decode, project, pack, send.
    pub async fn process_object(&self, obj: &ObjectRef) -> Result<Outcome, ProcessError> {
        self.process_object_until(obj, None).await
    }

    /// As [`Processor::process_object`], but starts no batch after `stop_at`: the
    /// attempt then fails cleanly, with its progress recorded and its lease
    /// released, instead of being killed mid-send (a Lambda's deadline).
    pub async fn process_object_until(
        &self,
        obj: &ObjectRef,
        stop_at: Option<Instant>,
    ) -> Result<Outcome, ProcessError> {
        let manifest = obj.key.starts_with(relay_shared::manifest::PREFIX);
        if !manifest && !obj.key.starts_with(&self.config.raw_prefix) {
            return Ok(Outcome::Ignored);
        }
        // The trace is recorded once the object's metadata is read; the
        // spans inside this one (claim, download, pipeline, each send) are
        // exported under it (see `spans`).
        let span = tracing::info_span!("object", bucket = %obj.bucket, key = %obj.key,
            trace_id = tracing::field::Empty, traceparent = tracing::field::Empty,
            span_id = tracing::field::Empty, outcome = tracing::field::Empty,
            error = tracing::field::Empty);
        let started = Instant::now();
        let result = if manifest {
            self.reconcile(obj).instrument(span.clone()).await
        } else {
            self.process(obj, stop_at).instrument(span.clone()).await
        }
        .map_err(|failure| ProcessError::new(obj, failure));
        let outcome = match &result {
            Ok(Outcome::Sent { .. }) => "sent",
            Ok(Outcome::Quarantined { .. }) => "quarantined",
            Ok(Outcome::Missing) => "missing",
            Ok(Outcome::Duplicate) => "duplicate",
            Ok(Outcome::Ignored) => "ignored",
            Ok(Outcome::Reconciled { .. }) => "reconciled",
            Err(e) => e.outcome_label(),
        };
        span.record("outcome", outcome);
        if let Err(e) = &result {
            span.record(crate::spans::ERROR_FIELD, e.to_string());
        }
        metrics::counter!(m::OBJECTS, "outcome" => outcome).increment(1);
        metrics::histogram!(m::OBJECT_SECONDS).record(started.elapsed().as_secs_f64());
        result
    }

    /// Reconciles an edge agent's manifest (see [`reconcile`]). A manifest
    /// that cannot be read is a finding, never a retry; S3 failing is.
    async fn reconcile(&self, obj: &ObjectRef) -> Result<Outcome, Failure> {
        let store = self.store.in_bucket(&obj.bucket);
        let ledger = reconcile::Ledger {
            state_prefix: &self.protocol.state_prefix,
            raw_prefix: &self.config.raw_prefix,
            grace: self.protocol.ledger_grace,
        };
        Ok(match ledger.on_manifest(&store, &obj.key, now_ms()).await {
            Ok(found) => Outcome::Reconciled {
                findings: reconcile::note(&found),
            },
            Err(ReconcileError::Manifest(e)) => Outcome::Reconciled {
                findings: reconcile::note_unreadable(&obj.key, &e),
            },
            Err(ReconcileError::S3(S3Error::NotFound { .. })) => Outcome::Missing,
            Err(ReconcileError::S3(e)) => return Err(Failure::S3(e)),
        })
    }

    /// Claims the object, runs it, and settles the claim.
    async fn process(&self, obj: &ObjectRef, stop_at: Option<Instant>) -> Result<Outcome, Failure> {
        let (store, plan) = (self.store.in_bucket(&obj.bucket), self.plan(obj));
        let keys = plan.keys.clone();
        let entered = self.attempts.enter(obj);
        let claimant = Claimant {
            owner: &self.owner,
            sole: entered.sole,
        };
        let (claimed, plan) = self
            .claim(&store, &keys, claimant, plan)
            .instrument(tracing::info_span!("claim"))
            .await?;
        let Some(mut claim) = claimed else {
            claim::note_duplicate();
            return Ok(Outcome::Duplicate);
        };
        claim.note_takeover(plan.route.is_fifo());
        let attempt = Attempt {
            obj,
            plan,
            store: store.clone(),
            started: Instant::now(),
            owner: &self.owner,
            protocol: &self.protocol,
            newest_canary: &self.newest_canary,
        };
        let ran = attempt.run(&mut claim, stop_at).await;
        attempt.settle(claim, ran).await
    }

    /// Takes the object's lease under `plan`, or under the plan of the
    /// release before trace contexts if that release left it half-sent
    /// (worked out only then, not for every object).
    async fn claim<'a>(
        &self,
        store: &'a S,
        keys: &'a StateKeys,
        claimant: Claimant<'_>,
        plan: Plan<'a, Q>,
    ) -> Result<(Option<Claim<'a, S>>, Plan<'a, Q>), Failure> {
        let ttl = self.protocol.lease_ttl;
        match Claim::take(store, keys, claimant, &plan.fingerprint, ttl).await {
            Err(Failure::ConfigChanged { theirs, .. })
                if theirs == plan.untraced_fingerprint(&self.config, &self.protocol) =>
            {
                let untraced = plan.untraced(&self.config, &self.protocol);
                let fp = &untraced.fingerprint;
                Ok((Claim::take(store, keys, claimant, fp, ttl).await?, untraced))
            }
            taken => Ok((taken?, plan)),
        }
    }

    /// How `obj` is to be processed: a canary's record is projected to its
    /// own fields and goes to the canary queue.
    fn plan(&self, obj: &ObjectRef) -> Plan<'_, Q> {
        let canary = canary_of(&self.config.raw_prefix, &obj.key);
        let route = match (&canary, &self.canary) {
            (None, _) => Route::Queue(&self.output),
            (Some(_), Some(q)) => Route::Queue(q),
            (Some(_), None) => Route::Discard {
                max_message_bytes: self.output.max_message_bytes(),
            },
        };
        let mut settings = plan::settings(&self.config, route.max_message_bytes(), &obj.key);
        if canary.is_some() {
            settings.projection = self.canary_projection.clone();
        }
        let fingerprint =
            plan::fingerprint(&self.config, &self.protocol, &settings, route.queue_url());
        let keys = StateKeys::new(
            &self.protocol.state_prefix,
            &self.config.raw_prefix,
            &obj.key,
        );
        let rest = obj.key.strip_prefix(&self.config.raw_prefix);
        let source = rest.and_then(|r| r.split('/').next()).unwrap_or("unknown");
        Plan {
            route,
            settings,
            canary,
            fingerprint,
            keys,
            source: source.to_owned(),
            traced: true,
        }
    }
}

/// The processor over the in-memory store and queue: the once-only
/// protocol's hard cases, with no emulator.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cli::Protocol;
    use crate::object::claim::now_ms;
    use crate::object::marker::DoneMarker;
    use crate::object::marker::StateKeys;
    use crate::testing::{CrashAfter, FakeQueue, SendFault, until_crash};
    use clap::Parser;
    use relay_shared::store::{PutMode, PutOptions};
    use relay_shared::testing::{Fault, MemStore};
    use serde_json::Value;
    use std::collections::BTreeMap;
    use std::ops::ControlFlow;

    const KEY: &str = "raw/e/2026/11/21/22/1763800000000.json.zst";
    // About 30 messages of 1 KiB once projected: three batches.
    const RECORDS: usize = 3000;

    fn app<Q: MessageSink>(store: &MemStore, queue: Q) -> Processor<MemStore, Q> {
        app_with(store, queue, "id")
    }

    fn app_with<Q: MessageSink>(
        store: &MemStore,
        queue: Q,
        fields: &str,
    ) -> Processor<MemStore, Q> {
        let cli = crate::cli::Cli::try_parse_from(["cloud-processor", "--fields", fields]).unwrap();
        let protocol = Protocol::new("state/", 60, crate::cli::AwsTimeouts::default());
        Processor::new(
            Config::from_common(&cli.common).unwrap(),
            protocol,
            store.in_bucket("elsewhere"),
            queue,
        )
    }

    /// A store holding one raw object of [`RECORDS`] records, with a junk
    /// preamble, and its reference.
    async fn object() -> (MemStore, ObjectRef) {
        let mut text = String::from("# written by the container\n");
        for i in 0..RECORDS {
            text.push_str(&format!("{{\"id\":{i},\"pad\":\"{}\"}}\n", "x".repeat(40)));
        }
        object_of(&text).await
    }

    /// A store holding `text` as the raw object, and its reference.
    /// A processor over `fields` that dies once SQS took `batches` batches
    /// of `obj`, its lease left to expire.
    async fn crash_after(
        store: &MemStore,
        obj: &ObjectRef,
        queue: &FakeQueue,
        fields: &str,
        batches: u32,
    ) {
        let crashing = app_with(store, CrashAfter::new(queue.clone(), batches), fields);
        let done = until_crash(crashing.process_object(obj), &crashing.output).await;
        assert!(done.is_none(), "finished without crashing: {done:?}");
    }

    /// S3's clock moves past the end of a 60 s lease.
    fn past_the_lease(store: &MemStore) {
        store.at(i64::try_from(now_ms()).unwrap() + 65_000);
    }

    /// Replaces the payload at `key` with other bytes and removes the
    /// object's done marker, so the next run meets the clash.
    async fn put_other_bytes_and_forget_done(store: &MemStore, key: &str) {
        store.delete(key, None).await.unwrap();
        store
            .put(
                key,
                b"other".to_vec(),
                &PutMode::Create,
                &PutOptions::default(),
            )
            .await
            .unwrap();
        let done = StateKeys::new("state/", "raw/", KEY).done;
        store.delete(&done, None).await.unwrap();
    }

    /// Stores `text`, compressed, at `key`.
    async fn put_text(store: &MemStore, key: &str, text: &str) {
        let body = zstd::encode_all(text.as_bytes(), 3).unwrap();
        store
            .put(key, body, &PutMode::Create, &PutOptions::default())
            .await
            .unwrap();
    }

    async fn object_of(text: &str) -> (MemStore, ObjectRef) {
        let store = MemStore::new("b");
        put_text(&store, KEY, text).await;
        let obj = ObjectRef {
            bucket: "b".into(),
            key: KEY.into(),
            etag: None,
            version_id: None,
            size: None,
        };
        (store, obj)
    }

    /// What a consumer gets for a body: the body, or for a claim check the
    /// payload it points to, as the Extended Client resolves it.
    fn resolved(store: &MemStore, body: Vec<u8>) -> Vec<u8> {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(a)) if a[0] == crate::output::batch::PAYLOAD_POINTER_CLASS => {
                let (bucket, key) = (a[1]["s3BucketName"].as_str(), a[1]["s3Key"].as_str());
                store
                    .in_bucket(bucket.unwrap())
                    .bytes(key.unwrap())
                    .expect("the payload")
            }
            _ => body,
        }
    }

    /// How often each record id reached the queue.
    fn delivered(queue: &FakeQueue) -> BTreeMap<u64, usize> {
        delivered_via(&MemStore::new("none"), queue)
    }

    /// How often each record id reached a consumer that resolves claim
    /// checks from `store`.
    fn delivered_via(store: &MemStore, queue: &FakeQueue) -> BTreeMap<u64, usize> {
        let mut seen = BTreeMap::new();
        for body in queue.bodies() {
            let body = resolved(store, body);
            for line in body.split(|b| *b == b'\n') {
                let v: Value = serde_json::from_slice(line).unwrap();
                *seen.entry(v["id"].as_u64().unwrap()).or_default() += 1;
            }
        }
        seen
    }

    fn marker(store: &MemStore) -> DoneMarker {
        let keys = StateKeys::new("state/", "raw/", KEY);
        serde_json::from_slice(&store.bytes(&keys.done).expect("a done marker")).unwrap()
    }

    /// A replayed notification names three objects, and the middle one is
    /// held by another processor: the other two are sent anyway, and the
    /// redelivery sends only the middle one, the others stopped by their
    /// markers.
    #[tokio::test]
    async fn one_failing_object_of_a_notification_does_not_resend_the_others() {
        let store = MemStore::new("b");
        let keys: Vec<String> = (0..3)
            .map(|i| format!("raw/e/2026/11/21/22/176380000000{i}.json.zst"))
            .collect();
        for (i, key) in keys.iter().enumerate() {
            let text: String = (0..10)
                .map(|r| format!("{{\"id\":\"{i}-{r}\"}}\n"))
                .collect();
            put_text(&store, key, &text).await;
        }
        let lease = crate::object::marker::StateKeys::new("state/", "raw/", &keys[1]).lease;
        let busy = format!(
            "{{\"owner\":\"other\",\"expires_at_ms\":{},\"ttl_ms\":60000,\"fingerprint\":\"f\",\"next_chunk\":0}}",
            now_ms() + 60_000
        );
        store.insert(&lease, busy.as_bytes());
        let objects: Vec<_> = keys
            .iter()
            .map(|k| crate::modes::replay::RawObject {
                key: k.clone(),
                size: 0,
                etag: String::new(),
                last_modified_secs: 0,
                version_id: None,
            })
            .collect();
        let event = crate::modes::replay::events_for("b", &objects).to_string();
        let queue = FakeQueue::default();
        let app = app(&store, queue.clone());
        let handler = crate::ingest::Handler::new(&app);
        let err = handler.process_message_body(&event).await.unwrap_err();
        assert!(
            matches!(
                &err,
                crate::ingest::HandleError::Unfinished(ProcessError {
                    failure: Failure::Busy { .. },
                    ..
                })
            ),
            "{err}"
        );
        let ids = |queue: &FakeQueue| -> Vec<String> {
            let mut ids: Vec<String> = queue
                .records()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            ids
        };
        let first = ids(&queue);
        assert_eq!(first.len(), 20);
        assert!(first.iter().all(|id| !id.starts_with("1-")), "{first:?}");

        store.remove(&lease);
        let outcomes = handler.process_message_body(&event).await.unwrap();
        assert!(
            matches!(
                outcomes[..],
                [
                    Outcome::Duplicate,
                    Outcome::Sent { records: 10, .. },
                    Outcome::Duplicate
                ]
            ),
            "{outcomes:?}"
        );
        let all = ids(&queue);
        let expected: Vec<String> = (0..3)
            .flat_map(|i| (0..10).map(move |r| format!("{i}-{r}")))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(all, expected, "every record once");
    }

    /// A manifest's event is reconciled, never sent: one that cannot be
    /// read is a finding and is acknowledged (no retry into the DLQ), one
    /// that is gone is missing, and nothing reaches the queue.
    #[tokio::test]
    async fn manifests_are_reconciled_and_a_bad_one_is_a_finding_not_a_retry() {
        let store = MemStore::new("b");
        let queue = FakeQueue::default();
        let app = app(&store, queue.clone());
        let obj = |key: &str| ObjectRef {
            bucket: "b".into(),
            key: key.into(),
            etag: None,
            version_id: None,
            size: None,
        };
        let (bad, gone) = (
            "ledger/e/1/0000000001.5.json",
            "ledger/e/1/0000000002.6.json",
        );
        put_text(&store, bad, "{not a manifest").await;
        let outcome = app.process_object(&obj(bad)).await.unwrap();
        assert!(
            matches!(outcome, Outcome::Reconciled { findings: 1 }),
            "{outcome:?}"
        );
        let outcome = app.process_object(&obj(gone)).await.unwrap();
        assert!(matches!(outcome, Outcome::Missing), "{outcome:?}");
        assert!(delivered(&queue).is_empty());
    }

    #[tokio::test]
    async fn every_record_once_and_the_marker_accounts_for_the_object() {
        let (store, obj) = object().await;
        let queue = FakeQueue::default();
        let outcome = app(&store, queue.clone())
            .process_object(&obj)
            .await
            .unwrap();
        assert!(
            matches!(outcome, Outcome::Sent { records, rejected: 0, .. } if records == RECORDS as u64),
            "{outcome:?}"
        );
        let seen = delivered(&queue);
        assert_eq!(seen.len(), RECORDS);
        assert!(seen.values().all(|n| *n == 1));
        let m = marker(&store);
        assert_eq!(
            (m.records_out, m.messages as usize),
            (RECORDS as u64, queue.bodies().len())
        );
        // A repeated event sends nothing.
        let again = app(&store, queue.clone())
            .process_object(&obj)
            .await
            .unwrap();
        assert_eq!(again, Outcome::Duplicate);
        assert_eq!(delivered(&queue).values().sum::<usize>(), RECORDS);
    }

    /// A processor dies between a batch SQS took and its progress write.
    /// Its lease binds others until it ends by S3's clock; the taker then
    /// resumes after the last recorded batch: nothing is lost, and only
    /// the unrecorded batch can arrive twice.
    #[tokio::test]
    async fn a_crash_after_k_batches_is_taken_over_and_resumed() {
        let (store, obj) = object().await;
        let queue = FakeQueue::default();
        crash_after(&store, &obj, &queue, "id", 2).await;
        let sent_before = queue.bodies().len();

        let retry = app(&store, queue.clone());
        let busy = retry.process_object(&obj).await.unwrap_err();
        assert!(matches!(busy.failure, Failure::Busy { .. }), "{busy}");

        past_the_lease(&store);
        let outcome = retry.process_object(&obj).await.unwrap();
        assert!(matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");
        let seen = delivered(&queue);
        assert_eq!(seen.len(), RECORDS, "every record arrived");
        let twice = queue.resent();
        assert!(
            !twice.is_empty() && twice.len() <= sent_before,
            "only the unrecorded batch is resent: {twice:?} of {sent_before}"
        );
        assert_eq!(
            marker(&store).resumed_from_chunk as usize + twice.len(),
            sent_before
        );
    }

    /// The done marker's write takes effect but its answer is lost: the
    /// attempt finds its own marker and finishes, deleting its lease; a
    /// repeat finds the marker and sends nothing.
    #[tokio::test]
    async fn a_lost_answer_to_the_done_marker_sends_nothing_twice() {
        let (store, obj) = object().await;
        store.fail_on("PutObject", "state/done/", Fault::LoseResponse);
        let queue = FakeQueue::default();
        let first = app(&store, queue.clone()).process_object(&obj).await;
        assert!(matches!(first, Ok(Outcome::Sent { .. })), "{first:?}");
        let lease = StateKeys::new("state/", "raw/", KEY).lease;
        assert_eq!(store.bytes(&lease), None, "no lease left behind");
        let sent = queue.bodies().len();
        let retry = app(&store, queue.clone())
            .process_object(&obj)
            .await
            .unwrap();
        assert_eq!(retry, Outcome::Duplicate);
        assert_eq!(queue.bodies().len(), sent, "nothing was sent again");
        assert!(delivered(&queue).values().all(|n| *n == 1));
    }

    /// A download whose bytes do not match the CRC32C S3 stored (a
    /// corrupted object) is never marked done: the object fits the
    /// in-memory window, so it is verified before anything is sent; it is
    /// read again on the next attempts and quarantined on the third, with
    /// the reason, having sent nothing.
    #[tokio::test]
    async fn an_object_failing_its_checksum_sends_nothing_and_is_quarantined_after_three_reads() {
        let (store, obj) = object().await;
        store.corrupt_reads_of(KEY);
        let queue = FakeQueue::default();
        for reads in 1..3 {
            let err = app(&store, queue.clone())
                .process_object(&obj)
                .await
                .unwrap_err();
            assert!(
                matches!(err.failure, Failure::Checksum { reads: r, sent: 0, .. } if r == reads),
                "{err}"
            );
            assert!(err.to_string().contains("CRC32C"), "{err}");
            let done = StateKeys::new("state/", "raw/", KEY).done;
            assert_eq!(store.bytes(&done), None, "never marked done on bad bytes");
        }
        let outcome = app(&store, queue.clone())
            .process_object(&obj)
            .await
            .unwrap();
        let Outcome::Quarantined { reason } = outcome else {
            panic!("{outcome:?}")
        };
        assert!(reason.contains("on 3 reads"), "{reason}");
        assert!(queue.bodies().is_empty(), "nothing was sent");
        assert_eq!(marker(&store).outcome, "quarantined");
    }

    /// Writing the reject report fails after every chunk was sent: the
    /// attempt fails with its lease released, not kept for its TTL, so
    /// another processor finishes the object at once, sending nothing again.
    #[tokio::test]
    async fn a_failure_while_settling_releases_the_lease_at_once() {
        let (store, obj) = object_of("{\"id\":1}\nnot json\n{\"id\":2}\n").await;
        store.fail_on("PutObject", "state/rejects/", Fault::Unavailable);
        let queue = FakeQueue::default();
        let err = app(&store, queue.clone())
            .process_object(&obj)
            .await
            .unwrap_err();
        assert!(matches!(err.failure, Failure::S3(_)), "{err}");
        let outcome = app(&store, queue.clone())
            .process_object(&obj)
            .await
            .expect("not busy: the failed attempt released its lease");
        assert!(
            matches!(outcome, Outcome::Sent { records: 2, .. }),
            "{outcome:?}"
        );
        assert_eq!(queue.bodies().len(), 1, "the chunk was not sent again");
    }

    /// A batch stored but its answer lost: the attempt fails with the lease
    /// released, and the retry resends only what was not recorded.
    #[tokio::test]
    async fn a_lost_send_answer_is_retried_at_once_without_waiting_for_the_lease() {
        let (store, obj) = object().await;
        let queue = FakeQueue::scripted(&[SendFault::None, SendFault::LoseAnswer]);
        let err = app(&store, queue.clone())
            .process_object(&obj)
            .await
            .unwrap_err();
        assert!(matches!(err.failure, Failure::Queue(_)), "{err}");
        let outcome = app(&store, queue.clone())
            .process_object(&obj)
            .await
            .unwrap();
        assert!(matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");
        assert_eq!(delivered(&queue).len(), RECORDS);
    }

    /// Processors racing on one object: exactly one sends it, the others
    /// wait or find it done, and every record arrives once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_processors_send_each_record_once() {
        let (store, obj) = object().await;
        let queue = FakeQueue::default().slow(Duration::from_millis(2));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (app, obj) = (app(&store, queue.clone()), obj.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    match app.process_object(&obj).await {
                        Err(ProcessError {
                            failure: Failure::Busy { .. },
                            ..
                        }) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        other => return other.unwrap(),
                    }
                }
            }));
        }
        let mut sent = 0;
        for t in tasks {
            match t.await.unwrap() {
                Outcome::Sent { .. } => sent += 1,
                Outcome::Duplicate => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(sent, 1);
        assert!(delivered(&queue).values().all(|n| *n == 1));
        assert_eq!(delivered(&queue).len(), RECORDS);
    }

    /// A canary (a heartbeat object on the data's path) goes through the
    /// once-only protocol like any object, projected to its own fields, to
    /// the canary queue and never to the consumers'; with no canary queue it
    /// is processed and nothing is sent. A data object beside it is untouched.
    #[tokio::test]
    async fn canaries_go_to_the_canary_queue_never_to_the_consumers() {
        let canary_key = "raw/edge-1/2026/11/27/22/1795816800123.canary.json.zst";
        let record = r#"{"source":"edge-1","seq":7,"created_ms":1795816800123}"#;
        let (store, data) = object_of("{\"id\":1,\"x\":2}\n").await;
        put_text(&store, canary_key, &format!("{record}\n")).await;
        let canary = ObjectRef {
            key: canary_key.into(),
            ..data.clone()
        };
        let (output, canaries) = (FakeQueue::default(), FakeQueue::default());
        let relay = app(&store, output.clone()).with_canary_queue(canaries.clone());
        for obj in [&canary, &data] {
            let outcome = relay.process_object(obj).await.unwrap();
            assert!(
                matches!(
                    outcome,
                    Outcome::Sent {
                        records: 1,
                        rejected: 0,
                        ..
                    }
                ),
                "{outcome:?}"
            );
        }
        assert_eq!(canaries.bodies(), [record.as_bytes().to_vec()]);
        assert_eq!(output.bodies(), [b"{\"id\":1}".to_vec()]);
        // Once only, as for data: a second event finds the done marker.
        assert_eq!(
            relay.process_object(&canary).await.unwrap(),
            Outcome::Duplicate
        );
        assert_eq!(canaries.bodies().len(), 1);

        // No canary queue: processed, marked done, nothing sent anywhere.
        let (store, data) = object_of("{\"id\":1}\n").await;
        put_text(&store, canary_key, &format!("{record}\n")).await;
        let output = FakeQueue::default();
        let quiet = app(&store, output.clone());
        let canary = ObjectRef {
            key: canary_key.into(),
            ..data
        };
        let outcome = quiet.process_object(&canary).await.unwrap();
        assert!(
            matches!(outcome, Outcome::Sent { records: 1, .. }),
            "{outcome:?}"
        );
        assert!(output.bodies().is_empty());
        assert_eq!(
            quiet.process_object(&canary).await.unwrap(),
            Outcome::Duplicate
        );
    }

    /// Records too large for a message go to S3 under deterministic keys,
    /// and a crash between the payload write and the send reuses the
    /// payload on resume: one object per record, every record delivered.
    #[tokio::test]
    async fn large_records_are_offloaded_once_across_a_crash() {
        let mut text = String::from("# junk\n");
        let mut large = Vec::new();
        for i in 0..400 {
            let blob = if i % 40 == 0 {
                "y".repeat(3000)
            } else {
                String::new()
            };
            if !blob.is_empty() {
                large.push(format!("{{\"id\":{i},\"blob\":\"{blob}\"}}"));
            }
            text.push_str(&format!("{{\"id\":{i},\"blob\":\"{blob}\",\"n\":1}}\n"));
        }
        let (store, obj) = object_of(&text).await;
        let queue = FakeQueue::default();
        crash_after(&store, &obj, &queue, "id,blob", 1).await;
        past_the_lease(&store);
        let outcome = app_with(&store, queue.clone(), "id,blob")
            .process_object(&obj)
            .await
            .unwrap();
        assert!(
            matches!(outcome, Outcome::Sent { records: 400, .. }),
            "{outcome:?}"
        );
        let payloads = store.list("payloads/", 1000).await.unwrap();
        assert_eq!(
            payloads.len(),
            large.len(),
            "one payload object per large record"
        );
        let mut stored: Vec<Vec<u8>> = payloads
            .iter()
            .map(|l| store.bytes(&l.key).unwrap())
            .collect();
        stored.sort();
        let mut want: Vec<Vec<u8>> = large.iter().map(|r| r.as_bytes().to_vec()).collect();
        want.sort();
        assert_eq!(
            stored, want,
            "each payload is its record's exact projection"
        );
        let seen = delivered_via(&store, &queue);
        assert_eq!(seen.len(), 400, "every record reached the consumer");
        assert_eq!(marker(&store).offloaded, large.len() as u64);
    }

    /// Records over the 1 MiB window are checked and projected as they
    /// stream, and their payloads stored from spools (the 9 MB one in parts):
    /// byte for byte the projection, once each across a crash, with no
    /// upload left open. A payload key holding other bytes fails the object.
    #[tokio::test]
    async fn records_over_the_window_are_offloaded_from_spools_once_across_a_crash() {
        let big = |i: usize, n: usize| {
            let blob = format!("{}\\n\\u00e9", "é".repeat(n));
            (
                format!("{{\"id\":{i},\"skip\":[{{}}],\"blob\":\"{blob}\"}}\n"),
                format!("{{\"id\":{i},\"blob\":\"{blob}\"}}"),
            )
        };
        let (one, one_out) = big(1, 750_000);
        let (three, three_out) = big(3, 4_600_000);
        let text = format!("# junk\n{{\"id\":0}}\n{one}{{\"id\":2}}\n{three}{{\"id\":4}}\n");
        let (store, obj) = object_of(&text).await;
        let queue = FakeQueue::default();
        crash_after(&store, &obj, &queue, "id,blob", 1).await;
        past_the_lease(&store);
        let app = app_with(&store, queue.clone(), "id,blob");
        let outcome = app.process_object(&obj).await.unwrap();
        assert!(
            matches!(
                outcome,
                Outcome::Sent {
                    records: 5,
                    rejected: 0,
                    ..
                }
            ),
            "{outcome:?}"
        );
        let payloads = store.list("payloads/", 10).await.unwrap();
        let mut stored: Vec<Vec<u8>> = payloads
            .iter()
            .map(|l| store.bytes(&l.key).unwrap())
            .collect();
        stored.sort_by_key(Vec::len);
        assert!(
            stored == [one_out.into_bytes(), three_out.into_bytes()],
            "each payload is its record's exact projection"
        );
        assert_eq!(store.open_uploads(), 0, "no multipart upload left open");
        assert_eq!(delivered_via(&store, &queue).len(), 5);
        assert_eq!(marker(&store).offloaded, 2);

        let key = payloads.iter().max_by_key(|l| l.size).unwrap().key.clone();
        put_other_bytes_and_forget_done(&store, &key).await;
        let err = app.process_object(&obj).await.unwrap_err();
        assert!(err.to_string().contains(&key), "{err}");
        assert_eq!(store.bytes(&key), Some(b"other".to_vec()));
    }

    /// A payload key that holds other bytes is never overwritten, and the
    /// object fails with the key named, its lease released.
    #[tokio::test]
    async fn a_payload_key_holding_other_bytes_fails_the_object() {
        let text = format!("{{\"id\":1,\"blob\":\"{}\"}}\n", "z".repeat(3000));
        let (store, obj) = object_of(&text).await;
        let queue = FakeQueue::default();
        let app = app_with(&store, queue.clone(), "id,blob");
        // Learn the key from a first run, then put other bytes there.
        app.process_object(&obj).await.unwrap();
        let key = store.list("payloads/", 10).await.unwrap().remove(0).key;
        put_other_bytes_and_forget_done(&store, &key).await;
        let err = app.process_object(&obj).await.unwrap_err();
        assert!(
            matches!(&err.failure, Failure::Payload(_)) && err.to_string().contains(&key),
            "{err}"
        );
        assert_eq!(store.bytes(&key), Some(b"other".to_vec()));
        // Released, not left to expire: a retry meets the same clash at once.
        let again = app.process_object(&obj).await.unwrap_err();
        assert!(matches!(again.failure, Failure::Payload(_)), "{again}");
    }

    /// An object that is gone is not an error, and leaves no lease behind.
    #[tokio::test]
    async fn a_missing_object_is_counted_missing_and_leaves_no_lease() {
        let (store, obj) = object().await;
        store.delete(KEY, None).await.unwrap();
        let outcome = app(&store, FakeQueue::default())
            .process_object(&obj)
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Missing);
        assert_eq!(store.keys(), Vec::<String>::new());
    }

    /// An object the release before trace contexts left half-sent (its
    /// lease has that release's fingerprint and no positions) is finished
    /// under that release's plan, chunk for chunk: every record once.
    #[tokio::test]
    async fn an_object_the_untraced_release_left_half_sent_is_finished_under_its_plan() {
        let (store, obj) = object().await;
        let queue = FakeQueue::default();
        let app = app(&store, queue.clone());
        let old = app.plan(&obj).untraced(&app.config, &app.protocol);
        assert_ne!(old.fingerprint, app.plan(&obj).fingerprint);
        // What the old release sent: its first chunk, under its settings.
        let raw = store.bytes(KEY).unwrap();
        let mut before = Vec::new();
        crate::pipeline::run(&raw[..], &old.settings, |c| {
            before.push(c);
            ControlFlow::Continue(())
        })
        .unwrap();
        let lease = StateKeys::new("state/", "raw/", KEY).lease;
        let left = format!(
            "{{\"owner\":\"old\",\"expires_at_ms\":0,\"ttl_ms\":0,\"fingerprint\":\"{}\",\"next_chunk\":1}}",
            old.fingerprint
        );
        store.insert(&lease, left.as_bytes());
        let outcome = app.process_object(&obj).await.unwrap();
        assert!(matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");
        let mut seen = delivered(&queue);
        for line in before[0].body.split(|b| *b == b'\n') {
            let v: Value = serde_json::from_slice(line).unwrap();
            *seen.entry(v["id"].as_u64().unwrap()).or_default() += 1;
        }
        assert_eq!(seen.len(), RECORDS);
        assert!(seen.values().all(|n| *n == 1), "every record once");
        assert_eq!(
            queue.counts().keys().next(),
            Some(&1),
            "from the old plan's chunk 1"
        );
        assert_eq!(marker(&store).fingerprint, old.fingerprint);
    }
}
