//! The servers' own counters over the measurement window (`--window-metrics URL,...`):
//! each URL's Prometheus text is read when the window opens and when it closes, and the
//! report has what every unlabelled `*_total` counter grew by in between, summed over
//! the URLs (and each counter's value at the end). A [`Poller`] reads one URL all
//! through a run instead: [`StatsWatch`] (`connect --stats-url`) a gateway's `/stats`,
//! `chat::stalled::Watch` its `/metrics`.
//!
//! One HTTP/1.0 GET per URL, on a blocking thread so that no reader task waits.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use crate::Error;

/// Counter name → value, for one URL.
pub type Counters = BTreeMap<String, f64>;

/// The URLs to read.
#[derive(Clone, Default)]
pub struct Scrape {
    targets: Vec<(String, SocketAddr, String)>,
}

/// One reading of every URL (in order): its counters, or why it failed.
pub type Reading = Vec<Result<Counters, String>>;

impl Scrape {
    /// `urls` are `http://ip:port/path` (path `/metrics` when absent).
    pub fn new(urls: &[String]) -> Result<Scrape, Error> {
        let mut targets = Vec::new();
        for url in urls {
            let (addr, request) = target(url, "--window-metrics", "/metrics")?;
            targets.push((url.clone(), addr, request));
        }
        Ok(Scrape { targets })
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Reads every URL (none when there are none).
    pub async fn read(&self) -> Reading {
        if self.targets.is_empty() {
            return Vec::new();
        }
        let targets = self.targets.clone();
        tokio::task::spawn_blocking(move || {
            targets
                .iter()
                .map(|(_, addr, request)| get(*addr, request).map(|body| counters(&body)))
                .collect()
        })
        .await
        .unwrap_or_else(|e| vec![Err(format!("scrape thread: {e}"))])
    }

    /// The report: counters' growth between `before` and `after`, summed over the URLs
    /// that answered both times; their values at `after`; failures by URL.
    pub fn report(&self, before: &Reading, after: &Reading) -> Value {
        let mut window: BTreeMap<String, f64> = BTreeMap::new();
        let mut end: BTreeMap<String, f64> = BTreeMap::new();
        let mut failed = serde_json::Map::new();
        let mut answered = 0;
        for (i, (url, _, _)) in self.targets.iter().enumerate() {
            match (before.get(i), after.get(i)) {
                (Some(Ok(a)), Some(Ok(b))) => {
                    answered += 1;
                    for (name, value) in b {
                        *end.entry(name.clone()).or_default() += value;
                        let was = a.get(name).copied().unwrap_or(0.0);
                        *window.entry(name.clone()).or_default() += value - was;
                    }
                }
                (a, b) => {
                    let why = [a, b]
                        .iter()
                        .find_map(|r| match r {
                            Some(Err(e)) => Some(e.clone()),
                            None => Some("not read".to_owned()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    failed.insert(url.clone(), json!(why));
                }
            }
        }
        let whole = |m: BTreeMap<String, f64>| -> serde_json::Map<String, Value> {
            m.into_iter()
                .map(|(k, v)| (k, json!(v.round() as i64)))
                .collect()
        };
        json!({
            "urls": self.targets.len(),
            "answered": answered,
            "failed": failed,
            "window": whole(window),
            "end": whole(end),
        })
    }
}

/// The address and GET request of `http://ip:port/path` (`default_path` when it has
/// none); errors name `option`.
pub(crate) fn target(
    url: &str,
    option: &str,
    default_path: &str,
) -> Result<(SocketAddr, String), Error> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| Error::from(format!("{option} {url}: http:// only")))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, default_path),
    };
    let addr: SocketAddr = host
        .parse()
        .map_err(|e| Error::from(format!("{option} {url}: {e}")))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    Ok((addr, request))
}

/// What a gateway's `/stats` showed over a run.
#[derive(Default)]
struct StatsLog {
    samples: u64,
    failures: u64,
    first_error: Option<String>,
    bindings_min: Option<u64>,
    bindings_max: Option<u64>,
    connections_max: Option<u64>,
}

impl StatsLog {
    fn add(&mut self, body: &str) -> Result<(), String> {
        let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("json: {e}"))?;
        let field = |name: &str| v.get(name).and_then(serde_json::Value::as_u64);
        let bindings = field("bindings").ok_or("no \"bindings\" number in /stats")?;
        self.samples += 1;
        self.bindings_min = Some(self.bindings_min.map_or(bindings, |m| m.min(bindings)));
        self.bindings_max = Some(self.bindings_max.map_or(bindings, |m| m.max(bindings)));
        if let Some(c) = field("connections") {
            self.connections_max = Some(self.connections_max.map_or(c, |m| m.max(c)));
        }
        Ok(())
    }
}

