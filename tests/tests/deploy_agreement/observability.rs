//! The observability files: the Grafana dashboard and the Prometheus alert rules use
//! only metrics that exist, Prometheus scrapes what compose runs, and the compose
//! profile `observability` stays out of a plain `docker compose up`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

use crate::compose::{parse_url, port_of, strings, Compose};
use crate::definitions::load_json;
use crate::{read, rx, Problems};

pub(crate) const DASHBOARD: &str = "deploy/grafana/dashboards/warren.json";
pub(crate) const RULES: &str = "deploy/prometheus/rules/warren.yml";
const DATASOURCE: &str = "deploy/grafana/provisioning/datasources/prometheus.yml";

/// What RabbitMQ's rabbitmq_prometheus plugin exports (3.10 and 4.x) that the
/// dashboard and rules may use: `/metrics` (node totals) and `/metrics/detailed` with
/// the families `queue_coarse_metrics` and `queue_consumer_count`, which is what the
/// scrape config asks for. Checked by hand against the plugin's documentation; a name
/// outside this list is a typo or needs another family in the scrape config.
pub(crate) const RABBITMQ_METRICS: &[&str] = &[
    "rabbitmq_connections",
    "rabbitmq_global_messages_received_total",
    "rabbitmq_global_messages_delivered_total",
    "rabbitmq_alarms_memory_used_watermark",
    "rabbitmq_alarms_free_disk_space_watermark",
    "rabbitmq_detailed_queue_messages_ready",
    "rabbitmq_detailed_queue_messages_unacked",
    "rabbitmq_detailed_queue_messages",
    "rabbitmq_detailed_queue_consumers",
];

/// Metrics the dashboard must show, one per thing an operator looks at first:
/// connections, deliveries, slow-consumer closes, `unavailable` answers, command queue
/// depth per shard and gateway backlog (both per queue), publish-to-deliver latency.
const DASHBOARD_MUST_SHOW: &[&str] = &[
    "warren_gateway_connections",
    "warren_gateway_deliveries_total",
    "warren_gateway_slow_consumers_total",
    "warren_gateway_errors_total",
    "warren_gateway_refusals_total",
    "rabbitmq_detailed_queue_messages_ready",
    "rabbitmq_detailed_queue_consumers",
    "warren_gateway_event_delay_seconds_bucket",
];

/// Alerts an operator must get.
const REQUIRED_ALERTS: &[&str] = &[
    "WarrenShardWithoutConsumer",
    "WarrenCommandBacklogGrowing",
    "WarrenGatewayBacklogGrowing",
    "WarrenStoreRefusals",
    "WarrenGatewayRefusingHandshakes",
    "WarrenNoDispatcher",
    "WarrenBrokerUnreachable",
];

/// The sample names a service's registry produces, read from its metrics module: the
/// fields registered with `register_fields!` under `Registry::with_prefix`, named as
/// prometheus_client names them (counters `_total`, histograms `_bucket`, `_sum`,
/// `_count`). Reading the source keeps this offline; `exported_names` reads a live
/// `/metrics`.
pub(crate) fn registered_metrics(path: &str) -> BTreeSet<String> {
    let src = read(path);
    let prefix = rx(r#"Registry::with_prefix\("([a-z_]+)"\)"#)
        .captures(&src)
        .unwrap_or_else(|| panic!("{path}: no Registry::with_prefix"))[1]
        .to_owned();
    let kinds: BTreeMap<String, String> =
        rx(r"pub (\w+): (?:Family<\w+, (Counter|Gauge)>|(Counter|Gauge|Histogram)),")
            .captures_iter(&src)
            .map(|c| {
                let kind = c.get(2).or(c.get(3)).map_or("", |m| m.as_str());
                (c[1].to_owned(), kind.to_owned())
            })
            .collect();
    let block = src
        .split("register_fields!(")
        .nth(1)
        .and_then(|rest| rest.split(");").next())
        .unwrap_or_else(|| panic!("{path}: no register_fields! block"));
    let mut names = BTreeSet::new();
    for c in rx(r#"(?m)^\s*(\w+): ""#).captures_iter(block) {
        let base = format!("{prefix}_{}", &c[1]);
        match kinds.get(&c[1]).map(String::as_str) {
            Some("Counter") => names.insert(format!("{base}_total")),
            Some("Gauge") => names.insert(base),
            Some("Histogram") => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{base}{suffix}"));
                }
                true
            }
            _ => panic!("{path}: registered field {} of unknown type", &c[1]),
        };
    }
    names
}

