//! A dispatcher started in-process against the real RabbitMQ and Redis, under a random
//! prefix, and a fake gateway that publishes commands and reads answers and events.
//!
//! Like a real gateway, the fake one binds its answer queue to its own key `gw.gw-test`:
//! the `ack` of a send from a gateway connection rides on the message event, which
//! names that key in its `CC`; [`Harness::reply`] turns such an event into the `ack`
//! reply the gateway would make, matched to the command by session and `ref`.
//! [`Harness::finish`] stops the dispatcher and deletes every queue, exchange and key
//! the run created, whether the test body passed or not. The checks that RabbitMQ and
//! Redis answer, the prefix and that removal are the stack launcher's (`warren_stack`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use common::amqp::{declare_topology, lapin, persistent_json_properties};
use common::store::RedisConnection;
use common::Settings;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, Consumer, PublisherConfirm};
use proto::amqp::{
    gateway_key, shard_key, Actor, Command, CommandBody, ConnRef, Event, EventBody, Names, Reply,
    ACK_REF_HEADER, ACK_SESSION_HEADER,
};
use proto::ids::shard_of;
use proto::server::{Ack, ServerBody, ServerFrame};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warren_dispatcher::DispatcherError;
use warren_stack::broker::exclusive_consumer;

/// The bound on every wait.
pub const WAIT: Duration = Duration::from_secs(10);

pub const SHARDS: u32 = 2;

pub struct Harness {
    pub prefix: String,
    pub names: Names,
    shutdown: CancellationToken,
    service: Option<JoinHandle<Result<(), DispatcherError>>>,
    connection: Connection,
    channel: Channel,
    reply_queue: String,
    replies: Consumer,
    events: Consumer,
    events_queue: String,
    pub redis_conn: RedisConnection,
    correlation: u64,
    /// Commands sent, by (session, ref): their correlation ids, for acks made from events.
    sent: HashMap<(String, Option<String>), String>,
}

/// The fake gateway's id (its commands' `conn.gateway`).
pub const GATEWAY: &str = "gw-test";

/// Starts a [`Harness`] bound to `bindings` and runs `body` in it ([`Harness::run`]).
pub async fn with_harness(bindings: &[&str], body: impl AsyncFnOnce(&mut Harness)) {
    Harness::start(bindings).await.run(body).await;
}

/// As [`with_harness`], with `config` (TOML) as the dispatcher's settings file.
pub async fn with_configured_harness(
    bindings: &[&str],
    config: &str,
    body: impl AsyncFnOnce(&mut Harness),
) {
    Harness::start_with(bindings, Some(config))
        .await
        .run(body)
        .await;
}

impl Harness {
    /// Starts a dispatcher and a fake gateway whose event queue is bound to `bindings`.
    pub async fn start(bindings: &[&str]) -> Harness {
        Harness::start_with(bindings, None).await
    }

