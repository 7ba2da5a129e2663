//! Warren's one stack launcher: a whole deployment (N dispatchers, M gateways) as real
//! processes under a unique prefix on the machine's RabbitMQ and Redis, and its removal
//! afterwards. The Rust tests use the library; the binary `warren-stack` serves
//! everything else (the browser tests, the benchmark, `scripts/run-local.sh`, the soak).
//!
//! - [`services`]: RabbitMQ and Redis answer, or one sentence says what to run.
//! - [`stack`]: the deployment: settings, start, readiness, kills and restarts, stop,
//!   cleanup on drop.
//! - [`process`]: one service process with its log; its listeners are bound here and
//!   handed to it already bound, so every port is known before it runs and no other
//!   process can take one in between (no "find a free port, then use it" race).
//! - [`broker`], [`store`]: what RabbitMQ and Redis hold under a prefix;
//!   [`cleanup`] removes all of it.

pub mod broker;
pub mod cleanup;
pub mod process;
pub mod services;
pub mod stack;
pub mod store;

pub use stack::{new_prefix, Stack, StackOptions, DEFAULT_SHARDS};
