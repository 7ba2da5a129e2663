//! Warren's RabbitMQ side as bots see it: trust is by AMQP account, accounts have the
//! least privilege their role needs, bad commands are dead-lettered with a reason, and
//! the two example bots (the moderation bot, the Python echo bot) work as processes of
//! their own. Each test makes its own RabbitMQ accounts, scoped to its stack's prefix,
//! and removes them afterwards.
//!
//! Run `cargo build --workspace --bins` and `scripts/python-env.sh` first.

use std::time::Duration;

use lapin::message::BasicGetMessage;
use lapin::types::AMQPValue;
use proto::amqp::shard_key;
use proto::ids::shard_of;
use serde_json::{json, Value};
use warren_tests::accounts::{Account, Permissions};
use warren_tests::bots::{
    echo_bot_script, modbot_binary, next_json, venv_python, AmqpAs, BotProcess, Published,
};
use warren_tests::broker::{bindings_to, AMQP_URL};
use warren_tests::client::{message_of, Client};
use warren_tests::{eventually, Stack, StackOptions};

const FRAME_WAIT: Duration = Duration::from_secs(15);
/// How long a bot process may take to bind its queue.
const BOT_READY: Duration = Duration::from_secs(30);

/// A command body as a bot (or anyone) would publish it.
fn command(kind: &str, room: &str, reference: &str, actor: Value, extra: Value) -> Vec<u8> {
    let mut body = json!({"v": 1, "kind": kind, "room": room, "ref": reference, "actor": actor});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    serde_json::to_vec(&body).expect("JSON encodes")
}

fn route(stack: &Stack, room: &str) -> String {
    shard_key(shard_of(room, stack.shards()))
}

/// Waits until `queue` is bound to the stack's events exchange with `room.#`.
async fn wait_bound(stack: &Stack, queue: &str, bot: &mut BotProcess) {
    let events = stack.names().events_exchange();
    eventually(&format!("{queue} bound to room.#"), BOT_READY, || {
        let alive = bot.alive();
        let events = events.clone();
        async move {
            if !alive {
                panic!("the bot exited before it bound its queue");
            }
            let bindings = bindings_to(queue).await.map_err(|e| format!("{e:#}"))?;
            if bindings
                .iter()
                .any(|b| b.source_name == events && b.routing_key == "room.#")
            {
                Ok(())
            } else {
                Err(format!("bindings: {bindings:?}"))
            }
        }
    })
    .await;
}

fn header(message: &BasicGetMessage, name: &str) -> Option<String> {
    let headers = message.delivery.properties.headers().as_ref()?;
    headers
        .inner()
        .iter()
        .find(|(k, _)| k.as_str() == name)
        .and_then(|(_, v)| match v {
            AMQPValue::LongString(s) => Some(s.to_string()),
            AMQPValue::ShortString(s) => Some(s.to_string()),
            _ => None,
        })
}

fn is_moderation(action: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == "moderation" && v["action"] == action
}

