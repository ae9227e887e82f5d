//! The process's one exporter: the layer that feeds it, installed once
//! with the global subscriber, and the flush that empties it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::metrics as m;
use crate::spans::collect;
use crate::spans::export::{self, SettingsError};

/// The exporter the layer feeds, once installed.
struct Exporter {
    settings: export::Settings,
    buffer: export::Buffer,
    /// Whether the last flush failed: an outage is logged once, not per flush.
    failing: AtomicBool,
}

static INSTALLED: OnceLock<Arc<Exporter>> = OnceLock::new();

/// The layer that exports the processor's spans, if the environment names
/// an OTLP endpoint; an error names the variable that cannot be used.
/// Installs the exporter [`flush`] sends through (the first call's only).
pub fn layer_from_env<S>() -> Result<Option<impl Layer<S>>, SettingsError>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let vars: HashMap<String, String> = std::env::vars().collect();
    let Some(settings) = export::Settings::from_vars(&vars)? else {
        return Ok(None);
    };
    let exporter = Arc::new(Exporter {
        settings,
        buffer: export::Buffer::default(),
        failing: AtomicBool::new(false),
    });
    let exporter = INSTALLED.get_or_init(|| exporter).clone();
    let sink = move |spans, too_many: usize| {
        let full = exporter.buffer.push(spans);
        dropped("too_many_children", too_many);
        dropped("buffer_full", full);
    };
    let wanted = tracing_subscriber::filter::filter_fn(collect::wanted);
    Ok(Some(collect::ObjectSpans::new(sink).with_filter(wanted)))
}

/// Sends the spans buffered so far, if an exporter is installed. A failure
/// drops them, logged (once per outage) and counted.
pub async fn flush() {
    let Some(exporter) = INSTALLED.get() else {
        return;
    };
    let spans = exporter.buffer.take();
    if spans.is_empty() {
        return;
    }
    match export::send(&exporter.settings, &spans).await {
        Ok(()) => {
            metrics::counter!(m::SPANS_EXPORTED).increment(spans.len() as u64);
            if exporter.failing.swap(false, Ordering::Relaxed) {
                tracing::info!("exporting spans again");
            }
        }
        Err(e) => {
            dropped("export_failed", spans.len());
            let endpoint = exporter.settings.endpoint.to_string();
            if exporter.failing.swap(true, Ordering::Relaxed) {
                tracing::debug!(error = %e, endpoint, "exporting spans failed again");
            } else {
                tracing::warn!(error = %e, endpoint, spans = spans.len(), "exporting spans failed; they are dropped (no record is)");
            }
        }
    }
}

fn dropped(reason: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!(m::SPANS_DROPPED, "reason" => reason).increment(n as u64);
    }
}
