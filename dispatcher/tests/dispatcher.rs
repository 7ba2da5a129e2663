//! The dispatcher against the real RabbitMQ (127.0.0.1:5672) and Redis (127.0.0.1:6379),
//! driven the way a gateway drives it.

mod support;

use lapin::types::AMQPValue;
use proto::amqp::{CommandBody, EventBody};
use proto::client::{Dm, History, Join, Role, Send};
use proto::codes::ErrorCode;
use proto::keys::Keys;
use proto::server::{Ack, MemberChange, ServerBody};
use support::{with_harness, Harness};

fn join(room: &str, since: Option<u64>, epoch: Option<String>) -> CommandBody {
    CommandBody::Join(Join {
        room: room.into(),
        since,
        epoch,
    })
}

fn send(room: &str, text: &str) -> CommandBody {
    CommandBody::Send(Send {
        room: room.into(),
        text: text.into(),
    })
}

/// Sends `body` as `user` with `reference` and waits for its answer.
async fn ask(
    h: &mut Harness,
    user: &str,
    reference: Option<&str>,
    body: CommandBody,
) -> ServerBody {
    let c = h.send(&Harness::command(user, reference, body)).await;
    h.reply(&c).await.frame.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_join_creates_the_room_and_a_send_is_acked_and_published() {
    with_harness(&["room.lobby.#"], async |h| {
        let c = h
            .send(&Harness::command(
                "alice",
                Some("j1"),
                join("lobby", None, None),
            ))
            .await;
        let reply = h.reply(&c).await;
        assert_eq!(reply.session, "sess-alice");
        assert_eq!(reply.frame.reference.as_deref(), Some("j1"));
        let ServerBody::Joined(joined) = reply.frame.body else {
            panic!("not joined: {reply:?}")
        };
        assert_eq!(
            (joined.role, joined.seq, joined.recovered),
            (Role::Owner, 0, false)
        );
        assert!(joined.history.is_empty());
        assert_eq!(
            joined
                .members
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>(),
            ["alice"]
        );
        let (key, member) = h.event("member").await;
        assert_eq!(key, "room.lobby.member");
        let EventBody::Member(member) = member.body else {
            unreachable!()
        };
        assert_eq!(
            (member.event, member.user.id.as_str()),
            (MemberChange::Joined, "alice")
        );

        let c = h
            .send(&Harness::command(
                "alice",
                Some("s1"),
                send("lobby", "hello"),
            ))
            .await;
        let reply = h.reply(&c).await;
        assert_eq!(reply.frame.reference.as_deref(), Some("s1"));
        let ServerBody::Ack(ack) = reply.frame.body else {
            panic!("not an ack: {reply:?}")
        };
        assert_eq!((ack.room.as_deref(), ack.seq), (Some("lobby"), Some(1)));
        let (key, event) = h.event("message").await;
        assert_eq!(key, "room.lobby.message");
        let EventBody::Message(message) = event.body else {
            unreachable!()
        };
        assert_eq!(
            (message.seq, message.text.as_str(), message.from.id.as_str()),
            (1, "hello", "alice")
        );
        assert_eq!(Some(message.id.clone()), ack.id);
        assert_eq!(message.epoch, joined.epoch);

        // Rejoining with since=0 in the same epoch recovers exactly the missed message.
        let ServerBody::Joined(again) = ask(
            h,
            "alice",
            Some("j2"),
            join("lobby", Some(0), Some(joined.epoch)),
        )
        .await
        else {
            panic!("not joined")
        };
        assert!(again.recovered);
        assert_eq!(again.seq, 1);
        assert_eq!(again.history, vec![message]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_ref_is_answered_with_the_first_ack_and_stored_once() {
    with_harness(&["room.retry.#"], async |h| {
        let c = h
            .send(&Harness::command("bob", None, join("retry", None, None)))
            .await;
        h.reply(&c).await;

        let command = Harness::command("bob", Some("once"), send("retry", "only once"));
        let c = h.send(&command).await;
        let ServerBody::Ack(first) = h.reply(&c).await.frame.body else {
            panic!("not an ack")
        };
        let c = h.send(&command).await;
        let ServerBody::Ack(second) = h.reply(&c).await.frame.body else {
            panic!("not an ack")
        };
        assert_eq!(first, second);
        assert_eq!(first.seq, Some(1));
        // Both deliveries publish the message (the retry re-publishes it).
        for _ in 0..2 {
            let (_, event) = h.event("message").await;
            let EventBody::Message(m) = event.body else {
                unreachable!()
            };
            assert_eq!(m.seq, 1);
        }

        let history = CommandBody::History(History {
            room: "retry".into(),
            before: None,
            limit: None,
        });
        let ServerBody::History(page) = ask(h, "bob", Some("h"), history).await else {
            panic!("not history")
        };
        assert_eq!(page.messages.len(), 1);
        assert!(page.complete);
        let stored: u64 = redis::cmd("ZCARD")
            .arg(Keys::new(h.prefix.as_str()).history("retry"))
            .query_async(&mut h.redis_conn)
            .await
            .unwrap();
        assert_eq!(stored, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_answers_and_dms_reach_both_users() {
    with_harness(&["user.carol.#"], async |h| {
        // Sending without a role in the room.
        let ServerBody::Error(error) = ask(h, "dave", Some("x"), send("nowhere", "hi")).await
        else {
            panic!("not an error")
        };
        assert_eq!(error.code, ErrorCode::NotJoined);

        let dm = CommandBody::Dm(Dm {
            to: "carol".into(),
            text: "psst".into(),
        });
        let ServerBody::Ack(ack) = ask(h, "dave", Some("d1"), dm).await else {
            panic!("not an ack")
        };
        assert_eq!(
            ack,
            Ack {
                room: Some("dm:carol:dave".into()),
                id: ack.id.clone(),
                seq: Some(1)
            }
        );
        let (key, _) = h.event("message").await;
        assert_eq!(key, "user.carol.message");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_command_is_dead_lettered_with_its_reason() {
    with_harness(&[], async |h| {
        h.publish_raw(b"this is not json", "shard.0", "send").await;
        let dead = h.dead_letter().await;
        assert_eq!(dead.delivery.data, b"this is not json");
        let headers = dead.delivery.properties.headers().clone().expect("headers");
        let reason = headers
            .inner()
            .get("x-warren-reason")
            .expect("reason header");
        let AMQPValue::LongString(reason) = reason else {
            panic!("reason is not a string: {reason:?}")
        };
        assert!(String::from_utf8_lossy(reason.as_bytes()).contains("malformed"));
        assert_eq!(
            dead.delivery.properties.kind().as_ref().map(|k| k.as_str()),
            Some("send")
        );

        // The shard goes on: the next command is answered.
        assert!(matches!(
            ask(h, "erin", Some("j"), join("after", None, None)).await,
            ServerBody::Joined(_)
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutes_bans_and_announce_rooms_stored_in_redis_are_enforced() {
    with_harness(&[], async |h| {
        for user in ["owner", "mallory"] {
            let c = h
                .send(&Harness::command(user, None, join("stage", None, None)))
                .await;
            assert!(matches!(
                h.reply(&c).await.frame.body,
                ServerBody::Joined(_)
            ));
        }
        let key = |part: &str| Keys::new(h.prefix.as_str()).room("stage", part);
        let (mute, ban, meta) = (key("mute:mallory"), key("ban:mallory"), key("meta"));

        let expect = async |h: &mut Harness, user: &str, code: Option<ErrorCode>| {
            let c = h
                .send(&Harness::command(user, Some("s"), send("stage", "x")))
                .await;
            match (h.reply(&c).await.frame.body, code) {
                (ServerBody::Error(e), Some(code)) => assert_eq!(e.code, code, "{user}"),
                (ServerBody::Ack(_), None) => {}
                (other, _) => panic!("{user}: unexpected {other:?}"),
            }
        };
        h.redis(&["SET", &mute, "1"]).await;
        expect(h, "mallory", Some(ErrorCode::Muted)).await;
        h.redis(&["DEL", &mute]).await;
        h.redis(&["SET", &ban, "1"]).await;
        expect(h, "mallory", Some(ErrorCode::Banned)).await;
        let ServerBody::Error(e) = ask(h, "mallory", None, join("stage", None, None)).await else {
            panic!("a banned user joined")
        };
        assert_eq!(e.code, ErrorCode::Banned);

        h.redis(&["HSET", &meta, "announce", "1"]).await;
        let c = h
            .send(&Harness::command("nobody", None, join("stage", None, None)))
            .await;
        assert!(matches!(
            h.reply(&c).await.frame.body,
            ServerBody::Joined(_)
        ));
        expect(h, "nobody", Some(ErrorCode::Forbidden)).await;
        expect(h, "owner", None).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_keeps_each_rooms_order_and_every_command_is_acked() {
    const ROOMS: [&str; 3] = ["burst-a", "burst-b", "burst-c"];
    const PER_ROOM: u64 = 40;
    with_harness(
        &["room.burst-a.#", "room.burst-b.#", "room.burst-c.#"],
        async |h| {
            for room in ROOMS {
                let c = h
                    .send(&Harness::command("fay", None, join(room, None, None)))
                    .await;
                assert!(matches!(
                    h.reply(&c).await.frame.body,
                    ServerBody::Joined(_)
                ));
            }
            // Interleaved, all published before any is answered: the shards handle
            // them back to back with many confirms in flight.
            let mut commands = Vec::new();
            let mut expected = std::collections::HashMap::new();
            for i in 0..PER_ROOM {
                for room in ROOMS {
                    let reference = format!("{room}-{i}");
                    commands.push(Harness::command(
                        "fay",
                        Some(&reference),
                        send(room, &format!("m{i}")),
                    ));
                    // A room's commands are handled in order: the i-th gets seq i + 1.
                    expected.insert(reference, (room, i + 1));
                }
            }
            h.send_all(&commands).await;
            for _ in 0..commands.len() {
                let (_, reply) = h.any_reply().await;
                let reference = reply.frame.reference.clone().expect("a ref");
                let ServerBody::Ack(ack) = reply.frame.body else {
                    panic!("not an ack: {reference}")
                };
                let (room, seq) = expected.remove(&reference).expect("one answer per send");
                assert_eq!((ack.room.as_deref(), ack.seq), (Some(room), Some(seq)));
            }
            assert!(expected.is_empty());
            // Every room's events arrive in seq order, none missing.
            let mut last = std::collections::HashMap::new();
            for _ in 0..commands.len() {
                let (_, event) = h.event("message").await;
                let EventBody::Message(m) = event.body else {
                    unreachable!()
                };
                let seen = last.entry(m.room.clone()).or_insert(0);
                assert_eq!(m.seq, *seen + 1, "{} out of order", m.room);
                *seen = m.seq;
            }
            assert!(ROOMS.iter().all(|r| last.get(*r) == Some(&PER_ROOM)));
            // Nothing was left unacked: a stopped dispatcher returns nothing to the queues.
            assert_eq!(h.stop_and_count_commands().await, 0);
        },
    )
    .await;
}
