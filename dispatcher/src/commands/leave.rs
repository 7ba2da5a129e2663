//! `leave`: forget one session's presence. Harmless when the session is not there: a
//! gateway sends `leave` for every room of a connection that closed. The role is kept.

use proto::amqp::EventBody;
use proto::client::RoomOnly;
use proto::server::{MemberChange, MemberEvent, RoomRef, ServerBody};

use super::ctx::{room_kind, Ctx, Failure};
use super::presence::{has_other_session, members};
use super::{Outcome, Routed};

pub(super) async fn leave(ctx: &Ctx<'_>, args: &RoomOnly) -> Result<Outcome, Failure> {
    let room = args.room.as_str();
    room_kind(room)?;
    let user = ctx.user();
    let session = ctx.session();
    let mut outcome = ctx.answer(ServerBody::Left(RoomRef {
        room: room.to_owned(),
    }));

    // Only the session's own user may remove it.
    let (count, entry) = ctx.store.session_entry(room, &session).await?;
    if entry.is_none_or(|e| e.id != user) {
        return Ok(outcome);
    }
    if count > ctx.rules.max_event_members {
        // A large room gets no `member` events: nothing more to read.
        ctx.store.exit(room, &session).await?;
        return Ok(outcome);
    }
    let entries = ctx.store.exit_and_read(room, &session).await?;
    if !has_other_session(&entries, user, &session)
        && members(&entries).len() < ctx.rules.max_event_members
    {
        outcome
            .events
            .push(Routed::room(EventBody::Member(MemberEvent {
                room: room.to_owned(),
                event: MemberChange::Left,
                user: ctx.user_ref(),
            })));
    }
    Ok(outcome)
}
