//! permessage-deflate (RFC 7692), as Warren uses it.
//!
//! A server's negotiation ([`negotiate`]) always answers `server_no_context_takeover; client_no_context_takeover`,
//! which the RFC lets a server add to any offer it accepts. Then every message, in
//! either direction, is a deflate stream of its own:
//! - the gateway compresses an event **once**, and the same compressed bytes go to every
//!   member that negotiated the extension (the gateway's `ws::Shared`);
//! - nothing is kept per connection between messages: one compressor and one
//!   decompressor per thread do the work, so an idle connection costs no deflate
//!   state (zlib's window alone is 32 KiB, four times the idle budget per connection).
//!   Only a client message that arrives in pieces (fragments, or a frame over several
//!   reads) has an [`Inflater`] of its own until it ends, so that its text is checked
//!   as it inflates rather than once the client has sent all of it.
//!
//! An offer that asks the server for a window smaller than 15 bits is declined (the
//! event's one compressed form could not honour it); the next offer, or no compression,
//! is used instead.
//!
//! A client (the load generator, the tests) offers [`CLIENT_OFFER`], reads the answer
//! with [`agreed`], and inflates what it receives with the same [`decompress`] and
//! [`Inflater`].

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The response header value when an offer is accepted.
const ACCEPT: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
const ACCEPT_15: &str = "permessage-deflate; server_no_context_takeover; \
                         client_no_context_takeover; server_max_window_bits=15";

/// The four bytes a sync flush ends with, which the sender drops (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0, 0, 0xFF, 0xFF];

/// What a client that sends nothing compressed offers: no parameter it would have to
/// honour when sending, and `client_max_window_bits` so that a server may pick any window.
pub const CLIENT_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Whether a server's `Sec-WebSocket-Extensions` answer agreed permessage-deflate.
pub fn agreed(answer: &str) -> bool {
    answer.split(',').any(|ext| {
        ext.split(';')
            .next()
            .is_some_and(|name| name.trim().eq_ignore_ascii_case("permessage-deflate"))
    })
}

/// Picks the first acceptable permessage-deflate offer among the values of every
/// `Sec-WebSocket-Extensions` header; returns the response header's value.
pub fn negotiate<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    headers
        .into_iter()
        .flat_map(|h| h.split(','))
        .find_map(accept_offer)
}

/// One offer: `permessage-deflate; param[=value]; …`.
fn accept_offer(offer: &str) -> Option<&'static str> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut server_bits_15 = false;
    for param in parts.filter(|p| !p.is_empty()) {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
            }
            ("server_max_window_bits", Some(v)) => {
                if window_bits(v)? != 15 {
                    return None;
                }
                server_bits_15 = true;
            }
            _ => return None,
        }
        seen.push(name);
    }
    Some(if server_bits_15 { ACCEPT_15 } else { ACCEPT })
}

fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 2 {
        return None;
    }
    v.parse().ok().filter(|bits| (8..=15).contains(bits))
}

thread_local! {
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::default(), false));
    static DECOMPRESSOR: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// Compresses one whole message into a permessage-deflate payload (no context kept).
///
/// `None` when the compressor fails or stops making progress: the caller then sends the
/// message uncompressed, never a stream that would inflate to something shorter.
///
/// A sync flush is complete only once its empty stored block (`00 00 FF FF`) has come
/// out with room to spare in the output: a compressor may return from a flush with
/// room left and bytes still pending (miniz_oxide did, after an earlier call filled the
/// buffer, and the message then inflated, without any error, to a shorter one).
pub fn compress(data: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|c| {
        c.reset();
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let mut stalls = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let before = (c.total_in(), c.total_out());
            let read = c.total_in() as usize;
            c.compress_vec(&data[read..], &mut out, FlushCompress::Sync)
                .ok()?;
            let all_in = c.total_in() as usize == data.len();
            if all_in && out.len() < out.capacity() && out.ends_with(&TAIL) {
                break;
            }
            if before == (c.total_in(), c.total_out()) {
                stalls += 1;
                if stalls > MAX_STALLS {
                    return None;
                }
                out.reserve(64);
            }
        }
        out.truncate(out.len() - TAIL.len());
        Some(out)
    })
}

