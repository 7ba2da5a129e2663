//! `deploy/k8s/`: the manifests agree with the image, the settings and the accounts
//! (`kubernetes-validate` in scripts/validate-deploy.sh checks them against the API's
//! schemas; this checks what they mean).

use std::collections::BTreeSet;

use proto::accounts;
use serde_yaml_ng::Value as Yaml;

use crate::compose::{parse_url, port_of, scalar, strings};
use crate::{read, repo, Problems};

const DIR: &str = "deploy/k8s";

/// Every object of every manifest, with its file.
fn objects() -> Vec<(String, Yaml)> {
    let mut files: Vec<String> = std::fs::read_dir(repo().join(DIR))
        .expect(DIR)
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let path = format!("{DIR}/{file}");
        for doc in serde_yaml_ng::Deserializer::from_str(&read(&path)) {
            let v = <Yaml as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            if !v.is_null() {
                out.push((file.clone(), v));
            }
        }
    }
    out
}

fn find<'a>(objs: &'a [(String, Yaml)], kind: &str, name: &str) -> Option<&'a Yaml> {
    objs.iter()
        .map(|(_, o)| o)
        .find(|o| o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name))
}

/// A setting as a pod sees it: its environment, else the ConfigMap's warren.toml,
/// else the built-in default.
struct Settings {
    file: toml::Table,
    defaults: toml::Table,
}

impl Settings {
    fn get(&self, env: &[(String, String)], section: &str, key: &str) -> Option<String> {
        let name = format!("WARREN__{}__{}", section.to_uppercase(), key.to_uppercase());
        if let Some((_, v)) = env.iter().find(|(k, _)| *k == name) {
            return Some(v.clone());
        }
        [&self.file, &self.defaults].into_iter().find_map(|layer| {
            let v = layer.get(section)?.get(key)?;
            Some(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            })
        })
    }

    fn is_setting(&self, section: &str, key: &str) -> bool {
        self.defaults
            .get(section)
            .and_then(|s| s.as_table())
            .is_some_and(|s| s.contains_key(key))
    }
}

/// The container's environment: literal values, and the keys of the Secrets it loads
/// with `envFrom` (their values as the Secret has them).
fn environment(objs: &[(String, Yaml)], container: &Yaml) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = container["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let value = scalar(&e["value"]).unwrap_or_else(|| "<from the pod>".to_owned());
            Some((e["name"].as_str()?.to_owned(), value))
        })
        .collect();
    for from in container["envFrom"].as_sequence().into_iter().flatten() {
        let name = from["secretRef"]["name"].as_str().unwrap_or("");
        if let Some(secret) = find(objs, "Secret", name) {
            for (k, v) in secret["stringData"].as_mapping().into_iter().flatten() {
                if let (Some(k), Some(v)) = (k.as_str(), scalar(v)) {
                    env.push((k.to_owned(), v));
                }
            }
        }
    }
    env
}

/// The containerPort of the named port.
fn named_port(container: &Yaml, port: &Yaml) -> Option<u16> {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).ok();
    }
    container["ports"]
        .as_sequence()?
        .iter()
        .find(|p| p["name"].as_str() == port.as_str())
        .and_then(|p| u16::try_from(p["containerPort"].as_u64()?).ok())
}

pub(crate) fn check_k8s(p: &mut Problems) {
    let objs = objects();
    let kustomization: Yaml = serde_yaml_ng::from_str(&read(&format!("{DIR}/kustomization.yaml")))
        .expect("kustomization");
    let listed: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
    let files: BTreeSet<String> = objs.iter().map(|(f, _)| f.clone()).collect();
    p.check(listed == files, || {
        format!("{DIR}/kustomization.yaml lists {listed:?}, the directory has {files:?}")
    });
    for (file, o) in &objs {
        let kind = o["kind"].as_str().unwrap_or("?");
        p.check(
            kind == "Namespace" || o["metadata"]["namespace"].as_str() == Some("warren"),
            || format!("{DIR}/{file}: {kind} is not in the namespace warren"),
        );
    }

    let config = find(&objs, "ConfigMap", "warren-config");
    let file: toml::Table = config
        .and_then(|c| c["data"]["warren.toml"].as_str())
        .map(|t| t.parse().expect("warren-config's warren.toml"))
        .unwrap_or_default();
    p.check(!file.is_empty(), || {
        format!("{DIR}: no ConfigMap warren-config with warren.toml")
    });
    let settings = Settings {
        file,
        defaults: read("common/src/defaults.toml")
            .parse()
            .expect("defaults.toml"),
    };
    for (section, table) in &settings.file {
        for key in table.as_table().into_iter().flat_map(|t| t.keys()) {
            p.check(settings.is_setting(section, key), || {
                format!("{DIR}/configmap.yaml: [{section}] {key} is not a setting")
            });
        }
    }

    check_workload(&objs, &settings, "warren-gateway", p);
    check_workload(&objs, &settings, "warren-dispatcher", p);
}

