//! Moderation, rooms from configuration, presence expiry and dedup without `ref`, with
//! the dispatcher in-process against the real RabbitMQ and Redis.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};

use proto::amqp::{Command, CommandBody, ConnRef, EventBody};
use proto::client::{
    History, Join, ModAction, Moderate, Role, RoomOnly, RoomSettings, Send, Visibility,
};
use proto::codes::ErrorCode;
use proto::keys::Keys;
use proto::server::{MemberChange, ServerBody};
use support::{with_configured_harness, with_harness, Harness};

fn join(room: &str) -> CommandBody {
    CommandBody::Join(Join {
        room: room.into(),
        since: None,
        epoch: None,
    })
}

fn send(room: &str, text: &str) -> CommandBody {
    CommandBody::Send(Send {
        room: room.into(),
        text: text.into(),
    })
}

fn moderate(room: &str, action: ModAction, user: &str) -> Moderate {
    Moderate {
        room: room.into(),
        action,
        user: Some(user.into()),
        msg_id: None,
        role: None,
        duration_s: None,
        reason: None,
        settings: None,
    }
}

/// Sends `body` as `user` with a fresh `ref` and returns the answer's body.
async fn ask(h: &mut Harness, user: &str, body: CommandBody) -> ServerBody {
    static REFS: AtomicU64 = AtomicU64::new(0);
    let reference = format!("r{}", REFS.fetch_add(1, Ordering::Relaxed));
    let c = h
        .send(&Harness::command(user, Some(&reference), body))
        .await;
    h.reply(&c).await.frame.body
}

async fn expect_code(h: &mut Harness, user: &str, body: CommandBody, code: ErrorCode) {
    match ask(h, user, body).await {
        ServerBody::Error(e) => assert_eq!(e.code, code, "{user}: {}", e.message),
        other => panic!("{user}: expected {code:?}, got {other:?}"),
    }
}

async fn expect_forbidden(h: &mut Harness, user: &str, body: CommandBody) {
    expect_code(h, user, body, ErrorCode::Forbidden).await;
}

async fn expect_ack(h: &mut Harness, user: &str, body: CommandBody) {
    match ask(h, user, body).await {
        ServerBody::Ack(_) => {}
        other => panic!("{user}: expected an ack, got {other:?}"),
    }
}

async fn expect_joined(h: &mut Harness, user: &str, room: &str) -> Role {
    match ask(h, user, join(room)).await {
        ServerBody::Joined(j) => j.role,
        other => panic!("{user}: expected joined, got {other:?}"),
    }
}

/// Waits for the `member` event that says `user` left.
async fn expect_left(h: &mut Harness, user: &str) {
    let (_, event) = h.event("member").await;
    let EventBody::Member(left) = event.body else {
        unreachable!()
    };
    assert_eq!(
        (left.event, left.user.id.as_str()),
        (MemberChange::Left, user)
    );
}

