//! The chat traffic engine behind `fanout`, `seed-fanout` and `pipeline`: connect a
//! plan of members (who, on which gateway, in which room, sending or not), then send
//! timestamped messages for a warm-up and a measurement window, drain, and count.
//!
//! Every connection has one reader task that counts and times what arrives; a sending
//! member also has a writer task that owns the socket's sink. Nothing else touches a
//! socket. Loss is counted over the whole run: each accepted message (acked by Warren;
//! every message sent, for the seed, which has no acks) must reach every member of its
//! room, the sender included. The per-connection tasks are in `traffic`.
//!
//! A member may be a stalled reader (`fanout --stalled N`, in `stalled`): it joins and
//! then is never read until the run is over. It is not a member for counting: rates,
//! latencies and loss are the other members'.
//!
//! With `--deflate` every member offers permessage-deflate and reads compressed frames
//! inflated (`inflate`); the report has the bytes read off the sockets and after
//! inflating, and `--window-metrics` adds the gateways' own counters over the window.
//!
//! With `--retry` (Warren only) senders send refused and unanswered messages again with
//! the same `ref`, and loss is checked member by member, `seq` by `seq` (`retry`): what a
//! broker restart during a run must not break.

mod counters;
mod retry;
mod stalled;
#[cfg(test)]
mod tests;
mod traffic;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until};

use crate::client::{self, Dial, DialError, Ws};
use crate::inflate;
use crate::measure::{drain, now_ns, rate, Count, CpuProbe, Errors, Latency, Window};
use counters::{RunCounters, SenderStats};
use traffic::{hold, read, Writer};

/// Which server the members speak to.
#[derive(Clone)]
pub enum Flavor {
    /// Warren: HS256 tokens with this secret, `join`, `send` with `ref`, `ack`s.
    Warren { secret: String },
    /// The seed program: no auth, no rooms, `{"username","message"}` frames.
    Seed,
}

/// How a member sends.
#[derive(Clone, Copy)]
pub enum Pace {
    /// This many messages a second, first one after `offset`.
    Rate { per_sec: f64, offset: Duration },
    /// As fast as acks come back, with at most this many unacknowledged (Warren only).
    Window(usize),
}

/// One connection to open.
#[derive(Clone)]
pub struct Member {
    pub url: String,
    pub user: String,
    pub room: String,
    pub pace: Option<Pace>,
    /// A stalled reader with this `SO_RCVBUF` (bytes): it joins, then never reads.
    pub stalled: Option<u32>,
}

/// The run's shape besides its members.
pub struct Plan {
    pub members: Vec<Member>,
    pub flavor: Flavor,
    pub payload: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Drain ends when nothing has arrived for this long...
    pub drain: Duration,
    /// ...or after this long in any case.
    pub drain_cap: Duration,
    pub connect_concurrency: usize,
    pub connect_timeout: Duration,
    pub source_ips: Vec<IpAddr>,
    pub cpu: CpuProbe,
    /// A gateway's `/metrics` to watch for slow-consumer closes during the run.
    pub metrics_url: Option<String>,
    /// Every member offers permessage-deflate.
    pub deflate: bool,
    /// Servers' `/metrics` read at the window's edges.
    pub window_metrics: crate::scrape::Scrape,
    /// Send refused (`unavailable`) and unanswered messages again, same `ref`, and check
    /// every member's messages one by one (`retry`).
    pub retry: bool,
    /// With `retry`: a file the driving script writes, when the broker is back, with
    /// that time in unix ms; read after the drain.
    pub broker_back_file: Option<PathBuf>,
    /// Print `ready connected=N` on stderr when the traffic starts (for a script that
    /// acts during the run).
    pub ready_line: bool,
}

