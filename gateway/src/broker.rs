//! The gateway's side of RabbitMQ: one supervised connection, a confirmed publisher for
//! commands, and the binder that keeps the gateway queue's bindings equal to local
//! membership.
//!
//! The supervisor connects, checks that the dispatchers have declared the shared
//! topology (the gateway's account may not declare it), declares the gateway's own queue,
//! binds the gateway's own key `gw.<id>` (user events name it in their `CC` header) and
//! every room that has a local member, then consumes until the connection fails;
//! while it is down [`Broker::publish`] answers `Unavailable` at once and `/readyz`
//! says 503. Binding changes go through one task, the binder (`binder.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use common::amqp::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueDeleteOptions,
};
use common::amqp::lapin::types::{FieldTable, ShortString};
use common::amqp::lapin::{Channel, Confirmation, Connection};
use common::amqp::{
    check_topology, confirmed_channel, consume, consuming_channel, declare_expiring_queue,
    persistent_json_properties, Nodes,
};
use common::supervise::{supervise, Attempt, Backoff, Supervised};
use common::trace::TraceParent;
use common::Settings;
use futures_util::StreamExt;
use proto::amqp::{shard_key, Command, Names};
use proto::ids::shard_of;
use tokio_util::sync::CancellationToken;

use crate::deliver::Deliverer;
use crate::index::Index;
use crate::metrics::{Code, GatewayMetrics};
use crate::repair::{History, Marks};

mod binder;

use binder::BIND_CHANNELS;
pub use binder::{BindKey, BinderInbox, Bindings};

/// The broker could not take the command or binding now; the client may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("broker unavailable")]
pub struct Unavailable;

