//! Bots as a test runs them: `warren-modbot` and the Python echo bot as processes, and
//! [`AmqpAs`], a raw AMQP connection under some account, for publishing commands the
//! way a bot (or an attacker holding a bot's account) would.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::accounts::{Account, Permissions};
use crate::process::{binary, target_dir};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
const LOG_TAIL_LINES: usize = 40;
/// How often [`AmqpAs::get_n`] polls an empty queue.
const GET_POLL: Duration = Duration::from_millis(100);

/// `.local/venv/bin/python` in the workspace, made by `scripts/python-env.sh`.
pub fn venv_python() -> PathBuf {
    workspace_root().join(".local/venv/bin/python")
}

/// `bots/python/echo_bot.py`.
pub fn echo_bot_script() -> PathBuf {
    workspace_root().join("bots/python/echo_bot.py")
}

/// The built `warren-modbot` (`cargo build --workspace --bins`).
pub fn modbot_binary() -> PathBuf {
    binary(&target_dir(), "warren-modbot")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// A bot process, its output in `<target>/test-logs/<prefix>-<name>.log`, killed on drop
/// (and its log's tail printed when the test failed).
pub struct BotProcess {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl BotProcess {
    /// Starts `program args` with exactly `env` as its `WARREN*` settings.
    pub fn start(
        prefix: &str,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> BotProcess {
        let logs = target_dir().join("test-logs");
        std::fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("create {}: {e}", logs.display()));
        let log = logs.join(format!("{prefix}-{name}.log"));
        let file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("create log {}: {e}", log.display()));
        let mut cmd = Command::new(program);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WARREN") {
                cmd.env_remove(&key);
            }
        }
        cmd.args(args)
            .envs(env.iter().cloned())
            .env("RUST_BACKTRACE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({}): {e}", program.display()));
        BotProcess {
            name: name.to_owned(),
            log,
            child: Some(child),
        }
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for BotProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "---- {} log: {} (last {LOG_TAIL_LINES} lines)\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

/// An AMQP connection under one account.
pub struct AmqpAs {
    conn: Connection,
    /// Confirm mode.
    publish: Channel,
}

/// What the broker made of one publish.
#[derive(Debug)]
pub enum Published {
    /// Confirmed and routed.
    Routed,
    /// Confirmed, but no queue was bound for the key (it came back).
    Returned,
    Nacked,
    /// The broker closed the channel (e.g. `ACCESS_REFUSED`, or a `user_id` that is not
    /// the login: `PRECONDITION_FAILED`).
    Refused(String),
}

