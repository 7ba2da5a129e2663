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
use proto::amqp::{gateway_key, room_binding, room_key, shard_key, Names};
use proto::ids::shard_of;
use serde_json::{json, Value};
use warren_tests::accounts::{bot_rooms_grant, Account, Permissions};
use warren_tests::bots::{
    bot_account, echo_bot_script, modbot_binary, next_json, venv_python, AmqpAs, BotProcess,
    Published,
};
use warren_tests::broker::{bindings_to, AMQP_URL};
use warren_tests::client::{message_of, Client};
use warren_tests::crowd::members;
use warren_tests::{eventually, is_message_with_text, Stack, StackOptions};

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

/// Waits until bot `name`'s events queue is bound to the stack's events exchange for the
/// messages of `room`.
async fn wait_bound(stack: &Stack, name: &str, room: &str, bot: &mut BotProcess) {
    let queue = stack.names().bot_queue(name, "events");
    let key = room_key(room, "message");
    let (queue, key) = (queue.as_str(), key.as_str());
    let events = stack.names().events_exchange();
    eventually(&format!("{queue} bound to {key}"), BOT_READY, || {
        let alive = bot.alive();
        let events = events.clone();
        async move {
            if !alive {
                panic!("the bot exited before it bound its queue");
            }
            let bindings = bindings_to(queue).await.map_err(|e| format!("{e:#}"))?;
            if bindings
                .iter()
                .any(|b| b.source_name == events && b.routing_key == key)
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

// ---- trust is by AMQP account -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_account_acts_as_itself_whatever_actor_it_claims() {
    let stack = Stack::start(StackOptions::new(2, 1)).await;
    let bot = bot_account(&Permissions::bot(stack.prefix(), "forger")).await;
    let room = "forge";
    let [mut alice, mut bob] = members(&stack, room, [(0, "alice"), (1, "bob")]).await;

    let replies_queue = format!("{}.bot.forger.replies", stack.prefix());
    let (mut amqp, mut replies) = AmqpAs::with_replies(&bot.url(), &replies_queue).await;
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
            .recv_until(is_message_with_text("I am alice, honest"), FRAME_WAIT)
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

// ---- the accounts' permissions, for real --------------------------------------------

/// `Err` carrying the broker's refusal, for what a publish came to.
fn published(p: Published) -> Result<(), String> {
    match p {
        Published::Refused(e) => Err(e),
        Published::Routed | Published::Returned => Ok(()),
        Published::Nacked => Err("nacked".into()),
    }
}

#[track_caller]
fn refused(what: &str, r: Result<(), String>) {
    match r {
        Err(e) => assert!(e.contains("ACCESS_REFUSED"), "{what}: {e}"),
        Ok(()) => panic!("{what}: allowed"),
    }
}

#[track_caller]
fn allowed(what: &str, r: Result<(), String>) {
    if let Err(e) = r {
        panic!("{what}: {e}");
    }
}

/// A dispatcher, a gateway and two bots each run under an account with the permissions
/// the deployment gives that role (tests/src/accounts.rs, the same patterns as
/// scripts/ensure-services.sh and deploy/rabbitmq/definitions.json): the services work,
/// a room message, a dm and a bot's room binding go through, and every act outside a
/// role is refused by RabbitMQ itself. Above all a bot reads only the routing keys it
/// was granted: no `#`, no wildcard over rooms (which would take in dm rooms), no dm
/// room, no `user.*`, no `gw.*`, no other bot's queue, no command queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_account_has_only_the_permissions_its_role_needs() {
    let gateway_login = Account::fresh_login("gw");
    // The dispatcher's URL is a setting of the whole stack, known before its prefix is:
    // its account starts with nothing and gets its role's permissions once it is.
    let dispatcher = Account::create(Account::fresh_login("disp"), &Permissions::none()).await;
    let dispatcher_url = dispatcher.url();
    let mut stack = Stack::start(
        StackOptions::new(0, 0)
            .env("WARREN__AMQP__GATEWAY_ACCOUNTS", &gateway_login)
            .env("WARREN__AMQP__URL", &dispatcher_url),
    )
    .await;
    let prefix = stack.prefix().to_owned();
    dispatcher.grant(&Permissions::dispatcher(&prefix)).await;
    stack.start_dispatcher().await;
    let gateway = Account::create(gateway_login, &Permissions::gateway(&prefix)).await;
    let room = "lp";
    let bot = bot_account(&Permissions::bot_granted(
        &prefix,
        "probe",
        &bot_rooms_grant(&[room]),
    ))
    .await;
    let dev_bot = bot_account(&Permissions::bot(&prefix, "dev")).await;

    // A whole gateway runs under its account, after the dispatcher declared the topology:
    // its own queue, its bindings (a room's, its own gw key), commands.
    let url = gateway.url();
    stack
        .start_gateway_with(&[("WARREN__AMQP__URL", url.as_str())])
        .await;
    let names = stack.names().clone();
    let gw_queue = stack.gateway_queue(0);
    let gw_id = stack.gateway_id(0).to_owned();
    let mut alice = stack.connect(0, "alice").await;
    let mut bob = stack.connect(0, "bob").await;
    alice.join(room).await;

    // The bot granted the room binds its messages (and nothing else: below).
    let mut as_bot = AmqpAs::connect(&bot.url()).await.unwrap();
    let bot_queue = Names::new(&prefix).bot_queue("probe", "events");
    // The queues an account other than the dispatcher's must not consume: the first and
    // last command shards, the dead letters, and `other`'s own queue.
    let not_to_consume = |other: &String| {
        let last = names.commands_queue(stack.shards() - 1);
        [names.commands_queue(0), last, names.dead(), other.clone()]
    };
    allowed(
        "a bot declares its own queue",
        as_bot.try_declare_queue(&bot_queue).await,
    );
    let granted_key = room_key(room, "message");
    allowed(
        "a bot binds a granted key",
        as_bot
            .try_bind(&bot_queue, &names.events_exchange(), &granted_key)
            .await,
    );

    let acked = alice.send_acked(room, "under least privilege").await;
    let event = alice
        .recv_until(warren_tests::is_message_with_id(&acked.id), FRAME_WAIT)
        .await;
    assert_eq!(
        event["from"]["id"], "alice",
        "the gateway speaks for alice: {event}"
    );
    assert_eq!(event["from"]["bot"], false, "{event}");
    // A dm: user events, which reach the gateway through its gw key in the CC header.
    alice
        .send_frame(json!({"type": "dm", "to": "bob", "text": "psst", "ref": "lp-dm"}))
        .await;
    let answer = alice.answer("lp-dm").await;
    assert_eq!(answer["type"], "ack", "{answer}");
    let dm = bob
        .recv_until(is_message_with_text("psst"), FRAME_WAIT)
        .await;
    assert_eq!(dm["from"]["id"], "alice", "{dm}");
    let dm_room = dm["room"].as_str().expect("the dm's room").to_owned();
    // The bot got the room's message through its granted binding, and nothing else.
    let got = as_bot
        .get_n(&bot_queue, 1, FRAME_WAIT)
        .await
        .unwrap_or_else(|e| panic!("the bot's granted binding: {e:#}"));
    assert_eq!(got[0].delivery.routing_key.as_str(), granted_key);

    // ---- the bots ----
    let dm_key = proto::amqp::room_key(&dm_room, "message");
    let forbidden_keys = [
        "#".to_owned(),
        "room.#".to_owned(),
        "room.*.message".to_owned(),
        "*.*.*".to_owned(),
        "user.#".to_owned(),
        "user.alice.message".to_owned(),
        "user.*.message".to_owned(),
        dm_key.clone(),
        room_binding(&dm_room),
        gateway_key(&gw_id),
        "gw.*".to_owned(),
        room_binding(room),
        room_key(room, "typing"),
    ];
    let other_room_key = "room.elsewhere.message".to_owned();
    for key in forbidden_keys.iter().chain([&other_room_key]) {
        refused(
            &format!("the room-granted bot binds {key}"),
            as_bot
                .try_bind(&bot_queue, &names.events_exchange(), key)
                .await,
        );
    }
    let as_dev_bot = AmqpAs::connect(&dev_bot.url()).await.unwrap();
    let dev_queue = Names::new(&prefix).bot_queue("dev", "events");
    allowed(
        "the default grant declares its queue",
        as_dev_bot.try_declare_queue(&dev_queue).await,
    );
    for key in [&granted_key, &other_room_key] {
        allowed(
            &format!("the default grant binds {key}"),
            as_dev_bot
                .try_bind(&dev_queue, &names.events_exchange(), key)
                .await,
        );
    }
    for key in &forbidden_keys {
        refused(
            &format!("the default grant binds {key}"),
            as_dev_bot
                .try_bind(&dev_queue, &names.events_exchange(), key)
                .await,
        );
    }
    // Another bot's queue: not to read, bind, delete or declare.
    for (what, r) in [
        ("consumes", as_bot.try_consume(&dev_queue).await),
        (
            "binds",
            as_bot
                .try_bind(&dev_queue, &names.events_exchange(), &granted_key)
                .await,
        ),
        ("deletes", as_bot.try_delete_queue(&dev_queue).await),
        ("declares", as_bot.try_declare_queue(&dev_queue).await),
    ] {
        refused(&format!("a bot {what} another bot's queue"), r);
    }
    for queue in not_to_consume(&gw_queue) {
        let consumed = as_bot.try_consume(&queue).await;
        refused(&format!("a bot consumes {queue}"), consumed);
    }
    let leave = command(
        "leave",
        "elsewhere",
        "probe-leave",
        json!({"id": "x", "name": "x"}),
        json!({}),
    );
    let sent = as_bot
        .publish(
            &names.commands_exchange(),
            &route(&stack, "elsewhere"),
            &leave,
            Some(&bot.login),
            None,
        )
        .await;
    assert!(
        matches!(sent, Published::Routed),
        "a bot publishes a command: {sent:?}"
    );
    for (exchange, key) in [
        (names.events_exchange(), granted_key.clone()),
        (String::new(), gw_queue.clone()),
    ] {
        refused(
            &format!("a bot publishes to {exchange:?} with {key}"),
            published(as_bot.publish(&exchange, &key, b"{}", None, None).await),
        );
    }
    refused(
        "a bot deletes the events exchange",
        as_bot.try_delete_exchange(&names.events_exchange()).await,
    );
    as_dev_bot.close().await;
    as_bot.close().await;

    // ---- the gateway ----
    let mut as_gateway = AmqpAs::connect(&gateway.url()).await.unwrap();
    for queue in not_to_consume(&bot_queue) {
        let consumed = as_gateway.try_consume(&queue).await;
        refused(&format!("the gateway consumes {queue}"), consumed);
    }
    for exchange in [
        names.events_exchange(),
        names.commands_exchange(),
        names.dead(),
    ] {
        refused(
            &format!("the gateway deletes the exchange {exchange}"),
            as_gateway.try_delete_exchange(&exchange).await,
        );
    }
    for queue in [names.commands_queue(0), names.dead()] {
        refused(
            &format!("the gateway deletes the queue {queue}"),
            as_gateway.try_delete_queue(&queue).await,
        );
    }
    for key in ["#", "user.#", "user.alice.message", "*.*.*", "room.*.#"] {
        refused(
            &format!("the gateway binds {key}"),
            as_gateway
                .try_bind(&gw_queue, &names.events_exchange(), key)
                .await,
        );
    }
    for key in [room_binding(room), gateway_key(&gw_id)] {
        allowed(
            &format!("the gateway binds {key}"),
            as_gateway
                .try_bind(&gw_queue, &names.events_exchange(), &key)
                .await,
        );
    }
    refused(
        "the gateway publishes an event",
        published(
            as_gateway
                .publish(&names.events_exchange(), &granted_key, b"{}", None, None)
                .await,
        ),
    );
    refused(
        "the gateway publishes to the default exchange",
        published(as_gateway.publish("", &gw_queue, b"{}", None, None).await),
    );
    refused(
        "the gateway declares another queue",
        as_gateway.try_declare_queue(&bot_queue).await,
    );
    refused(
        "the gateway declares a shared exchange's queue",
        as_gateway.try_declare_queue(&names.commands_queue(0)).await,
    );
    as_gateway.close().await;

    // ---- the dispatcher ----
    let mut as_dispatcher = AmqpAs::connect(&dispatcher.url()).await.unwrap();
    // A probe goes to the commands exchange (this key reaches no queue: it comes back).
    allowed(
        "the dispatcher publishes to the commands exchange",
        published(
            as_dispatcher
                .publish(&names.commands_exchange(), "shard.none", b"", None, None)
                .await,
        ),
    );
    for queue in [gw_queue.clone(), bot_queue.clone()] {
        refused(
            &format!("the dispatcher consumes {queue}"),
            as_dispatcher.try_consume(&queue).await,
        );
    }
    refused(
        "the dispatcher binds a queue to the events exchange",
        as_dispatcher
            .try_bind(&names.dead(), &names.events_exchange(), "#")
            .await,
    );
    refused(
        "the dispatcher declares a gateway's queue",
        as_dispatcher.try_declare_queue(&gw_queue).await,
    );
    as_dispatcher.close().await;
}

// ---- dead letters -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_commands_land_in_the_dead_queue_with_a_reason() {
    let stack = Stack::start(StackOptions::new(0, 1)).await;
    let bot = bot_account(&Permissions::bot(stack.prefix(), "dl")).await;
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

// ---- the bots -----------------------------------------------------------------------

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
    let room = "guarded";
    // Granted its room only: what a production bot account gets.
    let bot = bot_account(&Permissions::bot_granted(
        &prefix,
        name,
        &bot_rooms_grant(&[room]),
    ))
    .await;
    let mut alice = stack.connect(0, "alice").await;
    alice.join(room).await;
    grant_moderator(&mut alice, room, &bot.login).await;

    let env: Vec<(String, String)> = [
        ("WARREN_BOT__AMQP_URL", bot.url()),
        ("WARREN_BOT__PREFIX", prefix.clone()),
        ("WARREN_BOT__SHARDS", stack.shards().to_string()),
        ("WARREN_BOT__NAME", name.to_owned()),
        ("WARREN_BOT__ROOMS", room.to_owned()),
        ("WARREN_BOT__WORDS", "heck,darn".to_owned()),
        ("WARREN_BOT__STRIKES", "2".to_owned()),
        ("WARREN_BOT__MUTE_S", "300".to_owned()),
        ("WARREN_BOT__LOG_LEVEL", "warren_bots=debug,info".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut modbot = BotProcess::start(&prefix, name, &modbot_binary(), &[], &env);
    wait_bound(&stack, name, room, &mut modbot).await;

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
    let room = "pings";
    // The default grant: any room but dm rooms (the local warren-bot account's).
    let bot = bot_account(&Permissions::bot(&prefix, name)).await;
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
        "--rooms".into(),
        room.into(),
    ];
    let mut echo = BotProcess::start(&prefix, name, &python, &args, &[]);
    wait_bound(&stack, name, room, &mut echo).await;

    let [mut alice, mut bob] = members(&stack, room, [(0, "alice"), (1, "bob")]).await;
    alice.send_acked(room, "!ping").await;
    for member in [&mut alice, &mut bob] {
        let pong = member
            .recv_until(is_message_with_text("pong"), FRAME_WAIT)
            .await;
        let m = message_of(&pong).expect("a message");
        assert_eq!(m.from.id, bot.login, "{}: {pong}", member.label);
        assert!(m.from.bot, "{}: {pong}", member.label);
        assert_eq!(m.room, room);
    }
    assert!(echo.alive(), "the echo bot is still running");
}
