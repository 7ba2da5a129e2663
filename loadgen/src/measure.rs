//! What every mode measures with: wall-clock timestamps carried inside payloads, an HDR
//! latency histogram, counters, CPU time of processes read from `/proc`, and the
//! measurement window that decides which samples count.
//!
//! Payloads carry the sender's clock (`"<unix_nanos>|<tag>|xxxx…"`): sender and receiver
//! are on one machine, so one clock serves both, even across loadgen processes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `"<ts_ns>|<tag>|"` padded with `x` to `size` bytes (never shorter than the header).
pub fn payload(ts_ns: u64, tag: u32, size: usize) -> String {
    let mut text = format!("{ts_ns}|{tag}|");
    while text.len() < size {
        text.push('x');
    }
    text
}

/// The timestamp and tag of a [`payload`].
pub fn parse_payload(text: &str) -> Option<(u64, u32)> {
    let mut parts = text.splitn(3, '|');
    let ts = parts.next()?.parse().ok()?;
    let tag = parts.next()?.parse().ok()?;
    Some((ts, tag))
}

/// The part of a run whose samples count: `[start, end)` in unix nanoseconds. Warm-up
/// before it and the drain after it are excluded from rates and percentiles (loss is
/// counted over the whole run).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Window {
    /// A window that opens `warmup` from now and lasts `length`.
    pub fn after(warmup: Duration, length: Duration) -> Window {
        let start_ns = now_ns() + warmup.as_nanos() as u64;
        Window {
            start_ns,
            end_ns: start_ns + length.as_nanos() as u64,
        }
    }

    pub fn contains(&self, ns: u64) -> bool {
        ns >= self.start_ns && ns < self.end_ns
    }

    pub fn secs(&self) -> f64 {
        (self.end_ns - self.start_ns) as f64 / 1e9
    }

    /// A tokio instant `ns` (unix) corresponds to, assuming the clock does not jump.
    pub fn instant_of(ns: u64) -> tokio::time::Instant {
        let now = now_ns();
        let now_i = tokio::time::Instant::now();
        if ns >= now {
            now_i + Duration::from_nanos(ns - now)
        } else {
            now_i
                .checked_sub(Duration::from_nanos(now - ns))
                .unwrap_or(now_i)
        }
    }
}

/// End-to-end latencies in microseconds, shared by every connection task. The lock is
/// held only for one `record`, never across an `.await`.
pub struct Latency {
    histogram: Mutex<Histogram<u64>>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            // 1 µs .. 10 min, 3 significant digits.
            histogram: Mutex::new(
                Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
            ),
        }
    }
}

impl Latency {
    /// Records `now - sent_ns`, clamped to the histogram's range.
    pub fn record_since(&self, sent_ns: u64, now_ns: u64) {
        let us = (now_ns.saturating_sub(sent_ns) / 1_000).clamp(1, 600_000_000);
        if let Ok(mut h) = self.histogram.lock() {
            // In range by the clamp above.
            let _ = h.record(us);
        }
    }

    /// `{"count", "p50_ms", "p90_ms", "p99_ms", "max_ms"}`.
    pub fn summary(&self) -> Value {
        let Ok(h) = self.histogram.lock() else {
            return json!({"error": "latency histogram poisoned"});
        };
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        json!({
            "count": h.len(),
            "p50_ms": ms(0.50),
            "p90_ms": ms(0.90),
            "p99_ms": ms(0.99),
            "max_ms": h.max() as f64 / 1000.0,
        })
    }
}

/// A counter shared by tasks.
#[derive(Default)]
pub struct Count(AtomicU64);

impl Count {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Error kinds and how often each happened (`http_429`, `timeout`, ...).
#[derive(Default)]
pub struct Errors(Mutex<std::collections::BTreeMap<String, u64>>);

impl Errors {
    pub fn add(&self, kind: &str) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(kind.to_owned()).or_insert(0) += 1;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.lock().map(|m| m.values().sum()).unwrap_or(0)
    }

    pub fn to_json(&self) -> Value {
        match self.0.lock() {
            Ok(m) => json!(*m),
            Err(_) => json!({"poisoned": 1}),
        }
    }
}

/// CPU seconds (user + system) of labelled processes, sampled at the window's edges.
pub struct CpuProbe {
    pids: Vec<(String, u32)>,
    clk_tck: f64,
}

