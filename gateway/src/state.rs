//! [`Gateway`]: what every connection of this gateway shares, built once at start-up
//! ([`crate::startup`]) and handed to each connection as an `Arc`.

use std::sync::Arc;

use common::auth::Verifier;
use common::Settings;
use proto::server::Limits;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::caps::Caps;
use crate::index::Index;
use crate::liveness::Liveness;
use crate::metrics::GatewayMetrics;
use crate::user_cap::UserCap;

/// What every connection of this gateway shares. Cloning the `Arc` is the only copy.
pub struct Gateway {
    pub id: String,
    pub settings: Arc<Settings>,
    pub verifier: Verifier,
    pub index: Arc<Index>,
    pub broker: Arc<Broker>,
    pub metrics: Arc<GatewayMetrics>,
    /// This gateway's liveness and the users it holds, in Redis.
    pub liveness: Arc<Liveness>,
    pub caps: Arc<Caps>,
    /// The cap on one user's connections across gateways.
    pub user_cap: Arc<UserCap>,
    pub limits: Limits,
    /// Tracks connections and their last publishes, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Cancelled on SIGTERM: connections close with 1001.
    pub shutdown: CancellationToken,
}

impl Gateway {
    /// Broker link up with bindings restored, and Redis reachable.
    pub fn is_ready(&self) -> bool {
        self.broker.is_ready() && self.liveness.health.is_up() && !self.shutdown.is_cancelled()
    }
}
