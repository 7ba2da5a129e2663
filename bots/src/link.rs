//! The bot's side of RabbitMQ: its two queues, and commands published as itself.
//!
//! A bot declares nothing shared. It needs the deployment's exchanges to exist already
//! (its account may not create them), and it owns exactly two queues:
//! - `<prefix>.bot.<name>.events`, bound to `<prefix>.events` with `room.<room>.message`
//!   for each of its `rooms` ([`event_bindings`]): a bot account may bind only the keys
//!   its topic permissions grant (docs/BOTS.md), and a wildcard such as `room.#` would
//!   also reach dm rooms, so it names its rooms. The queue expires
//!   a while after the bot is gone ([`EVENTS_EXPIRE_MS`]) instead of with the connection,
//!   so a bot that reconnects finds the events it missed; its length is capped.
//! - `<prefix>.bot.<name>.replies`, exclusive: the dispatcher's answers (`ack`, `error`)
//!   to the bot's commands, through each command's `reply_to`.
//!
//! Commands go to `<prefix>.commands` with routing key `shard.<fnv1a(room) % shards>`,
//! persistent and mandatory, with `user_id` set to the bot's login (RabbitMQ checks it),
//! and count as sent only once the broker confirms them.

use std::time::Duration;

use common::amqp::{
    confirmed_channel, connect, consume, consuming_channel, declare_expiring_queue,
    persistent_json_properties,
};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection, Consumer, ExchangeKind};
use proto::amqp::{room_key, shard_key, Actor, Command, CommandBody, Names};
use proto::client::{ModAction, Moderate};
use proto::ids::{shard_of, MAX_REF_LEN};
use proto::BODY_VERSION;

use crate::settings::BotSettings;

/// How long the events queue outlives the bot's last consumer, milliseconds.
pub const EVENTS_EXPIRE_MS: i32 = 60_000;
/// Events the queue keeps while nobody consumes; the oldest go first.
pub const EVENTS_MAX_LENGTH: i32 = 10_000;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The names of a bot's queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotQueues {
    pub events: String,
    pub replies: String,
}

impl BotQueues {
    pub fn new(prefix: &str, name: &str) -> BotQueues {
        let names = Names::new(prefix);
        BotQueues {
            events: names.bot_queue(name, "events"),
            replies: names.bot_queue(name, "replies"),
        }
    }
}

/// The binding keys that bring the messages of `rooms` to a bot: `room.<room>.message`
/// each (`dm:a:b` written `dm~a~b`).
pub fn event_bindings(rooms: &[String]) -> Vec<String> {
    rooms.iter().map(|room| room_key(room, "message")).collect()
}

/// Why the bot's queues could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
}

/// Why a command was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The channel or connection failed: reconnect.
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("no publisher confirm within {0:?}")]
    Timeout(Duration),
    /// The broker refused the command: worth retrying.
    #[error("the broker refused the command")]
    Nacked,
    /// No queue is bound for the shard: `shards` differs from the deployment's.
    #[error("no command queue for {0}; does `shards` match the deployment's amqp.shards?")]
    Unroutable(String),
    #[error("encoding the command: {0}")]
    Encode(#[from] serde_json::Error),
}

impl SendError {
    /// Whether the connection has to start over.
    pub fn is_link_failure(&self) -> bool {
        matches!(self, SendError::Amqp(_) | SendError::Timeout(_))
    }
}

/// One connection's worth of the bot's RabbitMQ side.
pub struct Link {
    pub connection: Connection,
    pub commands: Commands,
    pub events: Consumer,
    pub replies: Consumer,
}

