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
