//! A room member that outlives its connections: it sends a paced stream with same-`ref`
//! retries, records every message it is shown (live or recovered), and, when its
//! gateway dies or it moves, rejoins on a new connection with `since` and the epoch.
//!
//! Unlike [`crate::traffic::send_stream`] it treats a closed connection as an event to
//! report, not a failure, counts `unavailable` answers (the broker-outage tests assert
//! them), and lets the test raise its quota round by round, so that a fault loop has
//! traffic in every round without sending thousands of messages.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proto::server::Message;
use tokio::time::Instant;

use crate::client::{ack_of, message_of, Acked, Client, Recv};
use crate::traffic::{Retry, SenderReport};

/// Shared knobs between a test and the members it drives.
#[derive(Clone, Default)]
pub struct Controls {
    /// First acks of all members' sends, for "after N acks".
    pub acked: Arc<AtomicUsize>,
    /// `unavailable` answers seen by all members.
    pub unavailable: Arc<AtomicUsize>,
}

/// What a member's drive ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Every own send acked and `expect` messages seen (then a short grace).
    Complete,
    /// The test asked it to stop (connection still open).
    Stopped,
    /// The server closed the connection or it broke.
    Closed { code: Option<u16>, reason: String },
    /// Everything acked but fewer messages than expected, and nothing for `idle`.
    Idle,
}

/// One member's state across connections.
pub struct Member {
    pub label: String,
    pub room: String,
    /// Sends this member makes in all (0: a reader).
    pub count: usize,
    /// Sends allowed so far (raised by the test; `count` when unpaced).
    pub quota: Arc<AtomicUsize>,
    /// Asks a running drive to return [`Ended::Stopped`].
    pub stop: Arc<AtomicBool>,
    pub window: usize,
    /// Least time between two first sends (zero: as fast as the window allows).
    pub gap: Duration,
    pub retry_after: Duration,
    /// Unanswered sends of one ref before the member gives up (answers `unavailable`
    /// do not count: they say "retry").
    pub max_tries: u32,
    pub controls: Controls,
    /// `ref` → ack.
    pub acks: BTreeMap<String, Acked>,
    /// Every message of the room shown to this member, live or in a `joined` history,
    /// in the order shown.
    pub messages: Vec<Message>,
    /// The room's epoch as of the last `joined`.
    pub epoch: String,
    pub resent: usize,
    pub unavailable: usize,
    /// Rejoins on a new connection, with how many messages each recovered.
    pub recoveries: Vec<usize>,
    in_flight: BTreeMap<usize, (Instant, u32)>,
    next: usize,
    next_send_at: Instant,
}

impl Member {
    pub fn new(room: &str, label: &str, count: usize, controls: &Controls) -> Member {
        Member {
            label: label.to_owned(),
            room: room.to_owned(),
            count,
            quota: Arc::new(AtomicUsize::new(count)),
            stop: Arc::new(AtomicBool::new(false)),
            window: 10,
            gap: Duration::ZERO,
            retry_after: Duration::from_secs(10),
            max_tries: 6,
            controls: controls.clone(),
            acks: BTreeMap::new(),
            messages: Vec::new(),
            epoch: String::new(),
            resent: 0,
            unavailable: 0,
            recoveries: Vec::new(),
            in_flight: BTreeMap::new(),
            next: 0,
            next_send_at: Instant::now(),
        }
    }

    /// Paced: sends nothing until [`Member::allow`] raises the quota.
    pub fn paced(mut self) -> Member {
        self.quota = Arc::new(AtomicUsize::new(0));
        self
    }

    /// Lets the member send `more` messages beyond what it was allowed so far.
    pub fn allow(quota: &AtomicUsize, more: usize) {
        quota.fetch_add(more, Ordering::SeqCst);
    }

    pub fn reference(&self, i: usize) -> String {
        format!("{}-{i}", self.label)
    }

    pub fn text(&self, i: usize) -> String {
        format!("{} says {i}", self.label)
    }

    /// The highest seq shown so far (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.messages.iter().map(|m| m.seq).max().unwrap_or(0)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// First join on a fresh connection.
    pub async fn join(&mut self, client: &mut Client) {
        let joined = client.join(&self.room).await;
        self.epoch = joined.epoch;
    }

    /// Rejoins on a new connection with `since` = the last seq shown and the epoch, takes
    /// the recovered history as shown, and makes every unanswered send due again now.
    /// Panics unless the gateway says `recovered: true` with exactly the missed seqs.
    pub async fn rejoin(&mut self, client: &mut Client) {
        let since = self.last_seq();
        let joined = client.join_since(&self.room, since, &self.epoch).await;
        assert!(
            joined.recovered,
            "{}: rejoin since {since} (epoch {}) not recovered: epoch {}, seq {}, {} in history",
            self.label,
            self.epoch,
            joined.epoch,
            joined.seq,
            joined.history.len()
        );
        assert_eq!(joined.epoch, self.epoch, "{}: epoch changed", self.label);
        let seqs: Vec<u64> = joined.history.iter().map(|m| m.seq).collect();
        let want: Vec<u64> = (since + 1..=joined.seq).collect();
        assert_eq!(
            seqs, want,
            "{}: recovered history is not exactly since+1..=seq",
            self.label
        );
        self.recoveries.push(joined.history.len());
        self.messages.extend(joined.history);
        let now = Instant::now();
        for (due, _) in self.in_flight.values_mut() {
            *due = now;
        }
    }

