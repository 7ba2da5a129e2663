//! Who may do what in a room: pure decisions over what the store knows, so that every
//! rule is unit-tested without Redis. A refusal is a value (the error frame to send),
//! never a Rust error.

use proto::client::Role;
use proto::codes::ErrorCode;
use proto::ids::RoomKind;

use crate::store::{Standing, Visibility};

/// The `error` frame a refused command is answered with: its code and message. A value,
/// not an error: refusing is an expected outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
        ErrorReply {
            code,
            message: message.into(),
        }
    }
}

/// What a permitted join does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinGrant {
    /// The room does not exist and may be created: the joiner becomes its owner.
    Create,
    /// The joiner already holds this role (in a dm room, always member).
    Enter(Role),
    /// A public room the joiner has no role in yet: they become a member.
    Enroll,
}

/// Decides a join. A dm room admits its two users only; another room must exist (or be
/// creatable), must not ban the joiner, and if private must already have given them a
/// role, unless the joiner is a global `admin` (above every room role): an admin is
/// enrolled as a member of a private room as of a public one, so that everything after
/// the join treats them as the member they now are.
pub fn admit(
    kind: &RoomKind<'_>,
    user: &str,
    admin: bool,
    standing: &Standing,
    auto_create: bool,
) -> Result<JoinGrant, ErrorReply> {
    if let RoomKind::Dm(a, b) = kind {
        return if user == *a || user == *b {
            Ok(JoinGrant::Enter(Role::Member))
        } else {
            Err(ErrorReply::new(
                ErrorCode::Forbidden,
                "only its two users may join a dm room",
            ))
        };
    }
    let Some(meta) = standing.meta else {
        return if auto_create {
            Ok(JoinGrant::Create)
        } else {
            Err(ErrorReply::new(ErrorCode::NoSuchRoom, "no such room"))
        };
    };
    if standing.banned {
        return Err(ErrorReply::new(
            ErrorCode::Banned,
            "you are banned from this room",
        ));
    }
    match (standing.role, meta.visibility) {
        (Some(role), _) => Ok(JoinGrant::Enter(role)),
        (None, Visibility::Public) => Ok(JoinGrant::Enroll),
        (None, Visibility::Private) if admin => Ok(JoinGrant::Enroll),
        (None, Visibility::Private) => Err(ErrorReply::new(
            ErrorCode::Forbidden,
            "this room is private",
        )),
    }
}

/// A user's role in a room: the stored one, or for a dm room member if it is theirs.
pub fn effective_role(kind: &RoomKind<'_>, user: &str, stored: Option<Role>) -> Option<Role> {
    match kind {
        RoomKind::Dm(a, b) => (user == *a || user == *b).then_some(Role::Member),
        RoomKind::Public => stored,
    }
}

/// Decides a `send`: a role in the room, not muted, not banned, and in an announce room
/// moderator or above (a global admin always may).
pub fn may_send(
    role: Option<Role>,
    announce: bool,
    admin: bool,
    muted: bool,
    banned: bool,
) -> Result<(), ErrorReply> {
    let Some(role) = role else {
        return Err(ErrorReply::new(ErrorCode::NotJoined, "join the room first"));
    };
    if muted {
        return Err(ErrorReply::new(
            ErrorCode::Muted,
            "you are muted in this room",
        ));
    }
    if banned {
        return Err(ErrorReply::new(
            ErrorCode::Banned,
            "you are banned from this room",
        ));
    }
    if announce && role < Role::Moderator && !admin {
        return Err(ErrorReply::new(
            ErrorCode::Forbidden,
            "only moderators may post in this room",
        ));
    }
    Ok(())
}

/// Decides reading a room (history, presence, typing): a role in it, and not banned.
pub fn may_read(role: Option<Role>, banned: bool) -> Result<(), ErrorReply> {
    if role.is_none() {
        return Err(ErrorReply::new(ErrorCode::NotJoined, "join the room first"));
    }
    if banned {
        return Err(ErrorReply::new(
            ErrorCode::Banned,
            "you are banned from this room",
        ));
    }
    Ok(())
}

