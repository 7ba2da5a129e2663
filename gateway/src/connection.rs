//! One WebSocket connection: a single task that reads the socket and loops on
//! `select!{ shutdown, cut-off, token expiry, idle deadline, ping timer, finished
//! publishes, outbound queue, inbound frame }`. Writes go through the connection's
//! [`outlet`]: the task's own frames and queued events, and events the delivery loop
//! writes straight to an idle socket (fan-out without a wake per member).
//!
//! The outlet also holds the per-room state ([`rooms`]) that makes "history + live"
//! gap-free: the connection registers in the room index *before* its join goes out, so
//! the room's events queue up behind a `Joining` state; when `joined` arrives (with the
//! room's latest seq) the task writes it, then only the held and later events whose seq
//! is greater, in the same epoch ([`filter`]). The same filter drops duplicate
//! deliveries after a dispatcher failover, and starts over when a room's history
//! restarts.
//!
//! Liveness: the task pings the client every `gateway.ping_interval_s` and closes the
//! connection (1001, "idle timeout") when nothing at all — no frame, no pong — arrived
//! for `gateway.idle_timeout_s`; a write that makes no progress for as long means a
//! client that stopped reading (1013). Either way a half-open TCP connection is gone
//! within `ping_interval_s + idle_timeout_s`. A client cut off for not reading loses
//! what was queued for it, and finds its close frame right after what was already on
//! its way if it reads again within `gateway.close_timeout_s`.
//!
//! The loop owns the connection's state and calls inward: [`frames`] checks what the
//! client sends (frame budget, size, type, JSON, ids) and returns an [`Action`] the loop
//! carries out; [`forward`] turns what passed into commands for the dispatchers and
//! keeps their publishes in flight; [`mailbox`] is what the rest of the gateway hands
//! the connection (its bounded queue and handle); [`outlet`] is the way out; [`action`]
//! holds the actions and the [`Ending`] that stops the loop.
//!
//! With `gateway.write_coalesce_ms` set, a batch is written that long after its first
//! frame, so a busy connection sends several frames per system call.

mod action;
mod filter;
mod forward;
mod frames;
pub mod mailbox;
pub mod outlet;
mod rooms;

use std::sync::Arc;
use std::time::Duration;

use common::auth::Claims;
use proto::codes::close;
use proto::server::{ServerBody, ServerFrame, UserRef, Welcome};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::caps::ConnectionSlot;
use crate::metrics::{Code, Kind};
use crate::state::Gateway;
use crate::ws;
use action::{Action, Ending};
use forward::{Done, Forwarder};
use frames::InboundChecks;
use mailbox::{ConnHandle, Outbound, ReplyOut};
use outlet::{Out, Outlet};
use rooms::Offered;

/// Outbound messages written per flush.
const BATCH: usize = 64;
/// At least one turn in this many polls every branch, however busy the queue.
const FAIR_EVERY: u32 = 16;

/// What woke one turn of a connection's loop.
enum Turn {
    Outbound(Option<Outbound>),
    Frame(Result<ws::Incoming, ws::ReadError>),
    Finished(Done),
    Ping,
    IdleCheck,
    Expired,
    Slow,
    Shutdown,
    /// A fairness check found nothing ready.
    Nothing,
    /// The write-coalescing delay of the batch ran out.
    Coalesced,
}

/// One connection's state, owned by its task: the loop reads the socket and the
/// mailbox, asks [`frames`] what each inbound frame calls for, and does it.
struct Connection {
    gw: Arc<Gateway>,
    handle: ConnHandle,
    outlet: Arc<Outlet>,
    /// Who the connection is, and its commands on their way.
    forwarder: Forwarder,
    checks: InboundChecks,
    /// When the client last sent anything (a frame, a ping, a pong).
    last_heard: Instant,
}

