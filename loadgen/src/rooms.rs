//! The chat modes' plans: `fanout` and `seed-fanout` (one big room) and `pipeline`
//! (many small rooms), turned from options into a [`chat::Plan`].

use std::time::Duration;

use serde_json::json;

use crate::args::Args;
use crate::chat::{self, Flavor, Member, Pace, Plan};
use crate::client;
use crate::measure::CpuProbe;
use crate::{Error, Job};

/// Options every chat mode shares.
struct Common {
    urls: Vec<String>,
    payload: usize,
    warmup: Duration,
    duration: Duration,
    drain: Duration,
    drain_cap: Duration,
    connect_concurrency: usize,
    connect_timeout: Duration,
    source_ips: Vec<std::net::IpAddr>,
    cpu: CpuProbe,
    /// A name unique to this run, for rooms and users.
    run_id: String,
    /// `--metrics-url http://host:port/metrics`: a gateway to watch for 1013 closes.
    metrics_url: Option<String>,
    /// `--deflate`: offer permessage-deflate and inflate what comes compressed.
    deflate: bool,
    /// `--window-metrics URL,...`: servers' counters over the window.
    window_metrics: crate::scrape::Scrape,
    /// `--retry`: send refused and unanswered messages again, check every member.
    retry: bool,
    /// `--broker-back-file PATH`: when the broker came back (unix ms), read at the end.
    broker_back_file: Option<std::path::PathBuf>,
    /// `--ready-line`: say `ready connected=N` on stderr when the traffic starts.
    ready_line: bool,
}

impl Common {
    fn read(args: &Args, default_url: &str) -> Result<Common, Error> {
        Ok(Common {
            urls: args.list("url", &[default_url]),
            payload: args.get("payload", 64usize)?,
            warmup: Duration::from_secs_f64(args.get("warmup", 2.0f64)?),
            duration: Duration::from_secs_f64(args.get("duration", 10.0f64)?),
            drain: Duration::from_secs_f64(args.get("drain", 5.0f64)?),
            drain_cap: Duration::from_secs_f64(args.get("drain-max", 60.0f64)?),
            connect_concurrency: args.get("connect-concurrency", 100usize)?,
            connect_timeout: Duration::from_secs_f64(args.get("connect-timeout", 30.0f64)?),
            source_ips: client::parse_ips(&args.list("source-ip", &[]))?,
            cpu: CpuProbe::new(args.labelled("cpu-pids"), args.get("clk-tck", 100.0f64)?)?,
            run_id: args.string(
                "run-id",
                &format!("{:x}", crate::measure::now_ns() % 0xffff_ffff),
            ),
            metrics_url: Some(args.string("metrics-url", "")).filter(|u| !u.is_empty()),
            deflate: args.get("deflate", false)?,
            window_metrics: crate::scrape::Scrape::new(&args.list("window-metrics", &[]))?,
            retry: args.get("retry", false)?,
            broker_back_file: Some(args.string("broker-back-file", ""))
                .filter(|p| !p.is_empty())
                .map(Into::into),
            ready_line: args.get("ready-line", false)?,
        })
    }

    fn plan(self, members: Vec<Member>, flavor: Flavor) -> Plan {
        Plan {
            members,
            flavor,
            payload: self.payload,
            warmup: self.warmup,
            duration: self.duration,
            drain: self.drain,
            drain_cap: self.drain_cap,
            connect_concurrency: self.connect_concurrency,
            connect_timeout: self.connect_timeout,
            source_ips: self.source_ips,
            cpu: self.cpu,
            metrics_url: self.metrics_url,
            deflate: self.deflate,
            window_metrics: self.window_metrics,
            retry: self.retry,
            broker_back_file: self.broker_back_file,
            ready_line: self.ready_line,
        }
    }
}