    /// The member's acks and messages in the shape [`crate::traffic`]'s checks take.
    pub fn report(&self) -> SenderReport {
        SenderReport {
            label: self.label.clone(),
            acks: self.acks.clone(),
            messages: self.messages.clone(),
            resent: self.resent,
            ..SenderReport::default()
        }
    }

    /// Sends and reads on `client` until stopped, closed, or — when `expect` is given —
    /// until every own send is acked and `expect` messages were shown. Panics past
    /// `deadline` or when one ref goes unanswered `max_tries` times.
    pub async fn drive(
        &mut self,
        client: &mut Client,
        expect: Option<usize>,
        idle: Duration,
        deadline: Duration,
    ) -> Ended {
        let started = Instant::now();
        let index_of: HashMap<String, usize> =
            (0..self.count).map(|i| (self.reference(i), i)).collect();
        let mut last_frame = Instant::now();
        loop {
            if self.stop.swap(false, Ordering::SeqCst) {
                return Ended::Stopped;
            }
            let allowed = self.quota.load(Ordering::SeqCst).min(self.count);
            while self.in_flight.len() < self.window
                && self.next < allowed
                && Instant::now() >= self.next_send_at
            {
                let i = self.next;
                client
                    .send(&self.room, &self.text(i), &self.reference(i))
                    .await;
                self.in_flight
                    .insert(i, (Instant::now() + self.retry_after, 1));
                self.next += 1;
                self.next_send_at = Instant::now() + self.gap;
            }
            let can_send = self.in_flight.len() < self.window && self.next < allowed;
            let wait = if can_send {
                self.next_send_at
                    .saturating_duration_since(Instant::now())
                    .clamp(Duration::from_millis(1), Duration::from_millis(200))
            } else {
                Duration::from_millis(200)
            };
            let all_acked = self.acks.len() == self.count;
            if let Some(expect) = expect {
                if all_acked && self.messages.len() >= expect {
                    return self.grace(client).await;
                }
                if all_acked && last_frame.elapsed() > idle {
                    return Ended::Idle;
                }
            }
            assert!(
                started.elapsed() < deadline,
                "{}: not done within {deadline:?}: {} of {} acked ({} allowed), {} messages (want {expect:?}), {} in flight, {} resent",
                self.label,
                self.acks.len(),
                self.count,
                allowed,
                self.messages.len(),
                self.in_flight.len(),
                self.resent
            );
            match client.try_recv(wait).await {
                Recv::Frame(v) => {
                    last_frame = Instant::now();
                    self.take(&v, &index_of);
                }
                Recv::Timeout => {}
                Recv::Closed { code, reason } => return Ended::Closed { code, reason },
            }
            self.resend_due(client).await;
        }
    }

    /// After the goal: half a second more, to catch late duplicates.
    async fn grace(&mut self, client: &mut Client) -> Ended {
        let index_of: HashMap<String, usize> =
            (0..self.count).map(|i| (self.reference(i), i)).collect();
        let until = Instant::now() + Duration::from_millis(500);
        loop {
            match client
                .try_recv(until.saturating_duration_since(Instant::now()))
                .await
            {
                Recv::Frame(v) => self.take(&v, &index_of),
                Recv::Timeout => return Ended::Complete,
                Recv::Closed { code, reason } => return Ended::Closed { code, reason },
            }
        }
    }

    fn take(&mut self, v: &serde_json::Value, index_of: &HashMap<String, usize>) {
        let reference = v["ref"].as_str();
        match v["type"].as_str() {
            Some("message") => {
                let m = message_of(v).expect("a message frame");
                if m.room == self.room {
                    self.messages.push(m);
                }
            }
            Some("ack") => {
                let Some((r, &i)) = reference.and_then(|r| index_of.get_key_value(r)) else {
                    return;
                };
                let acked = ack_of(v).expect("an ack frame");
                match self.acks.get(r) {
                    Some(first) => assert_eq!(
                        first, &acked,
                        "{}: {r} acked twice with different id/seq",
                        self.label
                    ),
                    None => {
                        self.acks.insert(r.clone(), acked);
                        self.controls.acked.fetch_add(1, Ordering::SeqCst);
                    }
                }
                self.in_flight.remove(&i);
            }
            Some("error") => {
                let Some(&i) = reference.and_then(|r| index_of.get(r)) else {
                    panic!("{}: error without one of its refs: {v}", self.label)
                };
                match v["code"].as_str() {
                    // Nothing was accepted; the protocol says retry. Not a try.
                    Some("unavailable") | Some("rate_limited") => {
                        if v["code"] == "unavailable" {
                            self.unavailable += 1;
                            self.controls.unavailable.fetch_add(1, Ordering::SeqCst);
                        }
                        if let Some(entry) = self.in_flight.get_mut(&i) {
                            entry.0 = Instant::now() + Duration::from_millis(500);
                            entry.1 = entry.1.saturating_sub(1);
                        }
                    }
                    _ => panic!("{}: send refused: {v}", self.label),
                }
            }
            _ => {}
        }
    }

    async fn resend_due(&mut self, client: &mut Client) {
        let now = Instant::now();
        let due: Vec<usize> = self
            .in_flight
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(i, _)| *i)
            .collect();
        for i in due {
            let tries = self.in_flight[&i].1;
            let (text, reference) = (self.text(i), self.reference(i));
            let retry = Retry::new(&self.label, tries, self.max_tries);
            retry.send(client, &self.room, &text, &reference).await;
            self.in_flight
                .insert(i, (Instant::now() + self.retry_after, tries + 1));
            self.resent += 1;
        }
    }
}
