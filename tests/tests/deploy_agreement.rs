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
//!
//! `scripts/validate-deploy.sh` runs this with `docker-compose config` and `haproxy -c`,
//! which check the files' syntax; this test checks what they mean. Each test collects
//! every problem it finds and fails listing them all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use base64::Engine;
use proto::accounts::{self, escape, Permissions};
use proto::amqp::Names;
use proto::topology::{topology, Arg};
use regex::Regex;
use serde_json::{json, Value as Json};
use serde_yaml_ng::Value as Yaml;
use sha2::{Digest, Sha256};

/// The secrets the compose files are rendered with (compose refuses to render without
/// them; `scripts/validate-deploy.sh` checks that it does).
const RENDER_SECRET: &str = "validate-deploy-render-secret";
const RENDER_COOKIE: &str = "validate-deploy-render-cookie";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Problems found so far; the test fails with all of them.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn bad(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }

    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} problem(s):\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

fn rx(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"))
}

// --- compose ----------------------------------------------------------------------

/// Compose's interpolation: `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
/// `${VAR:?error}` and `$$`, with only `vars` set.
fn interpolate(text: &str, vars: &BTreeMap<&str, &str>) -> String {
    let var = rx(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}");
    var.replace_all(text, |c: &regex::Captures| {
        let Some(name) = c.get(1) else {
            return "$".to_owned();
        };
        let value = vars.get(name.as_str()).copied();
        let op = c.get(2).map_or("", |m| m.as_str());
        let arg = c.get(3).map_or("", |m| m.as_str());
        let unset = value.is_none() || (op.starts_with(':') && value == Some(""));
        match (unset, op) {
            (true, ":-" | "-") => arg.to_owned(),
            (true, ":?" | "?") => panic!("compose refuses to render: {arg}"),
            _ => value.unwrap_or_default().to_owned(),
        }
    })
    .into_owned()
}

/// A compose file as compose renders it with only the required secrets set: variables
/// interpolated, merge keys applied. A key written twice in one mapping is an error
/// here, as in Compose v2.
fn render(path: &str) -> Yaml {
    let vars = BTreeMap::from([
        ("WARREN_AUTH_SECRET", RENDER_SECRET),
        ("WARREN_RABBITMQ_COOKIE", RENDER_COOKIE),
    ]);
    let mut doc: Yaml = serde_yaml_ng::from_str(&interpolate(&read(path), &vars))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    // One pass merges one level: an anchor that merges another (`x-gateway` merges
    // `x-warren`) brings its own `<<` along, merged by the next pass.
    for _ in 0..4 {
        doc.apply_merge().unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    doc
}

fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Bool(b) => Some(b.to_string()),
        Yaml::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(scalar).collect())
        .unwrap_or_default()
}

/// Compose durations: `20s`, `1m30s`, `500ms`.
fn duration_s(text: &str) -> Option<f64> {
    let part = rx(r"^(\d+(?:\.\d+)?)(ms|us|h|m|s)");
    let (mut rest, mut total) = (text, 0.0);
    while !rest.is_empty() {
        let c = part.captures(rest)?;
        let unit = match &c[2] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            _ => 1e-6,
        };
        total += c[1].parse::<f64>().ok()? * unit;
        rest = &rest[c[0].len()..];
    }
    (!text.is_empty()).then_some(total)
}

fn port_of(listen: &str) -> (String, Option<u16>) {
    match listen.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().ok()),
        None => (String::new(), None),
    }
}

/// The parts of a URL the checks need: scheme, user, password, host, port, path.
struct Url {
    scheme: String,
    user: String,
    password: String,
    host: String,
    port: Option<u16>,
    /// The vhost, for an AMQP URL.
    path: String,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_url(url: &str) -> Url {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (cred, hostport) = authority.rsplit_once('@').unwrap_or(("", authority));
    let (user, password) = cred.split_once(':').unwrap_or((cred, ""));
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()),
        None => (hostport, None),
    };
    Url {
        scheme: scheme.to_owned(),
        user: percent_decode(user),
        password: percent_decode(password),
        host: host.to_owned(),
        port,
        path: percent_decode(path),
    }
}

/// One compose file, rendered, with what the checks ask of it.
struct Compose {
    cluster: bool,
    doc: Yaml,
    defaults: toml::Table,
    local: toml::Table,
}

impl Compose {
    fn load(path: &'static str, cluster: bool) -> Compose {
        Compose {
            cluster,
            doc: render(path),
            defaults: read("common/src/defaults.toml")
                .parse()
                .expect("defaults.toml"),
            local: read("deploy/local.toml")
                .parse()
                .expect("deploy/local.toml"),
        }
    }

