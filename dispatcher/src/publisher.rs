//! Publishing with publisher confirms: a command's events and answer, or a dead letter.
//!
//! Every publish of one command is sent first and confirmed afterwards, so the confirms
//! are in flight together; the caller acks the command only once all of them are in.

use std::sync::Arc;

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use lapin::{Confirmation, PublisherConfirm};

use common::amqp::json_properties;
use proto::amqp::{Event, Names, Reply, REPLY_KIND};
use proto::BODY_VERSION;

use crate::commands::Outcome;
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
    /// A body could not be encoded: retrying will not help.
    #[error("encoding a body: {0}")]
    Encode(#[from] serde_json::Error),
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

/// Publishes on one confirm-mode channel. Cloning is shallow.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    events: String,
    dead: String,
    metrics: Arc<DispatcherMetrics>,
}

impl Publisher {
    /// `channel` must already be in confirm mode.
    pub fn new(channel: Channel, names: &Names, metrics: Arc<DispatcherMetrics>) -> Publisher {
        Publisher {
            channel,
            metrics,
            events: names.events_exchange(),
            dead: names.dead(),
        }
    }

    /// Publishes the outcome's events to the events exchange and its answer to `reply_to`
    /// (if there is one to answer and somewhere to send it), then waits for every confirm.
    pub async fn deliver(
        &self,
        outcome: &Outcome,
        reply_to: Option<&ReplyTo>,
    ) -> Result<(), PublishError> {
        let mut pending = Vec::new();
        for routed in &outcome.events {
            let kind = routed.event.kind();
            let payload = serde_json::to_vec(&Event {
                v: BODY_VERSION,
                body: routed.event.clone(),
            })?;
            for key in &routed.keys {
                let props = json_properties(kind);
                pending.push(self.publish(&self.events, key, &payload, props).await?);
            }
        }
        if let (Some(frame), Some(to)) = (&outcome.reply, reply_to) {
            let reply = Reply {
                v: BODY_VERSION,
                session: to.session.clone(),
                frame: frame.clone(),
            };
            let payload = serde_json::to_vec(&reply)?;
            let mut props = json_properties(REPLY_KIND);
            if let Some(id) = &to.correlation_id {
                props = props.with_correlation_id(id.clone());
            }
            pending.push(self.publish("", &to.queue, &payload, props).await?);
        }
        let started = std::time::Instant::now();
        let confirmed = confirm(pending).await;
        self.metrics
            .publish_confirm_seconds
            .observe(started.elapsed().as_secs_f64());
        confirmed
    }

    /// Publishes a rejected command's body to the dead-letter exchange, persistent, with
    /// the reason in a header and the original `type` and `message_id`.
    pub async fn dead_letter(
        &self,
        body: &[u8],
        original: &BasicProperties,
        reason: &str,
    ) -> Result<(), PublishError> {
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
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_timestamp(common::now_ms() / 1000)
            .with_headers(headers);
        if let Some(content_type) = original.content_type() {
            props = props.with_content_type(content_type.clone());
        }
        if let Some(kind) = original.kind() {
            props = props.with_type(kind.clone());
        }
        if let Some(id) = original.message_id() {
            props = props.with_message_id(id.clone());
        }
        let pending = self.publish(&self.dead, "", body, props).await?;
        confirm(vec![pending]).await
    }

    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        props: BasicProperties,
    ) -> Result<PublisherConfirm, lapin::Error> {
        self.channel
            .basic_publish(
                ShortString::from(exchange),
                ShortString::from(routing_key),
                BasicPublishOptions::default(),
                payload,
                props,
            )
            .await
    }
}

/// Waits for every confirm; any nack makes the whole batch fail (it is retried whole,
/// and receivers drop the duplicates).
async fn confirm(pending: Vec<PublisherConfirm>) -> Result<(), PublishError> {
    let mut nacked = 0;
    for confirm in pending {
        match confirm.await? {
            Confirmation::Ack(_) | Confirmation::NotRequested => {}
            Confirmation::Nack(_) => nacked += 1,
        }
    }
    if nacked > 0 {
        return Err(PublishError::Nacked(nacked));
    }
    Ok(())
}
