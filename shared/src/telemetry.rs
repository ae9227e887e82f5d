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

/// Installs the global subscriber. `RUST_LOG` overrides `default_filter`.
/// Errors only if a subscriber is already installed.
pub fn init_tracing(format: LogFormat, default_filter: &str) -> Result<(), String> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    result.map_err(|e| e.to_string())
}

/// A health check for `/healthz`: `Err(reason)` answers 503 with the reason.
pub type HealthCheck = std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

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

/// Installs the global Prometheus recorder (histogram buckets per metric
/// name) and serves `/metrics` and `/healthz` on `addr`. Returns the bound
/// address. Call once per process, from inside a Tokio runtime.
pub async fn serve_metrics(
    addr: std::net::SocketAddr,
    buckets: &[(&str, &[f64])],
    health: HealthCheck,
) -> Result<std::net::SocketAddr, MetricsError> {
    use axum::http::StatusCode;
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
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route(
            "/healthz",
            get(move || {
                std::future::ready(match health() {
                    Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
                    Err(reason) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("unhealthy: {reason}\n"),
                    ),
                })
            }),
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