    fn services(&self) -> BTreeMap<String, &Yaml> {
        self.doc["services"]
            .as_mapping()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v)))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn svc(&self, name: &str) -> &Yaml {
        &self.doc["services"][name]
    }

    /// Services named `<stem><digits>`, sorted.
    fn numbered(&self, stem: &str) -> Vec<String> {
        let re = rx(&format!("^{stem}[0-9]+$"));
        self.services()
            .into_keys()
            .filter(|s| re.is_match(s))
            .collect()
    }

    fn env(&self, svc: &str) -> BTreeMap<String, String> {
        self.svc(svc)["environment"]
            .as_mapping()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        Some((k.as_str()?.to_owned(), scalar(v).unwrap_or_default()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The value a Warren service sees: its environment, else its `--config` file
    /// (`deploy/local.toml`, checked below), else the built-in default.
    fn setting(&self, svc: &str, section: &str, key: &str) -> Option<String> {
        let name = format!("WARREN__{}__{}", section.to_uppercase(), key.to_uppercase());
        if let Some(v) = self.env(svc).get(&name) {
            return Some(v.clone());
        }
        [&self.local, &self.defaults].into_iter().find_map(|layer| {
            let v = layer.get(section)?.get(key)?;
            Some(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            })
        })
    }

    fn is_setting(&self, section: &str, key: &str) -> bool {
        (section, key) == ("auth", "public_key_file")
            || self
                .defaults
                .get(section)
                .and_then(|s| s.as_table())
                .is_some_and(|s| s.contains_key(key))
    }

    /// The source mounted at `target` in `svc`, relative paths resolved from deploy/.
    fn mount(&self, svc: &str, target: &str) -> Option<String> {
        strings(&self.svc(svc)["volumes"])
            .into_iter()
            .find_map(|v| {
                let mut parts = v.split(':');
                let (src, dst) = (parts.next()?, parts.next()?);
                (dst == target).then(|| match src.strip_prefix("./") {
                    Some(rel) => format!("deploy/{rel}"),
                    None => src.to_owned(),
                })
            })
    }

    fn command(&self, svc: &str) -> Vec<String> {
        strings(&self.svc(svc)["command"])
    }

    fn gateways(&self) -> Vec<String> {
        self.numbered("gateway")
    }

    fn warren_services(&self) -> Vec<String> {
        let mut all = self.gateways();
        all.extend(self.numbered("dispatcher"));
        all
    }
}

/// Every service: a healthcheck and a restart policy (a one-shot service, which others
/// wait to complete, neither restarts nor needs one), and waits on healthy services.
fn check_services(c: &Compose, p: &mut Problems) {
    let services = c.services();
    let one_shot: BTreeSet<String> = services
        .values()
        .filter_map(|s| s["depends_on"].as_mapping())
        .flat_map(|deps| deps.iter())
        .filter(|(_, how)| how["condition"].as_str() == Some("service_completed_successfully"))
        .filter_map(|(dep, _)| dep.as_str().map(str::to_owned))
        .collect();
    for (name, svc) in &services {
        let restart = svc["restart"].as_str().unwrap_or("");
        if one_shot.contains(name) {
            p.check(matches!(restart, "no" | "on-failure"), || {
                format!("compose: one-shot service {name} has restart: {restart:?}, not \"no\"")
            });
        } else {
            let hc = &svc["healthcheck"];
            p.check(
                !strings(&hc["test"]).is_empty() && hc["disable"].as_bool() != Some(true),
                || format!("compose: service {name} has no healthcheck"),
            );
            p.check(
                matches!(restart, "always" | "unless-stopped" | "on-failure"),
                || format!("compose: service {name} has no restart policy"),
            );
        }
        for (dep, how) in svc["depends_on"].as_mapping().into_iter().flatten() {
            let dep = dep.as_str().unwrap_or("");
            let cond = how["condition"].as_str().unwrap_or("");
            p.check(
                cond == "service_healthy"
                    || (cond == "service_completed_successfully" && one_shot.contains(dep)),
                || format!("compose: {name} depends on {dep} with condition {cond:?}"),
            );
        }
    }
    let required: &[&str] = if c.cluster {
        &["lb", "redis-cluster-init"]
    } else {
        &["rabbitmq", "redis", "lb"]
    };
    for r in required {
        p.check(services.contains_key(*r), || {
            format!("compose: no `{r}` service")
        });
    }
    for stem in ["gateway", "dispatcher"] {
        let found = c.numbered(stem);
        p.check(found.len() >= 2, || {
            format!("compose: expected at least two {stem} services ({stem}N), found {found:?}")
        });
    }
    if c.cluster {
        for (stem, n) in [("rabbitmq", 3), ("redis", 6)] {
            let found = c.numbered(stem);
            p.check(found.len() == n, || {
                format!("compose: expected {n} {stem} nodes, found {found:?}")
            });
        }
    }
}

/// The Warren services: known settings only, safe defaults, graceful stop, probes,
/// broker and store addresses.
fn check_warren_services(c: &Compose, p: &mut Problems) {
    for (section, keys) in &c.local {
        let Some(keys) = keys.as_table() else {
            p.bad(format!("deploy/local.toml: [{section}] is not a table"));
            continue;
        };
        for key in keys.keys() {
            p.check(c.is_setting(section, key), || {
                format!("deploy/local.toml: [{section}] {key} is not a setting")
            });
        }
    }
    let gateways = c.gateways();
    let setting_name = rx(r"^WARREN__([A-Z0-9_]+?)__([A-Z0-9_]+)$");
    for name in c.warren_services() {
        let is_gw = gateways.contains(&name);
        let cmd = c.command(&name);
        let binary = if is_gw {
            "warren-gateway"
        } else {
            "warren-dispatcher"
        };
        p.check(cmd.first().map(String::as_str) == Some(binary), || {
            format!("compose: {name} runs {cmd:?}, expected {binary}")
        });
        match cmd.iter().position(|a| a == "--config") {
            Some(i) if cmd.len() > i + 1 => {
                let src = c.mount(&name, &cmd[i + 1]);
                p.check(src.as_deref() == Some("deploy/local.toml"), || {
                    format!("compose: {name}'s --config is not deploy/local.toml ({src:?})")
                });
            }
            _ => p.bad(format!("compose: {name} runs without --config")),
        }
        for key in c.env(&name).keys() {
            match setting_name.captures(key) {
                Some(m) => {
                    let (section, field) = (m[1].to_lowercase(), m[2].to_lowercase());
                    p.check(c.is_setting(&section, &field), || {
                        format!(
                            "compose: {name}: {key} is not a setting (common/src/defaults.toml)"
                        )
                    });
                }
                None if key.starts_with("WARREN") => p.bad(format!(
                    "compose: {name}: {key} is not WARREN__SECTION__KEY"
                )),
                None => {}
            }
        }
        // Graceful stop: compose waits longer than the gateway's own grace period.
        let grace: f64 = c
            .setting(&name, "gateway", "shutdown_grace_s")
            .and_then(|g| g.parse().ok())
            .unwrap_or(0.0);
        let stop = c.svc(&name)["stop_grace_period"].as_str().unwrap_or("10s");
        p.check(duration_s(stop).is_some_and(|s| s > grace), || {
            format!("compose: {name}: stop_grace_period {stop} is not longer than {grace} s")
        });
        // The healthcheck probes /readyz on the operations listener; every listener is
        // on all the container's interfaces (HAProxy and the probe reach them).
        let (section, ops_key) = if is_gw {
            ("gateway", "ops_listen")
        } else {
            ("dispatcher", "listen")
        };
        let keys: &[&str] = if is_gw {
            &["listen", "ops_listen"]
        } else {
            &["listen"]
        };
        for key in keys {
            let listen = c.setting(&name, section, key).unwrap_or_default();
            p.check(
                matches!(port_of(&listen).0.as_str(), "0.0.0.0" | "[::]" | "::"),
                || format!("compose: {name}: {section}.{key} is {listen}, unreachable from other containers"),
            );
        }
        let port = port_of(&c.setting(&name, section, ops_key).unwrap_or_default()).1;
        let test = strings(&c.svc(&name)["healthcheck"]["test"]);
        let want = [
            "CMD".to_owned(),
            "warren-probe".to_owned(),
            format!("{}", port.unwrap_or(0)),
        ];
        p.check(
            test.len() >= 3 && test[..3] == want && test.get(3).is_none_or(|t| t == "/readyz"),
            || {
                format!(
                    "compose: {name}: healthcheck {test:?} does not probe /readyz on port {port:?}"
                )
            },
        );
        // Safe by default.
        if is_gw {
            for (section, key, want) in [
                ("gateway", "dev_tokens", "false"),
                ("auth", "insecure_dev_auth_on_network", "false"),
                ("auth", "secret", RENDER_SECRET),
            ] {
                let got = c.setting(&name, section, key).unwrap_or_default();
                p.check(got.to_lowercase() == want, || {
                    format!(
                        "compose: {name}: {section}.{key} is {got:?} by default, expected {want:?}"
                    )
                });
            }
        }
        if c.cluster {
            check_cluster_service(c, &name, p);
        } else {
            for (section, key) in [("amqp", "url"), ("redis", "url")] {
                let host = parse_url(&c.setting(&name, section, key).unwrap_or_default()).host;
                p.check(c.services().contains_key(&host), || {
                    format!("compose: {name}: {section}.{key} points at {host:?}, not a service")
                });
            }
        }
    }
    let ids: Vec<String> = gateways
        .iter()
        .map(|g| c.setting(g, "gateway", "id").unwrap_or_default())
        .collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    p.check(
        distinct.len() == ids.len() && !distinct.contains(&String::new()),
        || format!("compose: gateway ids must be set and distinct, got {ids:?}"),
    );
    let same = |services: &[String], section: &str, key: &str, p: &mut Problems| {
        let values: BTreeSet<Option<String>> = services
            .iter()
            .map(|s| c.setting(s, section, key))
            .collect();
        p.check(values.len() <= 1, || {
            format!("compose: {section}.{key} differs between services")
        });
    };
    let all = c.warren_services();
    for (section, key) in [
        ("amqp", "prefix"),
        ("amqp", "shards"),
        ("amqp", "gateway_accounts"),
        ("amqp", "command_queue_type"),
        ("redis", "prefix"),
        ("redis", "url"),
        ("redis", "cluster_nodes"),
    ] {
        same(&all, section, key, p);
    }
    for (section, key) in [
        ("auth", "secret"),
        ("auth", "algorithm"),
        ("gateway", "allowed_origins"),
    ] {
        same(&gateways, section, key, p);
    }
}

/// A Warren service of the cluster file: every node of each cluster once, quorum
/// command queues, and it starts once every broker node is healthy and the Redis
/// Cluster is made.
fn check_cluster_service(c: &Compose, name: &str, p: &mut Problems) {
    for (section, key, stem, port, scheme) in [
        ("amqp", "urls", "rabbitmq", 5672, "amqp"),
        ("redis", "cluster_nodes", "redis", 6379, "redis"),
    ] {
        let listed: Vec<Url> = c
            .setting(name, section, key)
            .unwrap_or_default()
            .split(',')
            .filter(|u| !u.trim().is_empty())
            .map(|u| parse_url(u.trim()))
            .collect();
        let mut hosts: Vec<String> = listed.iter().map(|u| u.host.clone()).collect();
        hosts.sort();
        p.check(hosts == c.numbered(stem), || {
            format!("compose: {name}: {section}.{key} lists {hosts:?}, not each {stem} node once")
        });
        for u in &listed {
            p.check(u.scheme == scheme && u.port == Some(port), || {
                format!("compose: {name}: {section}.{key} has {}://{}, expected {scheme}://<node>:{port}", u.scheme, u.host)
            });
        }
    }
    let queue_type = c.setting(name, "amqp", "command_queue_type");
    p.check(queue_type.as_deref() == Some("quorum"), || {
        format!("compose: {name}: amqp.command_queue_type is {queue_type:?}, expected quorum")
    });
    let deps = &c.svc(name)["depends_on"];
    for node in c.numbered("rabbitmq") {
        p.check(
            deps[node.as_str()]["condition"].as_str() == Some("service_healthy"),
            || format!("compose: {name} does not wait for {node} to be healthy"),
        );
    }
    p.check(
        deps["redis-cluster-init"]["condition"].as_str() == Some("service_completed_successfully"),
        || format!("compose: {name} does not wait for redis-cluster-init to complete"),
    );
}

/// Ports on 127.0.0.1 only; the load balancer's origin allowed; Redis persistent and
/// bounded.
fn check_ports_and_redis(c: &Compose, p: &mut Problems) {
    let short = rx(r"^(?:([\d.]+):)?(\d+):(\d+)(?:/tcp)?$");
    let mut lb_port = None;
    for (name, svc) in c.services() {
        for port in svc["ports"].as_sequence().into_iter().flatten() {
            let (host_ip, published, target) = match scalar(port) {
                Some(text) => match short.captures(&text) {
                    Some(m) => (
                        m.get(1).map(|h| h.as_str().to_owned()),
                        m[2].parse::<u16>().ok(),
                        m[3].parse::<u16>().ok(),
                    ),
                    None => (None, None, None),
                },
                None => (
                    port["host_ip"].as_str().map(str::to_owned),
                    scalar(&port["published"]).and_then(|s| s.parse().ok()),
                    scalar(&port["target"]).and_then(|s| s.parse().ok()),
                ),
            };
            p.check(host_ip.as_deref() == Some("127.0.0.1"), || {
                format!(
                    "compose: {name} publishes {port:?} on {host_ip:?} by default, not 127.0.0.1"
                )
            });
            if name == "lb" && target == Some(8080) {
                lb_port = published;
            }
        }
        let cmd = c.command(&name);
        if cmd.first().map(String::as_str) == Some("redis-server") {
            p.check(
                cmd.iter().any(|a| a == "--maxmemory") && cmd.iter().any(|a| a == "noeviction"),
                || format!("compose: {name} must run with --maxmemory and noeviction"),
            );
        }
    }
    match lb_port {
        None => p.bad("compose: lb does not publish its port 8080"),
        Some(port) => {
            for g in c.gateways() {
                let origins = c
                    .setting(&g, "gateway", "allowed_origins")
                    .unwrap_or_default();
                p.check(
                    origins
                        .split(',')
                        .any(|o| o == format!("http://localhost:{port}")),
                    || format!("compose: {g}: allowed_origins lacks http://localhost:{port}"),
                );
            }
        }
    }
    let nodes = if c.cluster {
        c.numbered("redis")
    } else {
        vec!["redis".to_owned()]
    };
    let mut volumes = BTreeSet::new();
    for node in &nodes {
        let cmd = c.command(node).join(" ");
        p.check(rx(r"--appendonly\s+yes").is_match(&cmd), || {
            format!("compose: {node} does not run with --appendonly yes")
        });
        match c.mount(node, "/data") {
            None => p.bad(format!("compose: {node} has no volume on /data")),
            Some(src) => p.check(volumes.insert(src.clone()), || {
                format!("compose: {node} shares the volume {src} on /data")
            }),
        }
        if c.cluster {
            p.check(rx(r"--cluster-enabled\s+yes").is_match(&cmd), || {
                format!("compose: {node} does not run with --cluster-enabled yes")
            });
        }
    }
}

/// The Redis Cluster: fixed addresses in the `redis` network's subnet, outside its
/// dynamic range, made a cluster of three masters with a replica each by the init.
fn check_redis_cluster(c: &Compose, p: &mut Problems) {
    let pool = &c.doc["networks"]["redis"]["ipam"]["config"][0];
    let parse_net = |v: &Yaml| -> Option<(u32, u32)> {
        let (addr, bits) = v.as_str()?.split_once('/')?;
        let addr: std::net::Ipv4Addr = addr.parse().ok()?;
        let bits: u32 = bits.parse().ok()?;
        let mask = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        Some((u32::from(addr) & mask, mask))
    };
    let inside = |net: Option<(u32, u32)>, ip: u32| net.is_some_and(|(a, m)| ip & m == a);
    let subnet = parse_net(&pool["subnet"]);
    let dynamic = parse_net(&pool["ip_range"]);
    p.check(subnet.is_some(), || {
        "compose: no `redis` network with an ipam subnet".to_owned()
    });
    let mut seen = BTreeSet::new();
    let nodes = c.numbered("redis");
    for node in &nodes {
        let addr = c.svc(node)["networks"]["redis"]["ipv4_address"]
            .as_str()
            .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok());
        let Some(addr) = addr else {
            p.bad(format!(
                "compose: {node} has no fixed ipv4_address on the redis network"
            ));
            continue;
        };
        let ip = u32::from(addr);
        p.check(inside(subnet, ip), || {
            format!("compose: {node}'s {addr} is outside the subnet")
        });
        p.check(!inside(dynamic, ip), || {
            format!("compose: {node}'s {addr} is in ip_range")
        });
        p.check(seen.insert(ip), || {
            format!("compose: {node} shares the address {addr}")
        });
    }
    let init = c.command("redis-cluster-init").join(" ");
    p.check(
        rx(r"--cluster\s+create\b").is_match(&init)
            && rx(r"--cluster-replicas\s+1\b").is_match(&init)
            && init.contains("--cluster-yes"),
        || {
            "compose: redis-cluster-init does not create the cluster with one replica each"
                .to_owned()
        },
    );
    let listed: BTreeSet<String> = rx(r"\b(redis\d+):6379\b")
        .captures_iter(&init)
        .map(|m| m[1].to_owned())
        .collect();
    p.check(listed == nodes.iter().cloned().collect(), || {
        format!("compose: redis-cluster-init creates the cluster of {listed:?}, not {nodes:?}")
    });
    for node in &nodes {
        p.check(
            c.svc("redis-cluster-init")["depends_on"][node.as_str()]["condition"].as_str()
                == Some("service_healthy"),
            || format!("compose: redis-cluster-init does not wait for {node} to be healthy"),
        );
    }
}

