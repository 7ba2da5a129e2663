//! Identifiers and the rules that keep them safe inside routing keys and Redis keys.
//!
//! A room id is `[a-z0-9_-]{1,64}` or `dm:<a>:<b>` with the two user ids sorted bytewise;
//! a user id is `[A-Za-z0-9_-]{1,64}`. Neither can contain `.`, `*`, `#` or whitespace,
//! so a validated id can be spliced into an AMQP routing key or a Redis key as it is.

use std::fmt;

use crate::codes::ErrorCode;

pub const MAX_ID_LEN: usize = 64;
/// The longest `ref` a client may choose.
pub const MAX_REF_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    Empty,
    TooLong,
    BadChar,
    /// A `dm:` room whose users are not sorted, equal, or not two.
    BadDm,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdError::Empty => "empty id",
            IdError::TooLong => "id longer than 64 characters",
            IdError::BadChar => "id has a character outside its alphabet",
            IdError::BadDm => "dm room must be dm:<a>:<b> with two different users sorted",
        })
    }
}

impl std::error::Error for IdError {}

fn check(s: &str, allowed: impl Fn(u8) -> bool) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if !s.bytes().all(allowed) {
        return Err(IdError::BadChar);
    }
    Ok(())
}

/// Checks a user id: `[A-Za-z0-9_-]{1,64}`.
pub fn validate_user(user: &str) -> Result<(), IdError> {
    check(user, |b| {
        b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
    })
}

/// What kind of room a valid room id names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomKind<'a> {
    Public,
    Dm(&'a str, &'a str),
}

/// Checks a room id and tells whether it is a direct-message room.
pub fn validate_room(room: &str) -> Result<RoomKind<'_>, IdError> {
    if let Some(rest) = room.strip_prefix("dm:") {
        let (a, b) = rest.split_once(':').ok_or(IdError::BadDm)?;
        validate_user(a)?;
        validate_user(b)?;
        if a.as_bytes() >= b.as_bytes() {
            return Err(IdError::BadDm);
        }
        return Ok(RoomKind::Dm(a, b));
    }
    check(room, |b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
    })?;
    Ok(RoomKind::Public)
}

/// Checks a stored message's `id` as a frame names it (`moderate`'s `msg_id`): a UUID
/// is `[A-Za-z0-9-]{1,64}`, so anything else names no message.
pub fn validate_message_id(id: &str) -> Result<(), IdError> {
    check(id, |b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Why a message text is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextError {
    /// `bad_request`: a message says something.
    Empty,
    /// `too_large`: over `max_text_bytes`.
    TooLong,
}

impl TextError {
    /// What the refusal says.
    pub fn message(self) -> &'static str {
        match self {
            TextError::Empty => "text is empty",
            TextError::TooLong => "text is longer than max_text_bytes",
        }
    }

    /// The error code the refusal carries.
    pub fn code(self) -> ErrorCode {
        match self {
            TextError::Empty => ErrorCode::BadRequest,
            TextError::TooLong => ErrorCode::TooLarge,
        }
    }
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Checks a message text: 1 to `max_bytes` bytes of UTF-8 (`gateway.max_text_bytes`).
pub fn check_text(text: &str, max_bytes: usize) -> Result<(), TextError> {
    if text.is_empty() {
        return Err(TextError::Empty);
    }
    if text.len() > max_bytes {
        return Err(TextError::TooLong);
    }
    Ok(())
}

/// The direct-message room of two users, with their ids sorted bytewise.
pub fn dm_room(a: &str, b: &str) -> String {
    let (lo, hi) = if a.as_bytes() <= b.as_bytes() {
        (a, b)
    } else {
        (b, a)
    };
    format!("dm:{lo}:{hi}")
}

/// The form of a (valid) room id inside a routing key: `dm:a:b` becomes `dm~a~b`.
pub fn room_in_key(room: &str) -> String {
    room.replace(':', "~")
}

/// The inverse of [`room_in_key`].
pub fn room_from_key(key_part: &str) -> String {
    key_part.replace('~', ":")
}

/// 32-bit FNV-1a over the bytes of `data`.
pub fn fnv1a_32(data: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in data {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The command shard of a room, computed on the room id as written in frames.
pub fn shard_of(room: &str, shards: u32) -> u32 {
    fnv1a_32(room.as_bytes()) % shards.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_accept_the_documented_alphabet() {
        assert_eq!(validate_room("general"), Ok(RoomKind::Public));
        assert_eq!(validate_room("a-b_c-9"), Ok(RoomKind::Public));
        assert_eq!(validate_room(&"x".repeat(64)), Ok(RoomKind::Public));
    }

    #[test]
    fn rooms_refuse_what_would_break_a_routing_key() {
        for bad in ["", "a.b", "a*", "#", "Upper", "sp ace", "é", "a/b", "a:b"] {
            assert!(validate_room(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(validate_room(&"x".repeat(65)), Err(IdError::TooLong));
    }

    #[test]
    fn dm_rooms_are_sorted_pairs() {
        assert_eq!(dm_room("bob", "alice"), "dm:alice:bob");
        assert_eq!(dm_room("alice", "bob"), "dm:alice:bob");
        assert_eq!(
            validate_room("dm:alice:bob"),
            Ok(RoomKind::Dm("alice", "bob"))
        );
        assert_eq!(validate_room("dm:bob:alice"), Err(IdError::BadDm));
        assert_eq!(validate_room("dm:bob:bob"), Err(IdError::BadDm));
        assert_eq!(validate_room("dm:bob"), Err(IdError::BadDm));
        assert!(validate_room("dm:a.b:c").is_err());
        // Bytewise: uppercase sorts before lowercase.
        assert_eq!(dm_room("bob", "Zed"), "dm:Zed:bob");
    }

    #[test]
    fn users_accept_upper_case_but_no_separators() {
        assert!(validate_user("Alice_1-x").is_ok());
        for bad in ["", "a.b", "a#", "a*", "a:b", "a b", "a~b"] {
            assert!(validate_user(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn texts_are_one_to_max_bytes() {
        assert_eq!(check_text("abcd", 4), Ok(()));
        assert_eq!(check_text("", 4), Err(TextError::Empty));
        assert_eq!(check_text("ééé", 5), Err(TextError::TooLong));
        assert_eq!(TextError::TooLong.code(), ErrorCode::TooLarge);
    }

    #[test]
    fn message_ids_are_uuid_shaped() {
        assert!(validate_message_id("01a21718-7a5e-706f-bd38-ccb0b3d488e2").is_ok());
        for bad in ["", "a.b", "a b", "a:b", &"x".repeat(65)] {
            assert!(validate_message_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn dm_rooms_are_written_with_tildes_in_keys() {
        assert_eq!(room_in_key("dm:a:b"), "dm~a~b");
        assert_eq!(room_from_key("dm~a~b"), "dm:a:b");
        assert_eq!(room_in_key("general"), "general");
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn shards_use_the_room_as_written_in_frames() {
        assert_eq!(shard_of("dm:a:b", 4), fnv1a_32(b"dm:a:b") % 4);
        assert!(shard_of("general", 4) < 4);
        assert_eq!(shard_of("general", 0), 0);
    }
}
