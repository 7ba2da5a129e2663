//! Rooms, roles and restrictions in the store: a user's standing in a room, room
//! creation and configuration, roles, mutes and bans, a dm room's joiners, and the
//! per-user counters (rooms created this hour, token buckets).

use std::collections::HashMap;

use proto::client::{Role, RoomSettings};
use proto::server::Message;

use super::keys::Dedup;
use super::model::{
    parse_dedup, parse_meta, parse_role, ConfiguredRoom, Restriction, Standing, StoreError,
    Visibility,
};
use super::RoomStore;

/// What the store says about a send before storing it.
#[derive(Debug, Clone, PartialEq)]
pub enum Prior {
    /// A retry: the message first stored for it.
    Stored(Message),
    /// A new send, and the sender's standing in the room.
    New(Standing),
}

/// Which restriction a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestrictionKind {
    Mute,
    Ban,
}

impl RoomStore {
    /// The room's settings, the user's role, and whether they are muted or banned.
    pub async fn standing(&self, room: &str, user: &str) -> Result<Standing, StoreError> {
        let mut pipe = redis::pipe();
        self.read_standing(&mut pipe, room, user);
        let (meta, role, muted, banned): RawStanding = pipe.query_async(&mut self.conn()).await?;
        standing_of(room, meta, role, muted, banned)
    }

