//! Fault injection against real processes and the machine's real RabbitMQ and Redis:
//! the broker stopped and started, its connections cut, Redis restarted with and without
//! its data, dispatchers and gateways SIGKILLed in loops, all under traffic.
//!
//! Every test ends with the same checks: every acked message is in history exactly once,
//! was shown to every member that stayed connected exactly once and in seq order, seqs
//! have no gap, the broker's bindings follow each gateway's membership, and nothing is
//! left under the stack's prefix once the stack is dropped.
//!
//! These tests stop services that other test runs share, so they run alone and last:
//! `cargo test -p warren-tests --test faults -- --test-threads=1` (scripts/test.sh does),
//! after `cargo build --workspace --bins`. Each destructive step first waits until no
//! other test run is active, and every outage is a guard that restarts its service even
//! when the test fails.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use warren_tests::faults_support::checks::{self, Proc};
use warren_tests::faults_support::redis_outage::{RedisOutage, Restart};
use warren_tests::faults_support::services::{self, BrokerOutage};
use warren_tests::faults_support::streams;
use warren_tests::faults_support::{Controls, Ended, Member};
use warren_tests::rooms_support::assert_error;
use warren_tests::{eventually, traffic, Client, Connect, Stack, StackOptions};

const ROOM: &str = "faulty";
/// Longest a member waits with nothing arriving once its own sends are acked.
const IDLE: Duration = Duration::from_secs(60);
/// Bound on any member's whole stream.
const DEADLINE: Duration = Duration::from_secs(240);
/// Bound on a wait for acks to reach a count.
const PROGRESS: Duration = Duration::from_secs(90);
/// How long the broker stays stopped, counted from `stop_app`.
const OUTAGE: Duration = Duration::from_secs(6);
/// Every process of a default stack.
const ALL: [Proc; 4] = [
    Proc::Gateway(0),
    Proc::Gateway(1),
    Proc::Dispatcher(0),
    Proc::Dispatcher(1),
];

/// Two gateways, two dispatchers, short reconnect backoff, no frame rate limit in the way.
fn options() -> StackOptions {
    StackOptions::default()
        .env("WARREN__AMQP__BACKOFF_MAX_MS", "1000")
        .env("WARREN__GATEWAY__FRAMES_PER_SEC", "100000")
        .env("WARREN__GATEWAY__FRAMES_BURST", "100000")
}

/// A member's stream running in its own task.
struct Driving {
    label: String,
    task: JoinHandle<(Member, Client, Ended)>,
    stop: Arc<AtomicBool>,
    quota: Arc<AtomicUsize>,
}

impl Driving {
    /// Drives `member` on `client` until its goal (`expect` messages shown and its sends
    /// acked), or until stopped when `expect` is `None`.
    fn start(mut member: Member, mut client: Client, expect: Option<usize>) -> Driving {
        let label = member.label.clone();
        let stop = member.stop.clone();
        let quota = member.quota.clone();
        let task = tokio::spawn(async move {
            let ended = member.drive(&mut client, expect, IDLE, DEADLINE).await;
            (member, client, ended)
        });
        Driving {
            label,
            task,
            stop,
            quota,
        }
    }

    fn allow(&self, more: usize) {
        Member::allow(&self.quota, more);
    }

    /// Asks the stream to stop and takes the member and its connection back.
    async fn stop(self) -> (Member, Client, Ended) {
        self.stop.store(true, Ordering::SeqCst);
        self.join().await
    }

    async fn join(self) -> (Member, Client, Ended) {
        match tokio::time::timeout(DEADLINE + Duration::from_secs(30), self.task).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => panic!("{}: its task did not end", self.label),
        }
    }

    /// Waits for the goal; the connection must have stayed open throughout.
    async fn finish(self) -> (Member, Client) {
        let label = self.label.clone();
        let (member, client, ended) = self.join().await;
        assert_eq!(ended, Ended::Complete, "{label}: how its stream ended");
        (member, client)
    }
}

