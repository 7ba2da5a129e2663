//! Hostile clients against real gateways: oversized, malformed, compressed and binary
//! frames, floods of joins, pings and connections, half-open and slowloris sockets, a
//! reader that stops reading, and the security checks (Origin, JWT algorithm confusion,
//! `kid` tricks, expiry while connected, identity only from `sub`, ids that would break
//! a routing key, secrets in logs). Each test asserts the documented close code or error
//! and ends by checking that the gateway still serves a well-behaved client.
//!
//! Non-destructive: RabbitMQ and Redis are never stopped. Run
//! `cargo build --workspace --bins` first; the harness starts those binaries.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use warren_tests::client::{ConnectError, Recv};
use warren_tests::hostile_support::{
    assert_still_serves, connect_from, deflate, encode_client_frame, metrics, opcode, rsa_keypair,
    rss_kib_of_listener, sample, sign_with, test_logs_dir, RawFrame, RawRead, RawWs,
};
use warren_tests::token::{alg_none_from, sign_hs256};
use warren_tests::{eventually, Claims, Connect, Stack, StackOptions};

/// How long a close or an answer may take to arrive.
const WAIT: Duration = Duration::from_secs(15);
/// How long counters may take to converge.
const CONVERGE: Duration = Duration::from_secs(10);
/// How long a close the gateway owes at once may take, on a loaded machine: far less
/// than anything that would close the connection otherwise (ping, idle timeout).
const AT_ONCE: Duration = Duration::from_secs(3);

/// The limits the flood tests run under: the stack's own lifts the send rate (and with
/// it the frame budget, which is at least twice the send budget), these put it back.
fn budgeted(options: StackOptions) -> StackOptions {
    options
        .env("WARREN__GATEWAY__SENDS_PER_SEC", "20")
        .env("WARREN__GATEWAY__BURST", "40")
        .env("WARREN__GATEWAY__FRAMES_PER_SEC", "100")
        .env("WARREN__GATEWAY__FRAMES_BURST", "500")
}

/// A raw connection for `user` on gateway 0, past its `welcome`.
async fn raw(stack: &Stack, user: &str, recv_buffer: Option<u32>) -> RawWs {
    let mut ws = RawWs::open(
        stack.gateway_addr(0),
        &Connect::token(stack.token(user)),
        &[],
        recv_buffer,
    )
    .await
    .unwrap_or_else(|e| panic!("{user}: raw upgrade: {e:#}"));
    assert_eq!(ws.status, 101, "{user}: upgrade answered {}", ws.status);
    match ws.read_frame(WAIT).await {
        RawRead::Frame(f) if f.text().contains("\"welcome\"") => ws,
        other => panic!("{user}: no welcome: {other:?}"),
    }
}

/// The code of the close frame that arrives within `within`, other frames skipped;
/// `None` when none does.
async fn close_within(ws: &mut RawWs, within: Duration) -> Option<u16> {
    let deadline = Instant::now() + within;
    loop {
        match ws
            .read_frame(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            RawRead::Frame(f) if f.opcode == opcode::CLOSE => return f.close_code(),
            RawRead::Frame(_) => {}
            RawRead::Eof | RawRead::Timeout => return None,
        }
    }
}

async fn closed_counter(stack: &Stack, code: &str) -> f64 {
    let m = metrics(stack, 0).await;
    sample(
        &m,
        &format!("warren_gateway_connections_closed_total{{code=\"{code}\"}}"),
    )
}

