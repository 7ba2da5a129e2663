//! Rooms with rules, end to end: two gateways, two
//! dispatchers, real RabbitMQ and Redis, clients over WebSocket.
//!
//! Run `cargo build --workspace --bins` first; the harness starts those binaries.

use std::time::Duration;

use serde_json::json;
use warren_tests::client::{ack_of, message_of};
use warren_tests::crowd::members;
use warren_tests::rooms_support::{
    assert_ack, assert_error, is_kicked, is_member_event, is_moderation, is_typing,
};
use warren_tests::{
    is_message_in, is_message_with_id, Claims, Client, Connect, Stack, StackOptions,
};

/// The bound on waiting for one expected frame.
const FRAME_WAIT: Duration = Duration::from_secs(15);

/// Two rooms from configuration: a private one and an announce one.
const CONFIGURED_ROOMS: &str = r#"
[[rooms.list]]
id = "vault"
visibility = "private"
owners = ["olga"]
moderators = ["mo"]

[[rooms.list]]
id = "news"
announce = true
owners = ["olga"]
moderators = ["mo"]
"#;

/// Each of `clients` is told it was put out of `room`, for `reason`.
async fn assert_kicked(clients: [&mut Client; 2], room: &str, reason: &str) {
    for client in clients {
        let kicked = client.recv_until(is_kicked(room), FRAME_WAIT).await;
        assert_eq!(kicked["reason"], reason, "{}: {kicked}", client.label);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_room_needs_a_grant_and_announce_room_needs_a_moderator() {
    let stack = Stack::start(StackOptions::default().config(CONFIGURED_ROOMS)).await;
    let mut mo = stack.connect(0, "mo").await;
    let mut pat = stack.connect(1, "pat").await;

    pat.join_refused("vault", "forbidden", "pat joins vault before a grant")
        .await;
    let joined = mo.join("vault").await;
    assert_eq!(
        joined.role,
        proto::client::Role::Moderator,
        "mo's role in vault"
    );

    // A global admin is above every room role: the private room takes them in.
    let root_token = stack.token_with(&Claims::new("root").roles(&["admin"]));
    let mut root = stack
        .connect_with(0, &Connect::token(root_token), "root@gw0")
        .await
        .expect("root connects");
    let joined = root.try_join("vault").await;
    assert_eq!(
        joined["type"], "joined",
        "an admin joins a private room: {joined}"
    );

    let grant = json!({"room": "vault", "action": "grant", "user": "pat", "role": "member"});
    assert_error(
        &pat.moderate(grant.clone()).await,
        "forbidden",
        "pat grants himself",
    );
    mo.moderate_acked(grant, "mo grants pat").await;
    let event = mo
        .recv_until(is_moderation("vault", "grant"), FRAME_WAIT)
        .await;
    assert_eq!(
        (&event["user"]["id"], &event["role"], &event["by"]["id"]),
        (&json!("pat"), &json!("member"), &json!("mo")),
        "{event}"
    );
    let joined = pat.try_join("vault").await;
    assert_eq!(
        (&joined["type"], &joined["role"]),
        (&json!("joined"), &json!("member")),
        "{joined}"
    );

    pat.join("news").await;
    mo.join("news").await;
    assert_error(
        &pat.try_send("news", "me too").await,
        "forbidden",
        "a member posts in news",
    );
    let acked = mo.send_acked("news", "announcement").await;
    let got = pat
        .recv_until(is_message_with_id(&acked.id), FRAME_WAIT)
        .await;
    assert_eq!(got["text"], "announcement");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_user_cannot_send_until_the_mute_ends() {
    let stack = Stack::start(StackOptions::default()).await;
    let mut alice = stack.connect(0, "alice").await;
    let mut bob = stack.connect(1, "bob").await;
    assert_eq!(alice.join("quiet").await.role, proto::client::Role::Owner);
    bob.join("quiet").await;

    let mute = json!({"room": "quiet", "action": "mute", "user": "bob", "duration_s": 2, "reason": "flood"});
    alice.moderate_acked(mute, "alice mutes bob").await;
    let event = alice
        .recv_until(is_moderation("quiet", "mute"), FRAME_WAIT)
        .await;
    assert_eq!(
        (&event["user"]["id"], &event["by"]["id"], &event["reason"]),
        (&json!("bob"), &json!("alice"), &json!("flood"))
    );
    let until = event["until"]
        .as_u64()
        .unwrap_or_else(|| panic!("a timed mute has until: {event}"));
    let seen_by_bob = bob
        .recv_until(is_moderation("quiet", "mute"), FRAME_WAIT)
        .await;
    assert_eq!(seen_by_bob["until"], until);

    assert_error(
        &bob.try_send("quiet", "still here?").await,
        "muted",
        "bob's send while muted",
    );
    assert!(
        now_ms() < until,
        "the mute ended before the muted send was checked; the test is too slow"
    );

    // Past `until` (bounded: the mute was 2 s), bob's sends work again.
    tokio::time::sleep(Duration::from_millis(until.saturating_sub(now_ms()) + 200)).await;
    let acked = bob.send_acked("quiet", "back").await;
    alice
        .recv_until(is_message_with_id(&acked.id), FRAME_WAIT)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_holds_for_its_time_then_lets_the_user_back() {
    let stack =
        Stack::start(StackOptions::new(1, 1).env("WARREN__DISPATCHER__KICK_HOLD_S", "1")).await;
    let [mut alice, mut bob] = members(&stack, "held", [(0, "alice"), (0, "bob")]).await;
    alice
        .moderate_acked(
            json!({"room": "held", "action": "kick", "user": "bob"}),
            "kick",
        )
        .await;
    bob.recv_until(is_kicked("held"), FRAME_WAIT).await;
    bob.join_refused("held", "banned", "bob rejoins within the hold")
        .await;
    // The hold ends by itself; bob may retry until it has (bounded).
    let mut tries = 0;
    loop {
        tries += 1;
        let answer = bob.try_join("held").await;
        if answer["type"] == "joined" {
            break;
        }
        assert_error(&answer, "banned", "bob rejoins while the hold lasts");
        assert!(
            tries < 40,
            "bob still held out after {tries} tries 250 ms apart"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The kick kept bob's role: back in, he sends as before.
    bob.send_acked("held", "back").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_and_ban_reach_the_target_on_every_gateway() {
    let stack = Stack::start(StackOptions::default()).await;
    let [mut alice, mut bob0, mut bob1] =
        members(&stack, "arena", [(0, "alice"), (0, "bob"), (1, "bob")]).await;

    alice
        .moderate_acked(
            json!({"room": "arena", "action": "kick", "user": "bob"}),
            "kick",
        )
        .await;
    assert_kicked([&mut bob0, &mut bob1], "arena", "kicked").await;
    let kick = alice
        .recv_until(is_moderation("arena", "kick"), FRAME_WAIT)
        .await;
    assert!(
        kick["until"].is_u64(),
        "a kick says until when it holds: {kick}"
    );
    alice
        .recv_until(is_member_event("arena", "left", "bob"), FRAME_WAIT)
        .await;
    assert_eq!(alice.presence_ids("arena").await, ["alice"]);

    // A kick holds bob out for `dispatcher.kick_hold_s` (60 s by default), as a ban that
    // ends by itself; an unban lets him back early. Then he comes back on both gateways,
    // and is banned.
    bob0.join_refused("arena", "banned", "kicked bob rejoins at once")
        .await;
    let unban = json!({"room": "arena", "action": "unban", "user": "bob"});
    let lifted = "unban ends the kick's hold";
    alice.moderate_acked(unban.clone(), lifted).await;
    bob0.join("arena").await;
    bob1.join("arena").await;
    let ban = json!({"room": "arena", "action": "ban", "user": "bob", "reason": "trolling"});
    alice.moderate_acked(ban, "ban").await;
    assert_kicked([&mut bob0, &mut bob1], "arena", "trolling").await;
    let event = alice
        .recv_until(is_moderation("arena", "ban"), FRAME_WAIT)
        .await;
    assert!(
        event.get("until").is_none(),
        "a permanent ban has no until: {event}"
    );
    bob0.join_refused("arena", "banned", "banned bob rejoins on gw0")
        .await;
    bob1.join_refused("arena", "banned", "banned bob rejoins on gw1")
        .await;

    alice.moderate_acked(unban, "unban").await;
    let joined = bob1.join("arena").await;
    assert_eq!(
        joined.role,
        proto::client::Role::Member,
        "after unban bob is a member again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_message_leaves_history_and_members_are_told() {
    let stack = Stack::start(StackOptions::default()).await;
    let mut alice = stack.connect(0, "alice").await;
    let mut bob = stack.connect(1, "bob").await;
    alice.join("board").await;
    let epoch = bob.join("board").await.epoch;
    let spam = bob.send_acked("board", "buy cheap stuff").await;
    let fine = bob.send_acked("board", "hello all").await;

    let delete = json!({"room": "board", "action": "delete", "msg_id": spam.id, "reason": "spam"});
    assert_error(
        &bob.moderate(delete.clone()).await,
        "forbidden",
        "a member deletes",
    );
    alice
        .moderate_acked(delete.clone(), "the owner deletes")
        .await;
    for member in [&mut alice, &mut bob] {
        let event = member
            .recv_until(is_moderation("board", "delete"), FRAME_WAIT)
            .await;
        assert_eq!(
            (&event["msg_id"], &event["by"]["id"]),
            (&json!(spam.id), &json!("alice")),
            "{}: {event}",
            member.label
        );
    }
    let history = alice.full_history("board").await;
    let ids: Vec<&str> = history.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, [fine.id.as_str()], "history after the delete");
    assert_error(
        &alice.moderate(delete).await,
        "bad_request",
        "deleting it again",
    );

    // A rejoin that missed the deleted message still recovers.
    let joined = bob.join_since("board", 0, &epoch).await;
    assert!(joined.recovered, "a deletion is not a loss: {joined:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranks_decide_who_may_moderate_whom() {
    let stack = Stack::start(StackOptions::default()).await;
    let [mut olga, mut mo, mut pat] =
        members(&stack, "guild", [(0, "olga"), (1, "mo"), (0, "pat")]).await;

    let on = |action: &str, user: &str| json!({"room": "guild", "action": action, "user": user});
    assert_error(
        &pat.moderate(on("mute", "mo")).await,
        "forbidden",
        "a member mutes",
    );
    assert_error(
        &pat.moderate(on("kick", "olga")).await,
        "forbidden",
        "a member kicks the owner",
    );

    let grant = json!({"room": "guild", "action": "grant", "user": "mo", "role": "moderator"});
    olga.moderate_acked(grant, "the owner grants moderator")
        .await;
    let event = pat
        .recv_until(is_moderation("guild", "grant"), FRAME_WAIT)
        .await;
    assert_eq!(
        (&event["user"]["id"], &event["role"]),
        (&json!("mo"), &json!("moderator"))
    );
    assert_eq!(mo.join("guild").await.role, proto::client::Role::Moderator);

    for action in ["mute", "kick", "ban"] {
        assert_error(
            &mo.moderate(on(action, "olga")).await,
            "forbidden",
            &format!("moderator {action}s the owner"),
        );
    }
    let promote = json!({"room": "guild", "action": "grant", "user": "pat", "role": "moderator"});
    assert_error(
        &mo.moderate(promote).await,
        "forbidden",
        "a moderator grants moderator",
    );
    mo.moderate_acked(on("mute", "pat"), "a moderator mutes a member")
        .await;
    mo.moderate_acked(on("unmute", "pat"), "a moderator unmutes a member")
        .await;

    let revoke = json!({"room": "guild", "action": "revoke", "user": "mo", "role": "moderator"});
    olga.moderate_acked(revoke, "the owner revokes moderator")
        .await;
    pat.recv_until(is_moderation("guild", "revoke"), FRAME_WAIT)
        .await;
    assert_error(
        &mo.moderate(on("mute", "pat")).await,
        "forbidden",
        "a former moderator mutes",
    );
    assert_eq!(mo.join("guild").await.role, proto::client::Role::Member);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_gateways_and_a_killed_gateway_leaves_no_ghosts() {
    const TTL_S: u64 = 3;
    let stack = Stack::start(
        StackOptions::default()
            .env("WARREN__PRESENCE__TTL_S", &TTL_S.to_string())
            .env("WARREN__PRESENCE__RENEW_S", "1"),
    )
    .await;
    let mut stack = stack;
    let mut alice = stack.connect(0, "alice").await;
    alice.join("plaza").await;
    let mut bob0 = stack.connect(0, "bob").await;
    let mut bob1 = stack.connect(1, "bob").await;
    let joined = bob0.join("plaza").await;
    let members: Vec<&str> = joined.members.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        members,
        ["alice", "bob"],
        "joined.members includes the joiner"
    );
    alice
        .recv_until(is_member_event("plaza", "joined", "bob"), FRAME_WAIT)
        .await;
    bob1.join("plaza").await;
    let mut carol = stack.connect(1, "carol").await;
    carol.join("plaza").await;
    alice
        .recv_until(is_member_event("plaza", "joined", "carol"), FRAME_WAIT)
        .await;
    assert_eq!(
        carol.presence_ids("plaza").await,
        ["alice", "bob", "carol"],
        "presence seen from gw1"
    );
    assert_eq!(
        alice.presence_ids("plaza").await,
        ["alice", "bob", "carol"],
        "presence seen from gw0"
    );

    // Two connections: bob stays present until the second one is gone.
    bob0.close().await;
    assert_eq!(
        alice.presence_ids("plaza").await,
        ["alice", "bob", "carol"],
        "bob still has gw1"
    );
    alice
        .none_within(
            Duration::from_millis(500),
            is_member_event("plaza", "left", "bob"),
        )
        .await;
    bob1.close().await;
    alice
        .recv_until(is_member_event("plaza", "left", "bob"), FRAME_WAIT)
        .await;
    assert_eq!(alice.presence_ids("plaza").await, ["alice", "carol"]);

    // carol's gateway dies without a word: she is gone within the expiry.
    stack.kill_gateway(1).await;
    let took = alice
        .presence_becomes("plaza", &["alice"], Duration::from_secs(TTL_S + 3))
        .await;
    eprintln!("carol left presence {took:?} after her gateway was killed (ttl {TTL_S} s)");
    alice
        .recv_until(is_member_event("plaza", "left", "carol"), FRAME_WAIT)
        .await;
    drop(carol);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_reach_online_and_offline_recipients_only() {
    let stack = Stack::start(StackOptions::default()).await;
    let mut alice = stack.connect(0, "alice").await;
    let mut bob = stack.connect(1, "bob").await;

    let ack = alice.dm("bob", "psst").await;
    assert_eq!(ack["room"], "dm:alice:bob", "{ack}");
    let acked = ack_of(&ack).unwrap_or_else(|| panic!("dm answered {ack}"));
    let got = bob
        .recv_until(is_message_in("dm:alice:bob"), FRAME_WAIT)
        .await;
    let message = message_of(&got).expect("a message");
    assert_eq!(
        (
            message.id.as_str(),
            message.text.as_str(),
            message.from.id.as_str()
        ),
        (acked.id.as_str(), "psst", "alice")
    );

    // Typing in a dm room reaches the other user without a join.
    alice.join("dm:alice:bob").await;
    alice
        .send_frame(json!({"type": "typing", "room": "dm:alice:bob"}))
        .await;
    bob.recv_until(is_typing("dm:alice:bob", "alice"), FRAME_WAIT)
        .await;

    // carol is offline: the dm waits in history.
    let ack = alice.dm("carol", "call me").await;
    assert_ack(&ack, "dm to an offline user");
    let mut carol = stack.connect(1, "carol").await;
    let joined = carol.join("dm:alice:carol").await;
    let texts: Vec<&str> = joined.history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["call me"]);

    let mut dave = stack.connect(0, "dave").await;
    dave.join_refused("dm:alice:bob", "forbidden", "a third user joins a dm room")
        .await;
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_rooms_get_member_events_like_any_small_room() {
    let stack = Stack::start(StackOptions::new(2, 1)).await;
    let mut alice = stack.connect(0, "alice").await;
    let mut bob = stack.connect(1, "bob").await;
    let dm = "dm:alice:bob";
    alice.join(dm).await;
    bob.join(dm).await;
    alice
        .recv_until(is_member_event(dm, "joined", "bob"), FRAME_WAIT)
        .await;
    bob.leave(dm).await;
    alice
        .recv_until(is_member_event(dm, "left", "bob"), FRAME_WAIT)
        .await;
}