// --- HAProxy and RabbitMQ's configuration -----------------------------------------

fn check_haproxy(c: &Compose, p: &mut Problems) {
    let cfg = read("deploy/haproxy.cfg");
    let src = c.mount("lb", "/usr/local/etc/haproxy/haproxy.cfg");
    p.check(src.as_deref() == Some("deploy/haproxy.cfg"), || {
        format!("compose: lb does not mount deploy/haproxy.cfg ({src:?})")
    });
    let backend = rx(r"(?ms)^backend gateways\n(.*?)(?:^\S|\z)")
        .captures(&cfg)
        .map(|m| m[1].to_owned());
    p.check(backend.is_some(), || {
        "haproxy.cfg: no `backend gateways`".to_owned()
    });
    let servers: Vec<(String, u16, String)> = rx(r"(?m)^\s*server\s+\S+\s+([\w.-]+):(\d+)(.*)$")
        .captures_iter(backend.as_deref().unwrap_or(""))
        .map(|m| (m[1].to_owned(), m[2].parse().unwrap_or(0), m[3].to_owned()))
        .collect();
    let names: BTreeSet<String> = servers.iter().map(|s| s.0.clone()).collect();
    p.check(names == c.gateways().into_iter().collect(), || {
        format!("haproxy.cfg: backend servers {names:?} differ from the compose gateways")
    });
    let check_port = rx(r"\bport\s+(\d+)");
    for (g, port, rest) in &servers {
        let listen = port_of(&c.setting(g, "gateway", "listen").unwrap_or_default()).1;
        p.check(listen == Some(*port), || {
            format!("haproxy.cfg: server {g}:{port} is not the port {g} listens on")
        });
        let ops = port_of(&c.setting(g, "gateway", "ops_listen").unwrap_or_default()).1;
        let checked = check_port.captures(rest).and_then(|m| m[1].parse().ok());
        p.check(checked.is_some() && checked == ops, || {
            format!("haproxy.cfg: server {g} is not checked on gateway.ops_listen")
        });
    }
    for directive in [
        "option httpchk",
        "http-check send meth GET uri /readyz",
        "timeout tunnel",
    ] {
        p.check(
            rx(&format!(r"(?m)^\s*{}\b", regex::escape(directive))).is_match(&cfg),
            || format!("haproxy.cfg: missing `{directive}`"),
        );
    }
    for sticky in [
        r"(?m)^\s*cookie\b",
        r"(?m)^\s*stick(-table)?\b",
        r"(?m)^\s*balance\s+(source|uri|hdr|url_param)",
    ] {
        p.check(!rx(sticky).is_match(&cfg), || {
            format!("haproxy.cfg: sticky routing ({sticky}) is not wanted")
        });
    }
    // Tokens travel in `/ws?token=`: no log may hold the query string.
    p.check(!rx(r"(?m)^\s*option\s+httplog\b").is_match(&cfg), || {
        "haproxy.cfg: `option httplog` logs the query string, tokens included".to_owned()
    });
    for line in rx(r"(?m)^\s*log-format\s+(.*)$").captures_iter(&cfg) {
        p.check(!rx(r"%(\{[^}]*\})?(r|HU|HQ)\b").is_match(&line[1]), || {
            "haproxy.cfg: the log-format logs the query string (%r, %HU or %HQ)".to_owned()
        });
    }
    let maxconn = rx(r"(?m)^global\n(?:.*\n)*?\s*maxconn\s+(\d+)")
        .captures(&cfg)
        .and_then(|m| m[1].parse::<u64>().ok());
    let nofile = &c.svc("lb")["ulimits"]["nofile"];
    let nofile = scalar(&nofile["soft"])
        .or_else(|| scalar(nofile))
        .and_then(|n| n.parse::<u64>().ok());
    if let Some(maxconn) = maxconn {
        p.check(nofile.is_some_and(|n| n >= 2 * maxconn + 100), || {
            format!("compose: lb's nofile ({nofile:?}) is too low for maxconn {maxconn}")
        });
    }
}

