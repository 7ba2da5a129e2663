//! Redis key names. Every key sits under `<redis.prefix>:`, so deployments and test
//! runs share one Redis. Room and user ids are validated before they get here, and
//! neither alphabet contains whitespace, so a key never needs escaping.

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

    fn room(&self, room: &str, part: &str) -> String {
        format!("{}:room:{room}:{part}", self.prefix)
    }

    /// Hash: `visibility` (public|private), `announce` (0|1), `created` (unix ms).
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

    /// Sorted set: score = seq, member = the message JSON.
    pub fn history(&self, room: &str) -> String {
        self.room(room, "history")
    }

    /// Hash: session → `{id, name, gateway}` JSON.
    pub fn presence(&self, room: &str) -> String {
        self.room(room, "presence")
    }

    /// Exists while `user` is muted in `room` (its TTL is the mute's end).
    pub fn mute(&self, room: &str, user: &str) -> String {
        self.room(room, &format!("mute:{user}"))
    }

    /// Exists while `user` is banned from `room`.
    pub fn ban(&self, room: &str, user: &str) -> String {
        self.room(room, &format!("ban:{user}"))
    }

    /// String: the message first stored for `(user, ref)`.
    pub fn dedup(&self, user: &str, reference: &str) -> String {
        format!("{}:dedup:{user}:{reference}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let k = Keys::new("w");
        assert_eq!(k.meta("general"), "w:room:general:meta");
        assert_eq!(k.roles("dm:a:b"), "w:room:dm:a:b:roles");
        assert_eq!(k.seq("r"), "w:room:r:seq");
        assert_eq!(k.epoch("r"), "w:room:r:epoch");
        assert_eq!(k.history("r"), "w:room:r:history");
        assert_eq!(k.presence("r"), "w:room:r:presence");
        assert_eq!(k.mute("r", "bob"), "w:room:r:mute:bob");
        assert_eq!(k.ban("r", "bob"), "w:room:r:ban:bob");
        assert_eq!(k.dedup("bob", "r1"), "w:dedup:bob:r1");
    }
}
