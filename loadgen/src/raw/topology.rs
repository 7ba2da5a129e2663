//! The raw path's broker objects: Warren's shapes under a prefix, and their removal.

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{json, Value};

use crate::args::Args;
use crate::{Error, Job};

/// The broker the raw path talks to unless `--amqp` names another.
pub(super) const DEFAULT_AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub(super) struct Names {
    pub(super) commands_exchange: String,
    pub(super) commands_queue: String,
    pub(super) events: String,
    pub(super) gateway_queue: String,
}

impl Names {
    pub(super) fn new(prefix: &str) -> Names {
        Names {
            commands_exchange: format!("{prefix}.commands"),
            commands_queue: format!("{prefix}.commands.0"),
            events: format!("{prefix}.events"),
            gateway_queue: format!("{prefix}.gw.raw"),
        }
    }
}

/// Warren's shapes: a durable direct exchange routing to a durable single-active-consumer
/// queue; a durable topic exchange; the consumer's durable queue that expires 30 s after
/// its last consumer, bound to every room's messages.
pub(super) async fn declare(ch: &Channel, names: &Names) -> Result<(), Error> {
    let mut single_active = FieldTable::default();
    single_active.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    declare_bound(
        ch,
        (&names.commands_exchange, ExchangeKind::Direct),
        (&names.commands_queue, single_active),
        "shard.0",
    )
    .await?;
    let mut expires = FieldTable::default();
    expires.insert("x-expires".into(), AMQPValue::LongInt(30_000));
    declare_bound(
        ch,
        (&names.events, ExchangeKind::Topic),
        (&names.gateway_queue, expires),
        "room.#",
    )
    .await
}

/// A durable exchange, a durable queue with `args`, and the queue bound to the exchange
/// by `key`.
async fn declare_bound(
    ch: &Channel,
    (exchange, kind): (&str, ExchangeKind),
    (queue, args): (&str, FieldTable),
    key: &str,
) -> Result<(), Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(exchange.into(), kind, durable, FieldTable::default())
        .await?;
    ch.queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
        .await?;
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Deletes queues and exchanges, one channel each (a missing one closes its channel).
/// Returns `{"queues": n, "exchanges": n, "errors": [...]}`.
pub(super) async fn delete_all(
    conn: &Connection,
    queues: &[String],
    exchanges: &[String],
) -> Value {
    let mut errors = Vec::new();
    let (mut q, mut x) = (0, 0);
    let objects = (queues.iter().map(|name| ("queue", name)))
        .chain(exchanges.iter().map(|name| ("exchange", name)));
    for (kind, name) in objects {
        let result = async {
            let ch = conn.create_channel().await?;
            if kind == "queue" {
                ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                    .await?;
            } else {
                ch.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                    .await?;
            }
            let _ = ch.close(200, "done".into()).await;
            Ok::<_, lapin::Error>(())
        }
        .await;
        match result {
            Ok(()) if kind == "queue" => q += 1,
            Ok(()) => x += 1,
            Err(e) => errors.push(format!("{kind} {name}: {e}")),
        }
    }
    json!({"queues": q, "exchanges": x, "errors": errors})
}

/// `cleanup --queues a,b --exchanges c,d [--amqp URL]`.
pub fn cleanup(args: &Args) -> Result<Job, Error> {
    let url = args.string("amqp", DEFAULT_AMQP);
    let queues = args.list("queues", &[]);
    let exchanges = args.list("exchanges", &[]);
    Ok(Box::pin(async move {
        let conn = Connection::connect(&url, ConnectionProperties::default())
            .await
            .map_err(|e| Error::from(format!("connect to RabbitMQ: {e}")))?;
        let removed = delete_all(&conn, &queues, &exchanges).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.close(200, "done".into())).await;
        let mut out = serde_json::Map::new();
        out.insert(
            "ok".into(),
            json!(removed["errors"].as_array().is_some_and(Vec::is_empty)),
        );
        out.insert("removed".into(), removed);
        Ok(out)
    }))
}
