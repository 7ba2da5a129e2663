//! Redis key names. Every key sits under `<redis.prefix>:`, so deployments and test
//! runs share one Redis. Room and user ids are validated before they get here, and
//! neither alphabet contains whitespace or braces, so a key never needs escaping.
//!
//! Every key of a room, its dedup keys included, carries the room as its hash tag
//! (`<prefix>:room:{<room>}:<part>`, see [`common::store::keys`]): each script and
//! pipeline touches one room's keys only, so on Redis Cluster it runs on one node, and
//! rooms spread over the cluster.

/// Builds the keys of one deployment.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
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

    fn room(&self, room: &str, part: &str) -> String {
        common::store::keys::room(&self.prefix, room, part)
    }

    /// Hash: `visibility` (public|private), `announce` (0|1), `created` (unix ms), and
    /// for rooms from configuration optional `history_limit` and `history_on_join`.
    pub fn meta(&self, room: &str) -> String {
        self.room(room, "meta")
    }

    /// Hash: user → owner|moderator|member.
    pub fn roles(&self, room: &str) -> String {
        self.room(room, "roles")
    }

    /// Counter: the latest seq.
    pub fn seq(&self, room: &str) -> String {
        self.room(room, "seq")
    }

    /// String: the current epoch, created with `SET NX`.
    pub fn epoch(&self, room: &str) -> String {
        self.room(room, "epoch")
    }

    /// Sorted set: score = seq, member = the message JSON (gateways read it too).
    pub fn history(&self, room: &str) -> String {
        common::store::keys::history(&self.prefix, room)
    }

    /// Hash: session → `{id, name, gateway}` JSON.
    pub fn presence(&self, room: &str) -> String {
        self.room(room, "presence")
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

    /// Hash: message id → seq, for every message in history (trimmed with it).
    pub fn ids(&self, room: &str) -> String {
        self.room(room, "ids")
    }

    /// Set: in a dm room, which of its two users have joined it at least once.
    pub fn joined(&self, room: &str) -> String {
        self.room(room, "joined")
    }

    /// String: the highest seq trimmed from history (absent: none yet). A message with
    /// a seq above it that is missing from history was deleted, not lost.
    pub fn floor(&self, room: &str) -> String {
        self.room(room, "floor")
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

    /// Hash: `user`'s token bucket for `what` (`sends`, `bot`), `{tokens, ts}`.
    pub fn bucket(&self, what: &str, user: &str) -> String {
        format!("{}:user:{{{user}}}:bucket:{what}", self.prefix)
    }

    /// Counter: rooms `user` created in the hour `hour` (unix hours), expiring with it.
    /// Tagged by user: a user's counters share a slot, apart from any room's.
    pub fn rooms_created(&self, user: &str, hour: u64) -> String {
        format!("{}:user:{{{user}}}:created:{hour}", self.prefix)
    }

    /// Exists while gateway `gateway` is alive: the gateway sets it with an expiry and
    /// renews it. Presence entries of a gateway without it are gone.
    pub fn gateway_alive(&self, gateway: &str) -> String {
        common::store::keys::gateway_alive(&self.prefix, gateway)
    }

    /// Set: the users gateway `gateway` holds (see [`common::store::keys`]).
    pub fn gateway_users(&self, gateway: &str) -> String {
        common::store::keys::gateway_users(&self.prefix, gateway)
    }

    /// Sorted set: live gateways by registration expiry (unix ms).
    pub fn gateways(&self) -> String {
        common::store::keys::gateways(&self.prefix)
    }

    /// What every gateway registry key starts with (`holders.lua` builds the users'
    /// set names from it).
    pub fn registry(&self) -> String {
        common::store::keys::registry(&self.prefix)
    }
}

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
    use redis::cluster_routing::Slot;

    use super::*;

    const REF: Dedup<'static> = Dedup::Ref {
        room: "r",
        user: "bob",
        reference: "r1",
    };
    const DELIVERY: Dedup<'static> = Dedup::Delivery {
        room: "r",
        user: "bob",
        message_id: "m-1",
    };

    #[test]
    fn a_rooms_lifetime_covers_every_key_that_lives_as_long_as_it() {
        let k = Keys::new("w");
        let r = "r";
        let mut expected = vec![
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
        let mut lifetime = common::store::keys::room_lifetime("w", r).to_vec();
        expected.sort();
        lifetime.sort();
        assert_eq!(lifetime, expected);
    }

    #[test]
    fn keys_follow_the_documented_layout() {
        let k = Keys::new("w");
        assert_eq!(k.meta("general"), "w:room:{general}:meta");
        assert_eq!(k.roles("dm:a:b"), "w:room:{dm:a:b}:roles");
        assert_eq!(k.seq("r"), "w:room:{r}:seq");
        assert_eq!(k.epoch("r"), "w:room:{r}:epoch");
        assert_eq!(k.history("r"), "w:room:{r}:history");
        assert_eq!(k.presence("r"), "w:room:{r}:presence");
        assert_eq!(k.mute("r", "bob"), "w:room:{r}:mute:bob");
        assert_eq!(k.ban("r", "bob"), "w:room:{r}:ban:bob");
        assert_eq!(k.dedup(&REF), "w:room:{r}:dedup:bob:r1");
        // Another part: user "dedupmsg"'s refs cannot meet a message id.
        assert_eq!(k.dedup(&DELIVERY), "w:room:{r}:dedupmsg:bob:m-1");
        assert_eq!(k.ids("r"), "w:room:{r}:ids");
        assert_eq!(k.floor("r"), "w:room:{r}:floor");
        assert_eq!(k.gateway_alive("g-1"), "w:{gw}:g-1:alive");
        assert_eq!(k.gateway_users("g-1"), "w:{gw}:g-1:users");
        assert_eq!(k.gateways(), "w:{gw}:gateways");
    }

    /// Redis Cluster runs a script, a transaction or a pipeline only when all its keys
    /// hash to one slot: these are the key lists the store hands each of them.
    #[test]
    fn every_script_and_pipeline_touches_one_slot() {
        let k = Keys::new("w");
        let one_slot = |what: &str, keys: &[String]| {
            let slots: Vec<Slot> = keys.iter().map(Slot::for_key).collect();
            assert!(
                slots.windows(2).all(|w| w[0] == w[1]),
                "{what}: {keys:?} span slots {slots:?}"
            );
        };
        for room in ["r", "general", "dm:alice:bob"] {
            let refd = Dedup::Ref {
                room,
                user: "bob",
                reference: "r1",
            };
            let delivered = Dedup::Delivery {
                room,
                user: "bob",
                message_id: "m-1",
            };
            one_slot("append.lua", &k.append(room, None));
            one_slot("append.lua with a ref", &k.append(room, Some(&refd)));
            one_slot(
                "append.lua with a message id",
                &k.append(room, Some(&delivered)),
            );
            one_slot("state.lua", &[k.epoch(room), k.seq(room)]);
            one_slot("create.lua, configure.lua", &[k.meta(room), k.roles(room)]);
            one_slot(
                "the dedup and standing pipeline",
                &[
                    k.dedup(&refd),
                    k.meta(room),
                    k.roles(room),
                    k.mute(room, "bob"),
                    k.ban(room, "bob"),
                ],
            );
            one_slot(
                "missed, delete_message",
                &[k.history(room), k.floor(room), k.ids(room)],
            );
        }
        // holders.lua is given the registry and reads each live gateway's users' set
        // by the name it builds from `registry()`: that name must be the gateway's own
        // and share the registry's slot.
        let built = |gw: &str| format!("{}:{gw}:users", k.registry());
        assert_eq!(built("g-1"), k.gateway_users("g-1"));
        one_slot(
            "holders.lua, a gateway's renewal, alive_gateways",
            &[
                k.gateways(),
                built("g-1"),
                built("g-2"),
                k.gateway_alive("g-1"),
                k.gateway_alive("g-2"),
            ],
        );
    }
}