fn act(m: Moderate) -> CommandBody {
    CommandBody::Moderate(m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_kick_ban_and_delete_change_the_room_and_tell_it() {
    with_harness(
        &["room.club.moderation", "room.club.member", "user.bob.#"],
        async |h| {
            expect_joined(h, "alice", "club").await;
            expect_joined(h, "bob", "club").await;
            h.event("member").await;
            h.event("member").await;
            expect_forbidden(h, "bob", act(moderate("club", ModAction::Mute, "alice"))).await;

            let before = common::now_ms();
            let mute = Moderate {
                duration_s: Some(60),
                reason: Some("calm down".into()),
                ..moderate("club", ModAction::Mute, "bob")
            };
            expect_ack(h, "alice", act(mute)).await;
            let (key, event) = h.event("moderation").await;
            assert_eq!(key, "room.club.moderation");
            let EventBody::Moderation(m) = event.body else {
                unreachable!()
            };
            assert_eq!(m.action, ModAction::Mute);
            assert_eq!(
                m.user.as_ref().map(|u| (u.id.as_str(), u.name.as_str())),
                Some(("bob", "BOB"))
            );
            assert_eq!(
                (m.by.id.as_str(), m.reason.as_deref()),
                ("alice", Some("calm down"))
            );
            let until = m.until.expect("a timed mute has an end");
            assert!(
                until >= before + 60_000 && until <= common::now_ms() + 60_000,
                "{until}"
            );
            expect_code(h, "bob", send("club", "hey"), ErrorCode::Muted).await;
            expect_ack(h, "alice", act(moderate("club", ModAction::Unmute, "bob"))).await;
            expect_ack(h, "bob", send("club", "thanks")).await;

            expect_ack(h, "alice", act(moderate("club", ModAction::Kick, "bob"))).await;
            expect_left(h, "bob").await;
            let (key, event) = h.event("kicked").await;
            assert_eq!(key, "user.bob.kicked");
            let EventBody::Kicked(kicked) = event.body else {
                unreachable!()
            };
            assert_eq!(
                (kicked.room.as_str(), kicked.reason.as_str()),
                ("club", "kicked")
            );
            match ask(
                h,
                "alice",
                CommandBody::Presence(RoomOnly {
                    room: "club".into(),
                }),
            )
            .await
            {
                ServerBody::Presence(p) => assert_eq!(p.members.len(), 1, "{p:?}"),
                other => panic!("{other:?}"),
            }

            // A kick holds bob out for `dispatcher.kick_hold_s`; an unban ends the hold.
            match ask(h, "bob", join("club")).await {
                ServerBody::Error(e) => assert_eq!(e.code, ErrorCode::Banned, "{e:?}"),
                other => panic!("bob rejoins within the kick's hold: {other:?}"),
            }
            let unban = act(moderate("club", ModAction::Unban, "bob"));
            expect_ack(h, "alice", unban).await;
            let (key, _) = h.event("moderation").await;
            assert_eq!(key, "room.club.moderation");
            // Then bob comes back, and is banned for good.
            expect_joined(h, "bob", "club").await;
            expect_ack(h, "alice", act(moderate("club", ModAction::Ban, "bob"))).await;
            let (key, _) = h.event("kicked").await;
            assert_eq!(key, "user.bob.kicked");
            let role_key = Keys::new(h.prefix.as_str()).roles("club");
            assert_eq!(
                h.redis(&["HEXISTS", &role_key, "bob"]).await,
                redis::Value::Int(0)
            );
            expect_code(h, "bob", join("club"), ErrorCode::Banned).await;
            expect_ack(h, "alice", act(moderate("club", ModAction::Unban, "bob"))).await;
            assert_eq!(expect_joined(h, "bob", "club").await, Role::Member);

            // Delete: gone from history and from the index; a second delete finds nothing.
            let ServerBody::Ack(ack) = ask(h, "bob", send("club", "oops")).await else {
                panic!("not acked")
            };
            let id = ack.id.expect("a send's ack has an id");
            let delete = Moderate {
                user: None,
                msg_id: Some(id.clone()),
                ..moderate("club", ModAction::Delete, "")
            };
            expect_forbidden(h, "bob", act(delete.clone())).await;
            expect_ack(h, "alice", act(delete.clone())).await;
            // Skip the events of the actions before.
            let event = loop {
                if let (
                    _,
                    proto::amqp::Event {
                        body: EventBody::Moderation(m),
                        ..
                    },
                ) = h.event("moderation").await
                {
                    if m.action == ModAction::Delete {
                        break m;
                    }
                }
            };
            assert_eq!(event.msg_id.as_deref(), Some(id.as_str()));
            let history = CommandBody::History(History {
                room: "club".into(),
                before: None,
                limit: None,
            });
            let ServerBody::History(page) = ask(h, "alice", history).await else {
                panic!()
            };
            assert!(page.messages.iter().all(|m| m.id != id), "{page:?}");
            assert_eq!(page.messages.len(), 1, "{page:?}");
            let ids_key = Keys::new(h.prefix.as_str()).ids("club");
            assert_eq!(
                h.redis(&["HEXISTS", &ids_key, &id]).await,
                redis::Value::Int(0)
            );
            expect_code(h, "alice", act(delete), ErrorCode::BadRequest).await;
        },
    )
    .await;
}

const ROOMS: &str = r#"
[[rooms.list]]
id = "staff"
visibility = "private"
owners = ["olga"]
moderators = ["mod"]
history_limit = 3
history_on_join = 2

[[rooms.list]]
id = "news"
announce = true
owners = ["olga"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_rooms_roles_and_grants() {
    with_configured_harness(&[], ROOMS, async |h| {
        expect_forbidden(h, "pat", join("staff")).await;
        let meta = Keys::new(h.prefix.as_str()).meta("staff");
        assert_eq!(
            h.redis(&["HGET", &meta, "visibility"]).await,
            redis::Value::BulkString(b"private".to_vec())
        );
        let grant = |user: &str, role: Role| Moderate {
            role: Some(role),
            ..moderate("staff", ModAction::Grant, user)
        };
        let revoke = |user: &str, role: Role| Moderate {
            action: ModAction::Revoke,
            ..grant(user, role)
        };
        expect_forbidden(h, "pat", act(grant("pat", Role::Member))).await;
        expect_ack(h, "mod", act(grant("pat", Role::Member))).await;
        assert_eq!(expect_joined(h, "pat", "staff").await, Role::Member);
        expect_forbidden(h, "mod", act(grant("pat", Role::Moderator))).await;
        expect_forbidden(h, "olga", act(grant("pat", Role::Owner))).await;
        expect_ack(h, "olga", act(grant("pat", Role::Moderator))).await;
        assert_eq!(expect_joined(h, "pat", "staff").await, Role::Moderator);
        expect_forbidden(h, "pat", act(moderate("staff", ModAction::Mute, "olga"))).await;
        expect_forbidden(h, "pat", act(moderate("staff", ModAction::Mute, "mod"))).await;
        expect_ack(h, "olga", act(revoke("pat", Role::Moderator))).await;
        assert_eq!(expect_joined(h, "pat", "staff").await, Role::Member);
        expect_ack(h, "mod", act(revoke("pat", Role::Member))).await;
        expect_forbidden(h, "pat", join("staff")).await;

        // The room's own history limit, with its index trimmed alongside.
        for i in 0..5 {
            expect_ack(h, "olga", send("staff", &format!("m{i}"))).await;
        }
        let keys = Keys::new(h.prefix.as_str());
        let key = |part: &str| keys.room("staff", part);
        assert_eq!(
            h.redis(&["ZCARD", &key("history")]).await,
            redis::Value::Int(3)
        );
        assert_eq!(h.redis(&["HLEN", &key("ids")]).await, redis::Value::Int(3));
        assert_eq!(
            h.redis(&["GET", &key("floor")]).await,
            redis::Value::BulkString(b"2".to_vec())
        );

        match ask(h, "olga", join("staff")).await {
            ServerBody::Joined(j) => assert_eq!(j.history.len(), 2, "{j:?}"),
            other => panic!("{other:?}"),
        }

        assert_eq!(expect_joined(h, "pat", "news").await, Role::Member);
        expect_forbidden(h, "pat", send("news", "hi")).await;
        expect_ack(h, "olga", send("news", "announcement")).await;
    })
    .await;
}

/// Redis restarted without its data (or was flushed) while the dispatcher stayed
/// connected: a room from configuration must not be re-created as a public room owned by
/// whoever joins first. Found by the fault suite (`redis_data_loss_gives_rooms_a_new_epoch`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_room_lost_by_the_store_is_written_again_before_anyone_joins() {
    with_configured_harness(&[], ROOMS, async |h| {
        expect_forbidden(h, "pat", join("staff")).await;
        let keys = Keys::new(h.prefix.as_str());
        for part in ["meta", "roles"] {
            h.redis(&["DEL", &keys.room("staff", part)]).await;
        }
        expect_forbidden(h, "pat", join("staff")).await;
        assert_eq!(expect_joined(h, "olga", "staff").await, Role::Owner);
        assert_eq!(expect_joined(h, "mod", "staff").await, Role::Moderator);
    })
    .await;
}

fn on_gateway(mut cmd: Command, gateway: &str) -> Command {
    let session = format!("{gateway}-{}", cmd.actor.id);
    cmd.conn = Some(ConnRef {
        gateway: gateway.into(),
        session,
    });
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_of_a_gateway_that_stopped_renewing_is_dropped() {
    with_harness(&["room.hall.member"], async |h| {
        let alive = |gw: &str| Keys::new(h.prefix.as_str()).gateway_alive(gw);
        let (alive_a, alive_b) = (alive("gw-a"), alive("gw-b"));
        h.redis(&["SET", &alive_a, "boot-1", "EX", "60"]).await;
        h.redis(&["SET", &alive_b, "boot-1", "EX", "60"]).await;
        for (user, gw) in [("alice", "gw-a"), ("bob", "gw-b"), ("carol", "gw-b")] {
            let c = h
                .send(&on_gateway(Harness::command(user, None, join("hall")), gw))
                .await;
            let ServerBody::Joined(joined) = h.reply(&c).await.frame.body else {
                panic!()
            };
            assert!(joined.members.iter().any(|m| m.id == user));
            h.event("member").await;
        }
        // carol also has a session on gw-a: she stays when gw-b dies.
        let c = h
            .send(&on_gateway(
                Harness::command("carol", None, join("hall")),
                "gw-a",
            ))
            .await;
        h.reply(&c).await;

        h.redis(&["DEL", &alive_b]).await;
        let presence = CommandBody::Presence(RoomOnly {
            room: "hall".into(),
        });
        let c = h
            .send(&on_gateway(
                Harness::command("alice", None, presence),
                "gw-a",
            ))
            .await;
        let ServerBody::Presence(p) = h.reply(&c).await.frame.body else {
            panic!()
        };
        let ids: Vec<&str> = p.members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["alice", "carol"]);
        expect_left(h, "bob").await;
        let key = Keys::new(h.prefix.as_str()).presence("hall");
        assert_eq!(h.redis(&["HLEN", &key]).await, redis::Value::Int(2));

        // gw-a crashes and comes back under the same id with a fresh key value: the
        // entries of its former life are ghosts, gone at the next read.
        h.redis(&["SET", &alive_a, "boot-2", "EX", "60"]).await;
        let c = h
            .send(&on_gateway(
                Harness::command("dave", None, join("hall")),
                "gw-a",
            ))
            .await;
        let ServerBody::Joined(joined) = h.reply(&c).await.frame.body else {
            panic!()
        };
        let ids: Vec<&str> = joined.members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["dave"]);
        assert_eq!(h.redis(&["HLEN", &key]).await, redis::Value::Int(1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_without_ref_are_deduplicated_on_their_message_id_and_dm_typing_reaches_users() {
    with_harness(&["user.carol.typing"], async |h| {
        expect_joined(h, "dave", "den").await;
        let cmd = Harness::command("dave", None, send("den", "once"));
        let mut acks = Vec::new();
        for _ in 0..2 {
            let c = h.send_with_id(&cmd, "mid-1").await;
            let ServerBody::Ack(ack) = h.reply(&c).await.frame.body else {
                panic!()
            };
            acks.push(ack);
        }
        assert_eq!(acks[0], acks[1]);
        let c = h.send_with_id(&cmd, "mid-2").await;
        let ServerBody::Ack(ack) = h.reply(&c).await.frame.body else {
            panic!()
        };
        assert_eq!(ack.seq, Some(2));

        let typing = CommandBody::Typing(RoomOnly {
            room: "dm:carol:dave".into(),
        });
        h.send(&Harness::command("dave", None, typing)).await;
        let (key, _) = h.event("typing").await;
        assert_eq!(key, "user.carol.typing");
    })
    .await;
}

/// Sends `body` as the global admin `user` (a token with `roles: ["admin"]`) and returns
/// the answer's body.
async fn ask_as_admin(h: &mut Harness, user: &str, body: CommandBody) -> ServerBody {
    static REFS: AtomicU64 = AtomicU64::new(0);
    let reference = format!("admin-r{}", REFS.fetch_add(1, Ordering::Relaxed));
    let mut command = Harness::command(user, Some(&reference), body);
    command.actor.roles = vec!["admin".into()];
    let c = h.send(&command).await;
    h.reply(&c).await.frame.body
}

fn configure(room: &str, settings: RoomSettings) -> CommandBody {
    CommandBody::Moderate(Moderate {
        room: room.into(),
        action: ModAction::Configure,
        user: None,
        msg_id: None,
        role: None,
        duration_s: None,
        reason: None,
        settings: Some(settings),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_and_admins_change_a_rooms_settings_and_every_change_is_audited() {
    with_harness(&["room.cfg.moderation"], async |h| {
        expect_joined(h, "alice", "cfg").await;
        expect_joined(h, "bob", "cfg").await;
        let announce = RoomSettings {
            announce: Some(true),
            ..RoomSettings::default()
        };
        expect_forbidden(h, "bob", configure("cfg", announce.clone())).await;
        expect_ack(h, "alice", configure("cfg", announce.clone())).await;
        let (_, event) = h.event("moderation").await;
        let EventBody::Moderation(told) = event.body else {
            unreachable!()
        };
        assert_eq!(
            (told.action, told.settings, told.by.id.as_str()),
            (ModAction::Configure, Some(announce), "alice")
        );
        expect_forbidden(h, "bob", send("cfg", "may I?")).await;

        // A global admin holds no role in the room and may all the same.
        let private = RoomSettings {
            visibility: Some(Visibility::Private),
            history_limit: Some(2),
            ..RoomSettings::default()
        };
        match ask_as_admin(h, "root", configure("cfg", private)).await {
            ServerBody::Ack(_) => {}
            other => panic!("root: expected an ack, got {other:?}"),
        }
        expect_forbidden(h, "carol", join("cfg")).await;
        for i in 0..4 {
            expect_ack(h, "alice", send("cfg", &format!("m{i}"))).await;
        }
        let history = Keys::new(h.prefix.as_str()).history("cfg");
        assert_eq!(h.redis(&["ZCARD", &history]).await, redis::Value::Int(2));

        // Nothing to change, or a room that keeps nothing, is a bad request.
        let nothing = RoomSettings::default();
        expect_code(h, "alice", configure("cfg", nothing), ErrorCode::BadRequest).await;
        let none_kept = RoomSettings {
            history_limit: Some(0),
            ..RoomSettings::default()
        };
        expect_code(
            h,
            "alice",
            configure("cfg", none_kept),
            ErrorCode::BadRequest,
        )
        .await;

        // An admin reads a room's history without joining it (and without a role);
        // anyone else still has to join first.
        let page = CommandBody::History(History {
            room: "cfg".into(),
            before: None,
            limit: None,
        });
        match ask_as_admin(h, "root", page.clone()).await {
            ServerBody::History(p) => assert_eq!(p.messages.len(), 2, "{p:?}"),
            other => panic!("root: expected history, got {other:?}"),
        }
        expect_code(h, "carol", page, ErrorCode::NotJoined).await;

        // The audit list, newest first: who changed what.
        let audit = Keys::new(h.prefix.as_str()).audit();
        let redis::Value::Array(entries) = h.redis(&["LRANGE", &audit, "0", "-1"]).await else {
            panic!("the audit list is a list")
        };
        let entries: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| match e {
                redis::Value::BulkString(b) => serde_json::from_slice(b).expect("JSON entry"),
                other => panic!("{other:?}"),
            })
            .collect();
        let who: Vec<(&str, bool, &str)> = entries
            .iter()
            .map(|e| {
                (
                    e["actor"]["id"].as_str().unwrap_or(""),
                    e["actor"]["admin"] == true,
                    e["action"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            who,
            [("root", true, "configure"), ("alice", false, "configure")]
        );
        assert_eq!(entries[0]["settings"]["visibility"], "private");
    })
    .await;
}
