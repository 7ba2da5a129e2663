//! Floods: joins past the room cap, pings past the frame budget, connections past the
//! caps.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use warren_tests::client::{ConnectError, Recv};
use warren_tests::hostile_support::{
    assert_still_serves, encode_client_frame, metrics, opcode, rss_kib_of_listener, sample,
    RawRead, RawWs,
};
use warren_tests::{eventually, Connect, Stack, StackOptions};

use crate::support::{
    budgeted, closed_counter, counter, counter_reaches, one_gateway, raw, CONVERGE, WAIT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_joins_stop_at_the_room_cap_and_the_connection_stays_usable() {
    const CAP: usize = 50;
    const JOINS: usize = 10_000;
    let stack = one_gateway(&format!("gateway.max_rooms_per_connection={CAP} gateway.frames_per_sec=1000000 gateway.frames_burst=1000000"))
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
                Recv::Frame(v) => record_join_answer(&mut answers, &v),
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
            record_join_answer(&mut answers, &v);
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

/// Records the answer to a join (`joined`, or the error's code) under its `ref`.
fn record_join_answer(answers: &mut HashMap<String, String>, v: &Value) {
    if let Some(r) = v["ref"].as_str().filter(|r| r.starts_with("j-")) {
        let what = v["code"]
            .as_str()
            .unwrap_or(v["type"].as_str().unwrap_or("?"));
        answers.insert(r.to_owned(), what.to_owned());
    }
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
            pending.extend(encode_client_frame(
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
        .flat_map(|_| encode_client_frame(true, false, opcode::PING, &[b'd'; 125], rand::random()))
        .collect();
    let _ = tokio::time::timeout(WAIT, deaf.stream.write_all(&burst)).await;
    let closed_1008 = "warren_gateway_connections_closed_total{code=\"1008\"}";
    counter_reaches(&stack, closed_1008, closed_before + 1.0).await;
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
    let refused = counter(&stack, "warren_gateway_frames_refused_total").await;
    assert!(refused >= 1000.0, "{refused} frames refused");
    assert_still_serves(&stack, 0, "after-pings").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_answer_429_and_the_gateway_keeps_serving() {
    let stack = one_gateway("gateway.max_connections_per_user=2 gateway.max_connections=4").await;
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
