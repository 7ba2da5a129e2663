//! `warren-admin`, the operators' CLI, run as a process against a real stack: it acts
//! through the dispatchers as a bot named in `dispatcher.admin_bots`, so its changes
//! reach clients exactly as a moderator's would (events, kicks, refusals), every one is
//! audited with its login, and the same CLI under a bot account not named there is
//! refused and changes nothing. Each test makes its own RabbitMQ accounts, scoped to
//! its stack's prefix, and removes them afterwards.
//!
//! Run `cargo build -p warren-admin` (or `cargo build --workspace --bins`) first.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use warren_tests::accounts::{Account, Permissions};
use warren_tests::crowd::members;
use warren_tests::{eventually, is_message_with_text, Stack, StackOptions};

const FRAME_WAIT: Duration = Duration::from_secs(15);
/// The longest one CLI run may take (it waits at most its own `admin.timeout_ms` per
/// answer; this only keeps a hung process from hanging the test).
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// The name of the CLI's queues, `<prefix>.bot.admin.*`.
const QUEUES_NAME: &str = proto::accounts::ADMIN_CLI_QUEUES;

/// A stack whose dispatchers treat `login` as an admin bot.
async fn stack_with_admin(gateways: usize, dispatchers: usize, login: &str) -> Stack {
    Stack::start(
        StackOptions::new(gateways, dispatchers).env("WARREN__DISPATCHER__ADMIN_BOTS", login),
    )
    .await
}

/// An account for the CLI, with the contract's permissions for it.
async fn cli_account(stack: &Stack, login: String) -> Account {
    Account::create(login, &Permissions::admin_cli(stack.prefix())).await
}

/// One run of the CLI: its exit code and its stdout (JSON, `--json` is always given).
struct Run {
    code: Option<i32>,
    out: Value,
    stderr: String,
}

/// Runs `warren-admin --json args...` as `account` against `stack`, with exactly the
/// settings a deployment would give it.
async fn admin(stack: &Stack, account: &Account, args: &[&str]) -> Run {
    let binary = warren_stack::process::binary(
        &warren_stack::process::target_dir(),
        "debug",
        "warren-admin",
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut cmd = tokio::process::Command::new(binary);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WARREN") {
            cmd.env_remove(&key);
        }
    }
    let shards = stack.shards().to_string();
    cmd.arg("--json")
        .args(args)
        .env("WARREN__AMQP__PREFIX", stack.prefix())
        .env("WARREN__REDIS__PREFIX", stack.prefix())
        .env("WARREN__AMQP__SHARDS", &shards)
        .env("WARREN__ADMIN__AMQP_URL", account.url())
        .env("WARREN__ADMIN__NAME", QUEUES_NAME)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("warren-admin {args:?} ran for more than {RUN_LIMIT:?}"))
        .expect("run warren-admin");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let out = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("warren-admin {args:?}: not JSON ({e}): {stdout}\n{stderr}"))
    };
    Run {
        code: output.status.code(),
        out,
        stderr,
    }
}

/// Runs the CLI and fails unless it succeeded; returns its output.
async fn admin_ok(stack: &Stack, account: &Account, args: &[&str]) -> Value {
    let run = admin(stack, account, args).await;
    assert_eq!(
        run.code,
        Some(0),
        "warren-admin {args:?}: {}\n{}",
        run.out,
        run.stderr
    );
    run.out
}

