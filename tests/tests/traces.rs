//! Traces across services: one message's W3C trace id, as the JSON logs show it, from
//! the sender's gateway (`receive`, `publish`) through the dispatcher (`dispatch`,
//! `store`) to another gateway's `deliver`; and a bot's command, which comes without a
//! `traceparent`, gets a trace of its own at the dispatcher that its event carries on.
//!
//! The stacks log JSON with `warren::trace=debug`, as docs/OPERATIONS.md ("Traces")
//! tells an operator to; the test reads the processes' log files.

use std::path::PathBuf;
use std::time::Duration;

use proto::amqp::shard_key;
use proto::ids::shard_of;
use serde_json::{json, Value};
use warren_tests::accounts::Permissions;
use warren_tests::bots::{bot_account, next_json, AmqpAs, Published};
use warren_tests::client::message_of;
use warren_tests::{eventually, Client, Stack, StackOptions};

const FRAME_WAIT: Duration = Duration::from_secs(15);
/// How long a line may take to reach its log file after the frame it follows.
const LOG_WAIT: Duration = Duration::from_secs(10);

fn traced_stack() -> StackOptions {
    StackOptions::new(2, 1)
        .env("WARREN__LOG__FORMAT", "json")
        .env("WARREN__LOG__LEVEL", "info,warren::trace=debug")
}

/// The log file of process `name` (`gw0`, `d0`, ...).
fn log_of(stack: &Stack, name: &str) -> PathBuf {
    let suffix = format!("-{name}.log");
    stack
        .logs()
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(&suffix))
        .unwrap_or_else(|| panic!("no log for {name} among {:?}", stack.logs()))
}

/// The trace lines (`warren::trace`) of a log file, as JSON. Every whole line the
/// service wrote must be JSON; the launcher's own lines and a line still being written
/// (no newline yet) are skipped.
fn trace_lines(path: &PathBuf) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    whole
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with("==== warren-stack"))
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", path.display()))
        })
        .filter(|v| v["target"] == "warren::trace")
        .collect()
}

/// Waits for a trace line named `stage` in `name`'s log whose fields `match`, and whose
/// span (when `in_span` names one of its fields and value) agrees; returns the line.
async fn line(stack: &Stack, name: &str, stage: &str, matches: impl Fn(&Value) -> bool) -> Value {
    line_in_span(stack, name, stage, matches, None).await
}

async fn line_in_span(
    stack: &Stack,
    name: &str,
    stage: &str,
    matches: impl Fn(&Value) -> bool,
    in_span: Option<(&str, &str)>,
) -> Value {
    let path = log_of(stack, name);
    eventually(&format!("a {stage} line in {name}'s log"), LOG_WAIT, || {
        let found = trace_lines(&path).into_iter().find(|v| {
            v["fields"]["message"] == stage
                && matches(&v["fields"])
                && in_span.is_none_or(|(field, value)| v["span"][field] == value)
        });
        let missing = format!("none yet in {}", path.display());
        async move { found.ok_or(missing) }
    })
    .await
}

/// A 32-digit lower-case hex trace id that is not all zeros.
fn assert_trace_id(id: &Value, what: &str) -> String {
    let id = id.as_str().unwrap_or_else(|| panic!("{what}: no trace_id"));
    assert!(
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && id.bytes().any(|b| b != b'0'),
        "{what}: {id:?} is not a W3C trace id"
    );
    id.to_owned()
}

