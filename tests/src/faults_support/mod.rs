//! What the fault tests (`tests/tests/faults.rs`) add to the harness.
//!
//! - [`services`]: stopping and starting the shared RabbitMQ, as a guard that starts it
//!   again when dropped, broker views, and waiting until no other test run uses the
//!   shared services; [`redis_outage`]: the same for Redis, with or without its data.
//! - [`member`]: a room member whose stream survives its connection: paced sends with
//!   same-`ref` retries, and rejoin with `since` on a new connection.
//! - [`streams`]: rooms under a paced stream of sends, one sender and one reader each,
//!   released phase by phase and checked at the end.
//! - [`checks`]: the end-of-test checks (nothing acked lost, exactly once, in order,
//!   gapless, bindings and queues as membership says, nothing left) and the probes on
//!   the way (`/readyz`, `/metrics`, logs).

pub mod checks;
pub mod member;
pub mod redis_outage;
pub mod services;
pub mod streams;

pub use checks::Proc;
pub use member::{Controls, Ended, Member};
pub use redis_outage::{RedisOutage, Restart};
pub use services::BrokerOutage;
