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

#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, FieldTable, LongString};
    use proto::amqp::TRACESTATE_HEADER;

    use super::*;

    const SEND: &str = r#"{"v":1,"kind":"send","room":"general","text":"hi","ref":"r1",
        "actor":{"id":"alice","name":"Alice"}}"#;

    fn command() -> Command {
        let accounts = crate::intake::Accounts {
            gateways: vec!["guest".to_owned()],
            admin_bots: Vec::new(),
        };
        crate::intake::read(SEND.as_bytes(), Some("guest"), &accounts).unwrap()
    }

    fn with_headers(pairs: &[(&str, &str)]) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (name, value) in pairs {
            headers.insert(
                (*name).into(),
                AMQPValue::LongString(LongString::from(*value)),
            );
        }
        BasicProperties::default().with_headers(headers)
    }

    #[test]
    fn a_commands_trace_goes_on_with_the_dispatcher_as_parent() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let props = with_headers(&[("traceparent", incoming), (TRACESTATE_HEADER, "vendor=abc")]);
        let dispatched = Dispatched::of(&props, &command());
        let parent = TraceParent::parse(incoming).unwrap();
        let handed = dispatched.handoff.parent;
        assert!(dispatched.continued);
        assert_eq!(handed.trace_id, parent.trace_id);
        assert_ne!(handed.parent_id, parent.parent_id);
        assert_eq!(dispatched.handoff.state.as_deref(), Some("vendor=abc"));

        let mut headers = FieldTable::default();
        dispatched.handoff.insert_into(&mut headers);
        assert_eq!(TraceParent::from_headers(Some(&headers)), Some(handed));
    }

    #[test]
    fn a_command_without_a_valid_traceparent_starts_a_trace() {
        for props in [
            BasicProperties::default(),
            with_headers(&[(
                "traceparent",
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )]),
            // A tracestate without a traceparent to go with it is not passed on.
            with_headers(&[(TRACESTATE_HEADER, "vendor=abc")]),
        ] {
            let dispatched = Dispatched::of(&props, &command());
            assert!(!dispatched.continued);
            assert_ne!(
                dispatched.handoff.parent.trace_id,
                [
                    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e,
                    0x0e, 0x47, 0x36
                ]
            );
            assert_eq!(dispatched.handoff.state, None);
        }
    }
}
