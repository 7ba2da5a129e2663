//! From the gateway's queue to local connections.
//!
//! An event is parsed and serialised once, then the same bytes are offered to every
//! local member; a reply goes to the one connection it names. Nothing here waits on a
//! connection: a member whose queue is full is marked slow and cut off by its own task.
//!
//! A room's `message` events pass [`Marks`] first: a repeat is dropped for every member
//! at once, and a gap is filled from the room's history (one Redis read for the room)
//! before the event goes out. A `message` that answers a `send` or `dm` of a local
//! connection carries that session and `ref` in its headers: the `ack` is made here,
//! from the event, even when the event itself is a repeat.

use std::sync::Arc;

use common::amqp::lapin::message::Delivery;
use common::amqp::lapin::types::AMQPValue;
use common::hop_span;
use common::trace::{self, TraceParent};
use proto::amqp::{
    parse_event_key, Event, EventBody, Reply, Target, ACK_REF_HEADER, ACK_SESSION_HEADER,
    REPLY_KIND,
};
use proto::server::{Ack, Message, ServerBody, ServerFrame};
use tracing::Instrument;

use crate::connection::mailbox::{EventOut, Outbound, ReplyOut};
use crate::index::Index;
use crate::metrics::{GatewayMetrics, Kind};
use crate::repair::{History, Marks, Verdict};
use crate::ws::{Counts, SharedPayload};

/// Every this many deliveries, marks of rooms without local members are dropped.
const SWEEP_EVERY: u64 = 4096;

/// The consumer's side of delivery: the index, the marks, and the history reader.
pub struct Deliverer {
    index: Arc<Index>,
    metrics: Arc<GatewayMetrics>,
    marks: Arc<Marks>,
    history: History,
    own_queue: String,
    handled: u64,
}

impl Deliverer {
    pub fn new(
        index: Arc<Index>,
        metrics: Arc<GatewayMetrics>,
        marks: Arc<Marks>,
        history: History,
        own_queue: String,
    ) -> Deliverer {
        Deliverer {
            index,
            metrics,
            marks,
            history,
            own_queue,
            handled: 0,
        }
    }

    pub async fn handle(&mut self, delivery: &Delivery) {
        self.handled += 1;
        if self.handled.is_multiple_of(SWEEP_EVERY) {
            let index = &self.index;
            self.marks.retain(|room| index.room_has_members(room));
        }
        let is_reply = delivery.properties.kind().as_ref().map(|k| k.as_str()) == Some(REPLY_KIND)
            || (delivery.exchange.as_str().is_empty()
                && delivery.routing_key.as_str() == self.own_queue);
        if is_reply {
            self.reply(delivery);
        } else {
            self.event(delivery).await;
        }
    }

