//! W3C trace context (`traceparent`, version 00): parsed from HTTP and Kafka headers,
//! continued by every hop so one trace id follows a write from the client through the
//! home region, the outbox and the Kafka topic into each replica.

use rand::Rng;

/// A W3C trace context (`traceparent` header, version 00).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub span_id: String,
    pub flags: String,
}

impl TraceParent {
    pub fn parse(header: &str) -> Option<TraceParent> {
        let mut parts = header.trim().split('-');
        let (version, trace_id, span_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let valid = version == "00"
            && parts.next().is_none()
            && hex(trace_id, 32)
            && hex(span_id, 16)
            && hex(flags, 2)
            && trace_id.bytes().any(|b| b != b'0')
            && span_id.bytes().any(|b| b != b'0');
        valid.then(|| TraceParent {
            trace_id: trace_id.to_owned(),
            span_id: span_id.to_owned(),
            flags: flags.to_owned(),
        })
    }

    /// A span of our own inside the caller's trace, or a new sampled trace.
    pub fn child_of(parent: Option<&TraceParent>, rng: &mut impl Rng) -> TraceParent {
        let span_id = format!("{:016x}", rng.random_range(1..=u64::MAX));
        match parent {
            Some(parent) => TraceParent {
                trace_id: parent.trace_id.clone(),
                span_id,
                flags: parent.flags.clone(),
            },
            None => TraceParent {
                trace_id: format!("{:032x}", rng.random_range(1..=u128::MAX)),
                span_id,
                flags: "01".into(),
            },
        }
    }

    pub fn header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_continues_a_trace() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceParent::parse(header).expect("valid traceparent");
        let child = TraceParent::child_of(Some(&parent), &mut rand::rng());
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
        assert_eq!(TraceParent::parse(&child.header()), Some(child));
    }

    #[test]
    fn refuses_malformed_trace_context() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }
}
