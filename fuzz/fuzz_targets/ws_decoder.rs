//! Bytes from a client's TCP connection, as the gateway's WebSocket layer reads them
//! (`ws_codec::Decoder`, which the gateway's `ws::Reader` feeds): the first byte picks permessage-deflate on or off and how
//! the rest is cut into reads. It must never panic; every text it yields is within
//! `max_message`, and after an error nothing more is read (the connection closes).

#![no_main]

use ws_codec::{Decoder, Incoming};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, bytes)) = data.split_first() else {
        return;
    };
    let mut decoder = Decoder::new(MAX, knobs & 1 == 1);
    let chunk = usize::from(knobs >> 1).max(1);
    for part in bytes.chunks(chunk) {
        decoder.feed(part);
        loop {
            match decoder.next_message() {
                Ok(Some(Incoming::Text(text))) => assert!(text.len() <= MAX),
                Ok(Some(Incoming::Ping(p))) => assert!(p.len() <= 125),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
