//! `typing`: a member's typing notice goes to the room; nothing is stored or answered.
//! In a dm room it also goes to both users, who need not have joined the room. A muted
//! user's notice is dropped, as its sends are refused.

use proto::amqp::{room_key, EventBody};
use proto::client::RoomOnly;
use proto::ids::RoomKind;
use proto::server::TypingEvent;

use super::ctx::{room_kind, Ctx, Failure};
use super::{Outcome, Routed, UserCopy};
use crate::access;

pub(super) async fn typing(ctx: &Ctx<'_>, args: &RoomOnly) -> Result<Outcome, Failure> {
    let room = args.room.as_str();
    let kind = room_kind(room)?;
    let standing = ctx.standing(room, &kind).await?;
    let role = access::effective_role(&kind, ctx.user(), standing.role);
    access::may_read(role, standing.banned)?;
    if standing.muted {
        return Ok(Outcome::default());
    }
    let event = EventBody::Typing(TypingEvent {
        room: room.to_owned(),
        user: ctx.user_ref(),
    });
    Ok(Outcome {
        events: vec![typing_routed(room, &kind, event)],
        reply: None,
    })
}

/// `room.<room>.typing`, and for a dm room a copy for each of its two users.
pub fn typing_routed(room: &str, kind: &RoomKind<'_>, event: EventBody) -> Routed {
    let users: Vec<UserCopy> = match kind {
        RoomKind::Dm(a, b) => vec![UserCopy::to(a), UserCopy::to(b)],
        RoomKind::Public => Vec::new(),
    };
    Routed {
        keys: vec![room_key(room, "typing")],
        users,
        event,
        ack: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::server::UserRef;

    fn event(room: &str) -> EventBody {
        EventBody::Typing(TypingEvent {
            room: room.to_owned(),
            user: UserRef {
                id: "a".into(),
                name: "A".into(),
            },
        })
    }

    #[test]
    fn dm_typing_also_goes_to_both_users() {
        let public = typing_routed("general", &RoomKind::Public, event("general"));
        assert_eq!(public.keys, vec!["room.general.typing"]);
        assert!(public.users.is_empty());
        let dm = typing_routed("dm:a:b", &RoomKind::Dm("a", "b"), event("dm:a:b"));
        assert_eq!(dm.keys, vec!["room.dm~a~b.typing"]);
        let users: Vec<&str> = dm.users.iter().map(|c| c.user.as_str()).collect();
        assert_eq!(users, vec!["a", "b"]);
    }
}
