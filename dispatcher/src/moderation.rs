//! The moderation rules as pure functions: who may `moderate` whom, what a grant or a
//! revoke does to a role, and when a timed mute or ban ends.
//!
//! Ranks: owner > moderator > member > no role, and a global `admin` above all.
//! Moderators (and above) may mute, unmute, kick, ban, unban and delete, and grant or
//! revoke `member`; granting or revoking `moderator`, and changing the room's settings
//! (`configure`), takes an owner. Nobody acts on
//! someone of equal or higher rank, except an admin. Owners come from configuration or
//! from creating a room, never from `moderate`, and `moderate` never demotes one.

use proto::client::{ModAction, Role};
use proto::codes::ErrorCode;

use crate::access::ErrorReply;

/// The longest timed mute or ban: ten years, seconds. Longer is a mistake, or permanent.
pub const MAX_DURATION_S: u64 = 10 * 365 * 24 * 3600;

/// Standing in a room, lowest first so that `Ord` is rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// No role in the room (never joined, or removed).
    Outsider,
    Member,
    Moderator,
    Owner,
    /// A global admin (`admin` in the token's roles).
    Admin,
}

impl Rank {
    /// The rank of a room role, or of a global admin whatever their role.
    pub fn of(role: Option<Role>, admin: bool) -> Rank {
        if admin {
            return Rank::Admin;
        }
        match role {
            None => Rank::Outsider,
            Some(Role::Member) => Rank::Member,
            Some(Role::Moderator) => Rank::Moderator,
            Some(Role::Owner) => Rank::Owner,
        }
    }
}

fn forbidden(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorCode::Forbidden, message)
}

fn bad_request(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorCode::BadRequest, message)
}

/// The least rank that may take `action` (with `role` for grant/revoke).
pub fn required_rank(action: ModAction, role: Option<Role>) -> Result<Rank, ErrorReply> {
    match (action, role) {
        (ModAction::Grant | ModAction::Revoke, None) => Err(bad_request(
            "grant and revoke need a role: moderator or member",
        )),
        (ModAction::Grant | ModAction::Revoke, Some(Role::Owner)) => Err(forbidden(
            "owners are named in configuration or by creating the room",
        )),
        (ModAction::Grant | ModAction::Revoke, Some(Role::Moderator)) => Ok(Rank::Owner),
        (ModAction::Configure, _) => Ok(Rank::Owner),
        _ => Ok(Rank::Moderator),
    }
}

/// Decides whether an actor of rank `actor` may take `action` on a target of rank
/// `target`. `self_message` is a `delete` of the actor's own message, which has no
/// rank to respect.
pub fn authorize(
    action: ModAction,
    role: Option<Role>,
    actor: Rank,
    target: Rank,
    self_message: bool,
) -> Result<(), ErrorReply> {
    let needed = required_rank(action, role)?;
    if actor < needed {
        return Err(forbidden(match needed {
            Rank::Owner if action == ModAction::Configure => {
                "only an owner may change the room's settings"
            }
            Rank::Owner => "only an owner may grant or revoke moderator",
            _ => "only moderators may moderate this room",
        }));
    }
    if actor != Rank::Admin && target >= actor && !self_message {
        return Err(forbidden(
            "you cannot act on someone of equal or higher rank",
        ));
    }
    Ok(())
}

/// What a grant or revoke does to the target's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    Set(Role),
    Remove,
    /// Already so: acknowledged, nothing written.
    Unchanged,
}

/// The role change of a permitted grant or revoke of `role` to a target whose role is
/// `current`. A grant never lowers a role and a revoke never touches an owner.
pub fn role_change(
    action: ModAction,
    role: Role,
    current: Option<Role>,
) -> Result<RoleChange, ErrorReply> {
    if current == Some(Role::Owner) {
        return Err(forbidden("an owner's role cannot be changed with moderate"));
    }
    match action {
        ModAction::Grant => match current {
            Some(c) if c == role => Ok(RoleChange::Unchanged),
            Some(c) if c > role => Err(bad_request(format!(
                "the user is already {}; revoke that instead",
                c.as_str()
            ))),
            _ => Ok(RoleChange::Set(role)),
        },
        ModAction::Revoke => match (role, current) {
            (Role::Moderator, Some(Role::Moderator)) => Ok(RoleChange::Set(Role::Member)),
            (Role::Moderator, _) => Err(bad_request("the user is not a moderator")),
            // Revoking membership takes every role away (a private room's door closes).
            (_, Some(_)) => Ok(RoleChange::Remove),
            (_, None) => Ok(RoleChange::Unchanged),
        },
        _ => Err(bad_request("only grant and revoke change roles")),
    }
}