/// `key = value` lines of a RabbitMQ configuration file.
fn conf_lines(path: &str, p: &mut Problems) -> Vec<(String, String)> {
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
const KNOWN_CONF: &[&str] = &[
    "load_definitions",
    "listeners.tcp.default",
    "management.tcp.port",
    "deprecated_features.permit.transient_nonexcl_queues",
    "vm_memory_high_watermark.relative",
    "disk_free_limit.absolute",
];

/// cluster.conf's keys (the compose image's 4.x; membership reconciliation is 3.13+).
const KNOWN_CLUSTER_CONF: &[&str] = &[
    "cluster_formation.peer_discovery_backend",
    "quorum_queue.continuous_membership_reconciliation.enabled",
    "quorum_queue.continuous_membership_reconciliation.target_group_size",
];

fn check_rabbitmq_conf(c: &Compose, definitions: &str, p: &mut Problems) {
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

// --- RabbitMQ definitions -----------------------------------------------------------

fn load_json(path: &str) -> Json {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// RabbitMQ's `rabbit_password_hashing_sha256`: base64 of a 4-byte salt and
/// SHA-256(salt + password).
fn password_matches(user: &Json, password: &str) -> bool {
    if user["hashing_algorithm"] != "rabbit_password_hashing_sha256" {
        return false;
    }
    let Ok(raw) = base64::engine::general_purpose::STANDARD
        .decode(user["password_hash"].as_str().unwrap_or(""))
    else {
        return false;
    };
    raw.len() == 36
        && Sha256::new()
            .chain_update(&raw[..4])
            .chain_update(password)
            .finalize()[..]
            == raw[4..]
}

fn by_name<'a>(defs: &'a Json, kind: &str, field: &str) -> BTreeMap<String, &'a Json> {
    defs[kind]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| (x[field].as_str().unwrap_or("").to_owned(), x))
        .collect()
}

