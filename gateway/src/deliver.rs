//! From the gateway's queue to local connections.
//!
//! An event is parsed and serialised once, then the same bytes are offered to every
//! local member; a reply goes to the one connection it names. Nothing here waits: a
//! member whose queue is full is marked slow and cut off by its own task.

use std::sync::Arc;

use common::amqp::lapin::message::Delivery;
use proto::amqp::{parse_event_key, Event, EventBody, Reply, Target, REPLY_KIND};

use crate::ws::Shared;

use crate::index::{EventOut, Index, Outbound, ReplyOut};
use crate::metrics::{GatewayMetrics, Kind};

pub fn handle(index: &Index, metrics: &GatewayMetrics, own_queue: &str, delivery: &Delivery) {
    let is_reply = delivery.properties.kind().as_ref().map(|k| k.as_str()) == Some(REPLY_KIND)
        || (delivery.exchange.as_str().is_empty() && delivery.routing_key.as_str() == own_queue);
    if is_reply {
        reply(index, delivery);
    } else {
        event(index, metrics, delivery);
    }
}

/// Replies are counted where the connection writes them (`frames_out`, `errors`).
fn reply(index: &Index, delivery: &Delivery) {
    let reply: Reply = match serde_json::from_slice(&delivery.data) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "dropping a malformed reply");
            return;
        }
    };
    let Some(conn) = index.session(&reply.session) else {
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

fn event(index: &Index, metrics: &GatewayMetrics, delivery: &Delivery) {
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
    let kicked = matches!(event.body, EventBody::Kicked(_));
    let kind = event.body.kind();
    if let EventBody::Message(m) = &event.body {
        let delay_ms = common::now_ms().saturating_sub(m.ts);
        metrics
            .event_delay_seconds
            .observe(delay_ms as f64 / 1000.0);
    }
    let (seq, epoch) = match &event.body {
        EventBody::Message(m) => (Some(m.seq), Some(Arc::<str>::from(m.epoch.as_str()))),
        _ => (None, None),
    };
    let room: Arc<str> = event.body.room().into();
    let text = Shared::from(event.body.into_frame().to_json());
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
    let handed = match target {
        Target::Room(r) => {
            let event = make(false);
            index.for_room(&r, |conn| {
                conn.offer(Outbound::Event(event.clone()));
            })
        }
        Target::User(u) => {
            let event = make(true);
            index.for_user(&u, |conn| {
                conn.offer(Outbound::Event(event.clone()));
            })
        }
    };
    metrics
        .frames_out
        .get_or_create(&Kind::of(kind))
        .inc_by(handed as u64);
}
