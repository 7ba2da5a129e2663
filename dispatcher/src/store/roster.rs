//! The dispatchers' roster: who is alive to share the shards ([`crate::balance`]).
//!
//! One sorted set, `<prefix>:dispatchers`, dispatcher id → when its entry expires. Each
//! dispatcher renews its own entry while it consumes, and removes it when it stops; a
//! dispatcher that dies drops out when its entry expires. One key, so it works unchanged
//! on Redis Cluster.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{RoomStore, StoreError};

static ROSTER: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("roster.lua")));

impl RoomStore {
    fn roster_key(&self) -> String {
        self.keys.dispatchers()
    }

    /// Renews `id`'s entry for `ttl` and returns the live dispatchers, in id order.
    pub async fn renew_roster(&self, id: &str, ttl: Duration) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = ROSTER
            .key(self.roster_key())
            .arg(id)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(ids)
    }

    /// Removes `id` from the roster (a dispatcher stopping): the others take its shards
    /// at their next round instead of after its entry expires.
    pub async fn leave_roster(&self, id: &str) -> Result<(), StoreError> {
        let _: () = redis::cmd("ZREM")
            .arg(self.roster_key())
            .arg(id)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }
}
