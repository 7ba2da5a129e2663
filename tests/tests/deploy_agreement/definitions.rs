//! `deploy/rabbitmq/definitions*.json` against the contract and the compose logins.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use proto::accounts;
use proto::amqp::Names;
use proto::topology::{topology, Arg};
use regex::Regex;
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

use crate::compose::{parse_url, Compose};
use crate::{read, Problems};

pub(crate) fn load_json(path: &str) -> Json {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// RabbitMQ's `rabbit_password_hashing_sha256`: base64 of a 4-byte salt and
/// SHA-256(salt + password).
pub(crate) fn password_matches(user: &Json, password: &str) -> bool {
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

pub(crate) fn by_name<'a>(defs: &'a Json, kind: &str, field: &str) -> BTreeMap<String, &'a Json> {
    defs[kind]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| (x[field].as_str().unwrap_or("").to_owned(), x))
        .collect()
}

/// The topology in definitions.json's shape.
pub(crate) fn topology_json(prefix: &str, shards: u32, queue_type: &str, vhost: &str) -> Json {
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
pub(crate) fn as_set(items: &Json) -> BTreeSet<String> {
    items
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| x.to_string())
        .collect()
}

/// The accounts, their permissions and the topology of a definitions file, against
/// the contract and the compose file's logins.
pub(crate) fn check_definitions(c: &Compose, path: &str, p: &mut Problems) {
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
