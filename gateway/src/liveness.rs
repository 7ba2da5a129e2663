//! This gateway in Redis: its liveness, and the users it holds.
//!
//! - `<prefix>:{gw}:<id>:alive`, renewed every `presence.renew_s` with an expiry of
//!   `presence.ttl_s`. Presence entries name the gateway that holds the connection;
//!   dispatchers treat entries of a gateway whose key is gone as gone. The value is
//!   this process's incarnation, so entries left by an earlier run under the same id
//!   are recognised as stale too.
//! - `<prefix>:{gw}:<id>:users`, the set of users with a connection here, renewed with
//!   the same expiry, and `<prefix>:{gw}:gateways`, every gateway with the time its
//!   registration expires. A dispatcher addresses a user event to the gateways that
//!   hold the user in one publish (the `CC` header), so a session costs no broker
//!   operation: opening it adds the user here before the `welcome`, closing the user's
//!   last one removes it.
//! - The `{gw}` hash tag keeps all of it in one slot of a Redis Cluster, so the
//!   pipelines below (which touch this gateway's three keys together) run on one node.
//!
//! One task owns the Redis connection and applies every change in order. Requests only
//! say "make this user follow local connections": the task reads the index when it
//! applies them, so a close and a reopen of the same user collapse into the right final
//! state, and whatever queued up meanwhile goes to Redis in one pipeline. A gateway that
//! dies leaves its entries to expire with its liveness; one that stops cleanly removes
//! them at once; Redis losing its data is noticed at the next renewal, which writes the
//! whole set again.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::store::redis;
use common::store::RedisConnection;
use common::supervise::{supervise, Attempt, Backoff, Supervised};
use common::Settings;
use proto::keys::Keys;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::broker::Unavailable;
use crate::index::Index;

/// The most requests applied in one pipeline.
const BATCH: usize = 4096;

/// Waits before trying a failed pipeline again (Redis restarted, or a cluster node
/// failed over: the connection reconnects after the first failure).
const RETRY_MS: [u64; 3] = [50, 200, 500];

/// Whether the last renewal reached Redis.
#[derive(Default)]
pub struct StoreHealth(AtomicBool);

impl StoreHealth {
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, up: bool) {
        self.0.store(up, Ordering::Release);
    }
}

type Answer = oneshot::Sender<Result<(), Unavailable>>;

/// A request: make `user`'s entry follow the index, and say when it does.
struct Follow(String, Option<Answer>);

/// The handle connections use. Cloning the `Arc` is the only copy.
pub struct Liveness {
    tx: mpsc::Sender<Follow>,
    pub health: StoreHealth,
}

/// The receiving end, handed to [`run`].
pub struct LivenessInbox(mpsc::Receiver<Follow>);

impl Liveness {
    pub fn new() -> (Arc<Liveness>, LivenessInbox) {
        let (tx, rx) = mpsc::channel(16 * 1024);
        let liveness = Liveness {
            tx,
            health: StoreHealth::default(),
        };
        (Arc::new(liveness), LivenessInbox(rx))
    }

    /// Makes Redis say this gateway holds `user` (who has a connection in the index
    /// now), and waits until it does.
    pub async fn hold(&self, user: &str) -> Result<(), Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Follow(user.to_owned(), Some(tx)))
            .await
            .map_err(|_| Unavailable)?;
        rx.await.map_err(|_| Unavailable)?
    }

    /// Asks for `user`'s entry to follow the index (after a close), without waiting.
    pub async fn release(&self, user: &str) {
        if self.tx.send(Follow(user.to_owned(), None)).await.is_err() {
            tracing::debug!("liveness task stopped; the entry expires with the gateway's");
        }
    }
}

/// Renews liveness and applies user changes until `shutdown`, then removes both.
pub async fn run(
    settings: Arc<Settings>,
    gateway_id: String,
    liveness: Arc<Liveness>,
    index: Arc<Index>,
    inbox: LivenessInbox,
    shutdown: CancellationToken,
) {
    let state = State::new(&settings, &gateway_id, liveness.clone(), index);
    let every = Duration::from_secs(settings.presence.renew_s.clamp(1, state.ttl_s));
    let mut renew = tokio::time::interval(every);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let a = &settings.amqp;
    let backoff = Backoff::from_millis(a.backoff_min_ms, a.backoff_max_ms);
    let mut registration = Registration {
        settings: &settings,
        state,
        inbox,
        renew,
    };
    supervise(&mut registration, backoff, &shutdown).await;
    liveness.health.set(false);
}

/// Why this gateway could not register in Redis (it tries again after a wait).
#[derive(Debug, thiserror::Error)]
enum RegistrationError {
    #[error("{0}")]
    Unreachable(redis::RedisError),
    #[error("{0}")]
    Refused(redis::RedisError),
}

/// The liveness task's state across Redis connections, for [`supervise`]. Once
/// connected it stays connected: the connection reconnects by itself.
struct Registration<'a> {
    settings: &'a Settings,
    state: State,
    inbox: LivenessInbox,
    renew: tokio::time::Interval,
}