/// Why a broker connection ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error(transparent)]
    Amqp(#[from] common::amqp::lapin::Error),
    #[error("{0}")]
    Lost(&'static str),
}

pub struct Broker {
    settings: Arc<Settings>,
    names: Names,
    queue: String,
    login: String,
    index: Arc<Index>,
    metrics: Arc<GatewayMetrics>,
    /// Where each room with local members stands (gap repair).
    pub marks: Arc<Marks>,
    /// The queue's bindings, kept equal to local membership by the binder.
    pub bindings: Arc<Bindings>,
    /// The confirm-mode channel commands are published on, while the link is up.
    publish: RwLock<Option<Channel>>,
    ready: AtomicBool,
    /// This process has declared its queue once (the first time it deletes it first).
    started: AtomicBool,
}

impl Broker {
    /// Creates the broker handle and the receiver its binder task drains.
    pub fn new(
        settings: Arc<Settings>,
        gateway_id: &str,
        index: Arc<Index>,
        metrics: Arc<GatewayMetrics>,
    ) -> (Arc<Broker>, BinderInbox) {
        let names = Names::new(settings.amqp.prefix.clone());
        let queue = names.gateway_queue(gateway_id);
        let marks = Arc::new(Marks::default());
        let (bindings, inbox) = Bindings::new(
            gateway_id,
            &queue,
            names.events_exchange(),
            index.clone(),
            marks.clone(),
        );
        let broker = Broker {
            queue,
            login: settings.amqp.login(),
            names,
            settings,
            index,
            metrics,
            marks,
            bindings: Arc::new(bindings),
            publish: RwLock::new(None),
            ready: AtomicBool::new(false),
            started: AtomicBool::new(false),
        };
        (Arc::new(broker), inbox)
    }

    /// Connected, topology found, bindings restored.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// How many routing keys this gateway's queue is bound to (for `/stats`).
    pub fn binding_count(&self) -> usize {
        self.bindings.count()
    }

    /// The routing keys bound to this gateway's queue right now.
    pub fn bindings(&self) -> Vec<String> {
        self.bindings.keys()
    }

    /// Makes the binding of `key` follow local membership now, and waits until it does.
    pub async fn ensure(&self, key: BindKey) -> Result<(), Unavailable> {
        self.bindings.ensure(key).await
    }

    /// Asks for `key`'s binding to follow local membership, without waiting.
    pub async fn release(&self, key: BindKey) {
        self.bindings.release(key).await
    }

    fn publish_channel(&self) -> Option<Channel> {
        self.publish
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The channels of a new link (publish, control), or none when it is lost.
    fn set_link(&self, link: Option<(Channel, Arc<[Channel]>)>) {
        let (publish, control) = link.unzip();
        *self.publish.write().unwrap_or_else(|p| p.into_inner()) = publish;
        self.bindings.set_channels(control);
    }

    /// Publishes a command to its shard, persistent and mandatory, and waits for the
    /// broker's confirm. Only a confirmed, routed command counts as accepted.
    /// `trace` goes with it as its `traceparent`.
    pub async fn publish(
        &self,
        command: &Command,
        correlation: &str,
        trace: &TraceParent,
    ) -> Result<(), Unavailable> {
        let publish = self.publish_channel().ok_or(Unavailable)?;
        let body = serde_json::to_vec(command).map_err(|_| Unavailable)?;
        let shard = shard_of(&command.room(), self.settings.amqp.shards);
        let mut headers = FieldTable::default();
        trace.insert_into(&mut headers);
        let props = persistent_json_properties(command.body.kind())
            .with_headers(headers)
            .with_user_id(ShortString::from(self.login.clone()))
            .with_reply_to(ShortString::from(self.queue.clone()))
            .with_correlation_id(ShortString::from(correlation.to_owned()));
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let wait = Duration::from_millis(self.settings.gateway.publish_timeout_ms);
        let started = std::time::Instant::now();
        let confirmed = tokio::time::timeout(wait, async {
            publish
                .basic_publish(
                    self.names.commands_exchange().into(),
                    shard_key(shard).into(),
                    options,
                    &body,
                    props,
                )
                .await?
                .await
        })
        .await;
        let accepted = matches!(confirmed, Ok(Ok(Confirmation::Ack(None))));
        self.metrics
            .publish_confirm_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = if accepted { "accepted" } else { "unavailable" };
        self.metrics
            .commands
            .get_or_create(&Code::of(outcome))
            .inc();
        match confirmed {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(other)) => {
                tracing::warn!(?other, "command not accepted by the broker");
                Err(Unavailable)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "publishing a command failed");
                Err(Unavailable)
            }
            Err(_) => {
                tracing::warn!("publisher confirm timed out");
                Err(Unavailable)
            }
        }
    }

    /// Keeps a connection to RabbitMQ until `shutdown`, reconnecting with backoff.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let a = &self.settings.amqp;
        let backoff = Backoff::from_millis(a.backoff_min_ms, a.backoff_max_ms);
        let history = History::new(&self.settings.redis);
        let deliverer = Deliverer::new(
            self.index.clone(),
            self.metrics.clone(),
            self.marks.clone(),
            history,
            self.queue.clone(),
        );
        let mut link = LinkLife {
            nodes: Nodes::new(&a.addresses()),
            broker: &self,
            deliverer,
        };
        supervise(&mut link, backoff, &shutdown).await;
        self.ready.store(false, Ordering::Release);
        self.set_link(None);
    }

    /// Sets up the gateway's side of a new connection, then consumes until `shutdown` or
    /// a failure. After a lost link (`after_loss`), every room is read up to date from
    /// Redis before new events are consumed.
    async fn consume_on(
        &self,
        conn: &Connection,
        shutdown: &CancellationToken,
        attempt: &mut Attempt<'_>,
        deliverer: &mut Deliverer,
        after_loss: bool,
    ) -> Result<(), LinkError> {
        let control = conn.create_channel().await?;
        // The dispatchers declare the topology; a gateway's account may not (docs/BOTS.md).
        check_topology(&control, &self.names, self.settings.amqp.shards).await?;
        if !self.started.load(Ordering::Acquire) {
            // A gateway restarted under the same id would otherwise inherit its previous
            // run's queue and bindings; this process starts from an empty queue. Later
            // reconnects keep the queue, so nothing routed to it during a blip is lost.
            control
                .queue_delete(self.queue.clone().into(), QueueDeleteOptions::default())
                .await?;
        }
        // The queue outlives a short broker blip but not a dead gateway.
        declare_expiring_queue(&control, &self.queue, 30_000, None).await?;
        self.started.store(true, Ordering::Release);
        let publish = confirmed_channel(conn).await?;
        let consuming = consuming_channel(conn, self.settings.amqp.prefetch).await?;
        let exclusive = BasicConsumeOptions {
            exclusive: true,
            ..Default::default()
        };
        let tag = format!("{}-consumer", self.queue);
        let mut consumer = consume(&consuming, &self.queue, &tag, exclusive).await?;
        let mut control = vec![control];
        while control.len() < BIND_CHANNELS {
            control.push(conn.create_channel().await?);
        }
        // The first control channel also checked the topology and declared the queue.
        self.set_link(Some((publish, control.into())));
        if self.bindings.restore().await.is_err() {
            return Err(LinkError::Lost("restoring bindings failed"));
        }
        if after_loss {
            // Transient events routed while the link was down may be gone: whatever
            // the rooms stored meanwhile goes out first, in order.
            deliverer.repair_all().await;
        }
        self.ready.store(true, Ordering::Release);
        attempt.healthy();
        tracing::info!(queue = %self.queue, "connected to the broker");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                delivery = consumer.next() => match delivery {
                    Some(Ok(delivery)) => {
                        self.metrics.deliveries.inc();
                        deliverer.handle(&delivery).await;
                        delivery.acker.ack(BasicAckOptions::default()).await?;
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(LinkError::Lost("consumer cancelled")),
                }
            }
        }
    }
}

/// One broker connection's life after another, for [`supervise`].
struct LinkLife<'a> {
    broker: &'a Broker,
    nodes: Nodes,
    deliverer: Deliverer,
}

impl Supervised for LinkLife<'_> {
    type Error = LinkError;

    async fn run_once(&mut self, attempt: &mut Attempt<'_>) -> Result<(), LinkError> {
        let shutdown = attempt.shutdown();
        let name = format!("warren-gateway {}", self.broker.queue);
        let (conn, node) = self.nodes.connect(&name).await?;
        if self.nodes.len() > 1 {
            tracing::info!(node, "connected to broker node");
        }
        let after_loss = attempt.restarts() > 0;
        let result = self
            .broker
            .consume_on(&conn, shutdown, attempt, &mut self.deliverer, after_loss)
            .await;
        if conn.status().connected() {
            // Best effort: the broker drops the connection's state either way.
            conn.close(200, "gateway stopping".into()).await.ok();
        }
        result
    }

    fn failed(&mut self, error: LinkError, _wait: Duration) {
        tracing::warn!(error = %error, "broker connection lost");
        self.broker.ready.store(false, Ordering::Release);
        self.broker.set_link(None);
        // `bound` stays: those bindings may still exist on the broker, and the resync
        // after the reconnect removes the ones no longer wanted.
    }
}
