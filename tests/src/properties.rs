//! The core end-to-end properties, each a function over a running [`Stack`] with at
//! least two gateways, so that one check runs against every deployment shape: the
//! default stack (`tests/e2e.rs`), and the clustered ones (`tests/cluster_redis.rs`).
//!
//! Each uses rooms of its own and closes its clients, so several may run one after the
//! other on one stack.

use std::collections::BTreeMap;
use std::time::Duration;

use proto::server::Message;
use serde_json::json;

use crate::client::{ack_of, message_of};
use crate::crowd::members;
use crate::traffic::{self, Plan, SenderReport};
use crate::{is_message_with_id, Stack};

const FRAME_WAIT: Duration = Duration::from_secs(15);

/// A message sent on gateway 0 reaches the sender and a member on gateway 1, with the
/// acked id, seq, text and author.
pub async fn message_reaches_members_on_both_gateways(stack: &Stack) {
    let [mut alice, mut bob] = members(stack, "lobby", [(0, "alice"), (1, "bob")]).await;

    alice.send("lobby", "hello bob", "hello-1").await;
    let ack = alice.answer("hello-1").await;
    let acked = ack_of(&ack).unwrap_or_else(|| panic!("send answered {ack}"));
    assert_eq!(ack["ref"], "hello-1");
    assert_eq!(ack["room"], "lobby");

    for member in [&mut alice, &mut bob] {
        let event = member
            .recv_until(is_message_with_id(&acked.id), FRAME_WAIT)
            .await;
        let m = message_of(&event).expect("a message");
        assert_eq!(
            (m.room.as_str(), m.seq, m.text.as_str()),
            ("lobby", acked.seq, "hello bob"),
            "{}",
            member.label
        );
        assert_eq!(m.from.id, "alice", "{}", member.label);
    }
}

/// Five senders on both gateways send 200 messages each into one room: every send is
/// acked, the acks number 1..=1000 without a gap, and every member gets each message
/// once, in seq order, with its author and text.
pub async fn thousand_messages_from_five_senders_arrive_once_in_order(stack: &Stack) {
    const ROOM: &str = "busy";
    const SENDERS: usize = 5;
    const EACH: usize = 200;
    const TOTAL: usize = SENDERS * EACH;

    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let mut c = stack.connect(i % 2, &format!("sender{i}")).await;
        c.join(ROOM).await;
        senders.push(c);
    }
    let mut receivers = Vec::new();
    for i in 0..4 {
        let mut c = stack.connect(i % 2, &format!("reader{i}")).await;
        c.join(ROOM).await;
        receivers.push(c);
    }

    let sending: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let mut plan = Plan::new(ROOM, &format!("s{i}"), EACH);
            plan.window = 20;
            plan.expect_messages = TOTAL;
            tokio::spawn(async move {
                let report = traffic::send_stream(&mut c, &plan).await;
                (c, report)
            })
        })
        .collect();
    let reading: Vec<_> = receivers
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let got = traffic::receive(&mut c, ROOM, TOTAL, Duration::from_secs(30)).await;
                (c, got)
            })
        })
        .collect();

    let mut reports: Vec<(String, SenderReport)> = Vec::new();
    for task in sending {
        let (c, report) = task.await.expect("sender task");
        reports.push((c.welcome.user.id.clone(), report));
    }
    let acked = traffic::acked_by_seq(reports.iter().map(|(_, r)| r));
    assert_eq!(
        reports.iter().map(|(_, r)| r.acks.len()).sum::<usize>(),
        TOTAL,
        "every send is acked"
    );
    traffic::assert_gapless("acks", acked.keys().copied(), TOTAL as u64);

    // Who sent which id, to check authorship and text on the way.
    let mut author: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (user, report) in &reports {
        for (r, a) in &report.acks {
            let i: usize = r
                .rsplit('-')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("ref ends in its index");
            author.insert(
                a.id.clone(),
                (user.clone(), format!("{} says {i}", report.label)),
            );
        }
    }
    let mut members: Vec<(String, Vec<Message>)> = reports
        .into_iter()
        .map(|(user, r)| (user, r.messages))
        .collect();
    for task in reading {
        let (c, got) = task.await.expect("receiver task");
        members.push((c.label.clone(), got));
    }
    for (who, got) in &members {
        traffic::assert_exactly_once_in_order(who, got, &acked);
        for m in got {
            let (user, text) = &author[&m.id];
            assert_eq!(
                (&m.from.id, &m.text),
                (user, text),
                "{who}: message {} misattributed",
                m.id
            );
        }
    }
}

