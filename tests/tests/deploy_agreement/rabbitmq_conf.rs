//! `deploy/rabbitmq/rabbitmq.conf` and `cluster.conf`, and how compose mounts them.

use std::collections::{BTreeMap, BTreeSet};

use crate::compose::{strings, Compose};
use crate::{read, rx, Problems, RENDER_COOKIE};

/// `key = value` lines of a RabbitMQ configuration file.
pub(crate) fn conf_lines(path: &str, p: &mut Problems) -> Vec<(String, String)> {
    let line_rx = rx(r"^([\w.$-]+)\s*=\s*(\S.*)$");
    let mut out = Vec::new();
    for (n, line) in read(path).lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line_rx.captures(line) {
            Some(m) => out.push((m[1].to_owned(), m[2].to_owned())),
            None => p.bad(format!("{path}:{}: not `key = value`: {line}", n + 1)),
        }
    }
    out
}

/// rabbitmq.conf's keys: each exists in RabbitMQ 3.10 and 4.x, except the
/// deprecated-features one (3.13+, used by the compose image). A mistyped key makes the
/// node refuse to boot, which no offline tool would tell.
pub(crate) const KNOWN_CONF: &[&str] = &[
    "load_definitions",
    "listeners.tcp.default",
    "management.tcp.port",
    "deprecated_features.permit.transient_nonexcl_queues",
    "vm_memory_high_watermark.relative",
    "disk_free_limit.absolute",
];

/// cluster.conf's keys (the compose image's 4.x; membership reconciliation is 3.13+).
pub(crate) const KNOWN_CLUSTER_CONF: &[&str] = &[
    "cluster_formation.peer_discovery_backend",
    "quorum_queue.continuous_membership_reconciliation.enabled",
    "quorum_queue.continuous_membership_reconciliation.target_group_size",
];

pub(crate) fn check_rabbitmq_conf(c: &Compose, definitions: &str, p: &mut Problems) {
    let conf: BTreeMap<String, String> = conf_lines("deploy/rabbitmq/rabbitmq.conf", p)
        .into_iter()
        .collect();
    for key in conf.keys() {
        p.check(KNOWN_CONF.contains(&key.as_str()), || {
            format!("rabbitmq.conf: unknown key {key} (add it to KNOWN_CONF if it is real)")
        });
    }
    p.check(
        conf.get("listeners.tcp.default")
            .is_none_or(|v| v == "5672")
            && conf.get("management.tcp.port").is_none_or(|v| v == "15672"),
        || "rabbitmq.conf: compose expects AMQP on 5672 and the console on 15672".to_owned(),
    );
    let nodes = if c.cluster {
        c.numbered("rabbitmq")
    } else {
        vec!["rabbitmq".to_owned()]
    };
    let at = conf.get("load_definitions").cloned().unwrap_or_default();
    for node in &nodes {
        let src = c.mount(node, &at);
        p.check(src.as_deref() == Some(definitions), || {
            format!("compose: {node} mounts {src:?} at {at}, not {definitions}")
        });
        let confs: Vec<String> = strings(&c.svc(node)["volumes"]);
        let mounts = |file: &str| {
            confs.iter().any(|v| {
                v.starts_with(&format!("./rabbitmq/{file}:/etc/rabbitmq/"))
                    && v.split(':').nth(1).is_some_and(|d| d.ends_with(".conf"))
            })
        };
        p.check(mounts("rabbitmq.conf"), || {
            format!("compose: {node} does not mount deploy/rabbitmq/rabbitmq.conf")
        });
        if c.cluster {
            p.check(mounts("cluster.conf"), || {
                format!("compose: {node} does not mount deploy/rabbitmq/cluster.conf")
            });
        }
    }
    if !c.cluster {
        return;
    }
    let mut settings = BTreeMap::new();
    let mut seeds = BTreeSet::new();
    let seed_key = rx(r"^cluster_formation\.classic_config\.nodes\.\d+$");
    for (key, value) in conf_lines("deploy/rabbitmq/cluster.conf", p) {
        if seed_key.is_match(&key) {
            seeds.insert(value);
        } else if KNOWN_CONF.contains(&key.as_str()) {
            p.bad(format!("cluster.conf: {key} belongs in rabbitmq.conf"));
        } else if !KNOWN_CLUSTER_CONF.contains(&key.as_str()) {
            p.bad(format!("cluster.conf: unknown key {key}"));
        } else {
            settings.insert(key, value);
        }
    }
    let backend = settings.get("cluster_formation.peer_discovery_backend");
    p.check(
        matches!(
            backend.map(String::as_str),
            Some("classic_config" | "rabbit_peer_discovery_classic_config")
        ),
        || "cluster.conf: peer_discovery_backend is not classic_config".to_owned(),
    );
    let size = settings
        .get("quorum_queue.continuous_membership_reconciliation.target_group_size")
        .cloned()
        .unwrap_or_else(|| nodes.len().to_string());
    p.check(size == nodes.len().to_string(), || {
        format!(
            "cluster.conf: the quorum queues' target group size is not {}",
            nodes.len()
        )
    });
    // A node is rabbit@<its hostname>; a fixed hostname keeps its name and data.
    let names: BTreeSet<String> = nodes
        .iter()
        .filter_map(|n| c.svc(n)["hostname"].as_str().map(|h| format!("rabbit@{h}")))
        .collect();
    p.check(names.len() == nodes.len() && seeds == names, || {
        format!("cluster.conf: classic_config lists {seeds:?}, the compose nodes are {names:?}")
    });
    for node in &nodes {
        let cookie = c.env(node).get("RABBITMQ_ERLANG_COOKIE").cloned();
        p.check(cookie.as_deref() == Some(RENDER_COOKIE), || {
            format!("compose: {node} does not take its cookie from WARREN_RABBITMQ_COOKIE")
        });
    }
}
