//! A Redis of the test's own: a `redis-server` child on a port of its own, with no persistence,
//! killed when dropped. For tests that reconfigure Redis (memory limits) and must not
//! touch the machine's, which every other test shares.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

pub struct PrivateRedis {
    child: Child,
    port: u16,
}

/// Random ports are drawn from here (below Linux's ephemeral range, above the services').
const PORTS: std::ops::Range<u16> = 20_000..30_000;
const ATTEMPTS: usize = 20;

impl PrivateRedis {
    /// Starts it on a random port and waits (bounded) until it answers `PING`. No port
    /// is picked free and handed on: redis-server binds the port itself, and when that
    /// fails (another process holds it) it exits and another port is tried. It counts
    /// as started once the server on that port reports this child's pid.
    pub async fn start() -> PrivateRedis {
        for _ in 0..ATTEMPTS {
            let port = rand::random_range(PORTS);
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server (scripts/ensure-services.sh installs it)");
            let mut redis = PrivateRedis { child, port };
            if redis.answers().await {
                return redis;
            }
        }
        panic!("redis-server did not start on any of {ATTEMPTS} random ports");
    }

    /// Whether this child serves its port: `false` once it has exited (the port was
    /// taken); panics if it neither answers nor exits within 10 s.
    async fn answers(&mut self) -> bool {
        let pid = format!("process_id:{}", self.child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            let info = self.query::<String>(redis::cmd("INFO").arg("server")).await;
            if info.is_ok_and(|info| info.lines().any(|l| l.trim() == pid)) {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not answer in 10 s",
                self.port
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
