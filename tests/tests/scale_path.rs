//! The message path at broker speed: sessions without bindings, user events
//! addressed through `CC`, the `ack` produced from the event, and gateways that repair
//! gaps in a room's events from Redis. Real gateway and dispatcher processes against
//! the machine's RabbitMQ and Redis.
//!
//! Run `cargo build --workspace --bins` first. The broker restart with members staying
//! connected is in `faults.rs` (it stops the shared broker).

use std::time::Duration;

use futures_util::StreamExt;
use proto::amqp::{gateway_key, room_binding};
use serde_json::{json, Value};
use warren_tests::broker::Admin;
use warren_tests::client::{ack_of, message_of};
use warren_tests::crowd::members;
use warren_tests::hostile_support::{metrics, sample};
use warren_tests::rooms_support::{assert_ack, is_kicked, is_typing};
use warren_tests::{eventually, is_message_with_id, Client, Stack, StackOptions};

const FRAME_WAIT: Duration = Duration::from_secs(10);
const CONVERGE: Duration = Duration::from_secs(15);

/// The routing keys bound to gateway `i`'s queue are its own key and `rooms`' keys.
async fn assert_bound(stack: &Stack, i: usize, rooms: &[&str]) {
    let mut want: Vec<String> = rooms.iter().map(|r| room_binding(r)).collect();
    want.push(gateway_key(stack.gateway_id(i)));
    want.sort();
    let bound = stack.broker_bindings(i).await;
    assert_eq!(bound, want, "gw{i}'s queue bindings");
    assert!(
        !bound.iter().any(|k| k.starts_with("user.")),
        "no user binding on gw{i}: {bound:?}"
    );
}

/// Reads frames for `window` and returns the `message` seqs of `room`, in arrival order.
async fn seqs_within(client: &mut Client, room: &str, window: Duration) -> Vec<u64> {
    client
        .drain_for(window)
        .await
        .iter()
        .filter_map(message_of)
        .filter(|m| m.room == room)
        .map(|m| m.seq)
        .collect()
}

/// A session costs no binding: each gateway's queue holds its own key `gw.<id>` and its
/// rooms' keys, whoever connects. A DM reaches every session of its recipient on every
/// gateway, once; typing in a DM and a kick reach their user the same way; an observer
/// bound to `user.#` (as a bot would be) still sees the user events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_events_reach_every_session_without_a_binding_per_user() {
    let stack = Stack::start(StackOptions::default()).await;
    for i in 0..2 {
        assert_bound(&stack, i, &[]).await;
    }
    let admin = Admin::connect().await.expect("connect to RabbitMQ");
    let events = stack.names().events_exchange();
    let observed = format!("{}.observer.users", stack.prefix());
    let mut observer = admin
        .observe(&observed, &events, &["user.#"])
        .await
        .expect("an observer bound to user.#");

    let mut alice = stack.connect(0, "alice").await;
    let mut bob0 = stack.connect(0, "bob").await;
    let mut bob1 = stack.connect(1, "bob").await;
    for i in 0..2 {
        assert_bound(&stack, i, &[]).await;
    }

    let answer = alice.dm("bob", "psst").await;
    let acked = ack_of(&answer).unwrap_or_else(|| panic!("dm answered {answer}"));
    for bob in [&mut bob0, &mut bob1] {
        let got = bob
            .recv_until(is_message_with_id(&acked.id), FRAME_WAIT)
            .await;
        assert_eq!(got["room"], "dm:alice:bob", "{got}");
        assert_eq!(got["text"], "psst", "{got}");
    }
    alice
        .recv_until(is_message_with_id(&acked.id), FRAME_WAIT)
        .await;

    // The observer saw the dm's user copies through their routing keys.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let next = tokio::time::timeout(FRAME_WAIT, observer.next())
            .await
            .unwrap_or_else(|_| panic!("the observer saw {seen:?} only"));
        let delivery = next.expect("observer stream").expect("a delivery");
        let body: Value = serde_json::from_slice(&delivery.data).expect("JSON");
        if body["id"] == acked.id.as_str() {
            seen.push(delivery.routing_key.to_string());
        }
    }
    seen.sort();
    assert_eq!(seen, vec!["user.alice.message", "user.bob.message"]);

    // Typing in the dm room reaches both of bob's sessions without a join of theirs.
    alice.join("dm:alice:bob").await;
    alice
        .send_frame(json!({"type": "typing", "room": "dm:alice:bob"}))
        .await;
    for bob in [&mut bob0, &mut bob1] {
        bob.recv_until(is_typing("dm:alice:bob", "alice"), FRAME_WAIT)
            .await;
    }

    // A kick reaches bob's session on the other gateway.
    let arena = "cc-arena";
    alice.join(arena).await;
    bob1.join(arena).await;
    assert_ack(
        &alice
            .moderate(json!({"room": arena, "action": "kick", "user": "bob"}))
            .await,
        "kick",
    );
    bob1.recv_until(is_kicked(arena), FRAME_WAIT).await;

    // Nothing came twice.
    for (label, bob) in [("bob0", &mut bob0), ("bob1", &mut bob1)] {
        let later = bob.drain_for(Duration::from_secs(1)).await;
        let again: Vec<&Value> = later
            .iter()
            .filter(|v| is_message_with_id(&acked.id)(v) || is_kicked(arena)(v))
            .collect();
        assert!(again.is_empty(), "{label} got a second copy: {again:?}");
    }
    for i in 0..2 {
        let bound = stack.broker_bindings(i).await;
        assert!(
            !bound.iter().any(|k| k.starts_with("user.")),
            "gw{i}: {bound:?}"
        );
    }

    // Closed sessions leave the gateways' own keys alone.
    alice.close().await;
    bob0.close().await;
    bob1.close().await;
    let st = &stack;
    eventually(
        "only the gateways' own keys stay bound",
        CONVERGE,
        || async {
            let mut state = Vec::new();
            for i in 0..2 {
                let bound = st.broker_bindings(i).await;
                let own = vec![gateway_key(st.gateway_id(i))];
                state.push((bound == own, format!("gw{i}: {bound:?}")));
            }
            if state.iter().all(|(ok, _)| *ok) {
                Ok(())
            } else {
                Err(format!("{state:?}"))
            }
        },
    )
    .await;
    admin.close().await;
}

