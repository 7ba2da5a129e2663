//! RabbitMQ plumbing shared by gateways and dispatchers.
//!
//! Dispatchers declare the shared topology ([`declare_topology`], idempotent); gateways
//! only check that it is there ([`check_topology`]), because a gateway's account may not
//! configure (so neither declare nor delete) the shared exchanges and queues. A gateway
//! therefore waits for a dispatcher, or for the deployment's definitions, to have created
//! it, and never publishes into an exchange with no queue behind it.
//! Reconnecting is [`crate::supervise`]'s: connect, declare, consume until the
//! connection fails, wait with backoff, start again.

use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use proto::amqp::Names;
use proto::topology::{self, topology, Arg};

use crate::settings::QueueType;

pub use lapin;

/// Where the reconnect backoff lives now; kept here for the callers that still name it so.
pub use crate::supervise::Backoff;

/// Connects with a connection name that shows in the RabbitMQ console.
pub async fn connect(url: &str, connection_name: &str) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default()
        .with_connection_name(LongString::from(connection_name.to_owned()));
    Connection::connect(url, props).await
}

/// How long one node may take to accept a connection before the next one is tried: a
/// node that is down refuses at once, but one behind a dead host would hold the whole
/// list up for the operating system's connect timeout.
const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The nodes of a cluster, tried in turn. Each connect starts at the node after the one
/// the last connection was made to, so a service whose node went away moves on to the
/// next instead of waiting for it, and a node that comes back is used again in its turn.
#[derive(Debug, Clone)]
pub struct Nodes {
    urls: Vec<String>,
    /// The node the next attempt starts at.
    next: usize,
}

impl Nodes {
    /// `urls` must not be empty ([`crate::settings::AmqpSettings::addresses`] never is).
    pub fn new(urls: &[&str]) -> Nodes {
        assert!(!urls.is_empty(), "no broker address");
        Nodes {
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            next: 0,
        }
    }

    /// Connects to the first node that answers, from where the last connect left off.
    /// Returns the connection and the node's index in the list; the error is the last
    /// node's when none answers.
    pub async fn connect(
        &mut self,
        connection_name: &str,
    ) -> Result<(Connection, usize), lapin::Error> {
        let mut last = None;
        for _ in 0..self.urls.len() {
            let index = self.next % self.urls.len();
            self.next = index + 1;
            let attempt = tokio::time::timeout(
                NODE_CONNECT_TIMEOUT,
                connect(&self.urls[index], connection_name),
            );
            match attempt.await {
                Ok(Ok(connection)) => {
                    // The next connect (after this one is lost) tries the next node first.
                    return Ok((connection, index));
                }
                Ok(Err(e)) => {
                    tracing::debug!(node = index, error = %e, "broker node did not answer");
                    last = Some(e);
                }
                Err(_) => {
                    tracing::debug!(node = index, "broker node did not answer in time");
                    last = Some(lapin::Error::from(lapin::ErrorKind::IOError(
                        std::sync::Arc::new(std::io::Error::from(std::io::ErrorKind::TimedOut)),
                    )));
                }
            }
        }
        Err(last.expect("at least one node was tried"))
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }
}

/// Declares a durable queue that the broker deletes once it has had no consumer for
/// `expires_ms` (`x-expires`), and that keeps at most `max_length` messages, dropping
/// the oldest (`x-max-length`), when given.
pub async fn declare_expiring_queue(
    ch: &Channel,
    name: &str,
    expires_ms: i32,
    max_length: Option<i32>,
) -> Result<(), lapin::Error> {
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongInt(expires_ms));
    if let Some(max_length) = max_length {
        args.insert("x-max-length".into(), AMQPValue::LongInt(max_length));
    }
    ch.queue_declare(name.into(), QueueDeclareOptions::durable(), args)
        .await?;
    Ok(())
}

