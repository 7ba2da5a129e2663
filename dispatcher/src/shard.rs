//! One shard's consumer: its commands are handled strictly in order, one at a time,
//! because a room's order is its shard's order.
//!
//! For each delivery: read it ([`intake`]), handle it ([`Handler`]), publish the result
//! with confirms ([`Publisher`]), and only then ack it. What cannot be read goes to the
//! dead-letter exchange (confirmed, then acked), never back to the queue. A Redis failure
//! or a nack is retried with backoff on the same delivery until it succeeds or the shard
//! is told to stop; a channel failure ends the shard, and the connection loop starts
//! over (the broker redelivers what was not acked, and dedup makes that safe).

use std::future::Future;
use std::sync::Arc;

use common::amqp::Backoff;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions};
use lapin::{Channel, Consumer};
use proto::amqp::Command;
use proto::server::ServerBody;
use tokio_util::sync::CancellationToken;

use crate::commands::{Handler, Outcome};
use crate::intake::{self, Rejection};
use crate::metrics::DispatcherMetrics;
use crate::publisher::{PublishError, Publisher, ReplyTo};

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker cancelled the consumer")]
    Cancelled,
    #[error("the channel closed before the ack")]
    AckLost,
}

/// Whether to go on after a delivery.
enum Flow {
    Continue,
    /// Told to stop while waiting to retry: the delivery stays unacked.
    Stop,
}

/// Backoff between retries, cut short by the stop signal.
struct Retry {
    backoff: Backoff,
    stop: CancellationToken,
}

impl Retry {
    /// Waits the next backoff. False when told to stop instead.
    async fn pause(&mut self) -> bool {
        let wait = self.backoff.next();
        tokio::select! {
            () = self.stop.cancelled() => false,
            () = tokio::time::sleep(wait) => true,
        }
    }
}

/// What every shard of one connection shares.
#[derive(Clone)]
pub struct Shared {
    pub publisher: Publisher,
    pub handler: Handler,
    /// AMQP logins whose commands speak for their `actor`.
    pub gateway_accounts: Arc<[String]>,
    /// The retry backoff each shard starts from.
    pub backoff: Backoff,
    pub metrics: Arc<DispatcherMetrics>,
    /// Stops every shard of the connection.
    pub stop: CancellationToken,
}

/// The consumer of one command queue.
pub struct Shard {
    index: u32,
    channel: Channel,
    consumer: Consumer,
    publisher: Publisher,
    handler: Handler,
    gateway_accounts: Arc<[String]>,
    metrics: Arc<DispatcherMetrics>,
    retry: Retry,
}

impl Shard {
    /// `consumer` runs on `channel`, with manual acks.
    pub fn new(index: u32, channel: Channel, consumer: Consumer, shared: Shared) -> Shard {
        Shard {
            index,
            channel,
            consumer,
            publisher: shared.publisher,
            handler: shared.handler,
            gateway_accounts: shared.gateway_accounts,
            metrics: shared.metrics,
            retry: Retry {
                backoff: shared.backoff,
                stop: shared.stop,
            },
        }
    }

    /// Consumes until told to stop (`Ok`) or until the channel fails (`Err`). On stop
    /// the command in hand is finished first, then the consumer is cancelled.
    pub async fn run(mut self) -> Result<(), ShardError> {
        loop {
            let next = tokio::select! {
                biased;
                () = self.retry.stop.cancelled() => break,
                next = self.consumer.next() => next,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(ShardError::Cancelled),
            };
            if let Flow::Stop = self.process(delivery).await? {
                break;
            }
        }
        self.cancel().await;
        Ok(())
    }

    /// Cancels the consumer, then closes the channel: deliveries prefetched but not
    /// handled go back to the queue for whoever consumes it next.
    async fn cancel(&self) {
        let tag = self.consumer.tag();
        if let Err(e) = self
            .channel
            .basic_cancel(tag, BasicCancelOptions::default())
            .await
        {
            tracing::debug!(shard = self.index, error = %e, "cancelling the consumer failed");
        }
        if let Err(e) = self.channel.close(200, "OK".into()).await {
            tracing::debug!(shard = self.index, error = %e, "closing the channel failed");
        }
    }

    async fn process(&mut self, delivery: Delivery) -> Result<Flow, ShardError> {
        let started = std::time::Instant::now();
        let props = &delivery.properties;
        let user_id = props.user_id().as_ref().map(|u| u.as_str());
        let flow = match intake::read(&delivery.data, user_id, &self.gateway_accounts) {
            Err(Rejection(reason)) => {
                tracing::warn!(shard = self.index, %reason, "dead-lettering a command");
                self.metrics.count("unknown", "dead");
                let publisher = &self.publisher;
                until_published(&mut self.retry, self.index, || {
                    publisher.dead_letter(&delivery.data, props, &reason)
                })
                .await?
            }
            Ok(command) => match self
                .decide(&command, intake::dedup_id(message_id_of(props)))
                .await
            {
                None => Flow::Stop,
                Some(outcome) => {
                    self.metrics
                        .count(command.body.kind(), outcome_label(&outcome));
                    let reply_to = reply_target(&delivery, &command);
                    let publisher = &self.publisher;
                    until_published(&mut self.retry, self.index, || {
                        publisher.deliver(&outcome, reply_to.as_ref())
                    })
                    .await?
                }
            },
        };
        if let Flow::Stop = flow {
            return Ok(Flow::Stop);
        }
        if !delivery.acker.ack(BasicAckOptions::default()).await? {
            return Err(ShardError::AckLost);
        }
        self.metrics
            .command_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(Flow::Continue)
    }

    /// Handles a command, retrying while Redis fails. `None` when told to stop first.
    async fn decide(&mut self, command: &Command, message_id: Option<&str>) -> Option<Outcome> {
        loop {
            let started = std::time::Instant::now();
            let handled = self.handler.handle(command, message_id).await;
            self.metrics
                .redis_seconds
                .observe(started.elapsed().as_secs_f64());
            self.metrics.set_redis_up(handled.is_ok());
            match handled {
                Ok(outcome) => {
                    self.retry.backoff.reset();
                    return Some(outcome);
                }
                Err(e) => {
                    tracing::warn!(shard = self.index, kind = command.body.kind(), error = %e, "store failed; retrying");
                    self.metrics.retries.inc();
                    if !self.retry.pause().await {
                        return None;
                    }
                }
            }
        }
    }
}

/// `ok`, or the code of the error the command was answered with.
fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome.reply.as_ref().map(|f| &f.body) {
        Some(ServerBody::Error(e)) => e.code.as_str(),
        _ => "ok",
    }
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

/// Publishes until the broker confirms everything, retrying nacks with backoff.
async fn until_published<F, Fut>(
    retry: &mut Retry,
    shard: u32,
    mut publish: F,
) -> Result<Flow, ShardError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), PublishError>>,
{
    loop {
        match publish().await {
            Ok(()) => {
                retry.backoff.reset();
                return Ok(Flow::Continue);
            }
            Err(PublishError::Amqp(e)) => return Err(e.into()),
            Err(PublishError::Encode(e)) => {
                // Cannot succeed on any retry; acking is the only way past it.
                tracing::error!(shard, error = %e, "dropping a result that cannot be encoded");
                return Ok(Flow::Continue);
            }
            Err(e @ PublishError::Nacked(_)) => {
                tracing::warn!(shard, error = %e, "publish refused; retrying");
                if !retry.pause().await {
                    return Ok(Flow::Stop);
                }
            }
        }
    }
}
