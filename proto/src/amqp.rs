//! What travels through RabbitMQ: names, routing keys and JSON bodies.
//!
//! Every body is JSON with `"v": 1` and a `kind`; publishers set the AMQP `type`
//! property to the same `kind`. Three families:
//! - [`Command`]: gateway or bot → `<prefix>.commands`, routed by `shard.<n>`.
//! - [`Event`]: dispatcher → `<prefix>.events`, transient, routed by `room.<room>.<kind>`
//!   or `user.<user>.<kind>` (a user event's `CC` header names the gateways holding the
//!   user, [`gateway_key`]); its fields are the client frame it becomes. A `message`
//!   answering a gateway connection's `send`/`dm` carries that connection's `ack`
//!   ([`ACK_SESSION_HEADER`], [`ACK_REF_HEADER`]).
//! - [`Reply`]: dispatcher → one gateway's queue (the command's `reply_to`), the answer
//!   to one connection (`joined`, `error`, the `ack` of other commands, ...), with the
//!   body PROTOCOL.md revision 2 gives it.

use serde::{Deserialize, Serialize};

use crate::client::{Dm, History, Join, Moderate, RoomOnly, Send};
use crate::ids::{dm_room, room_from_key, room_in_key};
use crate::server::{
    Kicked, MemberEvent, Message, ModerationEvent, ServerBody, ServerFrame, TypingEvent,
};

/// AMQP object names under a deployment prefix (default `warren`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: impl Into<String>) -> Self {
        Names {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The direct exchange commands are published to.
    pub fn commands_exchange(&self) -> String {
        format!("{}.commands", self.prefix)
    }

    /// The durable, single-active-consumer queue of one shard.
    pub fn commands_queue(&self, shard: u32) -> String {
        format!("{}.commands.{shard}", self.prefix)
    }

    /// The topic exchange events are published to.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// One gateway's own queue.
    pub fn gateway_queue(&self, gateway: &str) -> String {
        format!("{}.gw.{gateway}", self.prefix)
    }

    /// A queue of bot `bot`, `<p>.bot.<bot>.<purpose>`: what a bot account's permissions
    /// let it declare and consume ([`crate::accounts::Permissions::bot`]).
    pub fn bot_queue(&self, bot: &str, purpose: &str) -> String {
        format!("{}.bot.{bot}.{purpose}", self.prefix)
    }

    /// The dead-letter fanout exchange and its durable queue share this name.
    pub fn dead(&self) -> String {
        format!("{}.dead", self.prefix)
    }
}

/// The first word of a command's routing key, `shard.<n>`.
pub const SHARD: &str = "shard";
/// The first word of a room event's routing key, `room.<room>.<kind>`.
pub const ROOM: &str = "room";
/// The first word of a user event's routing key, `user.<user>.<kind>`.
pub const USER: &str = "user";
/// The first word of a gateway's own key, `gw.<gateway>`.
pub const GW: &str = "gw";
/// Every kind of routing key, by its first word.
pub const KEY_SCOPES: [&str; 4] = [SHARD, ROOM, USER, GW];

/// The routing key of shard `n` on the commands exchange.
pub fn shard_key(shard: u32) -> String {
    format!("{SHARD}.{shard}")
}

/// `room.<room>.<kind>`, with `dm:` rooms written `dm~a~b`.
pub fn room_key(room: &str, kind: &str) -> String {
    format!("{ROOM}.{}.{kind}", room_in_key(room))
}

/// The binding a gateway holds while one of its connections is in `room`.
pub fn room_binding(room: &str) -> String {
    room_key(room, "#")
}

/// `user.<user>.<kind>`.
pub fn user_key(user: &str, kind: &str) -> String {
    format!("{USER}.{user}.{kind}")
}

/// Every event addressed to `user`: what an observer binds to see one user's events.
pub fn user_binding(user: &str) -> String {
    user_key(user, "#")
}

/// `gw.<gateway>`: the one key a gateway binds its queue to for user-addressed events.
/// A dispatcher publishes a user event with routing key `user.<user>.<kind>` and lists
/// this key, for every gateway that holds the user, in the `CC` header (RabbitMQ's
/// sender-selected distribution), so no binding per user is needed.
pub fn gateway_key(gateway: &str) -> String {
    format!("{GW}.{gateway}")
}

/// The AMQP header with the extra routing keys of a publish (sender-selected
/// distribution): a queue bound to any of them, or to the routing key, gets one copy.
pub const CC_HEADER: &str = "CC";

