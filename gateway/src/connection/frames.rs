//! What the client sends, checked in the order that costs the server least:
//! 1. the WebSocket layer ([`crate::ws`]) has already refused messages over
//!    `max_frame_bytes`, before or after decompression (1009), protocol violations
//!    such as a compressed frame nobody negotiated (1002), and invalid UTF-8 or
//!    compressed data that does not inflate (1007): [`read_error`] turns its error into
//!    the close code;
//! 2. a close frame ends the connection (1000), a binary frame too (1003);
//! 3. every other frame — text, ping, pong — is charged to the frame budget
//!    ([`crate::limits::FrameBudget`]): over it the frame is not even parsed (a text
//!    frame gets `rate_limited`, without `ref` since it was not read), and a sustained
//!    flood closes the connection (1008);
//! 4. a text frame is parsed; an unreadable one is `bad_request` or `unknown_type` and
//!    a strike, three strikes within 10 s close the connection (1008);
//! 5. ids (rooms, users, message ids) are validated before anything is forwarded, so
//!    none can reach a routing key or a Redis key with `.`, `*`, `#` or `:` in it.

use std::time::Instant;

use common::settings::GatewaySettings;
use proto::client::{ClientBody, ClientFrame};
use proto::codes::{close, ErrorCode};
use proto::ids::{check_text, validate_message_id, validate_room, validate_user};
use proto::server::{ServerBody, ServerFrame};

use super::action::{Action, Ending};
use super::outlet::Outlet;
use crate::limits::{FrameBudget, Strikes, TokenBucket, Verdict};
use crate::metrics::{GatewayMetrics, Kind};
use crate::ws::{Incoming, ReadError};

use proto::codes::close::{INVALID_PAYLOAD, PROTOCOL_ERROR};

/// The checks on what one client sends, with what they remember: its budgets and
/// strikes. Each frame becomes an [`Action`] for the connection's loop.
pub(crate) struct InboundChecks {
    /// `send`, `dm` and `typing`.
    bucket: TokenBucket,
    /// Every inbound frame.
    budget: FrameBudget,
    strikes: Strikes,
    max_text_bytes: usize,
    max_rooms: usize,
}

impl InboundChecks {
    pub(crate) fn new(g: &GatewaySettings) -> Self {
        InboundChecks {
            bucket: TokenBucket::new(g.sends_per_sec, g.burst),
            budget: FrameBudget::for_gateway(g),
            strikes: Strikes::default(),
            max_text_bytes: g.max_text_bytes,
            max_rooms: g.max_rooms_per_connection,
        }
    }

    /// One message from the client. `outlet` says which rooms the connection is in.
    pub(crate) fn inbound(
        &mut self,
        msg: Incoming,
        outlet: &Outlet,
        metrics: &GatewayMetrics,
    ) -> Action {
        match msg {
            Incoming::Close(_) => return Action::Close(Ending::close(close::NORMAL, "bye")),
            Incoming::Binary => {
                return Action::Close(Ending::close(
                    close::UNSUPPORTED,
                    "binary frames are not supported",
                ))
            }
            _ => {}
        }
        match self.budget.charge(Instant::now()) {
            Verdict::Read => {}
            Verdict::Refuse => {
                metrics.frames_refused.inc();
                if matches!(msg, Incoming::Text(_)) {
                    return refuse(None, ErrorCode::RateLimited, "too many frames; slow down");
                }
                return Action::Nothing;
            }
            Verdict::Flood => {
                metrics.frames_refused.inc();
                return Action::Close(Ending::close(close::POLICY, "too many frames"));
            }
        }
        let text = match msg {
            Incoming::Text(text) => text,
            Incoming::Ping(payload) => return Action::Pong(payload),
            // Pongs only prove liveness.
            _ => return Action::Nothing,
        };
        match ClientFrame::parse(&text) {
            Ok(frame) => {
                let kind = Kind::of(frame.body.type_name());
                metrics.frames_in.get_or_create(&kind).inc();
                self.command(frame, outlet)
            }
            Err(e) => {
                metrics.frames_in.get_or_create(&Kind::of("invalid")).inc();
                // A type this gateway does not know is a newer client's, not a bad
                // frame: answered, never counted towards the 1008 close.
                let unknown = e.code == ErrorCode::UnknownType;
                let answer = ServerFrame::error(e.reference, e.code, e.message);
                if !unknown && self.strikes.strike(Instant::now()) {
                    let ending = Ending::close(close::POLICY, "too many bad frames");
                    return Action::AnswerAndClose(answer, ending);
                }
                Action::Answer(answer)
            }
        }
    }