/// Waits until the members' first acks reach `n`; returns the count then.
async fn acked_reaches(controls: &Controls, n: usize) -> usize {
    streams::acked_reaches(controls, n, PROGRESS).await
}

/// [`crowd`] with two readers, every member driving at once towards `senders * each` acks.
async fn drive_crowd(
    stack: &Stack,
    controls: &Controls,
    senders: usize,
    each: usize,
) -> Vec<Driving> {
    crowd(stack, controls, senders, each, 2)
        .await
        .into_iter()
        .map(|(m, c)| Driving::start(m, c, Some(senders * each)))
        .collect()
}

/// A fault test's crowd under way: [`drive_crowd`] on a stack of its own, started once
/// the test has the services to itself (`fault` names it to the other runs), and past
/// its first 100 acks.
struct UnderWay {
    stack: Stack,
    controls: Controls,
    running: Vec<Driving>,
    /// The acks counted when the first 100 were in.
    before: usize,
}

async fn crowd_under_way(fault: &str, senders: usize, each: usize) -> UnderWay {
    services::wait_until_alone(fault).await;
    let stack = Stack::start(options()).await;
    let controls = Controls::default();
    let running = drive_crowd(&stack, &controls, senders, each).await;
    let before = acked_reaches(&controls, 100).await;
    UnderWay {
        stack,
        controls,
        running,
        before,
    }
}

/// `senders` members with `each` sends and `readers` readers, alternating gateways 0
/// and 1, all joined before any of them sends.
async fn crowd(
    stack: &Stack,
    controls: &Controls,
    senders: usize,
    each: usize,
    readers: usize,
) -> Vec<(Member, Client)> {
    let mut out = Vec::new();
    for i in 0..senders + readers {
        let (label, count) = if i < senders {
            (format!("s{i}"), each)
        } else {
            (format!("r{}", i - senders), 0)
        };
        let mut client = stack.connect(i % 2, &label).await;
        let mut member = Member::new(ROOM, &label, count, controls);
        member.join(&mut client).await;
        out.push((member, client));
    }
    out
}

/// The room's whole history, read through `client`.
async fn history(client: &mut Client) -> Vec<proto::server::Message> {
    client.full_history(ROOM).await
}

/// What a crowd's run came to, once every member's stream has ended.
struct Finished {
    members: Vec<(Member, Client)>,
    /// Deliveries checked against the acks.
    checked: usize,
    /// Same-`ref` resends, over all members.
    resent: usize,
    /// `unavailable` answers, over all members.
    unavailable: usize,
}

/// Waits for every member's stream to end, reads the room's history through the first
/// member, and checks that nothing acked was lost: what the members that sent had
/// acked, against every member's deliveries and the history.
async fn finish_crowd(running: Vec<Driving>, total: usize) -> Finished {
    let mut members = Vec::new();
    for d in running {
        members.push(d.finish().await);
    }
    let history = history(&mut members[0].1).await;
    let all: Vec<&Member> = members.iter().map(|(m, _)| m).collect();
    let senders: Vec<&Member> = all.iter().copied().filter(|m| m.count > 0).collect();
    let checked = checks::assert_nothing_acked_lost(&senders, &all, &history, total);
    let resent = all.iter().map(|m| m.resent).sum();
    let unavailable = all.iter().map(|m| m.unavailable).sum();
    Finished {
        members,
        checked,
        resent,
        unavailable,
    }
}

