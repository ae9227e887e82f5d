//! Logging set-up shared by both binaries: one format switch, `RUST_LOG` filters.

use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers and CloudWatch Insights.
    Json,
}

/// Whether to colour text written to stderr: only a terminal, and never
/// with `NO_COLOR` set (<https://no-color.org>).
pub fn stderr_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber. `RUST_LOG` overrides `default_filter`.
/// Errors only if a subscriber is already installed.
pub fn init_tracing(format: LogFormat, default_filter: &str) -> Result<(), String> {
    init_tracing_with(
        format,
        default_filter,
        None::<tracing_subscriber::layer::Identity>,
    )
}

/// As [`init_tracing`], with `extra` beside the log lines: a layer with its
/// own filter (the processor's span export), which `RUST_LOG` does not
/// narrow.
pub fn init_tracing_with<L>(
    format: LogFormat,
    default_filter: &str,
    extra: Option<L>,
) -> Result<(), String>
where
    L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(stderr_colour())
        .with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(extra)
        .with(lines.with_filter(filter))
        .try_init()
        .map_err(|e| e.to_string())
}

/// Reports the error that stops a binary, once: as one JSON log line where
/// logs are JSON (for the shipper), else as one plain line on stderr. Pass
/// an `anyhow::Error` to get its whole chain.
pub fn report_fatal(binary: &str, format: LogFormat, error: &dyn std::fmt::Display) {
    match format {
        LogFormat::Json => tracing::error!(error = format!("{error:#}"), "{binary} stopped"),
        LogFormat::Text => eprintln!("{binary}: {error:#}"),
    }
}

/// Logs the binary's version and its effective settings at start-up, the
/// settings as one JSON object. None of them is a secret: credentials come
/// from the AWS SDK's own sources, never from the relay's settings.
pub fn log_start(binary: &str, settings: &[(&str, String)]) {
    let settings: serde_json::Map<String, serde_json::Value> = settings
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v.clone())))
        .collect();
    let settings = serde_json::Value::Object(settings).to_string();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        settings = %settings,
        "{binary} starting"
    );
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// What `/healthz` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// 200 `ok`, then one line per note (how the process works, not a fault).
    Ok(Vec<String>),
    /// 503 `starting: <what it waits for>`: not ready yet, and not broken
    /// either; it comes up by itself once what it waits for answers.
    Starting(String),
    /// 200 `degraded: <reason>`: working, but not keeping up (a dependency
    /// is failing and work waits); nothing is lost, and a restart would not
    /// help, so a liveness probe passes.
    Degraded(String),
    /// 503 `unhealthy: <reason>`.
    Unhealthy(String),
}

impl Health {
    fn answer(self) -> (axum::http::StatusCode, String) {
        use axum::http::StatusCode;
        match self {
            Self::Ok(notes) => {
                let mut body = "ok\n".to_owned();
                for note in notes {
                    body.push_str(&note);
                    body.push('\n');
                }
                (StatusCode::OK, body)
            }
            Self::Starting(what) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("starting: {what}\n"),
            ),
            Self::Degraded(reason) => (StatusCode::OK, format!("degraded: {reason}\n")),
            Self::Unhealthy(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unhealthy: {reason}\n"),
            ),
        }
    }
}

/// A health check for `/healthz`, run on every request.
pub type HealthCheck = std::sync::Arc<dyn Fn() -> Health + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("installing the Prometheus recorder: {0}")]
    Install(String),
    #[error("binding the metrics address {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The build-info gauge: always 1, with the binary and version as labels.
pub const BUILD_INFO: &str = "relay_build_info";

/// Installs the global Prometheus recorder (histogram buckets per metric
/// name) and serves `/metrics` (with `relay_build_info` and the standard
/// `process_*` metrics), `/healthz`, and `/`, which lists them, on `addr`.
/// Returns the bound address. Call once per process, from inside a Tokio
/// runtime.
pub async fn serve_metrics(
    addr: std::net::SocketAddr,
    binary: &'static str,
    buckets: &[(&str, &[f64])],
    health: HealthCheck,
) -> Result<std::net::SocketAddr, MetricsError> {
    use axum::routing::get;
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

    let install = |e: metrics_exporter_prometheus::BuildError| MetricsError::Install(e.to_string());
    let mut builder = PrometheusBuilder::new();
    for (name, b) in buckets {
        builder = builder
            .set_buckets_for_metric(Matcher::Full((*name).to_owned()), b)
            .map_err(install)?;
    }
    let handle = builder.install_recorder().map_err(install)?;
    metrics::describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels name the binary and its version"
    );
    metrics::gauge!(BUILD_INFO, "binary" => binary, "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
    let process = metrics_process::Collector::default();
    process.describe();
    process.collect();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let index = format!(
        "{binary} {}\n\n/metrics  Prometheus metrics\n/healthz  200 when healthy, else 503 and why\n",
        env!("CARGO_PKG_VERSION")
    );
    let app = axum::Router::new()
        .route("/", get(move || std::future::ready(index.clone())))
        .route(
            "/metrics",
            get(move || {
                process.collect();
                std::future::ready(handle.render())
            }),
        )
        .route(
            "/healthz",
            get(move || std::future::ready(health().answer())),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsError::Bind { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}
