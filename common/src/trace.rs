//! W3C Trace Context (`traceparent`) for the AMQP hops: a command carries the trace of
//! the client frame it came from, and the events and replies a dispatcher publishes for
//! it carry the same trace on to every gateway that delivers them.
//!
//! Only version `00` is read; anything else, and any all-zero id, is refused, and the
//! receiver starts a trace of its own instead (W3C's rule for a header it cannot trust).
//! The spans these ids label are `tracing` spans under the target [`TARGET`], at debug
//! level: with the usual `info` filter they are disabled, and a disabled span costs one
//! check of a cached interest and never parses a header.

use std::fmt;

use lapin::types::{AMQPValue, FieldTable, LongString};
use proto::amqp::{TRACEPARENT_HEADER, TRACESTATE_HEADER};
use rand::Rng;

/// The `tracing` target of every trace span and line: `warren::trace=debug` in the log
/// filter turns them on.
pub const TARGET: &str = "warren::trace";

/// The longest `tracestate` passed on (W3C asks carriers to keep at least 512 bytes).
const MAX_TRACESTATE: usize = 512;

/// One hop of a trace: the trace it belongs to, the span that sent it, and the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

/// `01`: the sender may have recorded its span (W3C "sampled").
pub const SAMPLED: u8 = 0x01;

impl TraceParent {
    /// A new trace, its first span sampled.
    pub fn new_root() -> TraceParent {
        let mut rng = rand::rng();
        TraceParent {
            trace_id: nonzero(|| rng.random()),
            parent_id: nonzero(|| rng.random()),
            flags: SAMPLED,
        }
    }

    /// The next hop of the same trace: a new span id, the same trace and flags.
    pub fn child(&self) -> TraceParent {
        let mut rng = rand::rng();
        TraceParent {
            parent_id: nonzero(|| rng.random()),
            ..*self
        }
    }

    /// Reads a `traceparent` value strictly: `00-<32 hex>-<16 hex>-<2 hex>`, lower-case,
    /// neither id all zeros. `None` for anything else.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let b = value.as_bytes();
        if b.len() != 55 || &b[0..3] != b"00-" || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        let mut flags = [0u8; 1];
        hex_into(&b[3..35], &mut trace_id)?;
        hex_into(&b[36..52], &mut parent_id)?;
        hex_into(&b[53..55], &mut flags)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags: flags[0],
        })
    }

    /// The trace id as 32 lower-case hex digits, as logs and collectors show it.
    pub fn trace_id_hex(&self) -> Hex<16> {
        Hex(self.trace_id)
    }

    /// The sender's span id as 16 lower-case hex digits.
    pub fn span_id_hex(&self) -> Hex<8> {
        Hex(self.parent_id)
    }

    /// The `traceparent` of an AMQP message, when it has a valid one.
    pub fn from_headers(headers: Option<&FieldTable>) -> Option<TraceParent> {
        match headers?.inner().get(TRACEPARENT_HEADER)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes())
                .ok()
                .and_then(TraceParent::parse),
            _ => None,
        }
    }

    /// Adds this hop as the `traceparent` header.
    pub fn insert_into(&self, headers: &mut FieldTable) {
        headers.insert(
            TRACEPARENT_HEADER.into(),
            AMQPValue::LongString(LongString::from(self.to_string())),
        );
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            Hex(self.trace_id),
            Hex(self.parent_id),
            self.flags
        )
    }
}

/// What a hop hands on to the messages it publishes: its own `traceparent`, and the
/// `tracestate` it was given, unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    pub parent: TraceParent,
    pub state: Option<String>,
}

impl Handoff {
    /// Adds `traceparent` (and `tracestate`, when there is one) to `headers`.
    pub fn insert_into(&self, headers: &mut FieldTable) {
        self.parent.insert_into(headers);
        if let Some(state) = &self.state {
            headers.insert(
                TRACESTATE_HEADER.into(),
                AMQPValue::LongString(LongString::from(state.clone())),
            );
        }
    }
}

/// A debug span under [`TARGET`] with the empty fields [`enter`] fills in (`trace_id`,
/// `span_id`, `parent_id`), plus the caller's own fields:
/// `hop_span!("deliver", kind = "message")`. Its field values are evaluated only when
/// the span is enabled.
#[macro_export]
macro_rules! hop_span {
    ($name:literal $(, $($fields:tt)*)?) => {
        $crate::trace::__tracing::debug_span!(
            target: $crate::trace::TARGET,
            $name,
            trace_id = $crate::trace::__tracing::field::Empty,
            span_id = $crate::trace::__tracing::field::Empty,
            parent_id = $crate::trace::__tracing::field::Empty
            $(, $($fields)*)?
        )
    };
}

