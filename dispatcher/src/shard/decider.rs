//! The shard's decider: handles one command against the store, retrying while Redis
//! fails, until it has an outcome or the shard is told to stop. It publishes nothing;
//! the shard's loop puts the outcome into its [`super::window::Window`].

use std::sync::Arc;
use std::time::Instant;

use common::amqp::Backoff;
use common::hop_span;
use common::trace::{self, TraceParent};
use proto::amqp::Command;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

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
/// `parent` is the command's dispatch hop, for the store spans.
pub(super) async fn decide(
    decider: Arc<Decider>,
    command: Command,
    message_id: Option<String>,
    parent: TraceParent,
) -> (Command, Option<Outcome>) {
    let mut backoff = decider.backoff.clone();
    loop {
        let started = Instant::now();
        // The command's Redis work, a child of its dispatch span; only when traced.
        let store = hop_span!("store");
        let hop = (!store.is_disabled()).then(|| trace::enter(&store, Some(parent)));
        let handled = decider
            .handler
            .handle(&command, message_id.as_deref())
            .instrument(store.clone())
            .await;
        if let Some(hop) = hop {
            tracing::debug!(
                target: trace::TARGET,
                parent: &store,
                trace_id = %hop.trace_id_hex(),
                span_id = %hop.span_id_hex(),
                stored = handled.is_ok(),
                "store"
            );
        }
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
