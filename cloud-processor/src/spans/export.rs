//! Sending finished spans to an OTLP collector: the settings OpenTelemetry's
//! `OTEL_EXPORTER_OTLP_*` variables give, a bounded buffer, and one POST of
//! everything buffered per flush (OTLP over HTTP, protobuf).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper_util::rt::TokioIo;

use crate::spans::collect::Finished;
use crate::spans::otlp;

/// Spans kept between flushes at most; more are dropped and counted.
pub const MAX_BUFFERED_SPANS: usize = 16_384;

/// Why the OTLP settings cannot be used: the binary exits 2 naming them.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{name}={value:?}: the processor exports OTLP over http/protobuf only")]
    Protocol { name: &'static str, value: String },
    #[error(
        "{name}={value:?}: not an http:// URL (the processor sends over plain HTTP to a collector beside it, such as the ADOT Lambda layer's on http://localhost:4318)"
    )]
    Endpoint { name: &'static str, value: String },
    #[error("{name}={value:?}: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// Where and how spans are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub endpoint: Uri,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub service_name: String,
}

impl Settings {
    /// From the OpenTelemetry variables in `env`; `None` when no endpoint
    /// is set or `OTEL_SDK_DISABLED=true`. The per-signal (`TRACES_`)
    /// variables win over the general ones, as the specification says.
    pub fn from_vars(env: &HashMap<String, String>) -> Result<Option<Self>, SettingsError> {
        let get = |name: &'static str| {
            env.get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| (name, v.to_owned()))
        };
        if get("OTEL_SDK_DISABLED").is_some_and(|(_, v)| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        // (variable, its value, the URL it gives)
        let endpoint = match get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some((name, v)) => (name, v.clone(), v),
            None => match get("OTEL_EXPORTER_OTLP_ENDPOINT") {
                Some((name, v)) => {
                    let url = format!("{}/v1/traces", v.trim_end_matches('/'));
                    (name, v, url)
                }
                None => return Ok(None),
            },
        };
        let protocol = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some((name, value)) = protocol
            && value != "http/protobuf"
        {
            return Err(SettingsError::Protocol { name, value });
        }
        let headers = get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
            .or_else(|| get("OTEL_EXPORTER_OTLP_HEADERS"))
            .map(|(name, v)| parse_headers(name, &v))
            .transpose()?
            .unwrap_or_default();
        let timeout = match get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .or_else(|| get("OTEL_EXPORTER_OTLP_TIMEOUT"))
        {
            None => Duration::from_secs(10),
            Some((name, value)) => match value.parse::<u64>() {
                Ok(ms) => Duration::from_millis(ms),
                Err(_) => {
                    let reason = "not a whole number of milliseconds";
                    return Err(SettingsError::Invalid {
                        name,
                        value,
                        reason,
                    });
                }
            },
        };
        Ok(Some(Self {
            endpoint: http_uri(endpoint)?,
            headers,
            timeout,
            service_name: get("OTEL_SERVICE_NAME")
                .map_or_else(|| "cloud-processor".to_owned(), |(_, v)| v),
        }))
    }
}

fn http_uri((name, value, url): (&'static str, String, String)) -> Result<Uri, SettingsError> {
    let uri: Uri = url.parse().map_err(|_| SettingsError::Endpoint {
        name,
        value: value.clone(),
    })?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(SettingsError::Endpoint { name, value });
    }
    Ok(uri)
}

/// `key=value` pairs, comma-separated, values percent-encoded (W3C Baggage).
fn parse_headers(name: &'static str, value: &str) -> Result<Vec<(String, String)>, SettingsError> {
    value
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').ok_or(SettingsError::Invalid {
                name,
                value: value.to_owned(),
                reason: "each header is key=value",
            })?;
            let v = percent_encoding::percent_decode_str(v.trim()).decode_utf8_lossy();
            Ok((k.trim().to_owned(), v.into_owned()))
        })
        .collect()
}

/// Why a flush sent nothing: its spans are dropped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("connecting to {0} failed: {1}")]
    Connect(String, std::io::Error),
    #[error("the OTLP request failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the collector answered {0}")]
    Status(hyper::StatusCode),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the request could not be built: {0}")]
    Request(#[from] hyper::http::Error),
}