/// A member who was away rejoins with `since` and gets exactly the messages it missed,
/// then live ones, none twice.
pub async fn reconnect_with_since_recovers_exactly_the_missed_messages(stack: &Stack) {
    const ROOM: &str = "recovery";
    let mut carol = stack.connect(0, "carol").await;
    let joined = carol.join(ROOM).await;
    let mut alice = stack.connect(1, "alice").await;
    alice.join(ROOM).await;

    for i in 0..5 {
        alice.send_acked(ROOM, &format!("before {i}")).await;
    }
    let seen = traffic::receive(&mut carol, ROOM, 5, FRAME_WAIT).await;
    assert_eq!(seen.len(), 5, "carol sees the first messages");
    let since = seen.last().expect("five messages").seq;
    let epoch = joined.epoch.clone();
    assert!(
        seen.iter().all(|m| m.epoch == epoch),
        "messages carry the joined epoch"
    );
    carol.close().await;

    let mut missed = Vec::new();
    for i in 0..50 {
        missed.push(alice.send_acked(ROOM, &format!("while away {i}")).await);
    }

    let mut carol = stack.connect(1, "carol").await;
    let rejoined = carol.join_since(ROOM, since, &epoch).await;
    assert!(rejoined.recovered, "everything missed is in history");
    assert_eq!(rejoined.epoch, epoch);
    assert_eq!(rejoined.seq, since + 50);
    let history: Vec<(u64, &str)> = rejoined
        .history
        .iter()
        .map(|m| (m.seq, m.id.as_str()))
        .collect();
    let want: Vec<(u64, &str)> = missed.iter().map(|a| (a.seq, a.id.as_str())).collect();
    assert_eq!(
        history, want,
        "history is exactly the missed messages, S+1..=S+50"
    );
    assert_eq!(want.first().map(|w| w.0), Some(since + 1));

    let late: Vec<u64> = carol
        .drain_for(Duration::from_secs(2))
        .await
        .iter()
        .filter_map(message_of)
        .filter(|m| m.room == ROOM)
        .map(|m| m.seq)
        .collect();
    assert!(
        late.is_empty(),
        "no recovered message arrives again live: {late:?}"
    );

    let next = alice.send_acked(ROOM, "welcome back").await;
    let live = traffic::receive(&mut carol, ROOM, 1, FRAME_WAIT).await;
    let live: Vec<(u64, &str)> = live.iter().map(|m| (m.seq, m.id.as_str())).collect();
    assert_eq!(
        live,
        vec![(since + 51, next.id.as_str())],
        "live delivery continues after recovery"
    );
}

/// The same `ref` sent twice is answered with the first ack, stored once, takes one
/// seq, and is delivered once to every member.
pub async fn resend_with_same_ref_is_acked_once_and_stored_once(stack: &Stack) {
    const ROOM: &str = "dedup";
    let [mut alice, mut bob] = members(stack, ROOM, [(0, "alice"), (1, "bob")]).await;

    alice.send(ROOM, "only once", "dup-1").await;
    let first = alice.answer("dup-1").await;
    let first = ack_of(&first).unwrap_or_else(|| panic!("first send answered {first}"));
    alice.send(ROOM, "only once", "dup-1").await;
    let again = alice.answer("dup-1").await;
    let again = ack_of(&again).unwrap_or_else(|| panic!("resend answered {again}"));
    assert_eq!(again, first, "a resend is answered with the first ack");

    let page = alice.history(ROOM, None, Some(100)).await;
    let stored: Vec<&str> = page.messages.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        stored,
        vec![first.id.as_str()],
        "history holds the message once"
    );

    let next = alice.send_acked(ROOM, "after").await;
    assert_eq!(next.seq, first.seq + 1, "the resend did not take a seq");

    for member in [&mut alice, &mut bob] {
        let mut deliveries = 0;
        for _ in 0..1000 {
            let v = member.recv().await;
            if v["type"] == "message" && v["id"] == first.id.as_str() {
                deliveries += 1;
            }
            if v["type"] == "message" && v["id"] == next.id.as_str() {
                break;
            }
        }
        assert_eq!(deliveries, 1, "{} gets the message once", member.label);
    }
}

/// `from` is the token's user, whatever the `send` frame claims, live and in history.
pub async fn from_is_the_token_user_even_when_the_frame_claims_another(stack: &Stack) {
    const ROOM: &str = "identity";
    let [mut alice, mut bob] = members(stack, ROOM, [(0, "alice"), (1, "bob")]).await;

    alice
        .send_frame(json!({
            "type": "send", "room": ROOM, "text": "it was me", "ref": "spoof-1",
            "from": {"id": "mallory", "name": "M", "bot": true},
            "actor": {"id": "mallory", "name": "M", "roles": ["admin"], "bot": false},
            "user": "mallory",
        }))
        .await;
    let ack = alice.answer("spoof-1").await;
    let acked = ack_of(&ack).unwrap_or_else(|| panic!("send answered {ack}"));
    for member in [&mut alice, &mut bob] {
        let event = member
            .recv_until(is_message_with_id(&acked.id), FRAME_WAIT)
            .await;
        assert_eq!(event["from"]["id"], "alice", "{}: {event}", member.label);
        assert_eq!(event["from"]["bot"], false, "{}: {event}", member.label);
    }
    let page = bob.history(ROOM, None, None).await;
    let stored = page
        .messages
        .iter()
        .find(|m| m.id == acked.id)
        .expect("the message is in history");
    assert_eq!(stored.from.id, "alice");
}
