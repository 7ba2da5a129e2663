//! Warren on Redis Cluster (issue #10): the core end-to-end properties against a local
//! cluster of three masters with a replica each, and a master stopping under a stream
//! of sends.
//!
//! Each test starts its own cluster with `scripts/redis-cluster.sh` on this target's
//! ports (7141..7146, bus 17141..17146), one test at a time, and stops it, removing its
//! data, when it ends, passed or failed. The services reach it through
//! `WARREN__REDIS__CLUSTER_NODES`; RabbitMQ is the machine's. (A stack's own cleanup
//! looks for its keys in the machine's Redis, finds none, and leaves the cluster to go
//! away whole.)
//!
//! Run `cargo build --workspace --bins` first, then this target alone:
//! `cargo test -p warren-tests --test cluster_redis`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use warren_tests::redis_cluster::RedisCluster;
use warren_tests::traffic::{self, Plan};
use warren_tests::{eventually, properties, Stack, StackOptions};

/// The first of the cluster's six ports.
const BASE_PORT: u16 = 7141;

/// The tests share the ports: one cluster at a time. (An async lock: it is held across
/// the whole test, and a failed test does not poison it for the next.)
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Two gateways and two dispatchers on the cluster.
fn on(cluster: &RedisCluster) -> StackOptions {
    StackOptions::default().env("WARREN__REDIS__CLUSTER_NODES", cluster.seeds())
}

/// `<prefix>:room:{<room>}:history`, as the store names it.
fn history_key(stack: &Stack, room: &str) -> String {
    format!("{}:room:{{{room}}}:history", stack.prefix())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_properties_hold_on_redis_cluster() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::start(BASE_PORT);
    let stack = Stack::start(on(&cluster)).await;

    properties::message_reaches_members_on_both_gateways(&stack).await;
    properties::thousand_messages_from_five_senders_arrive_once_in_order(&stack).await;
    // The scripts are loaded by now; from here on every node has to load them again
    // when first asked (EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA), as a node that has
    // never run them does.
    let flushed = cluster.flush_scripts().await.expect("the nodes answer");
    assert_eq!(flushed, 6, "every node flushed its scripts");
    properties::reconnect_with_since_recovers_exactly_the_missed_messages(&stack).await;
    properties::resend_with_same_ref_is_acked_once_and_stored_once(&stack).await;
    properties::from_is_the_token_user_even_when_the_frame_claims_another(&stack).await;

    // It was the cluster that stored all that, not the machine's Redis.
    assert!(
        stack.redis_keys().await.is_empty(),
        "the stack wrote to the machine's Redis"
    );
    let busy = history_key(&stack, "busy");
    let master = cluster.master_of(&busy).await.expect("the cluster answers");
    let stored = cluster
        .zcard(master, &busy)
        .await
        .expect("the master answers");
    assert_eq!(stored, 1000, "{busy} on the master at {master}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_a_master_failover() {
    const ROOM: &str = "failover";
    const SENDERS: usize = 3;
    const EACH: usize = 200;
    const TOTAL: usize = SENDERS * EACH;
    const STOP_AFTER_ACKS: usize = 150;
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::start(BASE_PORT);
    let stack = Stack::start(on(&cluster)).await;
    let key = history_key(&stack, ROOM);
    let master = cluster.master_of(&key).await.expect("the cluster answers");
    assert!(
        cluster
            .has_replica_in_sync(master)
            .await
            .expect("the master answers"),
        "the master at {master} has a replica ready to take over"
    );

    let mut readers = Vec::new();
    for gw in 0..2 {
        let mut c = stack.connect(gw, &format!("reader{gw}")).await;
        c.join(ROOM).await;
        readers.push(c);
    }
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let mut c = stack.connect(i % 2, &format!("sender{i}")).await;
        c.join(ROOM).await;
        senders.push(c);
    }
    let progress = Arc::new(AtomicUsize::new(0));
    let mut sending = Vec::new();
    for (i, mut c) in senders.into_iter().enumerate() {
        let mut plan = Plan::new(ROOM, &format!("s{i}"), EACH);
        plan.window = 10;
        plan.retry_after = Duration::from_secs(10);
        plan.max_tries = 6;
        plan.expect_messages = TOTAL;
        plan.progress = Some(progress.clone());
        sending.push(tokio::spawn(async move {
            let report = traffic::send_stream(&mut c, &plan).await;
            (c, report)
        }));
    }
    let reading: Vec<_> = readers
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let got = traffic::receive(&mut c, ROOM, TOTAL, Duration::from_secs(60)).await;
                (c, got)
            })
        })
        .collect();

    {
        let progress = progress.clone();
        eventually(
            "senders reach the stop point",
            Duration::from_secs(120),
            move || {
                let progress = progress.clone();
                async move {
                    match progress.load(Ordering::SeqCst) {
                        n if n >= STOP_AFTER_ACKS => Ok(n),
                        n => Err(format!("{n} acks")),
                    }
                }
            },
        )
        .await;
    }
    let before = progress.load(Ordering::SeqCst);
    cluster.shut_down(master).await.expect("the master stops");
    let at_stop = progress.load(Ordering::SeqCst);
    eprintln!("stopped the master at {master} after {before}..={at_stop} acks");
    assert!(
        at_stop < TOTAL,
        "every send was acked before the master stopped: nothing crossed the failover"
    );
    let (c, k) = (&cluster, key.as_str());
    let promoted = eventually(
        "a replica serves the room's slot",
        Duration::from_secs(60),
        move || async move {
            match c.master_of(k).await {
                Ok(port) if port != master => Ok(port),
                Ok(port) => Err(format!("still {port}")),
                Err(e) => Err(format!("{e:#}")),
            }
        },
    )
    .await;
    eprintln!("the replica at {promoted} took over");

    let mut reports = Vec::new();
    for task in sending {
        let (_c, report) = task.await.expect("sender task");
        reports.push(report);
    }
    let resent: usize = reports.iter().map(|r| r.resent).sum();
    let refused: usize = reports.iter().map(|r| r.refused).sum();
    eprintln!("sends answered unavailable: {refused}; repeated with the same ref: {resent}");
    for r in &reports {
        assert_eq!(r.acks.len(), EACH, "{}: every ref got an ack", r.label);
    }
    let acked = traffic::acked_by_seq(&reports);
    let mut members: Vec<(String, Vec<proto::server::Message>)> =
        reports.into_iter().map(|r| (r.label, r.messages)).collect();
    let mut history_reader = None;
    for task in reading {
        let (c, got) = task.await.expect("reader task");
        members.push((c.label.clone(), got));
        history_reader.get_or_insert(c);
    }
    for (who, got) in &members {
        traffic::assert_exactly_once_in_order(who, got, &acked);
    }

    let mut reader = history_reader.expect("a reader");
    let history = reader.full_history(ROOM).await;
    let stored: BTreeMap<u64, String> = history.iter().map(|m| (m.seq, m.id.clone())).collect();
    assert_eq!(stored.len(), history.len(), "history repeats no seq");
    traffic::assert_gapless("history", history.iter().map(|m| m.seq), TOTAL as u64);
    assert_eq!(
        stored, acked,
        "history holds exactly the acked messages, each once"
    );
}