/// The rows of a command's report that were refused, as `(room, code)`.
fn refusals(report: &Value) -> Vec<(String, String)> {
    report
        .as_array()
        .expect("a report is a list")
        .iter()
        .filter(|a| a["ok"] == false)
        .map(|a| {
            (
                a["room"].as_str().unwrap_or("").to_owned(),
                a["code"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn room_row<'a>(rooms: &'a Value, room: &str) -> &'a Value {
    rooms
        .as_array()
        .expect("rooms is a list")
        .iter()
        .find(|r| r["room"] == room)
        .unwrap_or_else(|| panic!("{room} is not listed: {rooms}"))
}

fn is_moderation(action: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == "moderation" && v["action"] == action
}

/// The error code a client frame was answered with, or `ok`.
fn code_of(answer: &Value) -> String {
    if answer["type"] == "error" {
        answer["code"].as_str().unwrap_or("").to_owned()
    } else {
        "ok".to_owned()
    }
}

/// The audit entries by `login`, as `(action, room, user)`.
fn audited_by(audit: &Value, login: &str) -> Vec<(String, String, String)> {
    audit
        .as_array()
        .expect("audit is a list")
        .iter()
        .filter(|e| e["actor"]["id"] == login)
        .map(|e| {
            assert_eq!(e["actor"]["admin"], true, "{e}");
            assert_eq!(e["actor"]["bot"], true, "{e}");
            let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
            (s("action"), s("room"), s("user"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_lists_configures_and_cleans_up_rooms_through_the_dispatcher() {
    let login = Account::fresh_login("admin");
    let stack = stack_with_admin(1, 1, &login).await;
    let cli = cli_account(&stack, login.clone()).await;
    let room = "lobby";
    let [mut alice, mut bob] = members(&stack, room, [(0, "alice"), (0, "bob")]).await;

    // rooms and room: what the clients made, with its members.
    let rooms = admin_ok(&stack, &cli, &["rooms"]).await;
    let row = room_row(&rooms, room);
    assert_eq!(
        (row["members"].as_u64(), row["present"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(row["visibility"], "public");
    let detail = admin_ok(&stack, &cli, &["room", room]).await;
    assert_eq!(detail["roles"], json!({"alice": "owner", "bob": "member"}));
    let present: BTreeSet<&str> = detail["present"]
        .as_object()
        .expect("present is a map")
        .values()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(present, BTreeSet::from(["alice", "bob"]));
    assert!(detail["epoch"].is_string(), "{detail}");

    // messages shows what was sent; delete removes it, and the room is told.
    let sent = alice.send_acked(room, "a message to clean up").await;
    let page = admin_ok(&stack, &cli, &["messages", room]).await;
    let listed = page["messages"]
        .as_array()
        .expect("a history page")
        .iter()
        .find(|m| m["text"] == "a message to clean up")
        .unwrap_or_else(|| panic!("not in {page}"))
        .clone();
    assert_eq!(listed["seq"].as_u64(), Some(sent.seq));
    let seq = sent.seq.to_string();
    let report = admin_ok(&stack, &cli, &["delete", room, &seq]).await;
    assert!(refusals(&report).is_empty(), "{report}");
    let deleted = bob.recv_until(is_moderation("delete"), FRAME_WAIT).await;
    assert_eq!(deleted["msg_id"], listed["id"]);
    assert_eq!(deleted["by"]["id"], login.as_str());
    let page = admin_ok(&stack, &cli, &["messages", room]).await;
    assert!(
        !page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["seq"] == sent.seq),
        "still in history: {page}"
    );

    // settings: announce keeps a member quiet; private keeps a stranger out.
    admin_ok(&stack, &cli, &["settings", room, "--announce", "on"]).await;
    let configured = bob.recv_until(is_moderation("configure"), FRAME_WAIT).await;
    assert_eq!(configured["settings"], json!({"announce": true}));
    assert_eq!(code_of(&bob.try_send(room, "may I?").await), "forbidden");
    admin_ok(&stack, &cli, &["settings", room, "--visibility", "private"]).await;
    let mut carol = stack.connect(0, "carol").await;
    assert_eq!(code_of(&carol.try_join(room).await), "forbidden");
    let detail = admin_ok(&stack, &cli, &["room", room]).await;
    assert_eq!(
        (
            &detail["settings"]["visibility"],
            &detail["settings"]["announce"]
        ),
        (&json!("private"), &json!("1"))
    );

    // grant and revoke: a granted member gets in, a moderator may speak, a revoked one
    // may not any more.
    admin_ok(&stack, &cli, &["grant", room, "carol", "member"]).await;
    assert_eq!(code_of(&carol.try_join(room).await), "ok");
    admin_ok(&stack, &cli, &["grant", room, "bob", "moderator"]).await;
    assert_eq!(code_of(&bob.try_send(room, "now I may").await), "ok");
    alice
        .recv_until(is_message_with_text("now I may"), FRAME_WAIT)
        .await;
    admin_ok(&stack, &cli, &["revoke", room, "bob", "moderator"]).await;
    assert_eq!(code_of(&bob.try_send(room, "and now?").await), "forbidden");

    // Every change is in the audit trail, under the CLI's login.
    let audit = admin_ok(&stack, &cli, &["audit"]).await;
    let mut actions: Vec<String> = audited_by(&audit, &login)
        .into_iter()
        .map(|(action, entry_room, _)| {
            assert_eq!(entry_room, room);
            action
        })
        .collect();
    actions.reverse(); // oldest first
    assert_eq!(
        actions,
        [
            "delete",
            "configure",
            "configure",
            "grant",
            "grant",
            "revoke"
        ],
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_across_rooms_kicks_everywhere_and_mutes_hold_per_room() {
    let login = Account::fresh_login("admin");
    let stack = stack_with_admin(1, 1, &login).await;
    let cli = cli_account(&stack, login.clone()).await;
    let mut alice = stack.connect(0, "alice").await;
    let mut bob = stack.connect(0, "bob").await;
    for room in ["north", "south"] {
        alice.join(room).await;
        bob.join(room).await;
    }

    // One ban per room; bob's connection is taken out of each.
    let report = admin_ok(
        &stack,
        &cli,
        &["ban", "bob", "--all-rooms", "--reason", "spam"],
    )
    .await;
    assert_eq!(report.as_array().map(Vec::len), Some(2), "{report}");
    assert!(refusals(&report).is_empty(), "{report}");
    let mut kicked_from = BTreeSet::new();
    for _ in 0..2 {
        let kicked = bob.recv_until(|v| v["type"] == "kicked", FRAME_WAIT).await;
        kicked_from.insert(kicked["room"].as_str().unwrap_or("").to_owned());
    }
    assert_eq!(
        kicked_from,
        BTreeSet::from(["north".into(), "south".into()])
    );
    assert_eq!(code_of(&bob.try_join("north").await), "banned");
    let detail = admin_ok(&stack, &cli, &["room", "south"]).await;
    let bans = detail["bans"].as_array().expect("bans");
    assert!(
        bans.iter()
            .any(|b| b["user"] == "bob" && b["by"] == login.as_str()),
        "{detail}"
    );

    admin_ok(
        &stack,
        &cli,
        &["unban", "bob", "--room", "north", "--room", "south"],
    )
    .await;
    for room in ["north", "south"] {
        assert_eq!(code_of(&bob.try_join(room).await), "ok", "{room}");
    }

    // A mute holds in the room it names only, until it is lifted.
    admin_ok(
        &stack,
        &cli,
        &["mute", "bob", "--room", "north", "--for", "10m"],
    )
    .await;
    assert_eq!(code_of(&bob.try_send("north", "hush?").await), "muted");
    assert_eq!(code_of(&bob.try_send("south", "fine here").await), "ok");
    let detail = admin_ok(&stack, &cli, &["room", "north"]).await;
    let mute = detail["mutes"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["user"] == "bob"))
        .unwrap_or_else(|| panic!("no mute of bob: {detail}"));
    assert!(
        mute["until"].as_u64().is_some(),
        "a timed mute has an end: {mute}"
    );
    admin_ok(&stack, &cli, &["unmute", "bob", "--room", "north"]).await;
    assert_eq!(code_of(&bob.try_send("north", "back").await), "ok");

    let mut audited = audited_by(&admin_ok(&stack, &cli, &["audit"]).await, &login);
    audited.sort();
    let expected: Vec<(String, String, String)> = [
        ("ban", "north"),
        ("ban", "south"),
        ("mute", "north"),
        ("unban", "north"),
        ("unban", "south"),
        ("unmute", "north"),
    ]
    .iter()
    .map(|(a, r)| ((*a).to_owned(), (*r).to_owned(), "bob".to_owned()))
    .collect();
    assert_eq!(audited, expected);
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_show_their_owners_and_gateways_their_backlogs() {
    let login = Account::fresh_login("admin");
    let stack = stack_with_admin(2, 2, &login).await;
    let cli = cli_account(&stack, login.clone()).await;
    let _somebody = stack.connect(1, "somebody").await;

    // The owners the CLI names are the dispatchers' own view of who is active where,
    // once they have shared the shards out.
    let all: BTreeSet<u32> = (0..stack.shards()).collect();
    eventually(
        "the CLI's shard owners match the dispatchers'",
        FRAME_WAIT,
        || {
            let (cli, stack, all) = (&cli, &stack, &all);
            async move {
                let shards = admin_ok(stack, cli, &["shards"]).await;
                let rows = shards.as_array().cloned().unwrap_or_default();
                let listed: BTreeSet<u32> = rows
                    .iter()
                    .filter_map(|r| r["shard"].as_u64())
                    .map(|s| s as u32)
                    .collect();
                if listed != *all {
                    return Err(format!("shards listed: {listed:?}"));
                }
                let mut by_owner: std::collections::BTreeMap<String, BTreeSet<u32>> =
                    Default::default();
                for row in &rows {
                    let owner = row["owner"].as_str().ok_or(format!("no owner: {row}"))?;
                    if row["messages"].as_u64().is_none() || row["consumers"].as_u64() < Some(1) {
                        return Err(format!("no queue counts: {row}"));
                    }
                    by_owner
                        .entry(owner.to_owned())
                        .or_default()
                        .insert(row["shard"].as_u64().unwrap_or(0) as u32);
                }
                let groups: BTreeSet<BTreeSet<u32>> = by_owner.into_values().collect();
                let active: Vec<BTreeSet<u32>> = vec![
                    stack.active_shards(0).await.into_iter().collect(),
                    stack.active_shards(1).await.into_iter().collect(),
                ];
                let expected: BTreeSet<BTreeSet<u32>> = active.into_iter().collect();
                if groups == expected {
                    Ok(())
                } else {
                    Err(format!("CLI: {groups:?}, dispatchers: {expected:?}"))
                }
            }
        },
    )
    .await;

    let gateways = admin_ok(&stack, &cli, &["gateways"]).await;
    for i in 0..2 {
        let id = stack.gateway_id(i);
        let row = gateways
            .as_array()
            .and_then(|g| g.iter().find(|g| g["gateway"] == id))
            .unwrap_or_else(|| panic!("gateway {id} is not listed: {gateways}"));
        assert_eq!(row["alive"], true, "{row}");
        assert_eq!(row["queue"], stack.gateway_queue(i).as_str(), "{row}");
        assert!(row["messages"].as_u64().is_some(), "no backlog: {row}");
        assert!(row["consumers"].as_u64() >= Some(1), "{row}");
    }
    let held = |i: usize| {
        gateways
            .as_array()
            .and_then(|g| g.iter().find(|g| g["gateway"] == stack.gateway_id(i)))
            .and_then(|g| g["users"].as_u64())
    };
    assert_eq!((held(0), held(1)), (Some(0), Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_is_not_an_admin_is_refused_and_changes_nothing() {
    let login = Account::fresh_login("admin");
    let stack = stack_with_admin(1, 1, &login).await;
    // The same CLI, the same permissions, but a login the dispatchers do not name.
    let outsider = cli_account(&stack, Account::fresh_login("admin")).await;
    let room = "guarded";
    let [_alice, mut bob] = members(&stack, room, [(0, "alice"), (0, "bob")]).await;

    for args in [
        &["ban", "bob", "--room", room][..],
        &["settings", room, "--visibility", "private"][..],
        &["grant", room, "outsider", "moderator"][..],
    ] {
        let run = admin(&stack, &outsider, args).await;
        assert_eq!(run.code, Some(2), "{args:?}: {}\n{}", run.out, run.stderr);
        assert_eq!(
            refusals(&run.out),
            [(room.to_owned(), "forbidden".to_owned())],
            "{args:?}"
        );
    }
    let run = admin(&stack, &outsider, &["messages", room]).await;
    assert_eq!(run.code, Some(2), "{}", run.out);
    assert_eq!(
        refusals(&run.out),
        [(room.to_owned(), "not_joined".to_owned())]
    );

    // Nothing changed: bob still talks in a public room, and nothing was audited.
    assert_eq!(code_of(&bob.try_send(room, "still here").await), "ok");
    let detail = admin_ok(&stack, &outsider, &["room", room]).await;
    assert_eq!(detail["settings"]["visibility"], "public");
    assert_eq!(detail["roles"], json!({"alice": "owner", "bob": "member"}));
    assert!(
        detail["bans"].as_array().is_some_and(Vec::is_empty),
        "{detail}"
    );
    assert_eq!(admin_ok(&stack, &outsider, &["audit"]).await, json!([]));
}