// ---- acceptance 8: trust is by AMQP account ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_account_acts_as_itself_whatever_actor_it_claims() {
    let stack = Stack::start(StackOptions::new(2, 1)).await;
    let bot = Account::create(
        Account::fresh_login("bot"),
        &Permissions::bot(stack.prefix(), "forger"),
    )
    .await;
    let room = "forge";
    let mut alice = stack.connect(0, "alice").await;
    let mut bob = stack.connect(1, "bob").await;
    alice.join(room).await;
    bob.join(room).await;

    let mut amqp = AmqpAs::connect(&bot.url())
        .await
        .expect("connect as the bot");
    let replies_queue = format!("{}.bot.forger.replies", stack.prefix());
    let mut replies = amqp
        .exclusive_queue(&replies_queue)
        .await
        .expect("the bot may declare its own queue");
    // Claims to be alice, an admin, on her very connection.
    let forged = json!({"id": "alice", "name": "Alice", "roles": ["admin"], "bot": false});
    let conn = json!({"conn": {"gateway": stack.gateway_id(0), "session": alice.welcome.session}});
    let commands = stack.names().commands_exchange();
    let login = bot.login.as_str();

    for (kind, reference, extra) in [
        ("join", "forged-join", conn.clone()),
        ("send", "forged-send", {
            let mut e = conn.clone();
            e["text"] = json!("I am alice, honest");
            e
        }),
    ] {
        let body = command(kind, room, reference, forged.clone(), extra);
        let published = amqp
            .publish(
                &commands,
                &route(&stack, room),
                &body,
                Some(login),
                Some(&replies_queue),
            )
            .await;
        assert!(
            matches!(published, Published::Routed),
            "{kind}: {published:?}"
        );
        let reply = next_json(&mut replies, FRAME_WAIT)
            .await
            .unwrap_or_else(|e| panic!("{kind}: no answer on the bot's reply queue: {e:#}"));
        assert_eq!(reply["frame"]["ref"], reference, "{reply}");
        let expected = if kind == "join" { "joined" } else { "ack" };
        assert_eq!(reply["frame"]["type"], expected, "{kind} answered {reply}");
        assert_eq!(
            reply["session"], "",
            "the answer is for no WebSocket session: {reply}"
        );
    }

    for member in [&mut alice, &mut bob] {
        let event = member
            .recv_until(
                |v| v["type"] == "message" && v["text"] == "I am alice, honest",
                FRAME_WAIT,
            )
            .await;
        let m = message_of(&event).expect("a message");
        assert_eq!(m.from.id, login, "{}: {event}", member.label);
        assert_eq!(m.from.name, login, "{}: {event}", member.label);
        assert!(m.from.bot, "{}: {event}", member.label);
    }
    // Nothing was answered to alice's connection on the forger's behalf.
    let seen = alice.drain_for(Duration::from_millis(500)).await;
    assert!(
        !seen
            .iter()
            .any(|v| v["ref"] == "forged-join" || v["ref"] == "forged-send"),
        "alice's connection got an answer to the forged commands: {seen:?}"
    );
    let history = alice.history(room, None, None).await;
    let last = history.messages.last().expect("the message is stored");
    assert_eq!((last.from.id.as_str(), last.from.bot), (login, true));

    // The one property the dispatcher trusts cannot be forged either: RabbitMQ refuses a
    // `user_id` that is not the connection's login.
    for claimed in ["alice", "guest"] {
        let body = command(
            "send",
            room,
            "forged-user-id",
            forged.clone(),
            json!({"text": "x"}),
        );
        let published = amqp
            .publish(&commands, &route(&stack, room), &body, Some(claimed), None)
            .await;
        match published {
            Published::Refused(e) => assert!(e.contains("PRECONDITION_FAILED"), "{e}"),
            other => panic!("user_id {claimed:?} from {login}: {other:?}"),
        }
    }
    amqp.close().await;
}

// ---- the accounts' permissions, for real ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_and_bot_accounts_have_only_the_permissions_they_need() {
    let gateway_login = Account::fresh_login("gw");
    let mut stack =
        Stack::start(StackOptions::new(0, 1).env("WARREN__AMQP__GATEWAY_ACCOUNTS", &gateway_login))
            .await;
    let prefix = stack.prefix().to_owned();
    let gateway = Account::create(gateway_login, &Permissions::gateway(&prefix)).await;
    let bot = Account::create(
        Account::fresh_login("bot"),
        &Permissions::bot(&prefix, "probe"),
    )
    .await;

    // A whole gateway runs under its account: topology, own queue, bindings, commands.
    let url = gateway.url();
    stack
        .start_gateway_with(&[("WARREN__AMQP__URL", url.as_str())])
        .await;
    let mut alice = stack.connect(0, "alice").await;
    alice.join("lp").await;
    let acked = alice.send_acked("lp", "under least privilege").await;
    let event = alice
        .recv_until(warren_tests::is_message_with_id(&acked.id), FRAME_WAIT)
        .await;
    assert_eq!(
        event["from"]["id"], "alice",
        "the gateway speaks for alice: {event}"
    );
    assert_eq!(event["from"]["bot"], false, "{event}");

    let names = stack.names().clone();
    let refused = |what: &str, r: Result<(), String>| match r {
        Err(e) => assert!(e.contains("ACCESS_REFUSED"), "{what}: {e}"),
        Ok(()) => panic!("{what}: allowed"),
    };
    let published = |p: Published| match p {
        Published::Refused(e) => Err(e),
        Published::Routed | Published::Returned => Ok(()),
        Published::Nacked => Err("nacked".into()),
    };

    let mut as_gateway = AmqpAs::connect(&gateway.url()).await.unwrap();
    refused(
        "gateway publishes an event",
        published(
            as_gateway
                .publish(
                    &names.events_exchange(),
                    "room.lp.message",
                    b"{}",
                    None,
                    None,
                )
                .await,
        ),
    );
    refused(
        "gateway publishes to the default exchange",
        published(
            as_gateway
                .publish("", &stack.gateway_queue(0), b"{}", None, None)
                .await,
        ),
    );
    refused(
        "gateway declares another queue",
        as_gateway
            .try_declare_queue(&format!("{prefix}.bot.probe.events"))
            .await,
    );
    as_gateway.close().await;

    let mut as_bot = AmqpAs::connect(&bot.url()).await.unwrap();
    as_bot
        .try_declare_queue(&format!("{prefix}.bot.probe.events"))
        .await
        .expect("a bot declares its own queue");
    let leave = command(
        "leave",
        "lp",
        "probe-leave",
        json!({"id": "x", "name": "x"}),
        json!({}),
    );
    let sent = as_bot
        .publish(
            &names.commands_exchange(),
            &route(&stack, "lp"),
            &leave,
            Some(&bot.login),
            None,
        )
        .await;
    assert!(
        matches!(sent, Published::Routed),
        "a bot publishes a command: {sent:?}"
    );
    refused(
        "bot declares another bot's queue",
        as_bot
            .try_declare_queue(&format!("{prefix}.bot.other.events"))
            .await,
    );
    for queue in [
        names.dead(),
        names.commands_queue(0),
        stack.gateway_queue(0),
    ] {
        refused(
            &format!("bot reads {queue}"),
            as_bot.try_get(&queue).await.map(|_| ()),
        );
    }
    refused(
        "bot publishes an event",
        published(
            as_bot
                .publish(
                    &names.events_exchange(),
                    "room.lp.message",
                    b"{}",
                    None,
                    None,
                )
                .await,
        ),
    );
    as_bot.close().await;
}