/// Bindings follow membership and no queue is orphaned, then the stack goes and takes
/// everything under its prefix with it.
async fn end_clean(stack: Stack, live_gateways: &[usize]) {
    checks::assert_bindings_follow_membership(&stack, live_gateways).await;
    checks::assert_queues_are_expected(&stack, live_gateways).await;
    let prefix = stack.prefix().to_owned();
    drop(stack);
    checks::assert_nothing_left(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_under_traffic_loses_nothing_acked() {
    const SENDERS: usize = 4;
    const EACH: usize = 80;
    services::wait_until_alone("broker restart").await;
    let stack = Stack::start(options()).await;
    let controls = Controls::default();
    let mut crowd = crowd(&stack, &controls, SENDERS, EACH, 2).await;
    // One probe per gateway, held back until the broker is down.
    for gw in 0..2 {
        let label = format!("probe{gw}");
        let mut client = stack.connect(gw, &label).await;
        let mut probe = Member::new(ROOM, &label, 1, &controls).paced();
        probe.join(&mut client).await;
        crowd.push((probe, client));
    }
    let total = SENDERS * EACH + 2;
    let running: Vec<Driving> = crowd
        .into_iter()
        .map(|(m, c)| Driving::start(m, c, Some(total)))
        .collect();

    let before = acked_reaches(&controls, 100).await;
    let outage = BrokerOutage::begin().await;
    let noticed = checks::wait_readyz(&stack, &ALL, 503, Duration::from_secs(30)).await;
    // What /readyz says, the readiness gauges say to Prometheus (the alerts'
    // WarrenGatewayNotReady and WarrenDispatcherNotReady).
    assert_ready_gauges(&stack, 0).await;
    let refused = stack
        .handshake(0, &Connect::token(stack.token("latecomer")))
        .await;
    assert_eq!(
        refused.status,
        503,
        "a new connection while the broker is down: {}",
        refused.text()
    );
    for probe in &running[running.len() - 2..] {
        probe.allow(1);
    }
    let unavailable = controls.unavailable.clone();
    eventually(
        "both probes answered unavailable",
        Duration::from_secs(20),
        move || {
            let n = unavailable.load(Ordering::SeqCst);
            async move { (n >= 2).then_some(n).ok_or(format!("{n} unavailable")) }
        },
    )
    .await;
    for d in &running {
        assert!(
            !d.task.is_finished(),
            "{}: its stream ended while the broker was down",
            d.label
        );
    }
    // A few seconds of outage under traffic before the broker comes back.
    tokio::time::sleep(OUTAGE.saturating_sub(outage.since.elapsed())).await;
    let stopping = outage.stopping;
    let down = outage.end().await;
    let back = checks::wait_readyz(&stack, &ALL, 200, Duration::from_secs(60)).await;
    assert_ready_gauges(&stack, 1).await;

    let crowd = finish_crowd(running, total).await;
    let (checked, resent, unavailable) = (crowd.checked, crowd.resent, crowd.unavailable);
    let all: Vec<&Member> = crowd.members.iter().map(|(m, _)| m).collect();
    for probe in &all[all.len() - 2..] {
        assert!(probe.unavailable >= 1, "{}: no unavailable", probe.label);
    }
    // Transient events lost with the broker were repaired by the gateways from Redis.
    let mut repaired = Vec::new();
    for gw in 0..2 {
        let m = warren_tests::hostile_support::metrics(&stack, gw).await;
        repaired.push((
            warren_tests::hostile_support::sample(&m, "warren_gateway_gap_repairs_total"),
            warren_tests::hostile_support::sample(&m, "warren_gateway_gap_messages_repaired_total"),
        ));
    }
    eprintln!(
        "[faults] broker restart: stop_app after {before} acks (it took {stopping:?}); /readyz 503 everywhere \
         {noticed:?} after it returned; broker down {down:?} in all; /readyz 200 everywhere {back:?} after start_app; {unavailable} unavailable answers, \
         {resent} same-ref resends, 0 clients closed; {total} messages acked, {checked} deliveries checked; \
         gap repairs (runs, messages) per gateway {repaired:?}"
    );
    drop(crowd);
    end_clean(stack, &[0, 1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_connection_cut_is_survived() {
    const SENDERS: usize = 4;
    const EACH: usize = 80;
    let total = SENDERS * EACH;
    let UnderWay {
        stack,
        running,
        before,
        ..
    } = crowd_under_way("broker connection cut", SENDERS, EACH).await;
    let cut_at = Instant::now();
    services::cut_broker_connections("warren fault test").await;
    // Each process logs a fresh link when it is back.
    let reconnected = |stack: &Stack| {
        let gws = (0..2)
            .map(|i| checks::log_lines(stack, &format!("gw{i}"), "connected to the broker"))
            .min()
            .unwrap_or(0);
        let ds = (0..2)
            .map(|i| checks::log_lines(stack, &format!("d{i}"), "dispatcher consuming"))
            .min()
            .unwrap_or(0);
        (gws, ds)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while reconnected(&stack) < (2, 2) {
        assert!(
            Instant::now() < deadline,
            "not every process reconnected: {:?}",
            reconnected(&stack)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let relinked = cut_at.elapsed();
    checks::wait_readyz(&stack, &ALL, 200, Duration::from_secs(30)).await;

    let crowd = finish_crowd(running, total).await;
    let (checked, resent, unavailable) = (crowd.checked, crowd.resent, crowd.unavailable);
    eprintln!(
        "[faults] broker connection cut: cut after {before} acks; all 4 processes linked again {relinked:?} after the cut \
         (including rabbitmqctl's own time); {unavailable} unavailable answers, {resent} same-ref resends; \
         {total} messages acked, {checked} deliveries checked"
    );
    drop(crowd);
    end_clean(stack, &[0, 1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_under_traffic_keeps_acked_messages() {
    const SENDERS: usize = 4;
    const EACH: usize = 80;
    let total = SENDERS * EACH;
    let UnderWay {
        stack,
        controls,
        running,
        before,
    } = crowd_under_way("redis restart", SENDERS, EACH).await;
    let outage = RedisOutage::begin(Restart::KeepingData).await;
    // Acks already on their way may still land; after that, none while Redis is down.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let frozen = controls.acked.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = controls.acked.load(Ordering::SeqCst) - frozen;
    let waiting: u64 = services::queue_depths(stack.prefix())
        .await
        .unwrap_or_else(|e| panic!("queue depths: {e:#}"))
        .iter()
        .filter(|(q, _)| q.starts_with(&format!("{}.commands.", stack.prefix())))
        .map(|(_, n)| n)
        .sum();
    let down = outage.end().await;
    assert_eq!(during, 0, "acks while Redis was down");
    assert!(
        waiting > 0,
        "commands waited in their queues while Redis was down"
    );
    let back = checks::wait_readyz(&stack, &ALL, 200, Duration::from_secs(60)).await;

    let crowd = finish_crowd(running, total).await;
    let (checked, resent) = (crowd.checked, crowd.resent);
    let mut retries = 0.0;
    for i in 0..2 {
        retries += checks::dispatcher_metric(&stack, i, "warren_dispatcher_retries_total").await;
    }
    assert!(
        retries >= 1.0,
        "the dispatchers retried while Redis was down"
    );
    eprintln!(
        "[faults] redis restart (data kept): stopped after {before} acks; down {down:?}, 0 acks during, \
         {waiting} commands waiting in the shard queues; /readyz 200 everywhere {back:?} after restart; \
         {retries} dispatcher retries, {resent} same-ref resends; {total} messages acked, {checked} deliveries checked"
    );
    drop(crowd);
    end_clean(stack, &[0, 1]).await;
}

const VAULT: &str = r#"
[[rooms.list]]
id = "vault"
visibility = "private"
owners = ["olga"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_data_loss_gives_rooms_a_new_epoch() {
    const BEFORE: usize = 20;
    const AFTER: usize = 30;
    services::wait_until_alone("redis data loss").await;
    let stack = Stack::start(options().config(VAULT)).await;
    let mut alice = stack.connect(0, "alice").await;
    let first = alice.join(ROOM).await;
    let mut bob = stack.connect(1, "bob").await;
    bob.join(ROOM).await;
    // Carol stays connected and joined through the loss, and never rejoins.
    let mut carol = stack.connect(1, "carol").await;
    carol.join(ROOM).await;
    let mut dave = stack.connect(0, "dave").await;
    let refused = dave.try_join("vault").await;
    assert_error(
        &refused,
        "forbidden",
        "a stranger joins the configured private room",
    );
    let mut before = std::collections::BTreeMap::new();
    for i in 0..BEFORE {
        let a = alice.send_acked(ROOM, &format!("before {i}")).await;
        before.insert(a.seq, a.id);
    }
    let mut seen = Vec::new();
    for (who, client) in [
        ("alice", &mut alice),
        ("bob", &mut bob),
        ("carol", &mut carol),
    ] {
        seen = traffic::receive(client, ROOM, BEFORE, Duration::from_secs(15)).await;
        traffic::assert_exactly_once_in_order(who, &seen, &before);
    }
    let old_epoch = first.epoch.clone();
    let since = seen.last().expect("messages").seq;

    let outage = RedisOutage::begin(Restart::LosingData {
        prefix: stack.prefix().to_owned(),
    })
    .await;
    let down = outage.end().await;
    let back = checks::wait_readyz(
        &stack,
        &[Proc::Gateway(0), Proc::Gateway(1)],
        200,
        Duration::from_secs(60),
    )
    .await;

    // A rejoin on a new connection, and one on the same connection, with the old epoch.
    bob.close().await;
    let mut bob = stack.connect(0, "bob").await;
    let rejoined = bob.join_since(ROOM, since, &old_epoch).await;
    assert_ne!(rejoined.epoch, old_epoch, "the room has a new epoch");
    assert!(
        !rejoined.recovered,
        "nothing can be recovered across a loss"
    );
    assert_eq!(rejoined.seq, 0, "the room starts again");
    assert!(rejoined.history.is_empty(), "{:?}", rejoined.history);
    let again = alice.join_since(ROOM, since, &old_epoch).await;
    assert_eq!(again.epoch, rejoined.epoch);
    assert!(!again.recovered);
    let epoch = rejoined.epoch.clone();

    // The configured private room is still private, its owner still its owner.
    let refused = dave.try_join("vault").await;
    assert_error(
        &refused,
        "forbidden",
        "a stranger joins the configured private room after the loss",
    );
    let mut olga = stack.connect(1, "olga").await;
    let owner = olga.join("vault").await;
    assert_eq!(
        owner.role,
        proto::client::Role::Owner,
        "olga owns the configured room after the loss"
    );

    let mut acks = Vec::new();
    for i in 0..AFTER {
        acks.push(alice.send_acked(ROOM, &format!("after {i}")).await);
    }
    let seqs: Vec<u64> = acks.iter().map(|a| a.seq).collect();
    assert_eq!(
        seqs,
        (1..=AFTER as u64).collect::<Vec<_>>(),
        "new messages start at seq 1"
    );
    let acked: std::collections::BTreeMap<u64, String> =
        acks.iter().map(|a| (a.seq, a.id.clone())).collect();
    let history = bob.full_history(ROOM).await;
    assert!(history.iter().all(|m| m.epoch == epoch), "history epoch");
    traffic::assert_gapless("history", history.iter().map(|m| m.seq), AFTER as u64);
    let mut checked = 0;
    for (who, client) in [("alice", &mut alice), ("bob", &mut bob)] {
        let got = traffic::receive(client, ROOM, AFTER, Duration::from_secs(15)).await;
        assert!(got.iter().all(|m| m.epoch == epoch), "{who}: epoch");
        traffic::assert_exactly_once_in_order(who, &got, &acked);
        checked += got.len();
    }
    // Carol never rejoined: she is shown the new epoch's messages all the same, from
    // seq 1 (her gateway's duplicate filter must not take them for old ones).
    // The gateway's per-connection filter follows the epoch: when it changes, the seq
    // count starts over (gateway/src/connection/filter.rs). Without that, seqs 1..=20 of
    // the new epoch would be taken for old ones and hidden from carol.
    let got = traffic::receive(&mut carol, ROOM, AFTER, Duration::from_secs(15)).await;
    traffic::assert_exactly_once_in_order("carol (stayed connected, did not rejoin)", &got, &acked);
    checked += got.len();
    eprintln!(
        "[faults] redis data loss: down {down:?}; gateways ready {back:?} after restart; old epoch {old_epoch} \
         (seq {since}) -> new epoch {epoch}, recovered false, seq 1..={AFTER} after; configured room still private; \
         {checked} deliveries checked"
    );
    for c in [alice, bob, carol, dave, olga] {
        c.close().await;
    }
    end_clean(stack, &[0, 1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_sigkill_loop_ten_rounds() {
    const ROUNDS: usize = 10;
    const SENDERS: usize = 3;
    const PER_ROUND: usize = 15;
    let total = ROUNDS * SENDERS * PER_ROUND;
    let mut stack = Stack::start(options()).await;
    let controls = Controls::default();
    let mut running = Vec::new();
    for (i, (mut m, c)) in crowd(&stack, &controls, SENDERS, ROUNDS * PER_ROUND, 2)
        .await
        .into_iter()
        .enumerate()
    {
        if i < SENDERS {
            m = m.paced();
            m.gap = Duration::from_millis(20);
        }
        running.push(Driving::start(m, c, Some(total)));
    }

    let commands = "warren_dispatcher_commands_total";
    let mut kills = Vec::new();
    for round in 0..ROUNDS {
        let base = controls.acked.load(Ordering::SeqCst);
        let handled = [
            checks::dispatcher_metric(&stack, 0, commands).await,
            checks::dispatcher_metric(&stack, 1, commands).await,
        ];
        for d in &running[..SENDERS] {
            d.allow(PER_ROUND);
        }
        acked_reaches(&controls, base + PER_ROUND).await;
        // The active one is the one handling this round's commands; the other waits.
        let now = [
            checks::dispatcher_metric(&stack, 0, commands).await,
            checks::dispatcher_metric(&stack, 1, commands).await,
        ];
        let busy: Vec<usize> = (0..2).filter(|&i| now[i] > handled[i]).collect();
        assert_eq!(
            busy.len(),
            1,
            "round {round}: exactly one dispatcher handles commands: before {handled:?}, now {now:?}"
        );
        let active = busy[0];
        stack.kill_dispatcher(active).await;
        let at_kill = controls.acked.load(Ordering::SeqCst);
        assert!(
            at_kill < base + SENDERS * PER_ROUND,
            "round {round}: the round's sends were all acked before the kill"
        );
        kills.push((active, at_kill - base));
        stack.restart_dispatcher(active).await;
        acked_reaches(&controls, base + SENDERS * PER_ROUND).await;
    }

    let mut members = Vec::new();
    for d in running {
        members.push(d.finish().await);
    }
    let history = history(&mut members[SENDERS].1).await;
    let all: Vec<&Member> = members.iter().map(|(m, _)| m).collect();
    let checked = checks::assert_nothing_acked_lost(&all[..SENDERS], &all, &history, total);
    let resent: usize = all.iter().map(|m| m.resent).sum();
    eprintln!(
        "[faults] dispatcher SIGKILL loop: {ROUNDS} rounds, killed (dispatcher, acks of the round before the kill) {kills:?}; \
         {resent} same-ref resends; {total} messages acked, {checked} deliveries checked"
    );
    drop(members);
    end_clean(stack, &[0, 1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_sigkill_loop_with_reconnect_and_recovery() {
    const ROUNDS: usize = 10;
    const PER_ROUND: usize = 8;
    const A: usize = 0;
    const B: usize = 1;
    let mut stack = Stack::start(options()).await;
    let controls = Controls::default();
    // Stayers on B, roamers that start on A; two senders and a reader of each kind.
    let labels = [
        "stay0",
        "stay1",
        "stay-reader",
        "roam0",
        "roam1",
        "roam-reader",
    ];
    let senders = 4;
    let total = ROUNDS * PER_ROUND * senders;
    let mut stayers = Vec::new();
    let mut roamers = Vec::new();
    for label in labels {
        let roams = label.starts_with("roam");
        let count = if label.ends_with("reader") {
            0
        } else {
            ROUNDS * PER_ROUND
        };
        let mut client = stack.connect(if roams { A } else { B }, label).await;
        let mut m = Member::new(ROOM, label, count, &controls).paced();
        m.gap = Duration::from_millis(20);
        m.join(&mut client).await;
        if roams {
            roamers.push(Driving::start(m, client, None));
        } else {
            stayers.push(Driving::start(m, client, Some(total)));
        }
    }

    let mut recovered = 0;
    for round in 0..ROUNDS {
        let base = controls.acked.load(Ordering::SeqCst);
        for d in stayers.iter().chain(&roamers) {
            d.allow(PER_ROUND);
        }
        acked_reaches(&controls, base + 10).await;
        // Roamers stop writing (their sends stay in flight), then A dies under them.
        let mut parked = Vec::new();
        for d in roamers.drain(..) {
            let (m, c, ended) = d.stop().await;
            assert_eq!(ended, Ended::Stopped, "round {round}: {}", m.label);
            parked.push((m, c));
        }
        stack.kill_gateway(A).await;
        let at_kill = controls.acked.load(Ordering::SeqCst);
        assert!(
            at_kill < base + senders * PER_ROUND,
            "round {round}: the round's sends were all acked before the kill"
        );
        for (mut m, dead) in parked {
            drop(dead);
            let mut client = stack.connect(B, &m.label).await;
            m.rejoin(&mut client).await;
            recovered += m.recoveries.last().copied().unwrap_or(0);
            roamers.push(Driving::start(m, client, None));
        }
        stack.restart_gateway(A).await;
        acked_reaches(&controls, base + senders * PER_ROUND).await;
        if round + 1 < ROUNDS {
            // Back to A, politely this time; recovery again.
            let mut moved = Vec::new();
            for d in roamers.drain(..) {
                let (mut m, old, ended) = d.stop().await;
                assert_eq!(ended, Ended::Stopped, "round {round}: {}", m.label);
                old.close().await;
                let mut client = stack.connect(A, &m.label).await;
                m.rejoin(&mut client).await;
                recovered += m.recoveries.last().copied().unwrap_or(0);
                moved.push(Driving::start(m, client, None));
            }
            roamers = moved;
        }
    }
    // The roamers end on B; their streams now run to the goal as well.
    let mut finishing = Vec::new();
    for d in roamers {
        let (m, c, ended) = d.stop().await;
        assert_eq!(ended, Ended::Stopped, "{}", m.label);
        finishing.push(Driving::start(m, c, Some(total)));
    }
    let mut members = Vec::new();
    for d in stayers.into_iter().chain(finishing) {
        members.push(d.finish().await);
    }
    let history = history(&mut members[2].1).await;
    let all: Vec<&Member> = members.iter().map(|(m, _)| m).collect();
    let senders_of: Vec<&Member> = all.iter().copied().filter(|m| m.count > 0).collect();
    let checked = checks::assert_nothing_acked_lost(&senders_of, &all, &history, total);
    let rejoins: usize = all.iter().map(|m| m.recoveries.len()).sum();
    let resent: usize = all.iter().map(|m| m.resent).sum();
    eprintln!(
        "[faults] gateway SIGKILL loop: {ROUNDS} kills of gw{A}, {rejoins} rejoins with since (all recovered: true), \
         {recovered} messages recovered from history, {resent} same-ref resends; {total} messages acked, \
         {checked} deliveries checked"
    );
    drop(members);
    // gw{A} came back under its old id, whose queue (x-expires 30 s) still held the
    // bindings of its killed incarnation. A gateway process deletes its queue on its first
    // connection, so none of those survive: the broker binds nothing to an empty gw0.
    end_clean(stack, &[A, B]).await;
}

/// Every process of [`ALL`] reads `want` on its readiness gauge
/// (`warren_gateway_ready`, `warren_dispatcher_ready`).
async fn assert_ready_gauges(stack: &Stack, want: u8) {
    for proc in ALL {
        let (text, line) = match proc {
            Proc::Gateway(i) => (
                stack.ops_get(i, "/metrics").await.text(),
                format!("warren_gateway_ready {want}"),
            ),
            Proc::Dispatcher(i) => (
                stack.dispatcher_get(i, "/metrics").await.text(),
                format!("warren_dispatcher_ready {want}"),
            ),
        };
        assert!(
            text.lines().any(|l| l == line),
            "{proc:?}: no `{line}` in\n{text}"
        );
    }
}
