//! `typing`: a member's typing notice goes to the room; nothing is stored or answered.
//! In a dm room it also goes to both users' keys, the way gateways reach dm rooms.

use proto::amqp::{room_key, user_key, EventBody};
use proto::client::RoomOnly;
use proto::ids::RoomKind;
use proto::server::TypingEvent;

use super::{room_kind, Ctx, Failure, Outcome, Routed};

pub(super) async fn typing(ctx: &Ctx<'_>, args: &RoomOnly) -> Result<Outcome, Failure> {
    let room = args.room.as_str();
    let kind = room_kind(room)?;
    ctx.check_reader(room, &kind).await?;
    let event = EventBody::Typing(TypingEvent {
        room: room.to_owned(),
        user: ctx.user_ref(),
    });
    Ok(Outcome {
        events: vec![Routed {
            keys: typing_keys(room, &kind),
            event,
        }],
        reply: None,
    })
}

/// `room.<room>.typing`, and for a dm room both users' `user.<u>.typing`.
pub fn typing_keys(room: &str, kind: &RoomKind<'_>) -> Vec<String> {
    let mut keys = vec![room_key(room, "typing")];
    if let RoomKind::Dm(a, b) = kind {
        keys.push(user_key(a, "typing"));
        keys.push(user_key(b, "typing"));
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dm_typing_also_goes_to_both_users() {
        assert_eq!(
            typing_keys("general", &RoomKind::Public),
            vec!["room.general.typing"]
        );
        assert_eq!(
            typing_keys("dm:a:b", &RoomKind::Dm("a", "b")),
            vec!["room.dm~a~b.typing", "user.a.typing", "user.b.typing"]
        );
    }
}