    /// A well-formed client frame: checks what the gateway can check alone, then says
    /// how to forward it as a command.
    fn command(&mut self, frame: ClientFrame, outlet: &Outlet) -> Action {
        let reference = frame.reference.clone();
        if let Err(why) = check_ids(&frame) {
            return refuse(reference, ErrorCode::BadRequest, &why);
        }
        let in_room = |room: &str| outlet.lock().rooms.contains(room);
        let body = match frame.body {
            ClientBody::Ping(_) => {
                return Action::Answer(ServerFrame::answer(
                    reference,
                    ServerBody::Pong(Default::default()),
                ));
            }
            ClientBody::Join(join) => {
                if outlet.lock().rooms.full_for(&join.room, self.max_rooms) {
                    return refuse(
                        reference,
                        ErrorCode::Forbidden,
                        "room limit reached for this connection",
                    );
                }
                return Action::Join(reference, join);
            }
            ClientBody::Leave(leave) => return Action::Leave(reference, leave.room),
            ClientBody::Send(_) | ClientBody::Dm(_) if reference.as_deref() == Some("") => {
                // An empty `ref` would make every later send a duplicate for 10 minutes.
                return refuse(reference, ErrorCode::BadRequest, "ref must not be empty");
            }
            ClientBody::Send(send) => {
                if let Err((code, why)) = self.check_text(&send.text) {
                    return refuse(reference, code, why);
                }
                if !in_room(&send.room) {
                    return refuse(reference, ErrorCode::NotJoined, "join the room first");
                }
                if !self.bucket.take(Instant::now()) {
                    return refuse(reference, ErrorCode::RateLimited, "slow down");
                }
                proto::amqp::CommandBody::Send(send)
            }
            ClientBody::Dm(dm) => {
                if let Err((code, why)) = self.check_text(&dm.text) {
                    return refuse(reference, code, why);
                }
                if !self.bucket.take(Instant::now()) {
                    return refuse(reference, ErrorCode::RateLimited, "slow down");
                }
                proto::amqp::CommandBody::Dm(dm)
            }
            ClientBody::Typing(t) => {
                if !in_room(&t.room) {
                    return refuse(reference, ErrorCode::NotJoined, "join the room first");
                }
                if !self.bucket.take(Instant::now()) {
                    return refuse(reference, ErrorCode::RateLimited, "slow down");
                }
                proto::amqp::CommandBody::Typing(t)
            }
            ClientBody::History(h) => proto::amqp::CommandBody::History(h),
            ClientBody::Presence(p) => proto::amqp::CommandBody::Presence(p),
            ClientBody::Moderate(m) => proto::amqp::CommandBody::Moderate(m),
        };
        Action::Forward(reference, body)
    }

    fn check_text(&self, text: &str) -> Result<(), (ErrorCode, &'static str)> {
        check_text(text, self.max_text_bytes).map_err(|e| (e.code(), e.message()))
    }
}

/// An error answer with the frame's `ref`.
fn refuse(reference: Option<String>, code: ErrorCode, why: &str) -> Action {
    Action::Answer(ServerFrame::error(reference, code, why))
}

/// Every id a frame carries, checked against its alphabet before it can become part of
/// a routing key (`room.<room>.#`, `user.<user>.#`) or a Redis key.
fn check_ids(frame: &ClientFrame) -> Result<(), String> {
    if let Some(room) = frame.room() {
        validate_room(room).map_err(|e| format!("room: {e}"))?;
    }
    match &frame.body {
        ClientBody::Dm(dm) => validate_user(&dm.to).map_err(|e| format!("to: {e}"))?,
        ClientBody::Moderate(m) => {
            if let Some(user) = &m.user {
                validate_user(user).map_err(|e| format!("user: {e}"))?;
            }
            if let Some(id) = &m.msg_id {
                validate_message_id(id).map_err(|_| "msg_id: not a message id".to_owned())?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The close code for an error the WebSocket layer reported while reading.
pub(crate) fn read_error(e: ReadError) -> Ending {
    match e {
        ReadError::TooBig => Ending::close(close::TOO_BIG, "message larger than max_frame_bytes"),
        ReadError::Invalid(why) => Ending::close(INVALID_PAYLOAD, why),
        ReadError::Protocol(why) => Ending::close(PROTOCOL_ERROR, why),
        ReadError::Gone(_) => Ending::gone("client went away"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ClientFrame {
        ClientFrame::parse(text).expect("a valid frame")
    }

    #[test]
    fn ids_that_would_break_a_key_are_refused() {
        for room in ["a.b", "a*", "#", "a:b", "room.#", "dm:a:a"] {
            let frame = format!(r#"{{"type":"join","room":"{room}"}}"#);
            assert!(check_ids(&parse(&frame)).is_err(), "{room}");
        }
        for user in ["a.b", "a*", "#", "a:b"] {
            let dm = format!(r#"{{"type":"dm","to":"{user}","text":"x"}}"#);
            assert!(check_ids(&parse(&dm)).is_err(), "dm to {user}");
            let m = format!(r#"{{"type":"moderate","room":"r","action":"kick","user":"{user}"}}"#);
            assert!(check_ids(&parse(&m)).is_err(), "kick {user}");
        }
        let bad_id = r#"{"type":"moderate","room":"r","action":"delete","msg_id":"x:*"}"#;
        assert!(check_ids(&parse(bad_id)).is_err());
    }

    #[test]
    fn plain_ids_pass() {
        for frame in [
            r#"{"type":"join","room":"general"}"#,
            r#"{"type":"join","room":"dm:alice:bob"}"#,
            r#"{"type":"dm","to":"Bob_2","text":"x"}"#,
            r#"{"type":"moderate","room":"r","action":"kick","user":"bob"}"#,
            r#"{"type":"moderate","room":"r","action":"delete","msg_id":"0190f0f0-0000-7000-8000-000000000000"}"#,
            r#"{"type":"ping"}"#,
        ] {
            assert_eq!(check_ids(&parse(frame)), Ok(()), "{frame}");
        }
    }
}
