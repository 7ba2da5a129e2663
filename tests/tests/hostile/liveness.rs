//! Sockets that hold a place without speaking: half-open connections and slowloris
//! handshakes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use warren_tests::client::Recv;
use warren_tests::hostile_support::{
    assert_still_serves, connect_from, metrics, opcode, sample, RawRead, RawWs,
};
use warren_tests::{eventually, Connect};

use crate::support::{counter_reaches, one_gateway, raw, AT_ONCE, CONVERGE, WAIT};

/// Whether the server ends the TCP connection `s` (it sends nothing first) within
/// `within`.
async fn dropped_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(within, s.read(&mut buf)).await;
    matches!(read, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_after_the_idle_timeout() {
    let stack = one_gateway("gateway.ping_interval_s=1 gateway.idle_timeout_s=3").await;
    let mut live = stack.connect(0, "live").await;
    // Completes the handshake, then never reads nor answers a ping.
    let mut silent = raw(&stack, "silent", None).await;
    let started = Instant::now();

    // A client that reads answers the pings by itself and stays.
    assert_eq!(live.try_recv(Duration::from_secs(6)).await, Recv::Timeout);
    counter_reaches(&stack, "warren_gateway_idle_timeouts_total", 1.0).await;
    let closed_after = started.elapsed();
    assert!(
        closed_after < Duration::from_secs(12),
        "closed after {closed_after:?}"
    );
    let frames = silent.read_to_end(WAIT).await.expect("the connection ends");
    assert!(
        frames.iter().any(|f| f.opcode == opcode::PING),
        "the gateway pinged"
    );
    let close = frames.last().and_then(|f| f.close_code());
    assert_eq!(close, Some(1001), "closed as idle: {frames:?}");
    assert_eq!(
        stack.stats(0).await.connections,
        1,
        "only the live client is left"
    );
    assert_eq!(live.ping("still-live").await["type"], "pong");
    live.close().await;
    assert_still_serves(&stack, 0, "after-idle").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_handshakes_are_dropped_and_pending_ones_are_capped() {
    let stack = one_gateway("gateway.handshake_timeout_s=2 gateway.max_pending_handshakes=8").await;
    let addr = stack.gateway_addr(0);

    // One header byte a second: dropped at the deadline, not served forever.
    let head = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n");
    let trickle = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let started = Instant::now();
        for b in head.bytes() {
            if s.write_all(&[b]).await.is_err()
                || dropped_within(&mut s, Duration::from_secs(1)).await
            {
                return started.elapsed();
            }
        }
        panic!("the trickling handshake was never dropped");
    };
    // Meanwhile a normal client is served.
    let normal = async {
        let mut c = stack.connect(0, "normal").await;
        assert_eq!(c.ping("during-slowloris").await["type"], "pong");
        c
    };
    let (dropped_after, c) = tokio::join!(trickle, normal);
    eprintln!("trickling handshake dropped after {dropped_after:?}");
    assert!(
        dropped_after >= Duration::from_millis(1500),
        "{dropped_after:?}"
    );
    assert!(dropped_after < Duration::from_secs(6), "{dropped_after:?}");
    c.close().await;

    // Silent connections fill the pending places; one more is dropped at accept; when
    // they time out, the gateway answers again.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        warren_tests::http::get(addr, "/healthz").await.is_err(),
        "a ninth pending connection is dropped"
    );
    for mut s in silent {
        assert!(
            dropped_within(&mut s, Duration::from_secs(6)).await,
            "a silent connection is dropped"
        );
    }
    let health = stack.ops_get(0, "/healthz").await;
    assert_eq!(health.status, 200);
    // A request head is bounded too.
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "p".repeat(100 * 1024)
    );
    let answer = warren_tests::http::request(addr, &huge).await;
    assert!(
        answer.as_ref().map_or(true, |a| a.status == 431),
        "a 100 KiB request head: {:?}",
        answer.map(|a| a.status)
    );
    let m = metrics(&stack, 0).await;
    assert!(
        sample(&m, "warren_gateway_handshake_timeouts_total") >= 9.0,
        "{m:?}"
    );
    assert!(
        sample(&m, "warren_gateway_handshakes_dropped_total") >= 1.0,
        "{m:?}"
    );
    assert_still_serves(&stack, 0, "after-slowloris").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_pending_handshake() {
    const PER_IP: usize = 4;
    let stack =
        one_gateway("gateway.max_pending_handshakes_per_ip=4 gateway.handshake_timeout_s=20").await;
    let addr = stack.gateway_addr(0);
    let here: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let elsewhere: std::net::IpAddr = "127.0.0.2".parse().unwrap();

    // Silent connections from one address take its pending places...
    let mut silent = Vec::new();
    for _ in 0..PER_IP {
        silent.push(connect_from(here, addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...so more from it are closed at accept, far below the gateway's own cap (1024)...
    for i in 0..3 {
        let mut s = connect_from(here, addr).await.expect("connect");
        assert!(
            dropped_within(&mut s, AT_ONCE).await,
            "connection {} from one address",
            PER_IP + i + 1
        );
    }
    for s in &mut silent {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await;
        assert!(read.is_err(), "the first ones are still pending: {read:?}");
    }
    // ...while another address upgrades and is served.
    let mut other = RawWs::open_from(
        Some(elsewhere),
        addr,
        &Connect::token(stack.token("elsewhere")),
        &[],
        None,
    )
    .await
    .expect("upgrade from another address");
    assert_eq!(other.status, 101);
    other
        .send_text(r#"{"type":"ping","ref":"elsewhere"}"#)
        .await
        .unwrap();
    let mut pong = false;
    while let RawRead::Frame(f) = other.read_frame(WAIT).await {
        if f.text().contains(r#""ref":"elsewhere""#) {
            pong = true;
            break;
        }
    }
    assert!(pong, "the other address is answered");

    let m = metrics(&stack, 0).await;
    assert_eq!(
        sample(&m, "warren_gateway_handshakes_dropped_per_ip_total"),
        3.0
    );
    assert_eq!(sample(&m, "warren_gateway_handshakes_dropped_total"), 0.0);
    // Their places come back when they go.
    drop(silent);
    eventually("the first address connects again", CONVERGE, || async {
        match warren_tests::http::get(addr, "/").await {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await;
    assert_still_serves(&stack, 0, "after-per-address").await;
}
