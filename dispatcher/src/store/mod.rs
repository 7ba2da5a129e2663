//! The dispatcher's Redis data model, and nothing about chat rules.
//!
//! Every key is under `<redis.prefix>:` (see [`Keys`]):
//! - `room:<r>:meta` hash (`visibility`, `announce`, `created`), `room:<r>:roles` hash
//!   user → role, `room:<r>:mute:<user>` and `room:<r>:ban:<user>` flags;
//! - `room:<r>:seq` counter, `room:<r>:epoch` string, `room:<r>:history` sorted set
//!   (score = seq, member = message JSON, the newest `history_limit` kept);
//! - `room:<r>:presence` hash session → `{id, name, gateway}`;
//! - `dedup:<user>:<ref>` the message first stored for that ref, with an expiry.
//!
//! Appending a message is one Lua script ([`RoomStore::append`]) so that the seq, the
//! history entry and the dedup key are written together or not at all. Everything else
//! is a plain command or a pipeline: one shard's commands are handled one at a time, so
//! a room is never written by two handlers at once.

mod draft;
mod keys;
mod model;

use std::collections::HashMap;
use std::sync::Arc;

use proto::client::Role;
use proto::server::Message;
use redis::aio::ConnectionManager;
use redis::Script;

pub use draft::Draft;
pub use keys::Keys;
use model::{parse_messages, parse_meta, parse_presence, parse_role};
pub use model::{PresenceEntry, Retention, RoomMeta, RoomState, Standing, StoreError, Visibility};

struct Scripts {
    append: Script,
    state: Script,
    create: Script,
}

/// The rooms in Redis. Cloning is shallow: the connection manager is a handle to one
/// multiplexed connection that reconnects by itself.
#[derive(Clone)]
pub struct RoomStore {
    conn: ConnectionManager,
    keys: Keys,
    scripts: Arc<Scripts>,
}

/// A new epoch candidate; only used when the room has none.
fn fresh_epoch() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

impl RoomStore {
    pub fn new(conn: ConnectionManager, prefix: &str) -> RoomStore {
        let scripts = Scripts {
            append: Script::new(include_str!("append.lua")),
            state: Script::new(include_str!("state.lua")),
            create: Script::new(include_str!("create.lua")),
        };
        RoomStore {
            conn,
            keys: Keys::new(prefix),
            scripts: Arc::new(scripts),
        }
    }

    /// The room's settings, the user's role, and whether they are muted or banned.
    pub async fn standing(&self, room: &str, user: &str) -> Result<Standing, StoreError> {
        let k = &self.keys;
        let (meta, role, muted, banned): (HashMap<String, String>, Option<String>, bool, bool) =
            redis::pipe()
                .cmd("HGETALL")
                .arg(k.meta(room))
                .cmd("HGET")
                .arg(k.roles(room))
                .arg(user)
                .cmd("EXISTS")
                .arg(k.mute(room, user))
                .cmd("EXISTS")
                .arg(k.ban(room, user))
                .query_async(&mut self.conn.clone())
                .await?;
        let role = role.map(|r| parse_role(room, &r)).transpose()?;
        Ok(Standing {
            meta: parse_meta(&meta),
            role,
            muted,
            banned,
        })
    }

    /// Creates a public room owned by `owner`. False when the room already exists.
    pub async fn create_public_room(
        &self,
        room: &str,
        owner: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let created: i64 = self
            .scripts
            .create
            .key(self.keys.meta(room))
            .key(self.keys.roles(room))
            .arg(now_ms)
            .arg(owner)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(created == 1)
    }

    /// Gives `user` the member role unless they have one; returns their role.
    pub async fn enroll(&self, room: &str, user: &str) -> Result<Role, StoreError> {
        let roles = self.keys.roles(room);
        let (_added, role): (bool, Option<String>) = redis::pipe()
            .cmd("HSETNX")
            .arg(&roles)
            .arg(user)
            .arg(Role::Member.as_str())
            .cmd("HGET")
            .arg(&roles)
            .arg(user)
            .query_async(&mut self.conn.clone())
            .await?;
        let role =
            role.ok_or_else(|| StoreError::Data(format!("room {room}: role of {user} vanished")))?;
        parse_role(room, &role)
    }