/// One Deployment: replicas, probes on the ports the service listens on, grace
/// periods, security, settings and accounts; its Services and PodDisruptionBudget.
fn check_workload(objs: &[(String, Yaml)], settings: &Settings, name: &str, p: &mut Problems) {
    let Some(deploy) = find(objs, "Deployment", name) else {
        p.bad(format!("{DIR}: no Deployment {name}"));
        return;
    };
    let gateway = name == "warren-gateway";
    let pod = &deploy["spec"]["template"]["spec"];
    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    let container = &pod["containers"][0];
    let env = environment(objs, container);
    let get = |section: &str, key: &str| settings.get(&env, section, key).unwrap_or_default();

    for (key, _) in &env {
        let parts: Vec<&str> = key.splitn(3, "__").collect();
        let ok = parts.len() == 3
            && parts[0] == "WARREN"
            && settings.is_setting(&parts[1].to_lowercase(), &parts[2].to_lowercase());
        p.check(ok, || {
            format!("{DIR}: {name} is given {key}, which is not a setting")
        });
    }
    let binary = if gateway {
        "warren-gateway"
    } else {
        "warren-dispatcher"
    };
    let command = strings(&container["command"]);
    p.check(
        command.first().map(String::as_str) == Some(binary)
            && command
                .windows(2)
                .any(|w| w == ["--config", "/etc/warren/warren.toml"]),
        || format!("{DIR}: {name} does not run {binary} --config /etc/warren/warren.toml"),
    );

    // Probes: readiness /readyz and liveness /healthz on the operations listener.
    let (listen_key, section) = if gateway {
        ("ops_listen", "gateway")
    } else {
        ("listen", "dispatcher")
    };
    let (host, ops_port) = port_of(&get(section, listen_key));
    p.check(host == "0.0.0.0", || {
        format!("{DIR}: {name}'s {section}.{listen_key} listens on {host:?}, not every interface")
    });
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let http = &container[probe]["httpGet"];
        let port = named_port(container, &http["port"]);
        p.check(http["path"].as_str() == Some(path) && port == ops_port && port.is_some(), || {
            format!("{DIR}: {name}'s {probe} is not {path} on {section}.{listen_key}'s port {ops_port:?}")
        });
    }

    // Replicas: gateways at least two (one can go); dispatchers at least two, and
    // not more than the shards (the others would only stand by).
    let replicas = deploy["spec"]["replicas"].as_u64().unwrap_or(1);
    let shards: u64 = get("amqp", "shards").parse().unwrap_or(0);
    p.check(replicas >= 2, || {
        format!("{DIR}: {name} has {replicas} replica(s), fewer than 2")
    });
    if !gateway {
        p.check(replicas <= shards, || {
            format!("{DIR}: {name} has {replicas} replicas, more than amqp.shards ({shards})")
        });
    }

    // Security: the image's user, no privileges, a read-only root file system.
    let sc = &container["securityContext"];
    p.check(
        pod["securityContext"]["runAsNonRoot"].as_bool() == Some(true)
            && pod["securityContext"]["runAsUser"].as_u64() == Some(10001)
            && sc["readOnlyRootFilesystem"].as_bool() == Some(true)
            && sc["allowPrivilegeEscalation"].as_bool() == Some(false),
        || {
            format!(
                "{DIR}: {name} is not non-root (10001, the image's user), read-only, unprivileged"
            )
        },
    );

    // The broker account of the role, on the vhost the definitions create.
    let url = parse_url(&get("amqp", "url"));
    let account = if gateway {
        accounts::GATEWAY
    } else {
        accounts::DISPATCHER
    };
    p.check(url.user == account && url.path == "warren", || {
        format!(
            "{DIR}: {name} logs in as {:?} on vhost {:?}, not {account} on warren",
            url.user, url.path
        )
    });
    p.check(url.password.contains("CHANGE-ME"), || {
        format!("{DIR}: {name}'s broker password is not a CHANGE-ME placeholder")
    });
    let gateway_accounts = get("amqp", "gateway_accounts");
    p.check(gateway_accounts.split(',').eq([accounts::GATEWAY]), || {
        format!(
            "{DIR}: amqp.gateway_accounts is {gateway_accounts:?}, not only {}",
            accounts::GATEWAY
        )
    });

    // A Disruption budget over the same pods.
    let pdb = find(objs, "PodDisruptionBudget", name);
    p.check(
        pdb.is_some_and(|b| {
            b["spec"]["selector"]["matchLabels"]
                .as_mapping()
                .is_some_and(|m| m.iter().all(|(k, v)| labels[k] == *v))
        }),
        || format!("{DIR}: no PodDisruptionBudget {name} over its pods"),
    );

    if gateway {
        check_gateway(objs, container, pod, &get, ops_port, p);
    }
}

