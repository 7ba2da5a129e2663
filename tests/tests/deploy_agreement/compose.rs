//! Compose files rendered as compose renders them, and what the checks read from them.

use std::collections::BTreeMap;

use serde_yaml_ng::Value as Yaml;

use crate::{read, rx, RENDER_COOKIE, RENDER_SECRET};

/// Compose's interpolation: `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
/// `${VAR:?error}` and `$$`, with only `vars` set.
pub(crate) fn interpolate(text: &str, vars: &BTreeMap<&str, &str>) -> String {
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
pub(crate) fn render(path: &str) -> Yaml {
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

pub(crate) fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Bool(b) => Some(b.to_string()),
        Yaml::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(scalar).collect())
        .unwrap_or_default()
}

/// Compose durations: `20s`, `1m30s`, `500ms`.
pub(crate) fn duration_s(text: &str) -> Option<f64> {
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

pub(crate) fn port_of(listen: &str) -> (String, Option<u16>) {
    match listen.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().ok()),
        None => (String::new(), None),
    }
}

/// The parts of a URL the checks need: scheme, user, password, host, port, path.
pub(crate) struct Url {
    pub(crate) scheme: String,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    /// The vhost, for an AMQP URL.
    pub(crate) path: String,
}

pub(crate) fn percent_decode(s: &str) -> String {
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

pub(crate) fn parse_url(url: &str) -> Url {
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
pub(crate) struct Compose {
    pub(crate) cluster: bool,
    pub(crate) doc: Yaml,
    pub(crate) defaults: toml::Table,
    pub(crate) local: toml::Table,
}

impl Compose {
    pub(crate) fn load(path: &'static str, cluster: bool) -> Compose {
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

    pub(crate) fn services(&self) -> BTreeMap<String, &Yaml> {
        self.doc["services"]
            .as_mapping()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v)))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn svc(&self, name: &str) -> &Yaml {
        &self.doc["services"][name]
    }

    /// Services named `<stem><digits>`, sorted.
    pub(crate) fn numbered(&self, stem: &str) -> Vec<String> {
        let re = rx(&format!("^{stem}[0-9]+$"));
        self.services()
            .into_keys()
            .filter(|s| re.is_match(s))
            .collect()
    }

    pub(crate) fn env(&self, svc: &str) -> BTreeMap<String, String> {
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
    pub(crate) fn setting(&self, svc: &str, section: &str, key: &str) -> Option<String> {
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

    pub(crate) fn is_setting(&self, section: &str, key: &str) -> bool {
        (section, key) == ("auth", "public_key_file")
            || self
                .defaults
                .get(section)
                .and_then(|s| s.as_table())
                .is_some_and(|s| s.contains_key(key))
    }

    /// The source mounted at `target` in `svc`, relative paths resolved from deploy/.
    pub(crate) fn mount(&self, svc: &str, target: &str) -> Option<String> {
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

    pub(crate) fn command(&self, svc: &str) -> Vec<String> {
        strings(&self.svc(svc)["command"])
    }

    pub(crate) fn gateways(&self) -> Vec<String> {
        self.numbered("gateway")
    }

    pub(crate) fn warren_services(&self) -> Vec<String> {
        let mut all = self.gateways();
        all.extend(self.numbered("dispatcher"));
        all
    }
}
