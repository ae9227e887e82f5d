//! One file followed end to end: the W3C trace context (`traceparent`) the
//! edge agent gives each file and stores with its object, which the
//! processor continues onto every SQS message it sends for the file (as
//! `traceparent` and as X-Ray's `AWSTraceHeader`) and into the done marker
//! and its log lines. Pure: formatting and parsing only.

use std::fmt;

/// A W3C trace context: the trace, the span that is the parent of the
/// next one, and whether it is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// Never 0 (W3C: an all-zero trace id is invalid).
    pub trace_id: u128,
    /// Never 0.
    pub parent_id: u64,
    pub sampled: bool,
}

impl TraceContext {
    /// A sampled context, or `None` for an id W3C calls invalid (zero).
    pub fn new(trace_id: u128, parent_id: u64) -> Option<Self> {
        (trace_id != 0 && parent_id != 0).then_some(Self {
            trace_id,
            parent_id,
            sampled: true,
        })
    }

    /// Parses a `traceparent` header value (version 00, or a later version's
    /// first four fields, as W3C asks); `None` if it is not one.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| {
            s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        if !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        let context = Self::new(
            u128::from_str_radix(trace, 16).ok()?,
            u64::from_str_radix(parent, 16).ok()?,
        )?;
        Some(Self {
            sampled: flags & 1 == 1,
            ..context
        })
    }

    /// The same trace with `span_id` as the parent of what follows: the
    /// context a span passes on.
    pub fn child(self, span_id: u64) -> Self {
        Self {
            parent_id: span_id.max(1),
            ..self
        }
    }

    /// The trace id as W3C writes it: 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The `AWSTraceHeader` X-Ray reads (and Lambda passes on from SQS): the
    /// W3C trace id split as X-Ray's root (`1-` 8 hex digits, `-` 24).
    pub fn xray_header(&self) -> String {
        let id = self.trace_id_hex();
        format!(
            "Root=1-{}-{};Parent={:016x};Sampled={}",
            &id[..8],
            &id[8..],
            self.parent_id,
            u8::from(self.sampled)
        )
    }
}

/// The `traceparent` header value.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.parent_id,
            u8::from(self.sampled)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_w3c_example_parses_and_prints_back() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceContext::parse(v).unwrap();
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id, 0x00f0_67aa_0ba9_02b7);
        assert!(t.sampled);
        assert_eq!(t.to_string(), v);
        assert_eq!(
            t.xray_header(),
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"
        );
    }

    #[test]
    fn invalid_values_are_refused() {
        for v in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert_eq!(TraceContext::parse(v), None, "{v}");
        }
        // A later version may add fields; its first four are read.
        assert!(
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")
                .is_some_and(|t| !t.sampled)
        );
    }

    proptest! {
        #[test]
        fn every_context_round_trips(trace in 1u128.., parent in 1u64.., sampled in any::<bool>()) {
            let t = TraceContext { trace_id: trace, parent_id: parent, sampled };
            prop_assert_eq!(TraceContext::parse(&t.to_string()), Some(t));
            let x = t.xray_header();
            prop_assert_eq!(x.len(), "Root=1-".len() + 8 + 1 + 24 + ";Parent=".len() + 16 + ";Sampled=1".len());
        }

        #[test]
        fn no_text_panics_the_parser(s in ".{0,80}") {
            let _ = TraceContext::parse(&s);
        }
    }
}
