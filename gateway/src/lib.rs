//! Warren's WebSocket gateway.
//!
//! A gateway holds client connections and nothing else that must outlive it. Its
//! pieces, outermost first:
//! - [`startup`]: binds the listeners, builds the shared [`Gateway`] ([`state`]), starts
//!   the background tasks and drains them in order on shutdown.
//! - [`accept`]: the accept loop and HTTP/1.1 connections, with a deadline on the
//!   request head (slowloris) and a cap on connections not yet upgraded.
//! - [`upgrade`]: the public listener's routes: `/ws` (token, Origin, readiness and caps
//!   checked before the upgrade) and the [`web_client`] at `/`.
//! - [`ops`]: the operations listener: `/healthz`, `/readyz`, `/stats`, `/metrics`.
//! - [`caps`]: the connection caps on this gateway (in all, per user), and
//!   [`user_cap`] the cap on one user's connections across gateways.
//! - [`connection`]: one task per connection that owns the socket, the bounded outbound
//!   queue, the per-room join filter, liveness (pings, idle timeout) and the checks on
//!   every inbound frame.
//! - [`index`]: the local maps (sessions, rooms, users) that fan-out reads.
//! - [`broker`]: the supervised RabbitMQ link — confirmed command publishing and the
//!   binder that makes the queue's bindings follow local membership.
//! - [`deliver`]: deliveries from the gateway's queue to local connections.
//! - [`limits`]: send rate limit, frame budget and bad-frame strikes.
//! - [`metrics`]: what `/metrics` shows.
//! - [`liveness`]: this gateway's liveness key, which its presence entries depend on,
//!   and the users it holds, which user events are addressed by.
//! - [`repair`]: where each room stands, and reading a gap from the room's history.
//! - [`retention`]: rooms with a local member keep their keys in Redis.
//!
//! Layers call inward only: no module reaches into its parent's private items; a child
//! gets what it needs as arguments or from a sibling (the connection's loop hands its
//! outlet to the checks in `connection/frames.rs`, which answer with an action).
//! Reconnect loops (broker link, liveness) run under [`common::supervise`].

pub mod accept;
pub mod broker;
pub mod caps;
pub mod connection;
pub mod deliver;
pub mod index;
pub mod limits;
pub mod liveness;
pub mod metrics;
pub mod ops;
pub mod repair;
pub mod retention;
pub mod startup;
pub mod state;
pub mod upgrade;
pub mod user_cap;
pub mod web_client;
pub mod ws;

pub use startup::{run, run_on_listeners, GatewayError};
pub use state::Gateway;