/// Finished spans waiting for the next flush.
#[derive(Debug, Default)]
pub struct Buffer {
    spans: Mutex<Vec<Finished>>,
}

impl Buffer {
    /// Keeps `spans`; returns how many did not fit.
    pub fn push(&self, spans: Vec<Finished>) -> usize {
        let mut kept = self
            .spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let room = MAX_BUFFERED_SPANS.saturating_sub(kept.len());
        let over = spans.len().saturating_sub(room);
        kept.extend(spans.into_iter().take(room));
        over
    }

    pub fn take(&self) -> Vec<Finished> {
        std::mem::take(
            &mut *self
                .spans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Sends `spans` in one request, within the settings' timeout.
pub async fn send(settings: &Settings, spans: &[Finished]) -> Result<(), ExportError> {
    let body = otlp::request(&settings.service_name, spans);
    tokio::time::timeout(settings.timeout, post(settings, body))
        .await
        .map_err(|_| ExportError::Timeout(settings.timeout))?
}

async fn post(settings: &Settings, body: Vec<u8>) -> Result<(), ExportError> {
    let uri = &settings.endpoint;
    let host = uri.host().unwrap_or("localhost");
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| ExportError::Connect(format!("{host}:{port}"), e))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = hyper::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            hyper::header::HOST,
            uri.authority().map_or(host, |a| a.as_str()),
        )
        .header(hyper::header::CONTENT_TYPE, "application/x-protobuf");
    for (k, v) in &settings.headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let answer = sender
        .send_request(request.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = answer.status();
    // Read the answer through, so the connection closes cleanly.
    let _ = answer.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(ExportError::Status(status))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint_or_when_disabled() {
        assert_eq!(Settings::from_vars(&vars(&[])), Ok(None));
        let disabled = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ]);
        assert_eq!(Settings::from_vars(&disabled), Ok(None));
    }

    #[test]
    fn the_general_endpoint_gets_the_traces_path_and_the_traces_one_is_used_as_is() {
        let s = Settings::from_vars(&vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]))
            .unwrap()
            .unwrap();
        assert_eq!(s.endpoint.to_string(), "http://c:4318/v1/traces");
        assert_eq!(
            (s.timeout, s.service_name.as_str()),
            (Duration::from_secs(10), "cloud-processor")
        );
        let s = Settings::from_vars(&vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://d:9/x"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key=s%20t, b = 2"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "250"),
            ("OTEL_SERVICE_NAME", "relay"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint.to_string(), "http://d:9/x");
        assert_eq!(
            s.headers,
            [("api-key".into(), "s t".into()), ("b".into(), "2".into())]
        );
        assert_eq!(
            (s.timeout, s.service_name.as_str()),
            (Duration::from_millis(250), "relay")
        );
    }

    #[test]
    fn what_cannot_be_sent_is_refused_naming_the_variable() {
        let refused =
            |pairs: &[(&str, &str)]| Settings::from_vars(&vars(pairs)).unwrap_err().to_string();
        let e = refused(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")]);
        assert!(
            e.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT=\"https://c:4318\": not an http:// URL"),
            "{e}"
        );
        let e = refused(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        assert!(e.contains("OTEL_EXPORTER_OTLP_PROTOCOL=\"grpc\": the processor exports OTLP over http/protobuf only"), "{e}");
        let e = refused(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
        ]);
        assert!(e.contains("OTEL_EXPORTER_OTLP_TIMEOUT=\"10s\""), "{e}");
        let e = refused(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
        ]);
        assert!(e.contains("each header is key=value"), "{e}");
    }

    #[test]
    fn the_buffer_keeps_what_fits_and_counts_the_rest() {
        let b = Buffer::default();
        let span = crate::spans::collect::Finished {
            name: "x",
            trace_id: 1,
            span_id: 1,
            parent_id: None,
            sampled: true,
            producer: false,
            start_unix_nano: 0,
            end_unix_nano: 0,
            attributes: Vec::new(),
            error: None,
        };
        assert_eq!(b.push(vec![span.clone(); MAX_BUFFERED_SPANS - 1]), 0);
        assert_eq!(b.push(vec![span; 3]), 2);
        assert_eq!(b.take().len(), MAX_BUFFERED_SPANS);
        assert!(b.take().is_empty());
    }
}
