//! Warren's WebSocket gateway.
//!
//! A gateway holds client connections and nothing else that must outlive it. Its
//! pieces, outermost first:
//! - [`server`]: the accept loop and HTTP/1.1 connections, with a deadline on the
//!   request head (slowloris) and a cap on connections not yet upgraded.
//! - [`http`]: on the public listener `/ws` (token, Origin, readiness and caps checked
//!   before the upgrade); on the operations listener `/healthz`, `/readyz`, `/stats`,
//!   `/metrics`.
//! - [`connection`]: one task per connection that owns the socket, the bounded outbound
//!   queue, the per-room join filter, liveness (pings, idle timeout) and the checks on
//!   every inbound frame.
//! - [`index`]: the local maps (sessions, rooms, users) that fan-out reads.
//! - [`broker`]: the supervised RabbitMQ link — confirmed command publishing and the
//!   binder that makes the queue's bindings follow local membership.
//! - [`deliver`]: deliveries from the gateway's queue to local connections.
//! - [`limits`]: send rate limit, frame budget and bad-frame strikes.
//! - [`metrics`]: what `/metrics` shows.
//! - [`presence`]: this gateway's liveness key, which its presence entries depend on,
//!   and the users it holds, which user events are addressed by.
//! - [`repair`]: where each room stands, and reading a gap from the room's history.
//! - [`web`]: the browser client at `/` and development tokens.