/// Calls in a row that may take no input and give no output before [`compress`] gives up.
const MAX_STALLS: u32 = 3;

/// Why a compressed message could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the limit (1009).
    TooBig,
    /// It is not a deflate stream (1007).
    Corrupt,
}

/// Inflates one whole message's payload onto `out` with this thread's decompressor,
/// refusing to let `out` pass `limit` bytes: a message that arrived in one piece needs
/// no inflate state of its own.
pub fn decompress(data: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
    DECOMPRESSOR.with_borrow_mut(|d| {
        d.reset(false);
        out.reserve((data.len() * 3).clamp(64, limit + 1));
        if !inflate(d, data, FlushDecompress::None, out, limit)? {
            inflate(d, &TAIL, FlushDecompress::Sync, out, limit)?;
        }
        Ok(())
    })
}

/// One message inflated as its pieces arrive (fragments, or a frame that comes in
/// several reads), so that what it inflates to is checked before it ends: the
/// connection keeps this, an inflate state and its window, only while such a message
/// is in progress.
pub struct Inflater {
    d: Decompress,
    /// The stream had a final block: what follows it is ignored, as [`decompress`] does.
    ended: bool,
}

impl Default for Inflater {
    fn default() -> Inflater {
        Inflater {
            d: Decompress::new(false),
            ended: false,
        }
    }
}

impl Inflater {
    /// Inflates the next piece of the message onto `out`, never past `limit` bytes.
    pub fn push(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        if !self.ended {
            self.ended = inflate(&mut self.d, data, FlushDecompress::None, out, limit)?;
        }
        Ok(())
    }

    /// Ends the message with the sync-flush tail its sender left off.
    pub fn finish(mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        if !self.ended {
            inflate(&mut self.d, &TAIL, FlushDecompress::Sync, out, limit)?;
        }
        Ok(())
    }
}

