//! Frames the server sends to a client.
//!
//! The payload structs are shared with [`crate::amqp`]: an event body on the broker is the
//! same struct as the client frame it becomes, tagged with `kind` instead of `type`.

use serde::{Deserialize, Serialize};

use crate::client::Role;
use crate::codes::ErrorCode;

/// A server frame: the `ref` of the client frame it answers, if any, and the body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerFrame {
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(flatten)]
    pub body: ServerBody,
}

impl ServerFrame {
    pub fn new(body: ServerBody) -> Self {
        ServerFrame {
            reference: None,
            body,
        }
    }

    pub fn answer(reference: Option<String>, body: ServerBody) -> Self {
        ServerFrame { reference, body }
    }

    pub fn error(reference: Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame {
            reference,
            body: ServerBody::Error(ErrorBody {
                code,
                message: message.into(),
            }),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialise")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerBody {
    Welcome(Welcome),
    Joined(Joined),
    Left(RoomRef),
    Message(Message),
    Ack(Ack),
    History(HistoryPage),
    Presence(Presence),
    Member(MemberEvent),
    Typing(TypingEvent),
    Moderation(ModerationEvent),
    Kicked(Kicked),
    Error(ErrorBody),
    Pong(Pong),
}

impl ServerBody {
    /// Every server frame `type`.
    pub const TYPES: [&'static str; 13] = [
        "welcome",
        "joined",
        "left",
        "message",
        "ack",
        "history",
        "presence",
        "member",
        "typing",
        "moderation",
        "kicked",
        "error",
        "pong",
    ];

    /// The frame's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerBody::Welcome(_) => "welcome",
            ServerBody::Joined(_) => "joined",
            ServerBody::Left(_) => "left",
            ServerBody::Message(_) => "message",
            ServerBody::Ack(_) => "ack",
            ServerBody::History(_) => "history",
            ServerBody::Presence(_) => "presence",
            ServerBody::Member(_) => "member",
            ServerBody::Typing(_) => "typing",
            ServerBody::Moderation(_) => "moderation",
            ServerBody::Kicked(_) => "kicked",
            ServerBody::Error(_) => "error",
            ServerBody::Pong(_) => "pong",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRef {
    pub room: String,
}

/// A user as other users see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    pub id: String,
    pub name: String,
}

/// The author of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Author {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub bot: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_text_bytes: usize,
    pub max_frame_bytes: usize,
    pub sends_per_sec: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub user: UserRef,
    pub session: String,
    pub gateway: String,
    pub limits: Limits,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub room: String,
    pub id: String,
    pub seq: u64,
    pub epoch: String,
    pub from: Author,
    pub text: String,
    /// Unix milliseconds, set by the dispatcher.
    pub ts: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    pub room: String,
    pub epoch: String,
    /// The room's latest seq, 0 when it has no messages.
    pub seq: u64,
    pub history: Vec<Message>,
    pub recovered: bool,
    /// Every present user; in a room above `presence.max_event_members`, a sample (the
    /// joiner always in it) and [`Joined::members_total`] says how many there are.
    pub members: Vec<UserRef>,
    /// Present only when `members` is a sample: the room's present sessions. (A Warren
    /// addition: reading every member on every join of a large room is N² work.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members_total: Option<u64>,
    pub role: Role,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub room: String,
    pub messages: Vec<Message>,
    /// False when older messages exist.
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub room: String,
    pub members: Vec<UserRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberChange {
    Joined,
    Left,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEvent {
    pub room: String,
    pub event: MemberChange,
    pub user: UserRef,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingEvent {
    pub room: String,
    pub user: UserRef,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModerationEvent {
    pub room: String,
    pub action: crate::client::ModAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    pub by: UserRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `configure`: the settings that changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<crate::client::RoomSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kicked {
    pub room: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A message of room `general`, for this crate's tests.
    pub(crate) fn msg() -> Message {
        Message {
            room: "general".into(),
            id: "0190f0f0-0000-7000-8000-000000000000".into(),
            seq: 3,
            epoch: "e1".into(),
            from: Author {
                id: "alice".into(),
                name: "Alice".into(),
                bot: false,
            },
            text: "hi".into(),
            ts: 1_700_000_000_000,
        }
    }

    #[test]
    fn message_frame_has_the_documented_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&ServerFrame::new(ServerBody::Message(msg())).to_json()).unwrap();
        assert_eq!(
            v,
            json!({"type":"message","room":"general","id":"0190f0f0-0000-7000-8000-000000000000",
                   "seq":3,"epoch":"e1","from":{"id":"alice","name":"Alice","bot":false},
                   "text":"hi","ts":1_700_000_000_000u64})
        );
    }

    #[test]
    fn answers_echo_ref_and_errors_carry_codes() {
        let f = ServerFrame::error(Some("r1".into()), ErrorCode::NotJoined, "join first");
        let v: serde_json::Value = serde_json::from_str(&f.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"type":"error","ref":"r1","code":"not_joined","message":"join first"})
        );
        let ack = ServerFrame::answer(
            Some("r2".into()),
            ServerBody::Ack(Ack {
                room: Some("general".into()),
                id: Some("x".into()),
                seq: Some(9),
            }),
        );
        let v: serde_json::Value = serde_json::from_str(&ack.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"type":"ack","ref":"r2","room":"general","id":"x","seq":9})
        );
        let pong = ServerFrame::answer(Some("p".into()), ServerBody::Pong(Pong {}));
        assert_eq!(pong.to_json(), r#"{"ref":"p","type":"pong"}"#);
    }

    #[test]
    fn every_server_frame_round_trips() {
        let user = UserRef {
            id: "bob".into(),
            name: "Bob".into(),
        };
        let bodies = vec![
            ServerBody::Welcome(Welcome {
                user: user.clone(),
                session: "s".into(),
                gateway: "g".into(),
                limits: Limits {
                    max_text_bytes: 1,
                    max_frame_bytes: 2,
                    sends_per_sec: 3,
                    burst: 4,
                },
            }),
            ServerBody::Joined(Joined {
                room: "r".into(),
                epoch: "e".into(),
                seq: 3,
                history: vec![msg()],
                recovered: true,
                members: vec![user.clone()],
                members_total: None,
                role: Role::Owner,
            }),
            ServerBody::Left(RoomRef { room: "r".into() }),
            ServerBody::Message(msg()),
            ServerBody::Ack(Ack::default()),
            ServerBody::History(HistoryPage {
                room: "r".into(),
                messages: vec![msg()],
                complete: false,
            }),
            ServerBody::Presence(Presence {
                room: "r".into(),
                members: vec![user.clone()],
            }),
            ServerBody::Member(MemberEvent {
                room: "r".into(),
                event: MemberChange::Left,
                user: user.clone(),
            }),
            ServerBody::Typing(TypingEvent {
                room: "r".into(),
                user: user.clone(),
            }),
            ServerBody::Moderation(ModerationEvent {
                room: "r".into(),
                action: crate::client::ModAction::Mute,
                user: Some(user.clone()),
                msg_id: None,
                by: user.clone(),
                until: Some(5),
                role: None,
                reason: Some("spam".into()),
                settings: None,
            }),
            ServerBody::Kicked(Kicked {
                room: "r".into(),
                reason: "banned".into(),
            }),
            ServerBody::Error(ErrorBody {
                code: ErrorCode::Muted,
                message: "m".into(),
            }),
            ServerBody::Pong(Pong {}),
        ];
        let types: Vec<&str> = bodies.iter().map(ServerBody::type_name).collect();
        assert_eq!(types, ServerBody::TYPES, "a server frame type is left out");
        for body in bodies {
            let json = serde_json::to_value(ServerFrame::new(body.clone())).unwrap();
            assert_eq!(json["type"], body.type_name());
            let frame = ServerFrame::answer(Some("x".into()), body);
            let back: ServerFrame = serde_json::from_str(&frame.to_json()).unwrap();
            assert_eq!(back, frame);
        }
    }
}
