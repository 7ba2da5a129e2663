//! The three roles of the raw path: publisher, relay, final consumer.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Acker, BasicProperties, Channel, Confirmation};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::time::{interval, sleep_until, MissedTickBehavior};

use super::topology::Names;
use super::Counters;
use crate::measure::{now_ns, parse_payload, payload, Window};
use crate::Error;

pub(super) struct Pacing {
    /// Messages a second; 0 = as fast as `credits` allow.
    pub(super) rate: f64,
    /// End-to-end in-flight limit, given back by the final consumer.
    pub(super) credits: Arc<Semaphore>,
    pub(super) persistent: bool,
    pub(super) size: usize,
}

fn properties(kind: &str, persistent: bool) -> BasicProperties {
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_type(kind.into());
    if persistent {
        props.with_delivery_mode(2)
    } else {
        props
    }
}

/// The "gateway" publishing commands, confirms kept in flight, until the window closes.
pub(super) async fn publish(
    ch: Channel,
    names: Arc<Names>,
    counters: Arc<Counters>,
    window: Window,
    pacing: Pacing,
) -> Result<(), Error> {
    let end = Window::instant_of(window.end_ns);
    let mut confirms = FuturesUnordered::new();
    let mut tick = interval(Duration::from_secs_f64(1.0 / pacing.rate.max(0.001)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut n = 0u64;
    loop {
        // Wait for the next slot (rate) or credit (max), handling confirms meanwhile.
        tokio::select! {
            _ = sleep_until(end) => break,
            Some(c) = confirms.next(), if !confirms.is_empty() => {
                count_confirm(&counters, c);
                continue;
            }
            _ = tick.tick(), if pacing.rate > 0.0 => {}
            permit = pacing.credits.acquire(), if pacing.rate <= 0.0 => {
                permit.map_err(|e| Error::from(e.to_string()))?.forget();
            }
        }
        let now = now_ns();
        let body = json!({
            "v": 1,
            "kind": "send",
            "room": format!("r{}", n % 100),
            "text": payload(now, 0, pacing.size),
            "actor": {"id": "raw", "name": "raw", "roles": [], "bot": false},
            "ref": n.to_string(),
        })
        .to_string();
        n += 1;
        let confirm = ch
            .basic_publish(
                names.commands_exchange.as_str().into(),
                "shard.0".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body.as_bytes(),
                properties("send", pacing.persistent),
            )
            .await?;
        counters.published.inc();
        if window.contains(now) {
            counters.published_in_window.inc();
        }
        confirms.push(confirm);
    }
    while let Some(c) = confirms.next().await {
        count_confirm(&counters, c);
    }
    Ok(())
}

fn count_confirm(counters: &Counters, c: lapin::Result<Confirmation>) {
    match c {
        Ok(Confirmation::Nack(_)) | Err(_) => counters.nacked.inc(),
        Ok(_) => counters.confirmed.inc(),
    }
}

/// The "dispatcher": each command is republished as a room event (persistent, confirmed)
/// and acked only once that confirm is in; up to `prefetch` in flight.
pub(super) async fn relay(
    consume: Channel,
    publish: Channel,
    names: Arc<Names>,
    counters: Arc<Counters>,
    persistent: bool,
    prefetch: u16,
) -> Result<(), Error> {
    if persistent {
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
    }
    consume
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut deliveries = consume
        .basic_consume(
            names.commands_queue.as_str().into(),
            "raw-relay".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                let (acker, confirm): (Acker, lapin::Result<Confirmation>) = done;
                confirm?;
                acker.ack(BasicAckOptions::default()).await?;
                counters.relayed.inc();
            }
            delivery = deliveries.next() => {
                let Some(delivery) = delivery else { return Ok(()) };
                let delivery = delivery?;
                let key = routing_key(&delivery.data);
                let confirm = publish
                    .basic_publish(
                        names.events.as_str().into(),
                        key.as_str().into(),
                        BasicPublishOptions::default(),
                        &delivery.data,
                        properties("message", persistent),
                    )
                    .await?;
                let acker = delivery.acker;
                in_flight.push(async move { (acker, confirm.await) });
            }
        }
    }
}

/// `room.<room>.message` from a command body's `room`.
fn routing_key(body: &[u8]) -> String {
    let room = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("room").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    format!("room.{room}.message")
}

/// The "gateway" consuming its own queue: time each event, ack it, give a credit back.
pub(super) async fn consume(
    ch: Channel,
    names: Arc<Names>,
    counters: Arc<Counters>,
    window: Window,
    credits: Arc<Semaphore>,
    prefetch: u16,
) -> Result<(), Error> {
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut deliveries = ch
        .basic_consume(
            names.gateway_queue.as_str().into(),
            "raw-gateway".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        let now = now_ns();
        counters.delivered.inc();
        if window.contains(now) {
            counters.delivered_in_window.inc();
            if let Some((sent, _)) = sent_ns(&delivery.data) {
                counters.latency.record_since(sent, now);
            }
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
        credits.add_permits(1);
    }
    Ok(())
}

fn sent_ns(body: &[u8]) -> Option<(u64, u32)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    parse_payload(v.get("text")?.as_str()?)
}