/// An accepted send gets exactly one `ack`, made by the sender's gateway from the room
/// event: the gateway's queue receives one delivery for it (the event), no reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_send_gets_one_ack_from_the_event_and_no_reply() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let room = "one-ack";
    let [mut alice] = members(&stack, room, [(0, "alice")]).await;
    // The join's reply is in: settle, then count.
    let before = sample(&metrics(&stack, 0).await, "warren_gateway_deliveries_total");
    alice.send(room, "hello", "only-once").await;
    let frames = alice.drain_for(Duration::from_secs(2)).await;
    let acks: Vec<&Value> = frames.iter().filter(|v| v["type"] == "ack").collect();
    assert_eq!(acks.len(), 1, "one ack: {frames:?}");
    assert_eq!(acks[0]["ref"], "only-once");
    let acked = ack_of(acks[0]).expect("an ack with id and seq");
    let messages: Vec<_> = frames.iter().filter_map(message_of).collect();
    assert_eq!(messages.len(), 1, "{frames:?}");
    assert_eq!(
        (messages[0].id.as_str(), messages[0].seq),
        (acked.id.as_str(), acked.seq)
    );
    let after = sample(&metrics(&stack, 0).await, "warren_gateway_deliveries_total");
    assert_eq!(
        after - before,
        1.0,
        "the gateway's queue delivered the event only (no reply)"
    );

    // A retry answered by dedup still gets its ack, with the first message's id.
    alice.send(room, "hello", "only-once").await;
    let again = alice.answer("only-once").await;
    let second = ack_of(&again).unwrap_or_else(|| panic!("retry answered {again}"));
    assert_eq!((second.id, second.seq), (acked.id, acked.seq));
}

/// A room event lost on the way (its binding gone while it was routed) is repaired: the
/// next event shows the gap, the gateway reads the missing message from Redis once, and
/// every member sees every seq once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_room_event_is_repaired_from_history() {
    let stack = Stack::start(StackOptions::default()).await;
    let room = "mended";
    let mut alice = stack.connect(1, "alice").await;
    let mut bob = stack.connect(0, "bob").await;
    let mut carol = stack.connect(0, "carol").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        c.join(room).await;
    }
    let first = alice.send_acked(room, "one").await;

    // gw0 stops getting the room's events: the next one is routed past it.
    let admin = Admin::connect().await.expect("connect to RabbitMQ");
    let (queue, events, key) = (
        stack.gateway_queue(0),
        stack.names().events_exchange(),
        room_binding(room),
    );
    admin.unbind(&queue, &events, &key).await.expect("unbind");
    let lost = alice.send_acked(room, "two").await;
    admin.bind(&queue, &events, &key).await.expect("bind again");
    let third = alice.send_acked(room, "three").await;
    assert_eq!(
        (first.seq + 1, first.seq + 2),
        (lost.seq, third.seq),
        "three seqs in a row"
    );

    for (label, member) in [("bob", &mut bob), ("carol", &mut carol)] {
        let mut seqs = Vec::new();
        let deadline = tokio::time::Instant::now() + FRAME_WAIT;
        while !seqs.contains(&third.seq) && tokio::time::Instant::now() < deadline {
            seqs.extend(seqs_within(member, room, Duration::from_millis(200)).await);
        }
        seqs.extend(seqs_within(member, room, Duration::from_millis(500)).await);
        assert_eq!(
            seqs,
            vec![first.seq, lost.seq, third.seq],
            "{label} sees every seq once, in order"
        );
    }
    let m = metrics(&stack, 0).await;
    assert_eq!(sample(&m, "warren_gateway_gap_repairs_total"), 1.0);
    assert_eq!(
        sample(&m, "warren_gateway_gap_messages_repaired_total"),
        1.0
    );
    admin.close().await;
}

