//! One shard's consumer. This module is its loop ([`Shard::run`]); `decider` handles one
//! command against the store, retrying while Redis fails; `window` holds what was handled
//! until it is confirmed and acked, over `ledger`, which keeps each room's order.
//!
//! Its commands are handled strictly in order, one at a time, because a room's order is
//! its shard's order: [`intake`] reads a delivery, the [`Handler`] does its Redis work,
//! and the [`Publisher`] encodes what it publishes into a [`Batch`]. The shard sends the
//! batch and goes on to the next delivery without waiting for the broker's confirms, so
//! the confirms of many commands are in flight together and several commands' acks leave
//! as one. What holds, as when each command waited for its own confirms:
//!
//! - A command is acked only after its Redis work and the confirms of everything it
//!   published. Acks follow delivery order: the longest run of confirmed commands at the
//!   head of the window is acked with one `multiple` ack, and one ack is on its way at a
//!   time, so they reach the broker in order and never cover an unconfirmed command.
//! - Room order: a command's batch is held while an earlier command of the same room is
//!   unconfirmed. A refused (nacked) batch is sent again after a backoff, and nothing
//!   later in its room can overtake it meanwhile (gateways drop a seq below one they have
//!   delivered, so an overtaken message would be lost to them); other rooms go on.
//! - What cannot be read goes to the dead-letter exchange (confirmed, then acked), never
//!   back to the queue.
//! - A Redis failure is retried with backoff on the same delivery until it succeeds or
//!   the shard is told to stop; earlier commands' confirms and acks go on meanwhile.
//! - On stop, no delivery is taken any more; the command in hand is finished, and every
//!   batch sent (or held behind one sent) is seen through to its confirm and acked. A
//!   batch waiting to be sent again, and what its room holds behind it, stays unacked.
//! - A channel failure ends the shard and the connection loop starts over: the broker
//!   redelivers whatever was not acked, and dedup keeps a redelivered send single.
//! - A command whose room belongs to another shard is dead-lettered, never applied: the
//!   gateway or bot that sent it disagrees about `amqp.shards`, and running it here
//!   would race the room's own shard.
//! - Handing the shard over to its owner, when the owner's probe arrives
//!   ([`crate::balance`]), is the stop above without the connection's stop: the shard
//!   stops taking deliveries, sees what it handled through to its acks, and closes its
//!   channel; the supervisor subscribes again.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use common::amqp::Backoff;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::{Channel, Consumer};
use proto::amqp::Command;
use proto::server::ServerBody;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::balance::{Assignment, HOLD, PROBE_FROM_HEADER, PROBE_TYPE};
use crate::commands::{Handler, Outcome};
use crate::intake::{self, Accounts, Rejection};
use crate::metrics::DispatcherMetrics;
use crate::publisher::{Batch, Publisher, ReplyTo};
use decider::{decide, Decider};
use trace::Dispatched;
use window::{BoxFuture, Window};

mod decider;
mod ledger;
mod trace;
mod window;

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker cancelled the consumer")]
    Cancelled,
}

/// How a shard ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Told to stop: the connection is going.
    Stopped,
    /// Handed over to its assigned dispatcher: subscribe again, as a standby.
    HandedOver,
}

/// What every shard of one connection shares.
#[derive(Clone)]
pub struct ShardContext {
    pub publisher: Publisher,
    pub handler: Handler,
    /// Which AMQP logins speak for their `actor`, and which bots act as admins.
    pub accounts: Arc<Accounts>,
    /// The retry backoff each failing command or refused batch starts from.
    pub backoff: Backoff,
    pub metrics: Arc<DispatcherMetrics>,
    /// Stops every shard of the connection.
    pub stop: CancellationToken,
    /// `dispatcher.publish_in_room_order`: hold a room's batches behind its unconfirmed
    /// ones (off: every batch goes at once, gateways repair the order).
    pub room_order: bool,
    /// `amqp.shards`: which shard each room belongs to.
    pub shards: u32,
    /// Which shards this dispatcher should be active on ([`crate::balance`]).
    pub assignment: watch::Receiver<Assignment>,
}

