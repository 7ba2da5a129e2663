//! Read-only views of Redis, through the key layout of [`proto::keys`]: the list of
//! rooms (no command answers it: a room's state lives on its shard, and no dispatcher
//! holds them all), one room's full state, the gateways' registry, and the audit list.
//! Only reading commands are sent (`SCAN`, `GET`, `HGETALL`, `HLEN`, `ZCARD`, `SCARD`,
//! `ZRANGE`, `LRANGE`, `PTTL`); every change goes through a dispatcher.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context};
use common::store::RedisConnection;
use proto::keys::Keys;
use redis::{AsyncCommands, ScanOptions};
use serde::{Deserialize, Serialize};

use crate::settings::AdminConfig;

/// Keys one `SCAN` call is asked to look at.
const SCAN_COUNT: usize = 1000;
/// The most keys one listing reads: bounds a listing of a huge store.
const MAX_KEYS: usize = 10_000_000;

/// The store, read-only.
pub struct Store {
    conn: RedisConnection,
    keys: Keys,
    cluster: bool,
}

/// A room's keys as one pipeline reads them: settings, roles, presence, seq, epoch,
/// history length.
type RawRoom = (
    BTreeMap<String, String>,
    BTreeMap<String, String>,
    HashMap<String, String>,
    Option<u64>,
    Option<String>,
    u64,
);

/// A room in the list.
#[derive(Debug, Clone, Serialize)]
pub struct RoomSummary {
    pub room: String,
    pub visibility: String,
    pub announce: bool,
    /// Users with a role (members, moderators, owners).
    pub members: u64,
    /// Sessions present in the room now.
    pub present: u64,
    /// Messages kept in history.
    pub history: u64,
    /// The last seq given out.
    pub seq: u64,
}

/// A mute or a ban, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Restriction {
    #[serde(default)]
    pub user: String,
    pub by: String,
    #[serde(default)]
    pub until: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A session present in a room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Present {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub gateway: String,
}

/// Everything about one room.
#[derive(Debug, Clone, Serialize)]
pub struct RoomDetail {
    pub room: String,
    /// The settings hash as stored (`visibility`, `announce`, overrides, `created`).
    pub settings: BTreeMap<String, String>,
    /// User → role.
    pub roles: BTreeMap<String, String>,
    /// Session → who.
    pub present: BTreeMap<String, Present>,
    pub bans: Vec<Restriction>,
    pub mutes: Vec<Restriction>,
    pub seq: u64,
    pub epoch: Option<String>,
    pub history: u64,
}

/// A gateway from the registry.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayEntry {
    pub gateway: String,
    /// When its registration runs out unless renewed, unix ms.
    pub expires: u64,
    /// Whether its liveness key exists.
    pub alive: bool,
    /// Users it holds a connection of.
    pub users: u64,
}

impl Store {
    pub async fn open(config: &AdminConfig) -> anyhow::Result<Store> {
        let conn = common::store::connect(&config.redis)
            .await
            .context("connect to Redis")?;
        Ok(Store {
            cluster: matches!(conn, RedisConnection::Cluster(_)),
            conn,
            keys: Keys::new(config.redis.prefix.clone()),
        })
    }

