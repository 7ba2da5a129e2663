//! One WebSocket connection: a single task that owns the socket and loops on
//! `select!{ shutdown, cut-off, token expiry, inbound frame, outbound queue, finished
//! publishes }`. Nothing else writes to the socket.
//!
//! The task also owns the per-room join filter that makes "history + live" gap-free:
//! the connection registers in the room index *before* its join goes out, so the room's
//! events queue up behind a `Joining` state; when `joined` arrives (with the room's
//! latest seq) the task writes it, then only the held and later events whose seq is
//! greater. The same filter drops duplicate deliveries after a dispatcher failover.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::auth::Claims;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, SplitSink};
use futures_util::{SinkExt, StreamExt};
use proto::amqp::{Actor, Command, CommandBody, ConnRef};
use proto::client::{ClientBody, ClientFrame};
use proto::codes::{close, ErrorCode};
use proto::ids::{validate_room, validate_user};
use proto::server::{ServerBody, ServerFrame, UserRef, Welcome};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use warp::ws::{Message, WebSocket};

use crate::broker::BindKey;
use crate::index::{ConnHandle, Outbound};
use crate::limits::{Strikes, TokenBucket};
use crate::metrics::{Code, Kind};
use crate::{Admission, Gateway};

/// How long a close frame may take to go out before the TCP connection is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Outbound messages written per flush.
const BATCH: usize = 64;

enum RoomState {
    /// Join sent; events held until `joined` tells where history ends.
    Joining {
        held: Vec<(Option<u64>, Arc<str>)>,
        last_seq: u64,
    },
    Joined {
        last_seq: u64,
    },
}

/// How an in-flight command ended.
enum Done {
    Accepted,
    Refused {
        reference: Option<String>,
        correlation: String,
        join_room: Option<String>,
    },
}

/// Why the loop stopped, and what to tell the client.
struct Ending {
    code: Option<u16>,
    reason: &'static str,
}

type Sink = SplitSink<WebSocket, Message>;

struct Connection {
    gw: Arc<Gateway>,
    session: Arc<str>,
    claims: Claims,
    name: String,
    handle: ConnHandle,
    rooms: HashMap<String, RoomState>,
    pending_joins: HashMap<String, String>,
    inflight: FuturesUnordered<BoxFuture<'static, Done>>,
    bucket: TokenBucket,
    strikes: Strikes,
    /// Frames to write at the end of this turn of the loop.
    batch: Vec<String>,
}

/// Runs one connection until it closes. `admission` holds its place under the
/// connection caps until it ends.
pub async fn serve(gw: Arc<Gateway>, ws: WebSocket, claims: Claims, admission: Admission) {
    let session: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
    let (tx, rx) = mpsc::channel(gw.settings.gateway.outbound_queue.max(1));
    let handle = ConnHandle {
        tx,
        slow: CancellationToken::new(),
    };
    let g = &gw.settings.gateway;
    let mut conn = Connection {
        bucket: TokenBucket::new(g.sends_per_sec, g.burst),
        name: claims.display_name(),
        gw: gw.clone(),
        session: session.clone(),
        claims,
        handle,
        rooms: HashMap::new(),
        pending_joins: HashMap::new(),
        inflight: FuturesUnordered::new(),
        strikes: Strikes::default(),
        batch: Vec::new(),
    };
    let (mut sink, stream) = ws.split();
    gw.metrics.connections.inc();
    gw.metrics.connections_opened.inc();
    gw.index
        .add_session(&session, &conn.claims.sub, conn.handle.clone());
    let ending = if gw
        .broker
        .ensure(BindKey::User(conn.claims.sub.clone()))
        .await
        .is_err()
    {
        Ending {
            code: Some(close::INTERNAL),
            reason: "broker unavailable",
        }
    } else {
        conn.push(&conn.welcome());
        conn.run(&mut sink, stream, rx).await
    };
    if let Some(code) = ending.code {
        let frame = Message::close_with(code, ending.reason);
        if tokio::time::timeout(CLOSE_GRACE, sink.send(frame))
            .await
            .is_err()
        {
            tracing::debug!(session = %session, "close frame not written in time; dropping");
        }
    }
    drop(sink);
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
    gw.metrics.connections.dec();
    conn.cleanup().await;
    drop(admission);
}

