//! A message before the store numbers it.
//!
//! The seq and the epoch are decided inside the append script, so the Rust side cannot
//! serialise the final message. Instead it serialises the message once with `seq: 0`
//! and `epoch: ""` and cuts the JSON around those two members; the script joins the two
//! halves with the real values. Only serde writes the parts that hold user text (the
//! script adds a number and an epoch it has checked), so the result is always valid JSON.

use proto::server::{Author, Message};

use super::StoreError;

/// What serde writes for the placeholder `seq` and `epoch`. `Message` serialises its
/// fields in declaration order (`room`, `id`, `seq`, `epoch`, ...) and neither `room` nor
/// `id` can contain a quote, so the first match is the placeholder.
const PLACEHOLDER: &str = r#","seq":0,"epoch":"","#;

/// A message's JSON, split where the seq and the epoch go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    id: String,
    head: String,
    tail: String,
}

impl Draft {
    pub fn new(
        room: &str,
        id: &str,
        from: Author,
        text: &str,
        ts: u64,
    ) -> Result<Draft, StoreError> {
        let message = Message {
            room: room.to_owned(),
            id: id.to_owned(),
            seq: 0,
            epoch: String::new(),
            from,
            text: text.to_owned(),
            ts,
        };
        let json = serde_json::to_string(&message).map_err(|e| StoreError::Data(e.to_string()))?;
        let at = json
            .find(PLACEHOLDER)
            .ok_or_else(|| StoreError::Data("message JSON has no seq/epoch placeholder".into()))?;
        Ok(Draft {
            id: id.to_owned(),
            head: json[..at].to_owned(),
            tail: json[at + PLACEHOLDER.len()..].to_owned(),
        })
    }

    /// The message's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The JSON before the `seq` member (`{"room":..,"id":..`).
    pub fn head(&self) -> &str {
        &self.head
    }

    /// The JSON after the `epoch` member (`"from":..,"text":..,"ts":..}`).
    pub fn tail(&self) -> &str {
        &self.tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `append.lua` does with the two halves.
    fn splice(d: &Draft, seq: u64, epoch: &str) -> String {
        format!(r#"{},"seq":{seq},"epoch":"{epoch}",{}"#, d.head(), d.tail())
    }

    fn author() -> Author {
        Author {
            id: "alice".into(),
            name: "Al \"the\" ice".into(),
            bot: false,
        }
    }

    #[test]
    fn spliced_draft_is_the_numbered_message() {
        let text = r#"tricky ,"seq":0,"epoch":"", text"#;
        let d = Draft::new("general", "0190-x", author(), text, 42).unwrap();
        let stored: Message = serde_json::from_str(&splice(&d, 17, "e-1")).unwrap();
        assert_eq!(
            stored,
            Message {
                room: "general".into(),
                id: "0190-x".into(),
                seq: 17,
                epoch: "e-1".into(),
                from: author(),
                text: text.into(),
                ts: 42,
            }
        );
    }

    #[test]
    fn dm_rooms_and_unicode_survive() {
        let d = Draft::new("dm:a:b", "i", author(), "héllo \u{1F600}\n", 1).unwrap();
        let stored: Message = serde_json::from_str(&splice(&d, 1, "e")).unwrap();
        assert_eq!(stored.room, "dm:a:b");
        assert_eq!(stored.text, "héllo \u{1F600}\n");
    }
}
