//! From a delivery's body and `user_id` to a command the dispatcher can act on.
//!
//! RabbitMQ checks the `user_id` property against the publishing connection's login, so
//! it is the one thing about a command nobody can forge. A gateway account speaks for the
//! users it authenticated, so its `actor` is believed; any other account is a bot acting
//! as itself, whatever its body claims, with the global `admin` role only when its login
//! is in `dispatcher.admin_bots` (the admin CLI's account). What cannot be read, or comes
//! without a `user_id`, is rejected: the caller dead-letters it instead of retrying it
//! forever.

use proto::amqp::{Actor, Command, ADMIN_ROLE};
use proto::ids::{shard_of, validate_user, MAX_REF_LEN};
use proto::BODY_VERSION;

/// The longest AMQP `message_id` used as a dedup key.
pub const MAX_MESSAGE_ID_LEN: usize = 128;

/// The delivery's `message_id` when it can serve as a dedup key (inside a Redis key):
/// 1..=128 printable ASCII characters, no spaces. Anything else means no dedup.
pub fn dedup_id(message_id: Option<&str>) -> Option<&str> {
    message_id.filter(|id| {
        !id.is_empty() && id.len() <= MAX_MESSAGE_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
    })
}

/// Why a delivery is dead-lettered (the `x-warren-reason` header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection(pub String);

impl Rejection {
    fn new(reason: impl Into<String>) -> Rejection {
        Rejection(reason.into())
    }
}

/// Which broker logins are trusted with what.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    /// Gateways (`amqp.gateway_accounts`): their commands' `actor` is believed.
    pub gateways: Vec<String>,
    /// Bots that act as global admins (`dispatcher.admin_bots`).
    pub admin_bots: Vec<String>,
}

impl Accounts {
    pub fn from_settings(settings: &common::Settings) -> Accounts {
        Accounts {
            gateways: settings.amqp.gateway_accounts.clone(),
            admin_bots: settings.dispatcher.admin_bots.clone(),
        }
    }
}

/// Parses a command and settles who it acts for.
pub fn read(body: &[u8], user_id: Option<&str>, accounts: &Accounts) -> Result<Command, Rejection> {
    let login = user_id.ok_or_else(|| Rejection::new("no user_id property"))?;
    let mut command: Command = serde_json::from_slice(body)
        .map_err(|e| Rejection::new(format!("malformed command: {e}")))?;
    if command.v != BODY_VERSION {
        return Err(Rejection::new(format!("unsupported version {}", command.v)));
    }
    if !accounts.gateways.iter().any(|account| account == login) {
        // A bot: its identity is its login, and it has no WebSocket connection.
        let admin = accounts.admin_bots.iter().any(|bot| bot == login);
        command.actor = Actor {
            id: login.to_owned(),
            name: login.to_owned(),
            roles: if admin {
                vec![ADMIN_ROLE.to_owned()]
            } else {
                vec![]
            },
            bot: true,
        };
        command.conn = None;
    }
    validate_user(&command.actor.id)
        .map_err(|e| Rejection::new(format!("actor {:?}: {e}", command.actor.id)))?;
    if command
        .reference
        .as_ref()
        .is_some_and(|r| r.len() > MAX_REF_LEN)
    {
        return Err(Rejection::new("ref longer than 64 bytes"));
    }
    Ok(command)
}

