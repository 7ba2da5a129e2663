//! `moderate`: check the rules ([`crate::moderation`]), change the room's state, and
//! tell the room (`moderation` event) and, for kick and ban, the target's connections
//! (`kicked` on `user.<target>.kicked`, which every gateway holding one of them is bound
//! to). The target's presence in the room goes with them, with a `member left` event.
//! `configure` changes the room's settings. Every action carried out is audited
//! ([`super::audit`]).

use proto::amqp::EventBody;
use proto::client::{ModAction, Moderate, RoomSettings};
use proto::codes::ErrorCode;
use proto::ids::{validate_message_id, validate_user, RoomKind};
use proto::server::{Ack, Kicked, MemberChange, MemberEvent, ModerationEvent, ServerBody, UserRef};

use super::ctx::{room_kind, Ctx, Failure};
use super::presence::members;
use super::{Outcome, Routed};
use crate::access::ErrorReply;
use crate::moderation::{self, Rank, RoleChange};
use crate::store::{PresenceEntry, Restriction, RestrictionKind};

pub(super) async fn moderate(ctx: &Ctx<'_>, args: &Moderate) -> Result<Outcome, Failure> {
    let room = args.room.as_str();
    if let RoomKind::Dm(..) = room_kind(room)? {
        return Err(ErrorReply::new(ErrorCode::Forbidden, "dm rooms have no moderators").into());
    }
    if args
        .reason
        .as_ref()
        .is_some_and(|r| r.len() > ctx.rules.max_text_bytes)
    {
        return Err(ErrorReply::new(ErrorCode::TooLarge, "reason is too long").into());
    }
    let standing = ctx.store.standing(room, ctx.user()).await?;
    if standing.meta.is_none() {
        return Err(ErrorReply::new(ErrorCode::NoSuchRoom, "no such room").into());
    }
    let actor = Rank::of(standing.role, ctx.cmd.actor.is_admin());
    let mut event = ModerationEvent {
        room: room.to_owned(),
        action: args.action,
        user: None,
        msg_id: None,
        by: ctx.user_ref(),
        until: None,
        role: None,
        reason: args.reason.clone(),
        settings: None,
    };
    let mut outcome = ctx.answer(ServerBody::Ack(Ack::default()));
    let consequences = match args.action {
        ModAction::Delete => {
            event.msg_id = Some(delete(ctx, args, actor).await?);
            Vec::new()
        }
        ModAction::Configure => {
            event.settings = Some(configure(ctx, args, actor).await?);
            Vec::new()
        }
        _ => act_on_user(ctx, args, actor, &mut event).await?,
    };
    super::audit::record(ctx, &event).await?;
    outcome
        .events
        .push(Routed::room(EventBody::Moderation(event)));
    outcome.events.extend(consequences);
    Ok(outcome)
}

/// Every action but delete. Fills the event's `user`, `until` and `role`; returns the
/// events that follow from it (the target leaving the room).
async fn act_on_user(
    ctx: &Ctx<'_>,
    args: &Moderate,
    actor: Rank,
    event: &mut ModerationEvent,
) -> Result<Vec<Routed>, Failure> {
    let room = args.room.as_str();
    let target = args
        .user
        .as_deref()
        .ok_or_else(|| ErrorReply::new(ErrorCode::BadRequest, "this action needs a user"))?;
    validate_user(target)
        .map_err(|e| ErrorReply::new(ErrorCode::BadRequest, format!("user: {e}")))?;
    let current = ctx.store.role(room, target).await?;
    moderation::authorize(
        args.action,
        args.role,
        actor,
        Rank::of(current, false),
        false,
    )?;
    let entries = ctx.store.presence(room).await?;
    event.user = Some(name_of(target, &entries));

    let store = ctx.store;
    let restriction = |until| Restriction {
        by: ctx.user().to_owned(),
        until,
        reason: args.reason.clone(),
    };
    match args.action {
        ModAction::Mute | ModAction::Ban => {
            let expiry = moderation::expiry(common::now_ms(), args.duration_s)?;
            event.until = expiry.map(|e| e.until_ms);
            let kind = if args.action == ModAction::Mute {
                RestrictionKind::Mute
            } else {
                RestrictionKind::Ban
            };
            let ttl = expiry.map(|e| e.ttl_ms);
            store
                .restrict(kind, room, target, &restriction(event.until), ttl)
                .await?;
            if args.action == ModAction::Ban {
                store.set_role(room, target, None).await?;
                return eject(ctx, args, target, &entries).await;
            }
        }
        ModAction::Unmute => {
            store.lift(RestrictionKind::Mute, room, target).await?;
        }
        ModAction::Unban => {
            store.lift(RestrictionKind::Ban, room, target).await?;
        }
        ModAction::Kick => {
            // A kick holds for `dispatcher.kick_hold_s`: kept out as by a ban that ends by
            // itself (an `unban` lifts it early), role kept, so that a kicked user cannot
            // walk straight back in. The event says until when.
            let hold = ctx.rules.kick_hold_ms;
            if hold > 0 {
                event.until = Some(common::now_ms() + hold);
                store
                    .restrict(
                        RestrictionKind::Ban,
                        room,
                        target,
                        &restriction(event.until),
                        Some(hold),
                    )
                    .await?;
            }
            return eject(ctx, args, target, &entries).await;
        }
        ModAction::Grant | ModAction::Revoke => {
            // `authorize` refused grant and revoke without a role.
            let role = args.role.ok_or_else(|| {
                ErrorReply::new(ErrorCode::BadRequest, "grant and revoke need a role")
            })?;
            event.role = Some(role);
            match moderation::role_change(args.action, role, current)? {
                RoleChange::Set(new) => store.set_role(room, target, Some(new)).await?,
                RoleChange::Remove => store.set_role(room, target, None).await?,
                RoleChange::Unchanged => {}
            }
        }
        ModAction::Delete | ModAction::Configure => {
            unreachable!("delete and configure are handled apart")
        }
    }
    Ok(Vec::new())
}

