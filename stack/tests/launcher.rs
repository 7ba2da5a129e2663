//! The launcher against the machine's RabbitMQ and Redis, with the built services
//! (`cargo build -p warren-gateway -p warren-dispatcher --bins` first).

use warren_stack::stack::status_of;
use warren_stack::{broker, store, Stack, StackOptions};

/// Every listener is bound before its process runs and handed to it: the addresses the
/// stack reports are the ones that answer, a restart keeps them, and dropping the stack
/// leaves nothing under its prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_serves_where_it_says_keeps_its_ports_and_leaves_nothing() {
    let mut stack = Stack::start(StackOptions::new(1, 1)).await.unwrap();
    let (public, ops) = (stack.gateway_addr(0), stack.gateway_ops_addr(0));
    assert!(public.port() != 0 && ops.port() != 0 && public != ops);
    assert_eq!(status_of(public, "/").await.unwrap(), 200, "the web client");
    assert_eq!(status_of(ops, "/readyz").await.unwrap(), 200);
    let dispatcher = stack.dispatcher_addr(0);
    assert_eq!(status_of(dispatcher, "/readyz").await.unwrap(), 200);

    stack.restart_gateway(0).await.unwrap();
    assert_eq!(stack.gateway_addr(0), public);
    assert_eq!(status_of(ops, "/readyz").await.unwrap(), 200);

    let prefix = stack.prefix().to_owned();
    assert!(!broker::queues_under(&prefix).await.unwrap().is_empty());
    drop(stack);
    assert_eq!(
        broker::queues_under(&prefix).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        broker::exchanges_under(&prefix).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        store::keys_under(&prefix).await.unwrap(),
        Vec::<String>::new()
    );
}

/// A gateway told to listen off loopback gets that setting with the address it was
/// handed, so its own safety check still sees where it really listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_listener_keeps_the_safety_check_honest() {
    let stack = Stack::start(StackOptions::new(0, 1)).await.unwrap();
    let refused = stack
        .gateway_refusal(
            &[
                ("WARREN__GATEWAY__LISTEN", "0.0.0.0:0"),
                ("WARREN__GATEWAY__DEV_TOKENS", "true"),
            ],
            std::time::Duration::from_secs(15),
        )
        .await
        .unwrap();
    let (status, log) = refused.expect("the gateway refuses to start");
    assert!(!status.success());
    assert!(log.contains("refusing to start"), "{log}");
}