    /// Replies are counted where the connection writes them (`frames_out`, `errors`).
    /// A reply goes to one connection, so its deliver span is only a line.
    fn reply(&self, delivery: &Delivery) {
        let reply: Reply = match serde_json::from_slice(&delivery.data) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "dropping a malformed reply");
                return;
            }
        };
        if let ServerBody::Joined(joined) = &reply.frame.body {
            // In queue order with the room's events: where the room stood at the join.
            if self.index.room_has_members(&joined.room) {
                self.marks.joined(&joined.room, &joined.epoch, joined.seq);
            }
        }
        let deliver = hop_span!("deliver", kind = REPLY_KIND);
        if !deliver.is_disabled() {
            let parent = TraceParent::from_headers(delivery.properties.headers().as_ref());
            let hop = trace::enter(&deliver, parent);
            tracing::debug!(
                target: trace::TARGET,
                parent: &deliver,
                trace_id = %hop.trace_id_hex(),
                span_id = %hop.span_id_hex(),
                continued = parent.is_some(),
                kind = REPLY_KIND,
                frame = reply.frame.body.type_name(),
                "deliver"
            );
        }
        let Some(conn) = self.index.session(&reply.session) else {
            // The connection closed before its answer came back.
            return;
        };
        let correlation = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.to_string());
        conn.offer(Outbound::Reply(Box::new(ReplyOut {
            correlation,
            frame: reply.frame,
        })));
    }

    async fn event(&mut self, delivery: &Delivery) {
        let Some((target, _kind)) = parse_event_key(delivery.routing_key.as_str()) else {
            tracing::warn!(key = %delivery.routing_key, "dropping an event with an unknown routing key");
            return;
        };
        let event: Event = match serde_json::from_slice(&delivery.data) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "dropping a malformed event");
                return;
            }
        };
        // One span per event, whatever the number of local members; the header is read
        // only when the span is on (`warren::trace=debug`), so with tracing off the
        // fan-out does no more than before.
        let deliver = hop_span!("deliver", kind = event.body.kind());
        let hop = (!deliver.is_disabled()).then(|| {
            let parent = TraceParent::from_headers(delivery.properties.headers().as_ref());
            (trace::enter(&deliver, parent), parent.is_some())
        });
        let kind = event.body.kind();
        let handed = self
            .fan_out(delivery, target, event)
            .instrument(deliver.clone())
            .await;
        if let Some((hop, continued)) = hop {
            tracing::debug!(
                target: trace::TARGET,
                parent: &deliver,
                trace_id = %hop.trace_id_hex(),
                span_id = %hop.span_id_hex(),
                continued,
                kind,
                handed,
                "deliver"
            );
        }
    }

    /// The event to its local members, after its `ack` and any gap before it; returns
    /// how many members took it (none for a repeat).
    async fn fan_out(&mut self, delivery: &Delivery, target: Target, event: Event) -> usize {
        if let EventBody::Message(m) = &event.body {
            self.ack_from(delivery, m);
            let delay_ms = common::now_ms().saturating_sub(m.ts);
            self.metrics
                .event_delay_seconds
                .observe(delay_ms as f64 / 1000.0);
            if let Target::Room(room) = &target {
                if self.index.room_has_members(room) {
                    let epoch: Arc<str> = m.epoch.as_str().into();
                    match self.marks.judge(room, &epoch, m.seq) {
                        Verdict::Next => {}
                        Verdict::Seen => {
                            self.metrics.events_repeated.inc();
                            return 0;
                        }
                        Verdict::Gap { after } => {
                            self.repair(room, &m.epoch, after, Some(m.seq)).await;
                        }
                    }
                }
            }
        }
        self.offer(target, event.body)
    }

    /// The sender's `ack`, when this event carries one for a local connection.
    fn ack_from(&self, delivery: &Delivery, message: &Message) {
        let headers = delivery.properties.headers().as_ref();
        let header = |name: &str| match headers?.inner().get(name)? {
            AMQPValue::LongString(s) => Some(s.to_string()),
            _ => None,
        };
        let Some(session) = header(ACK_SESSION_HEADER) else {
            return;
        };
        let Some(conn) = self.index.session(&session) else {
            return;
        };
        let ack = ServerFrame::answer(
            header(ACK_REF_HEADER),
            ServerBody::Ack(Ack {
                room: Some(message.room.clone()),
                id: Some(message.id.clone()),
                seq: Some(message.seq),
            }),
        );
        conn.offer(Outbound::Reply(Box::new(ReplyOut {
            correlation: None,
            frame: ack,
        })));
    }

    /// Delivers `room`'s stored messages with `after < seq < before` in order, and
    /// counts what was repaired.
    async fn repair(&mut self, room: &str, epoch: &str, after: u64, before: Option<u64>) {
        self.metrics.gap_repairs.inc();
        match self.history.range(room, epoch, after, before).await {
            Ok(messages) => {
                self.metrics
                    .gap_messages_repaired
                    .inc_by(messages.len() as u64);
                for m in messages {
                    if before.is_none() && !self.marks.advance(room, epoch, m.seq) {
                        continue;
                    }
                    self.offer(Target::Room(room.to_owned()), EventBody::Message(m));
                }
            }
            Err(e) => {
                self.metrics.gap_repairs_failed.inc();
                tracing::warn!(room, error = %e, "a gap in a room's events could not be read from Redis");
            }
        }
    }

    /// After the broker link came back: every marked room is read up to its newest
    /// message, before anything new is consumed.
    pub async fn repair_all(&mut self) {
        let index = self.index.clone();
        self.marks.retain(|room| index.room_has_members(room));
        for (room, epoch, seq) in self.marks.all() {
            self.repair(&room, &epoch, seq, None).await;
        }
    }

    /// Hands the event to every local member it is for; returns how many took it.
    fn offer(&self, target: Target, body: EventBody) -> usize {
        let kicked = matches!(body, EventBody::Kicked(_));
        let kind = body.kind();
        let (seq, epoch) = match &body {
            EventBody::Message(m) => (Some(m.seq), Some(Arc::<str>::from(m.epoch.as_str()))),
            _ => (None, None),
        };
        let room: Arc<str> = body.room().into();
        let text = SharedPayload::from(body.into_frame().to_json());
        let make = |via_user| {
            Arc::new(EventOut {
                room,
                seq,
                epoch,
                text,
                via_user,
                kicked,
            })
        };
        let mut counts = Counts::default();
        let handed = match target {
            Target::Room(r) => {
                let event = make(false);
                self.index
                    .for_room(&r, |conn| conn.deliver(&event, &mut counts))
            }
            Target::User(u) => {
                let event = make(true);
                self.index
                    .for_user(&u, |conn| conn.deliver(&event, &mut counts))
            }
        };
        crate::connection::outlet::report(&self.metrics, counts);
        self.metrics
            .frames_out
            .get_or_create(&Kind::of(kind))
            .inc_by(handed as u64);
        handed
    }
}
