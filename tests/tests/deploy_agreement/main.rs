//! The deployment files agree with the contract (`proto`) and with each other, offline.
//!
//! - `deploy/rabbitmq/definitions.json`: the topology is `proto::topology` (same names,
//!   types, flags and queue arguments, or the services' declarations would fail with
//!   `PRECONDITION_FAILED`); the accounts, tags, development passwords, permissions and
//!   topic permissions are `proto::accounts`. `definitions.cluster.json` is the same
//!   without the topology (the services declare it, with quorum command queues).
//! - `scripts/ensure-services.sh` gives the local stack's accounts the same patterns.
//! - `deploy/compose.yaml` and `deploy/compose.cluster.yaml`, rendered as compose renders
//!   them with only the required secrets set: every setting a service is given is a key
//!   of `common/src/defaults.toml`; safe defaults (no development tokens, the secret from
//!   the environment, every port published on 127.0.0.1); healthchecks, restart
//!   policies and grace periods; the logins against the definitions; Redis bounded
//!   (`noeviction`) and persistent; the cluster's nodes, seeds, cookie and addresses.
//! - `deploy/haproxy.cfg` against compose (backends, checks, no sticky routing, a log
//!   format without the query string, which may hold a token), and
//!   `deploy/rabbitmq/*.conf` (known keys only, mounted where compose expects them).
//! - `deploy/Dockerfile` and `.dockerignore` against the workspace.
//! - The observability files: every metric the Grafana dashboard and the alert rules
//!   use is one the gateway or dispatcher registers (or in a checked list of
//!   RabbitMQ's); the dashboard's structure and data source; each alert's `for:`,
//!   severity and its heading in docs/OPERATIONS.md; Prometheus scrapes exactly the
//!   compose services, at the ports they listen on; the `observability` profile.
//! - `deploy/k8s/`: probes on the ports the services listen on, the gateway's grace
//!   period against its preStop sleep and `gateway.shutdown_grace_s`, replicas
//!   against the shard count, settings, accounts, placeholders, security.
//!
//! `scripts/validate-deploy.sh` runs this with `docker-compose config` and `haproxy -c`,
//! which check the files' syntax; this test checks what they mean. Each test collects
//! every problem it finds and fails listing them all.

use std::path::{Path, PathBuf};

use regex::Regex;

mod accounts;
mod compose;
mod definitions;
mod haproxy;
mod image;
mod k8s;
mod observability;
mod rabbitmq_conf;
mod services;

use compose::Compose;

/// The secrets the compose files are rendered with (compose refuses to render without
/// them; `scripts/validate-deploy.sh` checks that it does).
pub(crate) const RENDER_SECRET: &str = "validate-deploy-render-secret";
pub(crate) const RENDER_COOKIE: &str = "validate-deploy-render-cookie";

pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub(crate) fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Problems found so far; the test fails with all of them.
#[derive(Default)]
pub(crate) struct Problems(Vec<String>);

impl Problems {
    pub(crate) fn bad(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    pub(crate) fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }

    pub(crate) fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} problem(s):\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

pub(crate) fn rx(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"))
}

/// Every check that applies to one compose file and the definitions it mounts. The
/// image is built the same for both files, so it is checked with the single node's.
fn deployment_agrees(compose: &'static str, definitions: &str, cluster: bool) {
    let mut p = Problems::default();
    let c = Compose::load(compose, cluster);
    services::check_services(&c, &mut p);
    services::check_warren_services(&c, &mut p);
    services::check_ports_and_redis(&c, &mut p);
    if cluster {
        services::check_redis_cluster(&c, &mut p);
    } else {
        image::check_image(&c, &mut p);
    }
    haproxy::check_haproxy(&c, &mut p);
    observability::check_compose_observability(&c, &mut p);
    rabbitmq_conf::check_rabbitmq_conf(&c, definitions, &mut p);
    definitions::check_definitions(&c, definitions, &mut p);
    p.finish();
}

#[test]
fn the_single_node_deployment_agrees() {
    deployment_agrees(
        "deploy/compose.yaml",
        "deploy/rabbitmq/definitions.json",
        false,
    );
}

#[test]
fn the_cluster_deployment_agrees() {
    deployment_agrees(
        "deploy/compose.cluster.yaml",
        "deploy/rabbitmq/definitions.cluster.json",
        true,
    );
}

#[test]
fn the_dashboard_and_alert_rules_use_metrics_that_exist() {
    let mut p = Problems::default();
    observability::check_dashboard(&mut p);
    observability::check_rules(&mut p);
    p.finish();
}

#[test]
fn the_kubernetes_manifests_agree() {
    let mut p = Problems::default();
    k8s::check_k8s(&mut p);
    p.finish();
}
