//! Streams of messages as a busy client produces and consumes them, and the checks that
//! say whether every member saw exactly what was acknowledged.
//!
//! A sender keeps a window of unacknowledged sends in flight and, like a real client,
//! resends with the same `ref` what got no answer in time (the protocol makes that safe:
//! the dispatcher answers a retry with the first `ack`). Both loops are bounded in time
//! and in retries; they fail with a summary rather than hang.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proto::server::Message;
use tokio::time::Instant;

use crate::client::{ack_of, message_of, Acked, Client, Recv};

/// How one sender sends.
#[derive(Debug, Clone)]
pub struct Plan {
    pub room: String,
    /// Prefix of this sender's refs (`<label>-<i>`) and texts; unique per sender.
    pub label: String,
    pub count: usize,
    /// Sends in flight without an ack.
    pub window: usize,
    /// A send with no answer after this long is sent again with the same `ref`.
    pub retry_after: Duration,
    /// Sends of one `ref`, first included, before the sender gives up.
    pub max_tries: u32,
    /// `message` events of the room this sender waits for before it stops (it is a
    /// member, so it gets everyone's messages, its own included).
    pub expect_messages: usize,
    /// Incremented on every first ack of a ref, so a test can act "after N acks".
    pub progress: Option<Arc<AtomicUsize>>,
    /// Stop waiting for messages after this long without any frame.
    pub idle: Duration,
    /// Bound on the whole stream.
    pub deadline: Duration,
}

impl Plan {
    pub fn new(room: &str, label: &str, count: usize) -> Plan {
        Plan {
            room: room.to_owned(),
            label: label.to_owned(),
            count,
            window: 20,
            retry_after: Duration::from_secs(10),
            max_tries: 5,
            expect_messages: count,
            progress: None,
            idle: Duration::from_secs(30),
            deadline: Duration::from_secs(300),
        }
    }

    pub fn reference(&self, i: usize) -> String {
        format!("{}-{i}", self.label)
    }

    pub fn text(&self, i: usize) -> String {
        format!("{} says {i}", self.label)
    }
}

/// What one sender saw.
#[derive(Debug, Clone, Default)]
pub struct SenderReport {
    pub label: String,
    /// `ref` → the ack's id and seq.
    pub acks: BTreeMap<String, Acked>,
    /// `message` events of the room, in arrival order.
    pub messages: Vec<Message>,
    /// Sends repeated with the same ref.
    pub resent: usize,
    /// Sends answered `unavailable` or `rate_limited` (each then sent again).
    pub refused: usize,
}

/// Sends `plan.count` messages and collects acks and the room's messages.
pub async fn send_stream(client: &mut Client, plan: &Plan) -> SenderReport {
    let started = Instant::now();
    let index_of: HashMap<String, usize> =
        (0..plan.count).map(|i| (plan.reference(i), i)).collect();
    // index → (when to resend, sends so far)
    let mut in_flight: BTreeMap<usize, (Instant, u32)> = BTreeMap::new();
    let mut next = 0;
    let mut report = SenderReport {
        label: plan.label.clone(),
        ..Default::default()
    };
    let mut last_frame = Instant::now();
    loop {
        while in_flight.len() < plan.window && next < plan.count {
            client
                .send(&plan.room, &plan.text(next), &plan.reference(next))
                .await;
            in_flight.insert(next, (Instant::now() + plan.retry_after, 1));
            next += 1;
        }
        let all_acked = report.acks.len() == plan.count;
        if all_acked && report.messages.len() >= plan.expect_messages {
            return report;
        }
        if all_acked && last_frame.elapsed() > plan.idle {
            // The checks that follow say which messages are missing.
            return report;
        }
        assert!(
            started.elapsed() < plan.deadline,
            "{}: not done within {:?}: {} of {} acked, {} messages, {} in flight, {} resent",
            plan.label,
            plan.deadline,
            report.acks.len(),
            plan.count,
            report.messages.len(),
            in_flight.len(),
            report.resent
        );
        match client.try_recv(Duration::from_millis(500)).await {
            Recv::Frame(v) => {
                last_frame = Instant::now();
                let reference = v["ref"].as_str().map(str::to_owned);
                match v["type"].as_str() {
                    Some("message") => {
                        let m = message_of(&v).expect("a message frame");
                        if m.room == plan.room {
                            report.messages.push(m);
                        }
                    }
                    Some("ack") => {
                        if let Some((r, &i)) =
                            reference.as_ref().and_then(|r| index_of.get_key_value(r))
                        {
                            let acked = ack_of(&v).expect("an ack frame");
                            match report.acks.get(r) {
                                Some(first) => {
                                    assert_eq!(
                                        first, &acked,
                                        "{}: {r} acked twice with different id/seq",
                                        plan.label
                                    )
                                }
                                None => {
                                    report.acks.insert(r.clone(), acked);
                                    if let Some(p) = &plan.progress {
                                        p.fetch_add(1, Ordering::SeqCst);
                                    }
                                }
                            }
                            in_flight.remove(&i);
                        }
                    }
                    Some("error") => {
                        let Some(i) = reference.as_ref().and_then(|r| index_of.get(r)) else {
                            panic!("{}: error without one of our refs: {v}", plan.label)
                        };
                        match v["code"].as_str() {
                            // Nothing was accepted; the protocol says retry.
                            Some("unavailable") | Some("rate_limited") => {
                                report.refused += 1;
                                if let Some(entry) = in_flight.get_mut(i) {
                                    entry.0 = Instant::now() + Duration::from_millis(500);
                                }
                            }
                            _ => panic!("{}: send refused: {v}", plan.label),
                        }
                    }
                    _ => {}
                }
            }
            Recv::Timeout => {}
            Recv::Closed { code, reason } => {
                panic!(
                    "{}: connection closed ({code:?} {reason}) with {} in flight",
                    plan.label,
                    in_flight.len()
                )
            }
        }
        let now = Instant::now();
        for (&i, (due, tries)) in in_flight.iter_mut() {
            if *due <= now {
                let (text, reference) = (plan.text(i), plan.reference(i));
                let retry = Retry::new(&plan.label, *tries, plan.max_tries);
                retry.send(client, &plan.room, &text, &reference).await;
                *due = now + plan.retry_after;
                *tries += 1;
                report.resent += 1;
            }
        }
    }
}

