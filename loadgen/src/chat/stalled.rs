//! Stalled readers (`fanout --stalled N`) and the gateway's side of the story.
//!
//! A stalled member dials with a small `SO_RCVBUF` (set before connecting, so the window
//! it advertises stays small), authenticates and joins like everybody else, and from
//! then on is never polled: nothing reads its socket until the run is over. Then
//! [`finish`] reads what is left on each one, to see how it ended: a close frame (1013
//! for a slow consumer), the TCP connection closed without one, or still open.
//!
//! [`Watch`] scrapes the gateway's `/metrics` on a plain thread during the run, so the
//! report says when the server cut a connection off (`connections_closed_total` with
//! code 1013, `slow_consumers_total`), to within the scrape interval, and whether it
//! cut off anyone else.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::client::Ws;
use crate::frames::{self, Inbound};
use crate::measure::{now_ns, parse_payload};
use crate::scrape::{get, target, Poller};

/// Reading a stalled member's leftovers stops when nothing arrives for this long (the
/// connection is then reported `open`)...
const QUIET: Duration = Duration::from_secs(2);
/// ...or after this long in any case (`still_reading`).
const CAP: Duration = Duration::from_secs(10);
/// Per-member entries in the report at most.
const LISTED: usize = 20;

/// How one stalled member's connection ended, learnt by reading it after the run.
struct Ending {
    /// `close_frame`, `eof` (TCP closed without a close frame), `reset`, `error`,
    /// `open` (nothing more for [`QUIET`], still connected), `still_reading` ([`CAP`]).
    how: &'static str,
    close_code: Option<u16>,
    close_reason: String,
    error: Option<String>,
    /// Text frames and chat messages read after the run (everything it ever got after
    /// `joined`: it read nothing during the run).
    frames: u64,
    messages: u64,
    /// Send time of the last message it got (unix ns), from the payload.
    last_sent_ns: Option<u64>,
    read_s: f64,
}

/// Reads what is left on every stalled member, all at once, bounded by [`CAP`]; the
/// report's `stalled` object. `traffic_ns` is when the senders started.
pub(super) async fn finish(
    sockets: Vec<Ws>,
    requested: usize,
    rcvbuf: u32,
    traffic_ns: u64,
) -> Value {
    let connected = sockets.len();
    let endings = futures_util::future::join_all(sockets.into_iter().map(read_rest)).await;
    let since = |ns: u64| ((ns.saturating_sub(traffic_ns)) as f64 / 1e6).round() / 1e3;
    let mut kinds = serde_json::Map::new();
    for e in &endings {
        let key = match e.close_code {
            Some(code) => format!("{}_{code}", e.how),
            None => e.how.to_owned(),
        };
        let n = kinds.get(&key).and_then(Value::as_u64).unwrap_or(0);
        kinds.insert(key, json!(n + 1));
    }
    let each: Vec<Value> = endings
        .iter()
        .take(LISTED)
        .map(|e| {
            json!({
                "ended": e.how,
                "close_code": e.close_code,
                "close_reason": e.close_reason,
                "error": e.error,
                "frames": e.frames,
                "messages": e.messages,
                "last_message_sent_s": e.last_sent_ns.map(since),
                "read_s": (e.read_s * 100.0).round() / 100.0,
            })
        })
        .collect();
    json!({
        "requested": requested,
        "connected": connected,
        "rcvbuf_bytes": rcvbuf,
        "closed_1013": endings.iter().filter(|e| e.close_code == Some(1013)).count(),
        "ended": kinds,
        "each": each,
    })
}

async fn read_rest(mut ws: Ws) -> Ending {
    let started = Instant::now();
    let mut e = Ending {
        how: "open",
        close_code: None,
        close_reason: String::new(),
        error: None,
        frames: 0,
        messages: 0,
        last_sent_ns: None,
        read_s: 0.0,
    };
    loop {
        let until = (Instant::now() + QUIET).min(started + CAP);
        match tokio::time::timeout_at(until, ws.next()).await {
            Err(_) => {
                e.how = if Instant::now() >= started + CAP {
                    "still_reading"
                } else {
                    "open"
                };
                break;
            }
            Ok(None) => {
                e.how = "eof";
                break;
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                e.frames += 1;
                if let Inbound::Message(body) = frames::classify(t.as_str()) {
                    e.messages += 1;
                    if let Some((ts, _)) = parse_payload(body) {
                        e.last_sent_ns = Some(ts);
                    }
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                e.how = "close_frame";
                if let Some(f) = frame {
                    e.close_code = Some(u16::from(f.code));
                    e.close_reason = f.reason.as_str().to_owned();
                }
                break;
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(err))) => {
                e.how = match &err {
                    WsError::Protocol(_) | WsError::ConnectionClosed | WsError::AlreadyClosed => {
                        "eof"
                    }
                    WsError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionReset => "reset",
                    _ => "error",
                };
                e.error = Some(err.to_string());
                break;
            }
        }
    }
    e.read_s = started.elapsed().as_secs_f64();
    e
}

