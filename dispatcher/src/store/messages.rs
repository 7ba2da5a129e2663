//! A room's messages: numbering and storing them, reading history, finding one by id,
//! and deleting it.

use proto::server::Message;

use super::model::{parse_dedup, parse_messages, Missed, Retention, RoomState, StoreError};
use super::{Dedup, Draft, RoomStore};

/// A new epoch candidate; only used when the room has none.
fn fresh_epoch() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

impl RoomStore {
    /// The room's epoch (created now if it has none) and latest seq.
    pub async fn state(&self, room: &str) -> Result<RoomState, StoreError> {
        let (epoch, seq): (String, u64) = self
            .scripts
            .state
            .key(self.keys.epoch(room))
            .key(self.keys.seq(room))
            .arg(fresh_epoch())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(RoomState { epoch, seq })
    }

    /// The stored messages with `after < seq <= upto`, and what recovery needs to judge
    /// them: how many could not be read, and how far history was trimmed.
    pub async fn missed(&self, room: &str, after: u64, upto: u64) -> Result<Missed, StoreError> {
        let (raw, floor): (Vec<String>, Option<u64>) = redis::pipe()
            .cmd("ZRANGEBYSCORE")
            .arg(self.keys.history(room))
            .arg(format!("({after}"))
            .arg(upto)
            .cmd("GET")
            .arg(self.keys.floor(room))
            .query_async(&mut self.conn())
            .await?;
        let stored = raw.len();
        let messages = parse_messages(room, raw);
        Ok(Missed {
            unreadable: stored - messages.len(),
            messages,
            floor: floor.unwrap_or(0),
        })
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
            .query_async(&mut self.conn())
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
            .query_async(&mut self.conn())
            .await?;
        Ok(parse_messages(room, raw))
    }

    /// The message with this id, while it is in history.
    pub async fn message_by_id(&self, room: &str, id: &str) -> Result<Option<Message>, StoreError> {
        let seq: Option<u64> = redis::cmd("HGET")
            .arg(self.keys.ids(room))
            .arg(id)
            .query_async(&mut self.conn())
            .await?;
        let Some(seq) = seq else {
            return Ok(None);
        };
        let raw: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.history(room))
            .arg(seq)
            .arg(seq)
            .query_async(&mut self.conn())
            .await?;
        Ok(parse_messages(room, raw).into_iter().find(|m| m.id == id))
    }

    /// Removes the message `id` (at `seq`) from history and from the index, together.
    pub async fn delete_message(&self, room: &str, id: &str, seq: u64) -> Result<(), StoreError> {
        let _: () = redis::pipe()
            .atomic()
            .cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.history(room))
            .arg(seq)
            .arg(seq)
            .ignore()
            .cmd("HDEL")
            .arg(self.keys.ids(room))
            .arg(id)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// The message first stored for this send, while its dedup key lives.
    pub async fn deduplicated(&self, dedup: &Dedup<'_>) -> Result<Option<Message>, StoreError> {
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.keys.dedup(dedup))
            .query_async(&mut self.conn())
            .await?;
        parse_dedup(dedup, raw)
    }

    /// Numbers and stores a message atomically (see `append.lua`), remembering it under
    /// `dedup` when given.
    pub async fn append(
        &self,
        room: &str,
        draft: &Draft,
        dedup: Option<&Dedup<'_>>,
        retention: Retention,
    ) -> Result<Message, StoreError> {
        let mut call = self.scripts.append.prepare_invoke();
        for key in self.keys.append(room, dedup) {
            call.key(key);
        }
        call.arg(fresh_epoch())
            .arg(draft.head())
            .arg(draft.tail())
            .arg(retention.history_limit.max(1))
            .arg(retention.dedup_ttl_s.max(1))
            .arg(draft.id());
        let json: String = call.invoke_async(&mut self.conn()).await?;
        serde_json::from_str(&json).map_err(|e| StoreError::Data(format!("appended message: {e}")))
    }
}
