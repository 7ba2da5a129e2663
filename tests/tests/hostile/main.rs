//! Hostile clients against real gateways: oversized, malformed, compressed and binary
//! frames, floods of joins, pings and connections, half-open and slowloris sockets, a
//! reader that stops reading, and the security checks (Origin, JWT algorithm confusion,
//! `kid` tricks, expiry while connected, identity only from `sub`, ids that would break
//! a routing key, secrets in logs). Each test asserts the documented close code or error
//! and ends by checking that the gateway still serves a well-behaved client.
//!
//! Non-destructive: RabbitMQ and Redis are never stopped. Run
//! `cargo build --workspace --bins` first; the harness starts those binaries.
//!
//! One test binary (`--test hostile`), one module per topic; `support` holds what they
//! share.

mod compression;
mod floods;
mod framing;
mod liveness;
mod security;
mod slow_readers;
mod support;