/// The topology in definitions.json's shape.
fn topology_json(prefix: &str, shards: u32, queue_type: &str, vhost: &str) -> Json {
    let t = topology(&Names::new(prefix), shards, queue_type);
    let exchanges: Vec<Json> = t
        .exchanges
        .iter()
        .map(|e| {
            json!({"name": e.name, "vhost": vhost, "type": e.kind.as_str(), "durable": true,
                   "auto_delete": false, "internal": false, "arguments": {}})
        })
        .collect();
    let queues: Vec<Json> = t
        .queues
        .iter()
        .map(|q| {
            let args: serde_json::Map<String, Json> = q
                .arguments
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Arg::Bool(b) => json!(b),
                        Arg::Str(s) => json!(s),
                    };
                    ((*k).to_owned(), v)
                })
                .collect();
            json!({"name": q.name, "vhost": vhost, "durable": true, "auto_delete": false,
                   "arguments": args})
        })
        .collect();
    let bindings: Vec<Json> = t
        .bindings
        .iter()
        .map(|b| {
            json!({"source": b.exchange, "vhost": vhost, "destination": b.queue,
                   "destination_type": "queue", "routing_key": b.routing_key, "arguments": {}})
        })
        .collect();
    json!({"exchanges": exchanges, "queues": queues, "bindings": bindings})
}

/// `items` as a set of canonical JSON texts, so that order does not matter.
fn as_set(items: &Json) -> BTreeSet<String> {
    items
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| x.to_string())
        .collect()
}

