//! `send` and `dm`: check, deduplicate, number and store a message, and route it.
//!
//! A retry with the same `(room, user, ref)` is answered from the dedup key with the first
//! message, which is published again: a crash between storing and publishing must not
//! lose the delivery, and gateways drop a seq they have already delivered. A send
//! without `ref` is deduplicated on the AMQP `message_id` instead (in the room, scoped
//! by user), so that a redelivery after a dispatcher crash is not stored twice either.
//!
//! The sender's `ack` rides on the `message` event when the send came from a gateway
//! connection (its gateway answers from the event; no reply is published); a bot's
//! send is answered with a reply to its `reply_to`.

use proto::amqp::{room_key, EventBody};
use proto::client::{Dm, Send};
use proto::codes::ErrorCode;
use proto::ids::{dm_room, validate_room, validate_user, RoomKind};
use proto::server::{Ack, Author, Message, ServerBody};

use super::ctx::{room_kind, Ctx, Failure};
use super::{EventAck, Outcome, Routed, UserCopy};
use crate::access::{self, ErrorReply};
use crate::store::{Dedup, Draft, Prior};

/// The most messages a dm room keeps while its recipient has never joined it: a
/// conversation toward an id nobody uses (or who never opens it) cannot grow the store
/// past this. Once the recipient joins it, it keeps `dispatcher.history_limit`; the
/// messages trimmed before are gone (below the room's floor, like any trimmed ones).
pub const UNOPENED_DM_LIMIT: u64 = 100;

pub(super) async fn send(ctx: &Ctx<'_>, args: &Send) -> Result<Outcome, Failure> {
    let kind = room_kind(&args.room)?;
    post(ctx, &args.room, &kind, &args.text).await
}

pub(super) async fn dm(ctx: &Ctx<'_>, args: &Dm) -> Result<Outcome, Failure> {
    validate_user(&args.to)
        .map_err(|e| ErrorReply::new(ErrorCode::BadRequest, format!("to: {e}")))?;
    if args.to == ctx.user() {
        return Err(ErrorReply::new(ErrorCode::BadRequest, "cannot send a dm to yourself").into());
    }
    let room = dm_room(ctx.user(), &args.to);
    let kind = room_kind(&room)?;
    // The first message of a dm room creates it, and counts toward the sender's rooms
    // created this hour: otherwise dms to ids nobody uses would grow the store freely.
    let cap = ctx.rules.max_created_per_hour;
    if cap > 0
        && !ctx.store.has_started(&room).await?
        && ctx
            .store
            .count_room_created(ctx.user(), common::now_ms())
            .await?
            > cap
    {
        return Err(ErrorReply::new(
            ErrorCode::RateLimited,
            format!("you may start at most {cap} rooms or conversations an hour"),
        )
        .into());
    }
    post(ctx, &room, &kind, &args.text).await
}

async fn post(
    ctx: &Ctx<'_>,
    room: &str,
    kind: &RoomKind<'_>,
    text: &str,
) -> Result<Outcome, Failure> {
    access::check_text(text, ctx.rules.max_text_bytes)?;
    if ctx.cmd.reference.as_deref() == Some("") {
        // An empty `ref` would make every later send of the user a duplicate.
        return Err(ErrorReply::new(ErrorCode::BadRequest, "ref must not be empty").into());
    }
    let user = ctx.user();
    let dedup = dedup_of(room, user, ctx.cmd.reference.as_deref(), ctx.message_id);
    // Read: the dedup key and the sender's standing in one round trip (the append is the
    // second): a retry is answered from the dedup key whatever the standing says.
    let standing = match (&dedup, kind) {
        (Some(dedup), RoomKind::Public) => {
            match ctx
                .store
                .deduplicated_or_standing(dedup, room, user)
                .await?
            {
                Prior::Stored(first) => return Ok(delivered(ctx, first)),
                Prior::New(standing) => standing,
            }
        }
        (Some(dedup), RoomKind::Dm(..)) => {
            if let Some(first) = ctx.store.deduplicated(dedup).await? {
                return Ok(delivered(ctx, first));
            }
            ctx.read_standing(room, kind).await?
        }
        (None, _) => ctx.read_standing(room, kind).await?,
    };
    // Put back a room from configuration the store lost, before deciding on it.
    let standing = ctx.restore_lost(room, standing).await?;
    // Decide.
    let role = access::effective_role(kind, user, standing.role);
    let announce = standing.meta.is_some_and(|m| m.announce);
    access::may_send(
        role,
        announce,
        ctx.cmd.actor.is_admin(),
        standing.muted,
        standing.banned,
    )?;

    let actor = &ctx.cmd.actor;
    let from = Author {
        id: actor.id.clone(),
        name: actor.name.clone(),
        bot: actor.bot,
    };
    let id = uuid::Uuid::now_v7().to_string();
    let draft = Draft::new(room, &id, from, text, common::now_ms())?;
    let mut retention = ctx.rules.retention(standing.meta.as_ref());
    if let RoomKind::Dm(a, b) = kind {
        let other = if user == *a { b } else { a };
        if !ctx.store.has_joined(room, other).await? {
            retention.history_limit = retention.history_limit.min(UNOPENED_DM_LIMIT);
        }
    }
    let message = ctx
        .store
        .append(room, &draft, dedup.as_ref(), retention)
        .await?;
    Ok(delivered(ctx, message))
}