/// A new channel with publisher confirms on, for publishes that count only once the
/// broker confirms them.
pub async fn confirmed_channel(conn: &Connection) -> Result<Channel, lapin::Error> {
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// A new channel that holds at most `prefetch` unacked deliveries, for consuming.
pub async fn consuming_channel(conn: &Connection, prefetch: u16) -> Result<Channel, lapin::Error> {
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    Ok(channel)
}

/// Starts consuming `queue` on `channel` under the consumer tag `tag` (shown in the
/// RabbitMQ console).
pub async fn consume(
    channel: &Channel,
    queue: &str,
    tag: &str,
    options: BasicConsumeOptions,
) -> Result<Consumer, lapin::Error> {
    channel
        .basic_consume(queue.into(), tag.into(), options, FieldTable::default())
        .await
}

/// Declares the exchanges, queues and bindings every deployment has, as the contract
/// describes them ([`proto::topology::topology`]): exchanges first, so that a queue's
/// dead-letter exchange exists when the queue is declared, then queues, then bindings.
pub async fn declare_topology(
    ch: &Channel,
    names: &Names,
    shards: u32,
    queue_type: QueueType,
) -> Result<(), lapin::Error> {
    let shared = topology(names, shards, queue_type.as_str());
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for exchange in shared.exchanges {
        let kind = match exchange.kind {
            topology::ExchangeKind::Direct => ExchangeKind::Direct,
            topology::ExchangeKind::Topic => ExchangeKind::Topic,
            topology::ExchangeKind::Fanout => ExchangeKind::Fanout,
        };
        ch.exchange_declare(exchange.name.into(), kind, durable, FieldTable::default())
            .await?;
    }
    for queue in shared.queues {
        let mut args = FieldTable::default();
        for (key, value) in queue.arguments {
            let value = match value {
                Arg::Bool(b) => AMQPValue::Boolean(b),
                Arg::Str(s) => AMQPValue::LongString(s.into()),
            };
            args.insert(key.into(), value);
        }
        ch.queue_declare(queue.name.into(), QueueDeclareOptions::durable(), args)
            .await?;
    }
    for binding in shared.bindings {
        ch.queue_bind(
            binding.queue.into(),
            binding.exchange.into(),
            binding.routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// Checks, declaring nothing, that the shared topology is there: the commands and events
/// exchanges and every shard queue. Passive declares need no permission, so an account
/// without configure on the shared objects (a gateway's) can tell whether the deployment
/// is ready. Something missing fails with `NOT_FOUND`, which closes the channel: the
/// caller reconnects later, as after any broker error.
pub async fn check_topology(ch: &Channel, names: &Names, shards: u32) -> Result<(), lapin::Error> {
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    for (exchange, kind) in [
        (names.commands_exchange(), ExchangeKind::Direct),
        (names.events_exchange(), ExchangeKind::Topic),
    ] {
        ch.exchange_declare(exchange.into(), kind, passive, FieldTable::default())
            .await?;
    }
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    for shard in 0..shards {
        ch.queue_declare(
            names.commands_queue(shard).into(),
            passive,
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// Properties of a JSON publish: content type, a fresh `message_id`, `timestamp`, and
/// `type` equal to the body's `kind`.
pub fn json_properties(kind: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(ShortString::from(uuid::Uuid::new_v4().to_string()))
        .with_timestamp(crate::now_ms() / 1000)
        .with_type(ShortString::from(kind.to_owned()))
}

/// [`json_properties`], persistent (delivery mode 2).
pub fn persistent_json_properties(kind: &str) -> BasicProperties {
    json_properties(kind).with_delivery_mode(2)
}

/// The AMQP login in a URL (`amqp://user:pass@host/...`), for the `user_id` property,
/// which RabbitMQ checks against the connection's login.
pub fn login_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    match rest.split_once('@') {
        Some((cred, _)) => {
            let user = cred.split(':').next().unwrap_or("guest");
            percent_decode(user)
        }
        None => "guest".to_owned(),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_is_read_from_the_url() {
        assert_eq!(login_of("amqp://guest:guest@127.0.0.1:5672/%2f"), "guest");
        assert_eq!(login_of("amqp://warren-gateway:pw@h/%2f"), "warren-gateway");
        assert_eq!(login_of("amqp://a%40b:pw@h/"), "a@b");
        assert_eq!(login_of("amqp://127.0.0.1/"), "guest");
    }
}
