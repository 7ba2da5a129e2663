//! What every fault test checks at its end, and the probes it uses on the way:
//! readiness of each process, bindings as the broker holds them against each gateway's
//! own view, nothing left under the prefix once the stack is gone, counters from
//! `/metrics`, lines in the logs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proto::server::Message;
use tokio::time::Instant;

use super::member::Member;
use crate::traffic::{self, SenderReport};
use crate::{broker, store, Stack};

/// Which process of a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    Gateway(usize),
    Dispatcher(usize),
}

/// `/readyz` status of a process (0 when it does not answer at all).
pub async fn readyz(stack: &Stack, p: Proc) -> u16 {
    let (addr, name) = match p {
        Proc::Gateway(i) => (stack.gateway_ops_addr(i), "gateway"),
        Proc::Dispatcher(i) => (stack.dispatcher_addr(i), "dispatcher"),
    };
    match crate::http::get(addr, "/readyz").await {
        Ok(r) => r.status,
        Err(e) => {
            eprintln!("[faults] /readyz of {name} {p:?}: {e:#}");
            0
        }
    }
}

/// Waits until every one of `procs` answers `/readyz` with `status`; returns how long
/// that took. Panics after `timeout` naming the ones that did not.
pub async fn wait_readyz(
    stack: &Stack,
    procs: &[Proc],
    status: u16,
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let mut off = Vec::new();
        for &p in procs {
            let got = readyz(stack, p).await;
            if got != status {
                off.push((p, got));
            }
        }
        if off.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "/readyz not {status} within {timeout:?}: {off:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every ack of every member, as `seq → id` (panics if a seq or id was given twice).
pub fn acked_by_seq(members: &[&Member]) -> BTreeMap<u64, String> {
    let reports: Vec<SenderReport> = members.iter().map(|m| m.report()).collect();
    traffic::acked_by_seq(&reports)
}

/// The end of every fault test: `total` sends acked, with seqs exactly `1..=total`;
/// every member in `shown` was shown exactly those messages, once each, in seq order;
/// and `history` (the room's whole history) holds exactly them. Returns the number of
/// (member, message) deliveries checked.
pub fn assert_nothing_acked_lost(
    senders: &[&Member],
    shown: &[&Member],
    history: &[Message],
    total: usize,
) -> usize {
    for s in senders {
        assert_eq!(s.acks.len(), s.count, "{}: every ref got an ack", s.label);
    }
    let acked = acked_by_seq(senders);
    assert_eq!(acked.len(), total, "acks of all senders");
    traffic::assert_gapless("acked seqs", acked.keys().copied(), total as u64);
    let mut checked = 0;
    for m in shown {
        traffic::assert_exactly_once_in_order(&m.label, &m.messages, &acked);
        checked += m.messages.len();
    }
    let stored: BTreeMap<u64, String> = history.iter().map(|m| (m.seq, m.id.clone())).collect();
    assert_eq!(stored.len(), history.len(), "history repeats a seq");
    traffic::assert_gapless("history", history.iter().map(|m| m.seq), total as u64);
    assert_eq!(
        stored, acked,
        "history holds exactly the acked messages, each once"
    );
    checked
}

/// For each gateway in `gateways`: the bindings RabbitMQ holds for its queue are as many
/// as the gateway says it keeps (`/stats`), which follow its local membership. Stale
/// bindings (left by a dead incarnation, or not removed after a reconnect) show here.
pub async fn assert_bindings_follow_membership(stack: &Stack, gateways: &[usize]) {
    for &i in gateways {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let own = stack.stats(i).await.bindings;
            let held = stack.broker_bindings(i).await;
            if own == held.len() as u64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "gw{i}: RabbitMQ binds {held:?} to {}, the gateway keeps {own:?}",
                stack.gateway_queue(i)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The queues under the stack's prefix are exactly the shard queues, the dead-letter
/// queue and the queues of `gateways`: nothing orphaned.
pub async fn assert_queues_are_expected(stack: &Stack, gateways: &[usize]) {
    let names = stack.names();
    let mut want: BTreeSet<String> = (0..stack.shards())
        .map(|n| names.commands_queue(n))
        .collect();
    want.insert(names.dead());
    want.extend(gateways.iter().map(|&i| stack.gateway_queue(i)));
    let got: BTreeSet<String> = broker::queues_under(stack.prefix())
        .await
        .unwrap_or_else(|e| panic!("list queues: {e:#}"))
        .into_iter()
        .collect();
    assert_eq!(got, want, "queues under {}", stack.prefix());
}

/// After the stack was dropped: no queue, exchange or binding named under `prefix` in
/// RabbitMQ, and no key under it in Redis.
pub async fn assert_nothing_left(prefix: &str) {
    let queues = broker::queues_under(prefix)
        .await
        .unwrap_or_else(|e| panic!("list queues: {e:#}"));
    let exchanges = broker::exchanges_under(prefix)
        .await
        .unwrap_or_else(|e| panic!("list exchanges: {e:#}"));
    let bindings = super::services::bindings_under(prefix)
        .await
        .unwrap_or_else(|e| panic!("list bindings: {e:#}"));
    let keys = store::keys_under(prefix)
        .await
        .unwrap_or_else(|e| panic!("redis keys: {e:#}"));
    assert!(
        queues.is_empty() && exchanges.is_empty() && bindings.is_empty() && keys.is_empty(),
        "left under {prefix}: queues {queues:?}, exchanges {exchanges:?}, bindings {bindings:?}, redis keys {}",
        keys.len()
    );
}

/// The sum of every sample of `family` (e.g. `warren_dispatcher_retries_total`) in an
/// OpenMetrics/Prometheus text body; 0 when absent.
pub fn metric_sum(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, rest) = l.split_at(l.find(['{', ' '])?);
            if name != family {
                return None;
            }
            let value = match rest.strip_prefix('{') {
                Some(_) => rest[rest.find('}')? + 1..].split_whitespace().next()?,
                None => rest.split_whitespace().next()?,
            };
            value.parse::<f64>().ok()
        })
        .sum()
}

/// Dispatcher `i`'s `family` total from `/metrics`.
pub async fn dispatcher_metric(stack: &Stack, i: usize, family: &str) -> f64 {
    let response = stack.dispatcher_get(i, "/metrics").await;
    assert_eq!(response.status, 200, "GET /metrics on dispatcher {i}");
    metric_sum(&response.text(), family)
}

/// How many lines of the stack's log for `name` (`d0`, `gw1`, ...) contain `needle`.
pub fn log_lines(stack: &Stack, name: &str, needle: &str) -> usize {
    let suffix = format!("-{name}.log");
    stack
        .logs()
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(&suffix))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| text.lines().filter(|l| l.contains(needle)).count())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_adds_labelled_samples_of_one_family_only() {
        let text = "# TYPE warren_dispatcher_commands counter\n\
            warren_dispatcher_commands_total{kind=\"send\",outcome=\"ok\"} 5\n\
            warren_dispatcher_commands_total{kind=\"join\",outcome=\"ok\"} 2\n\
            warren_dispatcher_commands_totally 9\n\
            warren_dispatcher_retries_total 3\n";
        assert_eq!(metric_sum(text, "warren_dispatcher_commands_total"), 7.0);
        assert_eq!(metric_sum(text, "warren_dispatcher_retries_total"), 3.0);
        assert_eq!(metric_sum(text, "missing_total"), 0.0);
    }
}
