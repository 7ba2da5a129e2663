//! A whole Warren deployment: dispatcher and gateway processes under a unique prefix,
//! sharing the machine's RabbitMQ and Redis with every other stack.
//!
//! Isolation is by name: every exchange, queue and Redis key of a stack starts with its
//! prefix, so stacks run side by side. Dropping the [`Stack`] (also while a test
//! panics) kills its processes, then removes everything under its prefix from the
//! broker and from Redis, and, when the thread panicked, prints the tail of every log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{bail, Context};
use proto::amqp::Names;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::process::{binary, target_dir, Listen, Service, LISTEN_FD, OPS_LISTEN_FD};
use crate::{broker, cleanup};

/// `amqp.shards` in the services' built-in defaults (common/src/defaults.toml).
pub const DEFAULT_SHARDS: u32 = 16;
const LOG_TAIL_LINES: usize = 40;
const POLL: Duration = Duration::from_millis(100);
const LOOPBACK_ANY_PORT: &str = "127.0.0.1:0";
const DISPATCHER_LISTEN: &str = "WARREN__DISPATCHER__LISTEN";
const GATEWAY_LISTEN: &str = "WARREN__GATEWAY__LISTEN";
const GATEWAY_OPS_LISTEN: &str = "WARREN__GATEWAY__OPS_LISTEN";

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
    /// A settings file that already exists, passed as `--config` (after `config`'s).
    pub config_file: Option<PathBuf>,
    /// The services use the machine's default RabbitMQ node, which the stack inspects
    /// (consumers, bindings) and cleans up. Off for a stack on a cluster of its own:
    /// readiness is then read from the processes' `/readyz`, and whoever started that
    /// broker removes what the stack declared on it.
    pub default_broker: bool,
    /// The first part of the prefix (`wt` for the tests: `wt-<8 hex>`).
    pub prefix_tag: String,
    /// The whole prefix, instead of one made from `prefix_tag`.
    pub prefix: Option<String>,
    /// `debug` or `release`: which build's binaries run.
    pub profile: String,
    /// Where logs go; `<target>/test-logs` when unset.
    pub logs_dir: Option<PathBuf>,
    /// Gateways allow their own web origins (`http://127.0.0.1:<port>` of every gateway
    /// the stack starts with), for a browser that loads the page from them.
    pub allow_own_origins: bool,
    /// Public addresses of the first gateways (explicit ports, e.g. 8080 and 8081);
    /// gateways past this list listen on a free loopback port.
    pub gateway_listen: Vec<SocketAddr>,
    /// Operations addresses of the first gateways, as `gateway_listen`.
    pub gateway_ops_listen: Vec<SocketAddr>,
    /// The secret the services verify tokens with; a random one when unset.
    pub secret: Option<String>,
    /// The settings file says the secret (`auth.secret`): the stack sets none.
    pub secret_from_config: bool,
    /// Settings for the gateways only (after `env`), e.g. their own AMQP account.
    pub gateway_env: Vec<(String, String)>,
    /// Settings for the dispatchers only (after `env`).
    pub dispatcher_env: Vec<(String, String)>,
    /// Ids of the first gateways; `<prefix>-gw<i>` past this list.
    pub gateway_ids: Vec<String>,
    /// Leave the prefix's queues, exchanges and keys in place when the stack stops (a
    /// local stack whose history outlives a run).
    pub keep_data: bool,
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
            config_file: None,
            default_broker: true,
            prefix_tag: "ws".to_owned(),
            prefix: None,
            profile: "debug".to_owned(),
            logs_dir: None,
            allow_own_origins: false,
            gateway_listen: Vec::new(),
            gateway_ops_listen: Vec::new(),
            secret: None,
            secret_from_config: false,
            gateway_env: Vec::new(),
            dispatcher_env: Vec::new(),
            gateway_ids: Vec::new(),
            keep_data: false,
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

    /// Adds settings written `name=value` and separated by spaces, each named as in the
    /// settings file: `"dispatcher.user_sends_per_sec=1 dispatcher.user_send_burst=10"`
    /// sets `WARREN__DISPATCHER__USER_SENDS_PER_SEC` and `WARREN__DISPATCHER__USER_SEND_BURST`.
    /// A value with a space in it goes through [`StackOptions::env`].
    ///
    /// # Panics
    /// On a setting without `=`: a mistake in the caller's code.
    pub fn settings(mut self, settings: &str) -> StackOptions {
        for setting in settings.split_whitespace() {
            let Some((name, value)) = setting.split_once('=') else {
                panic!("setting {setting:?} is not name=value");
            };
            self = self.env(&setting_variable(name), value);
        }
        self
    }

    /// The last value `env` gives `key`.
    fn setting(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The environment variable that sets a setting: `WARREN__` and its dotted name in upper
/// case with `__` for each dot.
pub fn setting_variable(name: &str) -> String {
    format!("WARREN__{}", name.replace('.', "__").to_uppercase())
}

/// A fresh prefix, `<tag>-<8 hex>`.
pub fn new_prefix(tag: &str) -> String {
    format!("{tag}-{:08x}", rand::random::<u32>())
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
    gateway_listen: Vec<SocketAddr>,
    gateway_ops_listen: Vec<SocketAddr>,
    /// Public listeners bound before their gateway started, by gateway index.
    held: Vec<(usize, std::net::TcpListener)>,
    gateway_env: Vec<(String, String)>,
    dispatcher_env: Vec<(String, String)>,
    gateway_ids: Vec<String>,
    keep_data: bool,
    /// `--config <file>` when the options gave a settings file.
    args: Vec<String>,
}

impl Stack {
    /// Starts the dispatchers one after the other, then the gateways, each waited for
    /// until ready. The dispatchers share the shards out among themselves within
    /// seconds. On an error, what was started is stopped and removed.
    pub async fn start(options: StackOptions) -> anyhow::Result<Stack> {
        let target = target_dir();
        let gateway_bin = binary(&target, &options.profile, "warren-gateway")?;
        let dispatcher_bin = binary(&target, &options.profile, "warren-dispatcher")?;
        let logs_dir = options
            .logs_dir
            .clone()
            .unwrap_or_else(|| target.join("test-logs"));
        std::fs::create_dir_all(&logs_dir)
            .with_context(|| format!("create {}", logs_dir.display()))?;
        let prefix = options
            .prefix
            .clone()
            .unwrap_or_else(|| new_prefix(&options.prefix_tag));
        let secret = options.secret.clone().unwrap_or_else(|| {
            if options.secret_from_config {
                return String::new();
            }
            format!(
                "{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            )
        });
        let shards = match options.setting("WARREN__AMQP__SHARDS") {
            Some(v) => v.parse().context("WARREN__AMQP__SHARDS is a number")?,
            None => DEFAULT_SHARDS,
        };
        eprintln!(
            "[{prefix}] logs: {}",
            logs_dir.join(format!("{prefix}-*.log")).display()
        );
        let mut args = Vec::new();
        if let Some(toml) = &options.config {
            let file = logs_dir.join(format!("{prefix}-config.toml"));
            std::fs::write(&file, toml).with_context(|| format!("write {}", file.display()))?;
            args = vec!["--config".to_owned(), file.display().to_string()];
        }
        if let Some(file) = &options.config_file {
            args = vec!["--config".to_owned(), file.display().to_string()];
        }
        let mut gateway_listen = options.gateway_listen.clone();
        let mut held = Vec::new();
        let mut env = options.env.clone();
        if options.allow_own_origins {
            // The ports must be known before any gateway runs: bound now, held, and
            // handed to each gateway at its start, so nothing else takes them meanwhile.
            for _ in gateway_listen.len()..options.gateways {
                let listener = std::net::TcpListener::bind(LOOPBACK_ANY_PORT)
                    .context("bind a gateway's listener")?;
                gateway_listen.push(listener.local_addr()?);
                held.push((gateway_listen.len() - 1, listener));
            }
            let origins: Vec<String> = gateway_listen
                .iter()
                .map(|a| format!("http://{a}"))
                .collect();
            env.push((
                "WARREN__GATEWAY__ALLOWED_ORIGINS".to_owned(),
                origins.join(","),
            ));
        }
        let mut stack = Stack {
            names: Names::new(prefix.clone()),
            prefix,
            secret,
            shards,
            env,
            ready_timeout: options.ready_timeout,
            default_broker: options.default_broker,
            gateway_bin,
            dispatcher_bin,
            logs_dir,
            gateways: Vec::new(),
            dispatchers: Vec::new(),
            gateway_listen,
            gateway_ops_listen: options.gateway_ops_listen,
            held,
            gateway_env: options.gateway_env,
            dispatcher_env: options.dispatcher_env,
            gateway_ids: options.gateway_ids,
            keep_data: options.keep_data,
            args,
        };
        for _ in 0..options.dispatchers {
            stack.start_dispatcher().await?;
        }
        for _ in 0..options.gateways {
            stack.start_gateway().await?;
        }
        Ok(stack)
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

    /// The HS256 secret the services verify tokens with (empty when the settings file
    /// says it).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn gateway_count(&self) -> usize {
        self.gateways.len()
    }

    pub fn dispatcher_count(&self) -> usize {
        self.dispatchers.len()
    }

    /// Gateway `i`'s public listener (WebSocket, the web client).
    pub fn gateway_addr(&self, i: usize) -> SocketAddr {
        self.gateways[i].addr(0).expect("gateways have an address")
    }

    /// Gateway `i`'s operations listener (`/readyz`, `/metrics`, `/stats`).
    pub fn gateway_ops_addr(&self, i: usize) -> SocketAddr {
        self.gateways[i]
            .addr(1)
            .expect("gateways have an operations address")
    }

    pub fn gateway_id(&self, i: usize) -> &str {
        self.gateways[i].id.as_deref().expect("gateways have an id")
    }

    /// `<prefix>.gw.<gateway id>`.
    pub fn gateway_queue(&self, i: usize) -> String {
        self.names.gateway_queue(self.gateway_id(i))
    }

    /// The address of dispatcher `i`'s `/healthz`, `/readyz` and `/metrics`.
    pub fn dispatcher_addr(&self, i: usize) -> SocketAddr {
        self.dispatchers[i]
            .addr(0)
            .expect("dispatchers have an address")
    }

    /// Gateway `i`'s process id while it runs.
    pub fn gateway_pid(&self, i: usize) -> Option<u32> {
        self.gateways[i].pid()
    }

    /// Dispatcher `i`'s process id while it runs.
    pub fn dispatcher_pid(&self, i: usize) -> Option<u32> {
        self.dispatchers[i].pid()
    }

    /// Every log file of this stack.
    pub fn logs(&self) -> Vec<PathBuf> {
        self.dispatchers
            .iter()
            .chain(&self.gateways)
            .map(|s| s.log.clone())
            .collect()
    }

    // ---- processes ---------------------------------------------------------------

    /// Starts one more dispatcher and waits until it is subscribed to every shard.
    /// Returns its index.
    pub async fn start_dispatcher(&mut self) -> anyhow::Result<usize> {
        let i = self.dispatchers.len();
        let name = format!("d{i}");
        let mut service = Service::new(name.clone(), self.log_path(&name));
        service.args = self.args.clone();
        let addr = self.listen_setting(DISPATCHER_LISTEN, &[], None)?;
        service.listen = vec![Listen::new(LISTEN_FD, DISPATCHER_LISTEN, addr)];
        let env = self.settings(&self.dispatcher_env);
        let started = service.start(&self.dispatcher_bin, env);
        self.dispatchers.push(service);
        started?;
        self.wait_dispatchers_subscribed().await?;
        Ok(i)
    }

    /// Starts one more gateway on a free port and waits for its `/readyz`. Returns its index.
    pub async fn start_gateway(&mut self) -> anyhow::Result<usize> {
        self.start_gateway_with(&[]).await
    }

    /// As [`Stack::start_gateway`], with settings for this gateway only (kept across
    /// restarts).
    pub async fn start_gateway_with(&mut self, env: &[(&str, &str)]) -> anyhow::Result<usize> {
        let i = self.gateways.len();
        let name = format!("gw{i}");
        let id = match self.gateway_ids.get(i) {
            Some(id) => id.clone(),
            None => format!("{}-gw{i}", self.prefix),
        };
        let mut service = self.gateway_service(&name, &id, env, i)?;
        service.args = self.args.clone();
        if let Some(at) = self.held.iter().position(|(g, _)| *g == i) {
            service.listen[0].bound = Some(self.held.swap_remove(at).1);
        }
        let started = service.start(&self.gateway_bin, self.gateway_settings(&id, env));
        self.gateways.push(service);
        started?;
        self.wait_gateway_ready(i).await?;
        Ok(i)
    }

    /// Starts a gateway with this stack's settings and `env` (last), expecting it to
    /// refuse to start: returns its exit status and log once it exits, or `None` if it
    /// still runs after `timeout` (it is then killed).
    pub async fn gateway_refusal(
        &self,
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> anyhow::Result<Option<(ExitStatus, String)>> {
        let name = format!("refused-{:04x}", rand::random::<u16>());
        let id = format!("{}-{name}", self.prefix);
        let mut service = self.gateway_service(&name, &id, env, usize::MAX)?;
        service.start(&self.gateway_bin, self.gateway_settings(&id, env))?;
        let status = service.wait_exit(timeout).await;
        if status.is_none() {
            service.kill().await?;
        }
        let log = std::fs::read_to_string(&service.log).unwrap_or_default();
        Ok(status.map(|s| (s, log)))
    }

    /// Kills gateway `i` if it runs, then starts it again with the same id, ports and
    /// settings.
    pub async fn restart_gateway(&mut self, i: usize) -> anyhow::Result<()> {
        let service = &mut self.gateways[i];
        service.kill().await?;
        let env = service.env.clone();
        service.start(&self.gateway_bin, env)?;
        self.wait_gateway_ready(i).await
    }

    /// Kills dispatcher `i` if it runs, starts it again with the same settings, and
    /// waits until it is subscribed to every shard (as a standby if another is active).
    pub async fn restart_dispatcher(&mut self, i: usize) -> anyhow::Result<()> {
        let service = &mut self.dispatchers[i];
        service.kill().await?;
        let env = service.env.clone();
        service.start(&self.dispatcher_bin, env)?;
        self.wait_dispatchers_subscribed().await
    }

    /// SIGKILL to dispatcher `i`; returns once it has exited.
    pub async fn kill_dispatcher(&mut self, i: usize) -> anyhow::Result<()> {
        self.dispatchers[i].kill().await
    }

    /// SIGKILL to gateway `i`; returns once it has exited.
    pub async fn kill_gateway(&mut self, i: usize) -> anyhow::Result<()> {
        self.gateways[i].kill().await
    }

    /// SIGTERM to gateway `i` (graceful shutdown); does not wait.
    pub fn terminate_gateway(&mut self, i: usize) -> anyhow::Result<()> {
        self.gateways[i].terminate()
    }

    /// Waits (bounded) for gateway `i` to exit on its own; `None` if it did not.
    pub async fn wait_gateway_exit(&mut self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        self.gateways[i].wait_exit(timeout).await
    }

    /// SIGTERM to dispatcher `i` (graceful shutdown); does not wait.
    pub fn terminate_dispatcher(&mut self, i: usize) -> anyhow::Result<()> {
        self.dispatchers[i].terminate()
    }

    /// Waits (bounded) for dispatcher `i` to exit on its own; `None` if it did not.
    pub async fn wait_dispatcher_exit(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> Option<ExitStatus> {
        self.dispatchers[i].wait_exit(timeout).await
    }

    /// Whether gateway `i` still runs.
    pub fn gateway_alive(&mut self, i: usize) -> bool {
        self.gateways[i].alive()
    }

    /// Whether dispatcher `i` still runs.
    pub fn dispatcher_alive(&mut self, i: usize) -> bool {
        self.dispatchers[i].alive()
    }

    /// SIGTERM to every process, gateways first, then waits (bounded by `grace`) for
    /// each to exit; what is still running then is killed. The prefix is removed when
    /// the stack is dropped.
    pub async fn stop(&mut self, grace: Duration) {
        for s in self.gateways.iter_mut().chain(self.dispatchers.iter_mut()) {
            if s.alive() && s.terminate().is_ok() && s.wait_exit(grace).await.is_none() {
                s.kill_blocking();
            }
        }
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.logs_dir.join(format!("{}-{name}.log", self.prefix))
    }

    /// A gateway's process, not started yet: its listeners are the configured ones for
    /// gateway `i` if any, then what `env` or the stack's settings say, else a free
    /// loopback port.
    fn gateway_service(
        &self,
        name: &str,
        id: &str,
        env: &[(&str, &str)],
        i: usize,
    ) -> anyhow::Result<Service> {
        let mut service = Service::new(name.to_owned(), self.log_path(name));
        service.id = Some(id.to_owned());
        let addr = self.listen_setting(GATEWAY_LISTEN, env, self.gateway_listen.get(i).copied())?;
        let ops = self.listen_setting(
            GATEWAY_OPS_LISTEN,
            env,
            self.gateway_ops_listen.get(i).copied(),
        )?;
        service.listen = vec![
            Listen::new(LISTEN_FD, GATEWAY_LISTEN, addr),
            Listen::new(OPS_LISTEN_FD, GATEWAY_OPS_LISTEN, ops),
        ];
        Ok(service)
    }

    /// Where a listener binds: `explicit` if given, else the last value of `key` in
    /// `env` or the stack's settings, else a free loopback port.
    fn listen_setting(
        &self,
        key: &str,
        env: &[(&str, &str)],
        explicit: Option<SocketAddr>,
    ) -> anyhow::Result<SocketAddr> {
        if let Some(addr) = explicit {
            return Ok(addr);
        }
        let configured = env
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .or_else(|| {
                self.env
                    .iter()
                    .rev()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
            })
            .unwrap_or(LOOPBACK_ANY_PORT);
        configured
            .parse()
            .with_context(|| format!("{key}={configured} is not an address"))
    }

    /// A gateway's settings: the stack's, its id, then `env` (last: a test may move
    /// the public listener).
    fn gateway_settings(&self, id: &str, env: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut extra = self.gateway_env.clone();
        extra.push(("WARREN__GATEWAY__ID".to_owned(), id.to_owned()));
        extra.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self.settings(&extra)
    }

    /// The stack's settings, then the caller's, then `extra` (per process); the
    /// listeners' addresses are added at each start, once bound.
    fn settings(&self, extra: &[(String, String)]) -> Vec<(String, String)> {
        let shards = self.shards.to_string();
        let mut env: Vec<(String, String)> = [
            ("WARREN__AMQP__PREFIX", self.prefix.as_str()),
            ("WARREN__REDIS__PREFIX", self.prefix.as_str()),
            ("WARREN__AUTH__SECRET", self.secret.as_str()),
            ("WARREN__AMQP__SHARDS", shards.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.retain(|(k, _)| !(k == "WARREN__AUTH__SECRET" && self.secret.is_empty()));
        env.extend(self.env.iter().cloned());
        env.extend(extra.iter().cloned());
        env
    }

    async fn wait_gateway_ready(&mut self, i: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.ready_timeout;
        let addr = self.gateway_ops_addr(i);
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if !self.gateways[i].alive() {
                bail!(
                    "gw{i} exited before it was ready; see {}",
                    self.gateways[i].log.display()
                );
            }
            match status_of(addr, "/readyz").await {
                Ok(200) => return Ok(()),
                Ok(status) => last = format!("HTTP {status}"),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(POLL).await;
        }
        bail!(
            "gw{i} not ready within {:?} (last /readyz: {last}); see {}",
            self.ready_timeout,
            self.gateways[i].log.display()
        )
    }

    /// Waits until every shard queue has at least as many consumers as there are live
    /// dispatchers. Counted by `rabbitmqctl list_consumers`, which includes the waiting
    /// consumers of single-active-consumer queues (a passive declare does not on quorum
    /// queues).
    async fn wait_dispatchers_subscribed(&mut self) -> anyhow::Result<()> {
        if !self.default_broker {
            return self.wait_dispatchers_ready().await;
        }
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            let mut live = 0;
            for d in &mut self.dispatchers {
                match (d.child.is_some(), d.alive()) {
                    (_, true) => live += 1,
                    (true, false) => bail!(
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
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "dispatchers not subscribed to every shard within {:?}: {live} live, consumers per shard {counts:?}{error}",
                    self.ready_timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every live dispatcher answers `/readyz` with 200 (consuming, Redis reachable).
    async fn wait_dispatchers_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.ready_timeout;
        for i in 0..self.dispatchers.len() {
            if !self.dispatchers[i].alive() {
                continue;
            }
            let addr = self.dispatcher_addr(i);
            loop {
                let status = status_of(addr, "/readyz").await.ok();
                if status == Some(200) {
                    break;
                }
                let log = self.dispatchers[i].log.display().to_string();
                if !self.dispatchers[i].alive() {
                    bail!("d{i} exited before it was ready; see {log}");
                }
                if Instant::now() >= deadline {
                    bail!(
                        "d{i} not ready within {:?} (last /readyz: {status:?}); see {log}",
                        self.ready_timeout
                    );
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        // Processes first, so nothing redeclares what is about to be removed.
        for s in self.gateways.iter_mut().chain(self.dispatchers.iter_mut()) {
            s.kill_blocking();
        }
        if self.keep_data {
            return;
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

/// The status of `GET path` on `addr` (readiness probes only: the body is ignored).
pub async fn status_of(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .context("no answer within 5 s")??;
    let line = String::from_utf8_lossy(&answer);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {:?}", line.lines().next()))
}
