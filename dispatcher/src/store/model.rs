//! The values the store reads and writes, and how raw Redis replies become them.
//! Reading is forgiving where a damaged entry can be skipped (a history entry, a
//! presence entry) and strict where it cannot (a role).

use std::collections::HashMap;

use proto::client::Role;
use proto::server::Message;
use serde::{Deserialize, Serialize};

use super::keys::Dedup;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis (or a cluster node) is unreachable, loading or failing over: worth retrying.
    #[error("redis unavailable: {0}")]
    Unavailable(redis::RedisError),
    /// Something stored cannot be read (or written) as the model says, or Redis refused
    /// a command because of it: retrying would fail the same way forever.
    #[error("stored data: {0}")]
    Data(String),
    /// Redis refuses writes until an operator acts: full at `maxmemory` with
    /// `noeviction` (OOM), or unable to persist (MISCONF). Retrying would hold the shard
    /// for as long as that lasts, so the command is answered `unavailable` instead.
    #[error("redis refuses writes: {0}")]
    Refused(redis::RedisError),
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> StoreError {
        if is_refusal(&e) {
            StoreError::Refused(e)
        } else if is_transient(&e) {
            StoreError::Unavailable(e)
        } else {
            StoreError::Data(e.to_string())
        }
    }
}

/// Whether Redis refused a write for a reason only an operator ends (memory, disk).
fn is_refusal(e: &redis::RedisError) -> bool {
    matches!(e.code(), Some("OOM" | "MISCONF"))
}

/// Whether a Redis error can go away by itself. Anything else (a wrong type, a script
/// refusing a damaged value, keys in two slots) would block the shard forever if it
/// were retried. A cluster failing over answers with the cluster kinds until a replica
/// has taken over and the client has followed the new slot map.
fn is_transient(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    match e.kind() {
        ErrorKind::Io
        | ErrorKind::Parse
        | ErrorKind::AuthenticationFailed
        | ErrorKind::ClusterConnectionNotFound => true,
        ErrorKind::Server(kind) => matches!(
            kind,
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::NoScript
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask
        ),
        ErrorKind::Extension => matches!(e.code(), Some("BUSY" | "NOREPLICAS")),
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    Public,
    Private,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }
}

/// A room declared in configuration, checked (see [`crate::rooms::plan`]): what the store
/// writes when the dispatcher connects, and again when the store has lost it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredRoom {
    pub id: String,
    pub meta: RoomMeta,
    pub owners: Vec<String>,
    pub moderators: Vec<String>,
}

/// A room's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomMeta {
    pub visibility: Visibility,
    pub announce: bool,
    /// Overrides `dispatcher.history_limit` (rooms from configuration).
    pub history_limit: Option<u64>,
    /// Overrides `dispatcher.history_on_join` (rooms from configuration).
    pub history_on_join: Option<u64>,
}

impl RoomMeta {
    /// A room with these settings and no overrides.
    pub fn new(visibility: Visibility, announce: bool) -> RoomMeta {
        RoomMeta {
            visibility,
            announce,
            history_limit: None,
            history_on_join: None,
        }
    }
}

/// What a mute or ban key holds; the key's expiry is the restriction's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restriction {
    /// Who imposed it.
    pub by: String,
    /// Unix ms; none for a permanent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The messages a rejoin missed, and what tells a deletion from a loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    /// Readable stored messages in the range, ascending.
    pub messages: Vec<Message>,
    /// Stored entries in the range that could not be read.
    pub unreadable: usize,
    /// The highest seq trimmed from history so far (0: none).
    pub floor: u64,
}

/// What the store knows about one user in one room, read in one round trip.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// `None` when the room does not exist (dm rooms never have meta).
    pub meta: Option<RoomMeta>,
    pub role: Option<Role>,
    pub muted: bool,
    pub banned: bool,
}

/// One connection's presence in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEntry {
    pub id: String,
    pub name: String,
    /// The gateway holding the connection; empty for a bot.
    pub gateway: String,
    /// The value of the gateway's liveness key when the entry was written. A gateway
    /// that writes a fresh value each time it starts thereby tells its earlier life's
    /// entries (ghosts, when it crashed and came back under the same id) from its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
}

/// A room's epoch and latest seq, read together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomState {
    pub epoch: String,
    pub seq: u64,
}

/// How much the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub history_limit: u64,
    pub dedup_ttl_s: u64,
}

pub(super) fn parse_role(room: &str, s: &str) -> Result<Role, StoreError> {
    Role::parse(s).ok_or_else(|| StoreError::Data(format!("room {room}: unknown role {s:?}")))
}

pub(super) fn parse_meta(fields: &HashMap<String, String>) -> Option<RoomMeta> {
    if fields.is_empty() {
        return None;
    }
    // Anything but an explicit "public" is private: a damaged entry must not open a room.
    let visibility = match fields.get("visibility").map(String::as_str) {
        Some("public") => Visibility::Public,
        _ => Visibility::Private,
    };
    let announce = fields.get("announce").map(String::as_str) == Some("1");
    // A damaged override falls back to the deployment's setting.
    let count = |name: &str| {
        fields
            .get(name)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|n| *n > 0)
    };
    Some(RoomMeta {
        visibility,
        announce,
        history_limit: count("history_limit"),
        history_on_join: fields
            .get("history_on_join")
            .and_then(|v| v.parse::<u64>().ok()),
    })
}