    /// [`RoomStore::deduplicated`] and [`RoomStore::standing`] in one round trip: what a
    /// `send` needs to know before it stores anything. The standing is only read when
    /// the send is new.
    pub async fn deduplicated_or_standing(
        &self,
        dedup: &Dedup<'_>,
        room: &str,
        user: &str,
    ) -> Result<Prior, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(self.keys.dedup(dedup));
        self.read_standing(&mut pipe, room, user);
        let (first, meta, role, muted, banned): (
            Option<String>,
            HashMap<String, String>,
            Option<String>,
            bool,
            bool,
        ) = pipe.query_async(&mut self.conn()).await?;
        match parse_dedup(dedup, first)? {
            Some(first) => Ok(Prior::Stored(first)),
            None => Ok(Prior::New(standing_of(room, meta, role, muted, banned)?)),
        }
    }

    /// Adds the reads of [`RoomStore::standing`] to `pipe`; their replies are a
    /// [`RawStanding`].
    fn read_standing(&self, pipe: &mut redis::Pipeline, room: &str, user: &str) {
        let k = &self.keys;
        pipe.cmd("HGETALL")
            .arg(k.meta(room))
            .cmd("HGET")
            .arg(k.roles(room))
            .arg(user)
            .cmd("EXISTS")
            .arg(k.mute(room, user))
            .cmd("EXISTS")
            .arg(k.ban(room, user));
    }

    /// A user's role in a room.
    pub async fn role(&self, room: &str, user: &str) -> Result<Option<Role>, StoreError> {
        let role: Option<String> = redis::cmd("HGET")
            .arg(self.keys.roles(room))
            .arg(user)
            .query_async(&mut self.conn())
            .await?;
        role.map(|r| parse_role(room, &r)).transpose()
    }

    /// Sets `user`'s role, or removes it (`None`).
    pub async fn set_role(
        &self,
        room: &str,
        user: &str,
        role: Option<Role>,
    ) -> Result<(), StoreError> {
        let cmd = match role {
            Some(role) => {
                let mut c = redis::cmd("HSET");
                c.arg(self.keys.roles(room)).arg(user).arg(role.as_str());
                c
            }
            None => {
                let mut c = redis::cmd("HDEL");
                c.arg(self.keys.roles(room)).arg(user);
                c
            }
        };
        let _: i64 = cmd.query_async(&mut self.conn()).await?;
        Ok(())
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
            .invoke_async(&mut self.conn())
            .await?;
        Ok(created == 1)
    }

    /// Takes one token from `user`'s bucket for `what` (refilled at `per_sec`, holding at
    /// most `burst`); false when it is empty. One bucket per user across every
    /// dispatcher, so a user's budget holds whichever gateways they send through.
    pub async fn take_token(
        &self,
        what: &str,
        user: &str,
        per_sec: u32,
        burst: u32,
    ) -> Result<bool, StoreError> {
        let taken: i64 = self
            .scripts
            .bucket
            .key(self.keys.bucket(what, user))
            .arg(per_sec)
            .arg(burst)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(taken == 1)
    }

    /// Gives the rooms' keys `idle` more to live (see [`crate::retention`]).
    pub async fn touch_rooms(
        &self,
        rooms: &std::collections::HashSet<String>,
        idle: std::time::Duration,
    ) -> Result<(), StoreError> {
        let rooms = rooms.iter().map(String::as_str);
        common::store::touch_rooms(&mut self.conn(), self.keys.prefix(), rooms, idle).await?;
        Ok(())
    }

    /// Records that `user` joined dm room `room`.
    pub async fn mark_joined(&self, room: &str, user: &str) -> Result<(), StoreError> {
        let _: () = redis::cmd("SADD")
            .arg(self.keys.joined(room))
            .arg(user)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Whether `user` ever joined dm room `room`.
    pub async fn has_joined(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        let joined: bool = redis::cmd("SISMEMBER")
            .arg(self.keys.joined(room))
            .arg(user)
            .query_async(&mut self.conn())
            .await?;
        Ok(joined)
    }

    /// Whether anything was ever stored in `room` (it has a seq counter).
    pub async fn has_started(&self, room: &str) -> Result<bool, StoreError> {
        let exists: bool = redis::cmd("EXISTS")
            .arg(self.keys.seq(room))
            .query_async(&mut self.conn())
            .await?;
        Ok(exists)
    }

    /// Counts one more room created by `user` in the current hour; returns the count,
    /// this one included. The counter expires with its hour.
    pub async fn count_room_created(&self, user: &str, now_ms: u64) -> Result<u64, StoreError> {
        let hour = now_ms / 3_600_000;
        let key = self.keys.rooms_created(user, hour);
        let (count, ()): (u64, ()) = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .expire(&key, 3600)
            .query_async(&mut self.conn())
            .await?;
        Ok(count)
    }

    /// Creates or updates a room from configuration (see `configure.lua`).
    pub async fn configure(&self, room: &ConfiguredRoom, now_ms: u64) -> Result<(), StoreError> {
        let optional = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
        let mut call = self.scripts.configure.key(self.keys.meta(&room.id));
        call.key(self.keys.roles(&room.id))
            .arg(room.meta.visibility.as_str())
            .arg(if room.meta.announce { "1" } else { "0" })
            .arg(optional(room.meta.history_limit))
            .arg(optional(room.meta.history_on_join))
            .arg(now_ms)
            .arg(room.owners.len())
            .arg(&room.owners)
            .arg(&room.moderators);
        let _: i64 = call.invoke_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Changes the settings `change` names in an existing room's settings hash; the
    /// others stay. (Rooms from configuration are written again from it at start.)
    pub async fn update_settings(
        &self,
        room: &str,
        change: &RoomSettings,
    ) -> Result<(), StoreError> {
        let mut fields: Vec<(&str, String)> = Vec::new();
        if let Some(visibility) = change.visibility {
            let visibility = match visibility {
                proto::client::Visibility::Public => Visibility::Public,
                proto::client::Visibility::Private => Visibility::Private,
            };
            fields.push(("visibility", visibility.as_str().to_owned()));
        }
        if let Some(announce) = change.announce {
            fields.push(("announce", if announce { "1" } else { "0" }.to_owned()));
        }
        if let Some(limit) = change.history_limit {
            fields.push(("history_limit", limit.to_string()));
        }
        if let Some(count) = change.history_on_join {
            fields.push(("history_on_join", count.to_string()));
        }
        if fields.is_empty() {
            return Ok(());
        }
        let () = redis::cmd("HSET")
            .arg(self.keys.meta(room))
            .arg(fields)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
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
            .query_async(&mut self.conn())
            .await?;
        let role =
            role.ok_or_else(|| StoreError::Data(format!("room {room}: role of {user} vanished")))?;
        parse_role(room, &role)
    }

    /// Mutes or bans `user` until `ttl_ms` from now, or for good (`None`).
    pub async fn restrict(
        &self,
        kind: RestrictionKind,
        room: &str,
        user: &str,
        restriction: &Restriction,
        ttl_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(restriction).map_err(|e| StoreError::Data(e.to_string()))?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.restriction_key(kind, room, user)).arg(json);
        if let Some(ttl) = ttl_ms {
            cmd.arg("PX").arg(ttl.max(1));
        }
        let _: () = cmd.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Lifts a mute or ban. False when there was none.
    pub async fn lift(
        &self,
        kind: RestrictionKind,
        room: &str,
        user: &str,
    ) -> Result<bool, StoreError> {
        let removed: i64 = redis::cmd("DEL")
            .arg(self.restriction_key(kind, room, user))
            .query_async(&mut self.conn())
            .await?;
        Ok(removed > 0)
    }

    fn restriction_key(&self, kind: RestrictionKind, room: &str, user: &str) -> String {
        match kind {
            RestrictionKind::Mute => self.keys.mute(room, user),
            RestrictionKind::Ban => self.keys.ban(room, user),
        }
    }
}

/// The replies to [`RoomStore::read_standing`]: meta, role, muted, banned.
type RawStanding = (HashMap<String, String>, Option<String>, bool, bool);

fn standing_of(
    room: &str,
    meta: HashMap<String, String>,
    role: Option<String>,
    muted: bool,
    banned: bool,
) -> Result<Standing, StoreError> {
    let role = role.map(|r| parse_role(room, &r)).transpose()?;
    Ok(Standing {
        meta: parse_meta(&meta),
        role,
        muted,
        banned,
    })
}
