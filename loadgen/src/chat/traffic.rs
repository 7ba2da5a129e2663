//! The per-connection tasks of a chat run: the reader that counts and times every
//! frame, the writer that paces a sender's messages (and, with `--retry`, sends again
//! what was refused or unanswered), and the idle holder of a receiver's sink.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::{interval, interval_at, sleep_until, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use super::counters::RunCounters;
use super::retry::{Refusal, RESEND_TICK};
use super::{Flavor, Pace};
use crate::client::Ws;
use crate::frames::{self, Inbound};
use crate::measure::{now_ns, parse_payload, payload, Window};

/// A receiver's sink: kept so the connection stays open; it is never written.
pub(super) async fn hold(sink: SplitSink<Ws, Message>) {
    std::future::pending::<()>().await;
    drop(sink);
}

/// Counts and times every frame of one connection until it closes. `slot` is the
/// connection's place among the readers, `me` its sender tag when it sends.
pub(super) async fn read(
    mut stream: SplitStream<Ws>,
    shared: Arc<RunCounters>,
    flavor: Flavor,
    (slot, me): (usize, Option<usize>),
    credits: Option<Arc<Semaphore>>,
) {
    while let Some(frame) = stream.next().await {
        let text = match frame {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let inbound = match flavor {
            Flavor::Warren { .. } => frames::classify(text.as_str()),
            Flavor::Seed => frames::classify_seed(text.as_str()),
        };
        let now = now_ns();
        match inbound {
            Inbound::Message(body) => {
                shared.delivered.inc();
                if let Some(t) = &shared.track {
                    if let Some(seq) = frames::seq(text.as_str()) {
                        t.received(slot, seq);
                    }
                }
                let Some((ts, tag)) = parse_payload(body) else {
                    continue;
                };
                if let Some(s) = shared.senders.get(tag as usize) {
                    s.delivered.inc();
                }
                if shared.window.contains(now) {
                    shared.delivered_in_window.inc();
                    shared.per_reader[slot].inc();
                    let second = ((now - shared.window.start_ns) / 1_000_000_000) as usize;
                    if let Some(c) = shared.by_second.get(second) {
                        c.inc();
                    }
                    shared.latency.record_since(ts, now);
                    if me == Some(tag as usize) {
                        shared.own_in_window.inc();
                    }
                }
            }
            Inbound::Ack(r) => {
                // With --retry, only the first ack of a ref counts.
                if let (Some(t), Some(m)) = (&shared.track, me) {
                    if !t.ack(m, r, frames::seq(text.as_str()), now) {
                        continue;
                    }
                }
                if let Some(s) = me.and_then(|m| shared.senders.get(m)) {
                    s.acked.inc();
                }
                if shared.window.contains(now) {
                    shared.acked_in_window.inc();
                    if let Ok(sent) = r.parse::<u64>() {
                        shared.ack_latency.record_since(sent, now);
                    }
                }
                if let Some(c) = &credits {
                    c.add_permits(1);
                }
            }
            Inbound::Error { code, r#ref } => {
                shared.server_errors.add(&code);
                if let (Some(t), Some(m), false) = (&shared.track, me, r#ref.is_empty()) {
                    // Sent again later, or an answer to an attempt already settled.
                    if !matches!(t.refused(m, &r#ref, &code, now), Refusal::Final) {
                        continue;
                    }
                }
                if !r#ref.is_empty() {
                    if let Some(s) = me.and_then(|m| shared.senders.get(m)) {
                        s.refused.inc();
                    }
                    if let Some(c) = &credits {
                        c.add_permits(1);
                    }
                }
            }
            Inbound::Other(_) => {}
        }
    }
    shared.closed.inc();
}

/// The sending half of a sending member.
pub(super) struct Writer {
    pub(super) sink: SplitSink<Ws, Message>,
    pub(super) shared: Arc<RunCounters>,
    pub(super) flavor: Flavor,
    pub(super) tag: usize,
    pub(super) room: String,
    pub(super) payload: usize,
}

/// What a sender does next.
enum Turn {
    /// Send a new message.
    Send,
    /// With `--retry`: send again what is due.
    Resend,
    /// The window is over (or the credits are gone).
    Stop,
}

impl Writer {
    /// Sends until the window closes, paced by a rate or by acks. With `--retry` it also
    /// sends again, every [`RESEND_TICK`], what was refused with `unavailable` or got no
    /// answer, and after the window goes on doing so until every send is answered (the
    /// run aborts this task after its drain).
    pub(super) async fn run(mut self, pace: Pace, credits: Option<Arc<Semaphore>>) {
        let end = Window::instant_of(self.shared.window.end_ns);
        let retrying = self.shared.track.is_some();
        let mut resend = interval(RESEND_TICK);
        resend.set_missed_tick_behavior(MissedTickBehavior::Delay);
        match (pace, credits) {
            (Pace::Window(_), Some(credits)) => loop {
                let turn = tokio::select! {
                    p = credits.acquire() => match p {
                        Ok(p) => {
                            p.forget();
                            Turn::Send
                        }
                        Err(_) => Turn::Stop,
                    },
                    _ = resend.tick(), if retrying => Turn::Resend,
                    _ = sleep_until(end) => Turn::Stop,
                };
                if !self.take(turn).await {
                    break;
                }
            },
            (Pace::Rate { per_sec, offset }, _) => {
                let period = Duration::from_secs_f64(1.0 / per_sec.max(0.001));
                let mut tick = interval_at(tokio::time::Instant::now() + offset, period);
                tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
                loop {
                    let turn = tokio::select! {
                        _ = tick.tick() => Turn::Send,
                        _ = resend.tick(), if retrying => Turn::Resend,
                        _ = sleep_until(end) => Turn::Stop,
                    };
                    if !self.take(turn).await {
                        break;
                    }
                }
            }
            (Pace::Window(_), None) => return,
        }
        let shared = self.shared.clone();
        if let Some(track) = &shared.track {
            while track.pending(self.tag) > 0 {
                resend.tick().await;
                if !self.resend_due().await {
                    return;
                }
            }
        }
    }

    /// Does `turn`; false when sending is over (window, credits or socket).
    async fn take(&mut self, turn: Turn) -> bool {
        match turn {
            Turn::Send => self.send_one().await,
            Turn::Resend => self.resend_due().await,
            Turn::Stop => false,
        }
    }

    /// One message, stamped now; false when the window is over or the socket failed.
    async fn send_one(&mut self) -> bool {
        let now = now_ns();
        if now >= self.shared.window.end_ns {
            return false;
        }
        let text = payload(now, self.tag as u32, self.payload);
        let r#ref = now.to_string();
        // Before the write, so that even the quickest answer finds it.
        if let Some(track) = &self.shared.track {
            track.sent(self.tag, &r#ref, &text, now);
        }
        if !self.write(&r#ref, &text).await {
            return false;
        }
        self.shared.senders[self.tag].sent.inc();
        if self.shared.window.contains(now) {
            self.shared.sent_in_window.inc();
        }
        true
    }

    /// With `--retry`: the sends due again, same `ref` and text; false when the socket
    /// failed. Those given up on count as refused.
    async fn resend_due(&mut self) -> bool {
        let shared = self.shared.clone();
        let Some(track) = &shared.track else {
            return true;
        };
        let (due, gave_up) = track.due(self.tag, now_ns());
        shared.senders[self.tag].refused.add(gave_up);
        for (r#ref, text) in due {
            if !self.write(&r#ref, &text).await {
                return false;
            }
        }
        true
    }

    /// Writes one `send` (a seed frame for the seed program); false when the socket failed.
    async fn write(&mut self, r#ref: &str, text: &str) -> bool {
        let frame = match self.flavor {
            Flavor::Warren { .. } => json!({
                "type": "send",
                "room": self.room,
                "text": text,
                "ref": r#ref,
            }),
            Flavor::Seed => json!({"username": format!("s{}", self.tag), "message": text}),
        };
        self.sink
            .send(Message::text(frame.to_string()))
            .await
            .is_ok()
    }
}