/// Connects every member of `plan`, runs the traffic and returns the report (without
/// `mode`). Bounded: connects, the window and the drain all have deadlines.
pub async fn run(plan: Plan) -> Result<serde_json::Map<String, Value>, crate::Error> {
    let connect_started = now_ns();
    let connect_errors = Errors::default();
    let bytes = Arc::new(inflate::Counters::default());
    let attempts: Vec<(usize, Dial, Member)> = plan
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let dial = Dial {
                url: m.url.clone(),
                source_ip: client::pick_ip(&plan.source_ips, i),
                timeout: plan.connect_timeout,
                recv_buffer: m.stalled,
                deflate: plan.deflate,
                bytes: bytes.clone(),
            };
            (i, dial, m.clone())
        })
        .collect();
    let flavor = plan.flavor.clone();
    let opened = futures_util::stream::iter(attempts)
        .map(move |(i, dial, m)| {
            let flavor = flavor.clone();
            async move { (i, open(&dial, &flavor, &m.user, &m.room).await) }
        })
        .buffer_unordered(plan.connect_concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let connect_s = (now_ns() - connect_started) as f64 / 1e9;
    let mut sockets: Vec<(usize, Ws)> = Vec::new();
    let mut stalled_sockets: Vec<Ws> = Vec::new();
    for (i, result) in opened {
        match result {
            Ok(ws) if plan.members[i].stalled.is_some() => stalled_sockets.push(ws),
            Ok(ws) => sockets.push((i, ws)),
            Err(e) => connect_errors.add(&e.0),
        }
    }
    if plan.retry && matches!(plan.flavor, Flavor::Seed) {
        return Err("--retry needs Warren's refs and acks (not seed-fanout)".into());
    }
    let stalled_requested = plan.members.iter().filter(|m| m.stalled.is_some()).count();
    let stalled_rcvbuf = plan.members.iter().find_map(|m| m.stalled).unwrap_or(0);
    if sockets.is_empty() {
        return Err(format!("no member could connect: {}", connect_errors.to_json()).into());
    }
    // Room sizes among the members that are in.
    let mut room_size: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, _) in &sockets {
        *room_size.entry(plan.members[*i].room.as_str()).or_insert(0) += 1;
    }
    // Let the last upgrades settle server-side (the seed registers a client only after
    // its upgrade returns).
    sleep(Duration::from_millis(200)).await;

    let sender_tags: Vec<usize> = sockets
        .iter()
        .filter(|(i, _)| plan.members[*i].pace.is_some())
        .map(|(i, _)| *i)
        .collect();
    let tag_of = |i: usize| sender_tags.iter().position(|s| *s == i);
    let watch = match &plan.metrics_url {
        Some(url) => Some(stalled::Watch::start(url, Duration::from_millis(100))?),
        None => None,
    };
    let traffic_ns = now_ns();
    let window = Window::after(plan.warmup, plan.duration);
    let shared = Arc::new(RunCounters {
        window,
        latency: Latency::default(),
        ack_latency: Latency::default(),
        delivered: Count::default(),
        delivered_in_window: Count::default(),
        own_in_window: Count::default(),
        sent_in_window: Count::default(),
        acked_in_window: Count::default(),
        server_errors: Errors::default(),
        closed: Count::default(),
        senders: sender_tags.iter().map(|_| SenderStats::default()).collect(),
        per_reader: sockets.iter().map(|_| Count::default()).collect(),
        by_second: (0..(window.secs().ceil() as usize).max(1))
            .map(|_| Count::default())
            .collect(),
        track: plan.retry.then(|| {
            retry::Tracker::new(
                sender_tags.len(),
                sockets.len(),
                plan.broker_back_file.clone(),
            )
        }),
    });
    // Who each reader and each sender is, for the per-member check.
    let reader_of: Vec<(String, String)> = sockets
        .iter()
        .map(|(i, _)| (plan.members[*i].user.clone(), plan.members[*i].room.clone()))
        .collect();
    let sender_rooms: Vec<String> = sender_tags
        .iter()
        .map(|i| plan.members[*i].room.clone())
        .collect();
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    let expected_per_msg: Vec<u64> = sender_tags
        .iter()
        .map(|i| room_size[plan.members[*i].room.as_str()])
        .collect();
    let readers = sockets.len();
    for (slot, (i, ws)) in sockets.into_iter().enumerate() {
        let member = &plan.members[i];
        let (sink, stream) = ws.split();
        let tag = tag_of(i);
        let credits = match (tag, member.pace) {
            (Some(_), Some(Pace::Window(w))) => Some(Arc::new(Semaphore::new(w))),
            _ => None,
        };
        tasks.push(tokio::spawn(read(
            stream,
            shared.clone(),
            plan.flavor.clone(),
            (slot, tag),
            credits.clone(),
        )));
        if let (Some(tag), Some(pace)) = (tag, member.pace) {
            let writer = Writer {
                sink,
                shared: shared.clone(),
                flavor: plan.flavor.clone(),
                tag,
                room: member.room.clone(),
                payload: plan.payload,
            };
            tasks.push(tokio::spawn(writer.run(pace, credits)));
        } else {
            // A receiver never writes; tungstenite answers pings through the stream half.
            tasks.push(tokio::spawn(hold(sink)));
        }
    }

    if plan.ready_line {
        eprintln!("ready connected={readers}");
    }
    sleep_until(Window::instant_of(window.start_ns)).await;
    let cpu_before = plan.cpu.sample();
    let bytes_before = bytes.snapshot();
    let metrics_before = plan.window_metrics.read().await;
    sleep_until(Window::instant_of(window.end_ns)).await;
    let cpu_after = plan.cpu.sample();
    let bytes_after = bytes.snapshot();
    let metrics_after = plan.window_metrics.read().await;

    // Drain: every accepted message to every member of its room, every send answered.
    let accepted = |s: &SenderStats, f: &Flavor| match f {
        Flavor::Warren { .. } => s.acked.get(),
        Flavor::Seed => s.sent.get(),
    };
    let expected = || -> u64 {
        shared
            .senders
            .iter()
            .zip(&expected_per_msg)
            .map(|(s, n)| accepted(s, &plan.flavor) * n)
            .sum()
    };
    let answered = || {
        shared
            .senders
            .iter()
            .all(|s| s.acked.get() + s.refused.get() >= s.sent.get())
    };
    let seed = matches!(plan.flavor, Flavor::Seed);
    // With --retry a message may arrive twice: count each once.
    let delivered_once = || match &shared.track {
        Some(t) => t.delivered_once.get(),
        None => shared.delivered.get(),
    };
    let (drain_s, drained) = drain(
        plan.drain,
        plan.drain_cap,
        || delivered_once() >= expected() && (seed || answered()),
        || shared.delivered.get() + shared.senders.iter().map(|s| s.acked.get()).sum::<u64>(),
    )
    .await;
    for t in &tasks {
        t.abort();
    }
    // The stalled members' leftovers, then the gateway's view (a late cut included).
    let stalled_report = if stalled_requested > 0 {
        Some(
            stalled::finish(
                stalled_sockets,
                stalled_requested,
                stalled_rcvbuf,
                traffic_ns,
            )
            .await,
        )
    } else {
        None
    };
    let server_metrics = watch.map(|w| w.stop(traffic_ns, window.start_ns));

    let secs = window.secs();
    let sum = |f: &dyn Fn(&SenderStats) -> u64| shared.senders.iter().map(f).sum::<u64>();
    let sent = sum(&|s| s.sent.get());
    let accepted_total = sum(&|s| accepted(s, &plan.flavor));
    let expected_total = expected();
    let delivered = shared.delivered.get();
    // Loss in total, or member by member with --retry.
    let checked = shared
        .track
        .as_ref()
        .map(|t| t.report(&reader_of, &sender_rooms));
    let (lost, unexpected) = match &checked {
        Some((_, lost, unexpected)) => (*lost, *unexpected),
        None => (
            expected_total.saturating_sub(delivered),
            delivered.saturating_sub(expected_total),
        ),
    };
    let mut out = serde_json::Map::new();
    out.insert("ok".into(), json!(true));
    out.insert("members".into(), json!(plan.members.len()));
    out.insert("connected".into(), json!(room_size.values().sum::<u64>()));
    out.insert("connect_errors".into(), connect_errors.to_json());
    out.insert(
        "connect_s".into(),
        json!((connect_s * 1000.0).round() / 1000.0),
    );
    out.insert("rooms".into(), json!(room_size.len()));
    out.insert("senders".into(), json!(shared.senders.len()));
    out.insert("payload".into(), json!(plan.payload));
    out.insert("window_s".into(), json!(secs));
    out.insert("sent".into(), json!(sent));
    out.insert("accepted".into(), json!(accepted_total));
    out.insert("refused".into(), json!(sum(&|s| s.refused.get())));
    out.insert("server_errors".into(), shared.server_errors.to_json());
    out.insert("expected_deliveries".into(), json!(expected_total));
    out.insert("delivered".into(), json!(delivered));
    out.insert("lost".into(), json!(lost));
    out.insert("unexpected".into(), json!(unexpected));
    out.insert(
        "delivered_in_window".into(),
        json!(shared.delivered_in_window.get()),
    );
    out.insert(
        "sent_per_s".into(),
        json!(rate(shared.sent_in_window.get(), secs)),
    );
    out.insert(
        "accepted_per_s".into(),
        json!(rate(
            match plan.flavor {
                Flavor::Warren { .. } => shared.acked_in_window.get(),
                Flavor::Seed => shared.sent_in_window.get(),
            },
            secs
        )),
    );
    out.insert(
        "deliveries_per_s".into(),
        json!(rate(shared.delivered_in_window.get(), secs)),
    );
    out.insert(
        "messages_delivered_per_s".into(),
        json!(rate(shared.own_in_window.get(), secs)),
    );
    // Per reading member: what "the others' delivery rate" means with stalled readers.
    out.insert("readers".into(), json!(readers));
    out.insert(
        "per_reader_msgs_per_s".into(),
        json!(rate(
            shared.delivered_in_window.get(),
            secs * readers.max(1) as f64
        )),
    );
    out.insert(
        "slowest_reader_msgs_per_s".into(),
        json!(rate(
            shared.per_reader.iter().map(Count::get).min().unwrap_or(0),
            secs
        )),
    );
    out.insert(
        "deliveries_by_second".into(),
        json!(shared.by_second.iter().map(Count::get).collect::<Vec<_>>()),
    );
    out.insert("latency".into(), shared.latency.summary());
    if matches!(plan.flavor, Flavor::Warren { .. }) {
        out.insert("ack_latency".into(), shared.ack_latency.summary());
    }
    out.insert("closed_by_server".into(), json!(shared.closed.get()));
    out.insert("drain_s".into(), json!((drain_s * 100.0).round() / 100.0));
    out.insert("drained".into(), json!(drained));
    out.insert("cpu_s".into(), plan.cpu.delta(&cpu_before, &cpu_after));
    out.insert("deflate_offered".into(), json!(plan.deflate));
    if let Value::Object(mut counts) = bytes.report(bytes_before, bytes_after) {
        out.append(&mut counts);
    }
    if !plan.window_metrics.is_empty() {
        out.insert(
            "server_counters".into(),
            plan.window_metrics.report(&metrics_before, &metrics_after),
        );
    }
    if let Some(report) = stalled_report {
        out.insert("stalled".into(), report);
    }
    if let Some(report) = server_metrics {
        out.insert("server_metrics".into(), report);
    }
    if let Some((mut report, _, _)) = checked {
        out.append(&mut report);
    }
    Ok(out)
}

/// Dials one member and, on Warren, waits for `welcome` and joins its room.
async fn open(dial: &Dial, flavor: &Flavor, user: &str, room: &str) -> Result<Ws, DialError> {
    match flavor {
        Flavor::Seed => client::dial(dial, None).await,
        Flavor::Warren { secret } => {
            let token = client::token(secret, user).map_err(|e| DialError(e.to_string()))?;
            let mut ws = client::dial(dial, Some(&token)).await?;
            let steps = async {
                client::welcome(&mut ws).await?;
                client::join(&mut ws, room).await
            };
            match tokio::time::timeout(dial.timeout, steps).await {
                Ok(Ok(())) => Ok(ws),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(DialError("timeout_join".to_owned())),
            }
        }
    }
}
