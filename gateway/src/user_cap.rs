//! A cap on one user's connections across every gateway (`gateway.max_user_connections`),
//! besides each gateway's own (`max_connections_per_user`).
//!
//! Each user has a set in Redis, `<prefix>:user:{<user>}:conns`, of the places their
//! connections hold, `<gateway>|<place>`. A handshake claims a place before the upgrade
//! (one script: drop the places of gateways that are no longer alive, count, add), and
//! the connection gives it back when it ends. A gateway that dies gives its places back
//! when its registration in `<prefix>:{gw}:gateways` expires (`presence.ttl_s`): the next
//! claim for the user drops them. The live gateways are read from that registration at
//! most every [`LIVE_FOR`].
//!
//! If Redis does not answer, the handshake goes on without a place (fail open, counted
//! in `warren_gateway_user_cap_unchecked_total`): the per-gateway caps still hold, and
//! refusing every connection while Redis restarts would be worse.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::store::{redis, RedisConnection};
use common::Settings;
use proto::keys::Keys;
use redis::Script;
use tokio::sync::OnceCell;

use crate::metrics::GatewayMetrics;

/// How long a read of the live gateways serves.
const LIVE_FOR: Duration = Duration::from_secs(2);

pub struct UserCap {
    cap: usize,
    gateway: String,
    keys: Keys,
    settings: Arc<Settings>,
    conn: OnceCell<RedisConnection>,
    live: Mutex<Option<(Instant, Arc<[String]>)>>,
    script: Script,
    metrics: Arc<GatewayMetrics>,
}

/// A place held among the user's connections; given back when dropped.
pub struct Place {
    cap: Arc<UserCap>,
    user: String,
    member: String,
}

impl UserCap {
    pub fn new(settings: Arc<Settings>, gateway: &str, metrics: Arc<GatewayMetrics>) -> UserCap {
        UserCap {
            cap: settings.gateway.max_user_connections,
            gateway: gateway.to_owned(),
            keys: Keys::new(settings.redis.prefix.clone()),
            settings,
            conn: OnceCell::new(),
            live: Mutex::new(None),
            script: Script::new(include_str!("user_cap.lua")),
            metrics,
        }
    }

    /// Claims a place for `user`. `Ok(None)`: no cap, or Redis did not answer (the
    /// connection goes on without a place). `Err(())`: the user is at the cap.
    pub async fn claim(self: &Arc<Self>, user: &str) -> Result<Option<Place>, ()> {
        if self.cap == 0 {
            return Ok(None);
        }
        let member = format!("{}|{}", self.gateway, uuid::Uuid::new_v4().simple());
        match self.try_claim(user, &member).await {
            Ok(true) => Ok(Some(Place {
                cap: self.clone(),
                user: user.to_owned(),
                member,
            })),
            Ok(false) => Err(()),
            Err(e) => {
                tracing::warn!(error = %e, "user connection cap not checked");
                self.metrics.user_cap_unchecked.inc();
                Ok(None)
            }
        }
    }

    async fn try_claim(&self, user: &str, member: &str) -> redis::RedisResult<bool> {
        let mut conn = self.connection().await?;
        let live = self.live_gateways(&mut conn).await?;
        let mut invocation = self.script.key(self.keys.user_connections(user));
        invocation.arg(self.cap).arg(member);
        for gateway in live.iter() {
            invocation.arg(gateway.as_str());
        }
        let claimed: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(claimed == 1)
    }

    async fn connection(&self) -> redis::RedisResult<RedisConnection> {
        self.conn
            .get_or_try_init(|| common::store::connect(&self.settings.redis))
            .await
            .cloned()
    }

    /// The gateways whose registration has not expired, this one included.
    async fn live_gateways(&self, conn: &mut RedisConnection) -> redis::RedisResult<Arc<[String]>> {
        if let Some((at, live)) = &*self.live.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < LIVE_FOR {
                return Ok(live.clone());
            }
        }
        let mut ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.gateways())
            .arg(common::now_ms())
            .arg("+inf")
            .query_async(conn)
            .await?;
        if !ids.contains(&self.gateway) {
            // Not registered yet (or its renewal is late): its own places still count.
            ids.push(self.gateway.clone());
        }
        let live: Arc<[String]> = ids.into();
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), live.clone()));
        Ok(live)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let cap = self.cap.clone();
        let key = cap.keys.user_connections(&self.user);
        let member = std::mem::take(&mut self.member);
        // Best effort: a place not given back is dropped with its gateway's registration.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(mut conn) = cap.connection().await {
                    let removed: redis::RedisResult<()> = redis::cmd("SREM")
                        .arg(key)
                        .arg(member)
                        .query_async(&mut conn)
                        .await;
                    if let Err(e) = removed {
                        tracing::debug!(error = %e, "user connection place not given back");
                    }
                }
            });
        }
    }
}
