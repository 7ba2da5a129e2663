//! The shard's window: the deliveries it has handled but not acked yet, their batches on
//! their way to the broker, and the acks. A batch is sent at once or held behind its
//! room's unconfirmed ones ([`Ledger`]); a refused batch is sent again after a backoff;
//! the confirmed run at the head is acked with one `multiple` ack, one ack at a time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use common::amqp::Backoff;
use futures_util::stream::FuturesUnordered;
use lapin::options::BasicAckOptions;
use lapin::Channel;
use tokio_util::sync::CancellationToken;

use super::ledger::Ledger;
use crate::metrics::DispatcherMetrics;
use crate::publisher::{Batch, PublishError, Publisher};

pub(super) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How a sent batch ended.
pub(super) enum Settled {
    Confirmed,
    /// The broker refused this many of its publishes.
    Refused(usize),
    /// Told to stop while waiting to send it again.
    Abandoned,
    Failed(lapin::Error),
}

/// One delivery between its handling and its ack.
struct Entry {
    /// The delivery's tag on the shard's channel.
    tag: u64,
    started: Instant,
    /// What it publishes, until confirmed.
    batch: Arc<Batch>,
    /// Set at the first refusal.
    backoff: Option<Backoff>,
}

/// The shard's handled but unacked deliveries ([`Ledger`]), their batches on their way,
/// and the acks.
pub(super) struct Window {
    index: u32,
    /// The shard's channel, which its acks go on.
    channel: Channel,
    pub(super) publisher: Publisher,
    backoff: Backoff,
    stop: CancellationToken,
    metrics: Arc<DispatcherMetrics>,
    ledger: Ledger<Entry>,
    /// Batches sent or waiting to be sent again, each resolving to its entry's id.
    pub(super) sending: FuturesUnordered<BoxFuture<(u64, Settled)>>,
    /// The tag of the last entry of the confirmed run popped from the head, not acked
    /// yet.
    ready: Option<u64>,
    /// The ack on its way.
    pub(super) acking: Option<BoxFuture<lapin::Result<()>>>,
}

impl Window {
    pub(super) fn new(
        index: u32,
        channel: Channel,
        publisher: Publisher,
        backoff: Backoff,
        stop: CancellationToken,
        metrics: Arc<DispatcherMetrics>,
    ) -> Window {
        Window {
            index,
            channel,
            publisher,
            backoff,
            stop,
            metrics,
            ledger: Ledger::new(),
            sending: FuturesUnordered::new(),
            ready: None,
            acking: None,
        }
    }

    /// Adds a handled delivery: its batch is sent now, or held behind its room's
    /// unconfirmed entries; with nothing to publish it is confirmed at once.
    pub(super) fn push(&mut self, tag: u64, started: Instant, room: Option<String>, batch: Batch) {
        let publishes = !batch.is_empty();
        let entry = Entry {
            tag,
            started,
            batch: Arc::new(batch),
            backoff: None,
        };
        let (id, send) = self.ledger.push(entry, room, publishes);
        if send {
            self.send(id);
        }
    }

    /// Sends entry `id`'s batch.
    fn send(&mut self, id: u64) {
        let batch = self.ledger.item_mut(id).batch.clone();
        let sent = self.publisher.send(batch);
        self.sending
            .push(Box::pin(async move { (id, settled(sent.await)) }));
    }

    /// Sends entry `id`'s batch again after a backoff, unless told to stop first.
    fn resend(&mut self, id: u64) {
        let template = &self.backoff;
        let entry = self.ledger.item_mut(id);
        let wait = entry.backoff.get_or_insert_with(|| template.clone()).next();
        let batch = entry.batch.clone();
        let publisher = self.publisher.clone();
        let stop = self.stop.clone();
        self.sending.push(Box::pin(async move {
            tokio::select! {
                biased;
                () = stop.cancelled() => return (id, Settled::Abandoned),
                () = tokio::time::sleep(wait) => {}
            }
            (id, settled(publisher.send(batch).await))
        }));
    }

    /// Records how entry `id`'s batch ended, and sends what that releases.
    pub(super) fn settle(
        &mut self,
        id: u64,
        settled: Settled,
        stopping: bool,
    ) -> lapin::Result<()> {
        match settled {
            Settled::Failed(e) => return Err(e),
            Settled::Confirmed => {
                // The bytes are no longer needed.
                self.ledger.item_mut(id).batch = Arc::default();
                if let Some(next) = self.ledger.confirm(id) {
                    self.send(next);
                }
            }
            Settled::Refused(_) if stopping => self.ledger.abandon(id),
            Settled::Refused(refused) => {
                tracing::warn!(shard = self.index, refused, "publish refused; retrying");
                self.metrics.retries.inc();
                self.resend(id);
            }
            Settled::Abandoned => self.ledger.abandon(id),
        }
        Ok(())
    }

    /// Pops the confirmed run at the head of the window: its last entry's ack will cover
    /// it all.
    pub(super) fn collect(&mut self) {
        let (ready, metrics) = (&mut self.ready, &self.metrics);
        self.ledger.pop_confirmed(|entry| {
            metrics
                .command_seconds
                .observe(entry.started.elapsed().as_secs_f64());
            *ready = Some(entry.tag);
        });
    }

    /// Starts the ack of what is ready, unless an ack is already on its way: then what
    /// is confirmed meanwhile goes with the next one. One at a time, acks reach the
    /// broker in order, so a `multiple` ack never meets a tag acked before it.
    pub(super) fn send_ack(&mut self) {
        if self.acking.is_some() {
            return;
        }
        if let Some(tag) = self.ready.take() {
            let channel = self.channel.clone();
            self.acking = Some(Box::pin(async move {
                channel
                    .basic_ack(tag, BasicAckOptions { multiple: true })
                    .await
            }));
        }
    }

    /// Nothing sent, held or being acked.
    pub(super) fn is_idle(&self) -> bool {
        self.sending.is_empty() && self.acking.is_none() && self.ready.is_none()
    }

    /// After a stop: acks, one by one, the confirmed entries left behind an abandoned
    /// one (never the abandoned ones: they are redelivered).
    pub(super) async fn finish(&mut self) -> lapin::Result<()> {
        let left: Vec<(Entry, bool)> = self.ledger.drain().collect();
        for (entry, confirmed) in left {
            if !confirmed {
                continue;
            }
            self.channel
                .basic_ack(entry.tag, BasicAckOptions { multiple: false })
                .await?;
            self.metrics
                .command_seconds
                .observe(entry.started.elapsed().as_secs_f64());
        }
        Ok(())
    }
}

fn settled(sent: Result<(), PublishError>) -> Settled {
    match sent {
        Ok(()) => Settled::Confirmed,
        Err(PublishError::Nacked(n)) => Settled::Refused(n),
        Err(PublishError::Amqp(e)) => Settled::Failed(e),
    }
}
