//! Dispatchers share the shards: with D dispatchers alive, each is the active
//! consumer of ⌊S/D⌋ or ⌈S/D⌉ shards within 15 s of one joining or leaving; one SIGKILLed
//! under a stream of sends leaves nothing acked lost, doubled or out of order; and a
//! command on the wrong shard is dead-lettered, never applied.
//!
//! Against the machine's RabbitMQ and Redis, like the other e2e targets; nothing here
//! stops a shared service.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lapin::types::AMQPValue;
use proto::amqp::{shard_key, Command};
use proto::ids::shard_of;
use tokio::time::Instant;
use warren_tests::bots::{AmqpAs, Published};
use warren_tests::broker::AMQP_URL;
use warren_tests::faults_support::checks;
use warren_tests::faults_support::streams::{acked_reaches, RoomStream};
use warren_tests::faults_support::Controls;
use warren_tests::{Stack, StackOptions};

/// How soon the shards must settle after a dispatcher joins or leaves.
const SETTLE: Duration = Duration::from_secs(15);
/// Bound on a wait for acks to reach a count.
const PROGRESS: Duration = Duration::from_secs(90);

fn options(dispatchers: usize) -> StackOptions {
    StackOptions::new(2, dispatchers)
        .env("WARREN__AMQP__BACKOFF_MAX_MS", "1000")
        .env("WARREN__GATEWAY__FRAMES_PER_SEC", "100000")
        .env("WARREN__GATEWAY__FRAMES_BURST", "100000")
}

/// Waits until the live dispatchers `live` are active on disjoint shares of every shard,
/// ⌊S/D⌋ or ⌈S/D⌉ each; bounded by [`SETTLE`] from the call. Returns the shares.
async fn wait_even_shares(stack: &Stack, live: &[usize], what: &str) -> Vec<Vec<u32>> {
    let shards = stack.shards() as usize;
    let (low, high) = (shards / live.len(), shards.div_ceil(live.len()));
    let started = Instant::now();
    loop {
        let mut shares = Vec::new();
        for &i in live {
            shares.push(stack.active_shards(i).await);
        }
        let all: BTreeSet<u32> = shares.iter().flatten().copied().collect();
        let total: usize = shares.iter().map(Vec::len).sum();
        let even = shares.iter().all(|s| (low..=high).contains(&s.len()));
        if even && total == shards && all.len() == shards {
            eprintln!(
                "[scale_out] {what}: shares {:?} after {:?}",
                shares.iter().map(Vec::len).collect::<Vec<_>>(),
                started.elapsed()
            );
            return shares;
        }
        assert!(
            started.elapsed() < SETTLE,
            "{what}: dispatchers {live:?} not sharing {shards} shards evenly within {SETTLE:?}: {shares:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatchers_share_the_shards_and_a_sigkill_loses_nothing() {
    const ROOMS: usize = 6;
    const PER_PHASE: usize = 40;
    const PHASES: usize = 3;
    let total = PER_PHASE * PHASES;
    let mut stack = Stack::start(options(2)).await;
    wait_even_shares(&stack, &[0, 1], "two dispatchers").await;
    stack.start_dispatcher().await;
    wait_even_shares(&stack, &[0, 1, 2], "a third joined").await;

    let controls = Controls::default();
    let streams = RoomStream::spread(&stack, &controls, ROOMS, total).await;
    let allow = |streams: &[RoomStream]| {
        for s in streams {
            s.allow(PER_PHASE);
        }
    };

    // Phase 1 runs; the dispatcher busiest with the rooms is killed in the middle of it.
    allow(&streams);
    acked_reaches(&controls, ROOMS * PER_PHASE / 2, PROGRESS).await;
    let busiest = {
        let mut best = (0, 0);
        for i in 0..3 {
            let handled = checks::dispatcher_metric(&stack, i, "warren_dispatcher_commands_total")
                .await as usize;
            if handled > best.1 {
                best = (i, handled);
            }
        }
        best.0
    };
    stack.kill_dispatcher(busiest).await;
    let at_kill = controls.acked.load(Ordering::SeqCst);
    assert!(
        at_kill < ROOMS * total,
        "every send was acked before the kill"
    );
    let survivors: Vec<usize> = (0..3).filter(|&i| i != busiest).collect();
    wait_even_shares(&stack, &survivors, "after the SIGKILL").await;

    // Phase 2 on the survivors; then the killed one comes back and phase 3 runs.
    allow(&streams);
    acked_reaches(&controls, ROOMS * PER_PHASE * 2, PROGRESS).await;
    stack.restart_dispatcher(busiest).await;
    wait_even_shares(&stack, &[0, 1, 2], "after the restart").await;
    allow(&streams);

    let mut checked = 0;
    for stream in streams {
        checked += stream.finish().await;
    }
    let handovers = {
        let mut sum = 0.0;
        for i in 0..3 {
            sum += checks::dispatcher_metric(&stack, i, "warren_dispatcher_handovers_total").await;
        }
        sum
    };
    eprintln!(
        "[scale_out] killed d{busiest} at {at_kill} acks; {ROOMS} rooms x {total} messages, \
         {checked} deliveries checked; {handovers} handovers since the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_on_the_wrong_shard_is_dead_lettered_and_not_applied() {
    let stack = Stack::start(options(1)).await;
    let names = stack.names().clone();
    let room = "misrouted";
    let home = shard_of(room, stack.shards());
    let wrong = (home + 1) % stack.shards();
    // From a gateway account (`guest`), whose `actor` the dispatcher believes: nothing
    // but the shard is wrong.
    let body = format!(
        r#"{{"v":1,"kind":"send","room":"{room}","text":"astray","ref":"w1","actor":{{"id":"mallory","name":"Mallory","roles":[]}}}}"#
    );
    let command: Command = serde_json::from_str(&body).expect("a valid command");
    assert_eq!(command.room(), room);
    let mut amqp = AmqpAs::connect(AMQP_URL).await.expect("broker");
    let sent = amqp
        .publish(
            &names.commands_exchange(),
            &shard_key(wrong),
            body.as_bytes(),
            Some("guest"),
            None,
        )
        .await;
    assert!(matches!(sent, Published::Routed), "{sent:?}");

    let dead = amqp
        .get_n(&names.dead(), 1, Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("dead letters: {e:#}"));
    let message = &dead[0].delivery;
    assert_eq!(
        message.data,
        body.as_bytes(),
        "the dead letter carries the command"
    );
    let reason = message.properties.headers().as_ref().and_then(|h| {
        h.inner()
            .iter()
            .find(|(k, _)| k.as_str() == "x-warren-reason")
            .map(|(_, v)| v.clone())
    });
    let Some(AMQPValue::LongString(reason)) = reason else {
        panic!(
            "no x-warren-reason on the dead letter: {:?}",
            message.properties
        );
    };
    let reason = reason.to_string();
    assert!(reason.contains("wrong shard"), "reason: {reason}");
    amqp.close().await;

    // Never applied: the room's history is empty.
    let mut alice = stack.connect(0, "alice").await;
    alice.join(room).await;
    assert!(
        alice.full_history(room).await.is_empty(),
        "the misrouted send was stored"
    );
}