/// What identifies this send across retries: the client's `ref` in the room, else the
/// delivery's `message_id`, else nothing (a publisher that sets neither gets no dedup).
pub fn dedup_of<'a>(
    room: &'a str,
    user: &'a str,
    reference: Option<&'a str>,
    message_id: Option<&'a str>,
) -> Option<Dedup<'a>> {
    match (reference, message_id) {
        (Some(reference), _) => Some(Dedup::Ref {
            room,
            user,
            reference,
        }),
        (None, Some(message_id)) => Some(Dedup::Delivery {
            room,
            user,
            message_id,
        }),
        (None, None) => None,
    }
}

/// The `message` event of a stored message, and the sender's `ack`: on the event for a
/// gateway connection, as a reply for a bot.
fn delivered(ctx: &Ctx<'_>, message: Message) -> Outcome {
    let mut routed = message_routed(message);
    let mut outcome = match &ctx.cmd.conn {
        Some(conn) => {
            routed.ack = Some(EventAck {
                session: conn.session.clone(),
                reference: ctx.cmd.reference.clone(),
                gateway: conn.gateway.clone(),
                on_user: (!routed.users.is_empty()).then(|| ctx.user().to_owned()),
            });
            Outcome::default()
        }
        None => {
            let EventBody::Message(message) = &routed.event else {
                unreachable!("message_routed routes a message")
            };
            ctx.answer(ServerBody::Ack(Ack {
                room: Some(message.room.clone()),
                id: Some(message.id.clone()),
                seq: Some(message.seq),
            }))
        }
    };
    outcome.events.push(routed);
    outcome
}

/// Where a room's `message` goes: the room's key, and for a dm room also a copy for
/// each of its two users (who get it whether or not they joined the dm room).
pub fn message_routed(message: Message) -> Routed {
    let users = match validate_room(&message.room) {
        Ok(RoomKind::Dm(a, b)) => vec![UserCopy::to(a), UserCopy::to(b)],
        _ => Vec::new(),
    };
    Routed {
        keys: vec![room_key(&message.room, "message")],
        users,
        event: EventBody::Message(message),
        ack: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_prefers_the_ref_then_the_message_id() {
        assert_eq!(
            dedup_of("room", "a", Some("r"), Some("m")),
            Some(Dedup::Ref {
                room: "room",
                user: "a",
                reference: "r"
            })
        );
        assert_eq!(
            dedup_of("room", "a", None, Some("m")),
            Some(Dedup::Delivery {
                room: "room",
                user: "a",
                message_id: "m"
            })
        );
        assert_eq!(dedup_of("room", "a", None, None), None);
    }

    #[test]
    fn dm_messages_also_go_to_both_users() {
        let message = |room: &str| {
            let mut m = crate::test_support::msgs(&[1]).remove(0);
            m.room = room.to_owned();
            m
        };
        let public = message_routed(message("general"));
        assert_eq!(public.keys, vec!["room.general.message"]);
        assert!(public.users.is_empty());
        let dm = message_routed(message("dm:alice:bob"));
        assert_eq!(dm.keys, vec!["room.dm~alice~bob.message"]);
        let users: Vec<&str> = dm.users.iter().map(|c| c.user.as_str()).collect();
        assert_eq!(users, vec!["alice", "bob"]);
    }
}
