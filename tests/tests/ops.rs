//! Running Warren like a product: graceful shutdown and metrics, with real
//! processes against real RabbitMQ and Redis.
//!
//! Run `cargo build --workspace --bins` and `scripts/python-env.sh` first.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use warren_tests::{eventually, Stack, StackOptions};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_1001_exits_in_grace_and_drops_presence_at_once() {
    // The default presence expiry (15 s) stays, so a quick disappearance proves the
    // gateway removed its presence itself rather than letting it expire.
    let grace_s = 5;
    let mut stack = Stack::start(
        StackOptions::new(2, 1).env("WARREN__GATEWAY__SHUTDOWN_GRACE_S", &grace_s.to_string()),
    )
    .await;
    let mut observer = stack.connect(1, "observer").await;
    observer.join("lobby").await;
    let mut clients = Vec::new();
    for i in 0..100 {
        let mut c = stack.connect(0, &format!("user{i}")).await;
        c.join("lobby").await;
        clients.push(c);
    }
    let present = observer.presence_ids("lobby").await;
    assert_eq!(
        present.len(),
        101,
        "everyone is present before the shutdown: {present:?}"
    );

    let asked = Instant::now();
    stack.terminate_gateway(0);
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            c.closed_with(WAIT).await,
            Some(1001),
            "client {i} was not told 1001"
        );
    }
    let status = stack
        .wait_gateway_exit(0, Duration::from_secs(grace_s + 5))
        .await
        .expect("the gateway exits after SIGTERM");
    assert!(status.success(), "clean exit after SIGTERM, got {status}");
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(grace_s + 5),
        "the gateway took {took:?}, longer than its grace period allows"
    );
    // Bounded well under the 15 s expiry: the gateway removed its liveness key itself.
    observer
        .presence_becomes("lobby", &["observer"], Duration::from_secs(5))
        .await;
}