async fn joined(stack: &Stack, gateway: usize, user: &str, room: &str) -> Client {
    let mut client = stack.connect(gateway, user).await;
    client.join(room).await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_messages_trace_id_runs_from_gateway_through_dispatcher_to_another_gateway() {
    let stack = Stack::start(traced_stack()).await;
    let room = "traced";
    let mut alice = joined(&stack, 0, "alice", room).await;
    let mut bob = joined(&stack, 1, "bob", room).await;

    let reference = "trace-me";
    alice.send(room, "follow me", reference).await;
    let answer = alice.answer(reference).await;
    assert_eq!(answer["type"], "ack", "{answer}");
    let id = answer["id"].as_str().expect("ack id").to_owned();
    let seen = bob
        .recv_until(|v| message_of(v).is_some_and(|m| m.id == id), FRAME_WAIT)
        .await;
    assert_eq!(seen["text"], "follow me");

    // The sender's gateway: the frame's receive line names the trace.
    let session = alice.welcome.session.clone();
    let receive = line(&stack, "gw0", "receive", |f| {
        f["reference"] == reference && f["session"] == session.as_str()
    })
    .await;
    assert_eq!(receive["fields"]["kind"], "send", "{receive}");
    let trace = assert_trace_id(&receive["fields"]["trace_id"], "receive");
    let same = |f: &Value| f["trace_id"] == trace.as_str();

    let publish = line(&stack, "gw0", "publish", same).await;
    assert_eq!(publish["fields"]["accepted"], true, "{publish}");
    // The publish line is logged inside its span, which carries the trace too.
    assert_eq!(publish["span"]["name"], "publish", "{publish}");
    assert_eq!(publish["span"]["trace_id"], trace.as_str(), "{publish}");

    // The dispatcher continued the command's trace, and stored under it.
    let dispatch = line(&stack, "d0", "dispatch", same).await;
    assert_eq!(dispatch["fields"]["continued"], true, "{dispatch}");
    assert_eq!(dispatch["fields"]["outcome"], "ok", "{dispatch}");
    assert_eq!(dispatch["span"]["kind"], "send", "{dispatch}");
    assert_eq!(dispatch["span"]["room"], room, "{dispatch}");
    assert_eq!(
        dispatch["span"]["parent_id"], publish["fields"]["span_id"],
        "the dispatch span's parent is the gateway's publish span: {dispatch} {publish}"
    );
    let store = line(&stack, "d0", "store", same).await;
    assert_eq!(store["fields"]["stored"], true, "{store}");

    // The other gateway delivered the event under the same trace, once for its member.
    let deliver = line(&stack, "gw1", "deliver", |f| {
        same(f) && f["kind"] == "message"
    })
    .await;
    assert_eq!(deliver["fields"]["continued"], true, "{deliver}");
    assert_eq!(deliver["fields"]["handed"], 1, "{deliver}");
    assert_eq!(
        deliver["span"]["parent_id"], dispatch["fields"]["span_id"],
        "the deliver span's parent is the dispatch span: {deliver} {dispatch}"
    );

    // The next command is a trace of its own.
    alice.send_acked(room, "another").await;
    let next = line(&stack, "gw0", "receive", |f| {
        f["session"] == session.as_str() && f["kind"] == "send" && f["trace_id"] != trace.as_str()
    })
    .await;
    assert_trace_id(&next["fields"]["trace_id"], "second receive");

    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bots_command_without_traceparent_gets_a_trace_at_the_dispatcher() {
    let stack = Stack::start(traced_stack()).await;
    let room = "bot-traced";
    let mut bob = joined(&stack, 1, "bob", room).await;
    let bot = bot_account(&Permissions::bot(stack.prefix(), "tracer")).await;
    let replies = stack.names().bot_queue("tracer", "replies");
    let (mut amqp, mut answers) = AmqpAs::with_replies(&bot.url(), &replies).await;
    let commands = stack.names().commands_exchange();
    let route = shard_key(shard_of(room, stack.shards()));
    let actor = json!({"id": "ignored", "name": "ignored"});
    for (kind, extra) in [("join", json!({})), ("send", json!({"text": "beep"}))] {
        let mut body = json!({"v": 1, "kind": kind, "room": room, "ref": kind, "actor": actor});
        body.as_object_mut()
            .expect("an object")
            .extend(extra.as_object().expect("an object").clone());
        let body = serde_json::to_vec(&body).expect("JSON");
        // No traceparent header: what any bot written before traces existed sends.
        let published = amqp
            .publish(&commands, &route, &body, Some(&bot.login), Some(&replies))
            .await;
        assert!(matches!(published, Published::Routed), "{published:?}");
        let answer = next_json(&mut answers, FRAME_WAIT)
            .await
            .unwrap_or_else(|e| panic!("{kind}: no answer: {e:#}"));
        assert_ne!(answer["frame"]["type"], "error", "{kind}: {answer}");
    }
    let seen = bob
        .recv_until(
            |v| message_of(v).is_some_and(|m| m.text == "beep"),
            FRAME_WAIT,
        )
        .await;
    assert_eq!(seen["from"]["id"], bot.login.as_str(), "{seen}");

    let dispatch = line_in_span(
        &stack,
        "d0",
        "dispatch",
        |f| f["continued"] == false,
        Some(("kind", "send")),
    )
    .await;
    let trace = assert_trace_id(&dispatch["fields"]["trace_id"], "bot dispatch");
    let deliver = line(&stack, "gw1", "deliver", |f| {
        f["trace_id"] == trace.as_str() && f["kind"] == "message"
    })
    .await;
    assert_eq!(deliver["fields"]["continued"], true, "{deliver}");
    assert_eq!(deliver["fields"]["handed"], 1, "{deliver}");

    amqp.close().await;
    bob.close().await;
}
