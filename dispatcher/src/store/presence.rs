//! Presence: one entry per session in a room, and the gateways' liveness keys that
//! decide whether an entry still stands.

use std::collections::HashMap;

use super::model::{parse_presence, PresenceEntry, StoreError};
use super::RoomStore;

impl RoomStore {
    /// Every presence entry of the room, by session.
    pub async fn presence(&self, room: &str) -> Result<Vec<(String, PresenceEntry)>, StoreError> {
        let raw: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.presence(room))
            .query_async(&mut self.conn())
            .await?;
        Ok(parse_presence(room, raw))
    }

    /// Records `session` as present; returns how many sessions the room has, and its
    /// entries: all of them while there are at most `whole`, else a random sample of
    /// `sample` (one round trip either way; the new entry may not be in a sample).
    pub async fn enter_sampled(
        &self,
        room: &str,
        session: &str,
        entry: &PresenceEntry,
        whole: usize,
        sample: usize,
    ) -> Result<(usize, Vec<(String, PresenceEntry)>), StoreError> {
        let json = serde_json::to_string(entry).map_err(|e| StoreError::Data(e.to_string()))?;
        let (count, flat): (usize, Vec<String>) = self
            .scripts
            .enter
            .key(self.keys.presence(room))
            .arg(session)
            .arg(json)
            .arg(whole)
            .arg(sample.max(1))
            .invoke_async(&mut self.conn())
            .await?;
        let raw: HashMap<String, String> = flat
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect();
        Ok((count, parse_presence(room, raw)))
    }

    /// How many sessions the room has, and `session`'s entry if it has one.
    pub async fn session_entry(
        &self,
        room: &str,
        session: &str,
    ) -> Result<(usize, Option<PresenceEntry>), StoreError> {
        let key = self.keys.presence(room);
        let (count, json): (usize, Option<String>) = redis::pipe()
            .cmd("HLEN")
            .arg(&key)
            .cmd("HGET")
            .arg(&key)
            .arg(session)
            .query_async(&mut self.conn())
            .await?;
        let entry = json.and_then(|j| serde_json::from_str(&j).ok());
        Ok((count, entry))
    }

    /// Removes `session`'s presence entry and returns the room's entries left, in one
    /// round trip.
    pub async fn exit_and_read(
        &self,
        room: &str,
        session: &str,
    ) -> Result<Vec<(String, PresenceEntry)>, StoreError> {
        let key = self.keys.presence(room);
        let (raw,): (HashMap<String, String>,) = redis::pipe()
            .cmd("HDEL")
            .arg(&key)
            .arg(session)
            .ignore()
            .cmd("HGETALL")
            .arg(&key)
            .query_async(&mut self.conn())
            .await?;
        Ok(parse_presence(room, raw))
    }

    /// Removes `session`'s presence entry. False when there was none.
    pub async fn exit(&self, room: &str, session: &str) -> Result<bool, StoreError> {
        Ok(self.exit_all(room, &[session.to_owned()]).await? > 0)
    }

    /// Removes these sessions' entries; returns how many there were.
    pub async fn exit_all(&self, room: &str, sessions: &[String]) -> Result<u64, StoreError> {
        if sessions.is_empty() {
            return Ok(0);
        }
        let removed: u64 = redis::cmd("HDEL")
            .arg(self.keys.presence(room))
            .arg(sessions)
            .query_async(&mut self.conn())
            .await?;
        Ok(removed)
    }

    /// The value of `gateway`'s liveness key, if it has one.
    pub async fn incarnation(&self, gateway: &str) -> Result<Option<String>, StoreError> {
        let value: Option<String> = redis::cmd("GET")
            .arg(self.keys.gateway_alive(gateway))
            .query_async(&mut self.conn())
            .await?;
        Ok(value)
    }

    /// For each of `users`, the live gateways that hold a connection of theirs (the
    /// gateways keep these entries; see `proto::keys`). One round trip.
    pub async fn holders(
        &self,
        users: &[&str],
    ) -> Result<HashMap<String, Vec<String>>, StoreError> {
        if users.is_empty() {
            return Ok(HashMap::new());
        }
        let mut script = self.scripts.holders.key(self.keys.gateways());
        script.arg(self.keys.registry()).arg(common::now_ms());
        for user in users {
            script.arg(*user);
        }
        let held: Vec<String> = script.invoke_async(&mut self.conn()).await?;
        Ok(users
            .iter()
            .zip(held)
            .map(|(user, gateways)| {
                let ids = gateways
                    .split(',')
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect();
                ((*user).to_owned(), ids)
            })
            .collect())
    }

    /// The gateways among `gateways` that keep their liveness key, with its value.
    pub async fn alive_gateways(
        &self,
        gateways: &[&str],
    ) -> Result<HashMap<String, String>, StoreError> {
        if gateways.is_empty() {
            return Ok(HashMap::new());
        }
        let keys: Vec<String> = gateways
            .iter()
            .map(|g| self.keys.gateway_alive(g))
            .collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut self.conn())
            .await?;
        Ok(gateways
            .iter()
            .zip(values)
            .filter_map(|(g, v)| Some(((*g).to_owned(), v?)))
            .collect())
    }
}