/// Reads stored messages, skipping (and logging) any that cannot be read.
pub(super) fn parse_messages(room: &str, raw: Vec<String>) -> Vec<Message> {
    raw.iter()
        .filter_map(|json| match serde_json::from_str::<Message>(json) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(room, error = %e, "skipping an unreadable history entry");
                None
            }
        })
        .collect()
}

pub(super) fn parse_presence(
    room: &str,
    raw: HashMap<String, String>,
) -> Vec<(String, PresenceEntry)> {
    let mut entries: Vec<(String, PresenceEntry)> = raw
        .into_iter()
        .filter_map(|(session, json)| match serde_json::from_str(&json) {
            Ok(entry) => Some((session, entry)),
            Err(e) => {
                tracing::warn!(room, session, error = %e, "skipping an unreadable presence entry");
                None
            }
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries
}

/// A dedup key's value: the message first stored for that send.
pub(super) fn parse_dedup(
    dedup: &Dedup<'_>,
    raw: Option<String>,
) -> Result<Option<Message>, StoreError> {
    raw.map(|json| {
        serde_json::from_str(&json)
            .map_err(|e| StoreError::Data(format!("dedup entry {dedup:?}: {e}")))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_defaults_to_private_when_damaged() {
        assert_eq!(parse_meta(&HashMap::new()), None);
        let mut f = HashMap::new();
        f.insert("visibility".to_owned(), "public".to_owned());
        f.insert("announce".to_owned(), "1".to_owned());
        assert_eq!(
            parse_meta(&f),
            Some(RoomMeta::new(Visibility::Public, true))
        );
        f.insert("visibility".to_owned(), "???".to_owned());
        f.remove("announce");
        assert_eq!(
            parse_meta(&f),
            Some(RoomMeta::new(Visibility::Private, false))
        );
    }

    #[test]
    fn history_overrides_are_read_when_sane() {
        let mut f = HashMap::new();
        f.insert("visibility".to_owned(), "public".to_owned());
        f.insert("history_limit".to_owned(), "20".to_owned());
        f.insert("history_on_join".to_owned(), "0".to_owned());
        let meta = parse_meta(&f).unwrap();
        assert_eq!(
            (meta.history_limit, meta.history_on_join),
            (Some(20), Some(0))
        );
        // A limit of 0 would empty the room: ignored, like garbage.
        f.insert("history_limit".to_owned(), "0".to_owned());
        f.insert("history_on_join".to_owned(), "lots".to_owned());
        let meta = parse_meta(&f).unwrap();
        assert_eq!((meta.history_limit, meta.history_on_join), (None, None));
    }

    #[test]
    fn only_errors_that_can_pass_are_transient() {
        use redis::{ErrorKind, RedisError, ServerErrorKind};
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(StoreError::from(io), StoreError::Unavailable(_)));
        let loading =
            RedisError::from((ErrorKind::Server(ServerErrorKind::BusyLoading), "loading"));
        assert!(matches!(
            StoreError::from(loading),
            StoreError::Unavailable(_)
        ));
        for failing_over in [
            RedisError::from((ErrorKind::ClusterConnectionNotFound, "no node")),
            RedisError::from((ErrorKind::Server(ServerErrorKind::ClusterDown), "down")),
            RedisError::from((ErrorKind::Server(ServerErrorKind::Moved), "moved")),
        ] {
            assert!(matches!(
                StoreError::from(failing_over),
                StoreError::Unavailable(_)
            ));
        }
        let wrong = RedisError::from((ErrorKind::UnexpectedReturnType, "not a number"));
        assert!(matches!(StoreError::from(wrong), StoreError::Data(_)));
        let cross = RedisError::from((ErrorKind::Server(ServerErrorKind::CrossSlot), "slots"));
        assert!(matches!(StoreError::from(cross), StoreError::Data(_)));
        for full in ["OOM", "MISCONF"] {
            let refused = redis::make_extension_error(full.into(), Some("no writes".into()));
            assert!(
                matches!(StoreError::from(refused), StoreError::Refused(_)),
                "{full}"
            );
        }
    }

    #[test]
    fn unreadable_entries_are_skipped() {
        let good = r#"{"room":"r","id":"i","seq":1,"epoch":"e","from":{"id":"a","name":"A","bot":false},"text":"t","ts":1}"#;
        let msgs = parse_messages("r", vec!["{oops".into(), good.into()]);
        assert_eq!(msgs.len(), 1);
        let mut raw = HashMap::new();
        raw.insert(
            "s2".to_owned(),
            r#"{"id":"b","name":"B","gateway":"g"}"#.to_owned(),
        );
        raw.insert("s1".to_owned(), "nope".to_owned());
        let entries = parse_presence("r", raw);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, "s2");
    }
}
