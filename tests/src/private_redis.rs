//! A Redis of the test's own: a `redis-server` child on a free port, with no persistence,
//! killed when dropped. For tests that reconfigure Redis (memory limits) and must not
//! touch the machine's, which every other test shares.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use crate::process::free_port;

pub struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    /// Starts it and waits (bounded) until it answers `PING`.
    pub async fn start() -> PrivateRedis {
        let port = free_port().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (scripts/ensure-services.sh installs it)");
        let redis = PrivateRedis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if redis.query::<String>(&mut redis::cmd("PING")).await.is_ok() {
                return redis;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} did not answer in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `redis://127.0.0.1:<port>/`, as `WARREN__REDIS__URL` takes it.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// One command on a connection of its own.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> anyhow::Result<T> {
        let client = redis::Client::open(self.url())?;
        let mut con = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .context("connect timed out")??;
        Ok(
            tokio::time::timeout(Duration::from_secs(5), cmd.query_async(&mut con))
                .await
                .context("command timed out")??,
        )
    }

    /// `CONFIG SET key value`.
    pub async fn config_set(&self, key: &str, value: &str) {
        let _: () = self
            .query(redis::cmd("CONFIG").arg("SET").arg(key).arg(value))
            .await
            .unwrap_or_else(|e| panic!("CONFIG SET {key} {value}: {e:#}"));
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