/// `fanout` (Warren) and `seed-fanout`: R receivers and S senders in one room, spread
/// over the URLs round robin; each sender sends M messages a second, the senders'
/// first sends staggered evenly over one period.
///
/// With `--stalled N` (Warren only) the first N receivers are stalled readers: each
/// dials with `SO_RCVBUF` = `--stalled-rcvbuf` bytes (4096), joins, and is never read
/// again until the run is over; the room keeps R + S members and every figure but the
/// `stalled` object is the other members'.
pub fn fanout(args: &Args, seed: bool) -> Result<Job, Error> {
    let receivers: usize = args.get("receivers", 1000)?;
    let senders: usize = args.get("senders", 10)?;
    let per_sec: f64 = args.get("rate", 10.0)?;
    let stalled: usize = args.get("stalled", 0)?;
    let rcvbuf: u32 = args.get("stalled-rcvbuf", 4096)?;
    if stalled > receivers {
        return Err(format!("--stalled {stalled} is more than --receivers {receivers}").into());
    }
    if seed && stalled > 0 {
        return Err("--stalled is for Warren (fanout) only".into());
    }
    let flavor = if seed {
        Flavor::Seed
    } else {
        Flavor::Warren {
            secret: args.string("secret", ""),
        }
    };
    let common = Common::read(args, "ws://127.0.0.1:8080/ws")?;
    let room = format!("fan-{}", common.run_id);
    let total = receivers + senders;
    let stagger = 1.0 / (per_sec.max(0.001) * senders.max(1) as f64);
    let members = (0..total)
        .map(|i| {
            let sender = i.checked_sub(receivers);
            Member {
                url: common.urls[i % common.urls.len()].clone(),
                user: format!("f{}-{i}", common.run_id),
                room: room.clone(),
                pace: sender.map(|s| Pace::Rate {
                    per_sec,
                    offset: Duration::from_secs_f64(stagger * s as f64),
                }),
                stalled: (i < stalled).then_some(rcvbuf),
            }
        })
        .collect();
    let plan = common.plan(members, flavor);
    Ok(Box::pin(async move {
        let mut out = chat::run(plan).await?;
        out.insert("receivers".into(), json!(receivers));
        out.insert("rate_per_sender".into(), json!(per_sec));
        out.insert("stalled_members".into(), json!(stalled));
        Ok(out)
    }))
}

/// `pipeline`: G rooms of 2–10 members (sizes cycle 2, 3, …, 10), members of a room
/// spread over the URLs; the first `senders-per-room` members of each room send. With
/// `--rate N` (messages a second in total) the senders share N evenly; with `--rate 0`
/// each sender keeps `--window` sends unacknowledged, as fast as Warren acks.
pub fn pipeline(args: &Args) -> Result<Job, Error> {
    let rooms: usize = args.get("rooms", 200)?;
    let per_room: usize = args.get("senders-per-room", 1)?;
    let total_rate: f64 = args.get("rate", 0.0)?;
    let window: usize = args.get("window", 4)?;
    let flavor = Flavor::Warren {
        secret: args.string("secret", ""),
    };
    let common = Common::read(args, "ws://127.0.0.1:8080/ws")?;
    let senders_total: usize = (0..rooms).map(|r| per_room.min(room_size(r))).sum();
    let per_sender = total_rate / senders_total.max(1) as f64;
    let mut members = Vec::new();
    let mut s = 0usize;
    for r in 0..rooms {
        let room = format!("p{}-{r}", common.run_id);
        for j in 0..room_size(r) {
            let pace = (j < per_room).then(|| {
                s += 1;
                if total_rate > 0.0 {
                    Pace::Rate {
                        per_sec: per_sender,
                        offset: Duration::from_secs_f64(s as f64 / total_rate),
                    }
                } else {
                    Pace::Window(window.max(1))
                }
            });
            members.push(Member {
                url: common.urls[(r + j) % common.urls.len()].clone(),
                user: format!("p{}-{r}-{j}", common.run_id),
                room: room.clone(),
                pace,
                stalled: None,
            });
        }
    }
    let plan = common.plan(members, flavor);
    Ok(Box::pin(async move {
        let mut out = chat::run(plan).await?;
        out.insert("offered_rate".into(), json!(total_rate));
        if total_rate <= 0.0 {
            out.insert("window".into(), json!(window));
        }
        Ok(out)
    }))
}

/// Members of room `r`: 2, 3, …, 10, 2, 3, … (6 on average).
fn room_size(r: usize) -> usize {
    2 + r % 9
}
