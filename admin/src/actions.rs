//! What each subcommand does. Changes are commands to the dispatchers, as the admin
//! bot ([`Link`]); each answer is either an `ack`, or an `error` that says why Warren
//! refused (printed, and the exit status says so). Reads of what no command answers go
//! to Redis and the broker, read-only ([`Store`], [`Broker`]).

use std::process::ExitCode;

use anyhow::bail;
use dispatcher::balance::Assignment;
use proto::amqp::{CommandBody, Names};
use proto::client::{
    History, ModAction, Moderate, Role, RoomSettings, Visibility, MAX_HISTORY_LIMIT,
};
use proto::ids::{validate_room, validate_user, RoomKind};
use proto::server::{Message, ServerBody, ServerFrame};
use serde::Serialize;

use crate::broker::{Broker, QueueCounts};
use crate::cli::{
    parse_duration, Cli, Command, LiftArgs, RestrictArgs, RoleArgs, RoomsArg, SettingsArgs, Switch,
    VisibilityArg,
};
use crate::link::Link;
use crate::output::{print, time, Table};
use crate::settings::AdminConfig;
use crate::store::Store;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Warren refused at least one command (permissions, a missing room, ...).
    Refused,
}

impl Outcome {
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Done => ExitCode::SUCCESS,
            Outcome::Refused => ExitCode::from(2),
        }
    }
}