/// The consumer of one command queue.
pub struct Shard {
    index: u32,
    channel: Channel,
    consumer: Consumer,
    accounts: Arc<Accounts>,
    metrics: Arc<DispatcherMetrics>,
    stop: CancellationToken,
    decider: Arc<Decider>,
    window: Window,
    room_order: bool,
    shards: u32,
    assignment: watch::Receiver<Assignment>,
    /// When this consumer subscribed: it hands over no sooner than [`HOLD`] after.
    subscribed: Instant,
    /// Has had a delivery: it is the queue's active consumer.
    active: bool,
}

impl Shard {
    /// `consumer` runs on `channel`, with manual acks.
    pub fn new(index: u32, channel: Channel, consumer: Consumer, context: ShardContext) -> Shard {
        Shard {
            index,
            window: Window::new(
                index,
                channel.clone(),
                context.publisher,
                context.backoff.clone(),
                context.stop.clone(),
                context.metrics.clone(),
            ),
            channel,
            consumer,
            metrics: context.metrics.clone(),
            stop: context.stop.clone(),
            decider: Arc::new(Decider {
                index,
                handler: context.handler,
                metrics: context.metrics,
                backoff: context.backoff,
                stop: context.stop,
            }),
            accounts: context.accounts,
            room_order: context.room_order,
            shards: context.shards,
            assignment: context.assignment,
            subscribed: Instant::now(),
            active: false,
        }
    }

    /// Consumes until told to stop or until it hands the shard over (`Ok`), or until the
    /// channel fails (`Err`). What is in hand is finished first (see the module's notes),
    /// then the channel is closed.
    pub async fn run(mut self) -> Result<Ended, ShardError> {
        let consumed = self.consume().await;
        self.metrics.set_shard_active(self.index, false);
        let ended = consumed?;
        if ended == Ended::HandedOver {
            self.metrics.handovers.inc();
            tracing::info!(shard = self.index, "shard handed over");
        }
        self.close().await;
        Ok(ended)
    }

    /// A probe from `from` reached this (active) consumer: the shard goes to `from` if
    /// it is the shard's owner, and this consumer has held the shard long enough.
    fn hands_over_to(&self, from: &str) -> bool {
        self.subscribed.elapsed() >= HOLD
            && self.assignment.borrow().hands_over_to(self.index, from)
    }

    async fn consume(&mut self) -> Result<Ended, ShardError> {
        let mut stopping = false;
        let mut handing_over = false;
        // The command whose Redis work is under way, and its delivery.
        let mut handling: Option<BoxFuture<(Command, Option<Outcome>)>> = None;
        let mut in_hand: Option<(Delivery, Instant, Dispatched)> = None;
        loop {
            self.window.send_ack();
            if stopping && handling.is_none() && self.window.is_idle() {
                break;
            }
            tokio::select! {
                biased;
                () = self.stop.cancelled(), if !stopping => stopping = true,
                Some((id, settled)) = self.window.sending.next(), if !self.window.sending.is_empty() => {
                    self.window.settle(id, settled, stopping)?;
                }
                acked = in_flight(&mut self.window.acking), if self.window.acking.is_some() => {
                    self.window.acking = None;
                    acked?;
                }
                (command, outcome) = in_flight(&mut handling), if handling.is_some() => {
                    handling = None;
                    let Some((delivery, started, dispatched)) = in_hand.take() else {
                        unreachable!("a command is handled only with its delivery in hand");
                    };
                    match outcome {
                        // Told to stop while Redis was failing: the delivery stays unacked.
                        None => stopping = true,
                        Some(outcome) => self.handled(delivery, started, &command, outcome, &dispatched),
                    }
                }
                next = self.consumer.next(), if !stopping && handling.is_none() => {
                    let delivery = match next {
                        Some(Ok(delivery)) => delivery,
                        Some(Err(e)) => return Err(e.into()),
                        None => return Err(ShardError::Cancelled),
                    };
                    let started = Instant::now();
                    if !self.active {
                        self.active = true;
                        self.metrics.set_shard_active(self.index, true);
                    }
                    let props = &delivery.properties;
                    if props.kind().as_ref().is_some_and(|k| k.as_str() == PROBE_TYPE) {
                        // A dispatcher looking for its shard. If it is the owner, what
                        // was delivered before the probe is handled, and what was
                        // prefetched after it goes back to the queue.
                        if probe_sender(props).is_some_and(|from| self.hands_over_to(from)) {
                            stopping = true;
                            handing_over = true;
                        }
                        self.window.push(delivery.delivery_tag, started, None, Batch::default());
                    } else {
                        let user_id = props.user_id().as_ref().map(|u| u.as_str());
                        let read = intake::read(&delivery.data, user_id, &self.accounts)
                            .and_then(|command| intake::check_shard(command, self.index, self.shards));
                        match read {
                            Err(Rejection(reason)) => {
                                tracing::warn!(shard = self.index, %reason, "dead-lettering a command");
                                self.metrics.count("unknown", "dead");
                                let batch = self.window.publisher.dead_letter(&delivery.data, props, &reason);
                                self.window.push(delivery.delivery_tag, started, None, batch);
                            }
                            Ok(command) => {
                                let message_id = intake::dedup_id(message_id_of(props)).map(str::to_owned);
                                let dispatched = Dispatched::of(props, &command);
                                let deciding = decide(self.decider.clone(), command, message_id, dispatched.handoff.parent)
                                    .instrument(dispatched.span.clone());
                                handling = Some(Box::pin(deciding));
                                in_hand = Some((delivery, started, dispatched));
                            }
                        }
                    }
                }
            }
            self.window.collect();
        }
        self.window.finish().await?;
        Ok(if handing_over {
            Ended::HandedOver
        } else {
            Ended::Stopped
        })
    }

