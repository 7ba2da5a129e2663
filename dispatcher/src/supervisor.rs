//! The connection loop: connect to Redis and RabbitMQ, write the rooms declared in
//! configuration, declare the topology, start one [`Shard`] per command queue, and when
//! the connection fails start over after a backoff.
//!
//! The command queues are single-active-consumer: every dispatcher subscribes to every
//! shard, one consumer of each is active and the others stand by to take over when it
//! goes. The [`Balancer`] shares the shards out among the live dispatchers; a shard that
//! hands itself over is subscribed again here, as a standby. On shutdown every shard
//! finishes the command in hand, sees what it has published through to the broker's
//! confirms and acks it, and closes its channel; then the connection is closed, and
//! unacked deliveries go back to the queue.
//!
//! With several broker addresses (`amqp.urls`), each connect starts at the node after
//! the last one used, so a dispatcher whose node went away moves to another.

use std::sync::Arc;
use std::time::Duration;

use common::amqp::{confirmed_channel, consume, consuming_channel, declare_topology, Nodes};
use common::supervise::{supervise, Attempt, Backoff, Supervised};
use common::Settings;
use lapin::options::BasicConsumeOptions;
use lapin::{Channel, Connection};
use proto::amqp::Names;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::balance::{Assignment, Balancer};
use crate::commands::{Handler, Rules};
use crate::intake::Accounts;
use crate::metrics::DispatcherMetrics;
use crate::publisher::Publisher;
use crate::retention::{self, Touched};
use crate::rooms::{self, ConfiguredRoom};
use crate::shard::{Ended, Shard, ShardContext, ShardError};

type Shards = JoinSet<(u32, Result<Ended, ShardError>)>;
use crate::store::{RoomStore, StoreError};

/// The connection name shown in the RabbitMQ console.
const CONNECTION_NAME: &str = "warren-dispatcher";

/// How long shards get to finish the command in hand once told to stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Why one connection ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("shard {0} stopped: {1}")]
    Shard(u32, String),
}

/// The dispatcher's connection loop.
pub struct Supervisor {
    settings: Settings,
    names: Names,
    rules: Rules,
    accounts: Arc<Accounts>,
    /// Rooms from configuration, checked by [`crate::run`].
    configured: Vec<ConfiguredRoom>,
    /// Tells this process's consumers apart in the console, and names it in the roster.
    instance: String,
    nodes: Nodes,
    store: Option<RoomStore>,
    metrics: Arc<DispatcherMetrics>,
}

impl Supervisor {
    pub fn new(settings: Settings, metrics: Arc<DispatcherMetrics>) -> Supervisor {
        Supervisor {
            metrics,
            names: Names::new(settings.amqp.prefix.clone()),
            rules: Rules::from_settings(&settings),
            accounts: Arc::new(Accounts::from_settings(&settings)),
            configured: rooms::plan(&settings.rooms.list).unwrap_or_else(|e| {
                tracing::error!(error = %e, "ignoring the rooms from configuration");
                Vec::new()
            }),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            nodes: Nodes::new(&settings.amqp.addresses()),
            store: None,
            settings,
        }
    }

    fn backoff(&self) -> Backoff {
        let amqp = &self.settings.amqp;
        Backoff::from_millis(amqp.backoff_min_ms, amqp.backoff_max_ms)
    }

