//! Thousands of random and mutated frames through [`ClientFrame::parse`], on every CI
//! run: the parser never panics, refuses with one of its two codes, never echoes a
//! `ref` longer than allowed, and what it accepts survives a round trip. The long,
//! coverage-guided version of this is `fuzz/` (`scripts/fuzz.sh`), not run in CI.

use warren_proto::client::ClientFrame;
use warren_proto::codes::ErrorCode;
use warren_proto::ids::MAX_REF_LEN;

/// The property, shared with the fuzz target (`fuzz/fuzz_targets/client_frame.rs`).
#[path = "support/client_frame_property.rs"]
mod property;
use property::check;

/// Frames that parse, to mutate from.
const SEEDS: &[&str] = &[
    r#"{"type":"join","room":"general","since":4,"epoch":"e1","ref":"r1"}"#,
    r#"{"type":"leave","room":"general"}"#,
    r#"{"type":"send","room":"general","text":"hi","ref":"r2"}"#,
    r#"{"type":"dm","to":"bob","text":"psst","ref":"r3"}"#,
    r#"{"type":"history","room":"general","before":10,"limit":20}"#,
    r#"{"type":"presence","room":"dm:alice:bob"}"#,
    r#"{"type":"typing","room":"general"}"#,
    r#"{"type":"moderate","room":"general","action":"mute","user":"bob","duration_s":60,"reason":"spam"}"#,
    r#"{"type":"moderate","room":"r","action":"grant","user":"bob","role":"moderator"}"#,
    r#"{"type":"ping","ref":"p"}"#,
];

/// Bytes that matter to JSON and to our ids.
const SPICE: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b":",
    b",",
    b"null",
    b"true",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"\\u0000",
    b"\\ud800",
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b".",
    b"*",
    b"#",
    b"\"type\":\"ping\"",
    b"\"ref\":",
    b"\"room\":\"",
    b" ",
    b"\n",
    b"\0",
];

/// The bytes of JSON's grammar.
const ALPHABET: &[u8] = b"{}[]\":,tnf0123456789.-e ";

/// xorshift64*: deterministic, so a failure names its case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(7) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let end = (at + rng.below(8)).min(input.len());
                input.drain(at.min(end)..end);
            }
            2 => {
                let spice = SPICE[rng.below(SPICE.len())];
                input.splice(at..at, spice.iter().copied());
            }
            3 => input.truncate(at),
            4 if !input.is_empty() => {
                let start = rng.below(input.len());
                let piece: Vec<u8> = input[start..].iter().take(16).copied().collect();
                input.splice(at..at, piece);
            }
            5 => {
                let noise: Vec<u8> = (0..rng.below(12)).map(|_| rng.next() as u8).collect();
                input.splice(at..at, noise);
            }
            _ => input.extend_from_slice(b"\"x\":1}"),
        }
    }
}

#[test]
fn mutated_frames_never_panic_the_parser() {
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let mut accepted = 0;
    for round in 0..4000 {
        let mut input = SEEDS[round % SEEDS.len()].as_bytes().to_vec();
        mutate(&mut rng, &mut input);
        let text = String::from_utf8_lossy(&input);
        check(&text);
        accepted += usize::from(ClientFrame::parse(&text).is_ok());
    }
    // The mutations are small: some frames must still be readable, or the test only
    // exercises the first byte of the parser.
    assert!(
        accepted > 100,
        "only {accepted} of 4000 mutated frames parsed"
    );
}

#[test]
fn random_bytes_never_panic_the_parser() {
    let mut rng = Rng(0x0bad_5eed_0000_0002);
    for _ in 0..2000 {
        let len = rng.below(200);
        let input: Vec<u8> = (0..len)
            .map(|_| match rng.below(3) {
                0 => rng.next() as u8,
                1 => ALPHABET[rng.below(ALPHABET.len())],
                _ => SPICE[rng.below(SPICE.len())][0],
            })
            .collect();
        check(&String::from_utf8_lossy(&input));
    }
}

#[test]
fn deep_nesting_and_huge_numbers_are_refused_not_fatal() {
    let deep = format!(
        r#"{{"type":"ping","x":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    check(&deep);
    check(r#"{"type":"history","room":"r","limit":4294967296}"#);
    check(r#"{"type":"join","room":"r","since":1e400}"#);
    check(&format!(r#"{{"type":"ping","ref":"{}"}}"#, "é".repeat(40)));
}