    /// A command's outcome goes into the window, to be published and then acked.
    fn handled(
        &mut self,
        delivery: Delivery,
        started: Instant,
        command: &Command,
        outcome: Outcome,
        dispatched: &Dispatched,
    ) {
        let label = outcome_label(&outcome);
        self.metrics.count(command.body.kind(), label);
        dispatched.log(label);
        let reply_to = reply_target(&delivery, command);
        let handoff = Some(&dispatched.handoff);
        match self
            .window
            .publisher
            .outcome(outcome, reply_to.as_ref(), handoff)
        {
            Ok(batch) => {
                let room = self.room_order.then(|| command.room());
                self.window
                    .push(delivery.delivery_tag, started, room, batch);
            }
            Err(e) => {
                // Cannot succeed on any retry; acking is the only way past it.
                tracing::error!(shard = self.index, error = %e, "dropping a result that cannot be encoded");
                self.window
                    .push(delivery.delivery_tag, started, None, Batch::default());
            }
        }
    }

    /// Closes the channel, which ends the consumer too: deliveries prefetched but not
    /// handled go back to the queue for whoever consumes it next. No `basic.cancel`
    /// first: a cancelled consumer's queue activates the next consumer at once, which
    /// could take later commands before the closing channel gives the earlier ones back;
    /// a channel's close returns them before the next consumer gets anything.
    async fn close(&mut self) {
        if let Err(e) = self.channel.close(200, "OK".into()).await {
            tracing::debug!(shard = self.index, error = %e, "closing the channel failed");
        }
    }
}

/// Awaits the future in `slot`; only polled while there is one.
async fn in_flight<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// `ok`, or the code of the error the command was answered with.
fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome.reply.as_ref().map(|f| &f.body) {
        Some(ServerBody::Error(e)) => e.code.as_str(),
        _ => "ok",
    }
}

/// The dispatcher id a probe carries.
fn probe_sender(props: &lapin::BasicProperties) -> Option<&str> {
    let headers = props.headers().as_ref()?;
    headers
        .inner()
        .iter()
        .find(|(key, _)| key.as_str() == PROBE_FROM_HEADER)
        .and_then(|(_, value)| match value {
            lapin::types::AMQPValue::LongString(id) => std::str::from_utf8(id.as_bytes()).ok(),
            _ => None,
        })
}

fn message_id_of(props: &lapin::BasicProperties) -> Option<&str> {
    props.message_id().as_ref().map(|id| id.as_str())
}

/// Where the answer to `command` goes: its `reply_to`, if it has one.
fn reply_target(delivery: &Delivery, command: &Command) -> Option<ReplyTo> {
    let queue = delivery.properties.reply_to().as_ref()?;
    Some(ReplyTo {
        queue: queue.as_str().to_owned(),
        correlation_id: delivery.properties.correlation_id().clone(),
        session: command
            .conn
            .as_ref()
            .map(|c| c.session.clone())
            .unwrap_or_default(),
    })
}
