//! The shared RabbitMQ topology every service declares, as data.
//!
//! `common::amqp::declare_topology` declares exactly this, and
//! `deploy/rabbitmq/definitions.json` must hold exactly this (a declaration that differs
//! from what the broker has fails with `PRECONDITION_FAILED`), which
//! `tests/tests/deploy_agreement/` checks. Every exchange and queue is durable, none
//! auto-deletes, and exchanges take no arguments.

use crate::amqp::{shard_key, Names};

/// An exchange's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Topic,
    Fanout,
}

impl ExchangeKind {
    /// The name RabbitMQ gives the type.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Fanout => "fanout",
        }
    }
}

/// A queue argument's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Bool(bool),
    Str(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub name: String,
    pub kind: ExchangeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub name: String,
    pub arguments: Vec<(&'static str, Arg)>,
}

/// A binding of a queue to an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub exchange: String,
    pub queue: String,
    pub routing_key: String,
}

/// Everything shared: what a dispatcher declares and a gateway checks is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub exchanges: Vec<Exchange>,
    pub queues: Vec<Queue>,
    pub bindings: Vec<Binding>,
}

/// The queue argument that makes a queue `classic` or `quorum` (`amqp.command_queue_type`).
pub const QUEUE_TYPE: &str = "x-queue-type";

/// The topology under `names` with `shards` command queues of type `queue_type`:
/// - `<p>.dead`, a fanout exchange and a queue of the command queues' type bound to it
///   (on a cluster, a classic queue whose node is down cannot even be declared again,
///   which would keep every service from reconnecting through another node);
/// - `<p>.commands`, a direct exchange, and `<p>.commands.<n>` bound to it by
///   `shard.<n>`, single-active-consumer, dead-lettering to `<p>.dead`;
/// - `<p>.events`, a topic exchange.
pub fn topology(names: &Names, shards: u32, queue_type: &str) -> Topology {
    let queue_type = || (QUEUE_TYPE, Arg::Str(queue_type.into()));
    let exchange = |name: String, kind| Exchange { name, kind };
    let mut queues = vec![Queue {
        name: names.dead(),
        arguments: vec![queue_type()],
    }];
    let mut bindings = vec![Binding {
        exchange: names.dead(),
        queue: names.dead(),
        routing_key: String::new(),
    }];
    for shard in 0..shards {
        queues.push(Queue {
            name: names.commands_queue(shard),
            arguments: vec![
                ("x-single-active-consumer", Arg::Bool(true)),
                queue_type(),
                ("x-dead-letter-exchange", Arg::Str(names.dead())),
            ],
        });
        bindings.push(Binding {
            exchange: names.commands_exchange(),
            queue: names.commands_queue(shard),
            routing_key: shard_key(shard),
        });
    }
    Topology {
        exchanges: vec![
            exchange(names.dead(), ExchangeKind::Fanout),
            exchange(names.commands_exchange(), ExchangeKind::Direct),
            exchange(names.events_exchange(), ExchangeKind::Topic),
        ],
        queues,
        bindings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_has_a_queue_bound_by_its_key() {
        let t = topology(&Names::new("w"), 2, "quorum");
        assert_eq!(t.exchanges.len(), 3);
        assert_eq!(t.queues.len(), 3);
        assert_eq!(t.queues[0].name, "w.dead");
        assert_eq!(t.queues[2].name, "w.commands.1");
        assert!(t.queues[2]
            .arguments
            .contains(&(QUEUE_TYPE, Arg::Str("quorum".into()))));
        assert_eq!(
            t.bindings[2],
            Binding {
                exchange: "w.commands".into(),
                queue: "w.commands.1".into(),
                routing_key: "shard.1".into()
            }
        );
    }
}
