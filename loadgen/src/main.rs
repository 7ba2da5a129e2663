//! `loadgen`: the load generator behind Warren's benchmarks (`bench/run.sh`,
//! `BENCHMARKS.md`).
//!
//! One binary, one mode per run, one JSON line on stdout per run (progress and the
//! `idle` mode's `ready` line go to stderr). Every run is bounded in count and in time
//! (`--timeout`, default 300 s) and talks to loopback addresses only.
//!
//! - `chat` runs chat traffic for `fanout`, `seed-fanout` and `pipeline` (plans in
//!   `rooms`); `client` dials and authenticates; `frames` reads server frames cheaply;
//!   `inflate` reads permessage-deflate frames for tungstenite (`--deflate`).
//! - `scrape` reads the servers' `/metrics` counters at the window's edges.
//! - `sessions` has `idle`, `connect` and `crowd`; `raw` the broker path without Warren.
//! - `measure` has the clocks, histograms, counters and `/proc` CPU probes.

mod args;
mod chat;
mod client;
mod frames;
mod inflate;
mod measure;
mod raw;
mod rooms;
mod scrape;
mod sessions;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::{json, Map, Value};

use args::Args;

/// A mode's run, prepared from its options (all read and checked before it starts).
pub type Job = Pin<Box<dyn Future<Output = Result<Map<String, Value>, Error>> + Send>>;

/// Errors end a run with `{"ok": false, "error": ...}`.
#[derive(Debug)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error(s.to_owned())
    }
}

impl From<lapin::Error> for Error {
    fn from(e: lapin::Error) -> Self {
        Error(format!("amqp: {e}"))
    }
}

const USAGE: &str = "\
usage: loadgen MODE [--option value]...
modes:
  fanout       R receivers + S senders in one Warren room
               --url ws://a/ws,ws://b/ws --secret S --receivers 1000 --senders 10
               --rate 10 (per sender) --payload 64 --warmup 2 --duration 10 --drain 5 (quiet s; --drain-max 60)
               --stalled N: N of the receivers join, then never read (SO_RCVBUF --stalled-rcvbuf 4096)
               --metrics-url http://gw/metrics: watch the gateway's 1013 closes during the run
               --deflate: offer permessage-deflate, inflate compressed frames
               (every chat mode; the JSON line has wire_bytes_in, inflated_bytes_in, ...)
               --window-metrics http://gw0/metrics,...: servers' *_total counters over
               the window (every chat mode)
  seed-fanout  the same against the seed program ({\"username\",\"message\"}, no auth)
  pipeline     many small rooms (2-10 members): --rooms 200 --senders-per-room 1
               --rate N (total msg/s; 0 = as fast as acks allow, --window 4 per sender)
               --retry: send `unavailable` and unanswered sends again (same ref), check
               each member got every acked message once, in seq order (every Warren
               chat mode); --broker-back-file PATH: unix ms the broker came back, read
               at the end (recovery_ms); --ready-line: `ready` on stderr when sending starts
  idle         --conns C --hold 10: hold C authenticated idle connections
  connect      --concurrency 64 --duration 10: open and close sessions back to back
               --stats-url http://gw/stats: the gateway's bindings all through the run
  crowd        --users N --room R --concurrency 500 --connect-timeout 10 --hold 2
               --start-at UNIX_MS: N users connect and join one room; when all are in
  raw          the broker path alone: --rate N (0 = max, --window 512)
               --durability persistent|transient --amqp URL --prefix P
  cleanup      --queues a,b --exchanges c,d [--amqp URL]
common: --source-ip 127.0.0.2-127.0.0.9 --connect-concurrency 100 --connect-timeout 30
        --cpu-pids label=pid,... --clk-tck 100 --run-id ID --timeout 300 --threads N";

fn main() {
    let line = match Args::parse(std::env::args().skip(1)) {
        Ok(args) if matches!(args.mode.as_str(), "help" | "--help" | "-h") => {
            println!("{USAGE}");
            return;
        }
        Ok(args) => run(&args),
        Err(e) => {
            eprintln!("{USAGE}");
            failure("?", &e)
        }
    };
    let ok = line.get("ok").and_then(Value::as_bool).unwrap_or(false);
    println!("{line}");
    if !ok {
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Value {
    let threads = match args.get(
        "threads",
        std::thread::available_parallelism().map_or(1, usize::from),
    ) {
        Ok(n) => n.max(1),
        Err(e) => return failure(&args.mode, &e),
    };
    let timeout = match args.get("timeout", 300.0f64) {
        Ok(t) => Duration::from_secs_f64(t),
        Err(e) => return failure(&args.mode, &e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return failure(&args.mode, &Error(format!("runtime: {e}"))),
    };
    let job = match args.mode.as_str() {
        "fanout" => rooms::fanout(args, false),
        "seed-fanout" => rooms::fanout(args, true),
        "pipeline" => rooms::pipeline(args),
        "idle" => sessions::idle(args),
        "connect" => sessions::connect(args),
        "crowd" => sessions::crowd(args),
        "raw" => raw::raw(args),
        "cleanup" => raw::cleanup(args),
        other => Err(Error(format!("unknown mode {other:?}"))),
    };
    let job = match job.and_then(|job| args.finish().map(|()| job)) {
        Ok(job) => job,
        Err(e) => return failure(&args.mode, &e),
    };
    let result = runtime.block_on(async {
        match tokio::time::timeout(timeout, job).await {
            Ok(result) => result,
            Err(_) => Err(Error(format!("run exceeded --timeout {timeout:?}"))),
        }
    });
    // Sockets and tasks still alive are dropped here, bounded.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(mut out) => {
            let mut line = serde_json::Map::new();
            line.insert("mode".into(), json!(args.mode));
            line.append(&mut out);
            Value::Object(line)
        }
        Err(e) => failure(&args.mode, &e),
    }
}

fn failure(mode: &str, e: &Error) -> Value {
    json!({"mode": mode, "ok": false, "error": e.0})
}