/// On a `message` event that answers a `send` or `dm` from a gateway connection: the
/// session it answers, so that connection's gateway produces the `ack` from the event.
pub const ACK_SESSION_HEADER: &str = "x-warren-ack-session";

/// With [`ACK_SESSION_HEADER`]: the `ref` of the frame being acknowledged, when it had one.
pub const ACK_REF_HEADER: &str = "x-warren-ack-ref";

/// W3C Trace Context on commands, events and replies: `00-<trace id>-<parent span id>-<flags>`.
/// A gateway starts a trace per command; the dispatcher continues the command's trace
/// (or starts one for a command without it) on everything it publishes for it.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// W3C Trace Context's vendor entries, passed on from a command to its events unread.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// Whom an event's routing key addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Room(String),
    User(String),
}

/// Reads `room.<room>.<kind>` or `user.<user>.<kind>`.
pub fn parse_event_key(key: &str) -> Option<(Target, &str)> {
    let (scope, rest) = key.split_once('.')?;
    let (id, kind) = rest.split_once('.')?;
    let target = match scope {
        ROOM => Target::Room(room_from_key(id)),
        USER => Target::User(id.to_owned()),
        _ => return None,
    };
    Some((target, kind))
}

/// The global role that ranks above every room role (a token's `roles`, an admin bot's).
pub const ADMIN_ROLE: &str = "admin";

/// Who a command acts for. The dispatcher believes it only from a gateway account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub bot: bool,
}

impl Actor {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == ADMIN_ROLE)
    }
}

/// The connection a command came from, so that its answer finds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRef {
    pub gateway: String,
    pub session: String,
}

/// A command: a client frame's fields, plus who sent it and from where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub v: u8,
    #[serde(flatten)]
    pub body: CommandBody,
    pub actor: Actor,
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<ConnRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommandBody {
    Join(Join),
    Leave(RoomOnly),
    Send(Send),
    Dm(Dm),
    History(History),
    Presence(RoomOnly),
    Typing(RoomOnly),
    Moderate(Moderate),
}

impl CommandBody {
    pub fn kind(&self) -> &'static str {
        match self {
            CommandBody::Join(_) => "join",
            CommandBody::Leave(_) => "leave",
            CommandBody::Send(_) => "send",
            CommandBody::Dm(_) => "dm",
            CommandBody::History(_) => "history",
            CommandBody::Presence(_) => "presence",
            CommandBody::Typing(_) => "typing",
            CommandBody::Moderate(_) => "moderate",
        }
    }
}

impl Command {
    /// The room whose shard handles this command (`dm` goes to the dm room's shard).
    pub fn room(&self) -> String {
        match &self.body {
            CommandBody::Join(j) => j.room.clone(),
            CommandBody::Leave(r) | CommandBody::Presence(r) | CommandBody::Typing(r) => {
                r.room.clone()
            }
            CommandBody::Send(s) => s.room.clone(),
            CommandBody::History(h) => h.room.clone(),
            CommandBody::Moderate(m) => m.room.clone(),
            CommandBody::Dm(d) => dm_room(&self.actor.id, &d.to),
        }
    }
}

/// An event published to the events exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub v: u8,
    #[serde(flatten)]
    pub body: EventBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    Message(Message),
    Member(MemberEvent),
    Typing(TypingEvent),
    Moderation(ModerationEvent),
    Kicked(Kicked),
}

impl EventBody {
    /// Every event kind: the last word of `room.<room>.<kind>` (a user event's kind is
    /// one of them too), each the `type` of the client frame the event becomes.
    pub const KINDS: [&'static str; 5] = ["message", "member", "typing", "moderation", "kicked"];

    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Message(_) => "message",
            EventBody::Member(_) => "member",
            EventBody::Typing(_) => "typing",
            EventBody::Moderation(_) => "moderation",
            EventBody::Kicked(_) => "kicked",
        }
    }

    pub fn room(&self) -> &str {
        match self {
            EventBody::Message(m) => &m.room,
            EventBody::Member(m) => &m.room,
            EventBody::Typing(t) => &t.room,
            EventBody::Moderation(m) => &m.room,
            EventBody::Kicked(k) => &k.room,
        }
    }

    /// The client frame this event becomes.
    pub fn into_frame(self) -> ServerFrame {
        ServerFrame::new(match self {
            EventBody::Message(m) => ServerBody::Message(m),
            EventBody::Member(m) => ServerBody::Member(m),
            EventBody::Typing(t) => ServerBody::Typing(t),
            EventBody::Moderation(m) => ServerBody::Moderation(m),
            EventBody::Kicked(k) => ServerBody::Kicked(k),
        })
    }
}