/// Runs one connection until it closes. `slot` holds its place under the connection
/// caps until it ends.
///
/// Built outside the `async` block so that the task holds one copy of the connection's
/// state (an `async fn` keeps its arguments beside what they are moved into): this
/// future is most of an idle connection's memory.
pub fn run(
    gw: Arc<Gateway>,
    (mut reader, writer): (ws::Reader, ws::Writer),
    claims: Claims,
    slot: ConnectionSlot,
) -> impl std::future::Future<Output = ()> {
    let session: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
    let (tx, rx) = mpsc::channel(gw.settings.gateway.outbound_queue.max(1));
    let g = &gw.settings.gateway;
    let outlet = Arc::new(Outlet::new(writer, g.write_coalesce_ms == 0));
    let handle = ConnHandle {
        tx,
        slow: CancellationToken::new(),
        outlet: Some(outlet.clone()),
    };
    let mut conn = Connection {
        checks: InboundChecks::new(g),
        forwarder: Forwarder::new(gw.clone(), session, claims),
        gw: gw.clone(),
        handle,
        outlet,
        last_heard: Instant::now(),
    };
    async move {
        conn.live(&mut reader, rx).await;
        drop(reader);
        // Boxed: its state would otherwise sit in every idle connection's task.
        Box::pin(conn.forwarder.cleanup(&conn.outlet)).await;
        drop(slot);
    }
}

impl Connection {
    /// From the welcome to the close; the caller then cleans up.
    async fn live(&mut self, reader: &mut ws::Reader, rx: mpsc::Receiver<Outbound>) {
        let gw = self.gw.clone();
        gw.metrics.connections.inc();
        gw.metrics.connections_opened.inc();
        let user = &self.forwarder.claims.sub;
        gw.index
            .add_session(&self.forwarder.session, user, self.handle.clone());
        // Redis says this gateway holds the user before the welcome, so a user event
        // sent from then on names this gateway in its `CC`; no broker operation.
        let ending = if gw.liveness.hold(user).await.is_err() {
            Ending::close(close::INTERNAL, "store unavailable")
        } else {
            self.push(&self.welcome());
            self.event_loop(reader, rx).await
        };
        // Counted when decided, not when the close frame is out: a slow consumer's may
        // wait for it up to the close timeout.
        let code = ending
            .code
            .map_or_else(|| "none".to_owned(), |c| c.to_string());
        gw.metrics
            .connections_closed
            .get_or_create(&Code { code })
            .inc();
        if ending.code == Some(close::SLOW_CONSUMER) {
            gw.metrics.slow_consumers.inc();
        }
        if let Some(code) = ending.code {
            {
                let mut out = self.outlet.lock();
                if code == close::SLOW_CONSUMER {
                    // What it could not take is dropped (the queue went with the loop),
                    // so that a client that reads again finds the close frame right
                    // after what was already on its way, not behind a queue's worth.
                    out.batch.discard_unsent();
                }
                out.batch.close(code, ending.reason);
            }
            // A client that never reads again cannot take the close frame either: after
            // the close timeout the socket is dropped all the same.
            if tokio::time::timeout(self.close_timeout(), self.outlet.flush())
                .await
                .is_err()
            {
                tracing::debug!(session = %self.forwarder.session, "close frame not written in time; dropping");
            }
        }
        self.count_bytes();
        gw.metrics.connections.dec();
    }
}

/// How a turn's batch write ended.
enum Written {
    Done,
    Failed,
    /// The connection is being cut off or the gateway stops: the loop says which.
    Interrupted,
    /// No progress for `idle_timeout_s`: the client stopped reading.
    Stalled,
}

impl Written {
    /// How the connection ends after this write, if it does.
    fn ending(self) -> Option<Ending> {
        match self {
            Written::Done | Written::Interrupted => None,
            Written::Failed => Some(Ending::gone("write failed")),
            Written::Stalled => Some(Ending::close(
                close::SLOW_CONSUMER,
                "client stopped reading",
            )),
        }
    }
}

impl Connection {
    fn welcome(&self) -> ServerFrame {
        ServerFrame::new(ServerBody::Welcome(Welcome {
            user: UserRef {
                id: self.forwarder.claims.sub.clone(),
                name: self.forwarder.name.clone(),
            },
            session: self.forwarder.session.to_string(),
            gateway: self.gw.id.clone(),
            limits: self.gw.limits,
        }))
    }

    fn push(&mut self, frame: &ServerFrame) {
        self.push_into(&mut self.outlet.lock(), frame);
    }

    /// [`Connection::push`] with the outlet already locked.
    fn push_into(&self, out: &mut Out, frame: &ServerFrame) {
        let m = &self.gw.metrics;
        m.frames_out
            .get_or_create(&Kind::of(frame.body.type_name()))
            .inc();
        if let ServerBody::Error(e) = &frame.body {
            m.errors.get_or_create(&Code::of(e.code.as_str())).inc();
        }
        out.batch.text(&frame.to_json());
    }

