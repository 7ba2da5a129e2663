//! End-to-end properties of Warren: real gateways and dispatchers, real RabbitMQ and
//! Redis, clients over WebSocket. Each test has its own stack under its own prefix. The
//! core properties live in `warren_tests::properties`, shared with the cluster targets.
//!
//! Run `cargo build --workspace --bins` first; the harness starts those binaries.

use std::time::Duration;

use proto::amqp::{gateway_key, room_binding};
use serde_json::{json, Value};
use warren_tests::client::{ack_of, message_of};
use warren_tests::http::HttpResponse;
use warren_tests::token::{alg_none_from, sign_hs256};
use warren_tests::traffic::RoomTraffic;
use warren_tests::{
    eventually, is_message_with_id, properties, Claims, Connect, Stack, StackOptions, TokenVia,
    ALLOWED_ORIGIN,
};

/// How long bindings and counters may take to converge after a leave or a close.
const CONVERGE: Duration = Duration::from_secs(10);
const FRAME_WAIT: Duration = Duration::from_secs(15);

/// Panics unless `response` refuses the upgrade with `status` and a JSON body naming
/// `error`, with a message.
fn assert_refused_before_upgrade(response: &HttpResponse, status: u16, error: &str, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.text());
    let body = response
        .json()
        .unwrap_or_else(|| panic!("{what}: body is not JSON: {:?}", response.text()));
    assert_eq!(body["error"], error, "{what}: {body}");
    assert!(body["message"].is_string(), "{what}: no message in {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_refusals_are_json_before_upgrade() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let good = stack.token("alice");
    let unauthorized = [
        ("no token", Connect::anonymous()),
        ("malformed token", Connect::token("not.a.jwt")),
        (
            "expired token",
            Connect::token(stack.token_with(&Claims::new("alice").expired_since(3600))),
        ),
        (
            "wrong signature",
            Connect::token(sign_hs256("not-this-stacks-secret", &Claims::new("alice"))),
        ),
        ("alg none token", Connect::token(alg_none_from(&good))),
        (
            "expired token in the query",
            Connect::token(stack.token_with(&Claims::new("alice").expired_since(3600)))
                .via(TokenVia::Query),
        ),
        (
            "badly signed token in the cookie",
            Connect::token(sign_hs256("not-this-stacks-secret", &Claims::new("alice")))
                .via(TokenVia::Cookie),
        ),
    ];
    for (what, connect) in &unauthorized {
        let response = stack.handshake(0, connect).await;
        assert_refused_before_upgrade(&response, 401, "unauthorized", what);
    }

    let evil = stack
        .handshake(0, &Connect::token(good.clone()).origin("http://evil.test"))
        .await;
    assert_refused_before_upgrade(&evil, 403, "forbidden_origin", "foreign origin");

    let allowed = Connect::token(good.clone()).origin(ALLOWED_ORIGIN);
    assert_eq!(
        stack.handshake(0, &allowed).await.status,
        101,
        "allowed origin is upgraded"
    );
    let client = stack
        .connect_with(0, &allowed, "alice-allowed-origin")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(client.welcome.user.id, "alice");
    client.close().await;

    for via in [TokenVia::Header, TokenVia::Query, TokenVia::Cookie] {
        let connect = Connect::token(good.clone()).via(via);
        let client = stack
            .connect_with(0, &connect, &format!("alice-{via:?}"))
            .await
            .unwrap_or_else(|e| panic!("token via {via:?} without Origin: {e}"));
        assert_eq!(client.welcome.user.id, "alice", "token via {via:?}");
        client.close().await;
    }
}

/// Each core property of `warren_tests::properties` on a default stack (two gateways,
/// one dispatcher), as a test named for the property.
macro_rules! properties_on_a_default_stack {
    ($($property:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $property() {
            let stack = Stack::start(StackOptions::default()).await;
            properties::$property(&stack).await;
        }
    )*};
}