/// A message text is 1..=`max_bytes` UTF-8 bytes.
pub fn check_text(text: &str, max_bytes: usize) -> Result<(), ErrorReply> {
    proto::ids::check_text(text, max_bytes).map_err(|e| ErrorReply::new(e.code(), e.message()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RoomMeta;

    fn room(visibility: Visibility) -> Standing {
        Standing {
            meta: Some(RoomMeta::new(visibility, false)),
            ..Standing::default()
        }
    }

    fn code<T>(r: Result<T, ErrorReply>) -> ErrorCode {
        match r {
            Ok(_) => panic!("expected a refusal"),
            Err(refusal) => refusal.code,
        }
    }

    #[test]
    fn dm_rooms_admit_only_their_two_users() {
        let dm = RoomKind::Dm("alice", "bob");
        let none = Standing::default();
        assert_eq!(
            admit(&dm, "alice", false, &none, false),
            Ok(JoinGrant::Enter(Role::Member))
        );
        assert_eq!(
            admit(&dm, "bob", false, &none, false),
            Ok(JoinGrant::Enter(Role::Member))
        );
        assert_eq!(
            code(admit(&dm, "carol", false, &none, true)),
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn a_missing_room_is_created_only_when_allowed() {
        let none = Standing::default();
        assert_eq!(
            admit(&RoomKind::Public, "a", false, &none, true),
            Ok(JoinGrant::Create)
        );
        assert_eq!(
            code(admit(&RoomKind::Public, "a", false, &none, false)),
            ErrorCode::NoSuchRoom
        );
    }

    #[test]
    fn banned_users_cannot_join_even_with_a_role() {
        let s = Standing {
            role: Some(Role::Owner),
            banned: true,
            ..room(Visibility::Public)
        };
        assert_eq!(
            code(admit(&RoomKind::Public, "a", false, &s, true)),
            ErrorCode::Banned
        );
    }

    #[test]
    fn private_rooms_need_a_role_and_public_rooms_enroll() {
        let private = room(Visibility::Private);
        assert_eq!(
            code(admit(&RoomKind::Public, "a", false, &private, true)),
            ErrorCode::Forbidden
        );
        let granted = Standing {
            role: Some(Role::Member),
            ..private
        };
        assert_eq!(
            admit(&RoomKind::Public, "a", false, &granted, true),
            Ok(JoinGrant::Enter(Role::Member))
        );
        assert_eq!(
            admit(
                &RoomKind::Public,
                "a",
                false,
                &room(Visibility::Public),
                false
            ),
            Ok(JoinGrant::Enroll)
        );
    }

    #[test]
    fn a_global_admin_joins_private_rooms_but_not_others_dms() {
        let private = room(Visibility::Private);
        assert_eq!(
            admit(&RoomKind::Public, "root", true, &private, true),
            Ok(JoinGrant::Enroll)
        );
        let banned = Standing {
            banned: true,
            ..private
        };
        assert_eq!(
            code(admit(&RoomKind::Public, "root", true, &banned, true)),
            ErrorCode::Banned
        );
        assert_eq!(
            code(admit(
                &RoomKind::Dm("a", "b"),
                "root",
                true,
                &room(Visibility::Public),
                true
            )),
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn dm_roles_are_implied_and_other_roles_stored() {
        let dm = RoomKind::Dm("alice", "bob");
        assert_eq!(effective_role(&dm, "bob", None), Some(Role::Member));
        assert_eq!(effective_role(&dm, "carol", Some(Role::Owner)), None);
        assert_eq!(
            effective_role(&RoomKind::Public, "a", Some(Role::Moderator)),
            Some(Role::Moderator)
        );
        assert_eq!(effective_role(&RoomKind::Public, "a", None), None);
    }

    #[test]
    fn sending_needs_a_role_and_no_mute_or_ban() {
        assert_eq!(
            may_send(Some(Role::Member), false, false, false, false),
            Ok(())
        );
        assert_eq!(
            code(may_send(None, false, true, false, false)),
            ErrorCode::NotJoined
        );
        assert_eq!(
            code(may_send(Some(Role::Owner), false, false, true, false)),
            ErrorCode::Muted
        );
        assert_eq!(
            code(may_send(Some(Role::Member), false, false, false, true)),
            ErrorCode::Banned
        );
    }

    #[test]
    fn announce_rooms_take_moderators_owners_and_admins() {
        assert_eq!(
            code(may_send(Some(Role::Member), true, false, false, false)),
            ErrorCode::Forbidden
        );
        assert_eq!(
            may_send(Some(Role::Member), true, true, false, false),
            Ok(())
        );
        assert_eq!(
            may_send(Some(Role::Moderator), true, false, false, false),
            Ok(())
        );
        assert_eq!(
            may_send(Some(Role::Owner), true, false, false, false),
            Ok(())
        );
    }

    #[test]
    fn reading_needs_a_role_and_no_ban() {
        assert_eq!(may_read(Some(Role::Member), false), Ok(()));
        assert_eq!(code(may_read(None, false)), ErrorCode::NotJoined);
        assert_eq!(code(may_read(Some(Role::Owner), true)), ErrorCode::Banned);
    }

    #[test]
    fn text_is_one_to_max_bytes() {
        assert_eq!(check_text("a", 4), Ok(()));
        assert_eq!(check_text("abcd", 4), Ok(()));
        assert_eq!(code(check_text("", 4)), ErrorCode::BadRequest);
        assert_eq!(code(check_text("abcde", 4)), ErrorCode::TooLarge);
        // Bytes, not characters: "é" is two bytes.
        assert_eq!(code(check_text("ééé", 5)), ErrorCode::TooLarge);
    }
}
