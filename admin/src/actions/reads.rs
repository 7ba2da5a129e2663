//! The subcommands that only look: rooms, one room, history pages, shards, gateways
//! and the audit list.

use anyhow::bail;
use dispatcher::balance::Assignment;
use proto::amqp::Names;
use proto::server::ServerBody;
use serde::Serialize;

use super::{check_room, history, refused, Outcome};
use crate::broker::{Broker, QueueCounts};
use crate::link::Link;
use crate::output::{print, time, Table};
use crate::settings::AdminConfig;
use crate::store::Store;

pub(super) async fn rooms(config: &AdminConfig, json: bool) -> anyhow::Result<Outcome> {
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

pub(super) async fn room_detail(
    config: &AdminConfig,
    room: &str,
    json: bool,
) -> anyhow::Result<Outcome> {
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

pub(super) async fn messages(
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

pub(super) async fn shards(config: &AdminConfig, json: bool) -> anyhow::Result<Outcome> {
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

pub(super) async fn gateways(config: &AdminConfig, json: bool) -> anyhow::Result<Outcome> {
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

pub(super) async fn audit(config: &AdminConfig, limit: u32, json: bool) -> anyhow::Result<Outcome> {
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
