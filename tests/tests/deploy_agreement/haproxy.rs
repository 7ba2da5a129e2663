//! `deploy/haproxy.cfg` against the compose file.

use std::collections::BTreeSet;

use crate::compose::{port_of, scalar, Compose};
use crate::{read, rx, Problems};

pub(crate) fn check_haproxy(c: &Compose, p: &mut Problems) {
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
