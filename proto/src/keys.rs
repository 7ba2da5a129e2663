//! The Redis key layout: where the gateways and the dispatchers meet in the store.
//!
//! Every key sits under the deployment's `redis.prefix` and then `:`, so deployments and
//! test runs share one Redis. Room and user ids are validated ([`crate::ids`]) before
//! they get here, and neither alphabet has whitespace or braces, so a key never needs
//! escaping.
//!
//! Hash tags: every key of a room, its dedup keys included, carries the room as its tag,
//! `<prefix>:room:{<room>}:<part>`, so each script and pipeline touches one room's keys,
//! runs on one node of a Redis Cluster, and rooms spread over the cluster. A user's
//! counters carry `{<user>}`. The gateways' registry carries `{gw}`: one slot for all of
//! it, see [`Keys::gateways`].

/// Builds the keys of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// The parts of a room that live exactly as long as the room, all given the same expiry
/// (`rooms.idle_expiry_s`). Mutes, bans and dedup keys carry expiries of their own; a
/// permanent mute or ban outlives an expired room, and holds again if it is created anew.
pub const ROOM_LIFETIME: [&str; 9] = [
    "meta", "roles", "seq", "epoch", "history", "presence", "ids", "floor", "joined",
];

/// One method per part of a room that has no more to it than its name: `$name(room)` is
/// `<prefix>:room:{<room>}:<part>`.
macro_rules! room_parts {
    ($($(#[$doc:meta])* $name:ident => $part:literal,)*) => {
        $(
            $(#[$doc])*
            pub fn $name(&self, room: &str) -> String {
                self.room(room, $part)
            }
        )*
    };
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    /// The prefix every key starts with (then `:`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every key of `room`: `<prefix>:room:{<room>}:<part>`.
    pub fn room(&self, room: &str, part: &str) -> String {
        format!("{}:room:{{{room}}}:{part}", self.prefix)
    }

    /// The keys of `room` that live as long as the room ([`ROOM_LIFETIME`]).
    pub fn room_lifetime(&self, room: &str) -> [String; 9] {
        ROOM_LIFETIME.map(|part| self.room(room, part))
    }

    room_parts! {
        /// Hash: `visibility` (public|private), `announce` (0|1), `created` (unix ms), and
        /// for rooms from configuration optional `history_limit` and `history_on_join`.
        meta => "meta",
        /// Hash: user → owner|moderator|member.
        roles => "roles",
        /// Counter: the latest seq.
        seq => "seq",
        /// String: the current epoch, created with `SET NX`.
        epoch => "epoch",
        /// Sorted set: score = seq, member = the stored message's JSON. The dispatcher
        /// appends; gateways read ranges of it to repair a gap in a room's events.
        history => "history",
        /// Hash: session → `{id, name, gateway}` JSON.
        presence => "presence",
        /// Hash: message id → seq, for every message in history (trimmed with it).
        ids => "ids",
        /// Set: in a dm room, which of its two users have joined it at least once.
        joined => "joined",
        /// String: the highest seq trimmed from history (absent: none yet). A message with
        /// a seq above it that is missing from history was deleted, not lost.
        floor => "floor",
    }

    /// Exists while `user` is muted in `room` (its expiry is the mute's end; none for a
    /// permanent mute). Value: `{by, until?, reason?}` JSON.
    pub fn mute(&self, room: &str, user: &str) -> String {
        self.room(room, &format!("mute:{user}"))
    }

    /// Exists while `user` is banned from `room`, like a mute.
    pub fn ban(&self, room: &str, user: &str) -> String {
        self.room(room, &format!("ban:{user}"))
    }

    /// String: the message first stored for this dedup identity, with an expiry. Under
    /// the room, since the append that writes it is the room's.
    pub fn dedup(&self, dedup: &Dedup<'_>) -> String {
        match dedup {
            Dedup::Ref {
                room,
                user,
                reference,
            } => self.room(room, &format!("dedup:{user}:{reference}")),
            Dedup::Delivery {
                room,
                user,
                message_id,
            } => self.room(room, &format!("dedupmsg:{user}:{message_id}")),
        }
    }

    /// The keys `append.lua` takes, in its order: epoch, seq, history, ids, floor, and
    /// the dedup key when there is one.
    pub fn append(&self, room: &str, dedup: Option<&Dedup<'_>>) -> Vec<String> {
        let mut keys = vec![
            self.epoch(room),
            self.seq(room),
            self.history(room),
            self.ids(room),
            self.floor(room),
        ];
        keys.extend(dedup.map(|d| self.dedup(d)));
        keys
    }

    /// Every key of `user`: `<prefix>:user:{<user>}:<part>`. Tagged by user: a user's
    /// counters share a slot, apart from any room's.
    fn user(&self, user: &str, part: &str) -> String {
        format!("{}:user:{{{user}}}:{part}", self.prefix)
    }

    /// Hash: `user`'s token bucket for `what` (`sends`, `bot`), `{tokens, ts}`.
    pub fn bucket(&self, what: &str, user: &str) -> String {
        self.user(user, &format!("bucket:{what}"))
    }

    /// Counter: rooms `user` created in the hour `hour` (unix hours), expiring with it.
    pub fn rooms_created(&self, user: &str, hour: u64) -> String {
        self.user(user, &format!("created:{hour}"))
    }

    /// Set: the places one user's connections hold across every gateway,
    /// `<gateway>|<place>` (the cap `gateway.max_user_connections`).
    pub fn user_connections(&self, user: &str) -> String {
        self.user(user, "conns")
    }

    /// What every registry key starts with, `<prefix>:{gw}`; the dispatchers' script
    /// that reads the registry (`holders.lua`) builds `<registry>:<id>:users` from it.
    pub fn registry(&self) -> String {
        format!("{}:{{gw}}", self.prefix)
    }

    /// Exists while gateway `gateway` runs: it sets it with an expiry and renews it; its
    /// value is the gateway process's incarnation. Presence entries of a gateway without
    /// it are gone.
    pub fn gateway_alive(&self, gateway: &str) -> String {
        format!("{}:{gateway}:alive", self.registry())
    }

    /// Set: the users gateway `gateway` holds a connection of, with the same expiry as
    /// its liveness key (renewed with it), so a gateway that dies leaves no entry for
    /// longer than that.
    pub fn gateway_users(&self, gateway: &str) -> String {
        format!("{}:{gateway}:users", self.registry())
    }

    /// Sorted set: gateway id → when its registration expires (unix ms), renewed with
    /// its liveness key. Dispatchers read the live ones to address user events.
    ///
    /// The registry (this set and every gateway's liveness key and users' set) shares
    /// one hash tag, so on Redis Cluster it all sits in one slot, on one shard: a
    /// gateway renews its three keys in one pipeline, and the dispatchers' script reads
    /// the set of every live gateway, whose names it only learns from this one. One
    /// shard carries that easily: the registry changes with sessions opening and
    /// closing, not with messages, and is read for user events only (direct messages,
    /// typing in them, kicks), while room traffic spreads over the cluster by room.
    pub fn gateways(&self) -> String {
        format!("{}:gateways", self.registry())
    }

    /// List, newest first: one JSON entry per moderation action the dispatchers carried
    /// out (who, what, where, when), capped at [`AUDIT_LENGTH`]. Written by the
    /// dispatchers only; `warren-admin audit` reads it.
    pub fn audit(&self) -> String {
        format!("{}:audit", self.prefix)
    }

    /// Sorted set: the live dispatchers' ids → when each entry expires (unix ms). Each
    /// dispatcher renews its own; the shards are shared out among those it lists.
    pub fn dispatchers(&self) -> String {
        format!("{}:dispatchers", self.prefix)
    }

    /// What every room's settings key matches, for a read-only scan of the rooms.
    pub fn meta_pattern(&self) -> String {
        format!("{}:room:{{*}}:meta", self.prefix)
    }

    /// The room a settings key belongs to, when `key` is one ([`Keys::meta_pattern`]).
    pub fn room_of_meta<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix(":room:{")?
            .strip_suffix("}:meta")
    }
}

/// The most entries the audit list ([`Keys::audit`]) keeps.
pub const AUDIT_LENGTH: isize = 1000;

/// What makes two sends the same send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedup<'a> {
    /// The client's `ref` in one room: a retry after a lost connection carries it again,
    /// and the same `ref` in another room is another send.
    Ref {
        room: &'a str,
        user: &'a str,
        reference: &'a str,
    },
    /// No `ref`: the AMQP `message_id`, which a redelivery of the same publish keeps.
    /// Scoped by room and user, so that nobody reaches another user's message by
    /// reusing an id.
    Delivery {
        room: &'a str,
        user: &'a str,
        message_id: &'a str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settings_key_names_its_room() {
        let k = Keys::new("w");
        assert_eq!(k.room_of_meta(&k.meta("general")), Some("general"));
        assert_eq!(k.room_of_meta(&k.roles("general")), None);
        assert_eq!(Keys::new("x").room_of_meta(&k.meta("general")), None);
        assert_eq!(k.meta_pattern(), "w:room:{*}:meta");
    }

    #[test]
    fn keys_follow_the_documented_layout() {
        let k = Keys::new("w");
        assert_eq!(k.meta("general"), "w:room:{general}:meta");
        assert_eq!(k.roles("dm:a:b"), "w:room:{dm:a:b}:roles");
        assert_eq!(k.history("dm:a:b"), "w:room:{dm:a:b}:history");
        assert_eq!(k.mute("r", "bob"), "w:room:{r}:mute:bob");
        assert_eq!(k.ban("r", "bob"), "w:room:{r}:ban:bob");
        let by_ref = Dedup::Ref {
            room: "r",
            user: "bob",
            reference: "r1",
        };
        assert_eq!(k.dedup(&by_ref), "w:room:{r}:dedup:bob:r1");
        // Another part: user "dedupmsg"'s refs cannot meet a message id.
        let by_delivery = Dedup::Delivery {
            room: "r",
            user: "bob",
            message_id: "m-1",
        };
        assert_eq!(k.dedup(&by_delivery), "w:room:{r}:dedupmsg:bob:m-1");
        assert_eq!(k.bucket("sends", "bob"), "w:user:{bob}:bucket:sends");
        assert_eq!(k.rooms_created("bob", 7), "w:user:{bob}:created:7");
        assert_eq!(k.user_connections("bob"), "w:user:{bob}:conns");
        assert_eq!(k.gateway_alive("g-1"), "w:{gw}:g-1:alive");
        assert_eq!(k.gateway_users("g-1"), "w:{gw}:g-1:users");
        assert_eq!(k.gateways(), "w:{gw}:gateways");
    }

    #[test]
    fn a_rooms_lifetime_covers_every_key_that_lives_as_long_as_it() {
        let k = Keys::new("w");
        let r = "r";
        let mut expected = [
            k.meta(r),
            k.roles(r),
            k.seq(r),
            k.epoch(r),
            k.history(r),
            k.presence(r),
            k.ids(r),
            k.floor(r),
            k.joined(r),
        ];
        let mut lifetime = k.room_lifetime(r);
        expected.sort();
        lifetime.sort();
        assert_eq!(lifetime, expected);
    }
}
