//! Frames a WebSocket client sends, and how the gateway reads them.
//!
//! [`ClientFrame::parse`] reads the `type` and `ref` first so that a frame whose body
//! is wrong still gets an error that echoes its `ref`, and so that an unknown `type` is
//! told apart from a malformed known one.

use serde::{Deserialize, Serialize};

use crate::codes::ErrorCode;
use crate::ids::MAX_REF_LEN;

/// A client frame: the optional `ref` the answer echoes, and the typed body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientFrame {
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(flatten)]
    pub body: ClientBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientBody {
    Join(Join),
    Leave(RoomOnly),
    Send(Send),
    Dm(Dm),
    History(History),
    Presence(RoomOnly),
    Typing(RoomOnly),
    Moderate(Moderate),
    Ping(Empty),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomOnly {
    pub room: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    pub room: String,
    /// The last seq the client has seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// The epoch `since` belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Send {
    pub room: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dm {
    pub to: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub room: String,
    /// Exclusive upper bound on seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// The most messages one `history` answer carries.
pub const MAX_HISTORY_LIMIT: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModAction {
    Mute,
    Unmute,
    Kick,
    Ban,
    Unban,
    Delete,
    Grant,
    Revoke,
    /// Changes the room's settings (`Moderate::settings`): owners and admins.
    Configure,
}

/// Who may join a room: anyone (`public`), or only users given a role (`private`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    Public,
    Private,
}

/// A change to a room's settings (`moderate` with action `configure`): only the fields
/// given change. The `moderation` event of the change carries the same object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
    /// Only moderators and above may `send`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<bool>,
    /// How many messages the room keeps (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_limit: Option<u64>,
    /// How many messages a join that cannot recover gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_on_join: Option<u64>,
}

impl RoomSettings {
    /// Whether the change changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == RoomSettings::default()
    }
}

/// A role in a room, lowest first so that `Ord` is rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Member,
    Moderator,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Moderator => "moderator",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "member" => Some(Role::Member),
            "moderator" => Some(Role::Moderator),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moderate {
    pub room: String,
    pub action: ModAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `configure`: the settings to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<RoomSettings>,
}

/// Why a text frame could not be read as a client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    /// The frame's `ref`, when it could be read, so the error can echo it.
    pub reference: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type", default)]
    ty: Option<serde_json::Value>,
    #[serde(rename = "ref", default)]
    reference: Option<serde_json::Value>,
}

impl ClientBody {
    /// Every client frame `type`: what [`ClientFrame::parse`] tells apart from an
    /// unknown one.
    pub const TYPES: [&'static str; 9] = [
        "join", "leave", "send", "dm", "history", "presence", "typing", "moderate", "ping",
    ];

    /// The frame's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientBody::Join(_) => "join",
            ClientBody::Leave(_) => "leave",
            ClientBody::Send(_) => "send",
            ClientBody::Dm(_) => "dm",
            ClientBody::History(_) => "history",
            ClientBody::Presence(_) => "presence",
            ClientBody::Typing(_) => "typing",
            ClientBody::Moderate(_) => "moderate",
            ClientBody::Ping(_) => "ping",
        }
    }
}

