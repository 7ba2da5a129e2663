//! A local 3-node RabbitMQ cluster for one test target, started by
//! `scripts/rabbitmq-cluster.sh` on ports the test chooses, in a directory of its own,
//! and stopped with its data removed when the [`RabbitCluster`] is dropped, also while a
//! test panics. It also stops and starts single nodes, as a fault test does, and says
//! which node leads a queue.

use crate::cluster_script::ClusterScript;

pub struct RabbitCluster {
    script: ClusterScript,
    urls: Vec<String>,
}

impl RabbitCluster {
    /// Starts the three nodes on AMQP ports `base .. base + 2` (management 10000 above,
    /// distribution 20000 above), after stopping whatever an interrupted earlier run
    /// left there; blocks until node 1 sees all three running (the script bounds it).
    pub fn start(base: u16) -> RabbitCluster {
        let (script, stdout) = ClusterScript::start("rabbitmq-cluster.sh", base);
        let last = stdout.lines().last().unwrap_or_default();
        let urls: Vec<String> = last.split(',').map(str::to_owned).collect();
        assert!(
            urls.len() == 3 && urls.iter().all(|u| u.starts_with("amqp://")),
            "rabbitmq-cluster.sh printed no URLs: {stdout:?}"
        );
        RabbitCluster { script, urls }
    }

    /// Node `n`'s (1-3) AMQP URL.
    pub fn url(&self, n: usize) -> &str {
        &self.urls[n - 1]
    }

    /// The nodes' URLs in the order given (1-based), comma-separated, as
    /// `WARREN__AMQP__URLS` takes them.
    pub fn urls(&self, order: &[usize]) -> String {
        order
            .iter()
            .map(|&n| self.url(n))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `n`'s Erlang node name, as `rabbitmqctl -n` takes it.
    pub fn node_name(&self, n: usize) -> String {
        format!("warren-c{n}-{}@localhost", self.script.base())
    }

    /// Stops node `n` whole (`rabbitmqctl stop`), as an operator or a host failure would.
    pub async fn stop_node(&self, n: usize) {
        self.script.run_async(&["stop-node", &n.to_string()]).await;
    }

    /// Starts node `n` again and waits until it runs in the cluster.
    pub async fn start_node(&self, n: usize) {
        self.script.run_async(&["start-node", &n.to_string()]).await;
    }

    /// The node (1-3) that leads quorum queue `queue`, from `rabbitmqctl list_queues`
    /// on node `ask`.
    pub async fn leader_of(&self, queue: &str, ask: usize) -> Option<usize> {
        let out = tokio::process::Command::new("rabbitmqctl")
            .args([
                "-q",
                "-n",
                &self.node_name(ask),
                "list_queues",
                "name",
                "leader",
            ])
            .output()
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let leader = text.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(queue)).then(|| fields.next())?
        })?;
        (1..=3).find(|&n| leader == self.node_name(n))
    }
}