/// What one scrape of `/metrics` said.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Counters {
    closed_1013: f64,
    slow_consumers: f64,
}

#[derive(Default)]
struct WatchLog {
    scrapes: u64,
    failures: u64,
    first_error: Option<String>,
    first: Option<Counters>,
    last: Option<Counters>,
    /// When a scrape first showed more 1013 closes than the one before it (unix ns), and
    /// how many more.
    rises: Vec<(u64, f64)>,
}

/// Scrapes a gateway's `/metrics` every `every` on its own thread until stopped.
pub struct Watch {
    poller: Poller<WatchLog>,
    every: Duration,
}

impl Watch {
    /// `url` is `http://host:port/path`, host an IP address.
    pub fn start(url: &str, every: Duration) -> Result<Watch, crate::Error> {
        let (addr, request) = target(url, "--metrics-url", "/metrics")?;
        let poller = Poller::start("metrics-watch", every, move |log: &mut WatchLog| {
            let at = now_ns();
            match get(addr, &request).and_then(|body| counters(&body)) {
                Ok(c) => {
                    log.scrapes += 1;
                    if let Some(prev) = log.last {
                        if c.closed_1013 > prev.closed_1013 {
                            log.rises.push((at, c.closed_1013 - prev.closed_1013));
                        }
                    }
                    log.first.get_or_insert(c);
                    log.last = Some(c);
                }
                Err(e) => {
                    log.failures += 1;
                    log.first_error.get_or_insert(e);
                }
            }
        })?;
        Ok(Watch { poller, every })
    }

    /// Stops the watcher (after one more scrape) and reports, times relative to
    /// `traffic_ns` (senders started) and `window_ns` (the window opened).
    pub fn stop(self, traffic_ns: u64, window_ns: u64) -> Value {
        // One more scrape after everything else, so a late cut is counted.
        std::thread::sleep(self.every);
        let every = self.every;
        let Some(log) = self.poller.stop() else {
            return json!({"error": "metrics watcher panicked"});
        };
        let secs = |from: u64, ns: u64| ((ns as f64 - from as f64) / 1e6).round() / 1e3;
        let delta = |f: fn(&Counters) -> f64| match (log.first, log.last) {
            // Counters: whole numbers.
            (Some(a), Some(b)) => json!((f(&b) - f(&a)).round() as i64),
            _ => Value::Null,
        };
        json!({
            "scrapes": log.scrapes,
            "scrape_failures": log.failures,
            "first_error": log.first_error,
            "interval_ms": every.as_millis() as u64,
            "closed_1013": delta(|c| c.closed_1013),
            "slow_consumers": delta(|c| c.slow_consumers),
            "closed_1013_at_s": log.rises.iter().take(LISTED).map(|(at, _)| secs(traffic_ns, *at)).collect::<Vec<_>>(),
            "closed_1013_at_window_s": log.rises.iter().take(LISTED).map(|(at, _)| secs(window_ns, *at)).collect::<Vec<_>>(),
        })
    }
}

/// The gateway counters that tell about slow consumers, from Prometheus text.
fn counters(body: &str) -> Result<Counters, String> {
    let mut c = Counters {
        closed_1013: 0.0,
        slow_consumers: 0.0,
    };
    let mut seen = false;
    for line in body.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value = || value.parse::<f64>().map_err(|e| format!("{line:?}: {e}"));
        if name == "warren_gateway_slow_consumers_total" {
            c.slow_consumers = value()?;
            seen = true;
        } else if name.starts_with("warren_gateway_connections_closed_total{")
            && name.contains("code=\"1013\"")
        {
            c.closed_1013 = value()?;
        }
    }
    if seen {
        Ok(c)
    } else {
        Err("no warren_gateway_slow_consumers_total in /metrics".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_from_prometheus_text() {
        let body = "# HELP x\n\
            warren_gateway_connections_closed_total{code=\"1000\"} 7\n\
            warren_gateway_connections_closed_total{code=\"1013\"} 2\n\
            warren_gateway_slow_consumers_total 2\n";
        assert_eq!(
            counters(body),
            Ok(Counters {
                closed_1013: 2.0,
                slow_consumers: 2.0
            })
        );
        // Before any close the 1013 series is absent: zero.
        assert_eq!(
            counters("warren_gateway_slow_consumers_total 0\n").map(|c| c.closed_1013),
            Ok(0.0)
        );
        assert!(counters("other_metric 1\n").is_err());
    }
}
