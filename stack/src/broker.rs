//! What the tests ask RabbitMQ directly: consumer counts (AMQP passive declares),
//! bindings as the broker holds them (`rabbitmqctl`, because the management plugin may
//! not be enabled), and removal of everything a stack declared.

use std::time::Duration;

use anyhow::{bail, Context};
use lapin::options::{
    BasicConsumeOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde::Deserialize;
use tokio::process::Command;

/// The test broker. Only 127.0.0.1.
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const CTL_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`Admin`] deletes.
#[derive(Debug, Clone, Copy)]
enum Object {
    Queue,
    Exchange,
}

/// An AMQP connection for looking at and removing a stack's objects.
pub struct Admin {
    conn: Connection,
}

impl Admin {
    pub async fn connect() -> anyhow::Result<Admin> {
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            Connection::connect(AMQP_URL, ConnectionProperties::default()),
        )
        .await
        .context("RabbitMQ at 127.0.0.1:5672 did not answer within 10 s")?
        .context("connect to RabbitMQ at 127.0.0.1:5672")?;
        Ok(Admin { conn })
    }

    /// Consumers on `queue` (for a single-active-consumer queue: the active one and those
    /// waiting), or `None` when the queue does not exist.
    pub async fn consumer_count(&self, queue: &str) -> anyhow::Result<Option<u32>> {
        let options = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declared = on_fresh_channel(&self.conn, |channel| async move {
            channel
                .queue_declare(queue.into(), options, FieldTable::default())
                .await
        })
        .await?;
        let declared = unless_not_found(declared, || format!("passive declare of {queue}"))?;
        Ok(declared.map(|q| q.consumer_count()))
    }

    pub async fn queue_exists(&self, queue: &str) -> anyhow::Result<bool> {
        Ok(self.consumer_count(queue).await?.is_some())
    }

    /// Deletes `queue`; a queue that is already gone is fine.
    pub async fn delete_queue(&self, queue: &str) -> anyhow::Result<()> {
        self.delete(Object::Queue, queue).await
    }

    /// Deletes `exchange`; one that is already gone is fine.
    pub async fn delete_exchange(&self, exchange: &str) -> anyhow::Result<()> {
        self.delete(Object::Exchange, exchange).await
    }

    async fn delete(&self, object: Object, name: &str) -> anyhow::Result<()> {
        let deleted = on_fresh_channel(&self.conn, |channel| async move {
            match object {
                Object::Queue => {
                    let options = QueueDeleteOptions::default();
                    channel.queue_delete(name.into(), options).await.map(drop)
                }
                Object::Exchange => {
                    let options = ExchangeDeleteOptions::default();
                    channel.exchange_delete(name.into(), options).await
                }
            }
        })
        .await?;
        let noun = match object {
            Object::Queue => "queue",
            Object::Exchange => "exchange",
        };
        unless_not_found(deleted, || format!("delete {noun} {name}"))?;
        Ok(())
    }

    /// Binds `queue` to `exchange` with `key` (as a test that plays the broker's part).
    pub async fn bind(&self, queue: &str, exchange: &str, key: &str) -> anyhow::Result<()> {
        on_fresh_channel(&self.conn, |channel| async move {
            let options = QueueBindOptions::default();
            let (queue, exchange, key) = (queue.into(), exchange.into(), key.into());
            channel
                .queue_bind(queue, exchange, key, options, FieldTable::default())
                .await
        })
        .await?
        .with_context(|| format!("bind {queue} to {exchange} with {key}"))
    }

    /// Removes the binding of `queue` to `exchange` with `key`.
    pub async fn unbind(&self, queue: &str, exchange: &str, key: &str) -> anyhow::Result<()> {
        on_fresh_channel(&self.conn, |channel| async move {
            let (queue, exchange, key) = (queue.into(), exchange.into(), key.into());
            channel
                .queue_unbind(queue, exchange, key, FieldTable::default())
                .await
        })
        .await?
        .with_context(|| format!("unbind {queue} from {exchange} with {key}"))
    }

    /// Declares `queue` (exclusive to this connection), binds it to `exchange` with
    /// each of `keys`, and consumes it without acks: an observer, as a bot would be.
    pub async fn observe(
        &self,
        queue: &str,
        exchange: &str,
        keys: &[&str],
    ) -> anyhow::Result<lapin::Consumer> {
        let channel = self.conn.create_channel().await?;
        exclusive_consumer(&channel, queue, Some((exchange, keys))).await
    }

    pub async fn close(self) {
        let _ =
            tokio::time::timeout(Duration::from_secs(5), self.conn.close(200, "done".into())).await;
    }
}

