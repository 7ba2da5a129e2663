//! The dispatcher's metrics and health, served by [`crate::ops_listener`].

use std::sync::atomic::{AtomicBool, Ordering};

use common::metrics::prometheus_client::encoding::EncodeLabelSet;
use common::metrics::prometheus_client::metrics::counter::Counter;
use common::metrics::prometheus_client::metrics::family::Family;
use common::metrics::prometheus_client::metrics::gauge::Gauge;
use common::metrics::prometheus_client::metrics::histogram::Histogram;
use common::metrics::{latency_histogram, Registry};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// The command's `kind`.
    pub kind: String,
    /// `ok`, an error code, `dead` (dead-lettered) or `duplicate`.
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabel {
    pub shard: u32,
}

pub struct DispatcherMetrics {
    pub registry: Registry,
    /// Commands handled and acked, by kind and outcome.
    pub commands: Family<Outcome, Counter>,
    /// From publishing an event or reply to the broker's confirm.
    pub publish_confirm_seconds: Histogram,
    /// One Redis round trip (a script, a pipeline or a command).
    pub redis_seconds: Histogram,
    /// From a command's delivery to its ack (handling, storing, publishing).
    pub command_seconds: Histogram,
    /// Handling retried after a transient failure (Redis or broker).
    pub retries: Counter,
    /// 1 while this dispatcher is known to be the active consumer of the shard: it has
    /// had a delivery from it since subscribing (a consumer stays active until it goes).
    pub shard_active: Family<ShardLabel, Gauge>,
    /// How many shards the roster assigns to this dispatcher.
    pub shards_assigned: Gauge,
    /// Live dispatchers in the roster, as this one last read it.
    pub dispatchers: Gauge,
    /// Shards this dispatcher handed over to another (see [`crate::balance`]).
    pub handovers: Counter,
    /// Commands answered `unavailable` because Redis refused a write (full, or unable
    /// to persist).
    pub store_refusals: Counter,
    /// 1 while `/readyz` would answer 200, read when `/metrics` is rendered: an alert
    /// can see a dispatcher that runs but cannot work (Redis or the broker lost).
    pub ready: Gauge,
    amqp_up: AtomicBool,
    redis_up: AtomicBool,
}

impl DispatcherMetrics {
    pub fn new() -> Self {
        let mut m = DispatcherMetrics {
            registry: Registry::with_prefix("warren_dispatcher"),
            commands: Family::default(),
            publish_confirm_seconds: latency_histogram(),
            redis_seconds: latency_histogram(),
            command_seconds: latency_histogram(),
            retries: Counter::default(),
            shard_active: Family::default(),
            shards_assigned: Gauge::default(),
            dispatchers: Gauge::default(),
            handovers: Counter::default(),
            store_refusals: Counter::default(),
            ready: Gauge::default(),
            amqp_up: AtomicBool::new(false),
            redis_up: AtomicBool::new(false),
        };
        let r = &mut m.registry;
        common::register_fields!(r, m;
            commands: "Commands handled, by kind and outcome",
            publish_confirm_seconds: "Event or reply publish to broker confirm",
            redis_seconds: "Redis round trips",
            command_seconds: "Command delivery to ack",
            retries: "Commands retried after a transient failure",
            shard_active: "1 while this dispatcher is the active consumer of the shard",
            shards_assigned: "Shards the roster assigns to this dispatcher",
            dispatchers: "Live dispatchers in the roster",
            store_refusals: "Commands answered unavailable because Redis refused a write",
            handovers: "Shards handed over to another dispatcher",
            ready: "1 while /readyz answers 200: consuming its shards with Redis reachable",
        );
        m
    }

    /// Records whether this dispatcher is the active consumer of `shard`.
    pub fn set_shard_active(&self, shard: u32, active: bool) {
        self.shard_active
            .get_or_create(&ShardLabel { shard })
            .set(i64::from(active));
    }

    /// Whether this dispatcher is known to be the active consumer of `shard`.
    pub fn is_shard_active(&self, shard: u32) -> bool {
        self.shard_active.get_or_create(&ShardLabel { shard }).get() == 1
    }

    pub fn count(&self, kind: &str, outcome: &str) {
        let labels = Outcome {
            kind: kind.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.commands.get_or_create(&labels).inc();
    }

    pub fn set_amqp_up(&self, up: bool) {
        self.amqp_up.store(up, Ordering::Release);
    }

    pub fn set_redis_up(&self, up: bool) {
        self.redis_up.store(up, Ordering::Release);
    }

    /// Consuming every shard with Redis reachable.
    pub fn is_ready(&self) -> bool {
        self.amqp_up.load(Ordering::Acquire) && self.redis_up.load(Ordering::Acquire)
    }

    pub fn render(&self) -> String {
        self.ready.set(i64::from(self.is_ready()));
        common::metrics::render(&self.registry)
    }
}

impl Default for DispatcherMetrics {
    fn default() -> Self {
        Self::new()
    }
}