/// Takes `target` out of the room: their presence entries go (with a `member left` if
/// they were present), and every connection of theirs is told `kicked`.
async fn eject(
    ctx: &Ctx<'_>,
    args: &Moderate,
    target: &str,
    entries: &[(String, PresenceEntry)],
) -> Result<Vec<Routed>, Failure> {
    let room = args.room.as_str();
    let sessions: Vec<String> = entries
        .iter()
        .filter(|(_, e)| e.id == target)
        .map(|(s, _)| s.clone())
        .collect();
    let mut events = Vec::new();
    let removed = ctx.store.exit_all(room, &sessions).await?;
    if removed > 0 && members(entries).len() <= ctx.rules.max_event_members {
        events.push(Routed::room(EventBody::Member(MemberEvent {
            room: room.to_owned(),
            event: MemberChange::Left,
            user: name_of(target, entries),
        })));
    }
    events.push(Routed::users(
        EventBody::Kicked(Kicked {
            room: room.to_owned(),
            reason: moderation::kick_reason(args.action, args.reason.as_deref()),
        }),
        &[target],
    ));
    Ok(events)
}

/// Changes the room's settings. Returns the change for the event.
async fn configure(ctx: &Ctx<'_>, args: &Moderate, actor: Rank) -> Result<RoomSettings, Failure> {
    moderation::authorize(ModAction::Configure, None, actor, Rank::Outsider, false)?;
    let change = args
        .settings
        .clone()
        .filter(|change| !change.is_empty())
        .ok_or_else(|| ErrorReply::new(ErrorCode::BadRequest, "configure needs settings"))?;
    if change.history_limit == Some(0) {
        return Err(
            ErrorReply::new(ErrorCode::BadRequest, "history_limit must be at least 1").into(),
        );
    }
    ctx.store.update_settings(&args.room, &change).await?;
    Ok(change)
}

/// Removes a message from history. Returns its id for the event.
async fn delete(ctx: &Ctx<'_>, args: &Moderate, actor: Rank) -> Result<String, Failure> {
    let room = args.room.as_str();
    let id = args
        .msg_id
        .as_deref()
        .filter(|id| validate_message_id(id).is_ok())
        .ok_or_else(|| ErrorReply::new(ErrorCode::BadRequest, "delete needs a msg_id"))?;
    let message = ctx.store.message_by_id(room, id).await?.ok_or_else(|| {
        ErrorReply::new(
            ErrorCode::BadRequest,
            "no message with this msg_id in the room's history",
        )
    })?;
    let own = message.from.id == ctx.user();
    let author = if own {
        None
    } else {
        ctx.store.role(room, &message.from.id).await?
    };
    moderation::authorize(ModAction::Delete, None, actor, Rank::of(author, false), own)?;
    ctx.store.delete_message(room, id, message.seq).await?;
    Ok(id.to_owned())
}

/// A user as the room knows them: their name from presence, else their id.
fn name_of(user: &str, entries: &[(String, PresenceEntry)]) -> UserRef {
    let name = entries
        .iter()
        .find(|(_, e)| e.id == user)
        .map_or_else(|| user.to_owned(), |(_, e)| e.name.clone());
    UserRef {
        id: user.to_owned(),
        name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_named_from_presence_or_by_id() {
        let entries = vec![(
            "s1".to_owned(),
            PresenceEntry {
                id: "bob".into(),
                name: "Bobby".into(),
                gateway: "g".into(),
                incarnation: None,
            },
        )];
        assert_eq!(name_of("bob", &entries).name, "Bobby");
        assert_eq!(name_of("carol", &entries).name, "carol");
    }
}