/// Declares `queue` on `channel` (exclusive to its connection), binds it to the
/// exchange with each key of `bind` if given, and consumes it without acks.
pub async fn exclusive_consumer(
    channel: &lapin::Channel,
    queue: &str,
    bind: Option<(&str, &[&str])>,
) -> anyhow::Result<lapin::Consumer> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declare {queue}"))?;
    if let Some((exchange, keys)) = bind {
        for key in keys {
            channel
                .queue_bind(
                    queue.into(),
                    exchange.into(),
                    (*key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("bind {queue} with {key}"))?;
        }
    }
    channel
        .basic_consume(
            queue.into(),
            format!("{queue}-test").into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consume {queue}"))
}

/// Runs one operation on a fresh channel of `conn`, then closes the channel unless the
/// broker did (a refusal or a missing object closes it): one channel per ask. The outer
/// error is the channel's opening, the inner one what the broker said to the operation.
pub async fn on_fresh_channel<T, F, Fut>(
    conn: &Connection,
    operation: F,
) -> lapin::Result<lapin::Result<T>>
where
    F: FnOnce(lapin::Channel) -> Fut,
    Fut: std::future::Future<Output = lapin::Result<T>>,
{
    let channel = conn.create_channel().await?;
    let result = operation(channel.clone()).await;
    if channel.status().connected() {
        let _ = channel.close(200, "done".into()).await;
    }
    Ok(result)
}

/// What an operation answered, `None` when the broker said NOT_FOUND; other errors
/// carry `what`.
fn unless_not_found<T>(
    result: lapin::Result<T>,
    what: impl FnOnce() -> String,
) -> anyhow::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e).with_context(what),
    }
}

fn is_not_found(e: &lapin::Error) -> bool {
    let text = e.to_string();
    text.contains("NOT_FOUND") || text.contains("404")
}

/// One binding as `rabbitmqctl list_bindings` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Binding {
    pub source_name: String,
    pub destination_name: String,
    pub destination_kind: String,
    pub routing_key: String,
}

/// Every binding whose destination is `queue`, except the implicit one from the default
/// exchange (source `""`).
pub async fn bindings_to(queue: &str) -> anyhow::Result<Vec<Binding>> {
    let all: Vec<Binding> = rabbitmqctl_json(&[
        "list_bindings",
        "source_name",
        "destination_name",
        "destination_kind",
        "routing_key",
    ])
    .await?;
    Ok(all
        .into_iter()
        .filter(|b| {
            b.destination_kind == "queue"
                && b.destination_name == queue
                && !b.source_name.is_empty()
        })
        .collect())
}

#[derive(Deserialize)]
struct ConsumerRow {
    queue_name: String,
}