    /// As [`Harness::start`], with `config` (TOML) as the dispatcher's settings file.
    pub async fn start_with(bindings: &[&str], config: Option<&str>) -> Harness {
        warren_stack::services::check()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let prefix = warren_stack::new_prefix("dt");
        let file = config.map(|toml| {
            let path = std::env::temp_dir().join(format!("{prefix}.toml"));
            std::fs::write(&path, toml).expect("write the settings file");
            path
        });
        let env: HashMap<String, String> = [
            ("WARREN__AMQP__PREFIX", prefix.as_str()),
            ("WARREN__REDIS__PREFIX", prefix.as_str()),
            // In-process dispatchers of parallel tests each take a free port.
            ("WARREN__DISPATCHER__LISTEN", "127.0.0.1:0"),
            ("WARREN__AMQP__SHARDS", "2"),
            ("WARREN__DISPATCHER__USER_SENDS_PER_SEC", "0"),
            ("WARREN__DISPATCHER__BOT_COMMANDS_PER_SEC", "0"),
            ("WARREN__LOG__LEVEL", "warren_dispatcher=debug,warn"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let settings = Settings::load_from(file.as_ref().and_then(|p| p.to_str()), Some(env))
            .expect("settings");
        if let Some(path) = &file {
            std::fs::remove_file(path).ok();
        }
        common::telemetry::init(&settings.log);
        let names = Names::new(prefix.clone());

        let connection =
            common::amqp::connect(settings.amqp.url.expose(), "warren-dispatcher-test")
                .await
                .expect("amqp");
        let channel = connection.create_channel().await.expect("channel");
        declare_topology(&channel, &names, SHARDS, settings.amqp.command_queue_type)
            .await
            .expect("topology");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");

        // The fake gateway's queues, exclusive to this connection: the events it watches,
        // and its answers (replies, and the events naming its own key: acks).
        let events_exchange = names.events_exchange();
        let reply_queue = format!("{prefix}.fake-gw.replies");
        let own_key = gateway_key(GATEWAY);
        let replies = exclusive_consumer(
            &channel,
            &reply_queue,
            Some((&events_exchange, &[own_key.as_str()])),
        )
        .await
        .expect("the reply queue");
        let events_queue = format!("{prefix}.fake-gw.events");
        let events =
            exclusive_consumer(&channel, &events_queue, Some((&events_exchange, bindings)))
                .await
                .expect("the events queue");

        let redis = common::store::connect(&settings.redis)
            .await
            .expect("redis");
        let shutdown = CancellationToken::new();
        let service = tokio::spawn(warren_dispatcher::run(settings, shutdown.clone()));
        Harness {
            prefix,
            names,
            shutdown,
            service: Some(service),
            connection,
            channel,
            reply_queue,
            replies,
            events,
            events_queue,
            redis_conn: redis,
            correlation: 0,
            sent: HashMap::new(),
        }
    }

    /// Runs `body`, then cleans up whatever happened, then re-raises a failure.
    pub async fn run(mut self, body: impl AsyncFnOnce(&mut Harness)) {
        let outcome = AssertUnwindSafe(body(&mut self)).catch_unwind().await;
        self.finish().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// A command as a gateway sends it for `user`.
    pub fn command(user: &str, reference: Option<&str>, body: CommandBody) -> Command {
        Command {
            v: 1,
            body,
            actor: Actor {
                id: user.into(),
                name: user.to_uppercase(),
                roles: vec![],
                bot: false,
            },
            reference: reference.map(str::to_owned),
            conn: Some(ConnRef {
                gateway: GATEWAY.into(),
                session: format!("sess-{user}"),
            }),
        }
    }

    /// Publishes a command to its shard as the gateway account `guest`, confirmed;
    /// returns its correlation id.
    pub async fn send(&mut self, command: &Command) -> String {
        let body = serde_json::to_vec(command).expect("encode");
        let shard = shard_of(&command.room(), SHARDS);
        self.publish_raw(&body, &shard_key(shard), command.body.kind())
            .await
    }

    /// As [`Harness::send`], with this AMQP `message_id` (a redelivery keeps its id).
    pub async fn send_with_id(&mut self, command: &Command, message_id: &str) -> String {
        let body = serde_json::to_vec(command).expect("encode");
        let shard = shard_of(&command.room(), SHARDS);
        let props = persistent_json_properties(command.body.kind())
            .with_message_id(ShortString::from(message_id.to_owned()));
        self.publish_props(&body, &shard_key(shard), props).await
    }

    /// Publishes every command at once, then waits for all their confirms: the
    /// dispatcher sees them back to back, as from a busy gateway. Returns their
    /// correlation ids, in order.
    pub async fn send_all(&mut self, commands: &[Command]) -> Vec<String> {
        let mut correlations = Vec::new();
        let mut confirms = Vec::new();
        for command in commands {
            let body = serde_json::to_vec(command).expect("encode");
            let shard = shard_of(&command.room(), SHARDS);
            let props = persistent_json_properties(command.body.kind());
            let (correlation, confirm) = self.start_publish(&body, &shard_key(shard), props).await;
            confirms.push(confirm);
            correlations.push(correlation);
        }
        for confirm in confirms {
            let confirm = tokio::time::timeout(WAIT, confirm)
                .await
                .expect("no confirm in time")
                .expect("confirm");
            assert!(confirm.is_ack(), "command not confirmed");
        }
        correlations
    }

    /// The next answer, whichever command it answers, with its correlation id.
    pub async fn any_reply(&mut self) -> (String, Reply) {
        let delivery = tokio::time::timeout(WAIT, self.replies.next())
            .await
            .expect("no reply in time")
            .expect("reply consumer ended")
            .expect("reply delivery");
        self.as_reply(&delivery)
    }

    /// A delivery on the answer queue as the gateway reads it: a reply, or an event
    /// carrying an `ack` (made into the reply the gateway would write).
    fn as_reply(&mut self, delivery: &lapin::message::Delivery) -> (String, Reply) {
        let headers = delivery.properties.headers().as_ref();
        let header = |name: &str| match headers?.inner().get(name)? {
            AMQPValue::LongString(s) => Some(s.to_string()),
            _ => None,
        };
        if let Some(session) = header(ACK_SESSION_HEADER) {
            let reference = header(ACK_REF_HEADER);
            let event: Event = serde_json::from_slice(&delivery.data).expect("event body");
            let EventBody::Message(m) = event.body else {
                panic!("an ack rides on a message event, got {:?}", event.body)
            };
            let correlation = self
                .sent
                .remove(&(session.clone(), reference.clone()))
                .unwrap_or_default();
            let frame = ServerFrame::answer(
                reference,
                ServerBody::Ack(Ack {
                    room: Some(m.room),
                    id: Some(m.id),
                    seq: Some(m.seq),
                }),
            );
            return (
                correlation,
                Reply {
                    v: 1,
                    session,
                    frame,
                },
            );
        }
        assert_eq!(
            delivery.properties.kind().as_ref().map(|k| k.as_str()),
            Some("reply")
        );
        let correlation = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .expect("a correlation id");
        let reply = serde_json::from_slice(&delivery.data).expect("reply body");
        (correlation, reply)
    }

    /// Stops the dispatcher (it must stop cleanly), then counts the messages in the
    /// command queues: commands it left unacked are back in them.
    pub async fn stop_and_count_commands(&mut self) -> u32 {
        self.stop_dispatcher().await;
        let mut left = 0;
        for n in 0..SHARDS {
            let queue = self
                .channel
                .queue_declare(
                    self.names.commands_queue(n).into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("passive declare");
            left += queue.message_count();
        }
        left
    }

    async fn stop_dispatcher(&mut self) {
        if let Err(why) = self.stopped().await {
            panic!("{why}");
        }
    }

    /// Cancels the dispatcher and waits (bounded) for it to return; why it did not stop
    /// cleanly, if it did not.
    async fn stopped(&mut self) -> Result<(), String> {
        self.shutdown.cancel();
        let Some(service) = self.service.take() else {
            return Ok(());
        };
        match tokio::time::timeout(WAIT, service).await {
            Ok(Ok(Ok(()))) => Ok(()),
            other => Err(format!("dispatcher did not stop cleanly: {other:?}")),
        }
    }

    /// Publishes any body to the commands exchange with `routing_key`.
    pub async fn publish_raw(&mut self, body: &[u8], routing_key: &str, kind: &str) -> String {
        self.publish_props(body, routing_key, persistent_json_properties(kind))
            .await
    }

    async fn publish_props(
        &mut self,
        body: &[u8],
        routing_key: &str,
        props: BasicProperties,
    ) -> String {
        let (correlation, confirm) = self.start_publish(body, routing_key, props).await;
        let confirm = confirm.await.expect("confirm");
        assert!(confirm.is_ack(), "command not confirmed");
        correlation
    }

    /// Publishes as the gateway account, answers to this harness's reply queue, with a
    /// new correlation id; returns it and the confirm still to come.
    async fn start_publish(
        &mut self,
        body: &[u8],
        routing_key: &str,
        props: BasicProperties,
    ) -> (String, PublisherConfirm) {
        self.correlation += 1;
        let correlation = format!("c{}", self.correlation);
        if let Ok(command) = serde_json::from_slice::<Command>(body) {
            if let Some(conn) = command.conn {
                self.sent
                    .insert((conn.session, command.reference), correlation.clone());
            }
        }
        let props: BasicProperties = props
            .with_user_id(ShortString::from("guest"))
            .with_reply_to(ShortString::from(self.reply_queue.clone()))
            .with_correlation_id(ShortString::from(correlation.clone()));
        let confirm = self
            .channel
            .basic_publish(
                self.names.commands_exchange().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .expect("publish");
        (correlation, confirm)
    }

    /// The next answer; checks that it answers `correlation`.
    pub async fn reply(&mut self, correlation: &str) -> Reply {
        let (got, reply) = self.any_reply().await;
        assert_eq!(got, correlation, "answer to another command: {reply:?}");
        reply
    }

    /// The next event of `kind` and its routing key, skipping others.
    pub async fn event(&mut self, kind: &str) -> (String, Event) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let delivery = tokio::time::timeout_at(deadline, self.events.next())
                .await
                .unwrap_or_else(|_| panic!("no {kind} event in time"))
                .expect("event consumer ended")
                .expect("event delivery");
            let event: Event = serde_json::from_slice(&delivery.data).expect("event body");
            if event.body.kind() == kind {
                return (delivery.routing_key.as_str().to_owned(), event);
            }
        }
    }

    /// Runs one Redis command (test set-up), failing the test if Redis refuses it.
    pub async fn redis(&mut self, args: &[&str]) -> redis::Value {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut self.redis_conn)
            .await
            .expect("redis command")
    }

    /// Polls the dead-letter queue until a message arrives.
    pub async fn dead_letter(&mut self) -> lapin::message::BasicGetMessage {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self
                .channel
                .basic_get(self.names.dead().into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            if let Some(message) = got {
                return message;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing dead-lettered in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the dispatcher (it must stop cleanly) and deletes everything under the prefix.
    async fn finish(&mut self) {
        if let Err(why) = self.stopped().await {
            eprintln!("{why}");
        }
        // The fake gateway's queues are exclusive: they go with the connection.
        if let Err(e) = self.connection.close(200, "OK".into()).await {
            eprintln!("closing the test connection: {e}");
        }
        let queues: Vec<String> = (0..SHARDS)
            .map(|n| self.names.commands_queue(n))
            .chain([self.names.dead()])
            .collect();
        let exchanges = [
            self.names.commands_exchange(),
            self.names.events_exchange(),
            self.names.dead(),
        ];
        let problems = tokio::time::timeout(
            WAIT * 3,
            warren_stack::cleanup::remove(&self.prefix, &queues, &exchanges),
        )
        .await
        .unwrap_or_else(|_| vec![format!("cleanup took more than {:?}", WAIT * 3)]);
        if !problems.is_empty() {
            eprintln!("[{}] cleanup left problems: {problems:#?}", self.prefix);
        }
    }
}
