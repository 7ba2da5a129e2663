//! The audit trail of moderation: every action a `moderate` command carried out is
//! logged (target `warren::audit`) with who took it, and recorded in the store's capped
//! audit list, so that an operator can tell afterwards who banned, deleted or
//! reconfigured what, whether a person, a bot or the admin CLI.

use serde::Serialize;

use proto::client::ModAction;
use proto::server::ModerationEvent;

use super::ctx::{Ctx, Failure};

/// One entry of the audit list, as stored (JSON).
#[derive(Debug, Serialize)]
struct Entry<'a> {
    /// When the action was carried out, unix milliseconds.
    ts: u64,
    actor: Actor<'a>,
    room: &'a str,
    action: ModAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(flatten)]
    event: Details<'a>,
}

#[derive(Debug, Serialize)]
struct Actor<'a> {
    id: &'a str,
    bot: bool,
    admin: bool,
}

/// What the room was told about the action, beyond who and what.
#[derive(Debug, Serialize)]
struct Details<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    msg_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<proto::client::Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    settings: Option<&'a proto::client::RoomSettings>,
}

/// Logs and records the action `event` describes, carried out for `ctx`'s command.
pub(super) async fn record(ctx: &Ctx<'_>, event: &ModerationEvent) -> Result<(), Failure> {
    let actor = &ctx.cmd.actor;
    let entry = Entry {
        ts: common::now_ms(),
        actor: Actor {
            id: &actor.id,
            bot: actor.bot,
            admin: actor.is_admin(),
        },
        room: &event.room,
        action: event.action,
        user: event.user.as_ref().map(|u| u.id.as_str()),
        event: Details {
            msg_id: event.msg_id.as_deref(),
            role: event.role,
            until: event.until,
            reason: event.reason.as_deref(),
            settings: event.settings.as_ref(),
        },
    };
    let json = serde_json::to_string(&entry)
        .map_err(|e| Failure::Store(crate::store::StoreError::Data(e.to_string())))?;
    tracing::info!(target: "warren::audit", actor = %actor.id, bot = actor.bot, admin = actor.is_admin(), room = %event.room, entry = %json, "moderation");
    ctx.store.audit(&json).await?;
    Ok(())
}
