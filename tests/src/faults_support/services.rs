//! Stopping and starting the machine's shared RabbitMQ (Redis: [`super::redis_outage`]),
//! for the fault tests, and what the tests ask the broker beyond the harness' own views.
//!
//! Every outage is a guard: [`BrokerOutage`] (and `RedisOutage`) start their service
//! again when dropped, also while a test panics, so no test leaves a service stopped.
//! Other helpers' test runs use the same services, so [`wait_until_alone`] waits
//! (bounded) until no other test run is active before anything destructive happens.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::Command;
use tokio::time::Instant;

/// How long a `rabbitmqctl` or `redis-cli` call may take.
const CTL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a restarted service may take to answer again.
pub(super) const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How often, and for how long at most, to wait for other test runs to end.
const ALONE_POLL: Duration = Duration::from_secs(20);
const ALONE_MAX: Duration = Duration::from_secs(600);
/// What another test run looks like in `pgrep -af`.
const OTHER_RUNS: &str = "target/debug/deps/|warren-gateway|warren-dispatcher|node --test";

/// Waits until `pgrep` shows no test run but this one (this process and the services it
/// started), polling every 20 s for at most 10 minutes; then goes on anyway, saying so.
pub async fn wait_until_alone(what: &str) {
    let started = Instant::now();
    loop {
        let others = other_runs().await;
        if others.is_empty() {
            if started.elapsed() > Duration::from_secs(1) {
                eprintln!("[faults] {what}: alone after {:?}", started.elapsed());
            }
            return;
        }
        if started.elapsed() >= ALONE_MAX {
            eprintln!(
                "[faults] {what}: other test runs still active after {ALONE_MAX:?}; going on anyway: {others:?}"
            );
            return;
        }
        eprintln!("[faults] {what}: waiting for other test runs to end: {others:?}");
        tokio::time::sleep(ALONE_POLL).await;
    }
}

