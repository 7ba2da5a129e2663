//! Safe by default: what a deployment must never expose, with real gateway
//! and dispatcher processes against real RabbitMQ and Redis. Each test here failed on
//! the code before its fix.
//!
//! Run `cargo build --workspace --bins` first.

use std::time::Duration;

use warren_tests::crowd::members;
use warren_tests::http;
use warren_tests::{Stack, StackOptions};

/// The built-in development secret (common/src/settings.rs).
const DEV_SECRET: &str = "warren-dev-secret-insecure";
const EXIT_WAIT: Duration = Duration::from_secs(15);

/// A gateway whose public listener is not loopback refuses to start with the
/// development secret or with `/dev/token`, unless the loudly named setting says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_refuses_development_auth_off_loopback() {
    let mut stack = Stack::start(StackOptions::new(0, 1)).await;
    let off_loopback = ("WARREN__GATEWAY__LISTEN", "0.0.0.0:0");
    for (what, env) in [
        (
            "the development secret",
            vec![off_loopback, ("WARREN__AUTH__SECRET", DEV_SECRET)],
        ),
        (
            "development tokens",
            vec![off_loopback, ("WARREN__GATEWAY__DEV_TOKENS", "true")],
        ),
    ] {
        let (status, log) = stack
            .gateway_refusal(&env, EXIT_WAIT)
            .await
            .unwrap_or_else(|| panic!("with {what} off loopback the gateway kept running"));
        assert!(!status.success(), "{what}: exit status {status}");
        assert!(
            log.contains("refusing to start") && log.contains("insecure_dev_auth_on_network"),
            "{what}: the log says why and what to set: {log}"
        );
    }

    // On loopback (the local stack) and with the explicit setting, it starts.
    let local = stack
        .start_gateway_with(&[
            ("WARREN__AUTH__SECRET", DEV_SECRET),
            ("WARREN__GATEWAY__DEV_TOKENS", "true"),
        ])
        .await;
    assert_eq!(stack.ops_get(local, "/readyz").await.status, 200);
    let demo = stack
        .start_gateway_with(&[
            off_loopback,
            ("WARREN__AUTH__SECRET", DEV_SECRET),
            ("WARREN__GATEWAY__DEV_TOKENS", "true"),
            ("WARREN__AUTH__INSECURE_DEV_AUTH_ON_NETWORK", "true"),
        ])
        .await;
    assert_eq!(stack.ops_get(demo, "/readyz").await.status, 200);
}

/// The operations endpoints are not on the public port, `/stats` gives counts
/// and no names, and `/dev/token` answers only loopback or allowed hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_are_private_and_tell_no_names() {
    let stack =
        Stack::start(StackOptions::new(1, 1).env("WARREN__GATEWAY__DEV_TOKENS", "true")).await;
    let [carol] = members(&stack, "secret-room-name", [(0, "carol-secret-user")]).await;

    for path in ["/metrics", "/stats", "/healthz", "/readyz"] {
        let public = stack.http_get(0, path).await;
        assert_eq!(public.status, 404, "public GET {path}: {}", public.text());
        let ops = stack.ops_get(0, path).await;
        assert_eq!(ops.status, 200, "ops GET {path}: {}", ops.text());
    }
    // The web client stays on the public port.
    assert_eq!(stack.http_get(0, "/").await.status, 200);

    let stats = stack.ops_get(0, "/stats").await;
    let text = stats.text();
    for name in ["carol-secret-user", "secret-room-name"] {
        assert!(!text.contains(name), "/stats names {name}: {text}");
    }
    let json = stats.json().expect("/stats is JSON");
    assert_eq!(json["connections"], 1, "{json}");
    assert_eq!(json["rooms"], 1, "{json}");
    assert!(json["bindings"].is_u64(), "bindings is a count: {json}");

    // /dev/token: loopback Host answers, a rebound name does not.
    let addr = stack.gateway_addr(0);
    let mint = |host: String| {
        let body = r#"{"name":"Mallory"}"#;
        let head = format!(
            "POST /dev/token HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        async move { http::request(addr, &head).await.expect("POST /dev/token") }
    };
    let local = mint(addr.to_string()).await;
    assert_eq!(local.status, 200, "{}", local.text());
    let rebound = mint(format!("attacker.example:{}", addr.port())).await;
    assert_eq!(rebound.status, 403, "{}", rebound.text());
    assert!(rebound.json().is_some_and(|j| j.get("token").is_none()));
    carol.close().await;
}

/// Corners of the client contract (unknown types, `since` without `epoch`, `history`
/// with `limit: 0`, a muted user's `typing`), each against the running stack.
mod contract {
    use std::time::Duration;

    use proto::client::Join;
    use serde_json::json;
    use warren_tests::crowd::members;
    use warren_tests::rooms_support::{assert_ack, is_typing};
    use warren_tests::{Stack, StackOptions};