/// The answer to one command, for output.
#[derive(Debug, Serialize)]
struct Answered {
    room: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

impl Answered {
    fn of(room: &str, frame: &ServerFrame) -> Answered {
        match &frame.body {
            ServerBody::Error(e) => Answered {
                room: room.to_owned(),
                ok: false,
                code: Some(e.code.as_str().to_owned()),
                message: Some(e.message.clone()),
            },
            _ => Answered {
                room: room.to_owned(),
                ok: true,
                code: None,
                message: None,
            },
        }
    }
}

/// Runs the subcommand `cli` names.
pub async fn run(config: &AdminConfig, cli: &Cli) -> anyhow::Result<Outcome> {
    let json = cli.json;
    match &cli.command {
        Command::Rooms => rooms(config, json).await,
        Command::Room { room } => room_detail(config, room, json).await,
        Command::Settings(args) => settings(config, args, json).await,
        Command::Grant(args) => role(config, ModAction::Grant, args, json).await,
        Command::Revoke(args) => role(config, ModAction::Revoke, args, json).await,
        Command::Ban(args) => restrict(config, ModAction::Ban, args, json).await,
        Command::Mute(args) => restrict(config, ModAction::Mute, args, json).await,
        Command::Unban(args) => lift(config, ModAction::Unban, args, json).await,
        Command::Unmute(args) => lift(config, ModAction::Unmute, args, json).await,
        Command::Messages {
            room,
            before,
            limit,
        } => messages(config, room, *before, *limit, json).await,
        Command::Delete { room, seq, reason } => {
            delete(config, room, *seq, reason.clone(), json).await
        }
        Command::Shards => shards(config, json).await,
        Command::Gateways => gateways(config, json).await,
        Command::Audit { limit } => audit(config, *limit, json).await,
    }
}

fn check_room(room: &str) -> anyhow::Result<()> {
    validate_room(room).map_err(|e| anyhow::anyhow!("room {room:?}: {e}"))?;
    Ok(())
}

fn check_user(user: &str) -> anyhow::Result<()> {
    validate_user(user).map_err(|e| anyhow::anyhow!("user {user:?}: {e}"))?;
    Ok(())
}

// ---- reads ---------------------------------------------------------------------------

async fn rooms(config: &AdminConfig, json: bool) -> anyhow::Result<Outcome> {
    let rooms = Store::open(config).await?.rooms().await?;
    print(json, &rooms, |rooms| {
        let mut t = Table::new(&[
            "room",
            "visibility",
            "announce",
            "members",
            "present",
            "history",
            "seq",
        ]);
        for r in rooms {
            t.row(vec![
                r.room.clone(),
                r.visibility.clone(),
                if r.announce { "on" } else { "off" }.into(),
                r.members.to_string(),
                r.present.to_string(),
                r.history.to_string(),
                r.seq.to_string(),
            ]);
        }
        t.render()
    });
    Ok(Outcome::Done)
}

async fn room_detail(config: &AdminConfig, room: &str, json: bool) -> anyhow::Result<Outcome> {
    check_room(room)?;
    let Some(detail) = Store::open(config).await?.room(room).await? else {
        bail!("no room {room:?}");
    };
    let now = common::now_ms();
    print(json, &detail, |d| {
        let mut out = vec![format!(
            "room {}  seq {}  epoch {}  history {}",
            d.room,
            d.seq,
            d.epoch.as_deref().unwrap_or("-"),
            d.history
        )];
        let settings: Vec<String> = d.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push(format!("settings: {}", settings.join(" ")));
        let mut roles = Table::new(&["user", "role", "present"]);
        for (user, role) in &d.roles {
            let sessions = d.present.values().filter(|p| p.id == *user).count();
            roles.row(vec![user.clone(), role.clone(), sessions.to_string()]);
        }
        out.push(String::new());
        out.push(roles.render());
        for (what, list) in [("bans", &d.bans), ("mutes", &d.mutes)] {
            let mut t = Table::new(&[what, "by", "until", "reason"]);
            for r in list {
                t.row(vec![
                    r.user.clone(),
                    r.by.clone(),
                    time(r.until, now),
                    r.reason.clone().unwrap_or_default(),
                ]);
            }
            out.push(String::new());
            out.push(t.render());
        }
        out.join("\n")
    });
    Ok(Outcome::Done)
}

async fn messages(
    config: &AdminConfig,
    room: &str,
    before: Option<u64>,
    limit: u32,
    json: bool,
) -> anyhow::Result<Outcome> {
    check_room(room)?;
    let mut link = Link::open(config).await?;
    let frame = link.ask(history(room, before, limit)).await;
    link.close().await;
    let frame = frame?;
    let ServerBody::History(page) = frame.body else {
        return refused(room, &frame, json);
    };
    print(json, &page, |page| {
        let mut t = Table::new(&["seq", "id", "from", "text"]);
        for m in &page.messages {
            t.row(vec![
                m.seq.to_string(),
                m.id.clone(),
                m.from.id.clone(),
                m.text.clone(),
            ]);
        }
        t.render()
    });
    Ok(Outcome::Done)
}

async fn shards(config: &AdminConfig, json: bool) -> anyhow::Result<Outcome> {
    #[derive(Serialize)]
    struct ShardRow {
        shard: u32,
        queue: String,
        /// The dispatcher the live dispatchers share this shard to.
        owner: Option<String>,
        #[serde(flatten)]
        counts: Option<QueueCounts>,
    }
    let roster = Store::open(config).await?.dispatchers().await?;
    let shards = config.amqp.shards;
    let assignment = roster
        .first()
        .map(|me| Assignment::share(shards, &roster, me));
    let names = Names::new(config.amqp.prefix.clone());
    let mut broker = Broker::open(config).await?;
    let mut rows = Vec::new();
    for shard in 0..shards {
        let queue = names.commands_queue(shard);
        let counts = broker.counts(&queue).await?;
        rows.push(ShardRow {
            shard,
            owner: assignment
                .as_ref()
                .and_then(|a| a.owner(shard))
                .map(str::to_owned),
            queue,
            counts,
        });
    }
    broker.close().await;
    print(json, &rows, |rows| {
        let mut t = Table::new(&["shard", "queue", "owner", "backlog", "consumers"]);
        for r in rows {
            let (backlog, consumers) = match r.counts {
                Some(c) => (c.messages.to_string(), c.consumers.to_string()),
                None => ("no queue".into(), "-".into()),
            };
            t.row(vec![
                r.shard.to_string(),
                r.queue.clone(),
                r.owner.clone().unwrap_or_else(|| "none".into()),
                backlog,
                consumers,
            ]);
        }
        t.render()
    });
    Ok(Outcome::Done)
}

async fn gateways(config: &AdminConfig, json: bool) -> anyhow::Result<Outcome> {
    #[derive(Serialize)]
    struct GatewayRow {
        #[serde(flatten)]
        entry: crate::store::GatewayEntry,
        queue: String,
        /// Its queue's counts; none when the queue is gone.
        #[serde(flatten)]
        counts: Option<QueueCounts>,
    }
    let entries = Store::open(config).await?.gateways().await?;
    let names = Names::new(config.amqp.prefix.clone());
    let mut broker = Broker::open(config).await?;
    let mut rows = Vec::new();
    for entry in entries {
        let queue = names.gateway_queue(&entry.gateway);
        let counts = broker.counts(&queue).await?;
        rows.push(GatewayRow {
            entry,
            queue,
            counts,
        });
    }
    broker.close().await;
    let now = common::now_ms();
    print(json, &rows, |rows| {
        let mut t = Table::new(&["gateway", "alive", "users", "queue", "backlog", "expires"]);
        for r in rows {
            t.row(vec![
                r.entry.gateway.clone(),
                if r.entry.alive { "yes" } else { "no" }.into(),
                r.entry.users.to_string(),
                r.queue.clone(),
                r.counts
                    .map_or_else(|| "no queue".into(), |c| c.messages.to_string()),
                time(Some(r.entry.expires), now),
            ]);
        }
        t.render()
    });
    Ok(Outcome::Done)
}

async fn audit(config: &AdminConfig, limit: u32, json: bool) -> anyhow::Result<Outcome> {
    let entries = Store::open(config).await?.audit(limit).await?;
    let now = common::now_ms();
    print(json, &entries, |entries| {
        let mut t = Table::new(&["when", "actor", "action", "room", "user", "details"]);
        for e in entries {
            let field = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
            let actor = e["actor"]["id"].as_str().unwrap_or("").to_owned();
            let details: Vec<String> = ["msg_id", "role", "until", "reason", "settings"]
                .iter()
                .filter_map(|k| e.get(*k).map(|v| format!("{k}={v}")))
                .collect();
            t.row(vec![
                time(e["ts"].as_u64(), now),
                actor,
                field("action"),
                field("room"),
                field("user"),
                details.join(" "),
            ]);
        }
        t.render()
    });
    Ok(Outcome::Done)
}

// ---- changes -------------------------------------------------------------------------

fn moderate(room: &str, action: ModAction) -> Moderate {
    Moderate {
        room: room.to_owned(),
        action,
        user: None,
        msg_id: None,
        role: None,
        duration_s: None,
        reason: None,
        settings: None,
    }
}

fn history(room: &str, before: Option<u64>, limit: u32) -> CommandBody {
    CommandBody::History(History {
        room: room.to_owned(),
        before,
        limit: Some(limit.min(MAX_HISTORY_LIMIT)),
    })
}

/// Prints an answer that is not the one asked for, and says the run was refused.
fn refused(room: &str, frame: &ServerFrame, json: bool) -> anyhow::Result<Outcome> {
    report(&[Answered::of(room, frame)], json)
}

/// Prints each command's answer; refused if any was.
fn report(answers: &[Answered], json: bool) -> anyhow::Result<Outcome> {
    print(json, &answers, |answers| {
        let mut t = Table::new(&["room", "result"]);
        for a in answers.iter() {
            let result = if a.ok {
                "ok".to_owned()
            } else {
                format!(
                    "refused: {} ({})",
                    a.code.as_deref().unwrap_or(""),
                    a.message.as_deref().unwrap_or("")
                )
            };
            t.row(vec![a.room.clone(), result]);
        }
        t.render()
    });
    Ok(if answers.iter().all(|a| a.ok) {
        Outcome::Done
    } else {
        Outcome::Refused
    })
}

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

async fn settings(
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

async fn role(
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

async fn restrict(
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

async fn lift(
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
async fn delete(
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
