//! Sends that outlive a broker outage (`--retry`), and the check that nothing was lost,
//! doubled or reordered on the way.
//!
//! Warren answers a `send` it could not publish with `unavailable` (the frame had no
//! effect), and a `send` that got no answer at all may be repeated with the same `ref`:
//! the dispatcher remembers each `(room, user, ref)` and answers a repeat with the
//! original `ack`, storing the message once (PROTOCOL.md, "What an `ack` promises").
//! So with `--retry` a sender keeps each send until its first `ack` or a final refusal:
//! `unavailable` sends it again, same `ref` and text, after a backoff (250 ms, doubling,
//! at most 2 s); no answer for 5 s sends it again too. Members never reconnect: their
//! WebSockets are meant to stay open through a broker restart. A second `ack` for one
//! `ref` is counted as such, not as a second message.
//!
//! Every reader keeps the `seq` of each message it gets, in arrival order, and every
//! sender the `seq` of each message acked to it. After the drain, [`Tracker::report`]
//! checks each member: every acked message of its room received exactly once, in `seq`
//! order. With `--broker-back-file` it also reads when the broker came back (unix ms,
//! written by the script that restarted it) and how long the first `ack` after that took.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::measure::Count;

/// No answer for this long: send again.
const RESEND_AFTER: Duration = Duration::from_secs(5);
/// The first wait after `unavailable`; it doubles with each attempt, up to `BACKOFF_MAX`.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Attempts per message before the sender gives up on it (counted as refused).
const MAX_ATTEMPTS: u32 = 100;
/// How often a sender looks for sends that are due again.
pub(super) const RESEND_TICK: Duration = Duration::from_millis(50);
/// Members with a problem listed in the report at most.
const LISTED: usize = 20;

/// One send waiting for its answer.
struct Pending {
    text: String,
    /// When to send it again (unix ns).
    due_ns: u64,
    attempts: u32,
    /// Its last attempt was answered `unavailable` (else it is still unanswered).
    refused: bool,
}

/// What became of a refused send.
pub(super) enum Refusal {
    /// `unavailable`: it will be sent again.
    Retry,
    /// Any other code: refused for good.
    Final,
    /// An answer to an earlier attempt of a send already settled: nothing to do.
    Stale,
}

/// What one reader got, as it arrived.
#[derive(Default)]
struct Received {
    /// Distinct seqs received.
    seen: HashSet<u64>,
    highest: u64,
    duplicated: u64,
    out_of_order: u64,
}

/// The retry bookkeeping and the per-member record of a `--retry` run.
pub(super) struct Tracker {
    /// Per sender tag: sends not answered yet, by `ref`.
    pending: Vec<Mutex<HashMap<String, Pending>>>,
    /// Per sender tag: the seqs acked to it.
    acked: Vec<Mutex<Vec<u64>>>,
    /// Per reader slot.
    received: Vec<Mutex<Received>>,
    /// Arrival time (unix ns) of every first `ack`.
    ack_times: Mutex<Vec<u64>>,
    /// Distinct messages received, over all readers (what the drain waits for).
    pub(super) delivered_once: Count,
    retried: Count,
    resent: Count,
    duplicate_acks: Count,
    gave_up: Count,
    broker_back_file: Option<PathBuf>,
}

impl Tracker {
    pub(super) fn new(senders: usize, readers: usize, broker_back_file: Option<PathBuf>) -> Self {
        Tracker {
            pending: (0..senders).map(|_| Mutex::default()).collect(),
            acked: (0..senders).map(|_| Mutex::default()).collect(),
            received: (0..readers).map(|_| Mutex::default()).collect(),
            ack_times: Mutex::default(),
            delivered_once: Count::default(),
            retried: Count::default(),
            resent: Count::default(),
            duplicate_acks: Count::default(),
            gave_up: Count::default(),
            broker_back_file,
        }
    }