properties_on_a_default_stack!(
    message_reaches_members_on_both_gateways,
    thousand_messages_from_five_senders_arrive_once_in_order,
    reconnect_with_since_recovers_exactly_the_missed_messages,
    resend_with_same_ref_is_acked_once_and_stored_once,
    from_is_the_token_user_even_when_the_frame_claims_another,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_dispatcher_hands_over_and_nothing_acked_is_lost() {
    const ROOM: &str = "handover";
    let mut stack = Stack::start(StackOptions::default()).await;
    // Three senders, 100 messages each; the kill comes after the first 100 acks.
    let traffic = RoomTraffic::start(&stack, ROOM, 3, 100).await;
    let reached = traffic.wait_acks(100, "senders reach the kill point").await;
    // The dispatcher active on the room's shard (the two share the shards out), so that
    // the kill forces a failover.
    let shard = proto::ids::shard_of(ROOM, stack.shards());
    let active = if stack.active_shards(1).await.contains(&shard) {
        1
    } else {
        0
    };
    stack.kill_dispatcher(active).await;
    let at_kill = traffic.acked_at("the kill");
    eprintln!(
        "killed dispatcher {active} (active on shard {shard}) after {reached}..={at_kill} acks"
    );

    let summary = traffic.finish().await;
    eprintln!("sends repeated with the same ref: {}", summary.resent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connections_and_left_rooms_leave_nothing_behind() {
    let stack = Stack::start(StackOptions::default()).await;
    let st = &stack;
    let (kept, left) = ("tidy-kept", "tidy-left");
    let own_key = gateway_key(stack.gateway_id(0));
    let (kept_key, left_key) = (room_binding(kept), room_binding(left));

    let mut dana = stack.connect(0, "dana").await;
    dana.join(kept).await;
    dana.join(left).await;
    let stats = stack.stats(0).await;
    assert_eq!(
        (stats.connections, stats.users, stats.rooms),
        (1, 1, 2),
        "{stats:?}"
    );
    assert_eq!(stats.gateway, stack.gateway_id(0));
    let bound = stack.broker_bindings(0).await;
    assert_eq!(
        stats.bindings,
        bound.len() as u64,
        "/stats counts {bound:?}"
    );
    for key in [&kept_key, &left_key, &own_key] {
        assert!(
            bound.contains(key),
            "broker binds {key} to gw0's queue: {bound:?}"
        );
    }

    dana.leave(left).await;
    eventually("the left room is unbound", CONVERGE, || async {
        let bound = st.broker_bindings(0).await;
        let stats = st.stats(0).await;
        let gone = !bound.contains(&left_key);
        let kept_bound = bound.contains(&kept_key);
        if gone && kept_bound && stats.rooms == 1 && stats.bindings == bound.len() as u64 {
            Ok(())
        } else {
            Err(format!("broker {bound:?}, stats {stats:?}"))
        }
    })
    .await;

    dana.close().await;
    eventually("the closed connection leaves nothing", CONVERGE, || async {
        let bound = st.broker_bindings(0).await;
        let stats = st.stats(0).await;
        let leftovers: Vec<&String> = bound
            .iter()
            .filter(|k| k.starts_with("room.") || k.starts_with("user."))
            .collect();
        let own = stats.bindings == bound.len() as u64;
        if leftovers.is_empty() && own && (stats.connections, stats.users, stats.rooms) == (0, 0, 0)
        {
            Ok(())
        } else {
            Err(format!("leftover bindings {leftovers:?}, stats {stats:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gets_pong_with_ref() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let mut alice = stack.connect(0, "alice").await;
    let pong = alice.ping("p-1").await;
    assert_eq!(pong["type"], "pong", "{pong}");
    assert_eq!(pong["ref"], "p-1", "{pong}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_without_join_is_not_joined() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let mut alice = stack.connect(0, "alice").await;
    alice.send("elsewhere", "hello?", "nj-1").await;
    let answer = alice.answer("nj-1").await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "not_joined", "{answer}");
    assert_eq!(answer["ref"], "nj-1", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_tells_identity_and_limits() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let token = stack.token_with(&Claims::new("wendy").name("Wendy W"));
    let first = stack
        .connect_with(0, &Connect::token(token.clone()), "wendy-1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let second = stack
        .connect_with(0, &Connect::token(token), "wendy-2")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let w = &first.welcome;
    assert_eq!(
        (w.user.id.as_str(), w.user.name.as_str()),
        ("wendy", "Wendy W")
    );
    assert_eq!(w.gateway, stack.gateway_id(0));
    assert!(!w.session.is_empty());
    assert_ne!(
        w.session, second.welcome.session,
        "each connection is its own session"
    );
    let limits: Value = serde_json::to_value(w.limits).expect("limits serialise");
    assert_eq!(
        limits,
        json!({"max_text_bytes": 4096, "max_frame_bytes": 65536, "sends_per_sec": 100000, "burst": 100000}),
        "limits are the configured ones"
    );
}

/// The next text message a raw connection gets that satisfies `pred`, inflated if it
/// came compressed, with whether it did.
async fn raw_until(
    ws: &mut warren_tests::hostile_support::RawWs,
    pred: impl Fn(&Value) -> bool,
) -> (Value, bool) {
    use warren_tests::hostile_support::{opcode, RawRead};
    for _ in 0..1000 {
        match ws.read_frame(FRAME_WAIT).await {
            RawRead::Frame(f) if f.opcode == opcode::TEXT => {
                let v: Value = serde_json::from_str(&f.message()).expect("JSON text");
                if pred(&v) {
                    return (v, f.rsv1);
                }
            }
            RawRead::Frame(_) => {}
            other => panic!("no matching frame: {other:?}"),
        }
    }
    panic!("1000 frames and none matched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_is_agreed_and_each_event_is_compressed_once_for_every_member() {
    use warren_tests::hostile_support::{deflate, metrics, opcode, sample, RawWs};
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let offer = [(
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits",
    )];
    let mut zipped = Vec::new();
    for user in ["zip-a", "zip-b"] {
        let mut ws = RawWs::open(
            stack.gateway_addr(0),
            &Connect::token(stack.token(user)),
            &offer,
            None,
        )
        .await
        .expect("upgrade");
        assert_eq!(
            ws.header("sec-websocket-extensions"),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        raw_until(&mut ws, |v| v["type"] == "welcome").await;
        // The client compresses too: its join goes out deflated.
        let join = json!({"type": "join", "room": "zipped", "ref": "j"}).to_string();
        ws.send_frame(true, true, opcode::TEXT, &deflate(join.as_bytes()))
            .await
            .unwrap();
        raw_until(&mut ws, |v| v["type"] == "joined").await;
        zipped.push(ws);
    }
    // A client that offered nothing gets every frame plain (tungstenite would fail on
    // a compressed one).
    let mut plain = stack.connect(0, "zip-plain").await;
    plain.join("zipped").await;

    let before = metrics(&stack, 0).await;
    let text = "a line long enough to be worth compressing, ".repeat(6);
    let send = json!({"type": "send", "room": "zipped", "ref": "s", "text": text}).to_string();
    zipped[0]
        .send_frame(true, true, opcode::TEXT, &deflate(send.as_bytes()))
        .await
        .unwrap();
    // The sender gets its ack and the event in either order.
    let mut ack = None;
    let mut events = Vec::new();
    while ack.is_none() || events.is_empty() {
        let (v, compressed) = raw_until(&mut zipped[0], |v| {
            v["type"] == "ack" || v["type"] == "message"
        })
        .await;
        match v["type"].as_str() {
            Some("ack") => ack = Some(v),
            _ => events.push((v, compressed)),
        }
    }
    let ack = ack.expect("an ack");
    let acked = ack_of(&ack).unwrap_or_else(|| panic!("send answered {ack}"));
    events.push(raw_until(&mut zipped[1], is_message_with_id(&acked.id)).await);
    for (event, compressed) in events {
        assert_eq!(event["id"], acked.id.as_str(), "{event}");
        assert!(compressed, "the event went out compressed");
        assert_eq!(event["text"], text.as_str());
    }
    let event = plain
        .recv_until(is_message_with_id(&acked.id), FRAME_WAIT)
        .await;
    assert_eq!(message_of(&event).expect("a message").text, text);

    let after = metrics(&stack, 0).await;
    let delta = |k: &str| sample(&after, k) - sample(&before, k);
    assert_eq!(
        delta("warren_gateway_deflate_event_compressions_total"),
        1.0,
        "one compression for two compressed deliveries"
    );
    assert!(delta("warren_gateway_ws_deflate_bytes_saved_total") > 0.0);
    assert_eq!(
        sample(&after, "warren_gateway_deflate_connections_total"),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_websockets_client_agrees_compression() {
    use warren_tests::hostile_support::{metrics, sample};
    let python = warren_tests::bots::venv_python();
    assert!(
        python.is_file(),
        "{} is missing: run scripts/python-env.sh",
        python.display()
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/deflate_client.py");
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let url = format!("ws://{}/ws", stack.gateway_addr(0));
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .args([url.as_str(), &stack.token("py-zip"), "py-zipped"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the Python client finished in time")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let agreed = lines[0]["agreed"].as_str().unwrap_or_default();
    assert!(agreed.starts_with("permessage-deflate"), "{agreed}");
    assert_eq!(lines[0]["extensions"], json!(["PerMessageDeflate"]));
    assert_eq!(lines[1]["event"]["from"]["id"], "py-zip");

    let m = metrics(&stack, 0).await;
    assert_eq!(sample(&m, "warren_gateway_deflate_connections_total"), 1.0);
    assert!(sample(&m, "warren_gateway_ws_deflate_bytes_saved_total") > 0.0);
}
