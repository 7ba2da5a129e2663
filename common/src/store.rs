//! The Redis connection. `ConnectionManager` reconnects by itself; cloning it is cheap
//! (a handle to one multiplexed connection), so every task takes its own clone.

use std::time::Duration;

pub use redis;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Connects to Redis; calls fail fast while Redis is away instead of hanging.
pub async fn connect(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2);
    ConnectionManager::new_with_config(client, config).await
}

/// The Redis keys that more than one service reads or writes: the store's layout where
/// the gateways and the dispatchers meet. Every key sits under the deployment's
/// `redis.prefix`; ids are validated before they get here (no whitespace, no `:`).
pub mod keys {
    /// Sorted set: score = seq, member = the stored message's JSON. The dispatcher
    /// appends; gateways read ranges of it to repair a gap in a room's events.
    pub fn history(prefix: &str, room: &str) -> String {
        format!("{prefix}:room:{room}:history")
    }

    /// Exists while gateway `gateway` runs: it sets it with an expiry and renews it;
    /// its value is the gateway process's incarnation.
    pub fn gateway_alive(prefix: &str, gateway: &str) -> String {
        format!("{prefix}:gw:{gateway}:alive")
    }

    /// Set: the users gateway `gateway` holds a connection of, with the same expiry as
    /// its liveness key (renewed with it), so a gateway that dies leaves no entry for
    /// longer than that.
    pub fn gateway_users(prefix: &str, gateway: &str) -> String {
        format!("{prefix}:gw:{gateway}:users")
    }

    /// Sorted set: gateway id → when its registration expires (unix ms), renewed with
    /// its liveness key. Dispatchers read the live ones to address user events.
    pub fn gateways(prefix: &str) -> String {
        format!("{prefix}:gateways")
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn keys_sit_under_the_prefix() {
            assert_eq!(super::history("w", "general"), "w:room:general:history");
            assert_eq!(super::gateway_alive("w", "g-1"), "w:gw:g-1:alive");
            assert_eq!(super::gateway_users("w", "g-1"), "w:gw:g-1:users");
            assert_eq!(super::gateways("w"), "w:gateways");
        }
    }
}
