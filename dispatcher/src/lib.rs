//! Warren's dispatcher: consumes commands from RabbitMQ, decides permissions, assigns
//! ids and seqs, stores history, roles, mutes and bans in Redis, and publishes events
//! and answers.
//!
//! [`run`] is the whole service; the `warren-dispatcher` binary only loads settings and
//! waits for a signal, so tests start it in-process. How the modules fit:
//! - [`supervisor`]: the connection loop (connect, write the configured rooms, declare,
//!   one shard per queue, reconnect).
//! - [`balance`]: sharing the shards among the live dispatchers (a roster in Redis,
//!   probes, handovers).
//! - [`shard`]: one queue's consumer: read → handle (one at a time, in order) → publish
//!   → ack once confirmed; the confirms of many commands are in flight together, and
//!   acks go out in order, several at once. Its loop is `shard/mod.rs`, the handling of
//!   one command (with its Redis retries) `shard/decider.rs`, what is handled but not yet
//!   acked `shard/window.rs` over `shard/ledger.rs`.
//! - [`intake`]: parsing a delivery and deciding whose command it is (gateway or bot),
//!   and whether its `message_id` can deduplicate it.
//! - [`commands`]: one module per command kind, producing events and an answer; each
//!   reads the store, decides with the pure rules below, then writes (`commands/ctx.rs`
//!   holds what they share).
//! - The chat rules as pure functions: [`access`] (who may join, send, read),
//!   [`moderation`] (who may moderate whom, role changes, mute and ban expiry),
//!   [`recovery`] (what history a rejoin gets), [`rooms`] (rooms from configuration).
//! - [`store`]: the Redis data model, with its atomic scripts (the lowest layer: it
//!   imports no chat rule); [`retention`]: rooms nobody uses expire.
//! - [`publisher`]: encoding what a command publishes (or its dead letter) and
//!   publishing it with confirms.
//! - [`ops_listener`] and [`metrics`]: the operations listener, `/healthz`, `/readyz` and
//!   `/metrics` on `dispatcher.listen`.

pub mod access;
pub mod balance;
pub mod commands;
pub mod intake;
pub mod metrics;
pub mod moderation;
pub mod ops_listener;
pub mod publisher;
pub mod recovery;
pub mod retention;
pub mod rooms;
pub mod shard;
pub mod store;
pub mod supervisor;

/// Fixtures shared by the unit tests of several modules.
#[cfg(test)]
pub(crate) mod test_support {
    use proto::server::{Author, Message};

    /// Messages of room `r` with the given seqs, ids `m<seq>`.
    pub(crate) fn msgs(seqs: &[u64]) -> Vec<Message> {
        seqs.iter()
            .map(|&seq| Message {
                room: "r".into(),
                id: format!("m{seq}"),
                seq,
                epoch: "e".into(),
                from: Author {
                    id: "a".into(),
                    name: "A".into(),
                    bot: false,
                },
                text: "t".into(),
                ts: seq,
            })
            .collect()
    }
}

use common::Settings;
use tokio_util::sync::CancellationToken;

/// Why the dispatcher could not run. Lost connections are not errors: they are retried
/// until shutdown.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Listen(#[from] common::listen::ListenError),
}

/// The smallest dedup window the protocol promises, seconds.
pub const MIN_DEDUP_TTL_S: u64 = 600;

/// Runs the dispatcher until `shutdown` is cancelled, then stops cleanly and returns.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), DispatcherError> {
    check(&settings)?;
    let metrics = std::sync::Arc::new(metrics::DispatcherMetrics::new());
    let addr = settings.dispatcher.listen.clone();
    let ops = if addr.is_empty() {
        None
    } else {
        let listener = common::listen::bind(&addr, common::listen::LISTEN_FD).await?;
        Some(tokio::spawn(ops_listener::serve_health_and_metrics(
            listener,
            metrics.clone(),
            shutdown.clone(),
        )))
    };
    supervisor::Supervisor::new(settings, metrics)
        .run(shutdown)
        .await;
    if let Some(ops) = ops {
        if ops.await.is_err() {
            tracing::error!("the operations listener panicked");
        }
    }
    Ok(())
}

fn check(settings: &Settings) -> Result<(), DispatcherError> {
    let fail = |what: &str| Err(DispatcherError::Config(what.to_owned()));
    if settings.amqp.shards == 0 {
        return fail("amqp.shards must be at least 1");
    }
    if settings.amqp.prefetch == 0 {
        return fail("amqp.prefetch must be at least 1");
    }
    if settings.amqp.prefix.is_empty() || settings.redis.prefix.is_empty() {
        return fail("amqp.prefix and redis.prefix must not be empty");
    }
    if settings.dispatcher.history_limit == 0 {
        return fail("dispatcher.history_limit must be at least 1");
    }
    if settings.dispatcher.dedup_ttl_s < MIN_DEDUP_TTL_S {
        return fail("dispatcher.dedup_ttl_s must be at least 600");
    }
    if settings.gateway.max_text_bytes == 0 {
        return fail("gateway.max_text_bytes must be at least 1");
    }
    rooms::plan(&settings.rooms.list).map_err(DispatcherError::Config)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Settings {
        Settings::load_from(None, Some(Default::default())).unwrap()
    }

    #[test]
    fn the_defaults_are_valid() {
        assert!(check(&defaults()).is_ok());
    }

    #[test]
    fn a_short_dedup_window_is_refused() {
        let mut s = defaults();
        s.dispatcher.dedup_ttl_s = 60;
        assert!(check(&s).is_err());
        let mut s = defaults();
        s.amqp.shards = 0;
        assert!(check(&s).is_err());
    }

    #[test]
    fn a_badly_declared_room_is_refused() {
        let mut s = defaults();
        s.rooms.list.push(common::settings::RoomConfig {
            id: "staff".into(),
            visibility: "hidden".into(),
            announce: false,
            owners: vec![],
            moderators: vec![],
            history_limit: None,
            history_on_join: None,
        });
        assert!(check(&s).is_err());
    }
}
