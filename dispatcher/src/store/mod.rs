//! The dispatcher's Redis data model, and nothing about chat rules.
//!
//! Every key is under `<redis.prefix>:` (see [`Keys`]); a room's keys carry the room as
//! their hash tag, `room:{<r>}:`, and the gateways' registry carries `{gw}`:
//! - `room:{<r>}:meta` hash (`visibility`, `announce`, `created`, and optional
//!   `history_limit`/`history_on_join` overrides), `room:{<r>}:roles` hash user → role,
//!   `room:{<r>}:mute:<user>` and `room:{<r>}:ban:<user>` restrictions
//!   (`{by, until, reason}`, expiring when they end);
//! - `room:{<r>}:seq` counter, `room:{<r>}:epoch` string, `room:{<r>}:history` sorted set
//!   (score = seq, member = message JSON, the newest `history_limit` kept),
//!   `room:{<r>}:ids` hash message id → seq (the index `delete` finds a message by,
//!   trimmed with history), `room:{<r>}:floor` the highest seq trimmed so far;
//! - `room:{<r>}:dedup:<user>:<ref>` and `room:{<r>}:dedupmsg:<user>:<message_id>`: the
//!   message first stored for that send, with an expiry;
//! - `room:{<r>}:presence` hash session → `{id, name, gateway}`, and `{gw}:<id>:alive`,
//!   which each gateway keeps alive (entries of a gateway without it are gone);
//! - `{gw}:<id>:users` the users each gateway holds and `{gw}:gateways` the gateways'
//!   registrations, both written by the gateways: which gateways a user event goes to;
//! - `room:{<r>}:joined`, in a dm room, which of its users ever joined it (until the
//!   recipient has, the room keeps only its last messages);
//! - `user:{<u>}:created:<hour>` rooms created that hour, `user:{<u>}:bucket:<what>` the
//!   user's token buckets, and `dispatchers`, the dispatchers' roster (`roster.rs`);
//! - `audit`, a capped list of the moderation actions carried out (`audit.rs`).
//!
//! Every key that lives as long as a room carries the room's idle expiry when
//! `rooms.idle_expiry_s` is set ([`crate::retention`]).
//!
//! Appending a message is one Lua script ([`RoomStore::append`]) so that the seq, the
//! history entry, the index and the dedup key are written together or not at all; a
//! room from configuration is written by another. Everything else is a plain command or
//! a pipeline: one shard's commands are handled one at a time, so a room is never
//! written by two handlers at once. Each script and pipeline touches one room's keys, or
//! the registry's, or one user's, so all of it works on Redis Cluster as on a single
//! Redis. `handle` holds the connection, keys and scripts every other module goes
//! through, `messages` history, `presence` presence, `rooms` rooms, roles and
//! restrictions.

mod audit;
mod draft;
mod handle;
mod keys;
mod messages;
mod model;
mod presence;
mod rooms;
mod roster;

pub use draft::Draft;
pub use handle::RoomStore;
pub use keys::{Dedup, Keys};
pub use model::{
    ConfiguredRoom, Missed, PresenceEntry, Restriction, Retention, RoomMeta, RoomState, Standing,
    StoreError, Visibility,
};
pub use rooms::{Prior, RestrictionKind};
