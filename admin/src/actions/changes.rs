//! The subcommands that change something, each through `moderate` commands.

use anyhow::bail;
use proto::amqp::CommandBody;
use proto::client::{ModAction, Moderate, Role, RoomSettings, Visibility};
use proto::ids::{validate_room, RoomKind};
use proto::server::{Message, ServerBody, ServerFrame};

use super::{check_room, check_user, history, moderate, refused, report, Answered, Outcome};
use crate::cli::{
    parse_duration, LiftArgs, RestrictArgs, RoleArgs, RoomsArg, SettingsArgs, Switch, VisibilityArg,
};
use crate::link::Link;
use crate::settings::AdminConfig;
use crate::store::Store;

/// Sends one `moderate` per room and reports the answers.
async fn moderate_each(
    config: &AdminConfig,
    actions: Vec<Moderate>,
    json: bool,
) -> anyhow::Result<Outcome> {
    let mut link = Link::open(config).await?;
    let mut answers = Vec::new();
    for action in actions {
        let room = action.room.clone();
        match link.ask(CommandBody::Moderate(action)).await {
            Ok(frame) => answers.push(Answered::of(&room, &frame)),
            Err(e) => {
                link.close().await;
                return Err(e.context(format!("room {room}")));
            }
        }
    }
    link.close().await;
    report(&answers, json)
}

pub(super) async fn settings(
    config: &AdminConfig,
    args: &SettingsArgs,
    json: bool,
) -> anyhow::Result<Outcome> {
    check_room(&args.room)?;
    let change = RoomSettings {
        visibility: args.visibility.map(|v| match v {
            VisibilityArg::Public => Visibility::Public,
            VisibilityArg::Private => Visibility::Private,
        }),
        announce: args.announce.map(|a| a == Switch::On),
        history_limit: args.history_limit,
        history_on_join: args.history_on_join,
    };
    if change.is_empty() {
        bail!("nothing to change: give --visibility, --announce, --history-limit or --history-on-join");
    }
    let action = Moderate {
        settings: Some(change),
        ..moderate(&args.room, ModAction::Configure)
    };
    moderate_each(config, vec![action], json).await
}

pub(super) async fn role(
    config: &AdminConfig,
    action: ModAction,
    args: &RoleArgs,
    json: bool,
) -> anyhow::Result<Outcome> {
    check_room(&args.room)?;
    check_user(&args.user)?;
    let role = Role::parse(&args.role)
        .filter(|r| *r != Role::Owner)
        .ok_or_else(|| anyhow::anyhow!("role {:?}: member or moderator", args.role))?;
    let action = Moderate {
        user: Some(args.user.clone()),
        role: Some(role),
        ..moderate(&args.room, action)
    };
    moderate_each(config, vec![action], json).await
}

/// The rooms an action covers: those named, or every room but dm rooms.
async fn target_rooms(config: &AdminConfig, rooms: &RoomsArg) -> anyhow::Result<Vec<String>> {
    if !rooms.all_rooms {
        for room in &rooms.rooms {
            check_room(room)?;
        }
        return Ok(rooms.rooms.clone());
    }
    let ids = Store::open(config).await?.room_ids().await?;
    Ok(ids
        .into_iter()
        .filter(|r| matches!(validate_room(r), Ok(RoomKind::Public)))
        .collect())
}

pub(super) async fn restrict(
    config: &AdminConfig,
    action: ModAction,
    args: &RestrictArgs,
    json: bool,
) -> anyhow::Result<Outcome> {
    check_user(&args.user)?;
    let duration_s = match (&args.duration, args.until) {
        (Some(text), _) => Some(parse_duration(text).map_err(anyhow::Error::msg)?),
        (None, Some(until)) => {
            let now_s = common::now_ms() / 1000;
            if until <= now_s {
                bail!("--until {until} is not in the future");
            }
            Some(until - now_s)
        }
        (None, None) => None,
    };
    let actions = target_rooms(config, &args.rooms)
        .await?
        .iter()
        .map(|room| Moderate {
            user: Some(args.user.clone()),
            duration_s,
            reason: args.reason.clone(),
            ..moderate(room, action)
        })
        .collect();
    moderate_each(config, actions, json).await
}

pub(super) async fn lift(
    config: &AdminConfig,
    action: ModAction,
    args: &LiftArgs,
    json: bool,
) -> anyhow::Result<Outcome> {
    check_user(&args.user)?;
    let actions = target_rooms(config, &args.rooms)
        .await?
        .iter()
        .map(|room| Moderate {
            user: Some(args.user.clone()),
            ..moderate(room, action)
        })
        .collect();
    moderate_each(config, actions, json).await
}

/// Finds the message with `seq` (through `history`), then deletes it by its id.
pub(super) async fn delete(
    config: &AdminConfig,
    room: &str,
    seq: u64,
    reason: Option<String>,
    json: bool,
) -> anyhow::Result<Outcome> {
    check_room(room)?;
    let mut link = Link::open(config).await?;
    let found = link.ask(history(room, seq.checked_add(1), 1)).await;
    let message: Option<Message> = match found {
        Ok(ServerFrame {
            body: ServerBody::History(page),
            ..
        }) => page.messages.into_iter().find(|m| m.seq == seq),
        Ok(frame) => {
            link.close().await;
            return refused(room, &frame, json);
        }
        Err(e) => {
            link.close().await;
            return Err(e);
        }
    };
    let Some(message) = message else {
        link.close().await;
        bail!("room {room} has no message with seq {seq} in its history");
    };
    let action = Moderate {
        msg_id: Some(message.id),
        reason,
        ..moderate(room, ModAction::Delete)
    };
    let answer = link.ask(CommandBody::Moderate(action)).await;
    link.close().await;
    report(&[Answered::of(room, &answer?)], json)
}
