//! `presence`, and the presence rules `join` and `leave` share: members are distinct
//! users over all their sessions, and rooms above [`MAX_EVENT_MEMBERS`] get no `member`
//! events (a mass reconnect would otherwise cost N² frames; clients ask instead).

use proto::client::RoomOnly;
use proto::server::{Presence, ServerBody, UserRef};

use super::{room_kind, Ctx, Failure, Outcome};
use crate::store::PresenceEntry;

/// Rooms with more present users than this get no `member` events.
pub const MAX_EVENT_MEMBERS: usize = 500;

pub(super) async fn presence(ctx: &Ctx<'_>, args: &RoomOnly) -> Result<Outcome, Failure> {
    let room = args.room.as_str();
    let kind = room_kind(room)?;
    ctx.check_reader(room, &kind).await?;
    let entries = ctx.store.presence(room).await?;
    Ok(ctx.answer(ServerBody::Presence(Presence {
        room: room.to_owned(),
        members: members(&entries),
    })))
}

/// Distinct users, sorted by id; a user's name is the one of their first session.
pub fn members(entries: &[(String, PresenceEntry)]) -> Vec<UserRef> {
    let mut users: Vec<UserRef> = Vec::new();
    for (_, entry) in entries {
        if !users.iter().any(|u| u.id == entry.id) {
            users.push(UserRef {
                id: entry.id.clone(),
                name: entry.name.clone(),
            });
        }
    }
    users.sort_by(|a, b| a.id.cmp(&b.id));
    users
}

/// True when `user` is present through a session other than `session`.
pub fn has_other_session(entries: &[(String, PresenceEntry)], user: &str, session: &str) -> bool {
    entries.iter().any(|(s, e)| e.id == user && s != session)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(session: &str, id: &str, name: &str) -> (String, PresenceEntry) {
        (
            session.into(),
            PresenceEntry {
                id: id.into(),
                name: name.into(),
                gateway: "g".into(),
            },
        )
    }

    #[test]
    fn members_are_distinct_users_sorted() {
        let entries = vec![
            entry("s1", "bob", "Bob"),
            entry("s2", "alice", "Alice"),
            entry("s3", "bob", "Bobby"),
        ];
        assert_eq!(
            members(&entries),
            vec![
                UserRef {
                    id: "alice".into(),
                    name: "Alice".into()
                },
                UserRef {
                    id: "bob".into(),
                    name: "Bob".into()
                },
            ]
        );
        assert!(members(&[]).is_empty());
    }

    #[test]
    fn other_sessions_are_told_apart_from_this_one() {
        let entries = vec![entry("s1", "bob", "Bob"), entry("s2", "alice", "Alice")];
        assert!(!has_other_session(&entries, "bob", "s1"));
        assert!(has_other_session(&entries, "bob", "s9"));
        assert!(!has_other_session(&entries, "carol", "s1"));
    }
}