impl AmqpAs {
    pub async fn connect(url: &str) -> anyhow::Result<AmqpAs> {
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::connect(url, ConnectionProperties::default()),
        )
        .await
        .context("RabbitMQ did not answer within 10 s")?
        .context("connect to RabbitMQ")?;
        let publish = conn.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(AmqpAs { conn, publish })
    }

    /// Publishes `body` as a command would be (JSON, persistent, mandatory), with the
    /// given `user_id` and `reply_to`, and waits for the broker's verdict. A refusal
    /// closes the publish channel; the next publish opens another.
    pub async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        user_id: Option<&str>,
        reply_to: Option<&str>,
    ) -> Published {
        if !self.publish.status().connected() {
            self.publish = self.conn.create_channel().await.expect("open a channel");
            self.publish
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .expect("confirm mode");
        }
        let kind = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["kind"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "garbage".into());
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_type(ShortString::from(kind))
            .with_message_id(ShortString::from(format!("{:016x}", rand::random::<u64>())))
            .with_correlation_id(ShortString::from(format!(
                "c-{:08x}",
                rand::random::<u32>()
            )));
        if let Some(user) = user_id {
            props = props.with_user_id(ShortString::from(user.to_owned()));
        }
        if let Some(queue) = reply_to {
            props = props.with_reply_to(ShortString::from(queue.to_owned()));
        }
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let outcome = tokio::time::timeout(PUBLISH_TIMEOUT, async {
            self.publish
                .basic_publish(exchange.into(), routing_key.into(), options, body, props)
                .await?
                .await
        })
        .await
        .unwrap_or_else(|_| panic!("no publisher confirm within {PUBLISH_TIMEOUT:?}"));
        match outcome {
            Ok(Confirmation::Ack(None)) => Published::Routed,
            Ok(Confirmation::Ack(Some(_))) => Published::Returned,
            Ok(Confirmation::Nack(_)) => Published::Nacked,
            Ok(Confirmation::NotRequested) => unreachable!("the channel is in confirm mode"),
            Err(e) => Published::Refused(e.to_string()),
        }
    }

    /// Connects to `url` as a bot and consumes its own replies `queue`, as a bot that
    /// sends commands with a `reply_to` does first.
    pub async fn with_replies(url: &str, queue: &str) -> (AmqpAs, Consumer) {
        let amqp = AmqpAs::connect(url).await.expect("connect as the bot");
        let replies = amqp
            .exclusive_queue(queue)
            .await
            .expect("the bot may declare its own queue");
        (amqp, replies)
    }

    /// Declares `queue` (exclusive to this connection) and consumes it without acks.
    pub async fn exclusive_queue(&self, queue: &str) -> anyhow::Result<Consumer> {
        let channel = self.conn.create_channel().await?;
        crate::broker::exclusive_consumer(&channel, queue, None).await
    }

    /// One operation on a fresh channel ([`crate::broker::on_fresh_channel`]): `Ok` or
    /// what the broker said.
    async fn on_fresh_channel<T, F, Fut>(&self, operation: F) -> Result<T, String>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: std::future::Future<Output = lapin::Result<T>>,
    {
        crate::broker::on_fresh_channel(&self.conn, operation)
            .await
            .and_then(|answered| answered)
            .map_err(|e| e.to_string())
    }

    /// `queue.declare` of `queue` on a fresh channel: `Ok` or the broker's refusal.
    pub async fn try_declare_queue(&self, queue: &str) -> Result<(), String> {
        self.on_fresh_channel(|channel| async move {
            let options = QueueDeclareOptions::default();
            channel
                .queue_declare(queue.into(), options, FieldTable::default())
                .await
                .map(|_| ())
        })
        .await
    }

    /// `queue.bind` of `queue` to `exchange` with `key`, on a fresh channel: `Ok` or the
    /// broker's refusal. (On a topic exchange, the account's topic `read` pattern is
    /// matched against `key` as written, wildcards included.)
    pub async fn try_bind(&self, queue: &str, exchange: &str, key: &str) -> Result<(), String> {
        self.on_fresh_channel(|channel| async move {
            let options = QueueBindOptions::default();
            let (queue, exchange, key) = (queue.into(), exchange.into(), key.into());
            channel
                .queue_bind(queue, exchange, key, options, FieldTable::default())
                .await
        })
        .await
    }

    /// `basic.consume` of `queue` on a fresh channel, cancelled at once (the channel is
    /// closed) when the broker allows it: `Ok` or the broker's refusal. Unlike
    /// [`AmqpAs::try_get`] it takes no message, even when it is wrongly allowed.
    pub async fn try_consume(&self, queue: &str) -> Result<(), String> {
        self.on_fresh_channel(|channel| async move {
            let tag = format!("probe-{:08x}", rand::random::<u32>());
            let options = BasicConsumeOptions::default();
            channel
                .basic_consume(queue.into(), tag.into(), options, FieldTable::default())
                .await
                .map(|_| ())
        })
        .await
    }

    /// `exchange.delete` with `if_unused`, on a fresh channel: the permission is checked
    /// first, so a refusal is `ACCESS_REFUSED`, while an exchange in use that the account
    /// might delete answers `PRECONDITION_FAILED` instead of disappearing.
    pub async fn try_delete_exchange(&self, exchange: &str) -> Result<(), String> {
        let options = ExchangeDeleteOptions {
            if_unused: true,
            ..Default::default()
        };
        self.on_fresh_channel(|channel| async move {
            channel.exchange_delete(exchange.into(), options).await
        })
        .await
    }

    /// `queue.delete` with `if_unused` and `if_empty`, on a fresh channel: as
    /// [`AmqpAs::try_delete_exchange`], a queue in use is not lost if the account may
    /// wrongly delete it.
    pub async fn try_delete_queue(&self, queue: &str) -> Result<(), String> {
        let options = QueueDeleteOptions {
            if_unused: true,
            if_empty: true,
            ..Default::default()
        };
        self.on_fresh_channel(|channel| async move {
            channel
                .queue_delete(queue.into(), options)
                .await
                .map(|_| ())
        })
        .await
    }

    /// `basic.get` on a fresh channel, acking what it takes: the message, none, or the
    /// broker's refusal.
    pub async fn try_get(&self, queue: &str) -> Result<Option<BasicGetMessage>, String> {
        self.on_fresh_channel(|channel| async move {
            channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
        })
        .await
    }

    /// Takes `n` messages from `queue` with `basic.get`, polling for at most `timeout`.
    pub async fn get_n(
        &self,
        queue: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<BasicGetMessage>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < n {
            match self.try_get(queue).await {
                Ok(Some(message)) => got.push(message),
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(GET_POLL).await
                }
                Ok(None) => {
                    anyhow::bail!("{queue}: {} of {n} messages within {timeout:?}", got.len())
                }
                Err(e) => anyhow::bail!("basic.get on {queue}: {e}"),
            }
        }
        Ok(got)
    }

    pub async fn close(self) {
        let _ =
            tokio::time::timeout(Duration::from_secs(5), self.conn.close(200, "done".into())).await;
    }
}

/// A bot's RabbitMQ account with `permissions`, under a fresh login.
pub async fn bot_account(permissions: &Permissions) -> Account {
    Account::create(Account::fresh_login("bot"), permissions).await
}

/// The next message on `consumer` as JSON, within `timeout`.
pub async fn next_json(consumer: &mut Consumer, timeout: Duration) -> anyhow::Result<Value> {
    let delivery = tokio::time::timeout(timeout, consumer.next())
        .await
        .with_context(|| format!("nothing within {timeout:?}"))?
        .context("the consumer ended")??;
    serde_json::from_slice(&delivery.data).context("a body that is not JSON")
}