/// `pid command` of every matching process that is neither this one nor its child.
async fn other_runs() -> Vec<String> {
    let me = std::process::id();
    let out = match run("pgrep", &["-af", OTHER_RUNS]).await {
        Ok(out) => out,
        // pgrep exits 1 when nothing matches.
        Err(_) => return Vec::new(),
    };
    out.lines()
        .filter_map(|line| {
            let pid: u32 = line.split_whitespace().next()?.parse().ok()?;
            (pid != me && parent_of(pid) != Some(me)).then(|| line.chars().take(160).collect())
        })
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Runs a command to completion within [`CTL_TIMEOUT`]; its stdout, or an error with
/// its stderr.
pub(super) async fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .env("PATH", path_with_sbin());
    let out = tokio::time::timeout(CTL_TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("{program} {args:?} took more than {CTL_TIMEOUT:?}"))?
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// As [`run`], without a runtime (for `Drop`).
pub(super) fn run_blocking(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("PATH", path_with_sbin())
        .spawn()
        .with_context(|| format!("run {program}"))?;
    let deadline = std::time::Instant::now() + CTL_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            let out = child.wait_with_output()?;
            if !status.success() {
                bail!(
                    "{program} {args:?} failed ({status}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            bail!("{program} {args:?} took more than {CTL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `rabbitmqctl` and `redis-server` live in sbin, which a test's PATH may lack.
fn path_with_sbin() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{path}:/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin")
}

fn tcp_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .is_ok()
}

// ---- RabbitMQ ------------------------------------------------------------------------

const AMQP_PORT: u16 = 5672;

/// `rabbitmqctl stop_app` while held; `start_app` on [`BrokerOutage::end`] or drop.
pub struct BrokerOutage {
    stopped: bool,
    /// When `stop_app` was run.
    pub since: Instant,
    /// How long `stop_app` took to return.
    pub stopping: Duration,
}

impl BrokerOutage {
    /// Stops the RabbitMQ application (the node keeps running; every connection drops,
    /// non-durable queues and their bindings are gone).
    pub async fn begin() -> BrokerOutage {
        let mut outage = BrokerOutage {
            stopped: true,
            since: Instant::now(),
            stopping: Duration::ZERO,
        };
        if let Err(e) = run("rabbitmqctl", &["-q", "stop_app"]).await {
            // The guard still restarts it: stop_app may have half-happened.
            outage.end_blocking();
            panic!("rabbitmqctl stop_app: {e:#}");
        }
        outage.stopping = outage.since.elapsed();
        outage
    }

    /// Starts the application again and waits until it takes connections. Returns how
    /// long it was down, from `stop_app` to `start_app`.
    pub async fn end(mut self) -> Duration {
        let down = self.since.elapsed();
        self.stopped = false;
        if let Err(e) = start_broker().await {
            // Drop cannot do better; say what happened.
            panic!("restarting RabbitMQ: {e:#}");
        }
        down
    }

    fn end_blocking(&mut self) {
        if !self.stopped {
            return;
        }
        self.stopped = false;
        let started = run_blocking("rabbitmqctl", &["-q", "start_app"])
            .and_then(|_| run_blocking("rabbitmqctl", &["-q", "await_startup", "--timeout", "60"]));
        match started {
            Ok(_) => eprintln!("[faults] RabbitMQ started again by the outage guard"),
            Err(e) => eprintln!("[faults] RabbitMQ could NOT be started again: {e:#}"),
        }
    }
}

impl Drop for BrokerOutage {
    fn drop(&mut self) {
        self.end_blocking();
    }
}

async fn start_broker() -> anyhow::Result<()> {
    run("rabbitmqctl", &["-q", "start_app"]).await?;
    run("rabbitmqctl", &["-q", "await_startup", "--timeout", "60"]).await?;
    wait_for("RabbitMQ on 127.0.0.1:5672", || tcp_open(AMQP_PORT)).await
}

/// `rabbitmqctl close_all_connections`: every client connection of the broker is cut
/// (this deployment's and any other's), the broker itself stays up.
pub async fn cut_broker_connections(reason: &str) {
    run("rabbitmqctl", &["-q", "close_all_connections", reason])
        .await
        .unwrap_or_else(|e| panic!("rabbitmqctl close_all_connections: {e:#}"));
}

/// Ready and unacked messages per queue named `<prefix>.…`.
pub async fn queue_depths(prefix: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let out = run(
        "rabbitmqctl",
        &[
            "-q",
            "--formatter",
            "json",
            "list_queues",
            "name",
            "messages",
        ],
    )
    .await?;
    #[derive(serde::Deserialize)]
    struct Row {
        name: String,
        messages: u64,
    }
    let rows: Vec<Row> = match out.trim() {
        "" => Vec::new(),
        text => serde_json::from_str(text).context("list_queues JSON")?,
    };
    Ok(rows
        .into_iter()
        .filter(|r| r.name.starts_with(&format!("{prefix}.")))
        .map(|r| (r.name, r.messages))
        .collect())
}

/// `source -> destination (key)` of every binding whose source or destination is named
/// `<prefix>.…`.
pub async fn bindings_under(prefix: &str) -> anyhow::Result<Vec<String>> {
    let out = run(
        "rabbitmqctl",
        &[
            "-q",
            "--formatter",
            "json",
            "list_bindings",
            "source_name",
            "destination_name",
            "routing_key",
        ],
    )
    .await?;
    #[derive(serde::Deserialize)]
    struct Row {
        source_name: String,
        destination_name: String,
        routing_key: String,
    }
    let rows: Vec<Row> = match out.trim() {
        "" => Vec::new(),
        text => serde_json::from_str(text).context("list_bindings JSON")?,
    };
    let mine = format!("{prefix}.");
    Ok(rows
        .into_iter()
        .filter(|r| r.source_name.starts_with(&mine) || r.destination_name.starts_with(&mine))
        .map(|r| {
            format!(
                "{} -> {} ({})",
                r.source_name, r.destination_name, r.routing_key
            )
        })
        .collect())
}

pub(super) async fn wait_for(what: &str, mut up: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while !up() {
        if Instant::now() > deadline {
            bail!("{what} did not answer within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
