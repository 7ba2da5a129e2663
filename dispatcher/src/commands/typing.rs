//! `typing`: a member's typing notice goes to the room; nothing is stored or answered.

use proto::amqp::EventBody;
use proto::client::RoomOnly;
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
        events: vec![Routed::room(event)],
        reply: None,
    })
}