fn check_gateway(
    objs: &[(String, Yaml)],
    container: &Yaml,
    pod: &Yaml,
    get: &dyn Fn(&str, &str) -> String,
    ops_port: Option<u16>,
    p: &mut Problems,
) {
    // Shutdown: preStop sleeps, then SIGTERM drains within shutdown_grace_s; the pod's
    // grace period must cover both, or the drain is cut by SIGKILL.
    let pre_stop = strings(&container["lifecycle"]["preStop"]["exec"]["command"]);
    let sleep_s: u64 = match pre_stop.as_slice() {
        [cmd, s] if cmd == "sleep" => s.parse().unwrap_or(0),
        _ => 0,
    };
    p.check(sleep_s >= 5, || {
        format!("{DIR}: warren-gateway's preStop is {pre_stop:?}, not a sleep of 5 s or more")
    });
    let grace: u64 = get("gateway", "shutdown_grace_s").parse().unwrap_or(0);
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    p.check(termination > sleep_s + grace, || {
        format!(
            "{DIR}: warren-gateway's terminationGracePeriodSeconds ({termination}) does not exceed \
             preStop ({sleep_s} s) + gateway.shutdown_grace_s ({grace} s)"
        )
    });
    p.check(!get("gateway", "id").is_empty(), || {
        format!("{DIR}: warren-gateway has no gateway.id per pod")
    });
    let dev = get("gateway", "dev_tokens");
    p.check(dev == "false", || {
        format!("{DIR}: gateway.dev_tokens is {dev}")
    });
    let secret = get("auth", "secret");
    p.check(secret.contains("CHANGE-ME"), || {
        format!("{DIR}: auth.secret is not a CHANGE-ME placeholder (a real secret in git, or the development one)")
    });

    // The public Service publishes the public listener only, never the ops port.
    let (_, public_port) = port_of(&get("gateway", "listen"));
    match find(objs, "Service", "warren-gateway") {
        Some(service) => {
            let ports: Vec<Option<u16>> = service["spec"]["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|sp| named_port(container, &sp["targetPort"]))
                .collect();
            p.check(ports == [public_port] && public_port.is_some(), || {
                format!(
                    "{DIR}: Service warren-gateway targets {ports:?}, not only gateway.listen's port {public_port:?}"
                )
            });
        }
        None => p.bad(format!("{DIR}: no Service warren-gateway")),
    }
    for (_, o) in objs
        .iter()
        .filter(|(_, o)| o["kind"].as_str() == Some("Service"))
    {
        let exposed = !matches!(o["spec"]["type"].as_str(), None | Some("ClusterIP"));
        let ops = o["spec"]["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|sp| named_port(container, &sp["targetPort"]) == ops_port);
        let name = o["metadata"]["name"].as_str().unwrap_or("?");
        p.check(!(exposed && ops), || {
            format!("{DIR}: Service {name} exposes the gateways' ops port outside the cluster")
        });
    }
}
