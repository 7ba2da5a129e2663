//! The store's handle: the Redis connection, the key builders and the Lua scripts that
//! the other store modules use.

use std::sync::Arc;

use common::store::RedisConnection;
use redis::Script;

use super::keys::Keys;

/// The store's Lua scripts, loaded once.
pub(super) struct Scripts {
    pub(super) append: Script,
    pub(super) bucket: Script,
    pub(super) holders: Script,
    pub(super) enter: Script,
    pub(super) state: Script,
    pub(super) create: Script,
    pub(super) configure: Script,
}

/// The rooms in Redis. Cloning is shallow: the connection is a handle (to one
/// multiplexed connection, or to a cluster's) that reconnects by itself.
#[derive(Clone)]
pub struct RoomStore {
    conn: RedisConnection,
    pub(super) keys: Keys,
    pub(super) scripts: Arc<Scripts>,
}

impl RoomStore {
    pub fn new(conn: RedisConnection, prefix: &str) -> RoomStore {
        let scripts = Scripts {
            append: Script::new(include_str!("append.lua")),
            bucket: Script::new(include_str!("bucket.lua")),
            holders: Script::new(include_str!("holders.lua")),
            enter: Script::new(include_str!("enter.lua")),
            state: Script::new(include_str!("state.lua")),
            create: Script::new(include_str!("create.lua")),
            configure: Script::new(include_str!("configure.lua")),
        };
        RoomStore {
            conn,
            keys: Keys::new(prefix),
            scripts: Arc::new(scripts),
        }
    }

    pub(super) fn conn(&self) -> RedisConnection {
        self.conn.clone()
    }
}