impl CpuProbe {
    /// `pids` as `(label, pid)`; `self` is this loadgen process. `clk_tck` is
    /// `getconf CLK_TCK` (100 on Linux).
    pub fn new(pids: Vec<(String, String)>, clk_tck: f64) -> Result<CpuProbe, crate::Error> {
        let mut parsed = vec![("loadgen".to_owned(), std::process::id())];
        for (label, pid) in pids {
            let pid: u32 = pid
                .parse()
                .map_err(|e| crate::Error::from(format!("--cpu-pids {label}={pid}: {e}")))?;
            parsed.push((label, pid));
        }
        Ok(CpuProbe {
            pids: parsed,
            clk_tck,
        })
    }

    /// Seconds of CPU each process has used so far (`None` where `/proc` has no such
    /// process any more).
    pub fn sample(&self) -> Vec<Option<f64>> {
        self.pids
            .iter()
            .map(|(_, pid)| cpu_ticks(*pid).map(|t| t as f64 / self.clk_tck))
            .collect()
    }

    /// `{"label": seconds used between the samples}`; a process that vanished is `null`.
    pub fn delta(&self, before: &[Option<f64>], after: &[Option<f64>]) -> Value {
        let mut out = serde_json::Map::new();
        for (i, (label, _)) in self.pids.iter().enumerate() {
            let v = match (
                before.get(i).copied().flatten(),
                after.get(i).copied().flatten(),
            ) {
                (Some(b), Some(a)) => json!(((a - b) * 1000.0).round() / 1000.0),
                _ => Value::Null,
            };
            out.insert(label.clone(), v);
        }
        Value::Object(out)
    }
}

/// utime + stime of `pid` in clock ticks, from `/proc/<pid>/stat` (fields 14 and 15,
/// counted after the parenthesised command name, which may itself hold spaces).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&stat)
}

fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Waits after a window for what is still in flight: until `done()`, or until
/// `progress()` (a counter of arrivals) has not moved for `quiet`, or `cap` has passed.
/// An overloaded server still delivering its backlog is waited for; a stalled one is
/// not. Returns the seconds waited and whether `done()` held.
pub async fn drain(
    quiet: Duration,
    cap: Duration,
    done: impl Fn() -> bool,
    progress: impl Fn() -> u64,
) -> (f64, bool) {
    let started = tokio::time::Instant::now();
    let mut last = progress();
    let mut last_moved = started;
    loop {
        if done() {
            return (started.elapsed().as_secs_f64(), true);
        }
        let now = tokio::time::Instant::now();
        if now - last_moved >= quiet || now - started >= cap {
            return (started.elapsed().as_secs_f64(), false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let p = progress();
        if p != last {
            last = p;
            last_moved = tokio::time::Instant::now();
        }
    }
}

/// `x` per second over `secs`, rounded to one decimal.
pub fn rate(x: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    (x as f64 / secs * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_has_the_asked_size() {
        let p = payload(1_700_000_000_123_456_789, 42, 64);
        assert_eq!(p.len(), 64);
        assert_eq!(parse_payload(&p), Some((1_700_000_000_123_456_789, 42)));
        // Too small a size still carries the header.
        assert_eq!(parse_payload(&payload(5, 1, 2)), Some((5, 1)));
        assert_eq!(parse_payload("hello"), None);
    }

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let stat = "123 (tokio runtime) S 1 123 123 0 -1 4194560 100 0 0 0 250 75 0 0 20 0";
        assert_eq!(parse_stat_ticks(stat), Some(325));
    }

    #[test]
    fn this_process_has_cpu_ticks() {
        assert!(cpu_ticks(std::process::id()).is_some());
    }

    #[test]
    fn latency_summary_in_milliseconds() {
        let l = Latency::default();
        for us in [1_000u64, 2_000, 3_000, 4_000] {
            l.record_since(0, us * 1_000);
        }
        let s = l.summary();
        assert_eq!(s["count"], 4);
        assert!((s["p50_ms"].as_f64().unwrap() - 2.0).abs() < 0.01, "{s}");
        assert!((s["max_ms"].as_f64().unwrap() - 4.0).abs() < 0.01, "{s}");
    }
}
