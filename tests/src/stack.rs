//! A whole Warren deployment for one test: gateway and dispatcher processes under a
//! unique prefix, sharing the machine's RabbitMQ and Redis with every other test.
//!
//! Isolation is by name: every exchange, queue and Redis key of a stack starts with its
//! prefix `wt-<8 hex>`, so tests run in parallel. Dropping the [`Stack`] (also while a
//! test panics) kills its processes, then removes everything under its prefix from the
//! broker and from Redis, and, when the test failed, prints the tail of every log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use proto::amqp::Names;
use serde::Deserialize;
use tokio::process::Child;
use tokio::time::Instant;

use crate::client::{Client, Connect, ConnectError};
use crate::http::{self, HttpResponse};
use crate::process::{binary, free_port, target_dir, Service};
use crate::token::{sign_hs256, Claims};
use crate::{broker, cleanup, store};

/// The `Origin` every stack allows (besides requests without one).
pub const ALLOWED_ORIGIN: &str = "http://allowed.test";
const LOG_TAIL_LINES: usize = 40;
/// `amqp.shards` in the services' built-in defaults (common/src/defaults.toml).
pub const DEFAULT_SHARDS: u32 = 16;
const POLL: Duration = Duration::from_millis(100);

/// What to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub gateways: usize,
    pub dispatchers: usize,
    /// Extra `WARREN__SECTION__KEY` settings for every process, after the stack's own.
    pub env: Vec<(String, String)>,
    /// How long a process may take to become ready.
    pub ready_timeout: Duration,
    /// A settings file (TOML) for every process, for what the environment cannot say
    /// (`[[rooms.list]]`); written beside the logs and passed as `--config`.
    pub config: Option<String>,
    /// The services use the machine's default RabbitMQ node, which the stack inspects
    /// (consumers, bindings) and cleans up. Off for a stack on a cluster of its own:
    /// readiness is then read from the processes' `/readyz`, and whoever started that
    /// broker removes what the stack declared on it.
    pub default_broker: bool,
}

impl Default for StackOptions {
    /// Two gateways and two dispatchers.
    fn default() -> Self {
        StackOptions::new(2, 2)
    }
}

impl StackOptions {
    pub fn new(gateways: usize, dispatchers: usize) -> StackOptions {
        StackOptions {
            gateways,
            dispatchers,
            env: Vec::new(),
            ready_timeout: Duration::from_secs(30),
            config: None,
            default_broker: true,
        }
    }

    /// Gives every process this settings file (TOML); the environment still overrides it.
    pub fn config(mut self, toml: &str) -> StackOptions {
        self.config = Some(toml.to_owned());
        self
    }

    /// Services on a broker of their own, not the machine's default node (see
    /// [`StackOptions::default_broker`]).
    pub fn own_broker(mut self) -> StackOptions {
        self.default_broker = false;
        self
    }