    /// The room's epoch (created now if it has none) and latest seq.
    pub async fn state(&self, room: &str) -> Result<RoomState, StoreError> {
        let (epoch, seq): (String, u64) = self
            .scripts
            .state
            .key(self.keys.epoch(room))
            .key(self.keys.seq(room))
            .arg(fresh_epoch())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(RoomState { epoch, seq })
    }

    /// Stored messages with `after < seq <= upto`, ascending.
    pub async fn messages_between(
        &self,
        room: &str,
        after: u64,
        upto: u64,
    ) -> Result<Vec<Message>, StoreError> {
        let raw: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.history(room))
            .arg(format!("({after}"))
            .arg(upto)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(parse_messages(room, raw))
    }

    /// The newest `count` messages, ascending.
    pub async fn recent(&self, room: &str, count: u64) -> Result<Vec<Message>, StoreError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let start = -i64::try_from(count).unwrap_or(i64::MAX);
        let raw: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.keys.history(room))
            .arg(start)
            .arg(-1)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(parse_messages(room, raw))
    }

    /// Up to `count` messages with seq < `before` (or the newest), newest first.
    pub async fn newest_before(
        &self,
        room: &str,
        before: Option<u64>,
        count: u64,
    ) -> Result<Vec<Message>, StoreError> {
        let max = before.map_or_else(|| "+inf".to_owned(), |b| format!("({b}"));
        let raw: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(self.keys.history(room))
            .arg(max)
            .arg("-inf")
            .arg("LIMIT")
            .arg(0)
            .arg(count)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(parse_messages(room, raw))
    }

    /// Every presence entry of the room, by session.
    pub async fn presence(&self, room: &str) -> Result<Vec<(String, PresenceEntry)>, StoreError> {
        let raw: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.presence(room))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(parse_presence(room, raw))
    }

    /// Records `session` as present and returns every entry, the new one included.
    pub async fn enter(
        &self,
        room: &str,
        session: &str,
        entry: &PresenceEntry,
    ) -> Result<Vec<(String, PresenceEntry)>, StoreError> {
        let json = serde_json::to_string(entry).map_err(|e| StoreError::Data(e.to_string()))?;
        let key = self.keys.presence(room);
        let (raw,): (HashMap<String, String>,) = redis::pipe()
            .cmd("HSET")
            .arg(&key)
            .arg(session)
            .arg(json)
            .ignore()
            .cmd("HGETALL")
            .arg(&key)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(parse_presence(room, raw))
    }

    /// Removes `session`'s presence entry. False when there was none.
    pub async fn exit(&self, room: &str, session: &str) -> Result<bool, StoreError> {
        let removed: u64 = redis::cmd("HDEL")
            .arg(self.keys.presence(room))
            .arg(session)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(removed > 0)
    }

    /// The message first stored for `(user, reference)`, while its dedup key lives.
    pub async fn deduplicated(
        &self,
        user: &str,
        reference: &str,
    ) -> Result<Option<Message>, StoreError> {
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.keys.dedup(user, reference))
            .query_async(&mut self.conn.clone())
            .await?;
        raw.map(|json| {
            serde_json::from_str(&json)
                .map_err(|e| StoreError::Data(format!("dedup entry of {user}: {e}")))
        })
        .transpose()
    }

    /// Numbers and stores a message atomically (see `append.lua`), remembering it under
    /// `(user, reference)` when a reference is given.
    pub async fn append(
        &self,
        room: &str,
        draft: &Draft,
        dedup: Option<(&str, &str)>,
        retention: Retention,
    ) -> Result<Message, StoreError> {
        let k = &self.keys;
        let mut call = self.scripts.append.key(k.epoch(room));
        call.key(k.seq(room)).key(k.history(room));
        if let Some((user, reference)) = dedup {
            call.key(k.dedup(user, reference));
        }
        call.arg(fresh_epoch())
            .arg(draft.head())
            .arg(draft.tail())
            .arg(retention.history_limit.max(1))
            .arg(retention.dedup_ttl_s.max(1));
        let json: String = call.invoke_async(&mut self.conn.clone()).await?;
        serde_json::from_str(&json).map_err(|e| StoreError::Data(format!("appended message: {e}")))
    }
}