/// Feeds `input` to `d`, appending what comes out to `out` and stopping as soon as `out`
/// passes `limit`. True when the stream ended (a final block).
fn inflate(
    d: &mut Decompress,
    input: &[u8],
    flush: FlushDecompress,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<bool, InflateError> {
    let start = d.total_in();
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().min(limit + 1 - out.len()).max(64));
        }
        let read = (d.total_in() - start) as usize;
        let before = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(&input[read..], out, flush)
            .map_err(|_| InflateError::Corrupt)?;
        if out.len() > limit {
            return Err(InflateError::TooBig);
        }
        if status == Status::StreamEnd {
            return Ok(true);
        }
        let all_read = (d.total_in() - start) as usize == input.len();
        if out.len() < out.capacity() {
            if all_read {
                return Ok(false);
            }
            if before == (d.total_in(), d.total_out()) {
                return Err(InflateError::Corrupt);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`decompress`] into a new buffer.
    fn whole(data: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        decompress(data, &mut out, limit).map(|()| out)
    }

    /// [`Inflater`] fed `data` in pieces of `piece` bytes.
    fn in_pieces(data: &[u8], piece: usize, limit: usize) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        let mut inflater = Inflater::default();
        for part in data.chunks(piece) {
            inflater.push(part, &mut out, limit)?;
        }
        inflater.finish(&mut out, limit).map(|()| out)
    }

    #[test]
    fn a_message_inflated_in_pieces_is_the_whole_message() {
        let text: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i * 7 % 26) as u8).collect();
        let packed = compress(&text).unwrap();
        for piece in [1, 2, 3, 7, 100, packed.len()] {
            assert_eq!(
                in_pieces(&packed, piece, 1 << 20),
                Ok(text.clone()),
                "{piece}"
            );
        }
        let bomb = compress(&vec![b'a'; 1 << 20]).unwrap();
        assert_eq!(in_pieces(&bomb, 5, 65_536), Err(InflateError::TooBig));
        assert_eq!(
            in_pieces(&[0xFF, 0xFF, 0xFF], 1, 1000),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn offers_browsers_and_libraries_make_are_accepted() {
        for offer in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=12",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "Permessage-Deflate; Client_Max_Window_Bits",
        ] {
            assert_eq!(negotiate([offer]), Some(ACCEPT), "{offer}");
        }
        assert_eq!(
            negotiate(["permessage-deflate; server_max_window_bits=15"]),
            Some(ACCEPT_15)
        );
        assert_eq!(
            negotiate(["permessage-deflate; server_max_window_bits=\"15\""]),
            Some(ACCEPT_15)
        );
    }

    #[test]
    fn offers_that_cannot_be_honoured_are_declined() {
        for offer in [
            "",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; unknown_param",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        ] {
            assert_eq!(negotiate([offer]), None, "{offer}");
        }
    }

    #[test]
    fn a_client_reads_the_answer() {
        assert_eq!(negotiate([CLIENT_OFFER]), Some(ACCEPT));
        assert!(agreed(ACCEPT));
        assert!(agreed("x-other, Permessage-Deflate"));
        assert!(!agreed("x-webkit-deflate-frame"));
        assert!(!agreed(""));
    }

    #[test]
    fn a_declined_offer_falls_back_to_the_next() {
        let offers = "permessage-deflate; server_max_window_bits=9, permessage-deflate";
        assert_eq!(negotiate([offers]), Some(ACCEPT));
        assert_eq!(negotiate(["foo", "permessage-deflate"]), Some(ACCEPT));
    }

    #[test]
    fn compress_then_decompress_gives_back_the_message() {
        let texts: [Vec<u8>; 4] = [
            Vec::new(),
            br#"{"type":"message","room":"general","text":"hello"}"#.to_vec(),
            b"abc".repeat(50_000),
            (0..70_000u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ];
        for text in texts {
            let packed = compress(&text).unwrap();
            assert_eq!(whole(&packed, 1 << 20), Ok(text));
        }
    }

    /// A grey-scale picture, 512 pixels a row: smooth waves plus noise, the kind of data
    /// (Autobahn 12.2.x sends slices of a bitmap) on which miniz_oxide's sync flush
    /// returned with room left and bytes pending. With the old loop, seeds 1 and 171 of
    /// these came out truncated at the default level.
    fn picture(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (fx, fy) = ((next() % 50 + 5) as f64, (next() % 50 + 5) as f64);
        let noise = next() % 24 + 1;
        (0..len)
            .map(|i| {
                let (x, y) = ((i % 512) as f64, (i / 512) as f64);
                let v = 128.0 + 60.0 * (x / fx).sin() + 50.0 * (y / fy).cos();
                (v + (next() % noise) as f64).clamp(0.0, 255.0) as u8
            })
            .collect()
    }

    #[test]
    fn no_message_comes_back_shorter() {
        for seed in 0..=180u64 {
            let data = picture(seed, 65_536 - (seed as usize % 512));
            let packed = compress(&data).expect("compresses");
            let back = whole(&packed, 1 << 20).expect("inflates");
            assert_eq!(back.len(), data.len(), "seed {seed}: length");
            assert!(back == data, "seed {seed}: content");
        }
    }

    #[test]
    fn each_message_stands_alone() {
        let a = compress(b"the same words again and again").unwrap();
        let b = compress(b"the same words again and again").unwrap();
        assert_eq!(a, b, "no context carried from one message to the next");
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let bomb = compress(&vec![b'a'; 10 << 20]).unwrap();
        assert!(bomb.len() < 64 << 10);
        assert_eq!(whole(&bomb, 65_536), Err(InflateError::TooBig));
        let small = compress(&[b'a'; 65_536]).unwrap();
        assert_eq!(whole(&small, 65_536).map(|v| v.len()), Ok(65_536));
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for junk in [
            &[0xFFu8, 0xFF, 0xFF][..],
            &[0x07; 40],
            b"\x00\x05\x00\xfa\xffhello",
        ] {
            let r = whole(junk, 65_536);
            assert!(
                r.is_err() || r.as_ref().is_ok_and(|v| v.len() <= 65_536),
                "{junk:?}"
            );
        }
        assert_eq!(whole(&[0xFF, 0xFF, 0xFF], 1000), Err(InflateError::Corrupt));
    }
}
