//! The harness of Warren's cross-service tests.
//!
//! A test starts a [`Stack`] (real `warren-gateway` and `warren-dispatcher` processes,
//! built beforehand by `cargo build --workspace --bins`, against the machine's RabbitMQ
//! and Redis under a unique prefix), connects [`Client`]s to its gateways, and checks a
//! property through the public surfaces only: WebSocket frames, the gateways' HTTP
//! endpoints, what RabbitMQ and Redis hold. No mocks.
//!
//! - [`stack`]: a deployment (the launcher's, `warren_stack`) with the harness's
//!   settings, tokens, clients and HTTP views.
//! - [`client`]: a WebSocket client with bounded reads and typed helpers over `proto`;
//!   [`connect`] says how it connects, [`requests`] holds the typed requests.
//! - [`traffic`]: windowed senders with same-`ref` retries, receivers, and the
//!   exactly-once / in-order / gapless checks.
//! - [`token`]: JWTs, good and hostile.
//! - [`http`]: raw HTTP for health, stats and handshake refusals.
//! - [`crowd`]: a room's members in one call (connect and join each user).
//! - [`rooms_support`]: moderation, refusals, presence and dm requests and matchers.
//! - [`hostile_support`]: a raw WebSocket client that breaks the rules on purpose,
//!   `/metrics` as numbers, a gateway's resident memory, RSA keys for JWT tests.
//! - [`broker`], [`store`]: what RabbitMQ and Redis say; [`cleanup`] empties both of a
//!   stack's objects (all three from the launcher).
//! - [`properties`]: the core end-to-end properties as functions over a stack, so that
//!   each deployment shape (single nodes, clusters) is checked by the same code.
//! - [`redis_cluster`]: a local Redis Cluster for one test, from
//!   `scripts/redis-cluster.sh`, with its failover helpers; [`rabbitmq_cluster`] the
//!   same for a 3-node RabbitMQ cluster, from `scripts/rabbitmq-cluster.sh`;
//!   [`private_redis`] a single Redis of a test's own, for reconfiguring it.
//! - [`accounts`]: RabbitMQ users with least-privilege permissions, made per test;
//!   [`bots`]: bot processes and raw AMQP publishing under an account.

pub mod accounts;
pub mod bots;
pub mod client;
mod cluster_script;
pub mod connect;
pub mod crowd;
pub mod faults_support;
pub mod hostile_support;
pub mod http;
pub mod private_redis;
mod process;
pub mod properties;
pub mod rabbitmq_cluster;
pub mod redis_cluster;
pub mod requests;
pub mod rooms_support;
pub mod stack;
pub mod token;
pub mod traffic;

use std::future::Future;
use std::time::Duration;

use serde_json::Value;
pub use warren_stack::{broker, cleanup, store};

pub use client::{Acked, Client, Connect, Recv, TokenVia};
pub use stack::{Stack, StackOptions, Stats, ALLOWED_ORIGIN};
pub use token::Claims;

/// Polls `check` every 100 ms until it returns `Ok`, for at most `timeout`; then fails
/// with the last reason it gave. For state that converges (bindings, counters), never
/// for timing.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(t) => return t,
            Err(reason) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: still not true after {timeout:?}: {reason}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Matches a `message` event of `room`.
pub fn is_message_in(room: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v| v["type"] == "message" && v["room"] == room
}

/// Matches the `message` event with this id.
pub fn is_message_with_id(id: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v| v["type"] == "message" && v["id"] == id
}

/// Matches a `message` event with this text.
pub fn is_message_with_text(text: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v| v["type"] == "message" && v["text"] == text
}
