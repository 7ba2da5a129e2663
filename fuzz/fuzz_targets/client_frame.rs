//! A WebSocket text frame from a client, as the gateway reads it: arbitrary bytes
//! (lossily UTF-8, as the WebSocket layer would have refused the rest) through
//! `ClientFrame::parse`. It must never panic, must refuse with `bad_request` or
//! `unknown_type`, never echo a `ref` over 64 bytes, and what it accepts must survive
//! a round trip through its own serialisation.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::client::ClientFrame;
use proto::codes::ErrorCode;
use proto::ids::MAX_REF_LEN;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match ClientFrame::parse(&text) {
        Ok(frame) => {
            assert!(frame
                .reference
                .as_ref()
                .is_none_or(|r| r.len() <= MAX_REF_LEN));
            let again = serde_json::to_string(&frame).expect("a parsed frame serialises");
            let back = ClientFrame::parse(&again).expect("a serialised frame parses");
            assert_eq!(back, frame);
        }
        Err(e) => {
            assert!(matches!(
                e.code,
                ErrorCode::BadRequest | ErrorCode::UnknownType
            ));
            assert!(e.reference.as_ref().is_none_or(|r| r.len() <= MAX_REF_LEN));
        }
    }
});
