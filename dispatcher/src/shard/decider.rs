//! The shard's decider: handles one command against the store, retrying while Redis
//! fails, until it has an outcome or the shard is told to stop. It publishes nothing;
//! the shard's loop puts the outcome into its [`super::window::Window`].

use std::sync::Arc;
use std::time::Instant;

use common::amqp::Backoff;
use proto::amqp::Command;
use tokio_util::sync::CancellationToken;

use crate::commands::{Handler, Outcome};
use crate::metrics::DispatcherMetrics;

/// What handling a command needs, shared by the shard's handling futures.
pub(super) struct Decider {
    pub(super) index: u32,
    pub(super) handler: Handler,
    pub(super) metrics: Arc<DispatcherMetrics>,
    pub(super) backoff: Backoff,
    pub(super) stop: CancellationToken,
}

/// Handles a command, retrying while Redis fails. `None` when told to stop first.
pub(super) async fn decide(
    decider: Arc<Decider>,
    command: Command,
    message_id: Option<String>,
) -> (Command, Option<Outcome>) {
    let mut backoff = decider.backoff.clone();
    loop {
        let started = Instant::now();
        let handled = decider
            .handler
            .handle(&command, message_id.as_deref())
            .await;
        let metrics = &decider.metrics;
        metrics
            .redis_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.set_redis_up(handled.is_ok());
        match handled {
            Ok(outcome) => return (command, Some(outcome)),
            Err(e) => {
                tracing::warn!(shard = decider.index, kind = command.body.kind(), error = %e, "store failed; retrying");
                metrics.retries.inc();
                let wait = backoff.next();
                tokio::select! {
                    biased;
                    () = decider.stop.cancelled() => return (command, None),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}