impl Connection {
    fn welcome(&self) -> ServerFrame {
        ServerFrame::new(ServerBody::Welcome(Welcome {
            user: UserRef {
                id: self.claims.sub.clone(),
                name: self.name.clone(),
            },
            session: self.session.to_string(),
            gateway: self.gw.id.clone(),
            limits: self.gw.limits,
        }))
    }

    fn push(&mut self, frame: &ServerFrame) {
        let m = &self.gw.metrics;
        m.frames_out
            .get_or_create(&Kind::of(frame.body.type_name()))
            .inc();
        if let ServerBody::Error(e) = &frame.body {
            m.errors.get_or_create(&Code::of(e.code.as_str())).inc();
        }
        self.batch.push(frame.to_json());
    }

    async fn run(
        &mut self,
        sink: &mut Sink,
        mut stream: futures_util::stream::SplitStream<WebSocket>,
        mut rx: mpsc::Receiver<Outbound>,
    ) -> Ending {
        let expires = token_deadline(&self.claims, self.gw.settings.auth.leeway_s);
        let slow = self.handle.slow.clone();
        let shutdown = self.gw.shutdown.clone();
        loop {
            if !self.batch.is_empty() {
                let written = tokio::select! {
                    r = write_batch(sink, &mut self.batch) => r,
                    _ = slow.cancelled() => false,
                    _ = shutdown.cancelled() => false,
                };
                if !written && !slow.is_cancelled() && !shutdown.is_cancelled() {
                    return Ending {
                        code: None,
                        reason: "write failed",
                    };
                }
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    return Ending { code: Some(close::GOING_AWAY), reason: "gateway shutting down" };
                }
                _ = slow.cancelled() => {
                    return Ending { code: Some(close::SLOW_CONSUMER), reason: "slow consumer" };
                }
                _ = tokio::time::sleep_until(expires) => {
                    return Ending { code: Some(close::TOKEN_EXPIRED), reason: "token expired" };
                }
                Some(done) = self.inflight.next(), if !self.inflight.is_empty() => self.finished(done),
                out = rx.recv() => {
                    let Some(out) = out else { return Ending { code: None, reason: "queue closed" } };
                    self.outbound(out);
                    for _ in 0..BATCH {
                        match rx.try_recv() {
                            Ok(out) => self.outbound(out),
                            Err(_) => break,
                        }
                    }
                }
                frame = stream.next() => match frame {
                    Some(Ok(msg)) => {
                        if let Some(ending) = self.inbound(msg) {
                            return ending;
                        }
                    }
                    Some(Err(e)) => return read_error(&e),
                    None => return Ending { code: None, reason: "client went away" },
                },
            }
        }
    }

    /// One message from the client. Returns an ending when the connection must close.
    fn inbound(&mut self, msg: Message) -> Option<Ending> {
        if msg.is_close() {
            return Some(Ending {
                code: Some(close::NORMAL),
                reason: "bye",
            });
        }
        if msg.is_binary() {
            return Some(Ending {
                code: Some(close::UNSUPPORTED),
                reason: "binary frames are not supported",
            });
        }
        let Ok(text) = msg.to_str() else {
            // Ping and pong are answered by the WebSocket layer.
            return None;
        };
        match ClientFrame::parse(text) {
            Ok(frame) => {
                let kind = Kind::of(frame.body.type_name());
                self.gw.metrics.frames_in.get_or_create(&kind).inc();
                self.command(frame);
                None
            }
            Err(e) => {
                self.gw
                    .metrics
                    .frames_in
                    .get_or_create(&Kind::of("invalid"))
                    .inc();
                self.push(&ServerFrame::error(e.reference, e.code, e.message));
                self.strike()
            }
        }
    }

    fn strike(&mut self) -> Option<Ending> {
        if self.strikes.strike(Instant::now()) {
            return Some(Ending {
                code: Some(close::POLICY),
                reason: "too many bad frames",
            });
        }
        None
    }

    /// A well-formed client frame: checks what the gateway can check alone, then
    /// forwards it as a command.
    fn command(&mut self, frame: ClientFrame) {
        let reference = frame.reference.clone();
        if let Some(room) = frame.room() {
            if let Err(e) = validate_room(room) {
                self.push(&ServerFrame::error(
                    reference,
                    ErrorCode::BadRequest,
                    format!("room: {e}"),
                ));
                return;
            }
        }
        let body = match frame.body {
            ClientBody::Ping(_) => {
                self.push(&ServerFrame::answer(
                    reference,
                    ServerBody::Pong(Default::default()),
                ));
                return;
            }
            ClientBody::Join(join) => {
                let max = self.gw.settings.gateway.max_rooms_per_connection;
                if !self.rooms.contains_key(&join.room) && self.rooms.len() >= max {
                    self.refuse(
                        reference,
                        ErrorCode::Forbidden,
                        "room limit reached for this connection",
                    );
                    return;
                }
                return self.join(reference, join);
            }
            ClientBody::Leave(leave) => return self.leave(reference, leave.room),
            ClientBody::Send(send) => {
                if let Err((code, why)) = self.check_text(&send.text) {
                    return self.refuse(reference, code, why);
                }
                if !self.rooms.contains_key(&send.room) {
                    return self.refuse(reference, ErrorCode::NotJoined, "join the room first");
                }
                if !self.bucket.take(Instant::now()) {
                    return self.refuse(reference, ErrorCode::RateLimited, "slow down");
                }
                CommandBody::Send(send)
            }
            ClientBody::Dm(dm) => {
                if let Err(e) = validate_user(&dm.to) {
                    return self.refuse(reference, ErrorCode::BadRequest, &format!("to: {e}"));
                }
                if let Err((code, why)) = self.check_text(&dm.text) {
                    return self.refuse(reference, code, why);
                }
                if !self.bucket.take(Instant::now()) {
                    return self.refuse(reference, ErrorCode::RateLimited, "slow down");
                }
                CommandBody::Dm(dm)
            }
            ClientBody::Typing(t) => {
                if !self.rooms.contains_key(&t.room) {
                    return self.refuse(reference, ErrorCode::NotJoined, "join the room first");
                }
                if !self.bucket.take(Instant::now()) {
                    return self.refuse(reference, ErrorCode::RateLimited, "slow down");
                }
                CommandBody::Typing(t)
            }
            ClientBody::History(h) => CommandBody::History(h),
            ClientBody::Presence(p) => CommandBody::Presence(p),
            ClientBody::Moderate(m) => CommandBody::Moderate(m),
        };
        self.forward(reference, body, None);
    }

    fn check_text(&self, text: &str) -> Result<(), (ErrorCode, &'static str)> {
        if text.is_empty() {
            return Err((ErrorCode::BadRequest, "text is empty"));
        }
        if text.len() > self.gw.settings.gateway.max_text_bytes {
            return Err((ErrorCode::TooLarge, "text is longer than max_text_bytes"));
        }
        Ok(())
    }

    fn refuse(&mut self, reference: Option<String>, code: ErrorCode, why: &str) {
        self.push(&ServerFrame::error(reference, code, why));
    }

    fn join(&mut self, reference: Option<String>, join: proto::client::Join) {
        let room = join.room.clone();
        let last_seq = match self.rooms.get(&room) {
            Some(RoomState::Joined { last_seq }) | Some(RoomState::Joining { last_seq, .. }) => {
                *last_seq
            }
            None => 0,
        };
        self.rooms.insert(
            room.clone(),
            RoomState::Joining {
                held: Vec::new(),
                last_seq,
            },
        );
        // Registered before the join goes out: events from now on are held, none lost.
        self.gw
            .index
            .join(&room, &self.session, self.handle.clone());
        self.forward(reference, CommandBody::Join(join), Some(room));
    }

    fn leave(&mut self, reference: Option<String>, room: String) {
        let was_member = self.rooms.remove(&room).is_some();
        if was_member {
            self.gw.index.leave(&room, &self.session);
        }
        let broker = self.gw.broker.clone();
        let release = room.clone();
        self.inflight.push(Box::pin(async move {
            if was_member {
                broker.release(BindKey::Room(release)).await;
            }
            Done::Accepted
        }));
        self.forward(
            reference,
            CommandBody::Leave(proto::client::RoomOnly { room }),
            None,
        );
    }

    fn command_for(&self, reference: Option<String>, body: CommandBody) -> Command {
        Command {
            v: proto::BODY_VERSION,
            body,
            actor: Actor {
                id: self.claims.sub.clone(),
                name: self.name.clone(),
                roles: self.claims.roles.clone(),
                bot: false,
            },
            reference,
            conn: Some(ConnRef {
                gateway: self.gw.id.clone(),
                session: self.session.to_string(),
            }),
        }
    }

    /// Publishes a command in the background; its answer comes back as a reply.
    fn forward(&mut self, reference: Option<String>, body: CommandBody, join_room: Option<String>) {
        let command = self.command_for(reference.clone(), body);
        let correlation = uuid::Uuid::new_v4().simple().to_string();
        if let Some(room) = &join_room {
            self.pending_joins.insert(correlation.clone(), room.clone());
        }
        let broker = self.gw.broker.clone();
        self.inflight.push(Box::pin(async move {
            let bound = match &join_room {
                Some(room) => broker.ensure(BindKey::Room(room.clone())).await,
                None => Ok(()),
            };
            let published = match bound {
                Ok(()) => broker.publish(&command, &correlation).await,
                Err(e) => Err(e),
            };
            match published {
                Ok(()) => Done::Accepted,
                Err(_) => Done::Refused {
                    reference,
                    correlation,
                    join_room,
                },
            }
        }));
    }

    fn finished(&mut self, done: Done) {
        if let Done::Refused {
            reference,
            correlation,
            join_room,
        } = done
        {
            self.pending_joins.remove(&correlation);
            if let Some(room) = join_room {
                self.drop_room(&room);
            }
            self.refuse(
                reference,
                ErrorCode::Unavailable,
                "the broker is unavailable; retry",
            );
        }
    }

    /// Forgets a room locally (a refused join) and lets its binding follow.
    fn drop_room(&mut self, room: &str) {
        if self.rooms.remove(room).is_some() {
            self.gw.index.leave(room, &self.session);
            let broker = self.gw.broker.clone();
            let key = BindKey::Room(room.to_owned());
            self.inflight.push(Box::pin(async move {
                broker.release(key).await;
                Done::Accepted
            }));
        }
    }

    /// Something for this connection from the broker side.
    fn outbound(&mut self, out: Outbound) {
        match out {
            Outbound::Event {
                room,
                text,
                kicked: true,
                ..
            } => {
                // Removed from the room by a moderator: stop delivering it, then say so.
                if self.rooms.contains_key(&*room) {
                    self.drop_room(&room);
                    self.batch.push(text.to_string());
                }
            }
            Outbound::Event {
                room,
                seq,
                text,
                via_user,
                ..
            } => match self.rooms.get_mut(&*room) {
                Some(RoomState::Joining { held, .. }) => {
                    if held.len() >= self.gw.settings.gateway.outbound_queue {
                        self.handle.slow.cancel();
                    } else {
                        held.push((seq, text));
                    }
                }
                Some(RoomState::Joined { last_seq }) => {
                    self.batch
                        .extend(admit(last_seq, seq).then(|| text.to_string()));
                }
                None if via_user => self.batch.push(text.to_string()),
                None => {}
            },
            Outbound::Reply { correlation, frame } => {
                let join_room = correlation.and_then(|c| self.pending_joins.remove(&c));
                match (join_room, &frame.body) {
                    (Some(room), ServerBody::Joined(joined)) => {
                        let latest = joined.seq;
                        self.push(&frame);
                        match self.rooms.remove(&room) {
                            Some(RoomState::Joining { held, .. }) => {
                                let mut last_seq = latest;
                                for (seq, text) in held {
                                    if admit(&mut last_seq, seq) {
                                        self.batch.push(text.to_string());
                                    }
                                }
                                self.rooms.insert(room, RoomState::Joined { last_seq });
                            }
                            // A second answer to a repeated join: the filter stands.
                            Some(joined) => {
                                self.rooms.insert(room, joined);
                            }
                            // Left before the answer came.
                            None => {}
                        }
                    }
                    (Some(room), ServerBody::Error(_)) => {
                        self.drop_room(&room);
                        self.push(&frame);
                    }
                    _ => self.push(&frame),
                }
            }
        }
    }

    /// Leaves every room (locally and at the dispatcher) and forgets the connection.
    async fn cleanup(mut self) {
        let gw = self.gw.clone();
        let rooms: Vec<String> = self.rooms.drain().map(|(room, _)| room).collect();
        for room in &rooms {
            gw.index.leave(room, &self.session);
        }
        gw.index.remove_session(&self.session, &self.claims.sub);
        for room in &rooms {
            gw.broker.release(BindKey::Room(room.clone())).await;
        }
        gw.broker
            .release(BindKey::User(self.claims.sub.clone()))
            .await;
        // Tell the dispatchers, so presence does not keep a ghost; in the background,
        // tracked, so shutdown waits for it.
        let leaves: Vec<Command> = rooms
            .into_iter()
            .map(|room| {
                self.command_for(None, CommandBody::Leave(proto::client::RoomOnly { room }))
            })
            .collect();
        if !leaves.is_empty() {
            let broker = gw.broker.clone();
            gw.tracker.spawn(async move {
                for command in leaves {
                    let correlation = uuid::Uuid::new_v4().simple().to_string();
                    if broker.publish(&command, &correlation).await.is_err() {
                        tracing::debug!("leave after close not published; presence will expire");
                    }
                }
            });
        }
    }
}

