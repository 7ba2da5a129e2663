//! The CLI's AMQP side: it is a bot. It declares one exclusive replies queue of its own
//! (`<prefix>.bot.<name>.replies-<random>`, so that two runs never clash), publishes
//! each command with the bots' confirmed publisher ([`bots::link::Commands`]) and waits
//! for the answer with the command's `ref` as `correlation_id`.

use std::time::Duration;

use anyhow::{bail, Context};
use bots::link::Commands;
use common::amqp::{confirmed_channel, connect, consume, consuming_channel};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, Consumer};
use proto::amqp::{CommandBody, Names, Reply};
use proto::server::ServerFrame;

use crate::settings::AdminConfig;

/// An open connection as the admin bot.
pub struct Link {
    connection: Connection,
    commands: Commands,
    replies: Consumer,
    timeout: Duration,
}

impl Link {
    pub async fn open(config: &AdminConfig) -> anyhow::Result<Link> {
        let timeout = config.timeout();
        let name = format!("warren-admin {}", config.admin.name);
        let connection =
            tokio::time::timeout(timeout, connect(config.admin.amqp_url.expose(), &name))
                .await
                .map_err(|_| anyhow::anyhow!("no connection to RabbitMQ within {timeout:?}"))?
                .context("connect to RabbitMQ as the admin account")?;
        let purpose = format!("replies-{}", uuid::Uuid::new_v4().simple());
        let queue = Names::new(config.amqp.prefix.clone()).bot_queue(&config.admin.name, &purpose);
        let setup = connection.create_channel().await?;
        let private = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        setup
            .queue_declare(queue.clone().into(), private, FieldTable::default())
            .await
            .with_context(|| format!("declare {queue} (the account's permissions?)"))?;
        let consuming = consuming_channel(&connection, 16).await?;
        let forget_on_send = BasicConsumeOptions {
            no_ack: true,
            exclusive: true,
            ..Default::default()
        };
        let replies = consume(
            &consuming,
            &queue,
            &format!("{queue}-consumer"),
            forget_on_send,
        )
        .await?;
        let commands = Commands::new(
            confirmed_channel(&connection).await?,
            &config.amqp.prefix,
            config.login(),
            queue,
            config.amqp.shards,
            timeout,
        );
        Ok(Link {
            connection,
            commands,
            replies,
            timeout,
        })
    }

    /// Sends one command and returns its answer.
    pub async fn ask(&mut self, body: CommandBody) -> anyhow::Result<ServerFrame> {
        let reference = uuid::Uuid::new_v4().simple().to_string();
        let kind = body.kind();
        self.commands
            .publish(body, &reference)
            .await
            .with_context(|| format!("publish the {kind} command"))?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.replies.next())
                .await
                .map_err(|_| {
                    anyhow::anyhow!("no answer to the {kind} command within {:?}", self.timeout)
                })?;
            let Some(delivery) = next else {
                bail!("the replies queue closed");
            };
            let delivery = delivery.context("read an answer")?;
            let answers = delivery
                .properties
                .correlation_id()
                .as_ref()
                .is_some_and(|c| c.as_str() == reference);
            if !answers {
                continue; // a late answer to an earlier command
            }
            let reply: Reply = serde_json::from_slice(&delivery.data)
                .context("an answer that is not a reply body")?;
            return Ok(reply.frame);
        }
    }

    pub async fn close(self) {
        let _closed = self.connection.close(200, "OK".into()).await;
    }
}
