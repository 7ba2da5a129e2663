//! A local 3-node RabbitMQ cluster for one test target, started by
//! `scripts/rabbitmq-cluster.sh` on ports the test chooses, in a directory of its own,
//! and stopped with its data removed when the [`RabbitCluster`] is dropped, also while a
//! test panics. It also stops and starts single nodes, as a fault test does, and says
//! which node leads a queue.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::process::succeeded;

pub struct RabbitCluster {
    base: u16,
    dir: PathBuf,
    urls: Vec<String>,
}

impl RabbitCluster {
    /// Starts the three nodes on AMQP ports `base .. base + 2` (management 10000 above,
    /// distribution 20000 above), after stopping whatever an interrupted earlier run
    /// left there; blocks until node 1 sees all three running (the script bounds it).
    pub fn start(base: u16) -> RabbitCluster {
        let dir = std::env::temp_dir().join(format!("warren-test-rabbitmq-cluster-{base}"));
        let mut cluster = RabbitCluster {
            base,
            dir,
            urls: Vec::new(),
        };
        succeeded("rabbitmq-cluster.sh stop", cluster.script(&["stop"]));
        let started = succeeded("rabbitmq-cluster.sh start", cluster.script(&["start"]));
        let stdout = String::from_utf8_lossy(&started.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        cluster.urls = last.split(',').map(str::to_owned).collect();
        assert!(
            cluster.urls.len() == 3 && cluster.urls.iter().all(|u| u.starts_with("amqp://")),
            "rabbitmq-cluster.sh printed no URLs: {stdout:?}"
        );
        cluster
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
        format!("warren-c{n}-{}@localhost", self.base)
    }

    /// Stops node `n` whole (`rabbitmqctl stop`), as an operator or a host failure would.
    pub async fn stop_node(&self, n: usize) {
        self.script_async(&["stop-node", &n.to_string()]).await;
    }

    /// Starts node `n` again and waits until it runs in the cluster.
    pub async fn start_node(&self, n: usize) {
        self.script_async(&["start-node", &n.to_string()]).await;
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

    async fn script_async(&self, args: &[&str]) {
        let out = tokio::process::Command::new("bash")
            .arg(script())
            .args(self.common_args())
            .args(args)
            .output()
            .await
            .expect("run rabbitmq-cluster.sh");
        succeeded(&format!("rabbitmq-cluster.sh {args:?}"), out);
    }

    fn common_args(&self) -> Vec<String> {
        vec![
            "--dir".into(),
            self.dir.display().to_string(),
            "--port".into(),
            self.base.to_string(),
        ]
    }

    fn script(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(script())
            .args(self.common_args())
            .args(args)
            .output()
            .expect("run rabbitmq-cluster.sh")
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        let stopped = self.script(&["stop"]);
        if !stopped.status.success() {
            eprintln!(
                "rabbitmq-cluster.sh stop failed: {}",
                String::from_utf8_lossy(&stopped.stderr)
            );
        }
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join("rabbitmq-cluster.sh")
}
