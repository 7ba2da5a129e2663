//! A local Redis Cluster for one test: six nodes (three masters, each with a replica)
//! started by `scripts/redis-cluster.sh` on ports the test chooses, in a directory of
//! their own, and stopped with their data removed when the [`RedisCluster`] is dropped,
//! also while a test panics. It also answers what a failover test asks: which master
//! serves a key, and stopping a node as an operator would.

use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use crate::cluster_script::ClusterScript;

/// The nodes a cluster has, on `base .. base + NODES`.
const NODES: u16 = 6;
const ANSWER: Duration = Duration::from_secs(5);

pub struct RedisCluster {
    script: ClusterScript,
    seeds: String,
}

impl RedisCluster {
    /// Starts a cluster on `base .. base + 5` (and the bus ports 10000 above), after
    /// stopping whatever an interrupted earlier run left there. Blocks until every node
    /// reports `cluster_state:ok` (the script bounds that wait).
    pub fn start(base: u16) -> RedisCluster {
        let (script, stdout) = ClusterScript::start("redis-cluster.sh", base);
        let seeds = stdout.trim().to_owned();
        assert!(
            seeds.starts_with("redis://"),
            "redis-cluster.sh printed no seeds: {seeds:?}"
        );
        RedisCluster { script, seeds }
    }

    /// The seed URLs, comma-separated, as `WARREN__REDIS__CLUSTER_NODES` takes them.
    pub fn seeds(&self) -> &str {
        &self.seeds
    }

    /// The port of the master that serves `key` now, as the live nodes see it.
    pub async fn master_of(&self, key: &str) -> anyhow::Result<u16> {
        let port = self.any_live_node().await?;
        let mut con = connection(port).await?;
        let slot: u16 = query(&mut con, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).await?;
        let nodes: String = query(&mut con, redis::cmd("CLUSTER").arg("NODES")).await?;
        master_serving(&nodes, slot)
            .with_context(|| format!("no live master serves slot {slot}:\n{nodes}"))
    }

    /// Whether `port` is a master with a replica attached and in sync.
    pub async fn has_replica_in_sync(&self, port: u16) -> anyhow::Result<bool> {
        let mut con = connection(port).await?;
        let info: String = query(&mut con, redis::cmd("INFO").arg("replication")).await?;
        Ok(info.contains("role:master")
            && info
                .lines()
                .any(|l| l.starts_with("slave0:") && l.contains("state=online")))
    }

    /// Empties the script cache of every node that answers: the next script call on each
    /// meets NOSCRIPT, as on a node that has never seen the script (a new or replaced
    /// one). Returns how many nodes were flushed.
    pub async fn flush_scripts(&self) -> anyhow::Result<usize> {
        let mut flushed = 0;
        for port in self.script.base()..self.script.base() + NODES {
            if let Ok(mut con) = connection(port).await {
                let _: () = query(&mut con, redis::cmd("SCRIPT").arg("FLUSH")).await?;
                flushed += 1;
            }
        }
        Ok(flushed)
    }

    /// `ZCARD key` on the node at `port`.
    pub async fn zcard(&self, port: u16, key: &str) -> anyhow::Result<u64> {
        let mut con = connection(port).await?;
        query(&mut con, redis::cmd("ZCARD").arg(key)).await
    }

    /// Shuts the node on `port` down without saving, as `redis-cli -p PORT shutdown
    /// nosave` does (a master first lets its replica catch up), and waits until it no
    /// longer answers.
    pub async fn shut_down(&self, port: u16) -> anyhow::Result<()> {
        let mut con = connection(port).await?;
        // The node closes the connection instead of answering.
        let _: Result<redis::Value, _> = tokio::time::timeout(
            Duration::from_secs(15),
            redis::cmd("SHUTDOWN").arg("NOSAVE").query_async(&mut con),
        )
        .await
        .context("SHUTDOWN did not return")?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if connection(port).await.is_err() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the node on {port} still answers 15 s after SHUTDOWN")
    }

    async fn any_live_node(&self) -> anyhow::Result<u16> {
        for port in self.script.base()..self.script.base() + NODES {
            if connection(port).await.is_ok() {
                return Ok(port);
            }
        }
        anyhow::bail!("no node of the cluster on {} answers", self.script.base())
    }
}

async fn connection(port: u16) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut con = tokio::time::timeout(ANSWER, client.get_multiplexed_async_connection())
        .await
        .with_context(|| format!("127.0.0.1:{port} did not answer"))??;
    let _: String = query(&mut con, &redis::cmd("PING")).await?;
    Ok(con)
}

async fn query<T: redis::FromRedisValue>(
    con: &mut redis::aio::MultiplexedConnection,
    cmd: &redis::Cmd,
) -> anyhow::Result<T> {
    Ok(tokio::time::timeout(ANSWER, cmd.query_async(con))
        .await
        .context("no answer")??)
}

/// The port of the live master whose slots include `slot`, from `CLUSTER NODES`.
fn master_serving(nodes: &str, slot: u16) -> Option<u16> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = fields.get(2)?;
        if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
            return None;
        }
        let serves = fields.iter().skip(8).any(|range| {
            // `[slot->-node]` entries are slots being migrated, not served.
            let (from, to) = range.split_once('-').unwrap_or((range, range));
            match (from.parse::<u16>(), to.parse::<u16>()) {
                (Ok(from), Ok(to)) => (from..=to).contains(&slot),
                _ => false,
            }
        });
        if !serves {
            return None;
        }
        // `127.0.0.1:7101@17101` (Redis 7 may add `,hostname`).
        let addr = fields.get(1)?.split(['@', ',']).next()?;
        addr.rsplit_once(':')?.1.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_master_serving_a_slot_is_read_from_cluster_nodes() {
        let nodes = "\
a 127.0.0.1:7101@17101 master,fail - 1 2 1 disconnected
b 127.0.0.1:7104@17104 master - 0 2 7 connected 0-5460
c 127.0.0.1:7102@17102 myself,master - 0 0 2 connected 5461-10922 [10923->-d]
d 127.0.0.1:7103@17103,host master - 0 2 3 connected 10923-16383
e 127.0.0.1:7105@17105 slave c 0 2 2 connected";
        assert_eq!(super::master_serving(nodes, 0), Some(7104));
        assert_eq!(super::master_serving(nodes, 5461), Some(7102));
        assert_eq!(super::master_serving(nodes, 16383), Some(7103));
        assert_eq!(super::master_serving(nodes, 20000), None);
    }
}
