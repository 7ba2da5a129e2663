//! The connection modes: `idle` (hold many authenticated connections open doing
//! nothing, for the gateway's memory per connection), `connect` (open and close
//! authenticated sessions as fast as possible, for the session rate) and `crowd` (many
//! users connect and join one room at once, for how long until all are in).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::args::Args;
use crate::client::{self, Dial, DialError, Ws};
use crate::measure::{now_ns, rate, Count, CpuProbe, Errors, Latency, Window};
use crate::scrape::StatsWatch;
use crate::{Error, Job};

/// `idle`: opens `--conns` connections (each its own user, past `welcome`; with
/// `--seed true` plain upgrades to the seed program, which has no auth), prints
/// `ready connected=N failed=M` on stderr once every attempt is done, holds them for
/// `--hold` seconds (answering the gateway's pings), then drops them all.
pub fn idle(args: &Args) -> Result<Job, Error> {
    let conns: usize = args.get("conns", 1000)?;
    let hold = Duration::from_secs_f64(args.get("hold", 10.0f64)?);
    let urls = args.list("url", &["ws://127.0.0.1:8080/ws"]);
    let secret = args.string("secret", "");
    let ips = client::parse_ips(&args.list("source-ip", &[]))?;
    let concurrency: usize = args.get("connect-concurrency", 200)?;
    let timeout = Duration::from_secs_f64(args.get("connect-timeout", 30.0f64)?);
    let run_id = args.string("run-id", &format!("{:x}", now_ns() % 0xffff_ffff));
    let seed: bool = args.get("seed", false)?;
    Ok(Box::pin(async move {
        let started = Instant::now();
        let errors = Errors::default();
        let closed = Arc::new(Count::default());
        let opened: Vec<Result<Ws, DialError>> = futures_util::stream::iter(0..conns)
            .map(|i| {
                let dial = Dial::plain(&urls[i % urls.len()], client::pick_ip(&ips, i), timeout);
                let user = format!("i{run_id}-{i}");
                let secret = secret.clone();
                async move {
                    if seed {
                        client::dial(&dial, None).await
                    } else {
                        session(&dial, &secret, &user).await
                    }
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let connect_s = started.elapsed().as_secs_f64();
        let mut tasks = Vec::new();
        for result in opened {
            match result {
                Ok(ws) => tasks.push(tokio::spawn(read_until_closed(ws, closed.clone()))),
                Err(e) => errors.add(&e.0),
            }
        }
        let held = Held {
            line: "ready",
            wanted: ("conns", conns),
            got: "connected",
        };
        let mut out = held.hold_then_drop(&tasks, &errors, &closed, hold).await;
        out.insert("connect_errors".into(), errors.to_json());
        out.insert(
            "connect_s".into(),
            json!((connect_s * 1000.0).round() / 1000.0),
        );
        out.insert("hold_s".into(), json!(hold.as_secs_f64()));
        Ok(out)
    }))
}

/// `connect`: `--concurrency` workers each open a session (TCP, upgrade with a fresh
/// token for a new user, `welcome`), close it, and start the next, for `--warmup` plus
/// `--duration` seconds. Sessions whose `welcome` arrived in the window count. With
/// `--stats-url http://gw/stats` the gateway's `/stats` is read every 100 ms all
/// through the run (`server_stats`: the least and most `bindings` it showed).
pub fn connect(args: &Args) -> Result<Job, Error> {
    let concurrency: usize = args.get("concurrency", 64)?;
    let urls = args.list("url", &["ws://127.0.0.1:8080/ws"]);
    let secret = args.string("secret", "");
    let ips = client::parse_ips(&args.list("source-ip", &[]))?;
    let timeout = Duration::from_secs_f64(args.get("connect-timeout", 10.0f64)?);
    let warmup = Duration::from_secs_f64(args.get("warmup", 1.0f64)?);
    let duration = Duration::from_secs_f64(args.get("duration", 10.0f64)?);
    let cpu = CpuProbe::new(args.labelled("cpu-pids"), args.get("clk-tck", 100.0f64)?)?;
    let run_id = args.string("run-id", &format!("{:x}", now_ns() % 0xffff_ffff));
    let stats_url = args.string("stats-url", "");
    Ok(Box::pin(async move {
        let watch = match stats_url.as_str() {
            "" => None,
            url => Some(StatsWatch::start(url, Duration::from_millis(100))?),
        };
        let window = Window::after(warmup, duration);
        let stats = Arc::new(ConnectStats::default());
        let mut workers = Vec::new();
        for w in 0..concurrency.max(1) {
            let stats = stats.clone();
            let urls = urls.clone();
            let ips = ips.clone();
            let secret = secret.clone();
            let run_id = run_id.clone();
            workers.push(tokio::spawn(async move {
                let mut n = 0usize;
                while now_ns() < window.end_ns {
                    let dial = Dial::plain(
                        &urls[(w + n) % urls.len()],
                        client::pick_ip(&ips, w + n * concurrency),
                        timeout,
                    );
                    let user = format!("c{run_id}-{w}-{n}");
                    n += 1;
                    let started = now_ns();
                    let result = session(&dial, &secret, &user).await;
                    let now = now_ns();
                    if !window.contains(now) {
                        if let Ok(mut ws) = result {
                            let _ = ws.close(None).await;
                        }
                        continue;
                    }
                    match result {
                        Ok(mut ws) => {
                            stats.sessions.inc();
                            stats.latency.record_since(started, now);
                            // Send our close and go; the gateway finishes the handshake alone.
                            let _ = ws.close(None).await;
                        }
                        Err(e) => {
                            stats.errors.add(&e.0);
                            // Do not spin on an instant refusal.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
            }));
        }
        sleep_until(Window::instant_of(window.start_ns)).await;
        let before = cpu.sample();
        sleep_until(Window::instant_of(window.end_ns)).await;
        let after = cpu.sample();
        // Workers stop on their own at the window's end; bound the wait for the last ones.
        let grace = Instant::now() + timeout + Duration::from_secs(1);
        for w in workers {
            let abort = w.abort_handle();
            if tokio::time::timeout_at(grace, w).await.is_err() {
                abort.abort();
            }
        }
        let secs = window.secs();
        let mut out = serde_json::Map::new();
        out.insert("ok".into(), json!(stats.sessions.get() > 0));
        out.insert("concurrency".into(), json!(concurrency));
        out.insert("window_s".into(), json!(secs));
        out.insert("sessions".into(), json!(stats.sessions.get()));
        out.insert(
            "sessions_per_s".into(),
            json!(rate(stats.sessions.get(), secs)),
        );
        out.insert("errors".into(), stats.errors.to_json());
        out.insert("session_latency".into(), stats.latency.summary());
        out.insert("cpu_s".into(), cpu.delta(&before, &after));
        if let Some(watch) = watch {
            out.insert("server_stats".into(), watch.stop());
        }
        Ok(out)
    }))
}

/// `crowd`: `--users` users, each its own, spread over the URLs round robin, connect
/// and join one room (`--room`), `--concurrency` at a time, from `--start-at` (unix ms;
/// at once when absent), so that several processes can make one crowd. Each attempt
/// (TCP, upgrade, `welcome`, `join`, `joined`) has `--connect-timeout` seconds. Every
/// member that is in keeps reading (a big room's `member` events, pings); when every
/// attempt is over the report says when the last one had `joined`, counts the failures
/// by kind (timeouts apart), and everyone stays `--hold` seconds before leaving.
pub fn crowd(args: &Args) -> Result<Job, Error> {
    let users: usize = args.get("users", 1000)?;
    let urls = args.list("url", &["ws://127.0.0.1:8080/ws"]);
    let secret = args.string("secret", "");
    let room = args.string("room", "");
    if room.is_empty() {
        return Err("crowd needs --room (one room for the whole crowd)".into());
    }
    let ips = client::parse_ips(&args.list("source-ip", &[]))?;
    let concurrency: usize = args.get("concurrency", 500)?;
    let timeout = Duration::from_secs_f64(args.get("connect-timeout", 10.0f64)?);
    let start_at_ms: u64 = args.get("start-at", 0)?;
    let hold = Duration::from_secs_f64(args.get("hold", 2.0f64)?);
    let cpu = CpuProbe::new(args.labelled("cpu-pids"), args.get("clk-tck", 100.0f64)?)?;
    let run_id = args.string("run-id", &format!("{:x}", now_ns() % 0xffff_ffff));
    if start_at_ms > 0 && start_at_ms * 1_000_000 > now_ns() + 120_000_000_000 {
        return Err(format!("--start-at {start_at_ms} is more than 2 minutes away").into());
    }
    Ok(Box::pin(async move {
        if start_at_ms > 0 {
            sleep_until(Window::instant_of(start_at_ms * 1_000_000)).await;
        }
        // Seconds are counted from --start-at, the same for every process of the crowd.
        let origin_ns = if start_at_ms > 0 {
            start_at_ms * 1_000_000
        } else {
            now_ns()
        };
        let before = cpu.sample();
        let errors = Errors::default();
        let latency = Latency::default();
        let closed = Arc::new(Count::default());
        let attempts = futures_util::stream::iter(0..users)
            .map(|i| {
                let dial = Dial::plain(&urls[i % urls.len()], client::pick_ip(&ips, i), timeout);
                let user = format!("w{run_id}-{i}");
                let (secret, room, closed) = (secret.clone(), room.clone(), closed.clone());
                async move {
                    let started = now_ns();
                    let result = member(&dial, &secret, &user, &room).await;
                    // Reading from the moment it is in, so nothing queues up for it.
                    let held = result.map(|ws| tokio::spawn(read_until_closed(ws, closed)));
                    (started, now_ns(), held)
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        let after = cpu.sample();
        let mut joined_at: Vec<u64> = Vec::new();
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        for (started, done, held) in attempts {
            match held {
                Ok(task) => {
                    latency.record_since(started, done);
                    joined_at.push(done);
                    tasks.push(task);
                }
                Err(e) => errors.add(&e.0),
            }
        }
        joined_at.sort_unstable();
        let secs = |ns: u64| ((ns.saturating_sub(origin_ns)) as f64 / 1e6).round() / 1e3;
        // How many were in by the end of each second.
        let last_s = joined_at.last().map_or(0, |t| secs(*t).ceil() as usize);
        let by_second: Vec<usize> = (1..=last_s.max(1))
            .map(|s| joined_at.partition_point(|t| secs(*t) <= s as f64))
            .collect();
        let timeouts: u64 = match errors.to_json() {
            serde_json::Value::Object(m) => m
                .iter()
                .filter(|(k, _)| k.starts_with("timeout"))
                .filter_map(|(_, v)| v.as_u64())
                .sum(),
            _ => 0,
        };
        let held = Held {
            line: "crowd",
            wanted: ("users", users),
            got: "joined",
        };
        let mut out = held.hold_then_drop(&tasks, &errors, &closed, hold).await;
        out.insert("failed".into(), json!(errors.total()));
        out.insert("timeouts".into(), json!(timeouts));
        out.insert("errors".into(), errors.to_json());
        out.insert("origin_ms".into(), json!(origin_ns / 1_000_000));
        out.insert(
            "last_joined_ms".into(),
            json!(joined_at.last().map(|t| t / 1_000_000)),
        );
        out.insert(
            "last_joined_s".into(),
            json!(joined_at.last().map(|t| secs(*t))),
        );
        out.insert("joined_by_second".into(), json!(by_second));
        out.insert("join_latency".into(), latency.summary());
        out.insert("cpu_s".into(), cpu.delta(&before, &after));
        Ok(out)
    }))
}

/// A session that has joined `room`, all within the dial timeout.
async fn member(dial: &Dial, secret: &str, user: &str, room: &str) -> Result<Ws, DialError> {
    let started = Instant::now();
    let mut ws = session(dial, secret, user).await?;
    let left = dial.timeout.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, client::join(&mut ws, room)).await {
        Ok(Ok(())) => Ok(ws),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(DialError("timeout_join".to_owned())),
    }
}

/// How a job that holds sessions open names them in its report: its stderr line's
/// first word, the key and number of sessions it wanted, and the key of those that
/// got in.
struct Held {
    line: &'static str,
    wanted: (&'static str, usize),
    got: &'static str,
}

impl Held {
    /// Says `<line> <got>=N failed=M` on stderr, keeps the connections read by `tasks`
    /// (the N that got in) for `hold`, then drops them. Returns the report's counts:
    /// `ok` (all wanted got in), wanted, got, and how many were still open after the
    /// hold (the server closed none of them meanwhile).
    async fn hold_then_drop(
        &self,
        tasks: &[JoinHandle<()>],
        errors: &Errors,
        closed: &Count,
        hold: Duration,
    ) -> serde_json::Map<String, serde_json::Value> {
        let (wanted_key, wanted) = self.wanted;
        let got = tasks.len();
        eprintln!("{} {}={got} failed={}", self.line, self.got, errors.total());
        tokio::time::sleep(hold).await;
        let still_open = got as u64 - closed.get();
        for t in tasks {
            t.abort();
        }
        let mut out = serde_json::Map::new();
        out.insert("ok".into(), json!(got == wanted));
        out.insert(wanted_key.into(), json!(wanted));
        out.insert(self.got.into(), json!(got));
        out.insert("still_open_after_hold".into(), json!(still_open));
        out
    }
}

/// Reads (which answers the gateway's pings) until the connection closes.
async fn read_until_closed(ws: Ws, closed: Arc<Count>) {
    let (_sink, mut stream) = ws.split();
    while let Some(Ok(frame)) = stream.next().await {
        if matches!(frame, Message::Close(_)) {
            break;
        }
    }
    closed.inc();
}

#[derive(Default)]
struct ConnectStats {
    sessions: Count,
    errors: Errors,
    latency: Latency,
}

/// An authenticated session past its `welcome`, bounded by the dial timeout.
async fn session(dial: &Dial, secret: &str, user: &str) -> Result<Ws, DialError> {
    let token = client::token(secret, user).map_err(|e| DialError(e.to_string()))?;
    let started = Instant::now();
    let mut ws = client::dial(dial, Some(&token)).await?;
    let left = dial.timeout.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, client::welcome(&mut ws)).await {
        Ok(Ok(())) => Ok(ws),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(DialError("timeout_welcome".to_owned())),
    }
}