    /// Serves until `shutdown`, reconnecting after every failure.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let backoff = self.backoff();
        supervise(&mut Connections(&mut self), backoff, &shutdown).await;
        tracing::info!("dispatcher stopped");
    }

    /// One connection's life. `Ok` only when it ended because of `shutdown`.
    async fn connection_life(
        &mut self,
        shutdown: &CancellationToken,
        attempt: &mut Attempt<'_>,
    ) -> Result<(), LinkError> {
        let connecting = async {
            let store = self.store().await?;
            self.configure_rooms(&store).await?;
            let (connection, node) = self.nodes.connect(CONNECTION_NAME).await?;
            Ok::<_, LinkError>((store, connection, node))
        };
        let (store, connection, node) = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            connected = connecting => connected?,
        };
        let stop = shutdown.child_token();
        let mut shards = JoinSet::new();
        let mut balancing = None;
        let (result, publish) = match self.start(&connection, store, &stop, &mut shards).await {
            Ok((publish, shared, balancer)) => {
                attempt.healthy();
                self.metrics.set_amqp_up(true);
                tracing::info!(shards = self.settings.amqp.shards, node, prefix = %self.names.prefix(), "dispatcher consuming");
                balancing = Some(tokio::spawn(balancer.run(stop.clone())));
                let watched = self
                    .watch(&connection, &shared, shutdown, &mut shards)
                    .await;
                (watched, Some(publish))
            }
            Err(e) => (Err(e), None),
        };
        self.metrics.set_amqp_up(false);
        stop.cancel();
        drain(&mut shards).await;
        if let Some(balancing) = balancing {
            // It leaves the roster on its way out (one Redis call).
            balancing.await.ok();
        }
        // Channels close themselves when dropped, but in the background: close them here
        // so that the connection's own close finds nothing half-closed.
        if let Some(publish) = publish {
            if let Err(e) = publish.close(200, "OK".into()).await {
                tracing::debug!(error = %e, "closing the publish channel failed");
            }
        }
        if let Err(e) = connection.close(200, "OK".into()).await {
            tracing::debug!(error = %e, "closing the connection failed");
        }
        result
    }

    /// The store, connected once; the connection manager reconnects by itself after.
    async fn store(&mut self) -> Result<RoomStore, LinkError> {
        if let Some(store) = &self.store {
            return Ok(store.clone());
        }
        let conn = common::store::connect(&self.settings.redis).await?;
        let store = RoomStore::new(conn, &self.settings.redis.prefix);
        self.metrics.set_redis_up(true);
        self.store = Some(store.clone());
        Ok(store)
    }

    /// Writes the rooms from configuration; again after every reconnect, in case the
    /// store lost them.
    async fn configure_rooms(&self, store: &RoomStore) -> Result<(), StoreError> {
        for room in &self.configured {
            match store.configure(room, common::now_ms()).await {
                Ok(()) => {}
                // A full store keeps what it has: the rooms are most likely there
                // already, and consuming (and answering `unavailable`) beats waiting.
                Err(StoreError::Refused(e)) => {
                    tracing::warn!(room = %room.id, error = %e, "the store refuses writes; room from configuration not rewritten");
                }
                Err(e) => return Err(e),
            }
        }
        if !self.configured.is_empty() {
            tracing::info!(
                rooms = self.configured.len(),
                "rooms from configuration written"
            );
        }
        Ok(())
    }

    /// Declares the topology and starts a consumer per shard. Returns the publish
    /// channel, what the shards share (to subscribe again after a handover) and the
    /// balancer to run.
    async fn start(
        &self,
        connection: &Connection,
        store: RoomStore,
        stop: &CancellationToken,
        shards: &mut Shards,
    ) -> Result<(Channel, ShardContext, Balancer), LinkError> {
        let amqp = &self.settings.amqp;
        let setup = connection.create_channel().await?;
        declare_topology(&setup, &self.names, amqp.shards, amqp.command_queue_type).await?;
        setup.close(200, "OK".into()).await?;

        let publish = confirmed_channel(connection).await?;
        let rooms = &self.settings.rooms;
        let touched = match (
            rooms.idle_expiry(),
            rooms.touch_every(Duration::from_secs(10)),
        ) {
            (Some(idle), Some(every)) => {
                let touched = Arc::new(Touched::default());
                let renewing =
                    retention::run(store.clone(), touched.clone(), idle, every, stop.clone());
                tokio::spawn(renewing);
                Some(touched)
            }
            _ => None,
        };
        let (assignment, assigned) =
            watch::channel(Assignment::everything(amqp.shards, &self.instance));
        let balancer = Balancer {
            id: self.instance.clone(),
            shards: amqp.shards,
            store: store.clone(),
            names: self.names.clone(),
            channel: connection.create_channel().await?,
            assignment,
            metrics: self.metrics.clone(),
        };
        let shared = ShardContext {
            publisher: Publisher::new(publish.clone(), &self.names, self.metrics.clone()),
            handler: Handler::new(
                store,
                self.rules.clone(),
                &self.configured,
                self.metrics.clone(),
                touched,
            ),
            accounts: self.accounts.clone(),
            backoff: self.backoff(),
            metrics: self.metrics.clone(),
            stop: stop.clone(),
            room_order: self.settings.dispatcher.publish_in_room_order,
            shards: amqp.shards,
            assignment: assigned,
        };
        for index in 0..amqp.shards {
            self.subscribe(connection, index, &shared, shards).await?;
        }
        Ok((publish, shared, balancer))
    }

    /// Subscribes to shard `index` (active if nobody else is, else a standby) and starts
    /// its consumer.
    async fn subscribe(
        &self,
        connection: &Connection,
        index: u32,
        shared: &ShardContext,
        shards: &mut Shards,
    ) -> Result<(), LinkError> {
        let channel = consuming_channel(connection, self.settings.amqp.prefetch).await?;
        let queue = self.names.commands_queue(index);
        let tag = format!("dispatcher-{}-{index}", self.instance);
        let consumer = consume(&channel, &queue, &tag, BasicConsumeOptions::default()).await?;
        let shard = Shard::new(index, channel, consumer, shared.clone());
        shards.spawn(async move { (index, shard.run().await) });
        Ok(())
    }

    /// Waits for shutdown (`Ok`) or for a shard to fail (`Err`: the connection is no
    /// longer whole); a shard that handed itself over is subscribed again.
    async fn watch(
        &self,
        connection: &Connection,
        shared: &ShardContext,
        shutdown: &CancellationToken,
        shards: &mut Shards,
    ) -> Result<(), LinkError> {
        loop {
            let ended = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                Some(ended) = shards.join_next() => ended,
            };
            match ended {
                Ok((index, Ok(Ended::HandedOver))) => {
                    self.subscribe(connection, index, shared, shards).await?;
                }
                Ok((index, Ok(Ended::Stopped))) => {
                    return Err(LinkError::Shard(index, "ended".into()))
                }
                Ok((index, Err(e))) => return Err(LinkError::Shard(index, e.to_string())),
                Err(e) => return Err(LinkError::Shard(u32::MAX, format!("task failed: {e}"))),
            }
        }
    }
}

/// One connection's life after another, for [`supervise`].
struct Connections<'a>(&'a mut Supervisor);

impl Supervised for Connections<'_> {
    type Error = LinkError;

    async fn run_once(&mut self, attempt: &mut Attempt<'_>) -> Result<(), LinkError> {
        let shutdown = attempt.shutdown();
        self.0.connection_life(shutdown, attempt).await
    }

    fn failed(&mut self, error: LinkError, wait: Duration) {
        tracing::warn!(error = %error, "dispatcher disconnected");
        tracing::info!(wait_ms = wait.as_millis() as u64, "reconnecting");
    }
}

/// Lets stopped shards finish the command in hand, then aborts what is left.
async fn drain(shards: &mut Shards) {
    let finished = tokio::time::timeout(STOP_GRACE, async {
        while let Some(ended) = shards.join_next().await {
            match ended {
                Ok((_, Ok(_))) => {}
                Ok((index, Err(e))) => tracing::debug!(shard = index, error = %e, "shard ended"),
                Err(e) => tracing::warn!(error = %e, "shard task failed"),
            }
        }
    })
    .await;
    if finished.is_err() {
        tracing::warn!("shards did not stop in time; abandoning their commands to redelivery");
        shards.shutdown().await;
    }
}