/// Connects as the bot, declares and binds its queues, and starts consuming both.
pub async fn open(settings: &BotSettings) -> Result<Link, OpenError> {
    let names = Names::new(settings.prefix.clone());
    let queues = BotQueues::new(&settings.prefix, &settings.name);
    let connection_name = format!("warren-modbot {}", settings.name);
    let connection = tokio::time::timeout(
        CONNECT_TIMEOUT,
        connect(settings.amqp_url.expose(), &connection_name),
    )
    .await
    .map_err(|_| OpenError::ConnectTimeout(CONNECT_TIMEOUT))??;

    let setup = connection.create_channel().await?;
    // Passive declares need no permission: they only fail (and close the channel) when
    // the deployment has not created its exchanges yet, before anything is declared.
    for (exchange, kind) in [
        (names.events_exchange(), ExchangeKind::Topic),
        (names.commands_exchange(), ExchangeKind::Direct),
    ] {
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        setup
            .exchange_declare(exchange.into(), kind, passive, FieldTable::default())
            .await?;
    }
    let (expires, max_length) = (EVENTS_EXPIRE_MS, Some(EVENTS_MAX_LENGTH));
    declare_expiring_queue(&setup, &queues.events, expires, max_length).await?;
    for key in event_bindings(&settings.rooms) {
        setup
            .queue_bind(
                queues.events.clone().into(),
                names.events_exchange().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    setup
        .queue_declare(
            queues.replies.clone().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;

    let publish = confirmed_channel(&connection).await?;
    let consuming = consuming_channel(&connection, settings.prefetch).await?;
    let events_tag = format!("{}-consumer", queues.events);
    let events = consume(
        &consuming,
        &queues.events,
        &events_tag,
        BasicConsumeOptions::default(),
    )
    .await?;
    // Answers only say how a command went; they are logged, so nothing is lost by
    // letting the broker forget them as it sends them.
    let forget_on_send = BasicConsumeOptions {
        no_ack: true,
        exclusive: true,
        ..Default::default()
    };
    let replies_tag = format!("{}-consumer", queues.replies);
    let replies = consume(&consuming, &queues.replies, &replies_tag, forget_on_send).await?;
    let _closed = setup.close(200, "OK".into()).await;

    let commands = Commands::new(
        publish,
        &settings.prefix,
        settings.login(),
        queues.replies,
        settings.shards,
        Duration::from_millis(settings.publish_timeout_ms),
    );
    Ok(Link {
        connection,
        commands,
        events,
        replies,
    })
}

/// Publishes commands as the bot, on a confirm-mode channel.
pub struct Commands {
    channel: Channel,
    exchange: String,
    login: String,
    reply_to: String,
    shards: u32,
    timeout: Duration,
}

impl Commands {
    /// A publisher of `login`'s commands on `channel`, which must be in confirm mode;
    /// answers go to the queue `reply_to`. `timeout` bounds each publisher confirm.
    pub fn new(
        channel: Channel,
        prefix: &str,
        login: String,
        reply_to: String,
        shards: u32,
        timeout: Duration,
    ) -> Commands {
        Commands {
            channel,
            exchange: Names::new(prefix).commands_exchange(),
            login,
            reply_to,
            shards,
            timeout,
        }
    }

    /// Sends one `moderate` command and waits for its confirm. `reference` is its `ref`
    /// (echoed by the dispatcher's answer), `correlation_id` and `message_id`.
    pub async fn moderate(&self, moderate: &Moderate, reference: &str) -> Result<(), SendError> {
        self.publish(CommandBody::Moderate(moderate.clone()), reference)
            .await
    }

    /// Sends one command of any kind as the bot and waits for its confirm; `reference`
    /// as for [`Commands::moderate`].
    pub async fn publish(&self, body: CommandBody, reference: &str) -> Result<(), SendError> {
        let command = bot_command(&self.login, body, reference);
        let body = serde_json::to_vec(&command)?;
        let key = shard_key(shard_of(&command.room(), self.shards));
        let props = persistent_json_properties(command.body.kind())
            .with_message_id(ShortString::from(reference.to_owned()))
            .with_user_id(ShortString::from(self.login.clone()))
            .with_reply_to(ShortString::from(self.reply_to.clone()))
            .with_correlation_id(ShortString::from(reference.to_owned()));
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirmed = tokio::time::timeout(self.timeout, async {
            self.channel
                .basic_publish(
                    self.exchange.clone().into(),
                    key.clone().into(),
                    options,
                    &body,
                    props,
                )
                .await?
                .await
        })
        .await
        .map_err(|_| SendError::Timeout(self.timeout))??;
        match confirmed {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(SendError::Unroutable(key)),
            Confirmation::Nack(_) => Err(SendError::Nacked),
        }
    }
}

/// The `ref` of the command that `action` takes on the message `msg_id`: the same for
/// the same message, so the answers and logs of a command sent again (after a
/// redelivered event) are recognisably about the same thing.
pub fn command_ref(action: ModAction, msg_id: &str) -> String {
    let name = match action {
        ModAction::Delete => "delete",
        ModAction::Mute => "mute",
        _ => "moderate",
    };
    let reference = format!("{name}-{msg_id}");
    if reference.len() <= MAX_REF_LEN && reference.bytes().all(|b| b.is_ascii_graphic()) {
        reference
    } else {
        uuid::Uuid::new_v4().simple().to_string()
    }
}

/// A command from a bot. The dispatcher replaces `actor` with the bot's own identity
/// (its login, `bot: true`) whatever it says, so it says just that.
pub fn bot_command(login: &str, body: CommandBody, reference: &str) -> Command {
    Command {
        v: BODY_VERSION,
        body,
        actor: Actor {
            id: login.to_owned(),
            name: login.to_owned(),
            roles: Vec::new(),
            bot: true,
        },
        reference: Some(reference.to_owned()),
        conn: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refs_are_stable_per_message_and_action() {
        let id = "01a21718-7a5e-706f-bd38-ccb0b3d488e2";
        assert_eq!(command_ref(ModAction::Delete, id), format!("delete-{id}"));
        assert_eq!(command_ref(ModAction::Mute, id), format!("mute-{id}"));
        let odd = command_ref(ModAction::Delete, &"x".repeat(80));
        assert_eq!(odd.len(), 32);
    }

    #[test]
    fn queues_are_named_under_the_bot() {
        let q = BotQueues::new("warren", "modbot");
        assert_eq!(q.events, "warren.bot.modbot.events");
        assert_eq!(q.replies, "warren.bot.modbot.replies");
    }

    #[test]
    fn a_bot_binds_each_of_its_rooms_messages() {
        let rooms = vec!["general".to_owned(), "dm:alice:bob".to_owned()];
        assert_eq!(
            event_bindings(&rooms),
            ["room.general.message", "room.dm~alice~bob.message"]
        );
    }

    #[test]
    fn a_delete_command_has_the_documented_shape() {
        let command = bot_command(
            "warren-bot",
            CommandBody::Moderate(Moderate {
                room: "general".into(),
                action: ModAction::Delete,
                user: None,
                msg_id: Some("0190-abc".into()),
                role: None,
                duration_s: None,
                reason: None,
                settings: None,
            }),
            "r1",
        );
        assert_eq!(
            serde_json::to_value(&command).unwrap(),
            json!({"v":1,"kind":"moderate","room":"general","action":"delete","msg_id":"0190-abc",
                   "actor":{"id":"warren-bot","name":"warren-bot","roles":[],"bot":true},"ref":"r1"})
        );
        assert_eq!(command.room(), "general");
    }
}