/// Consumers per queue for queues named `<prefix>.…`, as `rabbitmqctl list_consumers`
/// reports them: for single-active-consumer queues this includes the waiting ones, which
/// a passive declare does not count on quorum queues.
pub async fn consumers_under(
    prefix: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, usize>> {
    let rows: Vec<ConsumerRow> = rabbitmqctl_json(&["list_consumers", "queue_name"]).await?;
    let mut counts = std::collections::BTreeMap::new();
    for row in rows
        .into_iter()
        .filter(|r| r.queue_name.starts_with(&format!("{prefix}.")))
    {
        *counts.entry(row.queue_name).or_insert(0) += 1;
    }
    Ok(counts)
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

/// Names of queues that start with `<prefix>.`.
pub async fn queues_under(prefix: &str) -> anyhow::Result<Vec<String>> {
    names_under("list_queues", prefix).await
}

/// Names of exchanges that start with `<prefix>.`.
pub async fn exchanges_under(prefix: &str) -> anyhow::Result<Vec<String>> {
    names_under("list_exchanges", prefix).await
}

/// The names `rabbitmqctl <list>` reports that start with `<prefix>.`.
async fn names_under(list: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
    let all: Vec<Named> = rabbitmqctl_json(&[list, "name"]).await?;
    let under = format!("{prefix}.");
    Ok(all
        .into_iter()
        .map(|o| o.name)
        .filter(|n| n.starts_with(&under))
        .collect())
}

async fn rabbitmqctl_json<T: for<'de> Deserialize<'de>>(args: &[&str]) -> anyhow::Result<Vec<T>> {
    let mut cmd = Command::new("rabbitmqctl");
    cmd.args(["-q", "--formatter", "json"])
        .args(args)
        .kill_on_drop(true);
    let out = tokio::time::timeout(CTL_TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("rabbitmqctl {args:?} took more than {CTL_TIMEOUT:?}"))?
        .context("run rabbitmqctl (is it installed and allowed to reach the local node?)")?;
    if !out.status.success() {
        bail!(
            "rabbitmqctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(text).with_context(|| format!("rabbitmqctl {args:?} printed {text:?}"))
}

/// Deletes `queues` and `exchanges`, then anything else named under `prefix` that the
/// broker still lists. Returns what could not be removed.
pub async fn remove_all(prefix: &str, queues: &[String], exchanges: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let admin = match Admin::connect().await {
        Ok(a) => a,
        Err(e) => return vec![format!("{e:#}")],
    };
    let mut queues = queues.to_vec();
    let mut exchanges = exchanges.to_vec();
    match queues_under(prefix).await {
        Ok(found) => queues.extend(found),
        Err(e) => problems.push(format!("listing queues: {e:#}")),
    }
    match exchanges_under(prefix).await {
        Ok(found) => exchanges.extend(found),
        Err(e) => problems.push(format!("listing exchanges: {e:#}")),
    }
    queues.sort();
    queues.dedup();
    exchanges.sort();
    exchanges.dedup();
    for q in &queues {
        if let Err(e) = admin.delete_queue(q).await {
            problems.push(format!("{e:#}"));
        }
    }
    for x in &exchanges {
        if let Err(e) = admin.delete_exchange(x).await {
            problems.push(format!("{e:#}"));
        }
    }
    admin.close().await;
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::options::BasicConsumeOptions;
    use lapin::types::AMQPValue;

    /// The stack waits for "every shard queue has ≥ k consumers" after starting the k-th
    /// dispatcher; that only works if the count includes waiting single-active consumers,
    /// whether the services declare classic or quorum queues. (A passive declare's
    /// consumer count does not, on quorum queues: hence `rabbitmqctl list_consumers`.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consumer_counts_include_waiting_single_active_consumers() {
        for quorum in [false, true] {
            let queue = format!("wt-{:08x}.sac-probe", rand::random::<u32>());
            let mut args = FieldTable::default();
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
            // A classic probe is auto-deleted with its consumers even if this test fails;
            // quorum queues cannot be, so that one is deleted below before any assertion.
            let options = if quorum {
                args.insert(
                    "x-queue-type".into(),
                    AMQPValue::LongString("quorum".into()),
                );
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                }
            } else {
                QueueDeclareOptions {
                    auto_delete: true,
                    ..Default::default()
                }
            };
            let count = consumers_on_probe(&queue, options, args).await;
            let admin = Admin::connect().await.unwrap();
            admin.delete_queue(&queue).await.unwrap();
            admin.close().await;
            assert_eq!(count.unwrap(), Some(2), "quorum: {quorum}");
        }
    }

    async fn consumers_on_probe(
        queue: &str,
        options: QueueDeclareOptions,
        args: FieldTable,
    ) -> anyhow::Result<Option<u32>> {
        let conns = [Admin::connect().await?, Admin::connect().await?];
        // A dropped lapin consumer is cancelled: keep them until the count is taken.
        let mut consumers = Vec::new();
        for (i, c) in conns.iter().enumerate() {
            let ch = c.conn.create_channel().await?;
            ch.queue_declare(queue.into(), options, args.clone())
                .await?;
            let consumer = ch
                .basic_consume(
                    queue.into(),
                    format!("probe-{i}").into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            consumers.push((ch, consumer));
        }
        let prefix = queue.split_once('.').expect("probe names have a prefix").0;
        let count = consumers_under(prefix)
            .await
            .map(|c| c.get(queue).map(|n| *n as u32));
        drop(consumers);
        for c in conns {
            c.close().await;
        }
        count
    }
}