impl ClientFrame {
    /// Reads one text frame. Unknown fields are ignored; a missing or mistyped field is
    /// `bad_request`, a `type` that is not in the protocol is `unknown_type`.
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        let bad = |message: String, reference: Option<String>| FrameError {
            code: ErrorCode::BadRequest,
            message,
            reference,
        };
        let env: Envelope =
            serde_json::from_str(text).map_err(|e| bad(format!("not a JSON object: {e}"), None))?;
        let reference = match env.reference {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(r)) if r.len() <= MAX_REF_LEN => Some(r),
            Some(serde_json::Value::String(_)) => {
                return Err(bad("ref is longer than 64 bytes".into(), None))
            }
            Some(_) => return Err(bad("ref must be a string".into(), None)),
        };
        let ty = match env.ty {
            Some(serde_json::Value::String(t)) => t,
            _ => return Err(bad("missing type".into(), reference)),
        };
        if !ClientBody::TYPES.contains(&ty.as_str()) {
            return Err(FrameError {
                code: ErrorCode::UnknownType,
                message: format!("unknown type {ty:?}"),
                reference,
            });
        }
        serde_json::from_str::<ClientFrame>(text).map_err(|e| bad(e.to_string(), reference))
    }

    /// The room a frame is about, when it names one.
    pub fn room(&self) -> Option<&str> {
        match &self.body {
            ClientBody::Join(j) => Some(&j.room),
            ClientBody::Leave(r) | ClientBody::Presence(r) | ClientBody::Typing(r) => Some(&r.room),
            ClientBody::Send(s) => Some(&s.room),
            ClientBody::History(h) => Some(&h.room),
            ClientBody::Moderate(m) => Some(&m.room),
            ClientBody::Dm(_) | ClientBody::Ping(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_client_type() {
        let cases = [
            r#"{"type":"join","room":"general","since":4,"epoch":"e1","ref":"r1"}"#,
            r#"{"type":"leave","room":"general"}"#,
            r#"{"type":"send","room":"general","text":"hi","ref":"r2"}"#,
            r#"{"type":"dm","to":"bob","text":"psst","ref":"r3"}"#,
            r#"{"type":"history","room":"general","before":10,"limit":20}"#,
            r#"{"type":"presence","room":"general"}"#,
            r#"{"type":"typing","room":"general"}"#,
            r#"{"type":"moderate","room":"general","action":"mute","user":"bob","duration_s":60,"reason":"spam"}"#,
            r#"{"type":"moderate","room":"general","action":"grant","user":"bob","role":"moderator"}"#,
            r#"{"type":"moderate","room":"general","action":"configure","settings":{"visibility":"private","announce":true,"history_limit":200}}"#,
            r#"{"type":"ping"}"#,
        ];
        let mut seen: Vec<&str> = Vec::new();
        for text in cases {
            let frame = ClientFrame::parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            seen.push(frame.body.type_name());
            assert!(ClientBody::TYPES.contains(&frame.body.type_name()));
            assert!(text.contains(&format!(r#""type":"{}""#, frame.body.type_name())));
            // Round trip: what we serialise parses back to the same frame.
            let again = ClientFrame::parse(&serde_json::to_string(&frame).unwrap()).unwrap();
            assert_eq!(frame, again);
        }
        seen.dedup();
        assert_eq!(seen, ClientBody::TYPES, "a client frame type is left out");
    }

    #[test]
    fn join_carries_since_epoch_and_ref() {
        let f = ClientFrame::parse(r#"{"type":"join","room":"r","since":4,"epoch":"e","ref":"x"}"#)
            .unwrap();
        assert_eq!(f.reference.as_deref(), Some("x"));
        assert_eq!(
            f.body,
            ClientBody::Join(Join {
                room: "r".into(),
                since: Some(4),
                epoch: Some("e".into())
            })
        );
        assert_eq!(f.room(), Some("r"));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let f =
            ClientFrame::parse(r#"{"type":"send","room":"r","text":"t","from":"mallory","x":[1]}"#)
                .unwrap();
        assert_eq!(
            f.body,
            ClientBody::Send(Send {
                room: "r".into(),
                text: "t".into()
            })
        );
    }

    #[test]
    fn unknown_type_is_told_apart_and_keeps_ref() {
        let e = ClientFrame::parse(r#"{"type":"explode","ref":"r9"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownType);
        assert_eq!(e.reference.as_deref(), Some("r9"));
    }

    #[test]
    fn malformed_frames_are_bad_requests() {
        for text in [
            "not json",
            "[1,2]",
            "{}",
            r#"{"type":7}"#,
            r#"{"type":"send","room":"r"}"#,
            r#"{"type":"send","room":"r","text":5}"#,
            r#"{"type":"join","room":"r","since":-1}"#,
            r#"{"type":"moderate","room":"r","action":"nuke","user":"u"}"#,
            r#"{"type":"ping","ref":5}"#,
        ] {
            let e = ClientFrame::parse(text).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{text}");
        }
        let e = ClientFrame::parse(r#"{"type":"send","room":"r","ref":"k"}"#).unwrap_err();
        assert_eq!(e.reference.as_deref(), Some("k"));
    }

    #[test]
    fn long_refs_are_refused() {
        let text = format!(r#"{{"type":"ping","ref":"{}"}}"#, "r".repeat(65));
        assert_eq!(
            ClientFrame::parse(&text).unwrap_err().code,
            ErrorCode::BadRequest
        );
        let text = format!(r#"{{"type":"ping","ref":"{}"}}"#, "r".repeat(64));
        assert!(ClientFrame::parse(&text).is_ok());
    }

    #[test]
    fn roles_order_by_rank() {
        assert!(Role::Owner > Role::Moderator && Role::Moderator > Role::Member);
        assert_eq!(Role::parse("moderator"), Some(Role::Moderator));
        assert_eq!(Role::parse(Role::Owner.as_str()), Some(Role::Owner));
        assert_eq!(Role::parse("admin"), None);
    }
}
