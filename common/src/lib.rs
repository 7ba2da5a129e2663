//! Mechanisms every Warren service shares, and no chat rules.
//!
//! - [`settings`]: typed configuration, defaults → file → `WARREN__*` environment.
//! - [`amqp`]: connecting to RabbitMQ, declaring the shared topology, publish properties.
//! - [`supervise`]: running a link again after each failure, with backoff.
//! - [`store`]: the Redis connection, to one Redis or a Redis Cluster (both reconnect by
//!   themselves), and the key names the services share.
//! - [`auth`]: JWT verification with a pinned algorithm, and minting for development.
//! - [`telemetry`]: tracing set-up (text or JSON).
//! - `otlp` (cargo feature `otlp`): the OpenTelemetry exporter of the trace spans.
//! - [`trace`]: W3C `traceparent` on AMQP messages, so one message's spans share a trace id.
//! - [`metrics`]: Prometheus registry rendering and shared histogram shapes.
//! - [`shutdown`]: SIGTERM/SIGINT as a future, and running a service until then.
//! - [`listen`]: a listener bound here, or handed over already bound by a launcher.

pub mod amqp;
pub mod auth;
pub mod listen;
pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod settings;
pub mod shutdown;
pub mod store;
pub mod supervise;
pub mod telemetry;
pub mod trace;

pub use settings::Settings;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
