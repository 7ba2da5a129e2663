//! Limits that hold per user, and a bounded store: a Redis
//! that refuses writes (full at `maxmemory` with `noeviction`) makes commands answer
//! `unavailable`, counted in `/metrics`, never a crash or a silent drop; one user creates
//! at most so many rooms (dm conversations included) an hour; a user's sends share one
//! budget across every gateway and connection, and a bot's commands have one too; a
//! user's connections are capped across gateways.
//!
//! The full-store test runs on a Redis of its own (a `redis-server` child), since it
//! reconfigures it; RabbitMQ is the machine's.

use std::time::Duration;

use proto::amqp::shard_key;
use proto::ids::shard_of;
use serde_json::json;
use warren_tests::accounts::Permissions;
use warren_tests::bots::{bot_account, next_json, AmqpAs, Published};
use warren_tests::crowd::members;
use warren_tests::faults_support::checks;
use warren_tests::private_redis::PrivateRedis;
use warren_tests::rooms_support::assert_error;
use warren_tests::{Client, Connect, Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_answers_unavailable_and_counts_it() {
    let redis = PrivateRedis::start().await;
    let mut stack =
        Stack::start(StackOptions::new(1, 1).env("WARREN__REDIS__URL", &redis.url())).await;
    let room = "full";
    let mut alice = stack.connect(0, "alice").await;
    alice.join(room).await;
    let before = alice.send_acked(room, "before").await;

    // Full: no write is accepted any more.
    redis.config_set("maxmemory-policy", "noeviction").await;
    redis.config_set("maxmemory", "1").await;
    let refused = alice.try_send(room, "while full").await;
    assert_error(&refused, "unavailable", "a send while Redis refuses writes");
    let refusals =
        checks::dispatcher_metric(&stack, 0, "warren_dispatcher_store_refusals_total").await;
    assert!(refusals >= 1.0, "store refusals counted: {refusals}");
    assert!(stack.dispatcher_alive(0), "the dispatcher is still running");

    // Room again: sends go through (bounded retry while the gateway's registry recovers).
    redis.config_set("maxmemory", "0").await;
    let mut tries = 0;
    let after = loop {
        tries += 1;
        let answer = alice.try_send(room, "after").await;
        if answer["type"] == "ack" {
            break answer;
        }
        assert_error(&answer, "unavailable", "a send once Redis has room again");
        assert!(tries < 30, "still unavailable after {tries} tries");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let history = alice.full_history(room).await;
    let stored: Vec<(&str, u64)> = history.iter().map(|m| (m.text.as_str(), m.seq)).collect();
    assert_eq!(
        stored,
        [
            ("before", before.seq),
            ("after", after["seq"].as_u64().unwrap_or(0))
        ],
        "the refused send was not stored, and no seq was skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_creates_at_most_so_many_rooms_an_hour() {
    let stack =
        Stack::start(StackOptions::new(1, 1).settings("rooms.max_created_per_hour=3")).await;
    let mut alice = stack.connect(0, "alice").await;
    let mut bob = stack.connect(0, "bob").await;
    for room in ["made1", "made2", "made3"] {
        alice.join(room).await;
    }
    alice
        .join_refused(
            "made4",
            "rate_limited",
            "alice creates a fourth room within the hour",
        )
        .await;
    // A dm's first message creates its room: it counts the same.
    assert_error(
        &alice.dm("ghost", "anyone there?").await,
        "rate_limited",
        "alice starts a dm with an id nobody uses, past her rooms for the hour",
    );
    // Joining rooms that exist is not creating: bob's room takes her in.
    bob.join("bobs").await;
    let joined = alice.try_join("bobs").await;
    assert_eq!(
        joined["type"], "joined",
        "alice joins an existing room: {joined}"
    );
    // And the refused room was not created: bob creates it (and owns it).
    let joined = bob.try_join("made4").await;
    assert_eq!(
        (&joined["type"], &joined["role"]),
        (&serde_json::json!("joined"), &serde_json::json!("owner")),
        "{joined}"
    );
}

/// Sends `n` messages to `room` as fast as the connection takes them, then counts the
/// answers: (acked, refused `rate_limited`).
async fn burst(client: &mut Client, room: &str, n: usize, label: &str) -> (usize, usize) {
    for i in 0..n {
        client
            .send(room, &format!("{label} {i}"), &format!("{label}-{i}"))
            .await;
    }
    let (mut acked, mut limited) = (0, 0);
    for i in 0..n {
        let answer = client.answer(&format!("{label}-{i}")).await;
        match (answer["type"].as_str(), answer["code"].as_str()) {
            (Some("ack"), _) => acked += 1,
            (Some("error"), Some("rate_limited")) => limited += 1,
            _ => panic!("{label}-{i}: {answer}"),
        }
    }
    (acked, limited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_send_budget_holds_across_gateways() {
    // Each connection may send as much as it likes; the user may send 10 at once (and
    // 1 a second after).
    let settings = "dispatcher.user_sends_per_sec=1 dispatcher.user_send_burst=10";
    let stack = Stack::start(StackOptions::new(2, 1).settings(settings)).await;
    let room = "budget";
    let [mut on0, mut on1, mut bob] =
        members(&stack, room, [(0, "alice"), (1, "alice"), (1, "bob")]).await;
    let (acked0, limited0) = burst(&mut on0, room, 8, "gw0").await;
    let (acked1, limited1) = burst(&mut on1, room, 8, "gw1").await;
    let acked = acked0 + acked1;
    // 16 sends within a few seconds: the bucket's 10, and a refill a second.
    assert!(
        (10..=14).contains(&acked),
        "alice's sends acked over both gateways: {acked} ({acked0} + {acked1})"
    );
    assert_eq!(
        limited0 + limited1,
        16 - acked,
        "the rest was refused rate_limited"
    );
    assert!(
        limited1 > 0,
        "the second gateway's connection met the same budget"
    );
    // Another user's budget is their own.
    let (bob_acked, _) = burst(&mut bob, room, 5, "bob").await;
    assert_eq!(bob_acked, 5, "bob's sends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bots_commands_have_a_budget() {
    let settings = "dispatcher.bot_commands_per_sec=1 dispatcher.bot_command_burst=5";
    let stack = Stack::start(StackOptions::new(1, 1).settings(settings)).await;
    let bot = bot_account(&Permissions::bot(stack.prefix(), "budget")).await;
    let room = "botroom";
    let replies_queue = format!("{}.bot.budget.replies", stack.prefix());
    let (mut amqp, mut replies) = AmqpAs::with_replies(&bot.url(), &replies_queue).await;
    let commands = stack.names().commands_exchange();
    let route = shard_key(shard_of(room, stack.shards()));
    const SENT: usize = 12;
    for i in 0..SENT {
        let body = json!({"v": 1, "kind": "join", "room": room, "ref": format!("j{i}"),
                          "actor": {"id": "ignored", "name": "ignored"}});
        let published = amqp
            .publish(
                &commands,
                &route,
                body.to_string().as_bytes(),
                Some(&bot.login),
                Some(&replies_queue),
            )
            .await;
        assert!(matches!(published, Published::Routed), "{published:?}");
    }
    let mut answers = Vec::new();
    for _ in 0..SENT {
        let reply = next_json(&mut replies, Duration::from_secs(15))
            .await
            .unwrap_or_else(|e| panic!("no answer on the bot's reply queue: {e:#}"));
        answers.push(
            reply["frame"]["type"].as_str().unwrap_or("").to_owned()
                + "/"
                + reply["frame"]["code"].as_str().unwrap_or(""),
        );
    }
    let joined = answers.iter().filter(|a| a.starts_with("joined")).count();
    let limited = answers
        .iter()
        .filter(|a| *a == "error/rate_limited")
        .count();
    assert!((5..=7).contains(&joined), "joins answered: {answers:?}");
    assert_eq!(
        joined + limited,
        SENT,
        "every other one rate_limited: {answers:?}"
    );
    amqp.close().await;
}

/// Connects `user` to gateway `i`, trying again (bounded) while the handshake is refused.
async fn connect_eventually(stack: &Stack, i: usize, token: &str, label: &str) -> Client {
    let mut last = String::new();
    for _ in 0..60 {
        match stack.connect_with(i, &Connect::token(token), label).await {
            Ok(client) => return client,
            Err(e) => last = format!("{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{label}: still refused after 60 tries 250 ms apart: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_connections_are_capped_across_gateways() {
    let settings = "gateway.max_user_connections=3 presence.ttl_s=3 presence.renew_s=1";
    let mut stack = Stack::start(StackOptions::new(2, 1).settings(settings)).await;
    let token = stack.token("alice");
    let on0a = stack.connect(0, "alice").await;
    let on0b = stack.connect(0, "alice").await;
    let on1 = stack.connect(1, "alice").await;
    // Each gateway would take more (32 a user each); together they are at 3.
    let refused = stack.handshake(1, &Connect::token(token.clone())).await;
    assert_eq!(
        refused.status, 429,
        "a fourth connection on another gateway"
    );
    assert!(
        refused.text().contains("too_many_connections"),
        "{}",
        refused.text()
    );
    let _bob = stack.connect(1, "bob").await;

    // A connection that ends gives its place back.
    on1.close().await;
    let _again = connect_eventually(&stack, 1, &token, "alice again@gw1").await;
    // A gateway that dies gives its places back once its registration expires.
    stack.kill_gateway(0).await;
    drop((on0a, on0b));
    let _more = connect_eventually(&stack, 1, &token, "alice more@gw1").await;
    let _most = connect_eventually(&stack, 1, &token, "alice most@gw1").await;
    let refused = stack.handshake(1, &Connect::token(token.clone())).await;
    assert_eq!(
        refused.status, 429,
        "at the cap again, on the one gateway left"
    );
}

/// The stack's Redis keys of `room` (its hash tag), but its dedup keys, which expire
/// on their own (`dispatcher.dedup_ttl_s`).
async fn keys_of(stack: &Stack, room: &str) -> Vec<String> {
    let tag = format!("{{{room}}}");
    let mut keys: Vec<String> = stack
        .redis_keys()
        .await
        .into_iter()
        .filter(|k| k.contains(&tag) && !k.contains(":dedup"))
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_nobody_uses_expires_whole_and_one_with_a_member_stays() {
    let stack = Stack::start(StackOptions::new(1, 1).settings("rooms.idle_expiry_s=3")).await;
    let mut alice = stack.connect(0, "alice").await;
    let mut bob = stack.connect(0, "bob").await;
    let first = alice.join("fleeting").await;
    alice.send_acked("fleeting", "soon gone").await;
    alice.leave("fleeting").await;
    bob.join("kept").await;
    bob.send_acked("kept", "still here").await;
    assert!(
        !keys_of(&stack, "fleeting").await.is_empty(),
        "fleeting has keys"
    );

    // Nobody uses `fleeting`: within its period (and a renewal round) it is gone whole.
    let mut waited = 0;
    while !keys_of(&stack, "fleeting").await.is_empty() {
        waited += 1;
        assert!(
            waited < 60,
            "fleeting still has keys: {:?}",
            keys_of(&stack, "fleeting").await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // `kept` has a silent member, whose gateway renews it: past the same period, whole.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = keys_of(&stack, "kept").await;
    for part in ["epoch", "history", "meta", "presence", "roles", "seq"] {
        assert!(
            kept.iter().any(|k| k.ends_with(&format!(":{part}"))),
            "kept lost its {part}: {kept:?}"
        );
    }
    let texts = bob.history_texts("kept").await;
    assert_eq!(texts, ["still here"]);

    // Joining `fleeting` again creates it anew: a new epoch, no history, a new owner.
    let again = alice.join("fleeting").await;
    assert_ne!(again.epoch, first.epoch, "a new epoch");
    assert!(again.history.is_empty(), "no history: {:?}", again.history);
    assert_eq!(again.role, proto::client::Role::Owner);
}

/// Sends `to` the dms `hello <i>` for each `i` of `numbers`, each acked.
async fn dm_acked(from: &mut Client, to: &str, numbers: std::ops::Range<u32>) {
    for i in numbers {
        let answer = from.dm(to, &format!("hello {i}")).await;
        assert_eq!(answer["type"], "ack", "dm {i}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dm_its_recipient_never_opened_keeps_only_its_last_hundred_messages() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let room = "dm:alice:ghost";
    let mut alice = stack.connect(0, "alice").await;
    dm_acked(&mut alice, "ghost", 0..105).await;
    let kept = alice.history_seqs(room).await;
    assert_eq!(kept, (6..=105).collect::<Vec<u64>>(), "the last 100 of 105");

    // Once ghost opens the conversation, it keeps its whole history again.
    let mut ghost = stack.connect(0, "ghost").await;
    ghost.join(room).await;
    dm_acked(&mut alice, "ghost", 105..110).await;
    let kept = ghost.history_seqs(room).await;
    assert_eq!(
        kept,
        (6..=110).collect::<Vec<u64>>(),
        "nothing trimmed after the open"
    );
}
