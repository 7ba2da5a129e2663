//! Publishing with publisher confirms: a command's events and answer, or a dead letter.
//!
//! What one command publishes is encoded once into a [`Batch`] ([`Publisher::outcome`],
//! [`Publisher::dead_letter`]); [`Publisher::send`] hands every publish of a batch to the
//! channel at once and returns a future that resolves when the broker has confirmed all
//! of them. The shard keeps a batch until it is confirmed, so a refused batch is sent
//! again with the same bytes, and acks the command only once its batch is confirmed.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::try_join_all;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};

use common::amqp::json_properties;
use common::trace::{Handoff, TraceParent};
use proto::amqp::{
    user_key, Event, Names, Reply, ACK_REF_HEADER, ACK_SESSION_HEADER, CC_HEADER, REPLY_KIND,
};
use proto::BODY_VERSION;

use crate::commands::{EventAck, Outcome};
use crate::metrics::DispatcherMetrics;

/// The header that says why a command was dead-lettered.
pub const REASON_HEADER: &str = "x-warren-reason";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The channel or connection failed: the connection loop starts over.
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker refused some publishes: worth retrying.
    #[error("the broker refused {0} publish(es)")]
    Nacked(usize),
}

/// Where a command's answer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// The gateway queue (the command's `reply_to`).
    pub queue: String,
    pub correlation_id: Option<ShortString>,
    /// The connection on that gateway.
    pub session: String,
}

/// One publish, encoded.
#[derive(Debug, Clone)]
struct Publish {
    exchange: ShortString,
    routing_key: ShortString,
    payload: Vec<u8>,
    properties: BasicProperties,
}

/// Everything one command publishes, in order: its events, then its answer.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    publishes: Vec<Publish>,
}

impl Batch {
    /// Nothing to publish (a command without events whose answer has nowhere to go).
    pub fn is_empty(&self) -> bool {
        self.publishes.is_empty()
    }
}

/// An event's properties: transient (Redis is the record; gateways repair gaps), with a
/// `CC` header naming the gateways a user copy goes to, the ack headers when this
/// publish carries the sender's `ack` (its gateway's key then joins the `CC`, so that
/// gateway surely gets it), and the command's trace.
fn event_properties(
    kind: &str,
    mut cc: Vec<String>,
    ack: Option<&EventAck>,
    trace: Option<&Handoff>,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(trace) = trace {
        trace.insert_into(&mut headers);
    }
    if let Some(ack) = ack {
        let own = ack.gateway_key();
        if !cc.contains(&own) {
            cc.push(own);
        }
        headers.insert(
            ACK_SESSION_HEADER.into(),
            AMQPValue::LongString(LongString::from(ack.session.clone())),
        );
        if let Some(reference) = &ack.reference {
            headers.insert(
                ACK_REF_HEADER.into(),
                AMQPValue::LongString(LongString::from(reference.clone())),
            );
        }
    }
    if !cc.is_empty() {
        let keys: Vec<AMQPValue> = cc
            .into_iter()
            .map(|k| AMQPValue::LongString(LongString::from(k)))
            .collect();
        headers.insert(
            CC_HEADER.into(),
            AMQPValue::FieldArray(FieldArray::from(keys)),
        );
    }
    let properties = json_properties(kind);
    if headers.inner().is_empty() {
        properties
    } else {
        properties.with_headers(headers)
    }
}

/// Publishes on one confirm-mode channel. Cloning is shallow.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    events: ShortString,
    dead: ShortString,
    metrics: Arc<DispatcherMetrics>,
}

impl Publisher {
    /// `channel` must already be in confirm mode.
    pub fn new(channel: Channel, names: &Names, metrics: Arc<DispatcherMetrics>) -> Publisher {
        Publisher {
            channel,
            metrics,
            events: names.events_exchange().into(),
            dead: names.dead().into(),
        }
    }

