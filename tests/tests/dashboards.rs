//! The Grafana dashboard and the Prometheus alert rules ask for metrics a running
//! Warren really serves: a stack on the machine's RabbitMQ and Redis, some traffic, and
//! every `warren_*` name of `deploy/grafana/dashboards/*.json` and
//! `deploy/prometheus/rules/*.yml` found on a live gateway's or dispatcher's
//! `/metrics`. (The offline `deploy_agreement` test reads the same names from the
//! metrics modules; this one catches what reading the source cannot, such as a
//! registry that renames or a family that never appears.)
//!
//! Run `cargo build --workspace --bins` first.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;
use serde_json::json;
use warren_tests::{eventually, Connect, Stack, StackOptions};

const WAIT: Duration = Duration::from_secs(15);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every query in the files of `dir` ending in `ext`, with the file: the `expr`
/// fields of a dashboard's panels (JSON) or of a rule file's rules (YAML).
fn queries_in(dir: &str, ext: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(repo().join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some(ext) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let doc: serde_json::Value = if ext == "json" {
            serde_json::from_str(&text).expect("dashboard JSON")
        } else {
            serde_yaml_ng::from_str(&text).expect("rules YAML")
        };
        let file = path.display().to_string();
        collect_exprs(&doc, &mut |expr| out.push((expr.to_owned(), file.clone())));
    }
    out
}

fn collect_exprs(v: &serde_json::Value, found: &mut impl FnMut(&str)) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v.as_str()) {
                    ("expr", Some(expr)) => found(expr),
                    _ => collect_exprs(v, found),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, found)),
        _ => {}
    }
}

/// Every `warren_*` metric name the queries use, with the file.
fn names_in(dir: &str, ext: &str) -> BTreeSet<(String, String)> {
    let name = Regex::new(r"\bwarren_[a-z0-9_]+\b").expect("regex");
    queries_in(dir, ext)
        .into_iter()
        .flat_map(|(expr, file)| {
            name.find_iter(&expr)
                .map(|m| (m.as_str().to_owned(), file.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The sample names of a `/metrics` page (OpenMetrics text).
fn sample_names(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_use_is_served() {
    let wanted: BTreeSet<(String, String)> = names_in("deploy/grafana/dashboards", "json")
        .into_iter()
        .chain(names_in("deploy/prometheus/rules", "yml"))
        .collect();
    assert!(
        wanted.len() >= 10,
        "the dashboard and rules name too few metrics to be what this test expects: {wanted:?}"
    );

    let stack = Stack::start(StackOptions::new(1, 1)).await;
    // Traffic that makes every labelled family appear: a refused handshake, a command
    // answered with an error, a message sent, acked and delivered, a closed connection.
    let refused = stack.handshake(0, &Connect::anonymous()).await;
    assert_eq!(
        refused.status, 401,
        "a handshake without a token is refused"
    );
    let mut alice = stack.connect(0, "alice").await;
    alice.join("dashboards").await;
    alice.send_acked("dashboards", "hello").await;
    let bad = alice.new_ref("bad");
    alice
        .send_frame(json!({"type": "send", "ref": bad, "room": "dashboards"}))
        .await;
    let answer = alice.answer(&bad).await;
    assert_eq!(
        answer["type"], "error",
        "a send without text is refused: {answer}"
    );
    let bob = stack.connect(0, "bob").await;
    bob.close().await;

    eventually(
        "every metric the dashboard and rules use served",
        WAIT,
        || async {
            let mut served = sample_names(&stack.ops_get(0, "/metrics").await.text());
            served.extend(sample_names(
                &stack.dispatcher_get(0, "/metrics").await.text(),
            ));
            let missing: Vec<&(String, String)> = wanted
                .iter()
                .filter(|(name, _)| !served.contains(name))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("not served: {missing:?}\nserved: {served:?}"))
            }
        },
    )
    .await;
    alice.close().await;
}