/// Parses `/metrics` with the Python `prometheus_client` OpenMetrics parser and returns
/// every sample as `name{labels}` → value.
async fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.local/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-env.sh",
        python.display()
    );
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;
    let mut child = tokio::process::Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(text.as_bytes())
        .await
        .expect("write metrics");
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the parser finishes")
        .expect("the parser runs");
    assert!(
        out.status.success(),
        "/metrics does not parse: {}\n--- text ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn sample(samples: &HashMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

/// Panics unless each `(sample, minimum)` of `samples` has reached its minimum.
fn assert_at_least(samples: &HashMap<String, f64>, minimums: &[(&str, f64)]) {
    for &(key, minimum) in minimums {
        assert!(sample(samples, key) >= minimum, "{key}: {samples:?}");
    }
}

/// The samples `fetch` answers with (a `/metrics` page), once each `(sample, minimum)`
/// has reached its minimum (within `WAIT`): confirm-counted figures settle a moment
/// after the client has its answer.
async fn metrics_reaching<F, Fut>(
    what: &str,
    fetch: F,
    minimums: &[(&str, f64)],
) -> HashMap<String, f64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = warren_tests::http::HttpResponse>,
{
    eventually(what, WAIT, || async {
        let m = parse_metrics(&fetch().await.text()).await;
        if minimums
            .iter()
            .all(|&(key, minimum)| sample(&m, key) >= minimum)
        {
            Ok(m)
        } else {
            Err(format!("{m:?}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_openmetrics_and_move_with_traffic() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let gateway_before = parse_metrics(&stack.ops_get(0, "/metrics").await.text()).await;
    let dispatcher_before = parse_metrics(&stack.dispatcher_get(0, "/metrics").await.text()).await;

    let mut alice = stack.connect(0, "alice").await;
    alice.join("metrics").await;
    for i in 0..5 {
        alice.send_acked("metrics", &format!("m{i}")).await;
    }

    // Confirm-counted figures settle a moment after the client has its answer: the broker's
    // publisher confirm can reach the gateway (and the dispatcher) after the dispatcher's
    // reply reached the client. Wait (bounded) for them, then check every figure.
    let gw = metrics_reaching(
        "the gateway counts join + 5 sends",
        || stack.ops_get(0, "/metrics"),
        &[
            ("warren_gateway_commands_total{code=accepted}", 6.0),
            ("warren_gateway_publish_confirm_seconds_count{}", 6.0),
        ],
    )
    .await;
    // Each ack is counted once, however it reached the connection.
    for counter in [
        "warren_gateway_frames_out_total{kind=ack}",
        "warren_gateway_frames_in_total{kind=send}",
    ] {
        let moved = sample(&gw, counter) - sample(&gateway_before, counter);
        assert_eq!(moved, 5.0, "{counter}: {gw:?}");
    }
    assert_eq!(sample(&gw, "warren_gateway_connections{}"), 1.0, "{gw:?}");
    assert_at_least(&gw, &[("warren_gateway_event_delay_seconds_count{}", 5.0)]);

    let d = metrics_reaching(
        "the dispatcher counts its confirms",
        || stack.dispatcher_get(0, "/metrics"),
        &[("warren_dispatcher_publish_confirm_seconds_count{}", 6.0)],
    )
    .await;
    let sent = "warren_dispatcher_commands_total{kind=send,outcome=ok}";
    assert_eq!(
        sample(&d, sent) - sample(&dispatcher_before, sent),
        5.0,
        "{d:?}"
    );
    assert_at_least(
        &d,
        &[
            ("warren_dispatcher_publish_confirm_seconds_count{}", 6.0),
            ("warren_dispatcher_redis_seconds_count{}", 6.0),
        ],
    );

    // Nothing secret is exposed.
    let gateway_text = stack.ops_get(0, "/metrics").await.text();
    let dispatcher_text = stack.dispatcher_get(0, "/metrics").await.text();
    for text in [&gateway_text, &dispatcher_text] {
        assert!(
            !text.contains(stack.secret()),
            "the JWT secret leaked into /metrics"
        );
        assert!(
            !text.contains("guest:guest"),
            "the broker URL leaked into /metrics"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_reports_health_and_readiness() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    assert_eq!(stack.dispatcher_get(0, "/healthz").await.status, 200);
    assert_eq!(stack.dispatcher_get(0, "/readyz").await.status, 200);
    assert_eq!(stack.ops_get(0, "/healthz").await.status, 200);
    assert_eq!(stack.ops_get(0, "/readyz").await.status, 200);
    // The same verdict as a gauge, for alerts (the broker-outage fault test sees 0).
    let dispatcher = stack.dispatcher_get(0, "/metrics").await.text();
    assert!(
        dispatcher.lines().any(|l| l == "warren_dispatcher_ready 1"),
        "{dispatcher}"
    );
    let gateway = stack.ops_get(0, "/metrics").await.text();
    assert!(
        gateway.lines().any(|l| l == "warren_gateway_ready 1"),
        "{gateway}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_dispatcher_cleanly_and_the_standby_takes_over() {
    let mut stack = Stack::start(StackOptions::new(1, 2)).await;
    let mut alice = stack.connect(0, "alice").await;
    alice.join("handover").await;
    let first = alice.send_acked("handover", "before").await;

    stack.terminate_dispatcher(0);
    let status = stack
        .wait_dispatcher_exit(0, Duration::from_secs(15))
        .await
        .expect("the dispatcher exits after SIGTERM");
    assert!(status.success(), "clean exit after SIGTERM, got {status}");

    // The standby now owns every shard: sends still go through, in order.
    let second = alice.send_acked("handover", "after").await;
    assert_eq!(
        second.seq,
        first.seq + 1,
        "seqs continue across the hand-over"
    );
    let history = alice.full_history("handover").await;
    let texts: Vec<&str> = history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        ["before", "after"],
        "history holds each message once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_and_never_show_tokens() {
    let stack = Stack::start(StackOptions::new(1, 1).env("WARREN__LOG__FORMAT", "json")).await;
    let token = stack.token("alice");
    let mut alice = stack.connect(0, "alice").await;
    alice.join("logs").await;
    alice.send_acked("logs", "hello").await;
    // A refused token must not be logged either.
    let refused = stack
        .http_get(0, "/ws?token=not.a.valid-token-secret-looking")
        .await;
    assert_eq!(refused.status, 401);
    alice.close().await;

    let mut lines = 0;
    for path in stack.logs() {
        let text = std::fs::read_to_string(&path).expect("log file");
        // The launcher marks each start of a process with a line of its own.
        let ours = |l: &str| l.starts_with("==== warren-stack");
        for line in text.lines().filter(|l| !l.trim().is_empty() && !ours(l)) {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", path.display()));
            assert!(
                v.get("level").is_some() && v.get("fields").is_some(),
                "{line}"
            );
            lines += 1;
        }
        assert!(!text.contains(&token), "{} shows a token", path.display());
        assert!(
            !text.contains(stack.secret()),
            "{} shows the secret",
            path.display()
        );
        assert!(
            !text.contains("not.a.valid-token"),
            "{} shows a refused token",
            path.display()
        );
    }
    assert!(lines > 0, "the services logged something");
}