// ---- frames ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_and_messages_close_with_1009() {
    let stack =
        Stack::start(StackOptions::new(1, 1).env("WARREN__GATEWAY__MAX_FRAME_BYTES", "4096")).await;

    let mut big = stack.connect(0, "big").await;
    big.send_text(&format!(
        r#"{{"type":"ping","pad":"{}"}}"#,
        "x".repeat(5000)
    ))
    .await;
    assert_eq!(big.closed_with(WAIT).await, Some(1009), "one large frame");

    // Fragments under the limit are put back together and read as one frame...
    let mut parts = raw(&stack, "fragments", None).await;
    let ping = br#"{"type":"ping","ref":"frag"}"#;
    parts
        .send_frame(false, false, opcode::TEXT, &ping[..10])
        .await
        .unwrap();
    parts
        .send_frame(false, false, opcode::CONTINUATION, &ping[10..20])
        .await
        .unwrap();
    parts
        .send_frame(true, false, opcode::CONTINUATION, &ping[20..])
        .await
        .unwrap();
    match parts.read_frame(WAIT).await {
        RawRead::Frame(f) => assert!(f.text().contains(r#""ref":"frag""#), "{}", f.text()),
        other => panic!("no pong for a fragmented ping: {other:?}"),
    }
    // ...and a message whose fragments add up past the limit closes with 1009, though
    // each fragment is small.
    let chunk = vec![b' '; 3000];
    parts
        .send_frame(false, false, opcode::TEXT, &chunk)
        .await
        .unwrap();
    parts
        .send_frame(false, false, opcode::CONTINUATION, &chunk)
        .await
        .ok();
    assert_eq!(
        parts.closed_with(WAIT).await,
        Some(1009),
        "fragmented message"
    );

    assert_still_serves(&stack, 0, "after-big").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_invalid_utf8_and_malformed_frames_get_their_codes() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;

    let mut binary = stack.connect(0, "binary").await;
    binary.send_ws(WsMessage::binary(vec![0x7b, 0x7d])).await;
    assert_eq!(binary.closed_with(WAIT).await, Some(1003), "binary frame");

    let mut utf8 = raw(&stack, "utf8", None).await;
    utf8.send_frame(
        true,
        false,
        opcode::TEXT,
        b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}",
    )
    .await
    .unwrap();
    assert_eq!(utf8.closed_with(WAIT).await, Some(1007), "invalid UTF-8");

    // A multi-byte character split across two fragments is valid; a truncated one is not.
    let mut split = raw(&stack, "utf8-split", None).await;
    let text = "{\"type\":\"ping\",\"ref\":\"é\"}".as_bytes();
    let cut = text.iter().position(|b| *b == 0xc3).unwrap() + 1;
    split
        .send_frame(false, false, opcode::TEXT, &text[..cut])
        .await
        .unwrap();
    split
        .send_frame(true, false, opcode::CONTINUATION, &text[cut..])
        .await
        .unwrap();
    match split.read_frame(WAIT).await {
        RawRead::Frame(f) => assert!(f.text().contains("pong"), "{}", f.text()),
        other => panic!("no pong for a split character: {other:?}"),
    }
    split
        .send_frame(false, false, opcode::TEXT, &text[..cut])
        .await
        .unwrap();
    split
        .send_frame(true, false, opcode::CONTINUATION, b"")
        .await
        .unwrap();
    assert_eq!(
        split.closed_with(WAIT).await,
        Some(1007),
        "truncated character"
    );

    let mut bad = stack.connect(0, "malformed").await;
    bad.send_text("not json at all").await;
    let first = bad.recv().await;
    assert_eq!(
        (first["type"].as_str(), first["code"].as_str()),
        (Some("error"), Some("bad_request")),
        "{first}"
    );
    bad.send_frame(json!({"type": "explode", "ref": "u1"}))
        .await;
    let second = bad.recv().await;
    assert_eq!(second["code"], "unknown_type", "{second}");
    assert_eq!(second["ref"], "u1", "{second}");
    // An unknown type is a newer client's, not a bad frame: it is no strike.
    bad.send_frame(json!({"type": "send", "ref": "m1"})).await;
    let third = bad.recv().await;
    assert_eq!(
        (third["code"].as_str(), third["ref"].as_str()),
        (Some("bad_request"), Some("m1")),
        "{third}"
    );
    bad.send_frame(json!({"type": "join", "ref": "j1"})).await;
    let fourth = bad.recv().await;
    assert_eq!(
        (fourth["code"].as_str(), fourth["ref"].as_str()),
        (Some("bad_request"), Some("j1")),
        "{fourth}"
    );
    assert_eq!(
        bad.closed_with(WAIT).await,
        Some(1008),
        "third malformed frame in 10 s"
    );

    assert_still_serves(&stack, 0, "after-malformed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_closes_with_1007_at_its_first_byte_not_at_the_end_of_the_message() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let start = b"{\"type\":\"ping\",\"ref\":\"";

    // A first fragment with a bad byte, and no other fragment ever.
    let mut fragment = raw(&stack, "utf8-fragment", None).await;
    fragment
        .send_frame(false, false, opcode::TEXT, &[&start[..], b"\xff"].concat())
        .await
        .unwrap();
    assert_eq!(
        close_within(&mut fragment, AT_ONCE).await,
        Some(1007),
        "a bad first fragment"
    );

    // A character that may be one (`F4`) at the end of a fragment, and the byte that
    // makes it none (`90`, past U+10FFFF) in the next (Autobahn 6.4.2).
    let mut cut = raw(&stack, "utf8-cut", None).await;
    cut.send_frame(false, false, opcode::TEXT, &[&start[..], b"\xf4"].concat())
        .await
        .unwrap();
    cut.send_frame(false, false, opcode::CONTINUATION, b"\x90\x80\x80")
        .await
        .unwrap();
    assert_eq!(
        close_within(&mut cut, AT_ONCE).await,
        Some(1007),
        "an impossible character across fragments"
    );

    // One frame whose bytes stop coming after the bad one (Autobahn 6.4.3).
    let mut partial = raw(&stack, "utf8-partial", None).await;
    let payload = [&start[..], b"\xc0\xaf", &[b'x'; 200]].concat();
    let bytes = encode_client_frame(true, false, opcode::TEXT, &payload, rand::random());
    partial.stream.write_all(&bytes[..40]).await.unwrap();
    assert_eq!(
        close_within(&mut partial, AT_ONCE).await,
        Some(1007),
        "a frame cut after its bad byte"
    );

    // Compressed: the inflated text is checked as it inflates.
    let mut packed = raw_welcomed(&stack, "utf8-deflate", &DEFLATE_OFFER).await;
    let bad = deflate(&[&start[..], b"\xed\xa0\x80"].concat());
    packed
        .send_frame(false, true, opcode::TEXT, &bad)
        .await
        .unwrap();
    assert_eq!(
        close_within(&mut packed, AT_ONCE).await,
        Some(1007),
        "a compressed first fragment that inflates to a surrogate"
    );

    // Valid text cut anywhere, compressed or not, is still read whole.
    let mut good = raw_welcomed(&stack, "utf8-good", &DEFLATE_OFFER).await;
    let ping = "{\"type\":\"ping\",\"ref\":\"κόσμε-𝄞\"}".as_bytes();
    let squeezed = deflate(ping);
    for (compressed, data) in [(false, ping), (true, &squeezed[..])] {
        for cut in [1, data.len() / 2, data.len() - 1] {
            good.send_frame(false, compressed, opcode::TEXT, &data[..cut])
                .await
                .unwrap();
            good.send_frame(true, false, opcode::CONTINUATION, &data[cut..])
                .await
                .unwrap();
            match good.read_frame(WAIT).await {
                RawRead::Frame(f) => assert!(
                    f.message().contains("κόσμε-𝄞"),
                    "compressed {compressed}, cut {cut}: {}",
                    f.message()
                ),
                other => panic!("compressed {compressed}, cut {cut}: {other:?}"),
            }
        }
    }
    good.send_frame(true, false, opcode::CLOSE, &1000u16.to_be_bytes())
        .await
        .unwrap();

    assert_eq!(closed_counter(&stack, "1007").await, 4.0);
    assert_still_serves(&stack, 0, "after-utf8").await;
}

/// What a client offering permessage-deflate is answered: no context kept on either
/// side, so the gateway can compress each event once for every member.
const DEFLATE_OFFER: [(&str, &str); 1] = [(
    "Sec-WebSocket-Extensions",
    "permessage-deflate; client_max_window_bits",
)];
const DEFLATE_AGREED: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Opens a raw connection as `user` with `extra` headers and reads its welcome.
async fn raw_welcomed(stack: &Stack, user: &str, extra: &[(&str, &str)]) -> RawWs {
    let mut ws = RawWs::open(
        stack.gateway_addr(0),
        &Connect::token(stack.token(user)),
        extra,
        None,
    )
    .await
    .expect("raw upgrade");
    assert_eq!(ws.status, 101, "{user}");
    let first = ws.read_frame(WAIT).await;
    assert!(
        matches!(&first, RawRead::Frame(f) if f.message().contains("welcome")),
        "{user}: {first:?}"
    );
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_frame_without_an_agreed_extension_closes_with_1002() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    // A "compressed" frame of 60 KB of deflate stream: refused on its header, never
    // inflated.
    let mut bomb = vec![0x78, 0x9c];
    bomb.extend(std::iter::repeat_n(0u8, 60_000));
    let mut plain = raw_welcomed(&stack, "zipper", &[]).await;
    assert_eq!(plain.header("sec-websocket-extensions"), None);
    plain
        .send_frame(true, true, opcode::TEXT, &bomb)
        .await
        .unwrap();
    assert_eq!(plain.closed_with(WAIT).await, Some(1002), "RSV1, no offer");
    assert_still_serves(&stack, 0, "after-zipper").await;

    // A gateway with compression turned off ignores the offer, and RSV1 is as wrong.
    let off =
        Stack::start(StackOptions::new(1, 1).env("WARREN__GATEWAY__COMPRESSION", "false")).await;
    let mut declined = raw_welcomed(&off, "zipper", &DEFLATE_OFFER).await;
    assert_eq!(declined.header("sec-websocket-extensions"), None);
    declined
        .send_frame(true, true, opcode::TEXT, &bomb)
        .await
        .unwrap();
    assert_eq!(
        declined.closed_with(WAIT).await,
        Some(1002),
        "RSV1, declined"
    );
    assert_still_serves(&off, 0, "after-declined").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_frames_that_inflate_past_max_frame_bytes_close_with_1009() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let max = 65_536;

    // 10 MiB of spaces in a send: about 10 KB on the wire, far under max_frame_bytes,
    // and 160 times over it once inflated. The gateway stops inflating at the limit.
    let mut ws = raw_welcomed(&stack, "bomber", &DEFLATE_OFFER).await;
    assert_eq!(ws.header("sec-websocket-extensions"), Some(DEFLATE_AGREED));
    let text = format!(
        r#"{{"type":"send","room":"r","ref":"b","text":"{}"}}"#,
        " ".repeat(10 << 20)
    );
    let bomb = deflate(text.as_bytes());
    assert!(bomb.len() < max / 2, "{} bytes on the wire", bomb.len());
    ws.send_frame(true, true, opcode::TEXT, &bomb)
        .await
        .unwrap();
    assert_eq!(
        ws.closed_with(WAIT).await,
        Some(1009),
        "inflates past the limit"
    );

    // The same bomb in fragments: the limit is on the whole message.
    let mut ws = raw_welcomed(&stack, "bomber2", &DEFLATE_OFFER).await;
    let (head, tail) = bomb.split_at(bomb.len() / 2);
    ws.send_frame(false, true, opcode::TEXT, head)
        .await
        .unwrap();
    ws.send_frame(true, false, opcode::CONTINUATION, tail)
        .await
        .unwrap();
    assert_eq!(ws.closed_with(WAIT).await, Some(1009), "fragmented bomb");

    // Bytes that are not a deflate stream: 1007.
    let mut ws = raw_welcomed(&stack, "garbler", &DEFLATE_OFFER).await;
    ws.send_frame(true, true, opcode::TEXT, &[0xFF, 0xFF, 0xFF, 0xFF])
        .await
        .unwrap();
    assert_eq!(ws.closed_with(WAIT).await, Some(1007), "not deflate");

    // RSV1 belongs on a message's first frame only: 1002 on a continuation.
    let mut ws = raw_welcomed(&stack, "misflagger", &DEFLATE_OFFER).await;
    let half = deflate(br#"{"type":"ping"}"#);
    ws.send_frame(false, true, opcode::TEXT, &half[..1])
        .await
        .unwrap();
    ws.send_frame(true, true, opcode::CONTINUATION, &half[1..])
        .await
        .unwrap();
    assert_eq!(
        ws.closed_with(WAIT).await,
        Some(1002),
        "RSV1 on a continuation"
    );

    // A compressed message just under the limit is read and answered.
    let mut ws = raw_welcomed(&stack, "honest", &DEFLATE_OFFER).await;
    let pad = " ".repeat(max - 64);
    let ping = format!(r#"{{"type":"ping","ref":"big"{pad}}}"#);
    assert!(ping.len() <= max);
    ws.send_frame(true, true, opcode::TEXT, &deflate(ping.as_bytes()))
        .await
        .unwrap();
    let answer = ws.read_frame(WAIT).await;
    assert!(
        matches!(&answer, RawRead::Frame(f) if f.message().contains(r#""ref":"big""#)),
        "{answer:?}"
    );

    let m = metrics(&stack, 0).await;
    assert_eq!(
        sample(&m, "warren_gateway_connections_closed_total{code=\"1009\"}"),
        2.0
    );
    assert_still_serves(&stack, 0, "after-bombs").await;
}

// ---- floods ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_joins_stop_at_the_room_cap_and_the_connection_stays_usable() {
    const CAP: usize = 50;
    const JOINS: usize = 10_000;
    let stack = Stack::start(
        StackOptions::new(1, 1)
            .env(
                "WARREN__GATEWAY__MAX_ROOMS_PER_CONNECTION",
                &CAP.to_string(),
            )
            .env("WARREN__GATEWAY__FRAMES_PER_SEC", "1000000")
            .env("WARREN__GATEWAY__FRAMES_BURST", "1000000"),
    )
    .await;
    let rss_before = rss_kib_of_listener(stack.gateway_addr(0)).expect("gateway RSS");
    let mut c = stack.connect(0, "joiner").await;
    let mut answers: HashMap<String, String> = HashMap::new();
    for chunk in 0..JOINS / 500 {
        for i in chunk * 500..(chunk + 1) * 500 {
            c.send_frame(
                json!({"type": "join", "room": format!("r-{i}"), "ref": format!("j-{i}")}),
            )
            .await;
        }
        // Read what has come so far, so neither side's buffers fill.
        loop {
            match c.try_recv(Duration::from_millis(200)).await {
                Recv::Frame(v) => {
                    if let Some(r) = v["ref"].as_str().filter(|r| r.starts_with("j-")) {
                        let what = v["code"]
                            .as_str()
                            .unwrap_or(v["type"].as_str().unwrap_or("?"));
                        answers.insert(r.to_owned(), what.to_owned());
                    }
                }
                Recv::Timeout => break,
                Recv::Closed { code, reason } => panic!(
                    "closed ({code:?}, {reason}) after {} answers",
                    answers.len()
                ),
            }
        }
    }
    let deadline = Instant::now() + WAIT;
    while answers.len() < JOINS && Instant::now() < deadline {
        if let Recv::Frame(v) = c.try_recv(Duration::from_millis(500)).await {
            if let Some(r) = v["ref"].as_str().filter(|r| r.starts_with("j-")) {
                let what = v["code"]
                    .as_str()
                    .unwrap_or(v["type"].as_str().unwrap_or("?"));
                answers.insert(r.to_owned(), what.to_owned());
            }
        }
    }
    assert_eq!(answers.len(), JOINS, "every join is answered");
    let joined = answers.values().filter(|a| *a == "joined").count();
    let forbidden = answers.values().filter(|a| *a == "forbidden").count();
    assert_eq!(
        (joined, forbidden),
        (CAP, JOINS - CAP),
        "{:?}",
        answers.values().collect::<BTreeSet<_>>()
    );
    for i in 0..CAP {
        assert_eq!(
            answers[&format!("j-{i}")],
            "joined",
            "the first {CAP} joins are the ones taken"
        );
    }

    // Only the joins under the cap went to the broker, hence to the dispatcher.
    let m = metrics(&stack, 0).await;
    assert_eq!(
        sample(&m, "warren_gateway_commands_total{code=\"accepted\"}"),
        CAP as f64
    );
    assert_eq!(
        sample(&m, "warren_gateway_errors_total{code=\"forbidden\"}"),
        (JOINS - CAP) as f64
    );
    let stats = stack.stats(0).await;
    assert_eq!(stats.rooms, CAP as u64);
    let rooms_bound = stack
        .broker_bindings(0)
        .await
        .into_iter()
        .filter(|k| k.starts_with("room."))
        .count();
    assert_eq!(
        rooms_bound, CAP,
        "bindings follow the rooms joined, not the rooms asked for"
    );
    let redis_rooms: BTreeSet<String> = stack
        .redis_keys()
        .await
        .iter()
        .filter_map(|k| {
            k.split(':')
                .nth(2)
                .filter(|_| k.contains(":room:"))
                .map(str::to_owned)
        })
        .collect();
    assert!(
        redis_rooms.len() <= CAP,
        "{} rooms in Redis",
        redis_rooms.len()
    );
    let rss_after = rss_kib_of_listener(stack.gateway_addr(0)).expect("gateway RSS");
    eprintln!("gateway RSS: {rss_before} KiB before {JOINS} joins, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );

    // Still usable: a send in a joined room, a leave, then a join that fits again.
    let acked = c.send_acked("r-0", "one of fifty").await;
    assert!(acked.seq >= 1);
    c.leave("r-1").await;
    c.join("r-fresh").await;
    assert_eq!(c.ping("after-joins").await["type"], "pong");
    assert_still_serves(&stack, 0, "after-joins").await;
}

/// Writes `count` copies of `frame` in chunks, reading what comes back between chunks;
/// stops at the server's close. Returns (frames sent, frames received before the close,
/// the close code).
async fn flood(
    ws: &mut RawWs,
    frame: &[u8],
    count: usize,
) -> (usize, Vec<Value>, usize, Option<u16>) {
    const CHUNK: usize = 200;
    let mut sent = 0;
    let mut texts = Vec::new();
    let mut pongs = 0;
    let mut pending = Vec::with_capacity(CHUNK * (frame.len() + 14));
    while sent < count {
        pending.clear();
        for _ in 0..CHUNK.min(count - sent) {
            pending.extend(warren_tests::hostile_support::encode_client_frame(
                true,
                false,
                frame[0],
                &frame[1..],
                rand::random(),
            ));
            sent += 1;
        }
        if ws.stream.write_all(&pending).await.is_err() {
            break;
        }
        loop {
            match ws.read_frame(Duration::from_millis(5)).await {
                RawRead::Frame(f) if f.opcode == opcode::CLOSE => {
                    return (sent, texts, pongs, f.close_code())
                }
                RawRead::Frame(f) if f.opcode == opcode::PONG => pongs += 1,
                RawRead::Frame(f) if f.opcode == opcode::TEXT => {
                    texts.push(serde_json::from_slice(&f.payload).expect("JSON text frame"))
                }
                RawRead::Frame(_) => {}
                RawRead::Timeout => break,
                RawRead::Eof => return (sent, texts, pongs, None),
            }
        }
    }
    let code = ws.closed_with(WAIT).await;
    (sent, texts, pongs, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_floods_are_budgeted_and_a_sustained_flood_closes_with_1008() {
    const FLOOD: usize = 20_000;
    let stack = Stack::start(budgeted(StackOptions::new(1, 1))).await;
    let rss_before = rss_kib_of_listener(stack.gateway_addr(0)).expect("gateway RSS");

    // Protocol pings: the budget answers the burst, refuses the rest, then closes.
    let mut text = raw(&stack, "pinger", None).await;
    let mut frame = vec![opcode::TEXT];
    frame.extend_from_slice(br#"{"type":"ping","ref":"p"}"#);
    let (sent, texts, _, code) = flood(&mut text, &frame, FLOOD).await;
    let answered = texts.iter().filter(|v| v["type"] == "pong").count();
    let limited = texts.iter().filter(|v| v["code"] == "rate_limited").count();
    eprintln!("protocol pings: {sent} sent, {answered} pongs, {limited} rate_limited before close {code:?}");
    assert_eq!(code, Some(1008), "a sustained flood is closed with 1008");
    assert!(
        (500..=1500).contains(&answered),
        "{answered} pongs: the burst and a little refill"
    );
    assert!(
        limited >= 1,
        "frames over the budget are answered rate_limited"
    );
    assert!(
        sent < FLOOD,
        "the flood was cut short ({sent} of {FLOOD} written)"
    );

    // WebSocket ping frames cost the same.
    let mut control = raw(&stack, "ws-pinger", None).await;
    let mut ping = vec![opcode::PING];
    ping.extend_from_slice(&[b'p'; 125]);
    let (sent, _, pongs, code) = flood(&mut control, &ping, FLOOD).await;
    eprintln!("WebSocket pings: {sent} sent, {pongs} pongs before close {code:?}");
    assert_eq!(code, Some(1008));

    // A flooder that never reads its pongs: cut off all the same, memory bounded.
    let closed_before = closed_counter(&stack, "1008").await;
    let mut deaf = raw(&stack, "deaf-pinger", Some(4096)).await;
    let burst: Vec<u8> = (0..FLOOD)
        .flat_map(|_| {
            warren_tests::hostile_support::encode_client_frame(
                true,
                false,
                opcode::PING,
                &[b'd'; 125],
                rand::random(),
            )
        })
        .collect();
    let _ = tokio::time::timeout(WAIT, deaf.stream.write_all(&burst)).await;
    eventually("the deaf flooder is closed with 1008", CONVERGE, || async {
        let now = closed_counter(&stack, "1008").await;
        if now > closed_before {
            Ok(())
        } else {
            Err(format!("{now} closes with 1008"))
        }
    })
    .await;
    assert!(
        deaf.read_to_end(WAIT).await.is_some(),
        "the deaf flooder's connection ends"
    );

    let rss_after = rss_kib_of_listener(stack.gateway_addr(0)).expect("gateway RSS");
    eprintln!("gateway RSS: {rss_before} KiB before the floods, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    let refused = sample(
        &metrics(&stack, 0).await,
        "warren_gateway_frames_refused_total",
    );
    assert!(refused >= 1000.0, "{refused} frames refused");
    assert_still_serves(&stack, 0, "after-pings").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_answer_429_and_the_gateway_keeps_serving() {
    let stack = Stack::start(
        StackOptions::new(1, 1)
            .env("WARREN__GATEWAY__MAX_CONNECTIONS_PER_USER", "2")
            .env("WARREN__GATEWAY__MAX_CONNECTIONS", "4"),
    )
    .await;
    let refused = |r: Result<warren_tests::Client, ConnectError>, what: &str| match r {
        Err(ConnectError::Refused { status, body }) => {
            assert_eq!(status, 429, "{what}: {body}");
            let v: Value =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
            assert_eq!(v["error"], "too_many_connections", "{what}: {v}");
        }
        Err(e) => panic!("{what}: {e}"),
        Ok(_) => panic!("{what}: accepted past the cap"),
    };
    let mut alice1 = stack.connect(0, "alice").await;
    let alice2 = stack.connect(0, "alice").await;
    let token = Connect::token(stack.token("alice"));
    refused(
        stack.connect_with(0, &token, "alice-3").await,
        "third connection of one user",
    );
    let bob = stack.connect(0, "bob").await;
    let carol = stack.connect(0, "carol").await;
    let dave = Connect::token(stack.token("dave"));
    refused(
        stack.connect_with(0, &dave, "dave").await,
        "fifth connection of the gateway",
    );

    // The connections inside the caps are unaffected, and places come back on close.
    assert_eq!(alice1.ping("inside-cap").await["type"], "pong");
    for c in [alice2, bob, carol] {
        c.close().await;
    }
    eventually("places are given back", CONVERGE, || async {
        match stack.connect_with(0, &dave, "dave-again").await {
            Ok(c) => {
                c.close().await;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    alice1.close().await;
    assert_still_serves(&stack, 0, "after-caps").await;
}

// ---- liveness -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_after_the_idle_timeout() {
    let stack = Stack::start(
        StackOptions::new(1, 1)
            .env("WARREN__GATEWAY__PING_INTERVAL_S", "1")
            .env("WARREN__GATEWAY__IDLE_TIMEOUT_S", "3"),
    )
    .await;
    let mut live = stack.connect(0, "live").await;
    // Completes the handshake, then never reads nor answers a ping.
    let mut silent = raw(&stack, "silent", None).await;
    let started = Instant::now();

    // A client that reads answers the pings by itself and stays.
    assert_eq!(live.try_recv(Duration::from_secs(6)).await, Recv::Timeout);
    eventually("the silent connection is closed", CONVERGE, || async {
        let idle = sample(
            &metrics(&stack, 0).await,
            "warren_gateway_idle_timeouts_total",
        );
        if idle >= 1.0 {
            Ok(())
        } else {
            Err(format!("{idle} idle timeouts"))
        }
    })
    .await;
    let closed_after = started.elapsed();
    assert!(
        closed_after < Duration::from_secs(12),
        "closed after {closed_after:?}"
    );
    let frames = silent.read_to_end(WAIT).await.expect("the connection ends");
    assert!(
        frames.iter().any(|f| f.opcode == opcode::PING),
        "the gateway pinged"
    );
    let close = frames.last().and_then(|f| f.close_code());
    assert_eq!(close, Some(1001), "closed as idle: {frames:?}");
    assert_eq!(
        stack.stats(0).await.connections,
        1,
        "only the live client is left"
    );
    assert_eq!(live.ping("still-live").await["type"], "pong");
    live.close().await;
    assert_still_serves(&stack, 0, "after-idle").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_handshakes_are_dropped_and_pending_ones_are_capped() {
    let stack = Stack::start(
        StackOptions::new(1, 1)
            .env("WARREN__GATEWAY__HANDSHAKE_TIMEOUT_S", "2")
            .env("WARREN__GATEWAY__MAX_PENDING_HANDSHAKES", "8"),
    )
    .await;
    let addr = stack.gateway_addr(0);

    // One header byte a second: dropped at the deadline, not served forever.
    let head = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n");
    let trickle = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let started = Instant::now();
        for b in head.bytes() {
            if s.write_all(&[b]).await.is_err() {
                return started.elapsed();
            }
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
                _ => {}
            }
        }
        panic!("the trickling handshake was never dropped");
    };
    // Meanwhile a normal client is served.
    let normal = async {
        let mut c = stack.connect(0, "normal").await;
        assert_eq!(c.ping("during-slowloris").await["type"], "pong");
        c
    };
    let (dropped_after, c) = tokio::join!(trickle, normal);
    eprintln!("trickling handshake dropped after {dropped_after:?}");
    assert!(
        dropped_after >= Duration::from_millis(1500),
        "{dropped_after:?}"
    );
    assert!(dropped_after < Duration::from_secs(6), "{dropped_after:?}");
    c.close().await;

    // Silent connections fill the pending places; one more is dropped at accept; when
    // they time out, the gateway answers again.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        warren_tests::http::get(addr, "/healthz").await.is_err(),
        "a ninth pending connection is dropped"
    );
    for mut s in silent {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(6), s.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a silent connection is dropped: {read:?}"
        );
    }
    let health = stack.ops_get(0, "/healthz").await;
    assert_eq!(health.status, 200);
    // A request head is bounded too.
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "p".repeat(100 * 1024)
    );
    let answer = warren_tests::http::request(addr, &huge).await;
    assert!(
        answer.as_ref().map_or(true, |a| a.status == 431),
        "a 100 KiB request head: {:?}",
        answer.map(|a| a.status)
    );
    let m = metrics(&stack, 0).await;
    assert!(
        sample(&m, "warren_gateway_handshake_timeouts_total") >= 9.0,
        "{m:?}"
    );
    assert!(
        sample(&m, "warren_gateway_handshakes_dropped_total") >= 1.0,
        "{m:?}"
    );
    assert_still_serves(&stack, 0, "after-slowloris").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_pending_handshake() {
    const PER_IP: usize = 4;
    let stack = Stack::start(
        StackOptions::new(1, 1)
            .env("WARREN__GATEWAY__MAX_PENDING_HANDSHAKES_PER_IP", "4")
            .env("WARREN__GATEWAY__HANDSHAKE_TIMEOUT_S", "20"),
    )
    .await;
    let addr = stack.gateway_addr(0);
    let here: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let elsewhere: std::net::IpAddr = "127.0.0.2".parse().unwrap();

    // Silent connections from one address take its pending places...
    let mut silent = Vec::new();
    for _ in 0..PER_IP {
        silent.push(connect_from(here, addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...so more from it are closed at accept, far below the gateway's own cap (1024)...
    for i in 0..3 {
        let mut s = connect_from(here, addr).await.expect("connect");
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(AT_ONCE, s.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "connection {} from one address: {read:?}",
            PER_IP + i + 1
        );
    }
    for s in &mut silent {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await;
        assert!(read.is_err(), "the first ones are still pending: {read:?}");
    }
    // ...while another address upgrades and is served.
    let mut other = RawWs::open_from(
        Some(elsewhere),
        addr,
        &Connect::token(stack.token("elsewhere")),
        &[],
        None,
    )
    .await
    .expect("upgrade from another address");
    assert_eq!(other.status, 101);
    other
        .send_text(r#"{"type":"ping","ref":"elsewhere"}"#)
        .await
        .unwrap();
    let mut pong = false;
    while let RawRead::Frame(f) = other.read_frame(WAIT).await {
        if f.text().contains(r#""ref":"elsewhere""#) {
            pong = true;
            break;
        }
    }
    assert!(pong, "the other address is answered");

    let m = metrics(&stack, 0).await;
    assert_eq!(
        sample(&m, "warren_gateway_handshakes_dropped_per_ip_total"),
        3.0
    );
    assert_eq!(sample(&m, "warren_gateway_handshakes_dropped_total"), 0.0);
    // Their places come back when they go.
    drop(silent);
    eventually("the first address connects again", CONVERGE, || async {
        match warren_tests::http::get(addr, "/").await {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await;
    assert_still_serves(&stack, 0, "after-per-address").await;
}

// ---- a reader that stops reading ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_in_a_200_member_room_is_cut_off_and_the_others_keep_receiving() {
    const ROOM: &str = "crowd";
    const READERS: usize = 199;
    const MAX_MESSAGES: usize = 1000;
    const AFTER_CUT: usize = 20;
    let stack = Stack::start(
        StackOptions::new(1, 1)
            .env("WARREN__GATEWAY__OUTBOUND_QUEUE", "32")
            .env("WARREN__GATEWAY__MAX_TEXT_BYTES", "16384")
            .env("WARREN__PRESENCE__MAX_EVENT_MEMBERS", "10"),
    )
    .await;
    let mut readers = Vec::new();
    for i in 0..READERS {
        let mut c = stack.connect(0, &format!("reader{i}")).await;
        c.join(ROOM).await;
        readers.push(c);
    }
    let mut stalled = raw(&stack, "stalled", Some(4096)).await;
    stalled
        .send_text(&json!({"type": "join", "room": ROOM, "ref": "sj"}).to_string())
        .await
        .unwrap();
    loop {
        match stalled.read_frame(WAIT).await {
            RawRead::Frame(f) if f.text().contains(r#""ref":"sj""#) => break,
            RawRead::Frame(_) => {}
            other => panic!("stalled client: no joined: {other:?}"),
        }
    }
    // From here on the stalled client reads nothing.
    let mut sender = readers.pop().expect("readers");
    let receiving: Vec<_> = readers
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                loop {
                    match c.try_recv(Duration::from_secs(30)).await {
                        Recv::Frame(v) if v["type"] == "message" && v["room"] == ROOM => {
                            seqs.push(v["seq"].as_u64().expect("seq"));
                            if v["text"].as_str().is_some_and(|t| t.starts_with("end")) {
                                return (c.label.clone(), seqs, None);
                            }
                        }
                        Recv::Frame(_) => {}
                        other => return (c.label.clone(), seqs, Some(format!("{other:?}"))),
                    }
                }
            })
        })
        .collect();

    let pad = "m".repeat(16_000);
    let mut acked = Vec::new();
    let mut cut_at = None;
    while acked.len() < MAX_MESSAGES {
        let last = cut_at.is_some_and(|at| acked.len() + 1 >= at + AFTER_CUT);
        let text = if last {
            format!("end {pad}")
        } else {
            format!("{} {pad}", acked.len())
        };
        acked.push(sender.send_acked(ROOM, &text).await.seq);
        if last {
            break;
        }
        if cut_at.is_none() && acked.len() % 10 == 0 && closed_counter(&stack, "1013").await >= 1.0
        {
            cut_at = Some(acked.len());
        }
    }
    let cut_at = cut_at.expect("the stalled reader was never cut off");
    eprintln!(
        "stalled reader cut off after {cut_at} messages of 16 KB; {} sent",
        acked.len()
    );

    for task in receiving {
        let (label, seqs, problem) = task.await.expect("reader task");
        assert_eq!(
            problem,
            None,
            "{label} stopped receiving after {} messages",
            seqs.len()
        );
        assert_eq!(seqs, acked, "{label} got every message, in order");
    }
    let m = metrics(&stack, 0).await;
    assert_eq!(
        sample(&m, "warren_gateway_slow_consumers_total"),
        1.0,
        "only the stalled reader"
    );
    assert_eq!(
        sample(&m, "warren_gateway_connections_closed_total{code=\"1013\"}"),
        1.0
    );
    // Its connection ends, whether or not it took its close frame in time.
    assert!(
        stalled.read_to_end(Duration::from_secs(60)).await.is_some(),
        "the stalled connection ends"
    );
    sender.close().await;
    assert_still_serves(&stack, 0, "after-stall").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_cut_off_for_not_reading_finds_1013_when_it_reads_again() {
    const ROOM: &str = "backlog";
    const MAX_MESSAGES: usize = 1000;
    let stack = Stack::start(
        StackOptions::new(1, 1)
            .env("WARREN__GATEWAY__OUTBOUND_QUEUE", "32")
            .env("WARREN__GATEWAY__MAX_TEXT_BYTES", "16384")
            .env("WARREN__GATEWAY__CLOSE_TIMEOUT_S", "30"),
    )
    .await;
    let mut slow = raw(&stack, "paused", Some(4096)).await;
    slow.send_text(&json!({"type": "join", "room": ROOM, "ref": "pj"}).to_string())
        .await
        .unwrap();
    loop {
        match slow.read_frame(WAIT).await {
            RawRead::Frame(f) if f.text().contains(r#""ref":"pj""#) => break,
            RawRead::Frame(_) => {}
            other => panic!("paused client: no joined: {other:?}"),
        }
    }
    let mut sender = stack.connect(0, "talker").await;
    sender.join(ROOM).await;

    // The paused client reads nothing until the gateway has cut it off.
    let pad = "m".repeat(16_000);
    let mut acked = Vec::new();
    loop {
        let seq = sender
            .send_acked(ROOM, &format!("{} {pad}", acked.len()))
            .await
            .seq;
        acked.push(seq);
        if acked.len() % 10 == 0
            && sample(
                &metrics(&stack, 0).await,
                "warren_gateway_slow_consumers_total",
            ) >= 1.0
        {
            break;
        }
        assert!(
            acked.len() < MAX_MESSAGES,
            "the paused client was never cut off"
        );
    }

    // It reads again: what was on its way, whole frames in order, then the close.
    let frames: Vec<RawFrame> = slow
        .read_to_end(WAIT)
        .await
        .expect("the connection ends once the close frame is read");
    let (close, before) = frames.split_last().expect("frames");
    assert_eq!(
        close.close_code(),
        Some(1013),
        "the last frame is the close; got {} frames, the last {:?}",
        frames.len(),
        close.text().chars().take(80).collect::<String>()
    );
    let seqs: Vec<u64> = before
        .iter()
        .filter_map(|f| serde_json::from_str::<Value>(&f.message()).ok())
        .filter(|v| v["type"] == "message")
        .map(|v| v["seq"].as_u64().expect("seq"))
        .collect();
    assert!(!seqs.is_empty(), "what was on its way arrives first");
    assert_eq!(
        seqs,
        acked[..seqs.len()],
        "the messages before the close are the first ones sent, in order"
    );
    eprintln!(
        "cut off after {} messages of 16 KB; {} were on their way, then 1013",
        acked.len(),
        seqs.len()
    );
    sender.close().await;
    assert_still_serves(&stack, 0, "after-pause").await;
}

// ---- security -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_origins_outside_the_allow_list_are_refused() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let token = stack.token("victim");
    for origin in [
        "https://evil.example",
        "null",
        "http://allowed.test.evil.example",
        "http://allowed.test:8080",
        "HTTP://ALLOWED.TEST.",
    ] {
        let answer = stack
            .handshake(0, &Connect::token(token.clone()).origin(origin))
            .await;
        assert_eq!(answer.status, 403, "{origin}: {}", answer.text());
        assert_eq!(
            answer.json().expect("JSON body")["error"],
            "forbidden_origin",
            "{origin}"
        );
    }
    let allowed = Connect::token(token).origin(warren_tests::ALLOWED_ORIGIN);
    assert_eq!(stack.handshake(0, &allowed).await.status, 101);
    assert_still_serves(&stack, 0, "after-origins").await;
}

/// A forged token must be refused at the handshake with 401 `unauthorized`.
async fn assert_unauthorized(stack: &Stack, what: &str, token: &str) {
    let answer = stack.handshake(0, &Connect::token(token)).await;
    assert_eq!(answer.status, 401, "{what}: {}", answer.text());
    assert_eq!(
        answer.json().expect("JSON body")["error"],
        "unauthorized",
        "{what}"
    );
}

async fn assert_connects_as(stack: &Stack, what: &str, token: &str, user: &str) {
    let c = stack
        .connect_with(0, &Connect::token(token), what)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(c.welcome.user.id, user, "{what}");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hs256_gateway_refuses_other_algorithms_none_and_kid_tricks() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let claims = Claims::new("alice");
    let (private, public, _) =
        rsa_keypair(&test_logs_dir(), &format!("{}-attacker", stack.prefix())).expect("openssl");
    let rsa = EncodingKey::from_rsa_pem(&private).expect("RSA key");
    let secret = EncodingKey::from_secret(stack.secret().as_bytes());

    assert_unauthorized(
        &stack,
        "RS256 token",
        &sign_with(&Header::new(Algorithm::RS256), &claims, &rsa),
    )
    .await;
    assert_unauthorized(
        &stack,
        "HS384 with the right secret",
        &sign_with(&Header::new(Algorithm::HS384), &claims, &secret),
    )
    .await;
    assert_unauthorized(
        &stack,
        "HS512 with the right secret",
        &sign_with(&Header::new(Algorithm::HS512), &claims, &secret),
    )
    .await;
    assert_unauthorized(&stack, "alg none", &alg_none_from(&stack.token("alice"))).await;
    assert_unauthorized(
        &stack,
        "HS256 with the public key as secret",
        &sign_with(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&public),
        ),
    )
    .await;
    // `kid` naming a file: a server that loaded the key from it would verify an
    // empty-key or public-key signature. The key comes from configuration only.
    for kid in [
        "/dev/null",
        "../../../../../../dev/null",
        "/proc/self/environ",
        "0 OR 1=1",
    ] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.to_owned());
        assert_unauthorized(
            &stack,
            &format!("kid {kid} signed with an empty key"),
            &sign_with(&header, &claims, &EncodingKey::from_secret(b"")),
        )
        .await;
        // The same header on an honestly signed token changes nothing: kid is ignored.
        assert_connects_as(
            &stack,
            &format!("kid {kid}"),
            &sign_with(&header, &claims, &secret),
            "alice",
        )
        .await;
    }
    let mut jwk = Header::new(Algorithm::HS256);
    jwk.jku = Some("http://127.0.0.1:1/keys.json".into());
    assert_unauthorized(
        &stack,
        "jku to a foreign key set",
        &sign_with(&jwk, &claims, &EncodingKey::from_secret(b"attacker")),
    )
    .await;
    assert_still_serves(&stack, 0, "after-hs256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rs256_gateway_refuses_hs256_even_when_signed_with_its_public_key() {
    let dir = test_logs_dir();
    let tag = format!("rs256-{:08x}", rand::random::<u32>());
    let (private, public, public_file) = rsa_keypair(&dir, &tag).expect("openssl");
    let (attacker, _, attacker_public_file) =
        rsa_keypair(&dir, &format!("{tag}-attacker")).expect("openssl");
    let stack = Stack::start(
        StackOptions::new(1, 1)
            .env("WARREN__AUTH__ALGORITHM", "RS256")
            .env(
                "WARREN__AUTH__PUBLIC_KEY_FILE",
                &public_file.display().to_string(),
            ),
    )
    .await;
    let claims = Claims::new("alice");
    let good = EncodingKey::from_rsa_pem(&private).expect("RSA key");
    let evil = EncodingKey::from_rsa_pem(&attacker).expect("RSA key");
    let rs256 = Header::new(Algorithm::RS256);

    assert_connects_as(
        &stack,
        "RS256 signed with the configured key",
        &sign_with(&rs256, &claims, &good),
        "alice",
    )
    .await;
    assert_unauthorized(
        &stack,
        "HS256 with the stack's secret",
        &stack.token("alice"),
    )
    .await;
    assert_unauthorized(
        &stack,
        "HS256 with the public key PEM as secret",
        &sign_with(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&public),
        ),
    )
    .await;
    assert_unauthorized(
        &stack,
        "alg none",
        &alg_none_from(&sign_with(&rs256, &claims, &good)),
    )
    .await;
    assert_unauthorized(
        &stack,
        "RS256 signed with another key",
        &sign_with(&rs256, &claims, &evil),
    )
    .await;
    let mut embedded = rs256.clone();
    embedded.jwk = Some(Jwk::from_encoding_key(&evil, Algorithm::RS256).expect("jwk"));
    assert_unauthorized(
        &stack,
        "RS256 carrying its own jwk",
        &sign_with(&embedded, &claims, &evil),
    )
    .await;
    let mut kid = rs256.clone();
    kid.kid = Some(attacker_public_file.display().to_string());
    assert_unauthorized(
        &stack,
        "kid naming the attacker's key file",
        &sign_with(&kid, &claims, &evil),
    )
    .await;
    kid.kid = Some("../../../../dev/null".into());
    assert_connects_as(
        &stack,
        "kid on an honest token is ignored",
        &sign_with(&kid, &claims, &good),
        "alice",
    )
    .await;

    let mut c = stack
        .connect_with(
            0,
            &Connect::token(sign_with(&rs256, &Claims::new("checker"), &good)),
            "checker",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c.join("rs-room").await;
    c.send_acked("rs-room", "signed by the right key").await;
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_while_connected_closes_with_4401() {
    let stack = Stack::start(StackOptions::new(1, 1).env("WARREN__AUTH__LEEWAY_S", "0")).await;
    let claims = Claims::new("brief").expires_in(3);
    let token = stack.token_with(&claims);
    let mut brief = stack
        .connect_with(0, &Connect::token(token.clone()), "brief")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut lasting = stack.connect(0, "lasting").await;
    let started = Instant::now();
    assert_eq!(brief.closed_with(Duration::from_secs(10)).await, Some(4401));
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1500) && after <= Duration::from_secs(6),
        "closed after {after:?}"
    );
    // The gateway closes at the start of the `exp` second, and from then on the
    // handshake refuses the token too (RFC 7519: not on or after `exp`).
    while warren_tests::token::now_s() < claims.exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_unauthorized(&stack, "the expired token again", &token).await;
    assert_eq!(lasting.ping("unaffected").await["type"], "pong");
    lasting.close().await;
    assert_still_serves(&stack, 0, "after-expiry").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_comes_from_sub_only_and_bad_subs_are_refused() {
    const ROOM: &str = "who";
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let mut bob = stack.connect(0, "bob").await;
    bob.join(ROOM).await;

    // A token for alice whose other fields all say "bob".
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("bob".into());
    let claims = Claims::new("alice").name("bob").roles(&["member"]);
    let token = sign_with(
        &header,
        &claims,
        &EncodingKey::from_secret(stack.secret().as_bytes()),
    );
    let mut alice = stack
        .connect_with(0, &Connect::token(token), "alice-as-bob")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(alice.welcome.user.id, "alice");
    alice.join(ROOM).await;
    alice
        .send_frame(json!({"type": "send", "room": ROOM, "text": "I am bob", "ref": "s1",
            "user": "bob", "sub": "bob", "from": {"id": "bob"}, "actor": {"id": "bob", "roles": ["admin"]}}))
        .await;
    let ack = alice.answer("s1").await;
    let id = ack["id"]
        .as_str()
        .unwrap_or_else(|| panic!("send answered {ack}"))
        .to_owned();
    let seen = bob
        .recv_until(warren_tests::is_message_with_id(&id), WAIT)
        .await;
    assert_eq!(seen["from"]["id"], "alice", "{seen}");
    // Claiming bob's identity buys none of bob's rights either: a moderation as "bob".
    alice
        .send_frame(json!({"type": "moderate", "room": ROOM, "action": "kick", "user": "bob", "ref": "k1", "actor": {"id": "bob"}}))
        .await;
    let kick = alice.answer("k1").await;
    assert_eq!(kick["type"], "error", "{kick}");

    for sub in ["bob.x", "*", "#", "bob:x", "", "room.#", "b o b"] {
        assert_unauthorized(
            &stack,
            &format!("sub {sub:?}"),
            &stack.token_with(&Claims::new(sub)),
        )
        .await;
    }
    let no_sub = sign_with(
        &Header::new(Algorithm::HS256),
        &json!({"exp": warren_tests::token::now_s() + 600, "user": "bob"}),
        &EncodingKey::from_secret(stack.secret().as_bytes()),
    );
    assert_unauthorized(&stack, "no sub", &no_sub).await;
    alice.close().await;
    bob.close().await;
    assert_still_serves(&stack, 0, "after-identity").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_would_break_a_routing_key_are_bad_requests_and_reach_nothing() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let mut c = stack.connect(0, "injector").await;
    let bad_rooms = [
        "evil.room",
        "evil*",
        "evil#",
        "#",
        "evil:x",
        "room.#",
        "EVIL",
        "dm:evil.a:evil",
        "dm:zz:evil",
        "evil room",
        "évil",
    ];
    let mut frames: Vec<Value> = Vec::new();
    for room in bad_rooms {
        for ty in ["join", "leave", "history", "presence", "typing"] {
            frames.push(json!({"type": ty, "room": room}));
        }
        frames.push(json!({"type": "send", "room": room, "text": "x"}));
        frames.push(json!({"type": "moderate", "room": room, "action": "kick", "user": "bob"}));
    }
    for user in ["evil.user", "evil*", "evil#", "evil:x", "#", "evil user"] {
        frames.push(json!({"type": "dm", "to": user, "text": "x"}));
        frames.push(json!({"type": "moderate", "room": "fine", "action": "ban", "user": user}));
    }
    for (n, mut frame) in frames.into_iter().enumerate() {
        let reference = format!("bad-{n}");
        frame["ref"] = json!(reference);
        c.send_frame(frame.clone()).await;
        let answer = c.answer(&reference).await;
        assert_eq!(
            (answer["type"].as_str(), answer["code"].as_str()),
            (Some("error"), Some("bad_request")),
            "{frame} answered {answer}"
        );
    }
    // Nothing of them reached the broker or Redis.
    let m = metrics(&stack, 0).await;
    assert_eq!(
        sample(&m, "warren_gateway_commands_total{code=\"accepted\"}"),
        0.0,
        "no command was published"
    );
    let bindings = stack.broker_bindings(0).await;
    // Only the gateway's own key: a session costs no binding.
    assert_eq!(
        bindings,
        vec![proto::amqp::gateway_key(stack.gateway_id(0))],
        "{bindings:?}"
    );
    let keys = stack.redis_keys().await;
    assert!(
        keys.iter().all(|k| !k.to_lowercase().contains("evil")),
        "{keys:?}"
    );
    c.close().await;
    assert_still_serves(&stack, 0, "after-injection").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_reaches_the_logs_or_metrics() {
    let stack = Stack::start(StackOptions::new(1, 1).env("WARREN__LOG__LEVEL", "trace")).await;
    let mut tokens = Vec::new();
    for via in [
        warren_tests::TokenVia::Header,
        warren_tests::TokenVia::Query,
        warren_tests::TokenVia::Cookie,
    ] {
        let token = stack.token(&format!("logged-{via:?}").to_lowercase());
        let mut c = stack
            .connect_with(0, &Connect::token(token.clone()).via(via), "logged")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        c.join("audit").await;
        c.send_acked("audit", "hello").await;
        c.close().await;
        tokens.push(token);
    }
    let refused = [
        sign_hs256("not-the-secret", &Claims::new("mallory")),
        stack.token_with(&Claims::new("mallory").expired_since(3600)),
        alg_none_from(&stack.token("mallory")),
    ];
    for token in &refused {
        for via in [
            warren_tests::TokenVia::Header,
            warren_tests::TokenVia::Query,
        ] {
            let answer = stack
                .handshake(0, &Connect::token(token.clone()).via(via))
                .await;
            assert_eq!(answer.status, 401);
        }
    }
    tokens.extend(refused);
    let gw_metrics = stack.ops_get(0, "/metrics").await.text();
    let d_metrics = stack.dispatcher_get(0, "/metrics").await.text();
    let mut haystacks = vec![
        ("gateway /metrics".to_owned(), gw_metrics),
        ("dispatcher /metrics".to_owned(), d_metrics),
    ];
    for log in stack.logs() {
        let text =
            std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        haystacks.push((log.display().to_string(), text));
    }
    let mut needles = vec![("the secret".to_owned(), stack.secret().to_owned())];
    for t in &tokens {
        needles.push(("a token".to_owned(), t.clone()));
        if let Some(signature) = t.split('.').nth(2).filter(|s| s.len() >= 16) {
            needles.push(("a token signature".to_owned(), signature.to_owned()));
        }
    }
    for (where_, text) in &haystacks {
        for (what, needle) in &needles {
            assert!(
                !text.contains(needle.as_str()),
                "{what} appears in {where_}"
            );
        }
    }
    assert_still_serves(&stack, 0, "after-audit").await;
}