    /// A new send went out.
    pub(super) fn sent(&self, tag: usize, r#ref: &str, text: &str, now: u64) {
        if let Ok(mut p) = self.pending[tag].lock() {
            p.insert(
                r#ref.to_owned(),
                Pending {
                    text: text.to_owned(),
                    due_ns: now + RESEND_AFTER.as_nanos() as u64,
                    attempts: 1,
                    refused: false,
                },
            );
        }
    }

    /// An `ack` arrived; true when it is the first for its `ref`.
    pub(super) fn ack(&self, tag: usize, r#ref: &str, seq: Option<u64>, now: u64) -> bool {
        let first = self.pending[tag]
            .lock()
            .map(|mut p| p.remove(r#ref).is_some())
            .unwrap_or(false);
        if !first {
            self.duplicate_acks.inc();
            return false;
        }
        if let (Some(seq), Ok(mut a)) = (seq, self.acked[tag].lock()) {
            a.push(seq);
        }
        if let Ok(mut t) = self.ack_times.lock() {
            t.push(now);
        }
        true
    }

    /// An `error` answered one of this sender's sends.
    pub(super) fn refused(&self, tag: usize, r#ref: &str, code: &str, now: u64) -> Refusal {
        let Ok(mut p) = self.pending[tag].lock() else {
            return Refusal::Stale;
        };
        if code == "unavailable" {
            if let Some(send) = p.get_mut(r#ref) {
                let backoff = BACKOFF_FIRST
                    .saturating_mul(1 << (send.attempts - 1).min(8))
                    .min(BACKOFF_MAX);
                send.due_ns = now + backoff.as_nanos() as u64;
                send.refused = true;
                self.retried.inc();
                return Refusal::Retry;
            }
            return Refusal::Stale;
        }
        match p.remove(r#ref) {
            Some(_) => Refusal::Final,
            None => Refusal::Stale,
        }
    }

    /// The sends of `tag` due again now, as `(ref, text)`; each is due again after
    /// [`RESEND_AFTER`] unless answered. The second value counts those given up on.
    pub(super) fn due(&self, tag: usize, now: u64) -> (Vec<(String, String)>, u64) {
        let Ok(mut p) = self.pending[tag].lock() else {
            return (Vec::new(), 0);
        };
        let mut out = Vec::new();
        let before = p.len();
        p.retain(|r, send| {
            if send.due_ns > now {
                return true;
            }
            if send.attempts >= MAX_ATTEMPTS {
                return false;
            }
            if !send.refused {
                self.resent.inc();
            }
            send.attempts += 1;
            send.refused = false;
            send.due_ns = now + RESEND_AFTER.as_nanos() as u64;
            out.push((r.clone(), send.text.clone()));
            true
        });
        let dropped = (before - p.len()) as u64;
        self.gave_up.add(dropped);
        (out, dropped)
    }

    /// Sends of `tag` not answered yet.
    pub(super) fn pending(&self, tag: usize) -> usize {
        self.pending[tag].lock().map(|p| p.len()).unwrap_or(0)
    }

    /// A message with `seq` reached reader `slot`.
    pub(super) fn received(&self, slot: usize, seq: u64) {
        let Ok(mut r) = self.received[slot].lock() else {
            return;
        };
        if !r.seen.insert(seq) {
            r.duplicated += 1;
            return;
        }
        self.delivered_once.inc();
        if seq < r.highest {
            r.out_of_order += 1;
        }
        r.highest = r.highest.max(seq);
    }

    /// The check of every member (`readers[slot]` = (user, room)) against what was
    /// acked in its room (`senders[tag]` = room), the retry counts and the recovery
    /// time. The first value is the total lost, the second duplicated + unacked received.
    pub(super) fn report(
        &self,
        readers: &[(String, String)],
        senders: &[String],
    ) -> (Map<String, Value>, u64, u64) {
        let mut acked_in: BTreeMap<&str, HashSet<u64>> = BTreeMap::new();
        for (tag, room) in senders.iter().enumerate() {
            if let Ok(a) = self.acked[tag].lock() {
                acked_in.entry(room).or_default().extend(a.iter().copied());
            }
        }
        let empty = HashSet::new();
        let (mut lost, mut duplicated, mut out_of_order, mut unacked, mut ok) = (0, 0, 0, 0, 0);
        let mut problems = Vec::new();
        for (slot, (user, room)) in readers.iter().enumerate() {
            let Ok(r) = self.received[slot].lock() else {
                continue;
            };
            let expected = acked_in.get(room.as_str()).unwrap_or(&empty);
            let missing = expected.difference(&r.seen).count() as u64;
            let extra = r.seen.difference(expected).count() as u64;
            lost += missing;
            duplicated += r.duplicated;
            out_of_order += r.out_of_order;
            unacked += extra;
            if missing + r.duplicated + r.out_of_order + extra == 0 {
                ok += 1;
            } else if problems.len() < LISTED {
                problems.push(json!({
                    "user": user, "room": room, "lost": missing, "duplicated": r.duplicated,
                    "out_of_order": r.out_of_order, "unacked_received": extra,
                }));
            }
        }
        let mut out = Map::new();
        out.insert(
            "members_check".into(),
            json!({
                "members": readers.len(),
                "exactly_once_in_order": ok,
                "lost": lost,
                "duplicated": duplicated,
                "out_of_order": out_of_order,
                "unacked_received": unacked,
                "problems": problems,
            }),
        );
        out.insert(
            "retry".into(),
            json!({
                "retried_unavailable": self.retried.get(),
                "resent_unanswered": self.resent.get(),
                "duplicate_acks": self.duplicate_acks.get(),
                "gave_up": self.gave_up.get(),
            }),
        );
        out.append(&mut self.recovery());
        (out, lost, duplicated + unacked)
    }

    /// `broker_back_ms` (from the file), `recovery_ms` (to the first ack after it), and
    /// the longest time without any first `ack` (`longest_ack_gap_ms`, ending at
    /// `longest_ack_gap_end_ms`, unix ms).
    fn recovery(&self) -> Map<String, Value> {
        let mut times = self.ack_times.lock().map(|t| t.clone()).unwrap_or_default();
        times.sort_unstable();
        let ms = |ns: u64| ns as f64 / 1e6;
        let round = |x: f64| (x * 10.0).round() / 10.0;
        let mut out = Map::new();
        let gap = times
            .windows(2)
            .map(|w| (w[1] - w[0], w[1]))
            .max_by_key(|(d, _)| *d);
        out.insert(
            "longest_ack_gap_ms".into(),
            json!(gap.map(|(d, _)| round(ms(d)))),
        );
        out.insert(
            "longest_ack_gap_end_ms".into(),
            json!(gap.map(|(_, end)| end / 1_000_000)),
        );
        let Some(path) = &self.broker_back_file else {
            return out;
        };
        match std::fs::read_to_string(path)
            .map(|s| s.split_whitespace().next().map(str::parse::<u64>))
        {
            Ok(Some(Ok(back_ms))) => {
                let back_ns = back_ms * 1_000_000;
                let first = times.iter().find(|t| **t >= back_ns);
                out.insert("broker_back_ms".into(), json!(back_ms));
                out.insert(
                    "recovery_ms".into(),
                    json!(first.map(|t| round(ms(t - back_ns)))),
                );
                out.insert(
                    "acks_after_back".into(),
                    json!(times.iter().filter(|t| **t >= back_ns).count()),
                );
            }
            other => {
                out.insert("broker_back_ms".into(), Value::Null);
                out.insert("recovery_ms".into(), Value::Null);
                out.insert(
                    "broker_back_error".into(),
                    json!(format!("{}: {other:?}", path.display())),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn unavailable_is_retried_with_the_same_ref_and_a_repeat_ack_is_not_a_message() {
        let t = Tracker::new(1, 0, None);
        t.sent(0, "r1", "text", 0);
        assert!(matches!(
            t.refused(0, "r1", "unavailable", S),
            Refusal::Retry
        ));
        // Due after the first backoff (250 ms), not before.
        assert!(t.due(0, S + S / 10).0.is_empty());
        let (again, gave_up) = t.due(0, S + S / 2);
        assert_eq!(again, vec![("r1".to_owned(), "text".to_owned())]);
        assert_eq!(gave_up, 0);
        assert!(t.ack(0, "r1", Some(1), 2 * S));
        assert!(!t.ack(0, "r1", Some(1), 2 * S));
        assert_eq!(t.pending(0), 0);
        assert!(matches!(
            t.refused(0, "r1", "unavailable", 3 * S),
            Refusal::Stale
        ));
        t.sent(0, "r2", "x", 3 * S);
        assert!(matches!(
            t.refused(0, "r2", "forbidden", 3 * S),
            Refusal::Final
        ));
    }

    #[test]
    fn an_unanswered_send_is_due_again_after_five_seconds() {
        let t = Tracker::new(1, 0, None);
        t.sent(0, "r", "x", 0);
        assert!(t.due(0, 4 * S).0.is_empty());
        assert_eq!(t.due(0, 5 * S).0.len(), 1);
        assert!(t.due(0, 6 * S).0.is_empty());
    }

    #[test]
    fn each_member_is_checked_against_its_rooms_acks() {
        let t = Tracker::new(2, 3, None);
        for (tag, r, seq) in [(0, "a1", 1), (0, "a2", 2), (0, "a3", 3), (1, "b1", 1)] {
            t.sent(tag, r, "x", 0);
            assert!(t.ack(tag, r, Some(seq), 1));
        }
        // Reader 0 (room a): all, in order. Reader 1 (room a): 3 before 2, 1 twice, none
        // lost. Reader 2 (room b): lost 1, got an unacked 2.
        for seq in [1, 2, 3] {
            t.received(0, seq);
        }
        for seq in [1, 1, 3, 2] {
            t.received(1, seq);
        }
        t.received(2, 2);
        let readers =
            [("u0", "a"), ("u1", "a"), ("u2", "b")].map(|(u, r)| (u.to_owned(), r.to_owned()));
        let (out, lost, unexpected) = t.report(&readers, &["a".to_owned(), "b".to_owned()]);
        let m = &out["members_check"];
        assert_eq!(m["exactly_once_in_order"], 1);
        assert_eq!(
            (m["lost"].clone(), m["duplicated"].clone()),
            (json!(1), json!(1))
        );
        assert_eq!(m["out_of_order"], 1);
        assert_eq!(m["unacked_received"], 1);
        assert_eq!((lost, unexpected), (1, 2));
        assert_eq!(t.delivered_once.get(), 7);
    }

    #[test]
    fn recovery_is_the_first_ack_after_the_broker_came_back() {
        let dir = std::env::temp_dir().join(format!("loadgen-back-{}", std::process::id()));
        std::fs::write(&dir, "2000\n").unwrap();
        let t = Tracker::new(1, 0, Some(dir.clone()));
        for (r, at_ms) in [("a", 1000u64), ("b", 1100), ("c", 2350), ("d", 2400)] {
            t.sent(0, r, "x", 0);
            t.ack(0, r, None, at_ms * 1_000_000);
        }
        let out = t.recovery();
        std::fs::remove_file(&dir).ok();
        assert_eq!(out["broker_back_ms"], 2000);
        assert_eq!(out["recovery_ms"], 350.0);
        assert_eq!(out["acks_after_back"], 2);
        assert_eq!(out["longest_ack_gap_ms"], 1250.0);
        assert_eq!(out["longest_ack_gap_end_ms"], 2350);
    }
}
