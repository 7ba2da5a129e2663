//! The connection modes: `idle` (hold many authenticated connections open doing
//! nothing, for the gateway's memory per connection) and `connect` (open and close
//! authenticated sessions as fast as possible, for the session rate).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::args::Args;
use crate::client::{self, Dial, DialError, Ws};
use crate::measure::{now_ns, rate, Count, CpuProbe, Errors, Latency, Window};
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
                let dial = Dial {
                    url: urls[i % urls.len()].clone(),
                    source_ip: client::pick_ip(&ips, i),
                    timeout,
                    recv_buffer: None,
                    deflate: false,
                    bytes: Default::default(),
                };
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
                Ok(ws) => {
                    let closed = closed.clone();
                    tasks.push(tokio::spawn(async move {
                        let (_sink, mut stream) = ws.split();
                        // Reading is what answers the gateway's pings.
                        while let Some(Ok(frame)) = stream.next().await {
                            if matches!(frame, Message::Close(_)) {
                                break;
                            }
                        }
                        closed.inc();
                    }));
                }
                Err(e) => errors.add(&e.0),
            }
        }
        let connected = tasks.len();
        eprintln!("ready connected={connected} failed={}", errors.total());
        tokio::time::sleep(hold).await;
        let still_open = connected as u64 - closed.get();
        for t in &tasks {
            t.abort();
        }
        let mut out = serde_json::Map::new();
        out.insert("ok".into(), json!(connected == conns));
        out.insert("conns".into(), json!(conns));
        out.insert("connected".into(), json!(connected));
        out.insert("still_open_after_hold".into(), json!(still_open));
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
/// `--duration` seconds. Sessions whose `welcome` arrived in the window count.
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
    Ok(Box::pin(async move {
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
                    let dial = Dial {
                        url: urls[(w + n) % urls.len()].clone(),
                        source_ip: client::pick_ip(&ips, w + n * concurrency),
                        timeout,
                        recv_buffer: None,
                        deflate: false,
                        bytes: Default::default(),
                    };
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
        Ok(out)
    }))
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
