//! `raw`: the broker path alone, with Warren's durability choices and no chat logic.
//!
//! Three AMQP connections stand for Warren's three roles (`roles`): a publisher (the
//! gateway's command publish: persistent, confirmed, to a durable single-active-consumer
//! queue behind a direct exchange), a relay (the dispatcher: consume, publish to a topic
//! exchange persistent with a confirm, ack the command only after that confirm) and a
//! final consumer (the gateway's own durable `x-expires` queue, manual acks). The latency
//! is publish to final delivery. `--durability transient` drops persistence and confirms
//! on both hops, for comparison. `topology` declares and deletes the broker objects.
//!
//! `cleanup` deletes named queues and exchanges (the benchmark script lists them).

mod roles;
mod topology;

use std::sync::Arc;
use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::{Connection, ConnectionProperties};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::sleep_until;

use crate::args::Args;
use crate::measure::{drain as drain_wait, now_ns, rate, Count, CpuProbe, Latency, Window};
use crate::{Error, Job};
use roles::{consume, publish, relay, Pacing};
use topology::{declare, delete_all, Names, DEFAULT_AMQP};

pub use topology::cleanup;

#[derive(Default)]
pub(super) struct Counters {
    pub(super) published: Count,
    pub(super) confirmed: Count,
    pub(super) nacked: Count,
    pub(super) relayed: Count,
    pub(super) delivered: Count,
    pub(super) published_in_window: Count,
    pub(super) delivered_in_window: Count,
    pub(super) latency: Latency,
}

pub fn raw(args: &Args) -> Result<Job, Error> {
    let url = args.string("amqp", DEFAULT_AMQP);
    let prefix = args.string("prefix", &format!("wb-raw-{:x}", now_ns() % 0xffff_ffff));
    let total_rate: f64 = args.get("rate", 0.0)?;
    let window_size: usize = args.get("window", 512)?;
    let persistent = match args.string("durability", "persistent").as_str() {
        "persistent" => true,
        "transient" => false,
        other => return Err(format!("--durability {other}: persistent or transient").into()),
    };
    let size: usize = args.get("payload", 64)?;
    let prefetch: u16 = args.get("prefetch", 256)?;
    let warmup = Duration::from_secs_f64(args.get("warmup", 2.0f64)?);
    let duration = Duration::from_secs_f64(args.get("duration", 10.0f64)?);
    let drain = Duration::from_secs_f64(args.get("drain", 5.0f64)?);
    let drain_cap = Duration::from_secs_f64(args.get("drain-max", 60.0f64)?);
    let cpu = CpuProbe::new(args.labelled("cpu-pids"), args.get("clk-tck", 100.0f64)?)?;
    Ok(Box::pin(async move {
        let names = Arc::new(Names::new(&prefix));
        let connect = |role: &'static str| {
            let url = url.clone();
            async move {
                Connection::connect(&url, ConnectionProperties::default())
                    .await
                    .map_err(|e| Error::from(format!("{role}: connect to RabbitMQ: {e}")))
            }
        };
        let publisher_conn = connect("publisher").await?;
        let relay_conn = connect("relay").await?;
        let gateway_conn = connect("gateway").await?;
        let control = publisher_conn.create_channel().await?;
        declare(&control, &names).await?;

        let counters = Arc::new(Counters::default());
        let window = Window::after(warmup, duration);
        let credits = Arc::new(Semaphore::new(window_size.max(1)));

        let consumer = tokio::spawn(consume(
            gateway_conn.create_channel().await?,
            names.clone(),
            counters.clone(),
            window,
            credits.clone(),
            prefetch,
        ));
        let relay = tokio::spawn(relay(
            relay_conn.create_channel().await?,
            relay_conn.create_channel().await?,
            names.clone(),
            counters.clone(),
            persistent,
            prefetch,
        ));
        let publish_channel = publisher_conn.create_channel().await?;
        if persistent {
            publish_channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
        }
        let publisher = tokio::spawn(publish(
            publish_channel,
            names.clone(),
            counters.clone(),
            window,
            Pacing {
                rate: total_rate,
                credits: credits.clone(),
                persistent,
                size,
            },
        ));

        sleep_until(Window::instant_of(window.start_ns)).await;
        let before = cpu.sample();
        sleep_until(Window::instant_of(window.end_ns)).await;
        let after = cpu.sample();
        let (drain_s, drained) = drain_wait(
            drain,
            drain_cap,
            || counters.delivered.get() >= counters.published.get(),
            || counters.delivered.get(),
        )
        .await;
        for task in [&publisher, &relay, &consumer] {
            task.abort();
        }
        let problems = task_errors([publisher, relay, consumer]).await;

        let removed = delete_all(
            &publisher_conn,
            &[names.commands_queue.clone(), names.gateway_queue.clone()],
            &[names.commands_exchange.clone(), names.events.clone()],
        )
        .await;
        for conn in [publisher_conn, relay_conn, gateway_conn] {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), conn.close(200, "done".into())).await;
        }

        let secs = window.secs();
        let published = counters.published.get();
        let delivered = counters.delivered.get();
        let mut out = serde_json::Map::new();
        out.insert("ok".into(), json!(problems.is_empty()));
        if !problems.is_empty() {
            out.insert("problems".into(), json!(problems));
        }
        out.insert(
            "durability".into(),
            json!(if persistent {
                "persistent"
            } else {
                "transient"
            }),
        );
        out.insert("offered_rate".into(), json!(total_rate));
        if total_rate <= 0.0 {
            out.insert("window".into(), json!(window_size));
        }
        out.insert("payload".into(), json!(size));
        out.insert("window_s".into(), json!(secs));
        out.insert("published".into(), json!(published));
        out.insert("confirmed".into(), json!(counters.confirmed.get()));
        out.insert("nacked".into(), json!(counters.nacked.get()));
        out.insert("relayed".into(), json!(counters.relayed.get()));
        out.insert("delivered".into(), json!(delivered));
        out.insert("lost".into(), json!(published.saturating_sub(delivered)));
        out.insert(
            "published_per_s".into(),
            json!(rate(counters.published_in_window.get(), secs)),
        );
        out.insert(
            "delivered_per_s".into(),
            json!(rate(counters.delivered_in_window.get(), secs)),
        );
        out.insert("latency".into(), counters.latency.summary());
        out.insert("cpu_s".into(), cpu.delta(&before, &after));
        out.insert("drain_s".into(), json!((drain_s * 100.0).round() / 100.0));
        out.insert("drained".into(), json!(drained));
        out.insert("cleanup".into(), removed);
        Ok(out)
    }))
}

/// Errors the tasks ended with (an abort is not an error).
async fn task_errors(tasks: [tokio::task::JoinHandle<Result<(), Error>>; 3]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, task) in ["publisher", "relay", "consumer"].into_iter().zip(tasks) {
        match task.await {
            Ok(Err(e)) => problems.push(format!("{name}: {e}")),
            Err(e) if !e.is_cancelled() => problems.push(format!("{name}: {e}")),
            _ => {}
        }
    }
    problems
}
