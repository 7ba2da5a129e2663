//! The Redis connection, to a single Redis or to a Redis Cluster, and the key names the
//! services share.
//!
//! [`RedisConnection`] is what every service holds: a `ConnectionManager` (one
//! multiplexed connection that reconnects by itself) for `redis.url`, or the `redis`
//! crate's async cluster connection (a connection per node, routed by each command's
//! key, following the cluster's slot map through failovers) when `redis.cluster_nodes`
//! names seeds. Either is a handle, so cloning is cheap and every task takes its own.
//!
//! Code above this module does not know which it has. That holds because of the key
//! layout in [`keys`]: everything one script, transaction or pipeline touches shares a
//! hash slot, which Redis Cluster requires and a single Redis ignores.

use std::time::Duration;

pub use redis;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::settings::{RedisSettings, Secret};

/// How long connecting to a node, and then any one call, may take before it fails.
const TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to the store: a single Redis, or a Redis Cluster.
#[derive(Clone)]
pub enum RedisConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Connects to Redis Cluster when `redis.cluster_nodes` names seeds, else to `redis.url`.
/// Calls fail fast (within [`TIMEOUT`], after a couple of quick retries) while Redis or
/// a cluster node is away, instead of hanging: callers retry, or answer `unavailable`.
pub async fn connect(settings: &RedisSettings) -> Result<RedisConnection, redis::RedisError> {
    check_prefix(&settings.prefix)?;
    // An empty entry is no seed (`WARREN__REDIS__CLUSTER_NODES=` set to nothing).
    let seeds: Vec<&str> = settings
        .cluster_nodes
        .iter()
        .map(Secret::expose)
        .filter(|seed| !seed.trim().is_empty())
        .collect();
    if seeds.is_empty() {
        let client = redis::Client::open(settings.url.expose())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(2);
        let manager = ConnectionManager::new_with_config(client, config).await?;
        return Ok(RedisConnection::Single(manager));
    }
    // Retries cover a redirect after a failover and a node that is reconnecting; the
    // waits stay short because the response timeout bounds the whole call, retries
    // included.
    let client = ClusterClientBuilder::new(seeds)
        .connection_timeout(TIMEOUT)
        .response_timeout(TIMEOUT)
        .retries(2)
        .min_retry_wait(50)
        .max_retry_wait(500)
        .build()?;
    Ok(RedisConnection::Cluster(
        client.get_async_connection().await?,
    ))
}

/// Gives every key that lives as long as each of `rooms` ([`keys::room_lifetime`]) `ttl`
/// more to live: a room nobody touches for that long (no command, no member on any
/// gateway) disappears whole, all its keys at once (`rooms.idle_expiry_s`). One pipeline
/// per room (a room's keys share a slot; a Redis Cluster takes no pipeline across
/// slots); `PEXPIRE` of a key that does not exist does nothing.
pub async fn touch_rooms(
    conn: &mut RedisConnection,
    prefix: &str,
    rooms: impl IntoIterator<Item = &str>,
    ttl: Duration,
) -> Result<(), redis::RedisError> {
    let ms = ttl.as_millis() as u64;
    for room in rooms {
        let mut pipe = redis::pipe();
        for key in keys::room_lifetime(prefix, room) {
            pipe.pexpire(key, ms as i64).ignore();
        }
        let () = pipe.query_async(conn).await?;
    }
    Ok(())
}

/// A prefix with a brace would make part of it the hash tag of every key, putting the
/// whole store in one slot (or splitting what must stay together).
fn check_prefix(prefix: &str) -> Result<(), redis::RedisError> {
    if prefix.contains(['{', '}']) {
        return Err(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "redis.prefix must not contain { or }: the key layout's hash tags come after it",
        )));
    }
    Ok(())
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}

/// The Redis keys that more than one service reads or writes: the store's layout where
/// the gateways and the dispatchers meet. Every key sits under the deployment's
/// `redis.prefix`; ids are validated before they get here (no whitespace, no `:`
/// outside `dm:` room ids, no braces).
///
/// Hash tags: a room's keys carry `{<room>}`, so each room lives in one slot (its
/// scripts and pipelines touch only its own keys) and rooms spread over the cluster.
/// The gateway registry carries `{gw}`: one slot for the whole registry, see
/// [`gateways`].
pub mod keys {
    /// Every key of `room`: `<prefix>:room:{<room>}:<part>`.
    pub fn room(prefix: &str, room: &str, part: &str) -> String {
        format!("{prefix}:room:{{{room}}}:{part}")
    }

