//! A WebSocket text frame from a client, as the gateway reads it: arbitrary bytes
//! (lossily UTF-8, as the WebSocket layer would have refused the rest) through
//! `ClientFrame::parse`, checked against the property `proto/tests/client_frame_noise.rs`
//! checks too (`proto/tests/support/client_frame_property.rs`): it must never panic,
//! must refuse with `bad_request` or `unknown_type`, never echo a `ref` over 64 bytes,
//! and what it accepts must survive a round trip through its own serialisation.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::client::ClientFrame;
use proto::codes::ErrorCode;
use proto::ids::MAX_REF_LEN;

#[path = "../../proto/tests/support/client_frame_property.rs"]
mod property;

fuzz_target!(|data: &[u8]| {
    property::check(&String::from_utf8_lossy(data));
});