/// With `gateway.write_coalesce_ms` a connection's frames are gathered before they are
/// written: every member still gets every message once, in order, and every sender its
/// acks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_writes_deliver_everything_in_order() {
    const EACH: usize = 30;
    let stack =
        Stack::start(StackOptions::default().env("WARREN__GATEWAY__WRITE_COALESCE_MS", "20")).await;
    let room = "gathered";
    let [mut alice, mut bob] = members(&stack, room, [(0, "alice"), (1, "bob")]).await;
    for n in 0..EACH {
        alice.send(room, &format!("m{n}"), &format!("r{n}")).await;
    }
    let mut acks = 0;
    let mut alice_seqs = Vec::new();
    let deadline = tokio::time::Instant::now() + FRAME_WAIT;
    while (acks < EACH || alice_seqs.len() < EACH) && tokio::time::Instant::now() < deadline {
        for v in alice.drain_for(Duration::from_millis(200)).await {
            if v["type"] == "ack" {
                acks += 1;
            } else if let Some(m) = message_of(&v) {
                alice_seqs.push(m.seq);
            }
        }
    }
    assert_eq!(acks, EACH, "every send acked once");
    let mut bob_seqs = Vec::new();
    while bob_seqs.len() < EACH && tokio::time::Instant::now() < deadline {
        bob_seqs.extend(seqs_within(&mut bob, room, Duration::from_millis(200)).await);
    }
    let want: Vec<u64> = (1..=EACH as u64).collect();
    assert_eq!(alice_seqs, want, "alice, in order, once");
    assert_eq!(bob_seqs, want, "bob, in order, once");
}

/// In a room above `presence.max_event_members`, a join reads a sample of the room's
/// presence, not all of it: `joined.members` holds at most `presence.max_join_members`
/// others plus the joiner, `members_total` the room's size, and no `member` event goes
/// out; `presence` still lists everybody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_rooms_joined_carries_a_sample_and_the_total() {
    let settings = "presence.max_event_members=3 presence.max_join_members=2";
    let stack = Stack::start(StackOptions::new(1, 1).settings(settings)).await;
    let room = "stadium";
    let mut first = stack.connect(0, "u0").await;
    let small = first.join(room).await;
    assert_eq!((small.members.len(), small.members_total), (1, None));
    let mut crowd = Vec::new();
    for n in 1..6 {
        let mut c = stack.connect(0, &format!("u{n}")).await;
        let joined = c.join(room).await;
        let ids: Vec<&str> = joined.members.iter().map(|m| m.id.as_str()).collect();
        let me = format!("u{n}");
        assert!(
            ids.contains(&me.as_str()),
            "{me} is among its members: {ids:?}"
        );
        if n + 1 > 3 {
            assert_eq!(joined.members_total, Some(n as u64 + 1), "{me}");
            assert!(joined.members.len() <= 3, "{me}: a sample: {ids:?}");
        } else {
            assert_eq!(joined.members_total, None, "{me}");
            assert_eq!(joined.members.len(), n + 1, "{me}: everybody");
        }
        crowd.push(c);
    }
    // No `member joined` reached the first member once the room was large.
    let seen: Vec<Value> = first.drain_for(Duration::from_millis(500)).await;
    let joins: Vec<&str> = seen
        .iter()
        .filter(|v| v["type"] == "member" && v["event"] == "joined")
        .filter_map(|v| v["user"]["id"].as_str())
        .collect();
    assert_eq!(
        joins,
        vec!["u0", "u1", "u2"],
        "member events while small only"
    );
    let all = first.presence_ids(room).await;
    assert_eq!(all, vec!["u0", "u1", "u2", "u3", "u4", "u5"]);
}