    /// Adds a setting, e.g. `("WARREN__GATEWAY__SENDS_PER_SEC", "5")`.
    pub fn env(mut self, key: &str, value: &str) -> StackOptions {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// `/stats` of a gateway: counts only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Stats {
    pub gateway: String,
    pub connections: u64,
    pub rooms: u64,
    pub users: u64,
    pub bindings: u64,
}

pub struct Stack {
    prefix: String,
    secret: String,
    names: Names,
    shards: u32,
    env: Vec<(String, String)>,
    ready_timeout: Duration,
    default_broker: bool,
    gateway_bin: PathBuf,
    dispatcher_bin: PathBuf,
    logs_dir: PathBuf,
    gateways: Vec<Service>,
    dispatchers: Vec<Service>,
    /// `--config <file>` when the options gave a settings file.
    args: Vec<String>,
}

impl Stack {
    /// Starts the dispatchers one after the other, then the gateways, each waited for
    /// until ready. The dispatchers share the shards out among themselves within
    /// seconds ([`Stack::shard_owners`] tells who is active where).
    pub async fn start(options: StackOptions) -> Stack {
        let target = target_dir();
        let gateway_bin = binary(&target, "warren-gateway");
        let dispatcher_bin = binary(&target, "warren-dispatcher");
        let logs_dir = target.join("test-logs");
        std::fs::create_dir_all(&logs_dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", logs_dir.display()));
        let prefix = format!("wt-{:08x}", rand::random::<u32>());
        let secret = format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let shards = options
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "WARREN__AMQP__SHARDS")
            .map(|(_, v)| v.parse().expect("WARREN__AMQP__SHARDS is a number"))
            .unwrap_or(DEFAULT_SHARDS);
        eprintln!(
            "[{prefix}] logs: {}",
            logs_dir.join(format!("{prefix}-*.log")).display()
        );
        let args = match &options.config {
            Some(toml) => {
                let file = logs_dir.join(format!("{prefix}-config.toml"));
                std::fs::write(&file, toml)
                    .unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
                vec!["--config".to_owned(), file.display().to_string()]
            }
            None => Vec::new(),
        };
        let mut stack = Stack {
            names: Names::new(prefix.clone()),
            prefix,
            secret,
            shards,
            env: options.env,
            ready_timeout: options.ready_timeout,
            default_broker: options.default_broker,
            gateway_bin,
            dispatcher_bin,
            logs_dir,
            gateways: Vec::new(),
            dispatchers: Vec::new(),
            args,
        };
        for _ in 0..options.dispatchers {
            stack.start_dispatcher().await;
        }
        for _ in 0..options.gateways {
            stack.start_gateway().await;
        }
        stack
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The HS256 secret the services verify tokens with.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn gateway_addr(&self, i: usize) -> SocketAddr {
        self.gateways[i].addr.expect("gateways have an address")
    }

    pub fn gateway_id(&self, i: usize) -> &str {
        self.gateways[i].id.as_deref().expect("gateways have an id")
    }

    /// `<prefix>.gw.<gateway id>`.
    pub fn gateway_queue(&self, i: usize) -> String {
        self.names.gateway_queue(self.gateway_id(i))
    }

    /// Every log file of this stack.
    pub fn logs(&self) -> Vec<PathBuf> {
        self.dispatchers
            .iter()
            .chain(&self.gateways)
            .map(|s| s.log.clone())
            .collect()
    }

    // ---- tokens ------------------------------------------------------------------

    /// A valid token for `user`, signed with this stack's secret.
    pub fn token(&self, user: &str) -> String {
        self.token_with(&Claims::new(user))
    }

    pub fn token_with(&self, claims: &Claims) -> String {
        sign_hs256(&self.secret, claims)
    }

    // ---- clients -----------------------------------------------------------------

    /// `user` connected to gateway `i` with a bearer token, past its `welcome`.
    pub async fn connect(&self, i: usize, user: &str) -> Client {
        let label = format!("{user}@gw{i}");
        self.connect_with(i, &Connect::token(self.token(user)), &label)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"))
    }

    pub async fn connect_with(
        &self,
        i: usize,
        connect: &Connect,
        label: &str,
    ) -> Result<Client, ConnectError> {
        Client::connect(self.gateway_addr(i), connect, label).await
    }

    /// The raw HTTP answer to a WebSocket upgrade request on gateway `i` (101 when it
    /// upgrades; the connection is then dropped).
    pub async fn handshake(&self, i: usize, connect: &Connect) -> HttpResponse {
        let addr = self.gateway_addr(i);
        http::request(addr, &connect.raw_upgrade_head(&addr.to_string()))
            .await
            .unwrap_or_else(|e| panic!("upgrade request to gw{i}: {e:#}"))
    }

    // ---- gateway HTTP and broker views -------------------------------------------

    /// The address of dispatcher `i`'s `/healthz`, `/readyz` and `/metrics`.
    pub fn dispatcher_addr(&self, i: usize) -> SocketAddr {
        self.dispatchers[i]
            .addr
            .expect("dispatchers have an address")
    }

    /// `GET path` on dispatcher `i`'s HTTP port.
    pub async fn dispatcher_get(&self, i: usize, path: &str) -> HttpResponse {
        http::get(self.dispatcher_addr(i), path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} on dispatcher {i}: {e:#}"))
    }

    /// The shards dispatcher `i` is the active consumer of, from its `/metrics`
    /// (`warren_dispatcher_shard_active{shard="n"} 1`), in order.
    pub async fn active_shards(&self, i: usize) -> Vec<u32> {
        let response = self.dispatcher_get(i, "/metrics").await;
        assert_eq!(response.status, 200, "GET /metrics on dispatcher {i}");
        let mut shards: Vec<u32> = response
            .text()
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("warren_dispatcher_shard_active{shard=\"")?;
                let (shard, value) = rest.split_once("\"}")?;
                (value.trim() == "1").then(|| shard.parse().ok())?
            })
            .collect();
        shards.sort_unstable();
        shards
    }

