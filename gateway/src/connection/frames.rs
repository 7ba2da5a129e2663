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

use proto::client::{ClientBody, ClientFrame};
use proto::codes::{close, ErrorCode};
use proto::ids::{check_text, validate_message_id, validate_room, validate_user};
use proto::server::{ServerBody, ServerFrame};

use super::{Connection, Ending};
use crate::limits::Verdict;
use crate::metrics::Kind;
use crate::ws::{Incoming, ReadError};

use proto::codes::close::{INVALID_PAYLOAD, PROTOCOL_ERROR};

impl Connection {
    /// One message from the client. Returns an ending when the connection must close.
    pub(super) fn inbound(&mut self, msg: Incoming) -> Option<Ending> {
        self.last_heard = tokio::time::Instant::now();
        match msg {
            Incoming::Close(_) => return Some(Ending::close(close::NORMAL, "bye")),
            Incoming::Binary => {
                return Some(Ending::close(
                    close::UNSUPPORTED,
                    "binary frames are not supported",
                ))
            }
            _ => {}
        }
        match self.budget.charge(Instant::now()) {
            Verdict::Read => {}
            Verdict::Refuse => {
                self.gw.metrics.frames_refused.inc();
                if matches!(msg, Incoming::Text(_)) {
                    self.refuse(None, ErrorCode::RateLimited, "too many frames; slow down");
                }
                return None;
            }
            Verdict::Flood => {
                self.gw.metrics.frames_refused.inc();
                return Some(Ending::close(close::POLICY, "too many frames"));
            }
        }
        let text = match msg {
            Incoming::Text(text) => text,
            Incoming::Ping(payload) => {
                self.outlet.lock().batch.pong(&payload);
                return None;
            }
            // Pongs only prove liveness.
            _ => return None,
        };
        match ClientFrame::parse(&text) {
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
                // A type this gateway does not know is a newer client's, not a bad
                // frame: answered, never counted towards the 1008 close.
                let unknown = e.code == ErrorCode::UnknownType;
                self.push(&ServerFrame::error(e.reference, e.code, e.message));
                if unknown {
                    None
                } else {
                    self.strike()
                }
            }
        }
    }

    fn strike(&mut self) -> Option<Ending> {
        if self.strikes.strike(Instant::now()) {
            return Some(Ending::close(close::POLICY, "too many bad frames"));
        }
        None
    }

    /// A well-formed client frame: checks what the gateway can check alone, then
    /// forwards it as a command.
    fn command(&mut self, frame: ClientFrame) {
        let reference = frame.reference.clone();
        if let Err(why) = check_ids(&frame) {
            return self.refuse(reference, ErrorCode::BadRequest, &why);
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
                let full = {
                    let out = self.outlet.lock();
                    !out.rooms.contains_key(&join.room) && out.rooms.len() >= max
                };
                if full {
                    return self.refuse(
                        reference,
                        ErrorCode::Forbidden,
                        "room limit reached for this connection",
                    );
                }
                return self.join(reference, join);
            }
            ClientBody::Leave(leave) => return self.leave(reference, leave.room),
            ClientBody::Send(_) | ClientBody::Dm(_) if reference.as_deref() == Some("") => {
                // An empty `ref` would make every later send a duplicate for 10 minutes.
                return self.refuse(reference, ErrorCode::BadRequest, "ref must not be empty");
            }
            ClientBody::Send(send) => {
                if let Err((code, why)) = self.check_text(&send.text) {
                    return self.refuse(reference, code, why);
                }
                if !self.in_room(&send.room) {
                    return self.refuse(reference, ErrorCode::NotJoined, "join the room first");
                }
                if !self.bucket.take(Instant::now()) {
                    return self.refuse(reference, ErrorCode::RateLimited, "slow down");
                }
                proto::amqp::CommandBody::Send(send)
            }
            ClientBody::Dm(dm) => {
                if let Err((code, why)) = self.check_text(&dm.text) {
                    return self.refuse(reference, code, why);
                }
                if !self.bucket.take(Instant::now()) {
                    return self.refuse(reference, ErrorCode::RateLimited, "slow down");
                }
                proto::amqp::CommandBody::Dm(dm)
            }
            ClientBody::Typing(t) => {
                if !self.in_room(&t.room) {
                    return self.refuse(reference, ErrorCode::NotJoined, "join the room first");
                }
                if !self.bucket.take(Instant::now()) {
                    return self.refuse(reference, ErrorCode::RateLimited, "slow down");
                }
                proto::amqp::CommandBody::Typing(t)
            }
            ClientBody::History(h) => proto::amqp::CommandBody::History(h),
            ClientBody::Presence(p) => proto::amqp::CommandBody::Presence(p),
            ClientBody::Moderate(m) => proto::amqp::CommandBody::Moderate(m),
        };
        self.forward(reference, body, None);
    }

    fn check_text(&self, text: &str) -> Result<(), (ErrorCode, &'static str)> {
        check_text(text, self.gw.settings.gateway.max_text_bytes)
            .map_err(|e| (e.code(), e.message()))
    }

    pub(super) fn refuse(&mut self, reference: Option<String>, code: ErrorCode, why: &str) {
        self.push(&ServerFrame::error(reference, code, why));
    }
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
pub(super) fn read_error(e: ReadError) -> Ending {
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
