//! What the tests ask Redis directly: which keys a stack left, and their removal.

use std::time::Duration;

use anyhow::Context;

/// The test Redis. Only 127.0.0.1.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/";
const MAX_SCAN_ROUNDS: usize = 10_000;

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
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    for _ in 0..MAX_SCAN_ROUNDS {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await?;
        keys.extend(batch);
        if next == 0 {
            keys.sort();
            keys.dedup();
            return Ok(keys);
        }
        cursor = next;
    }
    anyhow::bail!("SCAN for {pattern} did not finish in {MAX_SCAN_ROUNDS} rounds")
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
