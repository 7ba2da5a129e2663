//! `join`: admit the user, record their presence, and answer with the history they need.
//!
//! In a room above `presence.max_event_members` present sessions no `member` event is
//! sent and `joined.members` is a random sample of `presence.max_join_members` (the
//! joiner always in it) with `members_total`: a join then reads that many presence
//! entries, not the whole room, so a crowd of N joining costs N, not N².

use proto::amqp::EventBody;
use proto::client::{Join, Role};
use proto::codes::ErrorCode;
use proto::ids::RoomKind;
use proto::server::{Joined, MemberChange, MemberEvent, ServerBody};

use super::ctx::{room_kind, Ctx, Failure};
use super::presence::{has_other_session, members, prune};
use super::{Outcome, Routed};
use crate::access::{self, ErrorReply, JoinGrant};
use crate::recovery::{self, Backfill};
use crate::store::PresenceEntry;

pub(super) async fn join(ctx: &Ctx<'_>, args: &Join) -> Result<Outcome, Failure> {
    let room = args.room.as_str();
    let kind = room_kind(room)?;
    let user = ctx.user();
    let standing = ctx.standing(room, &kind).await?;
    let admin = ctx.cmd.actor.is_admin();
    let role = match access::admit(&kind, user, admin, &standing, ctx.rules.auto_create)? {
        JoinGrant::Enter(role) => role,
        JoinGrant::Enroll => ctx.store.enroll(room, user).await?,
        JoinGrant::Create => {
            let cap = ctx.rules.max_created_per_hour;
            if cap > 0 && ctx.store.count_room_created(user, common::now_ms()).await? > cap {
                return Err(ErrorReply::new(
                    ErrorCode::RateLimited,
                    format!("you may create at most {cap} rooms an hour"),
                )
                .into());
            }
            if !ctx
                .store
                .create_public_room(room, user, common::now_ms())
                .await?
            {
                // Only one dispatcher handles a shard at a time, so this means another
                // one took the shard over mid-command. The client may simply retry.
                return Err(
                    ErrorReply::new(ErrorCode::Unavailable, "the room changed; retry").into(),
                );
            }
            Role::Owner
        }
    };

    if let RoomKind::Dm(..) = kind {
        // The conversation is opened: it keeps its whole history from now on (see
        // `send::UNOPENED_DM_LIMIT`).
        ctx.store.mark_joined(room, user).await?;
    }

    let session = ctx.session();
    let gateway = ctx.gateway();
    let incarnation = match gateway.as_str() {
        "" => None,
        gateway => ctx.store.incarnation(gateway).await?,
    };
    let entry = PresenceEntry {
        id: user.to_owned(),
        name: ctx.cmd.actor.name.clone(),
        gateway,
        incarnation,
    };
    let whole = ctx.rules.max_event_members;
    let (count, entries) = ctx
        .store
        .enter_sampled(room, &session, &entry, whole, ctx.rules.max_join_members)
        .await?;
    let large = count > whole;
    let (entries, departures) = prune(ctx, room, entries).await?;
    let mut present = members(&entries);
    if large && !present.iter().any(|m| m.id == user) {
        // A sample may miss the joiner, whom `members` always includes.
        present.push(ctx.user_ref());
        present.sort_by(|a, b| a.id.cmp(&b.id));
    }
    let first_session = !large && !has_other_session(&entries, user, &session);

    let state = ctx.store.state(room).await?;
    let on_join = ctx.rules.history_on_join(standing.meta.as_ref());
    let recent = || ctx.store.recent(room, on_join);
    let (history, recovered) =
        match recovery::backfill(args.since, args.epoch.as_deref(), &state.epoch, state.seq) {
            Backfill::Missed { after } => {
                let missed = ctx.store.missed(room, after, state.seq).await?;
                if recovery::is_complete(after, state.seq, &missed) {
                    (missed.messages, true)
                } else {
                    (recent().await?, false)
                }
            }
            Backfill::Recent => (recent().await?, false),
        };

    let mut outcome = ctx.answer(ServerBody::Joined(Joined {
        room: room.to_owned(),
        epoch: state.epoch,
        seq: state.seq,
        history,
        recovered,
        members_total: large.then_some(count as u64),
        members: present.clone(),
        role,
    }));
    outcome.events = departures;
    if first_session && present.len() <= ctx.rules.max_event_members {
        outcome
            .events
            .push(Routed::room(EventBody::Member(MemberEvent {
                room: room.to_owned(),
                event: MemberChange::Joined,
                user: ctx.user_ref(),
            })));
    }
    Ok(outcome)
}