#[doc(hidden)]
pub use tracing as __tracing;

/// Makes `span` this service's hop of a trace: it continues `parent`, or starts a new
/// trace when there is none. The ids are recorded on the span (its fields `trace_id`,
/// `span_id`, `parent_id`) only when the span is enabled; the hop is returned either way,
/// because the `traceparent` of what this hop publishes travels whether or not anything
/// is recorded here.
pub fn enter(span: &tracing::Span, parent: Option<TraceParent>) -> TraceParent {
    let hop = parent.map_or_else(TraceParent::new_root, |p| p.child());
    if span.is_disabled() {
        return hop;
    }
    #[cfg(feature = "otlp")]
    let hop = crate::otlp::adopt(span, parent).unwrap_or(hop);
    span.record("trace_id", tracing::field::display(hop.trace_id_hex()));
    span.record("span_id", tracing::field::display(hop.span_id_hex()));
    if let Some(parent) = parent {
        span.record("parent_id", tracing::field::display(parent.span_id_hex()));
    }
    hop
}

/// The `tracestate` of an AMQP message, passed on unread when it is plain ASCII and
/// short enough; Warren adds no entry of its own.
pub fn tracestate_from_headers(headers: Option<&FieldTable>) -> Option<String> {
    match headers?.inner().get(TRACESTATE_HEADER)? {
        AMQPValue::LongString(s) => {
            let bytes = s.as_bytes();
            let plain = !bytes.is_empty()
                && bytes.len() <= MAX_TRACESTATE
                && bytes.iter().all(|b| (0x20..0x7f).contains(b));
            plain.then(|| String::from_utf8_lossy(bytes).into_owned())
        }
        _ => None,
    }
}

/// Bytes written as lower-case hex by `Display`, without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hex<const N: usize>(pub [u8; N]);

impl<const N: usize> fmt::Display for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl<const N: usize> fmt::Debug for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Draws until the value is not all zeros (which W3C reserves for "invalid").
fn nonzero<const N: usize>(mut draw: impl FnMut() -> [u8; N]) -> [u8; N] {
    loop {
        let value = draw();
        if value != [0; N] {
            return value;
        }
    }
}

/// Lower-case hex digits into `out` (exactly twice its length); upper case is refused,
/// as W3C version 00 requires.
fn hex_into(digits: &[u8], out: &mut [u8]) -> Option<()> {
    fn digit(d: u8) -> Option<u8> {
        match d {
            b'0'..=b'9' => Some(d - b'0'),
            b'a'..=b'f' => Some(d - b'a' + 10),
            _ => None,
        }
    }
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips() {
        let tp = TraceParent::parse(EXAMPLE).expect("valid");
        assert_eq!(
            tp.trace_id_hex().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(tp.span_id_hex().to_string(), "00f067aa0ba902b7");
        assert_eq!(tp.flags, SAMPLED);
        assert_eq!(tp.to_string(), EXAMPLE);
    }

    #[test]
    fn other_versions_and_malformed_values_are_refused() {
        let refused = [
            // version ff is forbidden, and later versions are not read here
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // upper case
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // wrong lengths, separators, or characters
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bg-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "",
        ];
        for value in refused {
            assert_eq!(TraceParent::parse(value), None, "{value:?}");
        }
    }

    #[test]
    fn all_zero_ids_are_refused() {
        assert_eq!(
            TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            None
        );
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_span() {
        let root = TraceParent::new_root();
        assert_ne!(root.trace_id, [0; 16]);
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root));
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.flags, root.flags);
        assert_ne!(child.parent_id, root.parent_id);
        assert_ne!(TraceParent::new_root().trace_id, root.trace_id);
    }

    #[test]
    fn headers_carry_the_traceparent_and_a_plain_tracestate() {
        let tp = TraceParent::parse(EXAMPLE).unwrap();
        let mut headers = FieldTable::default();
        assert_eq!(TraceParent::from_headers(Some(&headers)), None);
        tp.insert_into(&mut headers);
        assert_eq!(TraceParent::from_headers(Some(&headers)), Some(tp));
        headers.insert(
            TRACESTATE_HEADER.into(),
            AMQPValue::LongString(LongString::from("congo=t61rcWkgMzE")),
        );
        assert_eq!(
            tracestate_from_headers(Some(&headers)).as_deref(),
            Some("congo=t61rcWkgMzE")
        );
        headers.insert(
            TRACESTATE_HEADER.into(),
            AMQPValue::LongString(LongString::from("x".repeat(513))),
        );
        assert_eq!(tracestate_from_headers(Some(&headers)), None);
    }
}