/// The accounts, their permissions and the topology of a definitions file, against
/// the contract and the compose file's logins.
fn check_definitions(c: &Compose, path: &str, p: &mut Problems) {
    let defs = load_json(path);
    let g0 = c.gateways().first().cloned().unwrap_or_default();
    let prefix = c
        .setting(&g0, "amqp", "prefix")
        .unwrap_or_else(|| "warren".into());
    let shards: u32 = c
        .setting(&g0, "amqp", "shards")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let queue_type = c
        .setting(&g0, "amqp", "command_queue_type")
        .unwrap_or_else(|| "classic".into());
    let addresses = |svc: &str| -> Vec<String> {
        let urls: Vec<String> = c
            .setting(svc, "amqp", "urls")
            .unwrap_or_default()
            .split(',')
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            vec![c.setting(svc, "amqp", "url").unwrap_or_default()]
        } else {
            urls
        }
    };
    let vhost = {
        let path = parse_url(&addresses(&g0)[0]).path;
        if path.is_empty() {
            "/".to_owned()
        } else {
            path
        }
    };
    let users = by_name(&defs, "users", "name");
    let vhosts: BTreeSet<String> = by_name(&defs, "vhosts", "name").into_keys().collect();
    let perms: BTreeMap<(String, String), &Json> = defs["permissions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            let key = (
                x["user"].as_str().unwrap_or("").to_owned(),
                x["vhost"].as_str().unwrap_or("").to_owned(),
            );
            (key, x)
        })
        .collect();
    p.check(!users.contains_key("guest"), || {
        format!("{path}: defines `guest`")
    });
    let mut expected_topic = Vec::new();
    for (name, tags, want) in accounts::deployment(&prefix) {
        let Some(user) = users.get(name) else {
            p.bad(format!("{path}: no user {name}"));
            continue;
        };
        let got: BTreeSet<&str> = user["tags"]
            .as_array()
            .map(|t| t.iter().filter_map(Json::as_str).collect())
            .or_else(|| {
                user["tags"]
                    .as_str()
                    .map(|t| t.split(',').filter(|x| !x.is_empty()).collect())
            })
            .unwrap_or_default();
        p.check(got == tags.iter().copied().collect(), || {
            format!("{path}: user {name} has tags {got:?}, expected {tags:?}")
        });
        // The shipped file carries development passwords: each is the account's name.
        p.check(password_matches(user, name), || {
            format!("{path}: the hash of {name} is not that of its development password ({name})")
        });
        let got = perms.get(&(name.to_owned(), vhost.clone()));
        let want_json = json!({"user": name, "vhost": vhost, "configure": want.configure,
                               "write": want.write, "read": want.read});
        p.check(got == Some(&&want_json), || {
            format!("{path}: {name}'s permissions are {got:?}, the contract's are {want_json}")
        });
        if let Some(t) = &want.topic {
            expected_topic.push(json!({"user": name, "vhost": vhost, "exchange": t.exchange,
                                       "write": t.write, "read": t.read}));
        }
    }
    p.check(perms.len() == users.len(), || {
        format!("{path}: permissions for other users than the contract's")
    });
    let topic_got = as_set(&defs["topic_permissions"]);
    let topic_want = as_set(&Json::from(expected_topic));
    p.check(topic_got == topic_want, || {
        format!("{path}: topic permissions {topic_got:?} are not the contract's {topic_want:?}")
    });
    // Each service logs in as an account that exists, with the password compose gives
    // it, on the vhost; only gateways in amqp.gateway_accounts.
    let gw_accounts: BTreeSet<String> = c
        .setting(&g0, "amqp", "gateway_accounts")
        .unwrap_or_default()
        .split(',')
        .map(|a| a.trim().to_owned())
        .collect();
    for account in &gw_accounts {
        p.check(users.contains_key(account), || {
            format!("compose: amqp.gateway_accounts names {account}, which {path} lacks")
        });
    }
    let gateways = c.gateways();
    for svc in c.warren_services() {
        let mut logins = BTreeSet::new();
        for address in addresses(&svc) {
            let url = parse_url(&address);
            let url_vhost = if url.path.is_empty() {
                "/".to_owned()
            } else {
                url.path.clone()
            };
            match users.get(&url.user) {
                None => p.bad(format!(
                    "compose: {svc} logs in as {:?}, which {path} lacks",
                    url.user
                )),
                Some(u) => p.check(password_matches(u, &url.password), || {
                    format!(
                        "compose: {svc}'s AMQP password does not match {}'s hash",
                        url.user
                    )
                }),
            }
            p.check(vhosts.contains(&url_vhost), || {
                format!("compose: {svc} uses vhost {url_vhost}, which {path} lacks")
            });
            let is_gw = gateways.contains(&svc);
            p.check(gw_accounts.contains(&url.user) == is_gw, || {
                format!("compose: {svc} logs in as {}, whose commands the dispatcher would trust wrongly", url.user)
            });
            logins.insert(url.user);
        }
        p.check(logins.len() == 1, || {
            format!("compose: {svc} logs in as {logins:?}")
        });
    }
    // The topology: the services declare it; a single node imports it at boot. The
    // cluster's definitions have none (the quorum queues are declared once every node
    // runs) and are otherwise the single node's.
    if c.cluster {
        let base = load_json("deploy/rabbitmq/definitions.json");
        for kind in ["queues", "exchanges", "bindings"] {
            p.check(as_set(&defs[kind]).is_empty(), || {
                format!("{path}: has {kind}; the services declare the topology")
            });
        }
        let keys: BTreeSet<&String> = base
            .as_object()
            .into_iter()
            .chain(defs.as_object())
            .flat_map(|o| o.keys())
            .collect();
        for kind in keys {
            if !["queues", "exchanges", "bindings"].contains(&kind.as_str()) {
                p.check(base[kind] == defs[kind], || {
                    format!("{path}: its {kind} differ from definitions.json's")
                });
            }
        }
    } else {
        let want = topology_json(&prefix, shards, &queue_type, &vhost);
        for kind in ["exchanges", "queues", "bindings"] {
            let (got, want) = (as_set(&defs[kind]), as_set(&want[kind]));
            p.check(got == want, || {
                // Name each differing entry (a binding by its queue).
                let label = |text: &String| {
                    let v: Json = serde_json::from_str(text).unwrap_or_default();
                    let name = v.get("name").or(v.get("destination")).cloned();
                    name.and_then(|n| n.as_str().map(str::to_owned)).unwrap_or_default()
                };
                let missing: Vec<_> = want.difference(&got).map(label).collect();
                let extra: Vec<_> = got.difference(&want).map(label).collect();
                format!("{path}: {kind} differ from proto::topology: as the services declare them {missing:?}, in the file {extra:?}")
            });
        }
    }
    for policy in defs["policies"].as_array().into_iter().flatten() {
        let name = policy["name"].as_str().unwrap_or("");
        p.check(policy["vhost"] == vhost.as_str(), || {
            format!("{path}: policy {name} is on another vhost")
        });
        // A policy on the shard queues would be ignored where they set the argument,
        // and change them silently where they do not.
        let pattern = Regex::new(policy["pattern"].as_str().unwrap_or(""));
        p.check(
            pattern.is_ok_and(|re| !re.is_match(&Names::new(&prefix).commands_queue(0))),
            || format!("{path}: policy {name} applies to the shard queues"),
        );
    }
}