// ---- acceptance 10: dead letters -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_commands_land_in_the_dead_queue_with_a_reason() {
    let stack = Stack::start(StackOptions::new(0, 1)).await;
    let bot = Account::create(
        Account::fresh_login("bot"),
        &Permissions::bot(stack.prefix(), "dl"),
    )
    .await;
    let names = stack.names().clone();
    let actor = json!({"id": "x", "name": "X"});
    let not_json: &[u8] = b"this is { not json";
    let unknown_kind = command("explode", "r", "dl-1", actor.clone(), json!({}));
    let no_user_id = command("leave", "r", "dl-2", actor, json!({}));

    let mut as_bot = AmqpAs::connect(&bot.url()).await.unwrap();
    for (key, body) in [("shard.0", not_json), ("shard.1", unknown_kind.as_slice())] {
        let sent = as_bot
            .publish(
                &names.commands_exchange(),
                key,
                body,
                Some(&bot.login),
                None,
            )
            .await;
        assert!(matches!(sent, Published::Routed), "{sent:?}");
    }
    as_bot.close().await;
    let mut admin = AmqpAs::connect(AMQP_URL).await.unwrap();
    let sent = admin
        .publish(
            &names.commands_exchange(),
            "shard.2",
            &no_user_id,
            None,
            None,
        )
        .await;
    assert!(matches!(sent, Published::Routed), "{sent:?}");

    let dead = admin
        .get_n(&names.dead(), 3, FRAME_WAIT)
        .await
        .unwrap_or_else(|e| panic!("dead letters: {e:#}"));
    let find = |body: &[u8]| {
        dead.iter()
            .find(|m| m.delivery.data == body)
            .unwrap_or_else(|| {
                panic!(
                    "{:?} is not among the dead letters",
                    String::from_utf8_lossy(body)
                )
            })
    };
    let expectations: [(&[u8], &str, Option<&str>); 3] = [
        (not_json, "malformed", Some(&bot.login)),
        (&unknown_kind, "explode", Some(&bot.login)),
        (&no_user_id, "user_id", None),
    ];
    for (body, reason_mentions, user) in expectations {
        let message = find(body);
        let reason = header(message, "x-warren-reason").unwrap_or_else(|| {
            panic!(
                "no x-warren-reason on {:?}: {:?}",
                String::from_utf8_lossy(body),
                message.delivery.properties
            )
        });
        assert!(reason.contains(reason_mentions), "reason: {reason}");
        assert_eq!(header(message, "x-warren-user-id").as_deref(), user);
    }
    admin.close().await;
}

// ---- acceptance 9: the bots ----------------------------------------------------------

