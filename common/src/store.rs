//! The Redis connection, to a single Redis or to a Redis Cluster. The key layout is the
//! contract's, [`proto::keys`].
//!
//! [`RedisConnection`] is what every service holds: a `ConnectionManager` (one
//! multiplexed connection that reconnects by itself) for `redis.url`, or the `redis`
//! crate's async cluster connection (a connection per node, routed by each command's
//! key, following the cluster's slot map through failovers) when `redis.cluster_nodes`
//! names seeds. Either is a handle, so cloning is cheap and every task takes its own.
//!
//! Code above this module does not know which it has. That holds because of the key
//! layout, [`proto::keys`]: everything one script, transaction or pipeline touches
//! shares a hash slot, which Redis Cluster requires and a single Redis ignores.

use std::time::Duration;

use proto::keys::Keys;
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

/// Gives every key that lives as long as each of `rooms` ([`Keys::room_lifetime`]) `ttl`
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
        for key in Keys::new(prefix).room_lifetime(room) {
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

#[cfg(test)]
mod layout_tests {
    use proto::keys::Keys;
    use redis::cluster_routing::Slot;

    /// The key layout is `proto::keys`; what Redis Cluster makes of it is checked here,
    /// where the `redis` crate's slot function is.
    #[test]
    fn the_registry_is_one_slot_and_a_room_is_one_slot() {
        let k = Keys::new("w");
        let registry = Slot::for_key(k.gateways());
        for gw in ["g-1", "gateways", "another-gateway"] {
            assert_eq!(Slot::for_key(k.gateway_alive(gw)), registry);
            assert_eq!(Slot::for_key(k.gateway_users(gw)), registry);
        }
        assert_eq!(
            Slot::for_key(k.history("general")),
            Slot::for_key("general")
        );
        // Rooms spread: the prefix is not part of the tag.
        assert_ne!(
            Slot::for_key(k.history("general")),
            Slot::for_key(k.history("random"))
        );
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