    async fn write(&mut self, stall: Duration) -> Written {
        // Most batches go out at once, without setting up a timer or a cancellation
        // future (under fan-out, that setup cost more than the write).
        let written = match self.outlet.try_flush() {
            Ok(true) => Written::Done,
            Ok(false) => self.write_waiting(stall).await,
            Err(_) => Written::Failed,
        };
        self.count_bytes();
        written
    }

    /// The rest of a batch the socket would not take at once.
    async fn write_waiting(&mut self, stall: Duration) -> Written {
        let slow = &self.handle.slow;
        let shutdown = &self.gw.shutdown;
        tokio::select! {
            ok = self.outlet.flush() => if ok.is_ok() { Written::Done } else { Written::Failed },
            _ = slow.cancelled() => Written::Interrupted,
            _ = shutdown.cancelled() => Written::Interrupted,
            _ = tokio::time::sleep(stall) => Written::Stalled,
        }
    }

    /// How long a close frame (and what is in the batch before it) may take to go out.
    fn close_timeout(&self) -> Duration {
        Duration::from_secs(self.gw.settings.gateway.close_timeout_s)
    }

    fn count_bytes(&mut self) {
        let counts = self.outlet.lock().batch.take_counts();
        outlet::report(&self.gw.metrics, counts);
    }

    async fn event_loop(
        &mut self,
        reader: &mut ws::Reader,
        mut rx: mpsc::Receiver<Outbound>,
    ) -> Ending {
        let g = &self.gw.settings.gateway;
        let idle = Duration::from_secs(g.idle_timeout_s.max(1));
        let every = Duration::from_secs(g.ping_interval_s.max(1));
        let mut pings = tokio::time::interval_at(Instant::now() + every, every);
        pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Made once, not on every turn: each turn is one event under fan-out, and
        // registering timers and waiters anew every time was a quarter of the gateway's
        // instructions (callgrind, BENCHMARKS.md).
        let expiry = tokio::time::sleep_until(token_deadline(
            &self.forwarder.claims,
            self.gw.settings.auth.leeway_s,
        ));
        let idle_check = tokio::time::sleep_until(self.last_heard + idle);
        let slow = self.handle.slow.clone().cancelled_owned();
        let shutdown = self.gw.shutdown.clone().cancelled_owned();
        // Write coalescing: a batch waits this long after its first frame.
        let coalesce = Duration::from_millis(g.write_coalesce_ms);
        let coalescing = tokio::time::sleep(Duration::ZERO);
        let mut gathering = false;
        tokio::pin!(expiry, idle_check, slow, shutdown, coalescing);
        // The outbound queue is polled first: a wake for an event then costs one poll,
        // not one of every branch (timers, cancellation, the socket). So that a queue
        // that never empties cannot starve the rest, every FAIR_EVERY turns the other
        // branches are polled once without waiting.
        let mut turns = 0u32;
        loop {
            if !gathering && !self.outlet.is_empty() {
                if coalesce > Duration::ZERO {
                    gathering = true;
                    coalescing.as_mut().reset(Instant::now() + coalesce);
                } else if let Some(ending) = self.write(idle).await.ending() {
                    return ending;
                }
            }
            turns += 1;
            let fair = turns.is_multiple_of(FAIR_EVERY);
            let turn = tokio::select! {
                biased;
                out = rx.recv(), if !fair => Turn::Outbound(out),
                _ = &mut coalescing, if gathering => Turn::Coalesced,
                _ = &mut shutdown => Turn::Shutdown,
                _ = &mut slow => Turn::Slow,
                _ = &mut expiry => Turn::Expired,
                _ = &mut idle_check => Turn::IdleCheck,
                _ = pings.tick() => Turn::Ping,
                Some(done) = self.forwarder.next_done(), if self.forwarder.has_inflight() => Turn::Finished(done),
                frame = reader.next() => Turn::Frame(frame),
                // A fairness turn polls everything but the queue once, without waiting.
                _ = std::future::ready(()), if fair => Turn::Nothing,
            };
            match turn {
                Turn::Nothing => {}
                Turn::Coalesced => {
                    gathering = false;
                    if let Some(ending) = self.write(idle).await.ending() {
                        return ending;
                    }
                }
                Turn::Shutdown => return Ending::close(close::GOING_AWAY, "gateway shutting down"),
                Turn::Slow => return Ending::close(close::SLOW_CONSUMER, "slow consumer"),
                Turn::Expired => return Ending::close(close::TOKEN_EXPIRED, "token expired"),
                // The idle deadline moves with every frame heard; the timer is only
                // pushed back when it fires early.
                Turn::IdleCheck => {
                    let deadline = self.last_heard + idle;
                    if deadline <= Instant::now() {
                        self.gw.metrics.idle_timeouts.inc();
                        return Ending::close(close::GOING_AWAY, "idle timeout");
                    }
                    idle_check.as_mut().reset(deadline);
                }
                Turn::Ping => self.outlet.lock().batch.ping(),
                Turn::Finished(done) => {
                    if let Some(answer) = self.forwarder.finished(done, &self.outlet) {
                        self.push(&answer);
                    }
                }
                Turn::Outbound(None) => return Ending::gone("queue closed"),
                Turn::Outbound(Some(out)) => {
                    self.outbound(out);
                    for _ in 0..BATCH {
                        match rx.try_recv() {
                            Ok(out) => self.outbound(out),
                            Err(_) => break,
                        }
                    }
                }
                Turn::Frame(Ok(msg)) => {
                    self.last_heard = Instant::now();
                    let action = self.checks.inbound(msg, &self.outlet, &self.gw.metrics);
                    // The error that explains the close is in the batch, before the
                    // close frame: the two go out together, within the close timeout.
                    if let Some(ending) = self.act(action) {
                        return ending;
                    }
                }
                Turn::Frame(Err(e)) => return frames::read_error(e),
            }
        }
    }

