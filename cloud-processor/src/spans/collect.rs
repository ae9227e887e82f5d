//! A tracing layer that turns each object's spans into finished OTLP spans
//! under the file's trace. The `object` span is the root; the spans opened
//! inside it (claim, download, pipeline, each SendMessageBatch) are its
//! children. The file's trace is known only once the object's metadata is
//! read, after the claim, so children are kept on the root until it closes
//! and handed on together then. An object stored without a trace context
//! exports nothing.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use relay_shared::trace::TraceContext;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The root span, one per object attempt.
pub const ROOT: &str = "object";
/// Spans that hand messages to SQS (OTLP's PRODUCER kind).
pub const PRODUCERS: [&str; 1] = ["send_message_batch"];
/// Fields the root records that make its context, not attributes: the
/// context the edge agent stored (`traceparent`) and the processor's own
/// span id (`span_id`, 16 hex digits), which every message names as its
/// parent.
pub const TRACEPARENT_FIELD: &str = "traceparent";
pub const SPAN_ID_FIELD: &str = "span_id";
/// A field whose value makes the span's status an error.
pub const ERROR_FIELD: &str = "error";
/// Children kept per root at most: an object's sends beyond it are not
/// exported (and counted), so memory stays bounded however long it is.
pub const MAX_CHILDREN: usize = 4096;

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Bool(bool),
    Int(i64),
    Float(f64),
}

/// One span, finished, ready to export.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub name: &'static str,
    pub trace_id: u128,
    pub span_id: u64,
    /// `None` for a span with no parent in the trace.
    pub parent_id: Option<u64>,
    pub sampled: bool,
    pub producer: bool,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: Vec<(String, Value)>,
    pub error: Option<String>,
}

/// The layer. `sink` receives each object's spans when its root closes,
/// and the count of spans it could not keep.
pub struct ObjectSpans<F> {
    sink: F,
}

impl<F: Fn(Vec<Finished>, usize) + Send + Sync + 'static> ObjectSpans<F> {
    pub fn new(sink: F) -> Self {
        Self { sink }
    }
}

/// Whether the layer wants a callsite: the processor's own spans.
pub fn wanted(meta: &Metadata<'_>) -> bool {
    meta.is_span() && meta.target().starts_with("cloud_processor")
}

/// What the layer keeps on an open span.
struct Open {
    /// The root's id, for a child.
    root: Option<Id>,
    span: Finished,
    /// On the root: the context the agent stored, its children so far and
    /// how many more there were.
    incoming: Option<TraceContext>,
    children: Vec<Finished>,
    dropped: usize,
}

impl<S, F> tracing_subscriber::Layer<S> for ObjectSpans<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    F: Fn(Vec<Finished>, usize) + Send + Sync + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let name = attrs.metadata().name();
        let root = if name == ROOT {
            None
        } else {
            // The nearest open ancestor this layer keeps, and its root.
            let Some((root, parent)) = span.scope().skip(1).find_map(|a| {
                let ext = a.extensions();
                let open = ext.get::<Open>()?;
                Some((
                    open.root.clone().unwrap_or_else(|| a.id()),
                    open.span.span_id,
                ))
            }) else {
                return;
            };
            Some((root, parent))
        };
        let mut open = Open {
            root: root.as_ref().map(|(r, _)| r.clone()),
            span: Finished {
                name,
                trace_id: 0,
                // The root's id is the processor's span id, recorded later.
                span_id: if root.is_some() { next_span_id() } else { 0 },
                parent_id: root.and_then(|(_, p)| (p != 0).then_some(p)),
                sampled: true,
                producer: PRODUCERS.contains(&name),
                start_unix_nano: now_unix_nano(),
                end_unix_nano: 0,
                attributes: Vec::new(),
                error: None,
            },
            incoming: None,
            children: Vec::new(),
            dropped: 0,
        };
        attrs.record(&mut Fields(&mut open));
        span.extensions_mut().insert(open);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(open) = span.extensions_mut().get_mut::<Open>()
        {
            values.record(&mut Fields(open));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(mut open) = span.extensions_mut().remove::<Open>() else {
            return;
        };
        open.span.end_unix_nano = now_unix_nano();
        match open.root {
            Some(root) => {
                let Some(root) = ctx.span(&root) else { return };
                let mut ext = root.extensions_mut();
                if let Some(r) = ext.get_mut::<Open>() {
                    if r.children.len() < MAX_CHILDREN {
                        r.children.push(open.span);
                    } else {
                        r.dropped += 1;
                    }
                }
            }
            None => {
                let dropped = open.dropped;
                if let Some(spans) = finish(open) {
                    (self.sink)(spans, dropped);
                }
            }
        }
    }
}

/// The root and its children under the file's trace, or `None` for an
/// object with no trace context (its spans are not exported).
fn finish(open: Open) -> Option<Vec<Finished>> {
    let incoming = open.incoming?;
    let mut root = open.span;
    if root.span_id == 0 {
        root.span_id = next_span_id();
    }
    root.trace_id = incoming.trace_id;
    root.parent_id = Some(incoming.parent_id);
    root.sampled = incoming.sampled;
    let mut spans = Vec::with_capacity(open.children.len() + 1);
    for mut child in open.children {
        child.trace_id = incoming.trace_id;
        child.sampled = incoming.sampled;
        // A child of the root was opened before the root's id was known.
        child.parent_id = Some(child.parent_id.unwrap_or(root.span_id));
        spans.push(child);
    }
    spans.push(root);
    Some(spans)
}

