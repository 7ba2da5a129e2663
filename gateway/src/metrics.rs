//! The gateway's metrics, served at `/metrics`.

use common::metrics::prometheus_client::encoding::EncodeLabelSet;
use common::metrics::prometheus_client::metrics::counter::Counter;
use common::metrics::prometheus_client::metrics::family::Family;
use common::metrics::prometheus_client::metrics::gauge::Gauge;
use common::metrics::prometheus_client::metrics::histogram::Histogram;
use common::metrics::{latency_histogram, Registry};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Code {
    pub code: String,
}

impl Kind {
    pub fn of(kind: &str) -> Self {
        Kind {
            kind: kind.to_owned(),
        }
    }
}

impl Code {
    pub fn of(code: impl ToString) -> Self {
        Code {
            code: code.to_string(),
        }
    }
}

pub struct GatewayMetrics {
    pub registry: Registry,
    pub connections: Gauge,
    pub connections_opened: Counter,
    /// By WebSocket close code (`none` when the TCP connection just ended).
    pub connections_closed: Family<Code, Counter>,
    /// Client frames read, by `type` (`invalid` for unreadable ones).
    pub frames_in: Family<Kind, Counter>,
    /// Frames handed to connections, by `type`.
    pub frames_out: Family<Kind, Counter>,
    /// `error` frames sent, by code.
    pub errors: Family<Code, Counter>,
    /// Connections cut off because their outbound queue overflowed.
    pub slow_consumers: Counter,
    /// HTTP refusals before the upgrade, by error.
    pub refusals: Family<Code, Counter>,
    /// Handshakes let through without checking the per-user cap across gateways,
    /// because Redis did not answer.
    pub user_cap_unchecked: Counter,
    /// Inbound frames refused by the per-connection frame budget.
    pub frames_refused: Counter,
    /// Connections closed because nothing arrived for `idle_timeout_s`.
    pub idle_timeouts: Counter,
    /// TCP connections dropped because their request head took longer than
    /// `handshake_timeout_s`.
    pub handshake_timeouts: Counter,
    /// TCP connections dropped at accept because `max_pending_handshakes` were open.
    pub handshakes_dropped: Counter,
    /// TCP connections dropped at accept because their source had
    /// `max_pending_handshakes_per_ip` open.
    pub handshakes_dropped_per_ip: Counter,
    /// AMQP deliveries consumed from this gateway's queue.
    pub deliveries: Counter,
    /// Commands published, by outcome (`accepted` or `unavailable`).
    pub commands: Family<Code, Counter>,
    /// From the dispatcher stamping a message (`ts`) to its delivery here.
    pub event_delay_seconds: Histogram,
    /// From publishing a command to the broker's confirm.
    pub publish_confirm_seconds: Histogram,
    /// Connections that negotiated permessage-deflate.
    pub deflate_connections: Counter,
    /// WebSocket payload bytes written (after compression).
    pub ws_payload_bytes_out: Counter,
    /// Bytes permessage-deflate kept off the wire.
    pub ws_deflate_bytes_saved: Counter,
    /// Events compressed: once per event, however many members get it compressed.
    pub deflate_event_compressions: Counter,
    /// Room messages dropped because this gateway had passed them on already.
    pub events_repeated: Counter,
    /// Gaps in a room's messages (or a lost broker link) repaired from Redis.
    pub gap_repairs: Counter,
    /// Messages delivered by gap repair.
    pub gap_messages_repaired: Counter,
    /// Gap repairs that could not read Redis (the members then miss those messages
    /// until they rejoin with `since`).
    pub gap_repairs_failed: Counter,
    /// 1 while `/readyz` answers 200; set from the gateway's state each time `/metrics`
    /// is rendered (`ops.rs`), so an alert sees a gateway that runs but refuses upgrades.
    pub ready: Gauge,
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let m = GatewayMetrics {
            registry: Registry::with_prefix("warren_gateway"),
            connections: Gauge::default(),
            connections_opened: Counter::default(),
            connections_closed: Family::default(),
            frames_in: Family::default(),
            frames_out: Family::default(),
            errors: Family::default(),
            slow_consumers: Counter::default(),
            refusals: Family::default(),
            user_cap_unchecked: Counter::default(),
            frames_refused: Counter::default(),
            idle_timeouts: Counter::default(),
            handshake_timeouts: Counter::default(),
            handshakes_dropped: Counter::default(),
            handshakes_dropped_per_ip: Counter::default(),
            deliveries: Counter::default(),
            commands: Family::default(),
            event_delay_seconds: latency_histogram(),
            publish_confirm_seconds: latency_histogram(),
            deflate_connections: Counter::default(),
            ws_payload_bytes_out: Counter::default(),
            ws_deflate_bytes_saved: Counter::default(),
            deflate_event_compressions: Counter::default(),
            events_repeated: Counter::default(),
            gap_repairs: Counter::default(),
            gap_messages_repaired: Counter::default(),
            gap_repairs_failed: Counter::default(),
            ready: Gauge::default(),
        };
        m.register()
    }

    fn register(mut self) -> Self {
        let r = &mut self.registry;
        common::register_fields!(r, self;
            events_repeated: "Room messages dropped because this gateway had passed them on already",
            gap_repairs: "Gaps in a room's messages, or lost broker links, repaired from Redis",
            gap_messages_repaired: "Messages delivered by gap repair",
            gap_repairs_failed: "Gap repairs that could not read Redis",
            ready: "1 while /readyz answers 200: broker link, topology and bindings in place",
            connections: "Open WebSocket connections",
            connections_opened: "WebSocket connections opened",
            connections_closed: "WebSocket connections closed, by close code",
            frames_in: "Client frames read, by type",
            frames_out: "Frames handed to connections, by type",
            errors: "Error frames sent, by code",
            slow_consumers: "Connections closed because their outbound queue overflowed",
            refusals: "Upgrade requests refused, by error",
            user_cap_unchecked: "Handshakes let through unchecked by the per-user cap (Redis did not answer)",
            frames_refused: "Inbound frames refused by the per-connection frame budget",
            idle_timeouts: "Connections closed after idle_timeout_s without a frame or pong",
            handshake_timeouts: "TCP connections dropped for not sending a request head in time",
            handshakes_dropped: "TCP connections dropped at accept over max_pending_handshakes",
            handshakes_dropped_per_ip: "TCP connections dropped at accept over max_pending_handshakes_per_ip",
            deliveries: "AMQP deliveries consumed",
            commands: "Commands published, by outcome",
            event_delay_seconds: "Message timestamp to delivery at this gateway",
            publish_confirm_seconds: "Command publish to broker confirm",
            deflate_connections: "Connections that negotiated permessage-deflate",
            ws_payload_bytes_out: "WebSocket payload bytes written, after compression",
            ws_deflate_bytes_saved: "Payload bytes permessage-deflate kept off the wire",
            deflate_event_compressions: "Events compressed (once each, for every member that agreed permessage-deflate)",
        );
        self
    }

    pub fn render(&self) -> String {
        common::metrics::render(&self.registry)
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}