/// Passes `command` when its room belongs to shard `index` of `shards`. A command on
/// another room's shard comes from a gateway or bot with another `amqp.shards`; run here,
/// it would race the commands of its room on the room's own shard.
pub fn check_shard(command: Command, index: u32, shards: u32) -> Result<Command, Rejection> {
    let room = command.room();
    let owner = shard_of(&room, shards);
    if owner != index {
        return Err(Rejection::new(format!(
            "wrong shard: room {room:?} belongs to shard {owner} of {shards}, not {index}"
        )));
    }
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::amqp::CommandBody;

    const SEND: &str = r#"{"v":1,"kind":"send","room":"general","text":"hi","ref":"r1",
        "actor":{"id":"alice","name":"Alice","roles":["admin"]},"conn":{"gateway":"g","session":"s"}}"#;

    fn accounts() -> Accounts {
        Accounts {
            gateways: vec!["warren-gateway".into(), "guest".into()],
            admin_bots: vec!["ops-cli".into()],
        }
    }

    #[test]
    fn only_bots_named_in_admin_bots_act_as_admins() {
        let admin = read(SEND.as_bytes(), Some("ops-cli"), &accounts()).unwrap();
        assert!(admin.actor.is_admin() && admin.actor.bot);
        assert!(!read(SEND.as_bytes(), Some("other-bot"), &accounts())
            .unwrap()
            .actor
            .is_admin());
        // A user (through a gateway) called like the bot gets nothing from the setting.
        let user = SEND.replace(
            r#""id":"alice","name":"Alice","roles":["admin"]"#,
            r#""id":"ops-cli","name":"x""#,
        );
        assert!(!read(user.as_bytes(), Some("guest"), &accounts())
            .unwrap()
            .actor
            .is_admin());
        // Nor does a bot when nobody is listed.
        assert!(
            !read(SEND.as_bytes(), Some("ops-cli"), &Accounts::default())
                .unwrap()
                .actor
                .is_admin()
        );
    }

    #[test]
    fn a_gateway_account_speaks_for_its_actor() {
        let cmd = read(SEND.as_bytes(), Some("guest"), &accounts()).unwrap();
        assert_eq!(cmd.actor.id, "alice");
        assert!(cmd.actor.is_admin());
        assert!(cmd.conn.is_some());
        assert!(matches!(cmd.body, CommandBody::Send(_)));
    }

    #[test]
    fn any_other_account_acts_as_itself() {
        let cmd = read(SEND.as_bytes(), Some("echo-bot"), &accounts()).unwrap();
        assert_eq!(
            cmd.actor,
            Actor {
                id: "echo-bot".into(),
                name: "echo-bot".into(),
                roles: vec![],
                bot: true
            }
        );
        assert_eq!(cmd.conn, None);
        assert_eq!(cmd.reference.as_deref(), Some("r1"));
    }

    #[test]
    fn only_plain_message_ids_serve_for_dedup() {
        let uuid = "0190f0f0-0000-7000-8000-000000000000";
        assert_eq!(dedup_id(Some(uuid)), Some(uuid));
        assert_eq!(dedup_id(None), None);
        assert_eq!(dedup_id(Some("")), None);
        assert_eq!(dedup_id(Some("a b")), None);
        assert_eq!(dedup_id(Some("é")), None);
        assert_eq!(dedup_id(Some(&"x".repeat(129))), None);
    }

    #[test]
    fn no_user_id_is_rejected() {
        assert!(read(SEND.as_bytes(), None, &accounts()).is_err());
    }

    #[test]
    fn unreadable_bodies_are_rejected() {
        for body in [
            "not json",
            r#"{"v":1,"kind":"explode","actor":{"id":"a","name":"A"}}"#,
            r#"{"v":2,"kind":"leave","room":"r","actor":{"id":"a","name":"A"}}"#,
            r#"{"v":1,"kind":"send","room":"r","actor":{"id":"a","name":"A"}}"#,
        ] {
            assert!(
                read(body.as_bytes(), Some("guest"), &accounts()).is_err(),
                "{body}"
            );
        }
    }

    #[test]
    fn actors_and_refs_must_be_safe_in_keys() {
        let bad_actor = r#"{"v":1,"kind":"leave","room":"r","actor":{"id":"a:b","name":"A"}}"#;
        assert!(read(bad_actor.as_bytes(), Some("guest"), &accounts()).is_err());
        assert!(read(bad_actor.as_bytes(), Some("bot@example"), &accounts()).is_err());
        let long_ref = format!(
            r#"{{"v":1,"kind":"leave","room":"r","ref":"{}","actor":{{"id":"a","name":"A"}}}}"#,
            "x".repeat(65)
        );
        assert!(read(long_ref.as_bytes(), Some("guest"), &accounts()).is_err());
    }

    #[test]
    fn a_command_on_another_rooms_shard_is_rejected() {
        let command = read(SEND.as_bytes(), Some("guest"), &accounts()).unwrap();
        let home = shard_of("general", 16);
        assert!(check_shard(command.clone(), home, 16).is_ok());
        let Err(Rejection(reason)) = check_shard(command, (home + 1) % 16, 16) else {
            panic!("a command on the wrong shard was accepted");
        };
        assert!(reason.starts_with("wrong shard"), "{reason}");
    }
}