pub mod broker;
pub mod connection;
pub mod deliver;
pub mod http;
pub mod index;
pub mod limits;
pub mod metrics;
pub mod presence;
pub mod repair;
pub mod retention;
pub mod server;
pub mod user_cap;
pub mod web;
pub mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::auth::Verifier;
use common::Settings;
use proto::server::Limits;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::index::Index;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Auth(#[from] common::auth::AuthError),
    /// Development authentication on a listener others can reach.
    #[error("{0}")]
    Insecure(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// What every connection of this gateway shares. Cloning the `Arc` is the only copy.
pub struct Gateway {
    pub id: String,
    pub settings: Arc<Settings>,
    pub verifier: Verifier,
    pub index: Arc<Index>,
    pub broker: Arc<Broker>,
    pub metrics: Arc<metrics::GatewayMetrics>,
    /// This gateway's liveness and the users it holds, in Redis.
    pub presence: Arc<presence::Registry>,
    pub caps: Arc<Caps>,
    /// The cap on one user's connections across gateways.
    pub user_cap: Arc<user_cap::UserCap>,
    pub limits: Limits,
    /// Tracks connections and their last publishes, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Cancelled on SIGTERM: connections close with 1001.
    pub shutdown: CancellationToken,
}

/// The connection caps: per gateway and per user.
pub struct Caps {
    max_total: usize,
    max_per_user: usize,
    total: AtomicUsize,
    per_user: Mutex<HashMap<String, usize>>,
}

impl Gateway {
    /// Broker link up with bindings restored, and Redis reachable.
    pub fn is_ready(&self) -> bool {
        self.broker.is_ready() && self.presence.health.is_up() && !self.shutdown.is_cancelled()
    }
}

impl Caps {
    pub fn new(max_total: usize, max_per_user: usize) -> Self {
        Caps {
            max_total,
            max_per_user,
            total: AtomicUsize::new(0),
            per_user: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a place for `user`, or None when a cap is reached.
    pub fn admit(self: &Arc<Self>, user: &str) -> Option<Admission> {
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let mine = per_user.get(user).copied().unwrap_or(0);
        if mine >= self.max_per_user || self.total.load(Ordering::Acquire) >= self.max_total {
            return None;
        }
        per_user.insert(user.to_owned(), mine + 1);
        self.total.fetch_add(1, Ordering::AcqRel);
        Some(Admission {
            caps: self.clone(),
            user: user.to_owned(),
            place: None,
        })
    }
}

/// A place under the caps, given back when dropped.
pub struct Admission {
    caps: Arc<Caps>,
    user: String,
    /// The place among the user's connections on every gateway, when checked.
    pub place: Option<user_cap::Place>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut per_user = self.caps.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                per_user.remove(&self.user);
            }
        }
        self.caps.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Binds both listeners, then serves until `shutdown` is cancelled: stops accepting,
/// closes every connection with 1001, lets their last commands go out, and returns
/// within `gateway.shutdown_grace_s`. Refuses to start with development authentication
/// on a public listener that is not loopback ([`Settings::dev_auth_exposure`]).
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), GatewayError> {
    if let Some(why) = settings.dev_auth_exposure() {
        return Err(GatewayError::Insecure(why));
    }
    let listener = bind(&settings.gateway.listen, common::listen::LISTEN_FD).await?;
    let ops = bind(&settings.gateway.ops_listen, common::listen::OPS_LISTEN_FD).await?;
    serve(settings, listener, ops, shutdown).await
}

async fn bind(addr: &str, handed_over: &str) -> Result<tokio::net::TcpListener, GatewayError> {
    common::listen::bind(addr, handed_over)
        .await
        .map_err(|source| GatewayError::Listen {
            addr: addr.to_owned(),
            source,
        })
}

/// As [`run`], on listeners the caller bound (tests bind `127.0.0.1:0`): `listener`
/// public, `ops` for the operations endpoints.
pub async fn serve(
    settings: Settings,
    listener: tokio::net::TcpListener,
    ops: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    if let Some(why) = settings.dev_auth_exposure() {
        return Err(GatewayError::Insecure(why));
    }
    let settings = Arc::new(settings);
    let id = match settings.gateway.id.trim() {
        "" => format!("gw-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        id => id.to_owned(),
    };
    // The id is part of a routing key (`gw.<id>`) and of Redis keys.
    if proto::ids::validate_user(&id).is_err() {
        return Err(GatewayError::Config(format!(
            "gateway.id {id:?} must be 1 to 64 of [A-Za-z0-9_-]"
        )));
    }
    let index = Arc::new(Index::default());
    let metrics = Arc::new(metrics::GatewayMetrics::new());
    let (broker, inbox) = Broker::new(settings.clone(), &id, index.clone(), metrics.clone());
    let (presence, registry_inbox) = presence::Registry::new();
    let g = &settings.gateway;
    let gw = Arc::new(Gateway {
        verifier: Verifier::new(&settings.auth)?,
        limits: Limits {
            max_text_bytes: g.max_text_bytes,
            max_frame_bytes: g.max_frame_bytes,
            sends_per_sec: g.sends_per_sec,
            burst: g.burst,
        },
        caps: Arc::new(Caps::new(g.max_connections, g.max_connections_per_user)),
        user_cap: Arc::new(user_cap::UserCap::new(
            settings.clone(),
            &id,
            metrics.clone(),
        )),
        id: id.clone(),
        index,
        broker: broker.clone(),
        metrics,
        presence: presence.clone(),
        tracker: TaskTracker::new(),
        shutdown: shutdown.clone(),
        settings: settings.clone(),
    });
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let ops_addr: Option<SocketAddr> = ops.local_addr().ok();
    tracing::info!(gateway = %id, ?addr, ?ops_addr, "gateway listening");

    // The broker link outlives the connections, so their last leaves can go out.
    let broker_stop = CancellationToken::new();
    let link = tokio::spawn(broker.clone().run(broker_stop.clone()));
    let binder = tokio::spawn(broker.clone().run_binder(inbox, broker_stop.clone()));
    // Answers until the very end, so /readyz says 503 while the gateway drains.
    let ops_server = tokio::spawn(
        warp::serve(http::ops_routes(gw.clone()))
            .incoming(ops)
            .graceful(broker_stop.clone().cancelled_owned())
            .run(),
    );
    // Rooms with a member here keep their keys in Redis (`rooms.idle_expiry_s`).
    let keeping = tokio::spawn(retention::run(
        settings.clone(),
        gw.index.clone(),
        shutdown.clone(),
    ));
    // Stops with the connections: SIGTERM removes this gateway's presence at once.
    let alive = tokio::spawn(presence::run(
        settings.clone(),
        id.clone(),
        presence,
        gw.index.clone(),
        registry_inbox,
        shutdown.clone(),
    ));

    let limits = server::HttpLimits {
        handshake_timeout: Duration::from_secs(settings.gateway.handshake_timeout_s.max(1)),
        max_pending: settings.gateway.max_pending_handshakes,
        max_pending_per_source: settings.gateway.max_pending_handshakes_per_ip,
    };
    let server = server::serve(
        listener,
        http::routes(gw.clone()),
        limits,
        gw.metrics.clone(),
        shutdown.clone(),
    );
    let grace = Duration::from_secs(settings.gateway.shutdown_grace_s);
    tokio::select! {
        _ = server => {}
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("HTTP server did not stop within the grace period");
        }
    }
    gw.tracker.close();
    if tokio::time::timeout(grace, gw.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open at the end of the grace period");
    }
    broker_stop.cancel();
    if link.await.is_err()
        || binder.await.is_err()
        || alive.await.is_err()
        || keeping.await.is_err()
        || ops_server.await.is_err()
    {
        tracing::error!("a background task panicked");
    }
    tracing::info!(gateway = %id, "gateway stopped");
    Ok(())
}
