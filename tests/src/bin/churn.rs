//! `churn`: the load of `scripts/soak.sh`. Virtual users connect, join a few rooms, send
//! and read, and disconnect, over and over, at a moderate paced rate, for a bounded time,
//! against gateways on 127.0.0.1 only. Then it prints what it did.
//!
//! ```text
//! churn --gateways 127.0.0.1:18481,127.0.0.1:18482 --secret S [--seconds 600] [--workers 16]
//! churn --cleanup --prefix P      # removes P's queues, exchanges and Redis keys
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use warren_tests::client::ack_of;
use warren_tests::token::{sign_hs256, Claims};
use warren_tests::{cleanup, Client, Connect, Recv};

/// Rooms the users share; users per worker; rooms one connection joins.
const ROOMS: usize = 12;
const USERS_PER_WORKER: usize = 10;
const JOINS: usize = 3;
const SENDS: usize = 5;
/// One cycle (connect → join → send → read → close) per worker at most this often.
const CYCLE: Duration = Duration::from_millis(1000);
/// Hard caps, whatever the arguments say.
const MAX_SECONDS: u64 = 3 * 3600;
const MAX_WORKERS: usize = 200;

#[derive(Default)]
struct Tally {
    cycles: AtomicU64,
    failed: AtomicU64,
    acked: AtomicU64,
    received: AtomicU64,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn usage() -> ! {
    eprintln!("usage: churn --gateways ADDR[,ADDR..] --secret S [--seconds N] [--workers N]");
    eprintln!("       churn --cleanup --prefix P");
    std::process::exit(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--cleanup") {
        let prefix = arg(&args, "--prefix").unwrap_or_else(|| usage());
        let problems = tokio::task::spawn_blocking(move || {
            cleanup::remove_blocking(&prefix, Vec::new(), Vec::new())
        })
        .await
        .expect("cleanup task");
        if !problems.is_empty() {
            eprintln!("churn: cleanup problems: {problems:?}");
            std::process::exit(1);
        }
        return;
    }
    let gateways: Vec<SocketAddr> = arg(&args, "--gateways")
        .unwrap_or_else(|| usage())
        .split(',')
        .map(|a| a.parse().unwrap_or_else(|_| usage()))
        .collect();
    for g in &gateways {
        assert!(g.ip().is_loopback(), "churn only talks to 127.0.0.1: {g}");
    }
    let secret = arg(&args, "--secret").unwrap_or_else(|| usage());
    let seconds: u64 = arg(&args, "--seconds")
        .map(|s| s.parse().unwrap_or_else(|_| usage()))
        .unwrap_or(600)
        .min(MAX_SECONDS);
    let workers: usize = arg(&args, "--workers")
        .map(|s| s.parse().unwrap_or_else(|_| usage()))
        .unwrap_or(16)
        .clamp(1, MAX_WORKERS);

    let until = Instant::now() + Duration::from_secs(seconds);
    let tally = Arc::new(Tally::default());
    let secret: Arc<str> = secret.into();
    let gateways: Arc<[SocketAddr]> = gateways.into();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (tally, secret, gateways) = (tally.clone(), secret.clone(), gateways.clone());
        tasks.push(tokio::spawn(async move {
            let mut round = 0usize;
            while Instant::now() < until {
                let started = Instant::now();
                let user = format!("churn{}", w * USERS_PER_WORKER + round % USERS_PER_WORKER);
                let gateway = gateways[(w + round) % gateways.len()];
                let rooms: Vec<String> = (0..JOINS)
                    .map(|j| format!("soak{}", (w + round + j * 5) % ROOMS))
                    .collect();
                let cycle = tokio::spawn(cycle(
                    gateway,
                    sign_hs256(&secret, &Claims::new(&user)),
                    user,
                    format!("w{w}r{round}"),
                    rooms,
                    tally.clone(),
                ));
                match tokio::time::timeout(Duration::from_secs(60), cycle).await {
                    Ok(Ok(())) => {
                        tally.cycles.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                round += 1;
                tokio::time::sleep(CYCLE.saturating_sub(started.elapsed())).await;
            }
        }));
    }
    // Progress every 30 s on stderr, so that a stall shows while it happens.
    let progress = {
        let tally = tally.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_secs(30)).await;
                eprintln!(
                    "churn: {:>5} s: {} cycles ({} failed), {} acked, {} received",
                    started.elapsed().as_secs(),
                    tally.cycles.load(Ordering::Relaxed),
                    tally.failed.load(Ordering::Relaxed),
                    tally.acked.load(Ordering::Relaxed),
                    tally.received.load(Ordering::Relaxed)
                );
            }
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    progress.abort();
    println!(
        "churn: {seconds} s, {workers} workers: {} connection cycles ({} failed), {} sends acked, {} messages received",
        tally.cycles.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.acked.load(Ordering::Relaxed),
        tally.received.load(Ordering::Relaxed)
    );
}

/// One visit: connect, join, send, read what comes for a moment, close.
async fn cycle(
    gateway: SocketAddr,
    token: String,
    user: String,
    visit: String,
    rooms: Vec<String>,
    tally: Arc<Tally>,
) {
    let mut client = match Client::connect(gateway, &Connect::token(token), &user).await {
        Ok(c) => c,
        Err(e) => panic!("{user}: connect to {gateway}: {e}"),
    };
    for room in &rooms {
        client.join(room).await;
    }
    for i in 0..SENDS {
        let room = &rooms[i % rooms.len()];
        // A fresh ref per send across connections: the same user comes back within the
        // dispatcher's dedup window, and a reused (user, ref) is answered as a retry.
        let reference = format!("{visit}-{i}");
        client
            .send(room, &format!("{user} churns {i}"), &reference)
            .await;
        let answer = client.answer(&reference).await;
        assert!(ack_of(&answer).is_some(), "{user}: send answered {answer}");
        tally.acked.fetch_add(1, Ordering::Relaxed);
    }
    let until = Instant::now() + Duration::from_millis(300);
    loop {
        match client
            .try_recv(until.saturating_duration_since(Instant::now()))
            .await
        {
            Recv::Frame(v) if v["type"] == "message" => {
                tally.received.fetch_add(1, Ordering::Relaxed);
            }
            Recv::Frame(_) => {}
            Recv::Timeout | Recv::Closed { .. } => break,
        }
    }
    client.close().await;
}
