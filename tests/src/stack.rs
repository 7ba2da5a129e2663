//! A whole Warren deployment for one test: the launcher's [`warren_stack::Stack`] with
//! the harness's settings, plus what a test does with it: tokens, clients, HTTP views,
//! and the broker's and Redis's view of the stack.
//!
//! Isolation is by name: every exchange, queue and Redis key of a stack starts with its
//! prefix `wt-<8 hex>`, so tests run in parallel. Dropping the [`Stack`] (also while a
//! test panics) kills its processes, then removes everything under its prefix from the
//! broker and from Redis, and, when the test failed, prints the tail of every log.

use std::ops::{Deref, DerefMut};
use std::process::ExitStatus;
use std::time::Duration;

use serde::Deserialize;
pub use warren_stack::{StackOptions, DEFAULT_SHARDS};

use crate::client::{Client, Connect, ConnectError};
use crate::http::{self, HttpResponse};
use crate::token::{sign_hs256, Claims};
use crate::{broker, store};

/// The `Origin` every stack allows (besides requests without one).
pub const ALLOWED_ORIGIN: &str = "http://allowed.test";

/// What every test stack runs with, before the test's own settings.
const HARNESS_SETTINGS: &[(&str, &str)] = &[
    ("WARREN__LOG__LEVEL", "info"),
    // Harness clients answer WebSocket pings only while a test reads them; a test may
    // leave one unread for a while without meaning it to look half-open.
    ("WARREN__GATEWAY__IDLE_TIMEOUT_S", "3600"),
    ("WARREN__GATEWAY__SENDS_PER_SEC", "100000"),
    ("WARREN__GATEWAY__BURST", "100000"),
    // The per-user budgets are policy too: off unless a test turns them on.
    ("WARREN__DISPATCHER__USER_SENDS_PER_SEC", "0"),
    ("WARREN__DISPATCHER__BOT_COMMANDS_PER_SEC", "0"),
    ("WARREN__ROOMS__MAX_CREATED_PER_HOUR", "0"),
    ("WARREN__GATEWAY__ALLOWED_ORIGINS", ALLOWED_ORIGIN),
];

/// `/stats` of a gateway: counts only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Stats {
    pub gateway: String,
    pub connections: u64,
    pub rooms: u64,
    pub users: u64,
    pub bindings: u64,
}

/// A launcher stack whose failures fail the test. Everything the launcher offers
/// (addresses, ids, names, kills, restarts) is reached through it.
pub struct Stack {
    inner: warren_stack::Stack,
}

impl Deref for Stack {
    type Target = warren_stack::Stack;
    fn deref(&self) -> &warren_stack::Stack {
        &self.inner
    }
}

impl DerefMut for Stack {
    fn deref_mut(&mut self) -> &mut warren_stack::Stack {
        &mut self.inner
    }
}

/// The test's failure when the launcher reports one.
fn must<T>(what: &str, result: anyhow::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e:#}"))
}

impl Stack {
    /// Starts the dispatchers one after the other, then the gateways, each waited for
    /// until ready. The dispatchers share the shards out among themselves within
    /// seconds ([`Stack::active_shards`] tells who is active where).
    pub async fn start(mut options: StackOptions) -> Stack {
        let mut env: Vec<(String, String)> = HARNESS_SETTINGS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env.append(&mut options.env);
        options.env = env;
        options.prefix_tag = "wt".to_owned();
        let inner = must("start the stack", warren_stack::Stack::start(options).await);
        Stack { inner }
    }

    // ---- processes ---------------------------------------------------------------

    /// Starts one more dispatcher and waits until it is subscribed to every shard.
    pub async fn start_dispatcher(&mut self) -> usize {
        must("start a dispatcher", self.inner.start_dispatcher().await)
    }

    /// Starts one more gateway and waits for its `/readyz`. Returns its index.
    pub async fn start_gateway(&mut self) -> usize {
        must("start a gateway", self.inner.start_gateway().await)
    }

    /// As [`Stack::start_gateway`], with settings for this gateway only (kept across
    /// restarts).
    pub async fn start_gateway_with(&mut self, env: &[(&str, &str)]) -> usize {
        must("start a gateway", self.inner.start_gateway_with(env).await)
    }

    /// A gateway expected to refuse to start: its exit status and log, or `None` if it
    /// still ran after `timeout` (see [`warren_stack::Stack::gateway_refusal`]).
    pub async fn gateway_refusal(
        &self,
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Option<(ExitStatus, String)> {
        must(
            "start a gateway",
            self.inner.gateway_refusal(env, timeout).await,
        )
    }

    pub async fn restart_gateway(&mut self, i: usize) {
        must(
            &format!("restart gw{i}"),
            self.inner.restart_gateway(i).await,
        )
    }

    pub async fn restart_dispatcher(&mut self, i: usize) {
        must(
            &format!("restart d{i}"),
            self.inner.restart_dispatcher(i).await,
        )
    }

    pub async fn kill_dispatcher(&mut self, i: usize) {
        must(&format!("kill d{i}"), self.inner.kill_dispatcher(i).await)
    }

    pub async fn kill_gateway(&mut self, i: usize) {
        must(&format!("kill gw{i}"), self.inner.kill_gateway(i).await)
    }

    pub fn terminate_gateway(&mut self, i: usize) {
        must(
            &format!("SIGTERM to gw{i}"),
            self.inner.terminate_gateway(i),
        )
    }

    pub fn terminate_dispatcher(&mut self, i: usize) {
        must(
            &format!("SIGTERM to d{i}"),
            self.inner.terminate_dispatcher(i),
        )
    }

    // ---- tokens ------------------------------------------------------------------

    /// A valid token for `user`, signed with this stack's secret.
    pub fn token(&self, user: &str) -> String {
        self.token_with(&Claims::new(user))
    }

    pub fn token_with(&self, claims: &Claims) -> String {
        sign_hs256(self.secret(), claims)
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

    /// `GET path` on dispatcher `i`'s HTTP port.
    pub async fn dispatcher_get(&self, i: usize, path: &str) -> HttpResponse {
        get(self.dispatcher_addr(i), path, &format!("dispatcher {i}")).await
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
        get(self.gateway_addr(i), path, &format!("gw{i}")).await
    }

    /// `GET path` on gateway `i`'s operations listener (`/metrics`, `/stats`, ...).
    pub async fn ops_get(&self, i: usize, path: &str) -> HttpResponse {
        let on = format!("gw{i}'s operations listener");
        get(self.gateway_ops_addr(i), path, &on).await
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
        let events = self.names().events_exchange();
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
        store::keys_under(self.prefix())
            .await
            .unwrap_or_else(|e| panic!("redis keys: {e:#}"))
    }
}

/// `GET path` on `addr` (`on` names it), failing the test when nothing answers.
async fn get(addr: std::net::SocketAddr, path: &str, on: &str) -> HttpResponse {
    http::get(addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path} on {on}: {e:#}"))
}