    /// The keys of `room` that live exactly as long as the room, all given the same
    /// expiry by [`super::touch_rooms`]. (Mutes, bans and dedup keys carry expiries of
    /// their own; a permanent mute or ban outlives an expired room, and holds again if
    /// the room is created anew.)
    pub fn room_lifetime(prefix: &str, room: &str) -> [String; 9] {
        [
            "meta", "roles", "seq", "epoch", "history", "presence", "ids", "floor", "joined",
        ]
        .map(|part| self::room(prefix, room, part))
    }

    /// Sorted set: score = seq, member = the stored message's JSON. The dispatcher
    /// appends; gateways read ranges of it to repair a gap in a room's events.
    pub fn history(prefix: &str, room: &str) -> String {
        self::room(prefix, room, "history")
    }

    /// What every registry key starts with, `<prefix>:{gw}`; the dispatchers' script
    /// that reads the registry builds `<registry>:<id>:users` from it.
    pub fn registry(prefix: &str) -> String {
        format!("{prefix}:{{gw}}")
    }

    /// Exists while gateway `gateway` runs: it sets it with an expiry and renews it;
    /// its value is the gateway process's incarnation.
    pub fn gateway_alive(prefix: &str, gateway: &str) -> String {
        format!("{}:{gateway}:alive", registry(prefix))
    }

    /// Set: the users gateway `gateway` holds a connection of, with the same expiry as
    /// its liveness key (renewed with it), so a gateway that dies leaves no entry for
    /// longer than that.
    pub fn gateway_users(prefix: &str, gateway: &str) -> String {
        format!("{}:{gateway}:users", registry(prefix))
    }

    /// Set: the places one user's connections hold across every gateway,
    /// `<gateway>|<place>` (the cap `gateway.max_user_connections`). Tagged by user.
    pub fn user_connections(prefix: &str, user: &str) -> String {
        format!("{prefix}:user:{{{user}}}:conns")
    }

    /// Sorted set: gateway id → when its registration expires (unix ms), renewed with
    /// its liveness key. Dispatchers read the live ones to address user events.
    ///
    /// The registry (this set and every gateway's liveness key and users' set) shares
    /// one hash tag, so on Redis Cluster it all sits in one slot, on one shard: a
    /// gateway renews its three keys in one pipeline, and the dispatchers' script reads
    /// the set of every live gateway, whose names it only learns from this one. One
    /// shard carries that easily: the registry changes with sessions opening and
    /// closing, not with messages, and is read for user events only (direct messages,
    /// typing in them, kicks), while room traffic spreads over the cluster by room.
    pub fn gateways(prefix: &str) -> String {
        format!("{}:gateways", registry(prefix))
    }

    #[cfg(test)]
    mod tests {
        use redis::cluster_routing::Slot;

        #[test]
        fn keys_sit_under_the_prefix() {
            assert_eq!(super::history("w", "general"), "w:room:{general}:history");
            assert_eq!(super::history("w", "dm:a:b"), "w:room:{dm:a:b}:history");
            assert_eq!(super::gateway_alive("w", "g-1"), "w:{gw}:g-1:alive");
            assert_eq!(super::gateway_users("w", "g-1"), "w:{gw}:g-1:users");
            assert_eq!(super::gateways("w"), "w:{gw}:gateways");
        }

        #[test]
        fn the_registry_is_one_slot_and_a_room_is_one_slot() {
            let registry = Slot::for_key(super::gateways("w"));
            for gw in ["g-1", "gateways", "another-gateway"] {
                assert_eq!(Slot::for_key(super::gateway_alive("w", gw)), registry);
                assert_eq!(Slot::for_key(super::gateway_users("w", gw)), registry);
            }
            assert_eq!(
                Slot::for_key(super::history("w", "general")),
                Slot::for_key("general")
            );
            // Rooms spread: the prefix is not part of the tag.
            assert_ne!(
                Slot::for_key(super::history("w", "general")),
                Slot::for_key(super::history("w", "random"))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_prefix_with_a_brace_is_refused() {
        assert!(super::check_prefix("warren").is_ok());
        assert!(super::check_prefix("wt-0123abcd").is_ok());
        assert!(super::check_prefix("war{ren}").is_err());
        assert!(super::check_prefix("w}").is_err());
    }
}
