//! The services of a compose file: policies, settings, safe defaults, ports, Redis.

use std::collections::BTreeSet;

use serde_yaml_ng::Value as Yaml;

use crate::compose::{duration_s, parse_url, port_of, scalar, strings, Compose, Url};
use crate::{rx, Problems, RENDER_SECRET};

/// Every service: a healthcheck and a restart policy (a one-shot service, which others
/// wait to complete, neither restarts nor needs one), and waits on healthy services.
pub(crate) fn check_services(c: &Compose, p: &mut Problems) {
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
pub(crate) fn check_warren_services(c: &Compose, p: &mut Problems) {
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
pub(crate) fn check_cluster_service(c: &Compose, name: &str, p: &mut Problems) {
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
pub(crate) fn check_ports_and_redis(c: &Compose, p: &mut Problems) {
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
pub(crate) fn check_redis_cluster(c: &Compose, p: &mut Problems) {
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
