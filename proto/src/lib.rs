//! Warren's wire contract (`docs/PROTOCOL.md` in the repository, version 1) as plain types.
//!
//! This crate is pure: serde and nothing else, no I/O and no runtime. The gateway, the
//! dispatcher, the tests and third-party bots written in Rust all speak through it, so a
//! change here is a change to the contract.
//!
//! - [`ids`]: room and user identifiers, direct-message rooms, shards.
//! - [`client`]: frames a WebSocket client sends, and their parsing.
//! - [`server`]: frames the server sends to a client.
//! - [`amqp`]: exchange, queue and routing-key names, and the JSON bodies that travel
//!   through RabbitMQ (commands, events, replies).
//! - [`codes`]: error codes and WebSocket close codes.
//! - [`topology`]: the exchanges, queues and bindings every service declares, as data.
//! - [`keys`]: the Redis key layout the gateways and the dispatchers share.
//! - [`accounts`]: RabbitMQ account names and the least-privilege permissions of each.
//!
//! `proto/tests/protocol_doc.rs` checks that every frame type, error code, close code
//! and routing-key kind listed here is in docs/PROTOCOL.md and the other way round, and
//! `tests/tests/deploy_agreement/` checks the deployment files against [`topology`]
//! and [`accounts`].

pub mod accounts;
pub mod amqp;
pub mod client;
pub mod codes;
pub mod ids;
pub mod keys;
pub mod server;
pub mod topology;

/// The version carried as `"v"` in every AMQP body.
pub const BODY_VERSION: u8 = 1;

/// The WebSocket subprotocol the server selects when a client offers it.
pub const SUBPROTOCOL: &str = "warren.v1";