    /// The outcome's events for the events exchange, and its answer for `reply_to` (if
    /// there is one to answer and somewhere to send it). An error means a body could not
    /// be encoded: no retry would help. Every publish carries `trace` on, when given.
    pub fn outcome(
        &self,
        outcome: Outcome,
        reply_to: Option<&ReplyTo>,
        trace: Option<&Handoff>,
    ) -> Result<Batch, serde_json::Error> {
        let mut publishes = Vec::new();
        for routed in outcome.events {
            let kind = routed.event.kind();
            let payload = serde_json::to_vec(&Event {
                v: BODY_VERSION,
                body: routed.event,
            })?;
            let ack = routed.ack.as_ref();
            // The ack rides on the first room key's publish, or on the sender's own copy.
            let mut ack_pending = ack.filter(|a| a.on_user.is_none());
            for key in routed.keys {
                let properties = event_properties(kind, Vec::new(), ack_pending.take(), trace);
                publishes.push(Publish {
                    exchange: self.events.clone(),
                    routing_key: key.into(),
                    payload: payload.clone(),
                    properties,
                });
            }
            for copy in routed.users {
                let carries = ack.filter(|a| a.on_user.as_deref() == Some(copy.user.as_str()));
                publishes.push(Publish {
                    exchange: self.events.clone(),
                    routing_key: user_key(&copy.user, kind).into(),
                    payload: payload.clone(),
                    properties: event_properties(kind, copy.cc, carries, trace),
                });
            }
        }
        if let (Some(frame), Some(to)) = (outcome.reply, reply_to) {
            let reply = Reply {
                v: BODY_VERSION,
                session: to.session.clone(),
                frame,
            };
            let mut properties = json_properties(REPLY_KIND);
            if let Some(id) = &to.correlation_id {
                properties = properties.with_correlation_id(id.clone());
            }
            if let Some(trace) = trace {
                let mut headers = FieldTable::default();
                trace.insert_into(&mut headers);
                properties = properties.with_headers(headers);
            }
            publishes.push(Publish {
                exchange: ShortString::from(""),
                routing_key: to.queue.as_str().into(),
                payload: serde_json::to_vec(&reply)?,
                properties,
            });
        }
        Ok(Batch { publishes })
    }

    /// A rejected command's body for the dead-letter exchange, persistent, with the
    /// reason in a header and the original `type`, `message_id` and `traceparent`.
    pub fn dead_letter(&self, body: &[u8], original: &BasicProperties, reason: &str) -> Batch {
        let mut headers = FieldTable::default();
        headers.insert(
            REASON_HEADER.into(),
            AMQPValue::LongString(LongString::from(reason.to_owned())),
        );
        if let Some(user) = original.user_id() {
            headers.insert(
                "x-warren-user-id".into(),
                AMQPValue::LongString(LongString::from(user.as_str().to_owned())),
            );
        }
        // An operator looking at the dead letter can find the command's trace in logs.
        if let Some(trace) = TraceParent::from_headers(original.headers().as_ref()) {
            trace.insert_into(&mut headers);
        }
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_timestamp(common::now_ms() / 1000)
            .with_headers(headers);
        if let Some(content_type) = original.content_type() {
            properties = properties.with_content_type(content_type.clone());
        }
        if let Some(kind) = original.kind() {
            properties = properties.with_type(kind.clone());
        }
        if let Some(id) = original.message_id() {
            properties = properties.with_message_id(id.clone());
        }
        Batch {
            publishes: vec![Publish {
                exchange: self.dead.clone(),
                routing_key: ShortString::from(""),
                payload: body.to_vec(),
                properties,
            }],
        }
    }

    /// Publishes every message of `batch`, in order, and resolves once the broker has
    /// confirmed all of them. Any nack fails the whole batch (it is sent again whole, and
    /// receivers drop the duplicates).
    ///
    /// The publishes are handed to the channel together on the future's first poll, so
    /// they share the I/O loop's next write instead of waiting for one another.
    pub fn send(
        &self,
        batch: Arc<Batch>,
    ) -> impl Future<Output = Result<(), PublishError>> + Send + 'static {
        let channel = self.channel.clone();
        let metrics = self.metrics.clone();
        async move {
            let started = std::time::Instant::now();
            let confirms = try_join_all(batch.publishes.iter().map(|p| {
                channel.basic_publish(
                    p.exchange.clone(),
                    p.routing_key.clone(),
                    BasicPublishOptions::default(),
                    &p.payload,
                    p.properties.clone(),
                )
            }))
            .await?;
            let mut nacked = 0;
            for confirm in confirms {
                match confirm.await? {
                    Confirmation::Ack(_) | Confirmation::NotRequested => {}
                    Confirmation::Nack(_) => nacked += 1,
                }
            }
            metrics
                .publish_confirm_seconds
                .observe(started.elapsed().as_secs_f64());
            if nacked > 0 {
                return Err(PublishError::Nacked(nacked));
            }
            Ok(())
        }
    }
}