/// The seq filter: an event with a seq passes only if it is newer than the last one.
fn admit(last_seq: &mut u64, seq: Option<u64>) -> bool {
    match seq {
        Some(s) if s <= *last_seq => false,
        Some(s) => {
            *last_seq = s;
            true
        }
        None => true,
    }
}

async fn write_batch(sink: &mut Sink, batch: &mut Vec<String>) -> bool {
    for text in batch.drain(..) {
        if sink.feed(Message::text(text)).await.is_err() {
            return false;
        }
    }
    sink.flush().await.is_ok()
}

fn read_error(e: &warp::Error) -> Ending {
    use std::error::Error as _;
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e.source().and_then(|s| s.downcast_ref::<WsError>()) {
        Some(WsError::Capacity(_)) => Ending {
            code: Some(close::TOO_BIG),
            reason: "frame larger than max_frame_bytes",
        },
        Some(WsError::Utf8(_)) => Ending {
            code: Some(1007),
            reason: "invalid UTF-8",
        },
        Some(WsError::Protocol(_)) => Ending {
            code: Some(1002),
            reason: "protocol error",
        },
        _ => Ending {
            code: None,
            reason: "read failed",
        },
    }
}

fn token_deadline(claims: &Claims, leeway_s: u64) -> tokio::time::Instant {
    let now_s = common::now_ms() / 1000;
    let left = (claims.exp + leeway_s.min(60)).saturating_sub(now_s);
    tokio::time::Instant::now() + Duration::from_secs(left)
}

#[cfg(test)]
mod tests {
    use super::admit;

    #[test]
    fn seq_filter_drops_old_and_duplicate_messages() {
        let mut last = 5;
        assert!(!admit(&mut last, Some(5)));
        assert!(!admit(&mut last, Some(3)));
        assert!(admit(&mut last, Some(6)));
        assert!(!admit(&mut last, Some(6)));
        assert!(admit(&mut last, None));
        assert_eq!(last, 6);
    }
}