/// When a timed restriction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// The key's time to live, milliseconds.
    pub ttl_ms: u64,
    /// The end, unix milliseconds (the event's `until`).
    pub until_ms: u64,
}

/// The end of a mute or ban of `duration_s` starting at `now_ms`; `None` is permanent.
pub fn expiry(now_ms: u64, duration_s: Option<u64>) -> Result<Option<Expiry>, ErrorReply> {
    let Some(duration_s) = duration_s else {
        return Ok(None);
    };
    if duration_s == 0 {
        return Err(bad_request(
            "duration_s must be at least 1 (omit it for permanent)",
        ));
    }
    if duration_s > MAX_DURATION_S {
        return Err(bad_request(format!(
            "duration_s must be at most {MAX_DURATION_S} (omit it for permanent)"
        )));
    }
    let ttl_ms = duration_s * 1000;
    Ok(Some(Expiry {
        ttl_ms,
        until_ms: now_ms.saturating_add(ttl_ms),
    }))
}

/// The `reason` a kicked connection is told: the moderator's, or what happened.
pub fn kick_reason(action: ModAction, reason: Option<&str>) -> String {
    match reason {
        Some(r) if !r.is_empty() => r.to_owned(),
        _ if action == ModAction::Ban => "banned".to_owned(),
        _ => "kicked".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ModAction::*;

    fn code<T: std::fmt::Debug>(r: Result<T, ErrorReply>) -> ErrorCode {
        r.expect_err("expected a refusal").code
    }

    const ALLOWED: Result<(), ErrorCode> = Ok(());
    const FORBIDDEN: Result<(), ErrorCode> = Err(ErrorCode::Forbidden);

    /// Panics unless `authorize` answers `expected` to `actor` doing `action` (granting
    /// `role`) to `target`.
    #[track_caller]
    fn check(
        expected: Result<(), ErrorCode>,
        action: ModAction,
        role: Option<Role>,
        actor: Rank,
        target: Rank,
        own: bool,
    ) {
        let verdict = authorize(action, role, actor, target, own).map_err(|e| e.code);
        assert_eq!(verdict, expected, "{action:?} by {actor:?} on {target:?}");
    }

    const PUNISH: [ModAction; 6] = [Mute, Unmute, Kick, Ban, Unban, Delete];

    #[test]
    fn only_owners_and_admins_change_a_rooms_settings() {
        for actor in [Rank::Outsider, Rank::Member, Rank::Moderator] {
            check(FORBIDDEN, Configure, None, actor, Rank::Outsider, false);
        }
        check(ALLOWED, Configure, None, Rank::Owner, Rank::Outsider, false);
        check(ALLOWED, Configure, None, Rank::Admin, Rank::Outsider, false);
    }

    #[test]
    fn ranks_follow_roles_and_admin_is_above_all() {
        assert!(Rank::Admin > Rank::Owner);
        assert!(Rank::Owner > Rank::Moderator);
        assert!(Rank::Moderator > Rank::Member);
        assert!(Rank::Member > Rank::Outsider);
        assert_eq!(Rank::of(None, false), Rank::Outsider);
        assert_eq!(Rank::of(Some(Role::Moderator), false), Rank::Moderator);
        assert_eq!(Rank::of(None, true), Rank::Admin);
        assert_eq!(Rank::of(Some(Role::Member), true), Rank::Admin);
    }

    #[test]
    fn members_and_outsiders_cannot_moderate() {
        for action in PUNISH {
            for actor in [Rank::Outsider, Rank::Member] {
                check(FORBIDDEN, action, None, actor, Rank::Outsider, false);
            }
        }
    }

    #[test]
    fn moderators_act_on_members_only() {
        for action in PUNISH {
            for target in [Rank::Member, Rank::Outsider] {
                check(ALLOWED, action, None, Rank::Moderator, target, false);
            }
            for target in [Rank::Moderator, Rank::Owner] {
                check(FORBIDDEN, action, None, Rank::Moderator, target, false);
            }
        }
    }

    #[test]
    fn owners_act_on_moderators_but_not_on_owners() {
        check(ALLOWED, Ban, None, Rank::Owner, Rank::Moderator, false);
        check(FORBIDDEN, Ban, None, Rank::Owner, Rank::Owner, false);
    }

    #[test]
    fn admins_act_on_anyone() {
        for action in PUNISH {
            check(ALLOWED, action, None, Rank::Admin, Rank::Owner, false);
        }
        check(
            ALLOWED,
            Grant,
            Some(Role::Moderator),
            Rank::Admin,
            Rank::Member,
            false,
        );
    }

    #[test]
    fn a_moderator_may_delete_their_own_message() {
        check(
            ALLOWED,
            Delete,
            None,
            Rank::Moderator,
            Rank::Moderator,
            true,
        );
        // But a member may not, even their own.
        check(FORBIDDEN, Delete, None, Rank::Member, Rank::Member, true);
    }

    #[test]
    fn moderator_roles_take_an_owner_and_member_roles_a_moderator() {
        for action in [Grant, Revoke] {
            let mod_role = Some(Role::Moderator);
            check(
                FORBIDDEN,
                action,
                mod_role,
                Rank::Moderator,
                Rank::Member,
                false,
            );
            check(ALLOWED, action, mod_role, Rank::Owner, Rank::Member, false);
            let member = Some(Role::Member);
            check(
                ALLOWED,
                action,
                member,
                Rank::Moderator,
                Rank::Outsider,
                false,
            );
            check(
                FORBIDDEN,
                action,
                member,
                Rank::Member,
                Rank::Outsider,
                false,
            );
        }
    }

    #[test]
    fn grant_and_revoke_need_a_role_other_than_owner() {
        assert_eq!(
            code(authorize(Grant, None, Rank::Admin, Rank::Member, false)),
            ErrorCode::BadRequest
        );
        for actor in [Rank::Owner, Rank::Admin] {
            check(
                FORBIDDEN,
                Grant,
                Some(Role::Owner),
                actor,
                Rank::Member,
                false,
            );
        }
    }

    #[test]
    fn grants_raise_and_never_lower() {
        use RoleChange::*;
        assert_eq!(
            role_change(Grant, Role::Member, None),
            Ok(Set(Role::Member))
        );
        assert_eq!(
            role_change(Grant, Role::Moderator, Some(Role::Member)),
            Ok(Set(Role::Moderator))
        );
        assert_eq!(
            role_change(Grant, Role::Moderator, Some(Role::Moderator)),
            Ok(Unchanged)
        );
        assert_eq!(
            code(role_change(Grant, Role::Member, Some(Role::Moderator))),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(role_change(Grant, Role::Moderator, Some(Role::Owner))),
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn revokes_demote_moderators_and_remove_members() {
        use RoleChange::*;
        assert_eq!(
            role_change(Revoke, Role::Moderator, Some(Role::Moderator)),
            Ok(Set(Role::Member))
        );
        assert_eq!(
            code(role_change(Revoke, Role::Moderator, Some(Role::Member))),
            ErrorCode::BadRequest
        );
        assert_eq!(
            role_change(Revoke, Role::Member, Some(Role::Member)),
            Ok(Remove)
        );
        assert_eq!(
            role_change(Revoke, Role::Member, Some(Role::Moderator)),
            Ok(Remove)
        );
        assert_eq!(role_change(Revoke, Role::Member, None), Ok(Unchanged));
        assert_eq!(
            code(role_change(Revoke, Role::Member, Some(Role::Owner))),
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn timed_restrictions_end_duration_after_now() {
        assert_eq!(expiry(1_000, None), Ok(None));
        assert_eq!(
            expiry(1_000, Some(2)),
            Ok(Some(Expiry {
                ttl_ms: 2_000,
                until_ms: 3_000
            }))
        );
        assert_eq!(code(expiry(1_000, Some(0))), ErrorCode::BadRequest);
        assert_eq!(
            code(expiry(1_000, Some(MAX_DURATION_S + 1))),
            ErrorCode::BadRequest
        );
        assert!(expiry(u64::MAX, Some(MAX_DURATION_S)).is_ok());
    }

    #[test]
    fn kicked_connections_are_told_why() {
        assert_eq!(kick_reason(Kick, None), "kicked");
        assert_eq!(kick_reason(Ban, Some("")), "banned");
        assert_eq!(kick_reason(Ban, Some("spam")), "spam");
    }
}