/// Records a span's fields: its context (on the root), its error, and
/// every other field as an attribute.
struct Fields<'a>(&'a mut Open);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let open = &mut *self.0;
        match (field.name(), &value) {
            (TRACEPARENT_FIELD, Value::Text(t)) => open.incoming = TraceContext::parse(t),
            (SPAN_ID_FIELD, Value::Text(t)) => {
                open.span.span_id = u64::from_str_radix(t, 16).unwrap_or(0);
            }
            (ERROR_FIELD, Value::Text(t)) => open.span.error = Some(t.clone()),
            (name, _) => {
                let attributes = &mut open.span.attributes;
                match attributes.iter_mut().find(|(k, _)| k == name) {
                    Some((_, v)) => *v = value,
                    None => attributes.push((name.to_owned(), value)),
                }
            }
        }
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::Text(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Text(value.to_owned()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::Int(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::Int(i64::try_from(value).unwrap_or(i64::MAX)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::Float(value));
    }
}

/// A span id no other span of this process has: a counter, mixed with a
/// seed of the process's start so that two processes differ.
fn next_span_id() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let seed =
        *SEED.get_or_init(|| now_unix_nano() ^ u64::from(std::process::id()).rotate_left(32));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    xxhash_rust::xxh3::xxh3_64_with_seed(&n.to_le_bytes(), seed).max(1)
}

fn now_unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing::info_span;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt;

    const AGENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Runs `f` under the layer and returns every export it made.
    fn collected(f: impl FnOnce()) -> Vec<(Vec<Finished>, usize)> {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let got = got.clone();
            move |spans, dropped| got.lock().unwrap().push((spans, dropped))
        };
        let layer = ObjectSpans::new(sink)
            .with_filter(tracing_subscriber::filter::filter_fn(|m| m.is_span()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, f);
        Arc::try_unwrap(got).unwrap().into_inner().unwrap()
    }

    #[test]
    fn children_opened_before_the_trace_is_known_join_it() {
        let got = collected(|| {
            let root = info_span!(
                "object",
                key = "raw/a",
                traceparent = tracing::field::Empty,
                span_id = tracing::field::Empty
            );
            let _in = root.enter();
            drop(info_span!("claim"));
            root.record(TRACEPARENT_FIELD, AGENT);
            root.record(SPAN_ID_FIELD, "00000000000000aa");
            let send = info_span!("send_message_batch", messages = 10u64);
            let inner = send.in_scope(|| info_span!("inner"));
            drop(inner);
            drop(send);
        });
        assert_eq!(got.len(), 1);
        let (spans, dropped) = &got[0];
        assert_eq!(*dropped, 0);
        let names: Vec<_> = spans.iter().map(|s| s.name).collect();
        assert_eq!(names, ["claim", "inner", "send_message_batch", "object"]);
        let trace = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736;
        assert!(spans.iter().all(|s| s.trace_id == trace && s.sampled));
        let root = &spans[3];
        assert_eq!(
            (root.span_id, root.parent_id),
            (0xaa, Some(0x00f0_67aa_0ba9_02b7))
        );
        assert_eq!(
            root.attributes,
            [("key".to_owned(), Value::Text("raw/a".into()))]
        );
        assert_eq!(
            spans[0].parent_id,
            Some(0xaa),
            "claim, opened before the id"
        );
        assert_eq!(spans[2].parent_id, Some(0xaa));
        assert_eq!(
            spans[1].parent_id,
            Some(spans[2].span_id),
            "inner is the send's"
        );
        assert!(spans[2].producer && !spans[0].producer);
        assert!(spans.iter().all(|s| s.start_unix_nano <= s.end_unix_nano));
    }

    #[test]
    fn an_object_without_a_trace_and_spans_outside_objects_export_nothing() {
        let got = collected(|| {
            drop(info_span!("object", traceparent = "not a context"));
            drop(info_span!("claim"));
        });
        assert!(got.is_empty());
    }

    #[test]
    fn an_error_field_is_the_spans_status_and_children_beyond_the_cap_are_counted() {
        let got = collected(|| {
            let root = info_span!("object", traceparent = AGENT, error = tracing::field::Empty);
            root.in_scope(|| {
                for _ in 0..MAX_CHILDREN + 3 {
                    drop(info_span!("send_message_batch"));
                }
            });
            root.record(ERROR_FIELD, "S3 failed");
        });
        let (spans, dropped) = &got[0];
        assert_eq!((spans.len(), *dropped), (MAX_CHILDREN + 1, 3));
        let root = spans.last().unwrap();
        assert_eq!(root.error.as_deref(), Some("S3 failed"));
        assert_ne!(root.span_id, 0, "a root with no recorded id still gets one");
    }
}
