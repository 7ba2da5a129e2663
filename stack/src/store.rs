//! What the tests ask Redis directly: which keys a stack left, and their removal.

use std::time::Duration;

use anyhow::Context;
use redis::AsyncCommands;

/// The test Redis. Only 127.0.0.1.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/";
/// The most keys one listing reads (a test stack leaves a few hundred).
const MAX_KEYS: usize = 10_000_000;

async fn connection() -> anyhow::Result<redis::aio::MultiplexedConnection> {
    connect_within(Duration::from_secs(10)).await
}

/// A connection to the test Redis, or why there is none within `timeout`.
pub async fn connect_within(
    timeout: Duration,
) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(REDIS_URL)?;
    tokio::time::timeout(timeout, client.get_multiplexed_async_connection())
        .await
        .with_context(|| format!("Redis at 127.0.0.1:6379 did not answer within {timeout:?}"))?
        .context("connect to Redis at 127.0.0.1:6379")
}

/// `PING`.
pub async fn ping() -> anyhow::Result<()> {
    let _: String = redis::cmd("PING")
        .query_async(&mut connection().await?)
        .await?;
    Ok(())
}

/// Every key that starts with `<prefix>:`.
pub async fn keys_under(prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut con = connection().await?;
    let pattern = format!("{}:*", escape_glob(prefix));
    let options = redis::ScanOptions::default()
        .with_pattern(&pattern)
        .with_count(1000);
    let mut found: redis::AsyncIter<String> = con.scan_options(options).await?;
    let mut keys = Vec::new();
    while let Some(key) = found.next_item().await {
        keys.push(key?);
        anyhow::ensure!(
            keys.len() <= MAX_KEYS,
            "more than {MAX_KEYS} keys match {pattern}"
        );
    }
    // SCAN may return a key more than once.
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Deletes every key under `prefix`; returns how many there were.
pub async fn remove_all(prefix: &str) -> anyhow::Result<usize> {
    let keys = keys_under(prefix).await?;
    let mut con = connection().await?;
    for batch in keys.chunks(500) {
        let _: u64 = redis::cmd("DEL").arg(batch).query_async(&mut con).await?;
    }
    Ok(keys.len())
}

/// Prefixes are `wt-<hex>`, but a glob character would widen the match to other stacks.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
