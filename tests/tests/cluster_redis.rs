//! Warren on Redis Cluster: the core end-to-end properties against a local
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

use std::time::Duration;

use warren_tests::redis_cluster::RedisCluster;
use warren_tests::traffic::RoomTraffic;
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
    proto::keys::Keys::new(stack.prefix()).history(room)
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

    // Three senders, 200 messages each; the master stops after the first 150 acks.
    let traffic = RoomTraffic::start(&stack, ROOM, 3, 200).await;
    traffic.wait_acks(150, "senders reach the stop point").await;
    let before = traffic.acked();
    cluster.shut_down(master).await.expect("the master stops");
    let at_stop = traffic.acked_at("the master stopped");
    eprintln!("stopped the master at {master} after {before}..={at_stop} acks");
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

    let summary = traffic.finish().await;
    eprintln!(
        "sends answered unavailable: {}; repeated with the same ref: {}",
        summary.refused, summary.resent
    );
}
