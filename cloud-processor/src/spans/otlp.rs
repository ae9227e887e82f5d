//! OTLP's trace messages in protobuf (`opentelemetry/proto/trace/v1/trace.proto`
//! and its `common` and `resource` imports, the fields the processor sets),
//! and one export request built from finished spans. Pure: no I/O.
//! `tests/otlp.rs` decodes what this encodes with opentelemetry-proto's
//! own Python classes.

use prost::Message;

use crate::spans::collect::{Finished, Value};

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
    /// W3C trace flags: bit 0 is "sampled".
    #[prost(fixed32, tag = "16")]
    pub flags: u32,
}

/// `Span.SpanKind`.
pub const KIND_INTERNAL: i32 = 1;
/// A span that hands messages to a queue (`Span.SpanKind.PRODUCER`).
pub const KIND_PRODUCER: i32 = 4;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(string, tag = "2")]
    pub message: String,
    /// 0 unset, 1 ok, 2 error.
    #[prost(int32, tag = "3")]
    pub code: i32,
}

/// `Status.StatusCode.STATUS_CODE_ERROR`.
pub const STATUS_ERROR: i32 = 2;

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4")]
    pub value: Option<any_value::Value>,
}

pub mod any_value {
    /// `AnyValue.value`: `string_value`, `bool_value`, `int_value`,
    /// `double_value` (the kinds a span field can be).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        Text(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
        #[prost(double, tag = "4")]
        Double(f64),
    }
}

/// The instrumentation scope every span is reported under.
pub const SCOPE: &str = "relay.cloud-processor";

/// One export request: `spans` under a resource named `service_name`.
pub fn request(service_name: &str, spans: &[Finished]) -> Vec<u8> {
    let resource = Resource {
        attributes: vec![key_value(
            "service.name",
            &Value::Text(service_name.to_owned()),
        )],
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: SCOPE.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                }),
                spans: spans.iter().map(span).collect(),
            }],
        }],
    }
    .encode_to_vec()
}

fn span(f: &Finished) -> Span {
    Span {
        trace_id: f.trace_id.to_be_bytes().to_vec(),
        span_id: f.span_id.to_be_bytes().to_vec(),
        parent_span_id: f
            .parent_id
            .map(|p| p.to_be_bytes().to_vec())
            .unwrap_or_default(),
        name: f.name.to_owned(),
        kind: if f.producer {
            KIND_PRODUCER
        } else {
            KIND_INTERNAL
        },
        start_time_unix_nano: f.start_unix_nano,
        end_time_unix_nano: f.end_unix_nano,
        attributes: f.attributes.iter().map(|(k, v)| key_value(k, v)).collect(),
        status: f.error.as_ref().map(|message| Status {
            message: message.clone(),
            code: STATUS_ERROR,
        }),
        flags: u32::from(f.sampled),
    }
}

fn key_value(key: &str, value: &Value) -> KeyValue {
    use any_value::Value as V;
    let value = match value {
        Value::Text(s) => V::Text(s.clone()),
        Value::Bool(b) => V::Bool(*b),
        Value::Int(i) => V::Int(*i),
        Value::Float(f) => V::Double(*f),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn finished() -> Finished {
        Finished {
            name: "send_message_batch",
            trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
            span_id: 0x00f0_67aa_0ba9_02b7,
            parent_id: Some(7),
            sampled: true,
            producer: true,
            start_unix_nano: 1,
            end_unix_nano: 2,
            attributes: vec![
                ("messages".to_owned(), Value::Int(10)),
                ("queue".to_owned(), Value::Text("q".to_owned())),
            ],
            error: Some("throttled".to_owned()),
        }
    }

    #[test]
    fn a_span_round_trips_with_its_ids_big_endian() {
        let bytes = request("svc", &[finished()]);
        let back = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let rs = &back.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes[0].key,
            "service.name"
        );
        let s = &rs.scope_spans[0].spans[0];
        assert_eq!(hex::encode(&s.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(&s.span_id), "00f067aa0ba902b7");
        assert_eq!(hex::encode(&s.parent_span_id), "0000000000000007");
        assert_eq!((s.kind, s.flags), (KIND_PRODUCER, 1));
        assert_eq!(s.status.as_ref().unwrap().code, STATUS_ERROR);
        assert_eq!(s.attributes.len(), 2);
    }

    #[test]
    fn a_root_span_has_no_parent_bytes() {
        let f = Finished {
            parent_id: None,
            ..finished()
        };
        let bytes = request("svc", &[f]);
        let back = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        assert!(
            back.resource_spans[0].scope_spans[0].spans[0]
                .parent_span_id
                .is_empty()
        );
    }
}
