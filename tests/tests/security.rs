//! Safe by default (issue 13): what a deployment must never expose, with real gateway
//! and dispatcher processes against real RabbitMQ and Redis. Each test here failed on
//! the code before its fix.
//!
//! Run `cargo build --workspace --bins` first.

use std::time::Duration;

use warren_tests::http;
use warren_tests::{Stack, StackOptions};

/// The built-in development secret (common/src/settings.rs).
const DEV_SECRET: &str = "warren-dev-secret-insecure";
const EXIT_WAIT: Duration = Duration::from_secs(15);

/// Item 1: a gateway whose public listener is not loopback refuses to start with the
/// development secret or with `/dev/token`, unless the loudly named setting says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_refuses_development_auth_off_loopback() {
    let mut stack = Stack::start(StackOptions::new(0, 1)).await;
    let off_loopback = ("WARREN__GATEWAY__LISTEN", "0.0.0.0:0");
    for (what, env) in [
        (
            "the development secret",
            vec![off_loopback, ("WARREN__AUTH__SECRET", DEV_SECRET)],
        ),
        (
            "development tokens",
            vec![off_loopback, ("WARREN__GATEWAY__DEV_TOKENS", "true")],
        ),
    ] {
        let (status, log) = stack
            .gateway_refusal(&env, EXIT_WAIT)
            .await
            .unwrap_or_else(|| panic!("with {what} off loopback the gateway kept running"));
        assert!(!status.success(), "{what}: exit status {status}");
        assert!(
            log.contains("refusing to start") && log.contains("insecure_dev_auth_on_network"),
            "{what}: the log says why and what to set: {log}"
        );
    }

    // On loopback (the local stack) and with the explicit setting, it starts.
    let local = stack
        .start_gateway_with(&[
            ("WARREN__AUTH__SECRET", DEV_SECRET),
            ("WARREN__GATEWAY__DEV_TOKENS", "true"),
        ])
        .await;
    assert_eq!(stack.ops_get(local, "/readyz").await.status, 200);
    let demo = stack
        .start_gateway_with(&[
            off_loopback,
            ("WARREN__AUTH__SECRET", DEV_SECRET),
            ("WARREN__GATEWAY__DEV_TOKENS", "true"),
            ("WARREN__AUTH__INSECURE_DEV_AUTH_ON_NETWORK", "true"),
        ])
        .await;
    assert_eq!(stack.ops_get(demo, "/readyz").await.status, 200);
}

/// Item 2: the operations endpoints are not on the public port, `/stats` gives counts
/// and no names, and `/dev/token` answers only loopback or allowed hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_are_private_and_tell_no_names() {
    let stack =
        Stack::start(StackOptions::new(1, 1).env("WARREN__GATEWAY__DEV_TOKENS", "true")).await;
    let mut carol = stack.connect(0, "carol-secret-user").await;
    carol.join("secret-room-name").await;

    for path in ["/metrics", "/stats", "/healthz", "/readyz"] {
        let public = stack.http_get(0, path).await;
        assert_eq!(public.status, 404, "public GET {path}: {}", public.text());
        let ops = stack.ops_get(0, path).await;
        assert_eq!(ops.status, 200, "ops GET {path}: {}", ops.text());
    }
    // The web client stays on the public port.
    assert_eq!(stack.http_get(0, "/").await.status, 200);

    let stats = stack.ops_get(0, "/stats").await;
    let text = stats.text();
    for name in ["carol-secret-user", "secret-room-name"] {
        assert!(!text.contains(name), "/stats names {name}: {text}");
    }
    let json = stats.json().expect("/stats is JSON");
    assert_eq!(json["connections"], 1, "{json}");
    assert_eq!(json["rooms"], 1, "{json}");
    assert!(json["bindings"].is_u64(), "bindings is a count: {json}");

    // /dev/token: loopback Host answers, a rebound name does not.
    let addr = stack.gateway_addr(0);
    let mint = |host: String| {
        let body = r#"{"name":"Mallory"}"#;
        let head = format!(
            "POST /dev/token HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        async move { http::request(addr, &head).await.expect("POST /dev/token") }
    };
    let local = mint(addr.to_string()).await;
    assert_eq!(local.status, 200, "{}", local.text());
    let rebound = mint(format!("attacker.example:{}", addr.port())).await;
    assert_eq!(rebound.status, 403, "{}", rebound.text());
    assert!(rebound.json().is_some_and(|j| j.get("token").is_none()));
    carol.close().await;
}