/// Reads a gateway's `/stats` every `every` on its own thread until stopped: how few
/// and how many broker bindings it had (`bindings`) and the most connections it held
/// while a run opened and closed sessions.
pub struct StatsWatch(Poller<StatsLog>);

impl StatsWatch {
    pub fn start(url: &str, every: Duration) -> Result<StatsWatch, Error> {
        let (addr, request) = target(url, "--stats-url", "/stats")?;
        let poller = Poller::start("stats-watch", every, move |log: &mut StatsLog| {
            if let Err(e) = get(addr, &request).and_then(|body| log.add(&body)) {
                log.failures += 1;
                log.first_error.get_or_insert(e);
            }
        })?;
        Ok(StatsWatch(poller))
    }

    /// Stops the watcher (after one last reading) and reports.
    pub fn stop(self) -> Value {
        let Some(log) = self.0.stop() else {
            return json!({"error": "stats watcher panicked"});
        };
        json!({
            "samples": log.samples,
            "failures": log.failures,
            "first_error": log.first_error,
            "bindings_min": log.bindings_min,
            "bindings_max": log.bindings_max,
            "connections_max": log.connections_max,
        })
    }
}

/// A log kept by a thread of its own that takes a reading every so often until stopped:
/// at least one, and one more once stopped.
pub struct Poller<L> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<L>>,
}

impl<L: Default + Send + 'static> Poller<L> {
    /// Starts the thread `name`, which calls `read` on its log every `every`.
    pub fn start(
        name: &str,
        every: Duration,
        mut read: impl FnMut(&mut L) + Send + 'static,
    ) -> Result<Poller<L>, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut log = L::default();
                loop {
                    read(&mut log);
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(every);
                }
                log
            })
            .map_err(|e| Error::from(format!("{name} thread: {e}")))?;
        Ok(Poller {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread after its next reading; its log, unless it panicked.
    pub fn stop(mut self) -> Option<L> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl<L> Drop for Poller<L> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One HTTP/1.0 GET; the body of a 200 answer.
pub(crate) fn get(addr: SocketAddr, request: &str) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .and_then(|()| s.set_write_timeout(Some(Duration::from_secs(2))))
        .map_err(|e| format!("timeouts: {e}"))?;
    s.write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    s.take(8 << 20)
        .read_to_string(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| "no end of headers".to_owned())?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("status {status}"));
    }
    Ok(body.to_owned())
}

/// Every unlabelled counter (`name_total value`) in Prometheus text.
fn counters(body: &str) -> Counters {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(' '))
        .filter(|(name, _)| name.ends_with("_total") && !name.contains('{'))
        .filter_map(|(name, value)| Some((name.to_owned(), value.trim().parse().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlabelled_counters_and_their_growth() {
        let body = "# HELP warren_gateway_ws_payload_bytes_out Bytes.\n\
            # TYPE warren_gateway_ws_payload_bytes_out counter\n\
            warren_gateway_ws_payload_bytes_out_total 1000\n\
            warren_gateway_frames_out_total{type=\"message\"} 5\n\
            warren_gateway_connections 3\n\
            warren_gateway_ws_deflate_bytes_saved_total 40\n";
        let c = counters(body);
        assert_eq!(c.len(), 2);
        assert_eq!(c["warren_gateway_ws_payload_bytes_out_total"], 1000.0);
        let s = Scrape::new(&[
            "http://127.0.0.1:1/metrics".into(),
            "http://127.0.0.1:2".into(),
        ])
        .unwrap();
        let later: Counters = [(
            "warren_gateway_ws_payload_bytes_out_total".to_owned(),
            1500.0,
        )]
        .into_iter()
        .collect();
        let r = s.report(
            &vec![Ok(c.clone()), Ok(c.clone())],
            &vec![Ok(later), Err("connect: refused".into())],
        );
        assert_eq!(r["answered"], 1);
        assert_eq!(
            r["window"]["warren_gateway_ws_payload_bytes_out_total"],
            500
        );
        assert_eq!(r["end"]["warren_gateway_ws_payload_bytes_out_total"], 1500);
        assert_eq!(r["failed"]["http://127.0.0.1:2"], "connect: refused");
        assert!(Scrape::new(&["https://x".into()]).is_err());
    }

    #[test]
    fn stats_keep_the_range_of_bindings() {
        let mut log = StatsLog::default();
        log.add(r#"{"gateway":"g","connections":3,"bindings":1}"#)
            .unwrap();
        log.add(r#"{"gateway":"g","connections":60,"bindings":2}"#)
            .unwrap();
        assert!(log.add(r#"{"connections":1}"#).is_err());
        assert_eq!(
            (log.samples, log.bindings_min, log.bindings_max),
            (2, Some(1), Some(2))
        );
        assert_eq!(log.connections_max, Some(60));
    }
}