/// The contract's patterns give each role what it needs and nothing more, as RabbitMQ
/// matches them: against exchange and queue names (publishing through the default
/// exchange is a write on `amq.default`), and on the events exchange against routing
/// keys, a binding's as written.
#[test]
fn the_contract_permissions_are_least_privilege() {
    let mut p = Problems::default();
    let perms: BTreeMap<&str, Permissions> = accounts::deployment("warren")
        .into_iter()
        .map(|(name, _, perms)| (name, perms))
        .collect();
    type Probes<'a> = [(&'a str, &'a [&'a str], &'a [&'a str]); 3];
    let roles: [(&str, Probes, Probes); 3] = [
        (
            accounts::GATEWAY,
            [
                (
                    "configure",
                    &["warren.gw.gateway1"],
                    &[
                        "warren.commands",
                        "warren.commands.0",
                        "warren.events",
                        "warren.dead",
                        "warren.bot.modbot.events",
                        "amq.default",
                        "xwarren.gw.gateway1",
                    ],
                ),
                (
                    "write",
                    &["warren.commands", "warren.gw.gateway1"],
                    &[
                        "warren.commands.0",
                        "warren.dead",
                        "warren.events",
                        "amq.default",
                        "warren.bot.modbot.events",
                    ],
                ),
                (
                    "read",
                    &["warren.events", "warren.gw.gateway1"],
                    &[
                        "warren.commands",
                        "warren.commands.0",
                        "warren.dead",
                        "warren.bot.modbot.events",
                        "amq.default",
                    ],
                ),
            ],
            [
                (
                    "write",
                    &[],
                    &["room.general.message", "user.alice.message", "gw.gateway1"],
                ),
                (
                    "read",
                    &["room.general.#", "room.dm~alice~bob.#", "gw.gateway1"],
                    &[
                        "#",
                        "room.#",
                        "room.*.#",
                        "*.*.*",
                        "user.#",
                        "user.alice.message",
                        "gw.*",
                    ],
                ),
                ("", &[], &[]),
            ],
        ),
        (
            accounts::DISPATCHER,
            [
                (
                    "configure",
                    &[
                        "warren.commands",
                        "warren.commands.0",
                        "warren.events",
                        "warren.dead",
                    ],
                    &["warren.gw.gateway1", "warren.bot.modbot.events"],
                ),
                (
                    "write",
                    &[
                        "amq.default",
                        "warren.commands",
                        "warren.commands.0",
                        "warren.events",
                        "warren.dead",
                    ],
                    &["warren.gw.gateway1", "warren.bot.modbot.events"],
                ),
                (
                    "read",
                    &["warren.commands", "warren.commands.0", "warren.dead"],
                    &[
                        "warren.events",
                        "warren.gw.gateway1",
                        "warren.bot.modbot.events",
                    ],
                ),
            ],
            [
                (
                    "write",
                    &[
                        "room.general.message",
                        "room.dm~alice~bob.message",
                        "user.alice.message",
                        "gw.gateway1",
                    ],
                    &["shard.0", "#"],
                ),
                ("read", &[], &["#", "room.general.#"]),
                ("", &[], &[]),
            ],
        ),
        (
            accounts::BOT,
            [
                (
                    "configure",
                    &["warren.bot.modbot.events", "warren.bot.echo.replies"],
                    &[
                        "warren.bot.other.events",
                        "warren.commands",
                        "warren.events",
                        "warren.commands.0",
                        "warren.gw.gateway1",
                    ],
                ),
                (
                    "write",
                    &["warren.commands", "warren.bot.modbot.events"],
                    &[
                        "warren.events",
                        "amq.default",
                        "warren.commands.0",
                        "warren.bot.other.events",
                    ],
                ),
                (
                    "read",
                    &["warren.events", "warren.bot.modbot.events"],
                    &[
                        "warren.commands.0",
                        "warren.dead",
                        "warren.gw.gateway1",
                        "warren.bot.other.events",
                    ],
                ),
            ],
            [
                ("write", &[], &["room.general.message"]),
                (
                    "read",
                    &[
                        "room.general.message",
                        "room.general.member",
                        "room.general.moderation",
                    ],
                    &[
                        "#",
                        "room.#",
                        "room.*.message",
                        "room.general.#",
                        "room.general.typing",
                        "room.general.kicked",
                        "room.dm~alice~bob.message",
                        "user.#",
                        "user.alice.message",
                        "gw.gateway1",
                        "gw.*",
                        "*.*.*",
                    ],
                ),
                ("", &[], &[]),
            ],
        ),
    ];
    for (user, names, keys) in roles {
        let perm = &perms[user];
        let topic = perm
            .topic
            .as_ref()
            .expect("every role has topic permissions");
        let layers = [
            ("", names, [&perm.configure, &perm.write, &perm.read]),
            ("topic ", keys, [&topic.write, &topic.read, &topic.read]),
        ];
        for (layer, probes, patterns) in layers {
            for ((kind, allowed, denied), pattern) in probes.iter().zip(patterns) {
                if kind.is_empty() {
                    continue;
                }
                let re = rx(pattern);
                for name in *allowed {
                    p.check(re.is_match(name), || {
                        format!("{user} needs {layer}{kind} on {name}; {pattern} refuses it")
                    });
                }
                for name in *denied {
                    p.check(!re.is_match(name), || {
                        format!("{user}'s {layer}{kind} pattern {pattern} also allows {name}")
                    });
                }
            }
        }
    }
    p.finish();
}

/// `scripts/ensure-services.sh` gives the local stack's accounts the contract's names,
/// development passwords and patterns.
#[test]
fn the_local_stack_accounts_are_the_contract() {
    let mut p = Problems::default();
    let script = read("scripts/ensure-services.sh");
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let line = rx(r#"(?m)^readonly (\w+)=(?:'([^']*)'|"([^"]*)"|([^\s'"]*))"#);
    let reference = rx(r"\$\{(\w+)\}");
    for m in line.captures_iter(&script) {
        let value = if let Some(v) = m.get(3) {
            let expanded = reference.replace_all(v.as_str(), |r: &regex::Captures| {
                vars.get(&r[1]).cloned().unwrap_or_else(|| r[0].to_owned())
            });
            expanded.replace("\\$", "$")
        } else {
            m.get(2).or(m.get(4)).map_or("", |v| v.as_str()).to_owned()
        };
        vars.insert(m[1].to_owned(), value);
    }
    let prefix = vars.get("PREFIX").cloned().unwrap_or_default();
    let get = |k: &str| vars.get(k).cloned().unwrap_or_default();
    p.check(get("PREFIX_RE") == escape(&prefix), || {
        format!(
            "ensure-services.sh: PREFIX_RE {:?} is not PREFIX escaped",
            get("PREFIX_RE")
        )
    });
    p.check(
        get("EVENTS_EXCHANGE") == Names::new(&prefix).events_exchange(),
        || "ensure-services.sh: EVENTS_EXCHANGE is not the prefix's events exchange".to_owned(),
    );
    for (var, account, perms) in [
        ("GW", accounts::GATEWAY, Permissions::gateway(&prefix)),
        (
            "BOT",
            accounts::BOT,
            Permissions::bots_granted(&prefix, accounts::DEV_BOTS, accounts::BOT_PUBLIC_ROOMS),
        ),
    ] {
        let topic = perms.topic.clone().expect("topic permissions");
        for (suffix, want) in [
            ("USER", account),
            ("PASS", account),
            ("CONFIGURE", perms.configure.as_str()),
            ("WRITE", perms.write.as_str()),
            ("READ", perms.read.as_str()),
            ("TOPIC_WRITE", topic.write.as_str()),
            ("TOPIC_READ", topic.read.as_str()),
        ] {
            let got = get(&format!("{var}_{suffix}"));
            p.check(got == want, || {
                format!("ensure-services.sh: {var}_{suffix} is {got:?}, the contract says {want:?}")
            });
        }
    }
    p.finish();
}

#[test]
fn the_single_node_deployment_agrees() {
    let mut p = Problems::default();
    let c = Compose::load("deploy/compose.yaml", false);
    check_services(&c, &mut p);
    check_warren_services(&c, &mut p);
    check_ports_and_redis(&c, &mut p);
    check_haproxy(&c, &mut p);
    check_rabbitmq_conf(&c, "deploy/rabbitmq/definitions.json", &mut p);
    check_definitions(&c, "deploy/rabbitmq/definitions.json", &mut p);
    check_image(&c, &mut p);
    p.finish();
}

#[test]
fn the_cluster_deployment_agrees() {
    let mut p = Problems::default();
    let c = Compose::load("deploy/compose.cluster.yaml", true);
    check_services(&c, &mut p);
    check_warren_services(&c, &mut p);
    check_ports_and_redis(&c, &mut p);
    check_redis_cluster(&c, &mut p);
    check_haproxy(&c, &mut p);
    check_rabbitmq_conf(&c, "deploy/rabbitmq/definitions.cluster.json", &mut p);
    check_definitions(&c, "deploy/rabbitmq/definitions.cluster.json", &mut p);
    p.finish();
}

// --- the image ------------------------------------------------------------------------

/// `.dockerignore`'s patterns as regular expressions over paths.
fn ignore_rx(pattern: &str) -> Regex {
    let pattern = pattern.trim_matches('/');
    let mut out = String::from("^");
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        let (piece, len) = if rest.starts_with("**/") {
            ("(?:.*/)?".to_owned(), 3)
        } else if rest.starts_with("**") {
            (".*".to_owned(), 2)
        } else if c == '*' {
            ("[^/]*".to_owned(), 1)
        } else if c == '?' {
            ("[^/]".to_owned(), 1)
        } else {
            (regex::escape(&c.to_string()), c.len_utf8())
        };
        out.push_str(&piece);
        rest = &rest[len..];
    }
    rx(&(out + "(?:/.*)?$"))
}