    /// Does what the checks on an inbound frame called for. Returns an ending when the
    /// connection must close.
    fn act(&mut self, action: Action) -> Option<Ending> {
        match action {
            Action::Nothing => {}
            Action::Answer(frame) => self.push(&frame),
            Action::AnswerAndClose(frame, ending) => {
                self.push(&frame);
                return Some(ending);
            }
            Action::Pong(payload) => self.outlet.lock().batch.pong(&payload),
            Action::Join(reference, join) => {
                self.forwarder
                    .join(reference, join, &self.outlet, &self.handle)
            }
            Action::Leave(reference, room) => self.forwarder.leave(reference, room, &self.outlet),
            Action::Forward(reference, body) => self.forwarder.forward(reference, body, None),
            Action::Close(ending) => return Some(ending),
        }
        None
    }

    /// Something for this connection from the broker side, taken into the batch under
    /// the outlet's lock; only then does it stop counting as queued.
    fn outbound(&mut self, item: Outbound) {
        let outlet = self.outlet.clone();
        let leave = {
            let mut out = outlet.lock();
            self.take(&mut out, item)
        };
        outlet.dequeued();
        if let Some(room) = leave {
            self.forwarder.drop_room(&room, &outlet);
        }
    }

    /// One outbound item into the batch. Returns a room the connection must leave (a
    /// kick, a refused join), which the caller does once the lock is released.
    fn take(&mut self, out: &mut Out, item: Outbound) -> Option<String> {
        match item {
            Outbound::Flush => None,
            Outbound::Event(event) if event.kicked => {
                // Removed from the room by a moderator: stop delivering it, then say so.
                if out.rooms.contains(&event.room) {
                    out.batch.shared(&event.text);
                    Some(event.room.to_string())
                } else {
                    None
                }
            }
            Outbound::Event(event) => {
                let max_held = self.gw.settings.gateway.outbound_queue;
                match out.rooms.offer(&event, max_held) {
                    Offered::Write => out.batch.shared(&event.text),
                    Offered::Skip => {}
                    Offered::Overflow => self.handle.slow.cancel(),
                }
                None
            }
            Outbound::Reply(reply) => {
                let ReplyOut { correlation, frame } = *reply;
                let join_room = self.forwarder.answered_join(correlation);
                self.push_into(out, &frame);
                match (join_room, &frame.body) {
                    (Some(room), ServerBody::Joined(joined)) => {
                        for event in out.rooms.joined(room, joined.seq, &joined.epoch) {
                            out.batch.shared(&event.text);
                        }
                        None
                    }
                    (Some(room), ServerBody::Error(_)) => Some(room),
                    _ => None,
                }
            }
        }
    }
}

fn token_deadline(claims: &Claims, leeway_s: u64) -> Instant {
    let now_s = common::now_ms() / 1000;
    let left = (claims.exp + leeway_s.min(60)).saturating_sub(now_s);
    Instant::now() + Duration::from_secs(left)
}