/// Every sample name the gateway and dispatcher register.
pub(crate) fn warren_metrics() -> BTreeSet<String> {
    let mut all = registered_metrics("gateway/src/metrics.rs");
    all.extend(registered_metrics("dispatcher/src/metrics.rs"));
    all
}

/// The metric names a PromQL expression refers to (`warren_*` and `rabbitmq_*`).
pub(crate) fn metric_names(expr: &str) -> BTreeSet<String> {
    rx(r"\b(?:warren|rabbitmq)_[a-z0-9_]+\b")
        .find_iter(expr)
        .map(|m| m.as_str().to_owned())
        .collect()
}

/// Every query of the dashboard, with the title of its panel.
pub(crate) fn dashboard_queries(dash: &Json) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                panel["title"].as_str().unwrap_or("?").to_owned(),
                target["expr"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    out
}

/// Every alerting rule, as YAML.
pub(crate) fn alert_rules() -> Vec<Yaml> {
    let doc: Yaml = serde_yaml_ng::from_str(&read(RULES)).expect(RULES);
    doc["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .collect()
}

/// The anchors of docs/OPERATIONS.md's headings, as GitHub makes them.
fn doc_anchors(path: &str) -> BTreeSet<String> {
    read(path)
        .lines()
        .filter_map(|l| {
            l.strip_prefix('#')
                .map(|h| h.trim_start_matches('#').trim())
        })
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

pub(crate) fn check_dashboard(p: &mut Problems) {
    let dash = load_json(DASHBOARD);
    p.check(dash["schemaVersion"].as_u64().unwrap_or(0) >= 36, || {
        format!("{DASHBOARD}: schemaVersion below 36 (Grafana 9+)")
    });
    p.check(dash["uid"].as_str().is_some_and(|u| !u.is_empty()), || {
        format!("{DASHBOARD}: no uid (provisioned dashboards keep their links by it)")
    });
    let vars = dash["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ds_var = vars.iter().find(|v| v["type"] == "datasource");
    p.check(
        ds_var.is_some_and(|v| v["name"] == "datasource" && v["query"] == "prometheus"),
        || format!("{DASHBOARD}: no Prometheus data source variable `datasource`"),
    );
    // The variable's default is the provisioned data source.
    let provisioned: Yaml = serde_yaml_ng::from_str(&read(DATASOURCE)).expect(DATASOURCE);
    let uid = provisioned["datasources"][0]["uid"].as_str().unwrap_or("");
    p.check(ds_var.is_some_and(|v| v["current"]["value"] == uid), || {
        format!("{DASHBOARD}: the datasource variable's default is not {uid:?} ({DATASOURCE})")
    });

    let mut ids = BTreeSet::new();
    for panel in dash["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?");
        let id = panel["id"].as_u64().unwrap_or(0);
        p.check(ids.insert(id), || {
            format!("{DASHBOARD}: panel id {id} twice")
        });
        let grid = &panel["gridPos"];
        let right = grid["x"].as_u64().unwrap_or(99) + grid["w"].as_u64().unwrap_or(99);
        p.check(right <= 24 && grid["h"].as_u64().unwrap_or(0) > 0, || {
            format!("{DASHBOARD}: panel {title:?} lies outside the 24-column grid")
        });
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        p.check(!targets.is_empty(), || {
            format!("{DASHBOARD}: panel {title:?} has no query")
        });
        for t in
            std::iter::once(&panel["datasource"]).chain(targets.iter().map(|t| &t["datasource"]))
        {
            p.check(t["uid"] == "${datasource}", || {
                format!("{DASHBOARD}: panel {title:?} does not use the `datasource` variable")
            });
        }
        p.check(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            || format!("{DASHBOARD}: panel {title:?} has no description"),
        );
    }

    let known = warren_metrics();
    let mut used = BTreeSet::new();
    for (title, expr) in dashboard_queries(&dash) {
        p.check(!expr.trim().is_empty(), || {
            format!("{DASHBOARD}: panel {title:?} has an empty query")
        });
        for name in metric_names(&expr) {
            check_metric(&known, &name, &format!("{DASHBOARD}, panel {title:?}"), p);
            used.insert(name);
        }
    }
    for must in DASHBOARD_MUST_SHOW {
        p.check(used.contains(*must), || {
            format!("{DASHBOARD}: no panel shows {must}")
        });
    }
}

fn check_metric(known: &BTreeSet<String>, name: &str, place: &str, p: &mut Problems) {
    if name.starts_with("warren_") {
        p.check(known.contains(name), || {
            format!("{place}: {name} is not a metric the gateway or dispatcher registers")
        });
    } else {
        p.check(RABBITMQ_METRICS.contains(&name), || {
            format!("{place}: {name} is not in the checked list of RabbitMQ's metrics")
        });
    }
}

pub(crate) fn check_rules(p: &mut Problems) {
    let known = warren_metrics();
    let anchors = doc_anchors("docs/OPERATIONS.md");
    let rules = alert_rules();
    let names: BTreeSet<String> = rules
        .iter()
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect();
    for required in REQUIRED_ALERTS {
        p.check(names.contains(*required), || {
            format!("{RULES}: no alert {required}")
        });
    }
    for rule in &rules {
        let Some(alert) = rule["alert"].as_str() else {
            continue;
        };
        let expr = rule["expr"].as_str().unwrap_or("");
        for name in metric_names(expr) {
            check_metric(&known, &name, &format!("{RULES}, {alert}"), p);
        }
        p.check(rule["for"].as_str().is_some(), || {
            format!("{RULES}: {alert} has no `for:`")
        });
        let severity = rule["labels"]["severity"].as_str().unwrap_or("");
        p.check(matches!(severity, "critical" | "warning"), || {
            format!("{RULES}: {alert} has severity {severity:?}, not critical or warning")
        });
        for key in ["summary", "description"] {
            p.check(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                || format!("{RULES}: {alert} has no {key}"),
            );
        }
        // What to do is written in the operations page, under a heading per alert.
        let runbook = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
        let anchor = runbook.strip_prefix("docs/OPERATIONS.md#").unwrap_or("");
        p.check(anchor == alert.to_lowercase() && anchors.contains(anchor), || {
            format!("{RULES}: {alert}'s runbook_url {runbook:?} is not its heading in docs/OPERATIONS.md")
        });
    }
}

/// The scrape targets of one job in a Prometheus configuration.
fn targets<'a>(config: &'a Yaml, job: &str) -> Option<(BTreeSet<String>, &'a Yaml)> {
    let scrape = config["scrape_configs"]
        .as_sequence()?
        .iter()
        .find(|s| s["job_name"].as_str() == Some(job))?;
    let targets = scrape["static_configs"]
        .as_sequence()?
        .iter()
        .flat_map(|s| strings(&s["targets"]))
        .collect();
    Some((targets, scrape))
}

/// Prometheus scrapes every gateway, dispatcher and RabbitMQ node of the compose file
/// at the ports they listen on, and the services of the profile stay out of a plain
/// `up`.
pub(crate) fn check_compose_observability(c: &Compose, p: &mut Problems) {
    let file = if c.cluster {
        "compose.cluster.yaml"
    } else {
        "compose.yaml"
    };
    let services = c.services();
    for (name, svc) in &services {
        let profiles = strings(&svc["profiles"]);
        let want: &[&str] = if matches!(name.as_str(), "prometheus" | "grafana") {
            &["observability"]
        } else {
            &[]
        };
        p.check(profiles == want, || {
            format!("{file}: service {name} has profiles {profiles:?}, expected {want:?}")
        });
    }
    let Some(config_path) = c.mount("prometheus", "/etc/prometheus/prometheus.yml") else {
        p.bad(format!("{file}: prometheus does not mount a configuration"));
        return;
    };
    p.check(c.mount("prometheus", "/etc/prometheus/rules").as_deref() == Some("deploy/prometheus/rules"), || {
        format!("{file}: prometheus does not mount deploy/prometheus/rules at /etc/prometheus/rules")
    });
    for (target, source) in [
        ("/etc/grafana/provisioning", "deploy/grafana/provisioning"),
        ("/var/lib/grafana/dashboards", "deploy/grafana/dashboards"),
    ] {
        p.check(
            c.mount("grafana", target).as_deref() == Some(source),
            || format!("{file}: grafana does not mount {source} at {target}"),
        );
    }
    let config: Yaml = serde_yaml_ng::from_str(&read(&config_path)).expect("prometheus config");
    let expect = |services: Vec<String>, port: Option<u16>| -> BTreeSet<String> {
        services
            .into_iter()
            .map(|s| format!("{s}:{}", port.unwrap_or(0)))
            .collect()
    };
    let gateway_port =
        |s: &String| port_of(&c.setting(s, "gateway", "ops_listen").unwrap_or_default()).1;
    let dispatcher_port =
        |s: &String| port_of(&c.setting(s, "dispatcher", "listen").unwrap_or_default()).1;
    let gateways = c.gateways();
    let dispatchers = c.numbered("dispatcher");
    let brokers: Vec<String> = services
        .keys()
        .filter(|s| rx("^rabbitmq[0-9]*$").is_match(s))
        .cloned()
        .collect();
    let jobs = [
        (
            "warren-gateway",
            expect(gateways.clone(), gateways.first().and_then(gateway_port)),
        ),
        (
            "warren-dispatcher",
            expect(
                dispatchers.clone(),
                dispatchers.first().and_then(dispatcher_port),
            ),
        ),
        ("rabbitmq", expect(brokers.clone(), Some(15692))),
        ("rabbitmq-queues", expect(brokers, Some(15692))),
    ];
    for (job, want) in jobs {
        match targets(&config, job) {
            Some((got, _)) => p.check(got == want, || {
                format!("{config_path}: job {job} scrapes {got:?}, compose ({file}) runs {want:?}")
            }),
            None => p.bad(format!("{config_path}: no job {job}")),
        }
    }
    // The per-queue job asks for the vhost the services use.
    if let (Some((_, scrape)), Some(gateway)) =
        (targets(&config, "rabbitmq-queues"), gateways.first())
    {
        let vhost = parse_url(&c.setting(gateway, "amqp", "url").unwrap_or_default()).path;
        p.check(
            strings(&scrape["params"]["vhost"]) == [vhost.clone()],
            || format!("{config_path}: rabbitmq-queues does not ask for the vhost {vhost:?}"),
        );
        p.check(
            scrape["metrics_path"].as_str() == Some("/metrics/detailed"),
            || format!("{config_path}: rabbitmq-queues does not scrape /metrics/detailed"),
        );
    }
    // Grafana reaches Prometheus by its compose name and container port.
    let provisioned: Yaml = serde_yaml_ng::from_str(&read(DATASOURCE)).expect(DATASOURCE);
    let url = parse_url(provisioned["datasources"][0]["url"].as_str().unwrap_or(""));
    let listens = strings(&c.svc("prometheus")["ports"])
        .iter()
        .any(|port| port.ends_with(&format!(":{}", url.port.unwrap_or(0))));
    p.check(url.host == "prometheus" && listens, || {
        format!(
            "{DATASOURCE}: {}:{:?} is not the prometheus service's port",
            url.host, url.port
        )
    });
}