/// The Dockerfile builds every binary on a rust image into a non-root debian runtime
/// that exposes the services' ports and carries the health probe; `.dockerignore`
/// keeps what the build needs and leaves out `target/` and `.git/`.
fn check_image(c: &Compose, p: &mut Problems) {
    let dockerfile = read("deploy/Dockerfile");
    let args: BTreeMap<String, String> = rx(r"(?m)^ARG\s+(\w+)=(\S+)")
        .captures_iter(&dockerfile)
        .map(|m| (m[1].to_owned(), m[2].to_owned()))
        .collect();
    let arg = rx(r"\$\{(\w+)\}");
    let images: Vec<String> = rx(r"(?mi)^FROM\s+(\S+)")
        .captures_iter(&dockerfile)
        .map(|m| {
            arg.replace_all(&m[1], |a: &regex::Captures| {
                args.get(&a[1]).cloned().unwrap_or_else(|| a[0].to_owned())
            })
            .into_owned()
        })
        .collect();
    p.check(
        images.len() >= 2
            && images[0].starts_with("rust:")
            && images.last().is_some_and(|i| i.starts_with("debian:bookworm")),
        || format!("Dockerfile: expected a rust: build stage and a debian:bookworm runtime, found {images:?}"),
    );
    p.check(
        dockerfile.contains("cargo build --release --locked --bins"),
        || "Dockerfile: the build does not run `cargo build --release --locked --bins`".to_owned(),
    );
    p.check(
        rx(r"--mount=type=cache,[^\n]*target=/usr/local/cargo/registry").is_match(&dockerfile),
        || "Dockerfile: no cache mount for the cargo registry".to_owned(),
    );
    let user = rx(r"(?m)^USER\s+(\S+)")
        .captures_iter(&dockerfile)
        .last()
        .map(|m| m[1].split(':').next().unwrap_or("").to_owned());
    p.check(
        user.as_deref().is_some_and(|u| u != "root" && u != "0"),
        || "Dockerfile: the runtime does not run as a non-root USER".to_owned(),
    );
    let exposed: BTreeSet<String> = rx(r"(?m)^EXPOSE\s+(.*)$")
        .captures_iter(&dockerfile)
        .flat_map(|m| {
            rx(r"\d+")
                .find_iter(&m[1])
                .map(|d| d.as_str().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let gateways = c.gateways();
    for svc in c.warren_services() {
        let section = if gateways.contains(&svc) {
            "gateway"
        } else {
            "dispatcher"
        };
        let port = port_of(&c.setting(&svc, section, "listen").unwrap_or_default()).1;
        p.check(
            port.is_some_and(|port| exposed.contains(&port.to_string())),
            || format!("Dockerfile: EXPOSE lacks {port:?} ({svc})"),
        );
    }
    p.check(
        rx(r"(?m)^COPY --chmod=0755 <<'PROBE' /usr/local/bin/warren-probe$").is_match(&dockerfile),
        || "Dockerfile: the warren-probe here-document was not found".to_owned(),
    );

    let rules: Vec<(bool, Regex)> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| (l.starts_with('!'), ignore_rx(l.trim_start_matches('!'))))
        .collect();
    let ignored = |path: &str| {
        rules.iter().fold(
            false,
            |was, (negate, re)| if re.is_match(path) { !negate } else { was },
        )
    };
    let workspace: toml::Table = read("Cargo.toml").parse().expect("Cargo.toml");
    let members = workspace["workspace"]["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let include = rx(r#"include_(?:str|bytes)!\(\s*"([^"]+)""#);
    let mut needed = vec!["Cargo.toml".to_owned(), "Cargo.lock".to_owned()];
    let root = repo().canonicalize().expect("the repository");
    for member in members.iter().filter_map(|m| m.as_str()) {
        needed.push(format!("{member}/Cargo.toml"));
        needed.push(format!("{member}/src"));
        for rs in rust_files(&root.join(member)) {
            let text = std::fs::read_to_string(&rs).unwrap_or_default();
            for m in include.captures_iter(&text) {
                let target = rs.parent().unwrap().join(&m[1]);
                match target
                    .canonicalize()
                    .ok()
                    .and_then(|t| t.strip_prefix(&root).ok().map(Path::to_path_buf))
                {
                    Some(rel) => needed.push(rel.to_string_lossy().into_owned()),
                    None => p.bad(format!(
                        "{}: include of {} lies outside the build context",
                        rs.display(),
                        &m[1]
                    )),
                }
            }
        }
    }
    for path in needed {
        p.check(!ignored(&path), || {
            format!(".dockerignore excludes {path}, which the build needs")
        });
    }
    for path in ["target", ".git"] {
        p.check(ignored(path), || {
            format!(".dockerignore should exclude {path}/")
        });
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path
                    .file_name()
                    .is_some_and(|n| n != "target" && n != "node_modules")
                {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out
}