/// One more send of a message that got no answer yet, as the protocol's retry rule has
/// it (the same `ref`), after `tries` sends; fails once `max_tries` sends went unanswered.
pub struct Retry<'a> {
    label: &'a str,
    tries: u32,
    max_tries: u32,
}

impl<'a> Retry<'a> {
    pub fn new(label: &'a str, tries: u32, max_tries: u32) -> Retry<'a> {
        Retry {
            label,
            tries,
            max_tries,
        }
    }

    pub async fn send(&self, client: &mut Client, room: &str, text: &str, reference: &str) {
        let (label, tries) = (self.label, self.tries);
        assert!(
            tries < self.max_tries,
            "{label}: {reference} got no answer after {tries} sends"
        );
        client.send(room, text, reference).await;
    }
}

/// The room's `message` events a member receives: until `expect` of them have come or
/// nothing has come for `idle`; then a short extra wait catches late duplicates.
pub async fn receive(
    client: &mut Client,
    room: &str,
    expect: usize,
    idle: Duration,
) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut grace_until: Option<Instant> = None;
    // Bounded: every round either gets a frame or ends the loop by timeout, and the
    // number of frames a test sends is finite; the hard cap guards against a flood.
    for _ in 0..(expect * 10 + 10_000) {
        let wait = match grace_until {
            Some(t) => t.saturating_duration_since(Instant::now()),
            None => idle,
        };
        match client.try_recv(wait).await {
            Recv::Frame(v) => {
                if let Some(m) = message_of(&v).filter(|m| m.room == room) {
                    messages.push(m);
                    if messages.len() >= expect && grace_until.is_none() {
                        grace_until = Some(Instant::now() + Duration::from_millis(500));
                    }
                }
            }
            Recv::Timeout => return messages,
            Recv::Closed { code, reason } => {
                panic!(
                    "{}: closed ({code:?} {reason}) after {} of {expect} messages",
                    client.label,
                    messages.len()
                )
            }
        }
    }
    panic!("{}: more frames than any test sends", client.label)
}

/// Every acknowledged message as `seq → id`, checking that no seq or id was given twice
/// to different sends.
pub fn acked_by_seq<'a>(
    reports: impl IntoIterator<Item = &'a SenderReport>,
) -> BTreeMap<u64, String> {
    let mut by_seq: BTreeMap<u64, String> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for report in reports {
        for (r, acked) in &report.acks {
            if let Some(other) = by_seq.insert(acked.seq, acked.id.clone()) {
                panic!(
                    "seq {} acked for two messages: {other} and {} ({r})",
                    acked.seq, acked.id
                );
            }
            assert!(
                ids.insert(acked.id.clone()),
                "id {} acked for two refs",
                acked.id
            );
        }
    }
    by_seq
}

