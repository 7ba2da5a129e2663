//! What each subcommand does. Changes ([`changes`]) are commands to the dispatchers, as
//! the admin bot ([`crate::link::Link`]); each answer is either an `ack`, or an `error`
//! that says why Warren refused (printed, and the exit status says so). Reads
//! ([`reads`]) of what no command answers go to Redis and the broker, read-only
//! ([`crate::store::Store`], [`crate::broker::Broker`]).

mod changes;
mod reads;

use std::process::ExitCode;

use proto::amqp::CommandBody;
use proto::client::{History, ModAction, Moderate, MAX_HISTORY_LIMIT};
use proto::ids::{validate_room, validate_user};
use proto::server::{ServerBody, ServerFrame};
use serde::Serialize;

use crate::cli::{Cli, Command};
use crate::output::{print, Table};
use crate::settings::AdminConfig;

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
pub(super) struct Answered {
    room: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

impl Answered {
    pub(super) fn of(room: &str, frame: &ServerFrame) -> Answered {
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
        Command::Rooms => reads::rooms(config, json).await,
        Command::Room { room } => reads::room_detail(config, room, json).await,
        Command::Settings(args) => changes::settings(config, args, json).await,
        Command::Grant(args) => changes::role(config, ModAction::Grant, args, json).await,
        Command::Revoke(args) => changes::role(config, ModAction::Revoke, args, json).await,
        Command::Ban(args) => changes::restrict(config, ModAction::Ban, args, json).await,
        Command::Mute(args) => changes::restrict(config, ModAction::Mute, args, json).await,
        Command::Unban(args) => changes::lift(config, ModAction::Unban, args, json).await,
        Command::Unmute(args) => changes::lift(config, ModAction::Unmute, args, json).await,
        Command::Messages {
            room,
            before,
            limit,
        } => reads::messages(config, room, *before, *limit, json).await,
        Command::Delete { room, seq, reason } => {
            changes::delete(config, room, *seq, reason.clone(), json).await
        }
        Command::Shards => reads::shards(config, json).await,
        Command::Gateways => reads::gateways(config, json).await,
        Command::Audit { limit } => reads::audit(config, *limit, json).await,
    }
}

pub(super) fn check_room(room: &str) -> anyhow::Result<()> {
    validate_room(room).map_err(|e| anyhow::anyhow!("room {room:?}: {e}"))?;
    Ok(())
}

pub(super) fn check_user(user: &str) -> anyhow::Result<()> {
    validate_user(user).map_err(|e| anyhow::anyhow!("user {user:?}: {e}"))?;
    Ok(())
}

pub(super) fn moderate(room: &str, action: ModAction) -> Moderate {
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

pub(super) fn history(room: &str, before: Option<u64>, limit: u32) -> CommandBody {
    CommandBody::History(History {
        room: room.to_owned(),
        before,
        limit: Some(limit.min(MAX_HISTORY_LIMIT)),
    })
}

/// Prints an answer that is not the one asked for, and says the run was refused.
pub(super) fn refused(room: &str, frame: &ServerFrame, json: bool) -> anyhow::Result<Outcome> {
    report(&[Answered::of(room, frame)], json)
}

/// Prints each command's answer; refused if any was.
pub(super) fn report(answers: &[Answered], json: bool) -> anyhow::Result<Outcome> {
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
