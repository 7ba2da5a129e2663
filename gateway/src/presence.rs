//! This gateway's liveness in Redis: `<prefix>:gw:<id>:alive`, renewed every
//! `presence.renew_s` with an expiry of `presence.ttl_s`.
//!
//! Presence entries in Redis name the gateway that holds the connection; dispatchers
//! treat entries of a gateway whose key is gone as gone. So a gateway that crashes
//! leaves no ghost for longer than the expiry, and one that stops cleanly removes its
//! key at once. The key's value is this process's incarnation, so entries left by an
//! earlier run under the same gateway id are recognised as stale too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::amqp::Backoff;
use common::store::redis::{self, AsyncCommands};
use common::Settings;
use tokio_util::sync::CancellationToken;

/// The key dispatchers check.
pub fn alive_key(redis_prefix: &str, gateway_id: &str) -> String {
    format!("{redis_prefix}:gw:{gateway_id}:alive")
}

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

/// Renews the key until `shutdown`, then deletes it.
pub async fn run(
    settings: Arc<Settings>,
    gateway_id: String,
    health: Arc<StoreHealth>,
    shutdown: CancellationToken,
) {
    let key = alive_key(&settings.redis.prefix, &gateway_id);
    // A fresh value per start: entries written under a previous run of the same id
    // carry the old value, so dispatchers can tell them from this run's.
    let incarnation = uuid::Uuid::new_v4().simple().to_string();
    let ttl = settings.presence.ttl_s.max(1);
    let every = Duration::from_secs(settings.presence.renew_s.clamp(1, ttl));
    let a = &settings.amqp;
    let mut backoff = Backoff::new(
        Duration::from_millis(a.backoff_min_ms),
        Duration::from_millis(a.backoff_max_ms),
    );
    let mut conn = None;
    while !shutdown.is_cancelled() {
        if conn.is_none() {
            match common::store::connect(settings.redis.url.expose()).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    health.set(false);
                    tracing::warn!(error = %e, "Redis unreachable; presence not renewed");
                    sleep_or_stop(backoff.next(), &shutdown).await;
                    continue;
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            let renewed: redis::RedisResult<()> = c.set_ex(&key, &incarnation, ttl).await;
            match renewed {
                Ok(()) => {
                    health.set(true);
                    backoff.reset();
                }
                Err(e) => {
                    health.set(false);
                    tracing::warn!(error = %e, "renewing presence failed");
                }
            }
        }
        sleep_or_stop(every, &shutdown).await;
    }
    health.set(false);
    if let Some(mut c) = conn {
        let removed: redis::RedisResult<()> = c.del(&key).await;
        if let Err(e) = removed {
            tracing::warn!(error = %e, "presence key not removed; it expires on its own");
        }
    }
}

async fn sleep_or_stop(wait: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = shutdown.cancelled() => {}
    }
}