    /// `GET path` on gateway `i`'s public listener.
    pub async fn http_get(&self, i: usize, path: &str) -> HttpResponse {
        http::get(self.gateway_addr(i), path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} on gw{i}: {e:#}"))
    }

    /// The address of gateway `i`'s operations listener.
    pub fn gateway_ops_addr(&self, i: usize) -> SocketAddr {
        self.gateways[i]
            .ops
            .expect("gateways have an operations address")
    }

    /// `GET path` on gateway `i`'s operations listener (`/metrics`, `/stats`, ...).
    pub async fn ops_get(&self, i: usize, path: &str) -> HttpResponse {
        http::get(self.gateway_ops_addr(i), path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} on gw{i}'s operations listener: {e:#}"))
    }

    pub async fn stats(&self, i: usize) -> Stats {
        let response = self.ops_get(i, "/stats").await;
        assert_eq!(
            response.status,
            200,
            "GET /stats on gw{i}: {}",
            response.text()
        );
        serde_json::from_slice(&response.body).unwrap_or_else(|e| {
            panic!(
                "/stats on gw{i} is not the documented JSON ({e}): {}",
                response.text()
            )
        })
    }

    /// Routing keys bound from `<prefix>.events` to gateway `i`'s queue, as RabbitMQ
    /// itself reports them.
    pub async fn broker_bindings(&self, i: usize) -> Vec<String> {
        let queue = self.gateway_queue(i);
        let events = self.names.events_exchange();
        let mut keys: Vec<String> = broker::bindings_to(&queue)
            .await
            .unwrap_or_else(|e| panic!("bindings of {queue}: {e:#}"))
            .into_iter()
            .filter(|b| b.source_name == events)
            .map(|b| b.routing_key)
            .collect();
        keys.sort();
        keys
    }

    /// Redis keys under this stack's prefix.
    pub async fn redis_keys(&self) -> Vec<String> {
        store::keys_under(&self.prefix)
            .await
            .unwrap_or_else(|e| panic!("redis keys: {e:#}"))
    }

    // ---- processes ---------------------------------------------------------------

    /// Starts one more dispatcher and waits until it is subscribed to every shard.
    /// Returns its index.
    pub async fn start_dispatcher(&mut self) -> usize {
        let i = self.dispatchers.len();
        let name = format!("d{i}");
        let mut service = Service::new(name.clone(), self.log_path(&name));
        service.args = self.args.clone();
        let addr = free_port();
        service.addr = Some(addr);
        let extra = [("WARREN__DISPATCHER__LISTEN".to_owned(), addr.to_string())];
        service.start(&self.dispatcher_bin, self.settings(&extra));
        self.dispatchers.push(service);
        self.wait_dispatchers_subscribed().await;
        i
    }

    /// Starts one more gateway on a free port and waits for its `/readyz`. Returns its index.
    pub async fn start_gateway(&mut self) -> usize {
        self.start_gateway_with(&[]).await
    }

    /// As [`Stack::start_gateway`], with settings for this gateway only (kept across
    /// restarts).
    pub async fn start_gateway_with(&mut self, env: &[(&str, &str)]) -> usize {
        let i = self.gateways.len();
        let name = format!("gw{i}");
        let mut service = Service::new(name.clone(), self.log_path(&name));
        service.args = self.args.clone();
        let addr = free_port();
        let ops = free_port();
        let id = format!("{}-gw{i}", self.prefix);
        // The caller's settings come last: a test may move the public listener.
        let mut extra: Vec<(String, String)> = vec![
            ("WARREN__GATEWAY__LISTEN".into(), addr.to_string()),
            ("WARREN__GATEWAY__OPS_LISTEN".into(), ops.to_string()),
            ("WARREN__GATEWAY__ID".into(), id.clone()),
        ];
        extra.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        service.addr = Some(addr);
        service.ops = Some(ops);
        service.id = Some(id);
        service.start(&self.gateway_bin, self.settings(&extra));
        self.gateways.push(service);
        self.wait_gateway_ready(i).await;
        i
    }

    /// Starts a gateway with this stack's settings and `env` (last), expecting it to
    /// refuse to start: returns its exit status and log once it exits, or `None` if it
    /// still runs after `timeout` (it is then killed).
    pub async fn gateway_refusal(
        &self,
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Option<(ExitStatus, String)> {
        let name = format!("refused-{:04x}", rand::random::<u16>());
        let mut service = Service::new(name.clone(), self.log_path(&name));
        let mut extra: Vec<(String, String)> = vec![
            ("WARREN__GATEWAY__LISTEN".into(), free_port().to_string()),
            (
                "WARREN__GATEWAY__OPS_LISTEN".into(),
                free_port().to_string(),
            ),
            (
                "WARREN__GATEWAY__ID".into(),
                format!("{}-{name}", self.prefix),
            ),
        ];
        extra.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        service.start(&self.gateway_bin, self.settings(&extra));
        let status = wait_exit(&mut service, timeout).await;
        if status.is_none() {
            service.kill().await;
        }
        let log = std::fs::read_to_string(&service.log).unwrap_or_default();
        status.map(|s| (s, log))
    }

    /// Kills gateway `i` if it runs, then starts it again with the same id, port and
    /// settings.
    pub async fn restart_gateway(&mut self, i: usize) {
        let service = &mut self.gateways[i];
        service.kill().await;
        let env = service.env.clone();
        service.start(&self.gateway_bin, env);
        self.wait_gateway_ready(i).await;
    }

    /// Kills dispatcher `i` if it runs, starts it again with the same settings, and
    /// waits until it is subscribed to every shard (as a standby if another is active).
    pub async fn restart_dispatcher(&mut self, i: usize) {
        let service = &mut self.dispatchers[i];
        service.kill().await;
        let env = service.env.clone();
        service.start(&self.dispatcher_bin, env);
        self.wait_dispatchers_subscribed().await;
    }

    /// SIGKILL to dispatcher `i`; returns once it has exited.
    pub async fn kill_dispatcher(&mut self, i: usize) {
        self.dispatchers[i].kill().await;
    }

    /// SIGKILL to gateway `i`; returns once it has exited.
    pub async fn kill_gateway(&mut self, i: usize) {
        self.gateways[i].kill().await;
    }

    /// SIGTERM to gateway `i` (graceful shutdown); does not wait.
    pub fn terminate_gateway(&mut self, i: usize) {
        terminate(&self.gateways[i]);
    }

    /// Waits (bounded) for gateway `i` to exit on its own; `None` if it did not.
    pub async fn wait_gateway_exit(&mut self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.gateways[i], timeout).await
    }

    /// SIGTERM to dispatcher `i` (graceful shutdown); does not wait.
    pub fn terminate_dispatcher(&mut self, i: usize) {
        terminate(&self.dispatchers[i]);
    }

    /// Waits (bounded) for dispatcher `i` to exit on its own; `None` if it did not.
    pub async fn wait_dispatcher_exit(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> Option<ExitStatus> {
        wait_exit(&mut self.dispatchers[i], timeout).await
    }

    /// Whether gateway `i` still runs.
    pub fn gateway_alive(&mut self, i: usize) -> bool {
        self.gateways[i].alive()
    }

    /// Whether dispatcher `i` still runs.
    pub fn dispatcher_alive(&mut self, i: usize) -> bool {
        self.dispatchers[i].alive()
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.logs_dir.join(format!("{}-{name}.log", self.prefix))
    }

    /// The stack's settings, then the caller's, then `extra` (per process).
    fn settings(&self, extra: &[(String, String)]) -> Vec<(String, String)> {
        let shards = self.shards.to_string();
        let mut env: Vec<(String, String)> = [
            ("WARREN__AMQP__PREFIX", self.prefix.as_str()),
            ("WARREN__REDIS__PREFIX", self.prefix.as_str()),
            ("WARREN__AUTH__SECRET", self.secret.as_str()),
            ("WARREN__AMQP__SHARDS", shards.as_str()),
            ("WARREN__LOG__LEVEL", "info"),
            // Harness clients answer WebSocket pings only while a test reads them; a test
            // may leave one unread for a while without meaning it to look half-open.
            ("WARREN__GATEWAY__IDLE_TIMEOUT_S", "3600"),
            // Every dispatcher of a stack (and of parallel stacks) on its own port.
            ("WARREN__DISPATCHER__LISTEN", "127.0.0.1:0"),
            ("WARREN__GATEWAY__SENDS_PER_SEC", "100000"),
            ("WARREN__GATEWAY__BURST", "100000"),
            // The per-user budgets are policy too: off unless a test turns them on.
            ("WARREN__DISPATCHER__USER_SENDS_PER_SEC", "0"),
            ("WARREN__DISPATCHER__BOT_COMMANDS_PER_SEC", "0"),
            ("WARREN__ROOMS__MAX_CREATED_PER_HOUR", "0"),
            ("WARREN__GATEWAY__ALLOWED_ORIGINS", ALLOWED_ORIGIN),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.extend(self.env.iter().cloned());
        env.extend(extra.iter().cloned());
        env
    }

    async fn wait_gateway_ready(&mut self, i: usize) {
        let deadline = Instant::now() + self.ready_timeout;
        let addr = self.gateway_ops_addr(i);
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if !self.gateways[i].alive() {
                panic!(
                    "gw{i} exited before it was ready; see {}",
                    self.gateways[i].log.display()
                );
            }
            match http::get(addr, "/readyz").await {
                Ok(r) if r.status == 200 => return,
                Ok(r) => last = format!("HTTP {} {}", r.status, r.text()),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(POLL).await;
        }
        panic!(
            "gw{i} not ready within {:?} (last /readyz: {last}); see {}",
            self.ready_timeout,
            self.gateways[i].log.display()
        );
    }

    /// Waits until every shard queue has at least as many consumers as there are live
    /// dispatchers. Counted by `rabbitmqctl list_consumers`, which includes the waiting
    /// consumers of single-active-consumer queues (a passive declare does not on quorum
    /// queues).
    async fn wait_dispatchers_subscribed(&mut self) {
        if !self.default_broker {
            return self.wait_dispatchers_ready().await;
        }
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            let mut live = 0;
            for d in &mut self.dispatchers {
                match (d.child.is_some(), d.alive()) {
                    (_, true) => live += 1,
                    (true, false) => panic!(
                        "{} exited before it subscribed; see {}",
                        d.name,
                        d.log.display()
                    ),
                    (false, false) => {} // killed on purpose
                }
            }
            let (counts, error) = match broker::consumers_under(&self.prefix).await {
                Ok(by_queue) => {
                    let counts: Vec<usize> = (0..self.shards)
                        .map(|n| {
                            by_queue
                                .get(&self.names.commands_queue(n))
                                .copied()
                                .unwrap_or(0)
                        })
                        .collect();
                    (counts, String::new())
                }
                Err(e) => (Vec::new(), format!("; {e:#}")),
            };
            if counts.len() == self.shards as usize && counts.iter().all(|c| *c >= live) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "dispatchers not subscribed to every shard within {:?}: {live} live, consumers per shard {counts:?}{error}",
                    self.ready_timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Stack {
    /// Every live dispatcher answers `/readyz` with 200 (consuming, Redis reachable).
    async fn wait_dispatchers_ready(&mut self) {
        let deadline = Instant::now() + self.ready_timeout;
        for i in 0..self.dispatchers.len() {
            if !self.dispatchers[i].alive() {
                continue;
            }
            let addr = self.dispatcher_addr(i);
            loop {
                let status = http::get(addr, "/readyz").await.map(|r| r.status).ok();
                if status == Some(200) {
                    break;
                }
                assert!(
                    self.dispatchers[i].alive(),
                    "d{i} exited before it was ready; see {}",
                    self.dispatchers[i].log.display()
                );
                assert!(
                    Instant::now() < deadline,
                    "d{i} not ready within {:?} (last /readyz: {status:?}); see {}",
                    self.ready_timeout,
                    self.dispatchers[i].log.display()
                );
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        // Processes first, so nothing redeclares what is about to be removed.
        for s in self.gateways.iter_mut().chain(self.dispatchers.iter_mut()) {
            s.kill_blocking();
        }
        let mut queues: Vec<String> = (0..self.shards)
            .map(|n| self.names.commands_queue(n))
            .collect();
        queues.push(self.names.dead());
        queues.extend(
            self.gateways
                .iter()
                .filter_map(|g| g.id.as_deref())
                .map(|id| self.names.gateway_queue(id)),
        );
        let exchanges = vec![
            self.names.commands_exchange(),
            self.names.events_exchange(),
            self.names.dead(),
        ];
        // On a stack of its own broker this finds nothing there, and still clears Redis.
        let problems = cleanup::remove_blocking(&self.prefix, queues, exchanges);
        if !problems.is_empty() {
            eprintln!("[{}] cleanup left problems: {problems:#?}", self.prefix);
        }
        if failed {
            for s in self.dispatchers.iter().chain(&self.gateways) {
                eprintln!(
                    "---- [{}] {} log: {} (last {LOG_TAIL_LINES} lines)",
                    self.prefix,
                    s.name,
                    s.log.display()
                );
                eprintln!("{}", s.log_tail(LOG_TAIL_LINES));
            }
        }
    }
}

/// SIGTERM to a running service.
fn terminate(service: &Service) {
    let pid = service
        .child
        .as_ref()
        .and_then(Child::id)
        .expect("the service runs");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill -TERM {pid} failed");
}

/// Waits (bounded) for a service to exit on its own.
async fn wait_exit(service: &mut Service, timeout: Duration) -> Option<ExitStatus> {
    let child = service.child.as_mut()?;
    let status = tokio::time::timeout(timeout, child.wait()).await.ok()?.ok();
    service.child = None;
    status
}