/// `got` holds exactly the messages of `expected` (`seq → id`), each once, in
/// ascending seq order.
pub fn assert_exactly_once_in_order(who: &str, got: &[Message], expected: &BTreeMap<u64, String>) {
    let mut problems = Vec::new();
    if let Some(w) = got.windows(2).find(|w| w[1].seq <= w[0].seq) {
        problems.push(format!("out of order: seq {} then {}", w[0].seq, w[1].seq));
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for m in got {
        *seen.entry(m.id.as_str()).or_default() += 1;
    }
    let duplicated: Vec<&str> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .take(10)
        .collect();
    if !duplicated.is_empty() {
        problems.push(format!("received more than once: {duplicated:?}"));
    }
    let missing: Vec<u64> = expected
        .iter()
        .filter(|(_, id)| !seen.contains_key(id.as_str()))
        .map(|(s, _)| *s)
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{} missing, seqs {:?}...",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    let unexpected: Vec<String> = got
        .iter()
        .filter(|m| expected.get(&m.seq) != Some(&m.id))
        .map(|m| format!("{}@{}", m.id, m.seq))
        .take(10)
        .collect();
    if !unexpected.is_empty() {
        problems.push(format!("not acknowledged as such (id@seq): {unexpected:?}"));
    }
    assert!(
        problems.is_empty(),
        "{who}: got {} messages, expected {}: {}",
        got.len(),
        expected.len(),
        problems.join("; ")
    );
}

/// `1..=n` as the set of seqs a fresh room has after `n` stored messages.
pub fn assert_gapless(who: &str, seqs: impl IntoIterator<Item = u64>, n: u64) {
    let seqs: Vec<u64> = seqs.into_iter().collect();
    let want: Vec<u64> = (1..=n).collect();
    if seqs != want {
        let set: BTreeSet<u64> = seqs.iter().copied().collect();
        let missing: Vec<u64> = want
            .iter()
            .copied()
            .filter(|s| !set.contains(s))
            .take(10)
            .collect();
        panic!(
            "{who}: seqs are not exactly 1..={n}: {} seqs, first missing {missing:?}, first/last {:?}/{:?}",
            seqs.len(),
            seqs.first(),
            seqs.last()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored message of room `r` as it comes off the wire (only `seq` and `id` vary).
    fn msg(seq: u64) -> Message {
        serde_json::from_value(serde_json::json!({
            "room": "r", "id": format!("id{seq}"), "seq": seq, "epoch": "e",
            "from": {"id": "a", "name": "A", "bot": false}, "text": "t", "ts": 0
        }))
        .expect("a message as the gateway sends it")
    }

    fn expected(n: u64) -> BTreeMap<u64, String> {
        (1..=n).map(|s| (s, format!("id{s}"))).collect()
    }

    fn fails(got: Vec<Message>) -> String {
        let caught =
            std::panic::catch_unwind(|| assert_exactly_once_in_order("m", &got, &expected(3)));
        let payload = caught.expect_err("the check must fail");
        payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn exactly_once_in_order_accepts_the_acked_sequence() {
        assert_exactly_once_in_order("m", &[msg(1), msg(2), msg(3)], &expected(3));
    }

    #[test]
    fn exactly_once_in_order_catches_gaps_duplicates_disorder_and_strangers() {
        assert!(fails(vec![msg(1), msg(3)]).contains("missing"));
        assert!(fails(vec![msg(1), msg(2), msg(2), msg(3)]).contains("more than once"));
        assert!(fails(vec![msg(2), msg(1), msg(3)]).contains("out of order"));
        let mut stranger = msg(3);
        stranger.id = "other".into();
        assert!(fails(vec![msg(1), msg(2), stranger]).contains("not acknowledged"));
    }

    #[test]
    fn gapless_means_exactly_one_to_n() {
        assert_gapless("s", [1, 2, 3], 3);
        assert!(std::panic::catch_unwind(|| assert_gapless("s", [1, 3], 2)).is_err());
        assert!(std::panic::catch_unwind(|| assert_gapless("s", [1, 2, 3], 2)).is_err());
    }
}

/// One room under a stream from several senders, each in a task of its own, and two
/// readers (one per gateway), for the tests that disturb something underneath (a
/// dispatcher killed, a Redis master stopped) while it runs. Everyone joins before the
/// first send, so every member expects every message.
pub struct RoomTraffic {
    room: String,
    each: usize,
    total: usize,
    progress: Arc<AtomicUsize>,
    sending: Vec<tokio::task::JoinHandle<(Client, SenderReport)>>,
    reading: Vec<tokio::task::JoinHandle<(Client, Vec<Message>)>>,
}

/// What a [`RoomTraffic`] saw besides the checks it made.
#[derive(Debug, Clone, Copy)]
pub struct TrafficSummary {
    /// Sends repeated with the same `ref`.
    pub resent: usize,
    /// Sends answered `unavailable`.
    pub refused: usize,
}

impl RoomTraffic {
    /// `senders` senders of `each` messages (on gateways 0 and 1 in turn) and a reader
    /// on each of gateways 0 and 1; each sender keeps 10 sends in flight and resends with
    /// the same `ref` what got no answer in 10 s, 6 tries at most.
    pub async fn start(
        stack: &crate::Stack,
        room: &str,
        senders: usize,
        each: usize,
    ) -> RoomTraffic {
        let total = senders * each;
        let mut readers = Vec::new();
        for gw in 0..2 {
            let mut c = stack.connect(gw, &format!("reader{gw}")).await;
            c.join(room).await;
            readers.push(c);
        }
        let mut joined = Vec::new();
        for i in 0..senders {
            let mut c = stack.connect(i % 2, &format!("sender{i}")).await;
            c.join(room).await;
            joined.push(c);
        }
        let progress = Arc::new(AtomicUsize::new(0));
        let mut sending = Vec::new();
        for (i, mut c) in joined.into_iter().enumerate() {
            let mut plan = Plan::new(room, &format!("s{i}"), each);
            plan.window = 10;
            plan.retry_after = Duration::from_secs(10);
            plan.max_tries = 6;
            plan.expect_messages = total;
            plan.progress = Some(progress.clone());
            sending.push(tokio::spawn(async move {
                let report = send_stream(&mut c, &plan).await;
                (c, report)
            }));
        }
        let reading = readers
            .into_iter()
            .map(|mut c| {
                let room = room.to_owned();
                tokio::spawn(async move {
                    let got = receive(&mut c, &room, total, Duration::from_secs(60)).await;
                    (c, got)
                })
            })
            .collect();
        RoomTraffic {
            room: room.to_owned(),
            each,
            total,
            progress,
            sending,
            reading,
        }
    }

    /// First acks so far, all senders together.
    pub fn acked(&self) -> usize {
        self.progress.load(Ordering::SeqCst)
    }

    /// The acks so far, read right after `fault`: fails when every send had been acked
    /// already, since then no send crossed the fault and the test proved nothing.
    pub fn acked_at(&self, fault: &str) -> usize {
        let at = self.acked();
        assert!(
            at < self.total,
            "every send was acked before {fault}: nothing crossed it"
        );
        at
    }

    /// Waits (up to 120 s) until the first acks reach `n`; returns the count then.
    pub async fn wait_acks(&self, n: usize, what: &str) -> usize {
        let progress = self.progress.clone();
        crate::eventually(what, Duration::from_secs(120), move || {
            let progress = progress.clone();
            async move {
                match progress.load(Ordering::SeqCst) {
                    got if got >= n => Ok(got),
                    got => Err(format!("{got} acks")),
                }
            }
        })
        .await
    }

    /// Waits for every stream to end, then checks: every `ref` got an ack; every
    /// member saw exactly the acked messages, once each, in seq order; history holds
    /// exactly them, gapless.
    pub async fn finish(self) -> TrafficSummary {
        let mut reports = Vec::new();
        for task in self.sending {
            let (_c, report) = task.await.expect("sender task");
            reports.push(report);
        }
        let summary = TrafficSummary {
            resent: reports.iter().map(|r| r.resent).sum(),
            refused: reports.iter().map(|r| r.refused).sum(),
        };
        for r in &reports {
            assert_eq!(r.acks.len(), self.each, "{}: every ref got an ack", r.label);
        }
        let acked = acked_by_seq(&reports);
        let mut members: Vec<(String, Vec<Message>)> =
            reports.into_iter().map(|r| (r.label, r.messages)).collect();
        let mut history_reader = None;
        for task in self.reading {
            let (c, got) = task.await.expect("reader task");
            members.push((c.label.clone(), got));
            history_reader.get_or_insert(c);
        }
        for (who, got) in &members {
            assert_exactly_once_in_order(who, got, &acked);
        }
        let mut reader = history_reader.expect("a reader");
        let history = reader.full_history(&self.room).await;
        let stored: BTreeMap<u64, String> = history.iter().map(|m| (m.seq, m.id.clone())).collect();
        assert_eq!(stored.len(), history.len(), "history repeats no seq");
        assert_gapless("history", history.iter().map(|m| m.seq), self.total as u64);
        assert_eq!(
            stored, acked,
            "history holds exactly the acked messages, each once"
        );
        summary
    }
}
