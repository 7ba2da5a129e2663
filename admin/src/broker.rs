//! Read-only views of RabbitMQ over AMQP, as the admin account: a passive `queue.declare`
//! tells a queue's message count and consumer count without changing anything (and
//! needs no permission), which is what `shards` and `gateways` show as backlogs.

use anyhow::Context;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use serde::Serialize;

use crate::settings::AdminConfig;

/// A queue's counts, or `None` when it does not exist.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct QueueCounts {
    /// Messages ready for delivery (the backlog).
    pub messages: u32,
    pub consumers: u32,
}

/// An AMQP connection used for passive declares only.
pub struct Broker {
    connection: Connection,
    channel: Option<Channel>,
}

impl Broker {
    pub async fn open(config: &AdminConfig) -> anyhow::Result<Broker> {
        let timeout = config.timeout();
        let connection = tokio::time::timeout(
            timeout,
            common::amqp::connect(config.admin.amqp_url.expose(), "warren-admin observer"),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no connection to RabbitMQ within {timeout:?}"))?
        .context("connect to RabbitMQ as the admin account")?;
        Ok(Broker {
            connection,
            channel: None,
        })
    }

    /// The counts of `queue`, `None` if there is no such queue.
    pub async fn counts(&mut self, queue: &str) -> anyhow::Result<Option<QueueCounts>> {
        // A passive declare of a missing queue closes its channel: open another then.
        let channel = match self.channel.take() {
            Some(channel) if channel.status().connected() => channel,
            _ => self.connection.create_channel().await?,
        };
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        match channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
        {
            Ok(q) => {
                self.channel = Some(channel);
                Ok(Some(QueueCounts {
                    messages: q.message_count(),
                    consumers: q.consumer_count(),
                }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("passive declare of {queue}")),
        }
    }

    pub async fn close(self) {
        let _closed = self.connection.close(200, "OK".into()).await;
    }
}

/// The broker's answer to a passive declare of a queue that does not exist.
fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}