    /// An unknown `type` is answered `unknown_type` and never counts towards
    /// the bad-frame close (three malformed frames within 10 s close with 1008).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_types_are_answered_and_keep_the_connection() {
        let stack = Stack::start(StackOptions::new(1, 1)).await;
        let mut c = stack.connect(0, "newer-client").await;
        for n in 0..5 {
            let reference = format!("future-{n}");
            c.send_frame(json!({"type": "reaction", "ref": reference, "emoji": "+1"}))
                .await;
            let answer = c.answer(&reference).await;
            assert_eq!(answer["code"], "unknown_type", "{answer}");
        }
        let pong = c.ping("still-here").await;
        assert_eq!(pong["type"], "pong", "the connection stays open: {pong}");
        let after = c.try_recv(Duration::from_millis(300)).await;
        assert!(
            matches!(after, warren_tests::Recv::Timeout),
            "nothing more, no close: {after:?}"
        );
    }

    /// `join` with `since` but without `epoch` recovers in the room's current epoch;
    /// `history` with `limit: 0` returns no message.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn since_without_epoch_recovers_and_a_zero_limit_returns_nothing() {
        let stack = Stack::start(StackOptions::new(1, 1)).await;
        let room = "loose-ends";
        let [mut alice] = members(&stack, room, [(0, "alice")]).await;
        let mut seqs = Vec::new();
        for n in 0..4 {
            seqs.push(alice.send_acked(room, &format!("m{n}")).await.seq);
        }
        let mut bob = stack.connect(0, "bob").await;
        let joined = bob
            .join_with(Join {
                room: room.to_owned(),
                since: Some(seqs[1]),
                epoch: None,
            })
            .await;
        assert!(joined.recovered, "since alone recovers: {joined:?}");
        let got: Vec<u64> = joined.history.iter().map(|m| m.seq).collect();
        assert_eq!(got, seqs[2..].to_vec(), "exactly the missed messages");

        let page = alice.history(room, None, Some(0)).await;
        assert!(page.messages.is_empty(), "limit 0: {page:?}");
        assert!(!page.complete, "older messages exist");
    }

    /// A muted user's `typing` is dropped, as its sends are refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_muted_users_typing_is_dropped() {
        let stack = Stack::start(StackOptions::new(1, 1)).await;
        let room = "hushed";
        let [mut owner, mut mallory] = members(&stack, room, [(0, "owner"), (0, "mallory")]).await;
        mallory
            .send_frame(json!({"type": "typing", "room": room}))
            .await;
        owner
            .recv_until(is_typing(room, "mallory"), Duration::from_secs(10))
            .await;
        assert_ack(
            &owner
                .moderate(json!({"room": room, "action": "mute", "user": "mallory"}))
                .await,
            "mute",
        );
        mallory.drain_for(Duration::from_millis(300)).await;
        mallory
            .send_frame(json!({"type": "typing", "room": room}))
            .await;
        owner
            .none_within(Duration::from_secs(2), is_typing(room, "mallory"))
            .await;
    }
}

/// Dedup is keyed on `(room, user, ref)`: a `ref` reused in another room is
/// another send, stored and delivered; an empty `ref` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ref_is_deduplicated_per_room_and_an_empty_ref_is_refused() {
    use serde_json::json;
    use warren_tests::client::ack_of;
    use warren_tests::crowd::members;
    use warren_tests::is_message_with_id;
    use warren_tests::rooms_support::assert_error;

    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let [mut alice] = members(&stack, "first-room", [(0, "alice")]).await;
    alice.join("second-room").await;
    let mut acks = Vec::new();
    for room in ["first-room", "second-room"] {
        alice.send(room, &format!("hello {room}"), "same-ref").await;
        let answer = alice.answer("same-ref").await;
        let acked = ack_of(&answer).unwrap_or_else(|| panic!("{room}: {answer}"));
        assert_eq!(answer["room"], room, "the ack is for this room's message");
        let got = alice
            .recv_until(is_message_with_id(&acked.id), Duration::from_secs(10))
            .await;
        assert_eq!(got["room"], room, "{got}");
        acks.push(acked);
    }
    assert_ne!(acks[0].id, acks[1].id, "two sends, two messages");
    // A retry in the first room is still answered with its first ack.
    alice
        .send("first-room", "hello first-room", "same-ref")
        .await;
    let again = ack_of(&alice.answer("same-ref").await).expect("an ack");
    assert_eq!(
        (again.id.as_str(), again.seq),
        (acks[0].id.as_str(), acks[0].seq)
    );

    for frame in [
        json!({"type": "send", "room": "first-room", "text": "x", "ref": ""}),
        json!({"type": "dm", "to": "bob", "text": "x", "ref": ""}),
    ] {
        alice.send_frame(frame.clone()).await;
        let answer = alice.answer("").await;
        assert_error(&answer, "bad_request", &frame.to_string());
    }
    let history = alice.history("first-room", None, None).await;
    assert_eq!(
        history.messages.len(),
        1,
        "nothing stored for the empty ref"
    );
}
