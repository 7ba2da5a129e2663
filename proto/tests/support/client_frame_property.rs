//! What must hold of every text [`ClientFrame::parse`] is given: it never panics, refuses
//! with `bad_request` or `unknown_type` and a message, never echoes a `ref` over
//! [`MAX_REF_LEN`] bytes, and what it accepts survives a round trip through its own
//! serialisation. Shared by `proto/tests/client_frame_noise.rs` and the fuzz target
//! `fuzz/fuzz_targets/client_frame.rs`, each of which brings `ClientFrame`, `ErrorCode`
//! and `MAX_REF_LEN` into scope (the proto crate has a different name in each).

use super::{ClientFrame, ErrorCode, MAX_REF_LEN};

/// Parses `text` and asserts the property.
pub fn check(text: &str) {
    match ClientFrame::parse(text) {
        Ok(frame) => {
            assert!(frame
                .reference
                .as_ref()
                .is_none_or(|r| r.len() <= MAX_REF_LEN));
            let again = serde_json::to_string(&frame).expect("a parsed frame serialises");
            let back = ClientFrame::parse(&again)
                .unwrap_or_else(|e| panic!("round trip of {text:?} failed: {e:?}"));
            assert_eq!(back, frame, "round trip of {text:?}");
        }
        Err(e) => {
            assert!(
                matches!(e.code, ErrorCode::BadRequest | ErrorCode::UnknownType),
                "{text:?}: {:?}",
                e.code
            );
            assert!(e.reference.as_ref().is_none_or(|r| r.len() <= MAX_REF_LEN));
            assert!(!e.message.is_empty());
        }
    }
}