    /// Every key matching `pattern`, bounded by [`MAX_KEYS`].
    async fn scan(&mut self, pattern: &str) -> anyhow::Result<Vec<String>> {
        if self.cluster {
            // A cluster's SCAN walks one node only: a partial list would mislead.
            bail!("listing keys is not supported on Redis Cluster (docs/ADMIN.md)");
        }
        let options = ScanOptions::default()
            .with_pattern(pattern)
            .with_count(SCAN_COUNT);
        let mut keys: redis::AsyncIter<String> = self.conn.scan_options(options).await?;
        let mut found = Vec::new();
        while let Some(key) = keys.next_item().await {
            found.push(key?);
            if found.len() > MAX_KEYS {
                bail!("more than {MAX_KEYS} keys match {pattern}: too many for one listing");
            }
        }
        // SCAN may return a key more than once.
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// The ids of every room that exists (has settings), dm rooms included, sorted.
    pub async fn room_ids(&mut self) -> anyhow::Result<Vec<String>> {
        let pattern = self.keys.meta_pattern();
        let keys = self.scan(&pattern).await?;
        Ok(keys
            .iter()
            .filter_map(|k| self.keys.room_of_meta(k).map(str::to_owned))
            .collect())
    }

    pub async fn rooms(&mut self) -> anyhow::Result<Vec<RoomSummary>> {
        let mut rooms = Vec::new();
        for room in self.room_ids().await? {
            let k = &self.keys;
            let (meta, members, present, history, seq): (
                HashMap<String, String>,
                u64,
                u64,
                u64,
                Option<u64>,
            ) = redis::pipe()
                .hgetall(k.meta(&room))
                .hlen(k.roles(&room))
                .hlen(k.presence(&room))
                .zcard(k.history(&room))
                .get(k.seq(&room))
                .query_async(&mut self.conn)
                .await?;
            if meta.is_empty() {
                continue; // gone (expired) since the scan
            }
            rooms.push(RoomSummary {
                visibility: meta.get("visibility").cloned().unwrap_or_default(),
                announce: meta.get("announce").map(String::as_str) == Some("1"),
                room,
                members,
                present,
                history,
                seq: seq.unwrap_or(0),
            });
        }
        Ok(rooms)
    }

    /// One room, or `None` when it does not exist.
    pub async fn room(&mut self, room: &str) -> anyhow::Result<Option<RoomDetail>> {
        let k = self.keys.clone();
        let (settings, roles, presence, seq, epoch, history): RawRoom = redis::pipe()
            .hgetall(k.meta(room))
            .hgetall(k.roles(room))
            .hgetall(k.presence(room))
            .get(k.seq(room))
            .get(k.epoch(room))
            .zcard(k.history(room))
            .query_async(&mut self.conn)
            .await?;
        if settings.is_empty() {
            return Ok(None);
        }
        let present = presence
            .into_iter()
            .filter_map(|(session, json)| Some((session, serde_json::from_str(&json).ok()?)))
            .collect();
        let bans = self
            .restrictions(&k.ban(room, "*"), &k.ban(room, ""))
            .await?;
        let mutes = self
            .restrictions(&k.mute(room, "*"), &k.mute(room, ""))
            .await?;
        Ok(Some(RoomDetail {
            room: room.to_owned(),
            settings,
            roles,
            present,
            bans,
            mutes,
            seq: seq.unwrap_or(0),
            epoch,
            history,
        }))
    }

    /// The restrictions whose keys match `pattern`; `stem` is the key without the user.
    async fn restrictions(
        &mut self,
        pattern: &str,
        stem: &str,
    ) -> anyhow::Result<Vec<Restriction>> {
        let mut found = Vec::new();
        for key in self.scan(pattern).await? {
            let json: Option<String> = self.conn.get(&key).await?;
            let Some(json) = json else { continue };
            if let Ok(mut restriction) = serde_json::from_str::<Restriction>(&json) {
                restriction.user = key.strip_prefix(stem).unwrap_or(&key).to_owned();
                found.push(restriction);
            }
        }
        Ok(found)
    }

    /// The gateways' registry: every registered gateway, live or lapsing.
    pub async fn gateways(&mut self) -> anyhow::Result<Vec<GatewayEntry>> {
        let registered: Vec<(String, f64)> = self
            .conn
            .zrange_withscores(self.keys.gateways(), 0, -1)
            .await?;
        let mut gateways = Vec::new();
        for (gateway, expires) in registered {
            let (alive, users): (bool, u64) = redis::pipe()
                .exists(self.keys.gateway_alive(&gateway))
                .scard(self.keys.gateway_users(&gateway))
                .query_async(&mut self.conn)
                .await?;
            gateways.push(GatewayEntry {
                gateway,
                expires: expires as u64,
                alive,
                users,
            });
        }
        Ok(gateways)
    }

    /// The live dispatchers, in id order (entries not yet expired by Redis's clock).
    pub async fn dispatchers(&mut self) -> anyhow::Result<Vec<String>> {
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut self.conn).await?;
        let now_ms = secs * 1000 + micros / 1000;
        let mut ids: Vec<String> = self
            .conn
            .zrangebyscore(self.keys.dispatchers(), now_ms, "+inf")
            .await?;
        ids.sort();
        Ok(ids)
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit(&mut self, limit: u32) -> anyhow::Result<Vec<serde_json::Value>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let raw: Vec<String> = self
            .conn
            .lrange(self.keys.audit(), 0, limit as isize - 1)
            .await?;
        Ok(raw
            .iter()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect())
    }
}
