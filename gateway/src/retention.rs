//! Rooms with a member here do not expire (`rooms.idle_expiry_s`): while a room has a
//! local member, this gateway renews the expiry of its keys every quarter of the period
//! (at most hourly), as dispatchers do after each command. A room nobody uses, on any
//! gateway, expires whole.

use std::sync::Arc;

use common::store::RedisConnection;
use common::Settings;
use tokio_util::sync::CancellationToken;

use crate::index::Index;

/// The most a gateway waits between two renewals.
const AT_MOST: std::time::Duration = std::time::Duration::from_secs(3600);

/// Renews the expiry of the rooms with a local member until `shutdown`.
pub async fn run(settings: Arc<Settings>, index: Arc<Index>, shutdown: CancellationToken) {
    let rooms = &settings.rooms;
    let (Some(idle), Some(every)) = (rooms.idle_expiry(), rooms.touch_every(AT_MOST)) else {
        return;
    };
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<RedisConnection> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let local = index.rooms();
        if local.is_empty() {
            continue;
        }
        if conn.is_none() {
            conn = common::store::connect(&settings.redis).await.ok();
        }
        let Some(c) = conn.as_mut() else {
            tracing::warn!("Redis unreachable; room expiry not renewed");
            continue;
        };
        let prefix = &settings.redis.prefix;
        let touched = common::store::touch_rooms(c, prefix, local.iter().map(String::as_str), idle);
        if let Err(e) = touched.await {
            tracing::warn!(error = %e, rooms = local.len(), "room expiry not renewed");
        }
    }
}
