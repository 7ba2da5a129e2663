//! Warren on a 3-node RabbitMQ cluster with quorum command queues: the core
//! end-to-end properties, then the node that leads the command queues stopped under a
//! stream of sends, then the gateways' node stopped and started.
//!
//! The target starts its own cluster with `scripts/rabbitmq-cluster.sh` (AMQP ports
//! 5691-5693, management 15691-15693, distribution 25691-25693) and stops it, removing
//! its data, when it ends, passed or failed; the machine's default node is not touched.
//! Redis is the machine's. The dispatchers list node 3 first and the gateways node 1:
//! the dispatchers declare the topology, so node 3 leads every command queue (quorum
//! queues are led by the declaring connection's node), and stopping it takes the
//! leaders and the dispatchers' connections away while the gateways' stay.
//!
//! Run `cargo build --workspace --bins` first, then this target alone:
//! `cargo test -p warren-tests --test cluster_rabbitmq`.

use std::time::Duration;

use tokio::time::Instant;
use warren_tests::faults_support::streams::{acked_reaches, RoomStream};
use warren_tests::faults_support::Controls;
use warren_tests::rabbitmq_cluster::RabbitCluster;
use warren_tests::rooms_support::assert_error;
use warren_tests::{is_message_with_text, properties, Stack, StackOptions};

const BASE_PORT: u16 = 5691;
/// How soon sends must resume after the leading node stops.
const RESUME: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_runs_on_a_rabbitmq_cluster_and_survives_its_nodes_stopping() {
    let cluster = RabbitCluster::start(BASE_PORT);
    let dispatchers_order = cluster.urls(&[3, 1, 2]);
    let gateways_order = cluster.urls(&[1, 2, 3]);
    let options = StackOptions::new(0, 2)
        .own_broker()
        .env("WARREN__AMQP__URLS", &dispatchers_order)
        .env("WARREN__AMQP__COMMAND_QUEUE_TYPE", "quorum")
        .env("WARREN__AMQP__BACKOFF_MAX_MS", "1000")
        .env("WARREN__GATEWAY__FRAMES_PER_SEC", "100000")
        .env("WARREN__GATEWAY__FRAMES_BURST", "100000");
    let mut stack = Stack::start(options).await;
    for _ in 0..2 {
        stack
            .start_gateway_with(&[("WARREN__AMQP__URLS", &gateways_order)])
            .await;
    }
    let shard0 = stack.names().commands_queue(0);
    assert_eq!(
        cluster.leader_of(&shard0, 1).await,
        Some(3),
        "{shard0} is a quorum queue led by node 3, whose connection declared it"
    );

    // The core properties, on the cluster.
    properties::message_reaches_members_on_both_gateways(&stack).await;
    properties::thousand_messages_from_five_senders_arrive_once_in_order(&stack).await;
    properties::reconnect_with_since_recovers_exactly_the_missed_messages(&stack).await;
    properties::resend_with_same_ref_is_acked_once_and_stored_once(&stack).await;
    properties::from_is_the_token_user_even_when_the_frame_claims_another(&stack).await;

    // Node 3 (every command queue's leader, the dispatchers' node) stops
    // under a stream of sends, and comes back.
    const ROOMS: usize = 4;
    const PER_PHASE: usize = 40;
    let total = 3 * PER_PHASE;
    let controls = Controls::default();
    let streams = RoomStream::spread(&stack, &controls, ROOMS, total).await;
    for s in &streams {
        s.allow(PER_PHASE);
    }
    let before = acked_reaches(&controls, ROOMS * PER_PHASE / 2, Duration::from_secs(90)).await;
    let stopping = Instant::now();
    cluster.stop_node(3).await;
    let stopped_after = stopping.elapsed();
    for s in &streams {
        s.allow(PER_PHASE);
    }
    // Sends resume: the acks go on past what the first phase released, which needs
    // commands handled on the new leaders by dispatchers on another node.
    let resumed = acked_reaches(&controls, ROOMS * PER_PHASE + 1, RESUME).await;
    let resumed_after = stopping.elapsed();
    assert_ne!(
        cluster.leader_of(&shard0, 1).await,
        Some(3),
        "a new leader took over {shard0}"
    );
    cluster.start_node(3).await;
    for s in &streams {
        s.allow(PER_PHASE);
    }
    let mut checked = 0;
    for stream in streams {
        checked += stream.finish().await;
    }

    // The gateways' node goes away: their classic queues live there, so they cannot
    // consume anywhere else. They answer `unavailable` meanwhile, keep their
    // WebSockets, and carry on once it is back.
    let room = "node-one";
    let mut alice = stack.connect(0, "alice-n1").await;
    let mut bob = stack.connect(1, "bob-n1").await;
    alice.join(room).await;
    bob.join(room).await;
    cluster.stop_node(1).await;
    alice.send(room, "while node 1 is away", "away").await;
    let answer = alice.answer("away").await;
    assert_error(
        &answer,
        "unavailable",
        "a send while the gateway's node is away",
    );
    cluster.start_node(1).await;
    let mut tries = 0;
    let acked = loop {
        tries += 1;
        let reference = format!("back-{tries}");
        alice.send(room, "node 1 is back", &reference).await;
        let answer = alice.answer(&reference).await;
        if answer["type"] == "ack" {
            break answer;
        }
        assert_error(
            &answer,
            "unavailable",
            "a send while the gateway reconnects",
        );
        assert!(
            tries < 60,
            "gateway 0 still unavailable 60 tries after node 1 came back"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let shown = bob
        .recv_until(
            is_message_with_text("node 1 is back"),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(shown["id"], acked["id"], "bob got the acked message");
    let texts = bob.history_texts(room).await;
    assert_eq!(
        texts,
        ["node 1 is back"],
        "history: the send answered unavailable was not stored"
    );

    eprintln!(
        "[cluster_rabbitmq] node 3 stopped at {before} acks (stop took {stopped_after:?}); \
         {resumed} acks {resumed_after:?} after the stop began; {ROOMS} rooms x {total} \
         messages, {checked} deliveries checked; after node 1 (the gateways') came back, \
         the send went through at try {tries}"
    );
}