/// Grants `user` moderator in `room` as `owner`, who must own it.
async fn grant_moderator(owner: &mut Client, room: &str, user: &str) {
    let reference = owner.new_ref("grant");
    owner
        .send_frame(json!({"type": "moderate", "room": room, "action": "grant",
                           "user": user, "role": "moderator", "ref": reference}))
        .await;
    let answer = owner.answer(&reference).await;
    assert_eq!(
        answer["type"], "ack",
        "the owner granting the bot moderator answered {answer} \
         (this needs the dispatcher's `moderate`)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_bot_deletes_listed_words_and_mutes_repeat_offenders() {
    let stack = Stack::start(StackOptions::new(2, 1)).await;
    let prefix = stack.prefix().to_owned();
    let name = "modbot";
    let bot = Account::create(
        Account::fresh_login("bot"),
        &Permissions::bot(&prefix, name),
    )
    .await;
    let room = "guarded";
    let mut alice = stack.connect(0, "alice").await;
    alice.join(room).await;
    grant_moderator(&mut alice, room, &bot.login).await;

    let env: Vec<(String, String)> = [
        ("WARREN_BOT__AMQP_URL", bot.url()),
        ("WARREN_BOT__PREFIX", prefix.clone()),
        ("WARREN_BOT__SHARDS", stack.shards().to_string()),
        ("WARREN_BOT__NAME", name.to_owned()),
        ("WARREN_BOT__WORDS", "heck,darn".to_owned()),
        ("WARREN_BOT__STRIKES", "2".to_owned()),
        ("WARREN_BOT__MUTE_S", "300".to_owned()),
        ("WARREN_BOT__LOG_LEVEL", "warren_bots=debug,info".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut modbot = BotProcess::start(&prefix, name, &modbot_binary(), &[], &env);
    wait_bound(&stack, &format!("{prefix}.bot.{name}.events"), &mut modbot).await;

    let mut bob = stack.connect(1, "bob").await;
    bob.join(room).await;
    let clean = bob.send_acked(room, "heckle me, I dare you").await;
    let first = bob.send_acked(room, "what the HECK?").await;
    for member in [&mut alice, &mut bob] {
        let deleted = member
            .recv_until(
                |v| is_moderation("delete")(v) && v["msg_id"] == first.id,
                FRAME_WAIT,
            )
            .await;
        assert_eq!(deleted["by"]["id"], bot.login.as_str(), "{deleted}");
        assert_eq!(deleted["room"], room, "{deleted}");
    }
    let history = alice.full_history(room).await;
    assert!(
        history.iter().all(|m| m.id != first.id),
        "the deleted message is still in history"
    );
    assert!(
        history.iter().any(|m| m.id == clean.id),
        "a message without a listed word was deleted"
    );

    // The second strike: deleted, and bob is muted.
    let second = bob.send_acked(room, "darn it").await;
    for member in [&mut alice, &mut bob] {
        member
            .recv_until(
                |v| is_moderation("delete")(v) && v["msg_id"] == second.id,
                FRAME_WAIT,
            )
            .await;
        let muted = member
            .recv_until(
                |v| is_moderation("mute")(v) && v["user"]["id"] == "bob",
                FRAME_WAIT,
            )
            .await;
        assert_eq!(muted["by"]["id"], bot.login.as_str(), "{muted}");
        assert!(muted["until"].as_u64().is_some(), "a timed mute: {muted}");
    }
    bob.send(room, "may I speak?", "after-mute").await;
    let answer = bob.answer("after-mute").await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "muted", "{answer}");
    assert!(modbot.alive(), "the bot is still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_echo_bot_answers_ping_with_pong() {
    let python = venv_python();
    assert!(
        python.is_file(),
        "{} is missing: run scripts/python-env.sh first (scripts/test.sh does)",
        python.display()
    );
    let stack = Stack::start(StackOptions::new(2, 1)).await;
    let prefix = stack.prefix().to_owned();
    let name = "echo";
    let bot = Account::create(
        Account::fresh_login("bot"),
        &Permissions::bot(&prefix, name),
    )
    .await;
    let args: Vec<String> = vec![
        echo_bot_script().display().to_string(),
        "--amqp-url".into(),
        bot.url(),
        "--prefix".into(),
        prefix.clone(),
        "--shards".into(),
        stack.shards().to_string(),
        "--name".into(),
        name.into(),
    ];
    let mut echo = BotProcess::start(&prefix, name, &python, &args, &[]);
    wait_bound(&stack, &format!("{prefix}.bot.{name}.events"), &mut echo).await;

    let room = "pings";
    let mut alice = stack.connect(0, "alice").await;
    let mut bob = stack.connect(1, "bob").await;
    alice.join(room).await;
    bob.join(room).await;
    alice.send_acked(room, "!ping").await;
    for member in [&mut alice, &mut bob] {
        let pong = member
            .recv_until(
                |v| v["type"] == "message" && v["text"] == "pong",
                FRAME_WAIT,
            )
            .await;
        let m = message_of(&pong).expect("a message");
        assert_eq!(m.from.id, bot.login, "{}: {pong}", member.label);
        assert!(m.from.bot, "{}: {pong}", member.label);
        assert_eq!(m.room, room);
    }
    assert!(echo.alive(), "the echo bot is still running");
}
