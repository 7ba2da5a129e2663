//! Start-up wiring: binds the listeners, builds the [`Gateway`], starts the background
//! tasks (broker link, binder, liveness, room retention, operations listener), runs the
//! public accept loop, and on shutdown drains in order: connections first, the broker
//! link last, so the connections' last leaves still go out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::auth::Verifier;
use common::listen::{bind, ListenError};
use common::Settings;
use proto::server::Limits;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::caps::Caps;
use crate::index::Index;
use crate::metrics::GatewayMetrics;
use crate::state::Gateway;
use crate::{accept, liveness, ops, retention, upgrade, user_cap};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Auth(#[from] common::auth::AuthError),
    /// Development authentication on a listener others can reach.
    #[error("{0}")]
    Insecure(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Listen(#[from] ListenError),
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
    run_on_listeners(settings, listener, ops, shutdown).await
}

/// As [`run`], on listeners the caller bound (tests bind `127.0.0.1:0`): `listener`
/// public, `ops` for the operations endpoints.
pub async fn run_on_listeners(
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
    let metrics = Arc::new(GatewayMetrics::new());
    let (broker, inbox) = Broker::new(settings.clone(), &id, index.clone(), metrics.clone());
    let (liveness, liveness_inbox) = liveness::Liveness::new();
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
        liveness: liveness.clone(),
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
    let binder = tokio::spawn(broker.bindings.clone().run(inbox, broker_stop.clone()));
    // Answers until the very end, so /readyz says 503 while the gateway drains.
    let ops_server = tokio::spawn(
        warp::serve(ops::routes(gw.clone()))
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
    // Stops with the connections: SIGTERM removes this gateway's liveness at once.
    let alive = tokio::spawn(liveness::run(
        settings.clone(),
        id.clone(),
        liveness,
        gw.index.clone(),
        liveness_inbox,
        shutdown.clone(),
    ));

    let limits = accept::HttpLimits {
        handshake_timeout: Duration::from_secs(settings.gateway.handshake_timeout_s.max(1)),
        max_pending: settings.gateway.max_pending_handshakes,
        max_pending_per_source: settings.gateway.max_pending_handshakes_per_ip,
    };
    let server = accept::run(
        listener,
        upgrade::routes(gw.clone()),
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