/// The answer to one connection, published to its gateway's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename = "reply")]
pub struct Reply {
    pub v: u8,
    /// The connection (`welcome.session`) the frame is for.
    pub session: String,
    pub frame: ServerFrame,
}

/// The `kind` of a [`Reply`] body and its AMQP `type`.
pub const REPLY_KIND: &str = "reply";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_the_prefix() {
        let n = Names::new("t1");
        assert_eq!(n.commands_exchange(), "t1.commands");
        assert_eq!(n.commands_queue(3), "t1.commands.3");
        assert_eq!(n.events_exchange(), "t1.events");
        assert_eq!(n.gateway_queue("gw-a"), "t1.gw.gw-a");
        assert_eq!(n.dead(), "t1.dead");
        assert_eq!(n.bot_queue("modbot", "events"), "t1.bot.modbot.events");
        assert_eq!(shard_key(2), "shard.2");
    }

    #[test]
    fn routing_keys_write_dm_rooms_with_tildes() {
        assert_eq!(room_key("general", "message"), "room.general.message");
        assert_eq!(room_key("dm:a:b", "message"), "room.dm~a~b.message");
        assert_eq!(room_binding("dm:a:b"), "room.dm~a~b.#");
        assert_eq!(user_key("bob", "kicked"), "user.bob.kicked");
        assert_eq!(user_binding("bob"), "user.bob.#");
        assert_eq!(gateway_key("gateway1"), "gw.gateway1");
        assert_eq!(
            parse_event_key("room.dm~a~b.message"),
            Some((Target::Room("dm:a:b".into()), "message"))
        );
        assert_eq!(
            parse_event_key("user.bob.message"),
            Some((Target::User("bob".into()), "message"))
        );
        assert_eq!(parse_event_key("shard.1"), None);
        assert_eq!(parse_event_key("nope"), None);
    }

    #[test]
    fn command_body_has_the_documented_shape() {
        let cmd = Command {
            v: 1,
            body: CommandBody::Send(Send {
                room: "general".into(),
                text: "hi".into(),
            }),
            actor: Actor {
                id: "alice".into(),
                name: "Alice".into(),
                roles: vec![],
                bot: false,
            },
            reference: Some("r1".into()),
            conn: Some(ConnRef {
                gateway: "g1".into(),
                session: "s1".into(),
            }),
        };
        let v = serde_json::to_value(&cmd).unwrap();
        assert_eq!(
            v,
            json!({"v":1,"kind":"send","room":"general","text":"hi",
                   "actor":{"id":"alice","name":"Alice","roles":[],"bot":false},
                   "ref":"r1","conn":{"gateway":"g1","session":"s1"}})
        );
        let back: Command = serde_json::from_value(v).unwrap();
        assert_eq!(back, cmd);
    }

    #[test]
    fn a_bot_command_needs_no_conn() {
        let cmd: Command = serde_json::from_str(
            r#"{"v":1,"kind":"send","room":"general","text":"pong","actor":{"id":"echo","name":"Echo"}}"#,
        )
        .unwrap();
        assert_eq!(cmd.conn, None);
        assert_eq!(cmd.room(), "general");
        assert_eq!(cmd.body.kind(), "send");
    }

    #[test]
    fn dm_commands_shard_on_the_dm_room() {
        let cmd: Command = serde_json::from_str(
            r#"{"v":1,"kind":"dm","to":"alice","text":"x","actor":{"id":"bob","name":"Bob"}}"#,
        )
        .unwrap();
        assert_eq!(cmd.room(), "dm:alice:bob");
    }

    #[test]
    fn event_body_is_the_frame_plus_v_and_kind() {
        let m = crate::server::tests::msg();
        let ev = Event {
            v: 1,
            body: EventBody::Message(m.clone()),
        };
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["kind"], "message");
        assert_eq!(v["v"], 1);
        assert_eq!(v["seq"], m.seq);
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back.body.into_frame().body, ServerBody::Message(m));
    }

    #[test]
    fn reply_is_tagged_reply() {
        let r = Reply {
            v: 1,
            session: "s".into(),
            frame: ServerFrame::answer(Some("p".into()), ServerBody::Pong(Default::default())),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({"kind":"reply","v":1,"session":"s","frame":{"type":"pong","ref":"p"}})
        );
        assert_eq!(serde_json::from_value::<Reply>(v).unwrap(), r);
    }
}
