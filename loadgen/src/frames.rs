//! Reading server frames cheaply. A fan-out run receives ~100,000 frames a second on
//! one core, so the common frames are recognised by their first bytes and one field is
//! cut out of them; anything else goes through `serde_json`.
//!
//! Warren's frames are JSON objects whose first key is `type` (PROTOCOL.md); the seed
//! program's are `{"username": ..., "message": ...}`.

use serde_json::Value;

/// What a frame means to a load generator.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// A chat message and its text (Warren's `message`, or a seed frame).
    Message(&'a str),
    /// An `ack` and its `ref`.
    Ack(&'a str),
    /// An `error`: its `code` and `ref` (empty when absent).
    Error { code: String, r#ref: String },
    /// Any other frame, by its `type`.
    Other(String),
}

/// A Warren server frame.
pub fn classify(text: &str) -> Inbound<'_> {
    if let Some(rest) = text.strip_prefix("{\"type\":\"") {
        if rest.starts_with("message\"") {
            if let Some(t) = string_field(text, "text") {
                return Inbound::Message(t);
            }
        } else if rest.starts_with("ack\"") {
            if let Some(r) = string_field(text, "ref") {
                return Inbound::Ack(r);
            }
        }
    }
    classify_slow(text)
}

fn classify_slow(text: &str) -> Inbound<'_> {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Inbound::Other("unparsable".to_owned());
    };
    let field = |name: &str| v.get(name).and_then(Value::as_str).unwrap_or("").to_owned();
    match v.get("type").and_then(Value::as_str) {
        // Escaped text or an unusual key order: find the same slices by parsing.
        Some("message") => match string_field(text, "text") {
            Some(t) => Inbound::Message(t),
            None => Inbound::Other("message".to_owned()),
        },
        Some("ack") => match string_field(text, "ref") {
            Some(r) => Inbound::Ack(r),
            None => Inbound::Ack(""),
        },
        Some("error") => Inbound::Error {
            code: field("code"),
            r#ref: field("ref"),
        },
        Some(other) => Inbound::Other(other.to_owned()),
        None => Inbound::Other("untyped".to_owned()),
    }
}

/// A frame of the seed program: `{"username":"…","message":"…"}`.
pub fn classify_seed(text: &str) -> Inbound<'_> {
    match string_field(text, "message") {
        Some(m) => Inbound::Message(m),
        None => Inbound::Other("seed".to_owned()),
    }
}

/// The `seq` of a `message` or `ack` frame: the first `"seq":<digits>` in it (it comes
/// before `text` in a message, and a load generator's text never holds a quote).
pub fn seq(text: &str) -> Option<u64> {
    let start = text.find("\"seq\":")? + "\"seq\":".len();
    let digits = text[start..]
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len() - start);
    text[start..start + digits].parse().ok()
}

/// The value of the first top-level-looking `"name":"value"` pair, when the value has no
/// escapes (load generator payloads never do). `None` otherwise.
fn string_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\":\"");
    let start = text.find(&key)? + key.len();
    let len = text[start..].find('"')?;
    let value = &text[start..start + len];
    if value.ends_with('\\') {
        None
    } else {
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ack_and_error_frames() {
        let m = r#"{"type":"message","room":"r","id":"x","seq":3,"epoch":"e","from":{"id":"u","name":"u","bot":false},"text":"123|4|xx","ts":1}"#;
        assert_eq!(classify(m), Inbound::Message("123|4|xx"));
        assert_eq!(
            classify(r#"{"type":"ack","ref":"99","room":"r","id":"x","seq":3}"#),
            Inbound::Ack("99")
        );
        assert_eq!(
            classify(r#"{"type":"error","code":"rate_limited","message":"slow down","ref":"7"}"#),
            Inbound::Error {
                code: "rate_limited".into(),
                r#ref: "7".into()
            }
        );
        assert_eq!(
            classify(r#"{"type":"joined","room":"r","history":[{"text":"a"}]}"#),
            Inbound::Other("joined".into())
        );
    }

    #[test]
    fn seq_of_messages_and_acks() {
        let m =
            r#"{"type":"message","room":"r","id":"x","seq":31,"epoch":"e","text":"1|2|x","ts":1}"#;
        assert_eq!(seq(m), Some(31));
        assert_eq!(
            seq(r#"{"type":"ack","ref":"9","room":"r","id":"x","seq":7}"#),
            Some(7)
        );
        assert_eq!(seq(r#"{"type":"ack","ref":"9"}"#), None);
    }

    #[test]
    fn key_order_does_not_matter() {
        assert_eq!(
            classify(r#"{"room":"r","type":"message","text":"1|2|x"}"#),
            Inbound::Message("1|2|x")
        );
    }

    #[test]
    fn seed_frames() {
        assert_eq!(
            classify_seed(r#"{"username":"s1","message":"5|1|xxxx"}"#),
            Inbound::Message("5|1|xxxx")
        );
    }
}