impl Supervised for Registration<'_> {
    type Error = RegistrationError;

    async fn run_once(&mut self, attempt: &mut Attempt<'_>) -> Result<(), RegistrationError> {
        let shutdown = attempt.shutdown();
        let mut c = common::store::connect(&self.settings.redis)
            .await
            .map_err(RegistrationError::Unreachable)?;
        // This run starts from an empty set: a previous run under the same id may have
        // left one (killed before its entries expired).
        self.state
            .clear(&mut c)
            .await
            .map_err(RegistrationError::Refused)?;
        attempt.healthy();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.renew.tick() => self.state.renew(&mut c).await,
                first = self.inbox.0.recv() => match first {
                    Some(first) => self.state.apply(&mut c, first, &mut self.inbox).await,
                    None => break,
                },
            }
        }
        self.state.liveness.health.set(false);
        self.state.remove(&mut c).await;
        Ok(())
    }

    fn failed(&mut self, error: RegistrationError, _wait: Duration) {
        match &error {
            RegistrationError::Unreachable(e) => {
                self.state.liveness.health.set(false);
                tracing::warn!(error = %e, "Redis unreachable; presence not renewed");
            }
            RegistrationError::Refused(e) => {
                tracing::warn!(error = %e, "Redis refused this gateway's registration");
            }
        }
        self.state.refuse_waiting(&mut self.inbox);
    }
}

/// What the task knows: its keys, and whether the set must be written whole again.
struct State {
    liveness: Arc<Liveness>,
    index: Arc<Index>,
    id: String,
    alive: String,
    users: String,
    gateways: String,
    incarnation: String,
    ttl_s: u64,
    /// The set may lack users (Redis lost it, or a change failed): write it whole at
    /// the next renewal.
    resync: bool,
}

impl State {
    fn new(settings: &Settings, id: &str, liveness: Arc<Liveness>, index: Arc<Index>) -> State {
        let keys = Keys::new(settings.redis.prefix.as_str());
        State {
            liveness,
            index,
            id: id.to_owned(),
            alive: keys.gateway_alive(id),
            users: keys.gateway_users(id),
            gateways: keys.gateways(),
            // A fresh value per start: entries written under a previous run of the same
            // id carry the old value, so dispatchers can tell them from this run's.
            incarnation: uuid::Uuid::new_v4().simple().to_string(),
            ttl_s: settings.presence.ttl_s.max(1),
            resync: false,
        }
    }

    async fn clear(&mut self, c: &mut RedisConnection) -> redis::RedisResult<()> {
        let cleared: redis::RedisResult<()> =
            redis::cmd("DEL").arg(&self.users).query_async(c).await;
        if cleared.is_ok() {
            self.renew(c).await;
        }
        cleared
    }

    /// Renews the liveness key, the registration and the users' set; writes the set
    /// whole when it was lost.
    async fn renew(&mut self, c: &mut RedisConnection) {
        let expires_ms = common::now_ms() + self.ttl_s * 1000;
        let renewed: redis::RedisResult<((), (), bool)> = redis::pipe()
            .set_ex(&self.alive, &self.incarnation, self.ttl_s)
            .zadd(&self.gateways, &self.id, expires_ms)
            .expire(&self.users, self.ttl_s as i64)
            .query_async(c)
            .await;
        match renewed {
            Ok(((), (), kept)) => {
                self.liveness.health.set(true);
                let held = self.index.users();
                if (!kept || self.resync) && !held.is_empty() {
                    if !self.resync {
                        tracing::warn!(
                            "this gateway's users were gone from Redis; writing them again"
                        );
                    }
                    let written: redis::RedisResult<()> = redis::pipe()
                        .sadd(&self.users, &held)
                        .ignore()
                        .expire(&self.users, self.ttl_s as i64)
                        .ignore()
                        .query_async(c)
                        .await;
                    self.resync = written.is_err();
                }
            }
            Err(e) => {
                self.liveness.health.set(false);
                self.resync = true;
                tracing::warn!(error = %e, "renewing presence failed");
            }
        }
    }

    /// Applies `first` and every request queued behind it, in one pipeline.
    async fn apply(&mut self, c: &mut RedisConnection, first: Follow, inbox: &mut LivenessInbox) {
        let mut asked = vec![first];
        while asked.len() < BATCH {
            match inbox.0.try_recv() {
                Ok(more) => asked.push(more),
                Err(_) => break,
            }
        }
        let users: HashSet<&str> = asked.iter().map(|f| f.0.as_str()).collect();
        let (add, remove): (Vec<&str>, Vec<&str>) = users
            .into_iter()
            .partition(|u| self.index.user_has_sessions(u));
        let mut pipe = redis::pipe();
        if !add.is_empty() {
            pipe.sadd(&self.users, &add).ignore();
            pipe.expire(&self.users, self.ttl_s as i64).ignore();
        }
        if !remove.is_empty() {
            pipe.srem(&self.users, &remove).ignore();
        }
        // A connection Redis dropped (a restart, a failover) fails the next command while
        // it reconnects: try again a little later before refusing anybody.
        let mut done: redis::RedisResult<()> = pipe.query_async(c).await;
        for wait_ms in RETRY_MS {
            if done.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            done = pipe.query_async(c).await;
        }
        let result = match done {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "recording this gateway's users failed");
                self.resync = true;
                Err(Unavailable)
            }
        };
        for Follow(_, answer) in asked {
            if let Some(answer) = answer {
                // The asker may have gone (its connection closed).
                answer.send(result).ok();
            }
        }
    }

    /// Removes this gateway's keys (on a clean stop): its users are gone at once.
    async fn remove(&self, c: &mut RedisConnection) {
        let removed: redis::RedisResult<()> = redis::pipe()
            .del(&self.alive)
            .del(&self.users)
            .zrem(&self.gateways, &self.id)
            .query_async(c)
            .await;
        if let Err(e) = removed {
            tracing::warn!(error = %e, "presence keys not removed; they expire on their own");
        }
    }

    /// While Redis is unreachable, nobody waits: new sessions are refused.
    fn refuse_waiting(&mut self, inbox: &mut LivenessInbox) {
        self.resync = true;
        while let Ok(Follow(_, answer)) = inbox.0.try_recv() {
            if let Some(answer) = answer {
                answer.send(Err(Unavailable)).ok();
            }
        }
    }
}
