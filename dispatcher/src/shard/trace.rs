//! A command's hop of its trace: the `dispatch` span continues the `traceparent` the
//! command came with (a bot's command without one starts a trace here), and everything
//! published for the command carries this span on as the parent.

use common::hop_span;
use common::trace::{self, tracestate_from_headers, Handoff, TraceParent};
use lapin::BasicProperties;
use proto::amqp::Command;

/// The dispatch span of one command, and what its publishes carry.
pub(super) struct Dispatched {
    pub(super) span: tracing::Span,
    pub(super) handoff: Handoff,
    /// The command came with a valid `traceparent`.
    continued: bool,
}

impl Dispatched {
    /// The header is read for every command, traced or not: the events must carry the
    /// trace on whatever this dispatcher's log level is. One map lookup and 55 bytes of
    /// hex per command, never per receiver.
    pub(super) fn of(props: &BasicProperties, command: &Command) -> Dispatched {
        let headers = props.headers().as_ref();
        let parent = TraceParent::from_headers(headers);
        let span = hop_span!(
            "dispatch",
            kind = command.body.kind(),
            room = %command.room(),
            actor = %command.actor.id,
        );
        let hop = trace::enter(&span, parent);
        Dispatched {
            span,
            handoff: Handoff {
                parent: hop,
                state: parent.and_then(|_| tracestate_from_headers(headers)),
            },
            continued: parent.is_some(),
        }
    }

    /// The `dispatch` line, once the command has its outcome (`ok` or an error code).
    pub(super) fn log(&self, outcome: &str) {
        let hop = &self.handoff.parent;
        tracing::debug!(
            target: trace::TARGET,
            parent: &self.span,
            trace_id = %hop.trace_id_hex(),
            span_id = %hop.span_id_hex(),
            continued = self.continued,
            outcome,
            "dispatch"
        );
    }
}
