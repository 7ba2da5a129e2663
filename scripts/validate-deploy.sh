#!/usr/bin/env bash
# Validates Warren's deployment files offline, without a Docker engine:
#
#   1. compose     `docker-compose config` (Debian's docker-compose 1.29, which
#                  needs no engine) renders deploy/compose.yaml and
#                  deploy/compose.cluster.yaml with their default variables and
#                  only the required secrets set (WARREN_AUTH_SECRET, and
#                  WARREN_RABBITMQ_COOKIE for the cluster); it rejects unknown keys
#                  (a typo), bad value types, unset variables and references to
#                  undefined services, networks or volumes. Any warning counts as a
#                  failure. Without any one of the secrets the rendering must fail
#                  (safe by default).
#   2. haproxy     `haproxy -c` on deploy/haproxy.cfg (Debian's HAProxy). The
#                  gateway host names resolve only inside compose; the file uses
#                  `init-addr libc,none`, so they are reported as warnings, which
#                  are the only warnings accepted.
#   3. agreement   a Python check (PyYAML, tomllib) of what must agree across
#                  files: compose (as rendered above) against the settings keys
#                  in common/src/defaults.toml, haproxy.cfg, definitions.json
#                  and rabbitmq.conf; definitions.json against the topology that
#                  common/src/amqp.rs declares (same names, types, flags and
#                  queue arguments, or the services' declarations would fail
#                  with PRECONDITION_FAILED), its accounts, their
#                  least-privilege permissions (topic permissions on the
#                  events exchange included, and the same patterns as
#                  scripts/ensure-services.sh) and dev passwords; the
#                  Dockerfile and .dockerignore against the workspace.
#                  The cluster file gets the same checks where they apply, and
#                  its own: three RabbitMQ nodes, the same three in cluster.conf's
#                  classic peer discovery, one Erlang cookie; quorum command queues
#                  on every Warren service; every service's amqp.urls lists every
#                  node and its redis.cluster_nodes every Redis node; six Redis
#                  nodes in cluster mode with fixed addresses, made a cluster by a
#                  one-shot init service; two dispatchers, two gateways;
#                  definitions.cluster.json is definitions.json without the queues.
#   4. probe       bash -n and shellcheck on the health probe that the
#                  Dockerfile writes into the image; hadolint on the Dockerfile
#                  when it happens to be installed (it is not a Debian package).
#   5. live        only with --live: the configuration of compose.yaml (not the
#                  cluster file), run for real without containers. A private RabbitMQ node (this machine's 3.10, own
#                  ports and data directory) boots with rabbitmq.conf (less the
#                  3.13+ key) and definitions.json; a private Redis; the
#                  dispatcher and the two gateways from target/ (or --bin-dir)
#                  with deploy/local.toml and the environment compose gives them
#                  (host names and ports mapped to 127.0.0.1); HAProxy with
#                  haproxy.cfg (same mapping, smaller maxconn). Then: every
#                  /readyz through warren-probe (extracted from the Dockerfile),
#                  and a WebSocket through HAProxy that joins a room and sends a
#                  message, which exercises every account's permissions.
#                  Leaves the shared RabbitMQ and Redis alone; stops what it
#                  started. Needs rabbitmq-server, redis-server and built binaries
#                  (cargo build --bins); about 20 s.
#
# Missing tools (docker-compose, haproxy, python3-yaml, shellcheck) are
# installed with apt-get, as root or through sudo; with --no-install the script
# fails instead. Runs every check, prints each problem, and exits non-zero if
# any failed. Non-interactive and idempotent; a few seconds once the tools are
# installed.
#
# Usage: scripts/validate-deploy.sh [--no-install] [--live [--bin-dir DIR]]
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

readonly COMPOSE_FILE=deploy/compose.yaml
readonly CLUSTER_FILE=deploy/compose.cluster.yaml
readonly HAPROXY_CFG=deploy/haproxy.cfg
readonly DOCKERFILE=deploy/Dockerfile
# Debian's interpreter: the one apt's python3-yaml is installed for (a pyenv or
# venv python3 earlier on PATH may not have it).
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

SCRIPT_NAME=validate-deploy
DIE_STATUS=2
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

install=1
live=0
bin_dir=${CARGO_TARGET_DIR:-$ROOT/target}/debug
while (($#)); do
    arg=$1
    shift
    case $arg in
    --no-install) install=0 ;;
    --live) live=1 ;;
    --bin-dir)
        (($#)) || die "--bin-dir needs a directory"
        bin_dir=$1
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) die "unknown argument '$arg' (try --help)" ;;
    esac
done
[[ $bin_dir == /* ]] || bin_dir=$ROOT/$bin_dir

# ---------------------------------------------------------------------------
# Tools.
# ---------------------------------------------------------------------------
missing=()
have docker-compose || missing+=(docker-compose)
have haproxy || missing+=(haproxy)
"$PY" -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
have shellcheck || missing+=(shellcheck)
if ((${#missing[@]})); then
    ((install)) || die "missing: ${missing[*]} (apt-get install ${missing[*]}); not installing (--no-install)"
    have apt-get || die "missing ${missing[*]} and apt-get is not available"
    log "installing ${missing[*]} (apt-get)"
    # --no-install-recommends: docker-compose recommends docker.io, a whole
    # container engine that `docker-compose config` does not use.
    apt_install=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300
        install -y -qq --no-install-recommends "${missing[@]}")
    if ! as_root "${apt_install[@]}" >&2; then
        log "retrying after apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
        as_root "${apt_install[@]}" >&2 || die "apt-get install ${missing[*]} failed"
    fi
    hash -r
fi
"$PY" -c 'import sys, tomllib, yaml; sys.exit(0)' 2>/dev/null ||
    die "$PY lacks yaml or tomllib (needs Python 3.11+ with python3-yaml)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

failed=()
# check NAME COMMAND...: runs one check, keeps going when it fails.
check() {
    local name=$1 rc=0
    shift
    "$@" || rc=$?
    if ((rc == 0)); then
        log "ok: $name"
    else
        log "FAILED: $name"
        failed+=("$name")
    fi
}

# ---------------------------------------------------------------------------
# 1. Compose.
# ---------------------------------------------------------------------------
# The shipped defaults are what is checked: not deploy/.env (an empty
# --env-file instead) and none of the caller's variables (env -i).
# The secrets the rendering is given (compose requires them); checked for below.
readonly RENDER_SECRET=validate-deploy-render-secret
readonly RENDER_COOKIE=validate-deploy-render-cookie
: >"$tmp/empty.env"

# render FILE OUT VAR=VALUE...: docker-compose config of FILE into OUT (stderr into
# OUT.err), with nothing but the given variables.
render() {
    local file=$1 out=$2
    shift 2
    env -i PATH="$PATH" HOME="${HOME:-/root}" LANG=C.UTF-8 "$@" \
        docker-compose --env-file "$tmp/empty.env" -f "$file" config >"$out" 2>"$out.err"
}

# compose_config FILE OUT: renders FILE with the required secrets set.
compose_config() {
    local file=$1 out=$2 rc=0
    render "$file" "$out" WARREN_AUTH_SECRET="$RENDER_SECRET" WARREN_RABBITMQ_COOKIE="$RENDER_COOKIE" || rc=$?
    if ((rc != 0)) || [[ -s $out.err ]]; then
        printf '  %s\n' "docker-compose config ($file) says:" >&2
        sed 's/^/    /' "$out.err" >&2
        ((rc != 0)) || printf '    (exit status 0, but any warning is a failure here)\n' >&2
        rm -f "$out"
        return 1
    fi
}

# compose_requires FILE VAR...: without any one of the VARs (the others set), compose
# must refuse to render FILE, naming it: no deployment ever runs with a secret
# everybody knows.
compose_requires() {
    local file=$1 var rc out=$tmp/nosecret.yaml
    shift
    local -A given=([WARREN_AUTH_SECRET]=$RENDER_SECRET [WARREN_RABBITMQ_COOKIE]=$RENDER_COOKIE)
    for var in "$@"; do
        local -a env_args=()
        local name
        for name in "${!given[@]}"; do
            [[ $name == "$var" ]] || env_args+=("$name=${given[$name]}")
        done
        rc=0
        render "$file" "$out" "${env_args[@]}" || rc=$?
        if ((rc == 0)) || ! grep -q "$var" "$out.err"; then
            printf '  docker-compose config of %s without %s: exit status %d, said:\n' "$file" "$var" "$rc" >&2
            sed 's/^/    /' "$out.err" >&2
            return 1
        fi
    done
}

# ---------------------------------------------------------------------------
# 2. HAProxy.
# ---------------------------------------------------------------------------
haproxy_check() {
    local rc=0 line bad=0
    haproxy -c -f "$HAPROXY_CFG" >"$tmp/haproxy.out" 2>&1 || rc=$?
    if ((rc != 0)); then
        printf '  haproxy -c -f %s failed (exit status %d):\n' "$HAPROXY_CFG" "$rc" >&2
        sed 's/^/    /' "$tmp/haproxy.out" >&2
        return 1
    fi
    while IFS= read -r line; do
        case $line in
        *'[WARNING]'*"could not resolve address 'gateway"*) ;; # resolved inside compose only
        *'[WARNING]'* | *'[ALERT]'*)
            printf '  %s\n' "$line" >&2
            bad=1
            ;;
        esac
    done <"$tmp/haproxy.out"
    return "$bad"
}

# ---------------------------------------------------------------------------
# 3. Agreement between the files (Python).
# ---------------------------------------------------------------------------
# agreement single|cluster COMPOSE_FILE RENDERED
agreement() {
    [[ -s $3 ]] || {
        printf '  skipped: needs the rendered compose file (its check 1 failed)\n' >&2
        return 1
    }
    "$PY" - "$@" <<'PY'
import base64
import hashlib
import ipaddress
import json
import re
import sys
import tomllib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

MODE, COMPOSE_SRC, RENDERED = sys.argv[1:4]
# The cluster file (deploy/compose.cluster.yaml) takes the checks of the single-node
# one where they apply, and its own where it differs.
CLUSTER = MODE == "cluster"
DEFINITIONS = "deploy/rabbitmq/definitions.cluster.json" if CLUSTER else "deploy/rabbitmq/definitions.json"
DEF_NAME = Path(DEFINITIONS).name
problems = []


def bad(msg):
    problems.append(msg)


def read(path):
    try:
        return Path(path).read_text()
    except OSError as e:
        bad(f"{path}: {e}")
        return ""


# --- inputs ------------------------------------------------------------------
class StrictLoader(yaml.SafeLoader):
    """Refuses a key written twice in one mapping, as Compose v2 does (PyYAML, and
    so docker-compose 1.x, silently keep the last one)."""


def _no_duplicates(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            bad(f"{COMPOSE_SRC}:{key_node.start_mark.line + 1}: key {key!r} repeats line {seen[key]}")
        seen.setdefault(key, key_node.start_mark.line + 1)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)
try:
    yaml.load(read(COMPOSE_SRC), Loader=StrictLoader)
except yaml.YAMLError as e:
    bad(f"{COMPOSE_SRC}: {e}")
compose = yaml.safe_load(read(RENDERED)) or {}
services = compose.get("services") or {}
defaults = tomllib.loads(read("common/src/defaults.toml"))


def load_json(path):
    try:
        return json.loads(read(path))
    except json.JSONDecodeError as e:
        bad(f"{path} is not valid JSON: {e}")
        return {}


definitions = load_json(DEFINITIONS)
haproxy_cfg = read("deploy/haproxy.cfg")
rabbit_conf = read("deploy/rabbitmq/rabbitmq.conf")
dockerfile = read("deploy/Dockerfile")
amqp_rs = read("common/src/amqp.rs")
names_rs = read("proto/src/amqp.rs")


def duration_s(text):
    """Compose durations: 20s, 1m30s, 500ms, 1h."""
    total, pos = 0.0, 0
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(text)):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    return total if pos == len(str(text)) and pos else None


def env_of(svc):
    env = services[svc].get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


# The settings file (--config) of each Warren service, as a table.
config_files = {}


def setting(env, section, key, svc=None):
    """The value a service sees: its environment, else its --config file, else the
    built-in default."""
    name = f"WARREN__{section.upper()}__{key.upper()}"
    if name in env:
        return env[name]
    for layer in (config_files.get(svc) or {}, defaults):
        value = layer.get(section, {}).get(key)
        if value is not None:
            return ",".join(value) if isinstance(value, list) else str(value)
    return None


ROOM_KEYS = {"id", "visibility", "announce", "owners", "moderators", "history_limit", "history_on_join"}


def check_settings_file(path, table):
    """Every key of a settings file must be a setting: the config crate ignores the others."""
    for section, keys in table.items():
        if section not in defaults or not isinstance(keys, dict):
            bad(f"{path}: [{section}] is not a settings section")
            continue
        for key, value in keys.items():
            if section == "rooms" and key == "list":
                for room in value if isinstance(value, list) else []:
                    for k in set(room) - ROOM_KEYS:
                        bad(f"{path}: [[rooms.list]] {room.get('id')}: unknown key {k}")
            elif key not in defaults[section] and (section, key) != ("auth", "public_key_file"):
                bad(f"{path}: [{section}] {key} is not a setting (not in common/src/defaults.toml)")


def svc_setting(svc, section, key):
    return setting(env_of(svc), section, key, svc)


def mount(svc, target):
    for v in (services.get(svc) or {}).get("volumes") or []:
        parts = str(v).split(":")
        if len(parts) >= 2 and parts[1] == target:
            return parts[0]
    return None


def port_of(listen):
    m = re.fullmatch(r"(.*):(\d+)", listen or "")
    return (m.group(1), int(m.group(2))) if m else (None, None)


# --- the topology common/src/amqp.rs declares --------------------------------
# Names: `fn NAME(&self...) -> String { format!("{}.SUFFIX", self.prefix) }`.
name_fns = {}
for m in re.finditer(
    r'pub fn (\w+)\(&self(?:, \w+: u32)?\) -> String \{\s*format!\("\{\}\.([^"]*)", self\.prefix\)',
    names_rs,
):
    name_fns[m.group(1)] = m.group(2)
shard_key = re.search(r'pub fn shard_key\(shard: u32\) -> String \{\s*format!\("([^"]*)"\)', names_rs)
for needed in ("dead", "commands_exchange", "events_exchange", "commands_queue"):
    if needed not in name_fns:
        bad(f"proto/src/amqp.rs: cannot find how Names::{needed} is formed; update scripts/validate-deploy.sh")
if not shard_key:
    bad("proto/src/amqp.rs: cannot find shard_key(); update scripts/validate-deploy.sh")

body_m = re.search(r"pub async fn declare_topology\((.*?)\n\}\n", amqp_rs, re.S)
body = re.sub(r"\s+", "", body_m.group(1)) if body_m else ""
if not body:
    bad("common/src/amqp.rs: declare_topology not found; update scripts/validate-deploy.sh")


def name_expr(expr, prefix, shard=None):
    m = re.fullmatch(r"names\.(\w+)\((shard)?\)", expr)
    if not m or m.group(1) not in name_fns:
        return None
    return f"{prefix}." + name_fns[m.group(1)].replace("{shard}", str(shard))


def declared(prefix, shards, queue_type):
    """(exchanges, queues, bindings) as amqp.rs declares them, in definitions.json's
    shape, for services whose amqp.command_queue_type is queue_type."""
    exchanges, queues, bindings = {}, {}, set()
    durable_ex = "letdurable=ExchangeDeclareOptions{durable:true," in body
    for m in re.finditer(r"ch\.exchange_declare\((names\.\w+\(\))\.into\(\),ExchangeKind::(\w+),(\w+),FieldTable::default\(\),\)", body):
        name = name_expr(m.group(1), prefix)
        if name is None or m.group(3) != "durable" or not durable_ex:
            bad(f"common/src/amqp.rs: cannot read exchange_declare({m.group(1)}, ..); update scripts/validate-deploy.sh")
            continue
        exchanges[name] = {"type": m.group(2).lower(), "durable": True, "auto_delete": False, "internal": False, "arguments": {}}
    def table(text, var):
        """The queue arguments `VAR.insert("key".into(), AMQPValue::Kind(raw));` put in
        the FieldTable VAR, as JSON values."""
        args = {}
        inserts = re.findall(r'\b' + var + r'\.insert\("([^"]+)"\.into\(\),AMQPValue::(\w+)\((.*?)\),?\);', text)
        for key, kind, raw in inserts:
            if kind == "Boolean" and raw in ("true", "false"):
                args[key] = raw == "true"
            elif kind in ("LongInt", "ShortInt", "LongLongInt", "LongUInt") and re.fullmatch(r"-?[\d_]+", raw):
                args[key] = int(raw.replace("_", ""))
            elif kind in ("LongString", "ShortString") and re.fullmatch(r"names\.\w+\(\)\.into\(\)", raw):
                args[key] = name_expr(raw[: -len(".into()")], prefix)
            elif kind in ("LongString", "ShortString") and re.fullmatch(r'"[^"]*"\.into\(\)', raw):
                args[key] = raw.split('"')[1]
            elif kind in ("LongString", "ShortString") and raw == "queue_type.as_str().into()":
                args[key] = queue_type
            else:
                bad(f"common/src/amqp.rs: cannot read queue argument {key} = AMQPValue::{kind}({raw}); update scripts/validate-deploy.sh")
        if len(args) != text.count(f"{var}.insert("):
            bad(f"common/src/amqp.rs: some arguments of {var} could not be read; update scripts/validate-deploy.sh")
        return args

    # The shard queues: `for shard in 0..shards { let queue = names.commands_queue(shard); args.insert(..)... }`.
    loop = re.search(r"forshardin0\.\.shards\{(.*)\}Ok\(\(\)\)", body)
    if not loop:
        bad("common/src/amqp.rs: the shard-queue loop is not where expected; update scripts/validate-deploy.sh")
        return exchanges, queues, bindings
    lb = loop.group(1)
    # The dead-letter queue: durable, with no arguments or with those of a table
    # filled before the loop.
    before = body[: loop.start()]
    for m in re.finditer(r"ch\.queue_declare\((names\.\w+\(\))\.into\(\),QueueDeclareOptions::(\w+)\(\),(FieldTable::default\(\)|\w+),\)", before):
        name = name_expr(m.group(1), prefix)
        if name is None or m.group(2) != "durable":
            bad(f"common/src/amqp.rs: cannot read queue_declare({m.group(1)}, ..); update scripts/validate-deploy.sh")
            continue
        q_args = {} if m.group(3) == "FieldTable::default()" else table(before, m.group(3))
        queues[name] = {"durable": True, "auto_delete": False, "arguments": q_args}
    args = table(lb, "args")
    if "queue_declare(queue.clone().into(),QueueDeclareOptions::durable(),args)" not in lb:
        bad("common/src/amqp.rs: the shard queues' declaration changed shape; update scripts/validate-deploy.sh")
    for shard in range(shards):
        queues[name_expr("names.commands_queue(shard)", prefix, shard)] = {"durable": True, "auto_delete": False, "arguments": dict(args)}
        if "queue_bind(queue.into(),names.commands_exchange().into(),shard_key(shard).into()" in lb and shard_key:
            bindings.add((f"{prefix}.{name_fns['commands_exchange']}", f"{prefix}.{name_fns['commands_queue'].replace('{shard}', str(shard))}",
                          shard_key.group(1).replace("{shard}", str(shard))))
        else:
            bad("common/src/amqp.rs: the shard queues' binding changed shape; update scripts/validate-deploy.sh")
            break
    for m in re.finditer(r'ch\.queue_bind\((names\.\w+\(\))\.into\(\),(names\.\w+\(\))\.into\(\),"([^"]*)"\.into\(\),', body):
        bindings.add((name_expr(m.group(2), prefix), name_expr(m.group(1), prefix), m.group(3)))
    return exchanges, queues, bindings


# --- the services in compose --------------------------------------------------
gateways = sorted(s for s in services if re.fullmatch(r"gateway\d+", s))
dispatchers = sorted(s for s in services if re.fullmatch(r"dispatcher\d+", s))
# The cluster file's broker and store nodes: rabbitmq1..3, redis1..6.
rabbit_nodes = sorted(s for s in services if re.fullmatch(r"rabbitmq\d+", s))
redis_nodes = sorted(s for s in services if re.fullmatch(r"redis\d+", s))
REDIS_INIT = "redis-cluster-init"
for required in (("lb", REDIS_INIT) if CLUSTER else ("rabbitmq", "redis", "lb")):
    if required not in services:
        bad(f"compose: no `{required}` service")
if len(gateways) < 2:
    bad(f"compose: expected at least two gateway services (gatewayN), found {gateways}")
if len(dispatchers) < 2:
    bad(f"compose: expected at least two dispatcher services (dispatcherN), found {dispatchers}")
if CLUSTER and len(rabbit_nodes) != 3:
    bad(f"compose: expected three RabbitMQ nodes (rabbitmq1..3), found {rabbit_nodes}")
if CLUSTER and len(redis_nodes) != 6:
    bad(f"compose: expected six Redis Cluster nodes (redis1..6: three masters, three replicas), found {redis_nodes}")

# One-shot services (the Redis Cluster's init): what others wait to complete. They
# run once, so they have neither a healthcheck nor a restart policy that restarts them.
one_shot = {dep for svc in services.values() for dep, how in (svc.get("depends_on") or {}).items()
            if isinstance(how, dict) and how.get("condition") == "service_completed_successfully"}
for name, svc in services.items():
    if name in one_shot:
        if svc.get("restart") not in ("no", "on-failure"):
            bad(f"compose: one-shot service {name} has restart: {svc.get('restart')}, not \"no\"")
    else:
        hc = svc.get("healthcheck") or {}
        if not hc.get("test") or hc.get("disable"):
            bad(f"compose: service {name} has no healthcheck")
        if svc.get("restart") not in ("always", "unless-stopped", "on-failure"):
            bad(f"compose: service {name} has no restart policy (restart: {svc.get('restart')})")
    for dep, how in (svc.get("depends_on") or {}).items():
        cond = how.get("condition") if isinstance(how, dict) else None
        if cond != "service_healthy" and not (cond == "service_completed_successfully" and dep in one_shot):
            bad(f"compose: {name} depends on {dep} with condition {cond}, not service_healthy")

# The settings file: the same deploy/local.toml the local stack uses.
warren_services = gateways + dispatchers
local_toml = Path("deploy/local.toml")
try:
    check_settings_file("deploy/local.toml", tomllib.loads(read(local_toml)))
except tomllib.TOMLDecodeError as e:
    bad(f"deploy/local.toml: {e}")
for name in warren_services:
    cmd = services[name].get("command") or []
    if "--config" in cmd and cmd.index("--config") + 1 < len(cmd):
        src = mount(name, cmd[cmd.index("--config") + 1])
        if not src or Path(src).resolve() != local_toml.resolve():
            bad(f"compose: {name}'s --config {cmd[cmd.index('--config') + 1]} is not deploy/local.toml (mounted from {src})")
        else:
            config_files[name] = tomllib.loads(read(src))
    else:
        bad(f"compose: {name} runs without --config (deploy/local.toml, shared with the local stack)")

# Everything the Warren services read from the environment must be a known setting.
for name in warren_services:
    env = env_of(name)
    for key in env:
        m = re.fullmatch(r"WARREN__([A-Z0-9_]+?)__([A-Z0-9_]+)", key)
        if not m:
            if key.startswith("WARREN"):
                bad(f"compose: {name}: {key} is not of the form WARREN__SECTION__KEY")
            continue
        section, field = m.group(1).lower(), m.group(2).lower()
        if section not in defaults or (field not in defaults[section] and (section, field) not in {("auth", "public_key_file")}):
            bad(f"compose: {name}: {key} is not a setting (no [{section}] {field} in common/src/defaults.toml)")
    cmd = services[name].get("command") or []
    binary = "warren-gateway" if name in gateways else "warren-dispatcher"
    if (cmd[:1] if isinstance(cmd, list) else str(cmd).split()[:1]) != [binary]:
        bad(f"compose: {name} runs {cmd!r}, expected {binary}")
    # Graceful stop: compose waits longer than the gateway's own grace period.
    grace = float(setting(env, "gateway", "shutdown_grace_s", name) or 0)
    stop = duration_s(services[name].get("stop_grace_period", "10s"))
    if stop is None or stop <= grace:
        bad(f"compose: {name}: stop_grace_period {services[name].get('stop_grace_period', '10s (default)')} "
            f"is not longer than gateway.shutdown_grace_s ({grace:g} s)")
    # The healthcheck probes the operations listener (a gateway's ops_listen, a
    # dispatcher's listen), on all of the container's interfaces; the gateway's public
    # listener too is on all of them (HAProxy reaches it).
    section, ops_key = ("gateway", "ops_listen") if name in gateways else ("dispatcher", "listen")
    keys = ("listen", "ops_listen") if name in gateways else ("listen",)
    for key in keys:
        host, _ = port_of(setting(env, section, key, name))
        if host not in ("0.0.0.0", "[::]", "::"):
            bad(f"compose: {name}: {section}.{key} is {setting(env, section, key, name)}, unreachable from other containers")
    _, port = port_of(setting(env, section, ops_key, name))
    test = (services[name].get("healthcheck") or {}).get("test") or []
    if test[:3] != ["CMD", "warren-probe", str(port)] or (len(test) > 3 and test[3] != "/readyz"):
        bad(f"compose: {name}: healthcheck {test} does not probe /readyz on {section}.{ops_key}'s port {port}")
    # Safe by default: no development tokens, no insecure override, the secret from
    # the environment (the rendering was given RENDER_SECRET).
    if name in gateways:
        for key, want in ((("gateway", "dev_tokens"), "false"), (("auth", "insecure_dev_auth_on_network"), "false"),
                          (("auth", "secret"), "validate-deploy-render-secret")):
            if (setting(env, *key, name) or "").lower() != want:
                bad(f"compose: {name}: {'.'.join(key)} is {setting(env, *key, name)!r} by default, expected {want!r}")
    # Broker and store: service names of this compose file.
    if not CLUSTER:
        for section_key in (("amqp", "url"), ("redis", "url")):
            url = setting(env, *section_key, name)
            host = urlsplit(url or "").hostname
            if host not in services:
                bad(f"compose: {name}: {'.'.join(section_key)} points at {host!r}, not a service of this file")
    else:
        # Every node of each cluster, once: a service moves to another node when its
        # own goes away, and learns the Redis Cluster's layout from any node.
        for (section, key), nodes, port, scheme in ((("amqp", "urls"), rabbit_nodes, 5672, "amqp"),
                                                   (("redis", "cluster_nodes"), redis_nodes, 6379, "redis")):
            listed = [urlsplit(u.strip()) for u in (setting(env, section, key, name) or "").split(",") if u.strip()]
            if sorted(u.hostname or "" for u in listed) != nodes:
                bad(f"compose: {name}: {section}.{key} lists {[u.hostname for u in listed]}, not each of {nodes} once")
            for u in listed:
                if u.scheme != scheme or u.port != port:
                    bad(f"compose: {name}: {section}.{key} has {u.geturl()!r}, expected {scheme}://<node>:{port}")
        # Quorum command queues: every service declares the topology, and a queue
        # declared with another type than it has is refused (PRECONDITION_FAILED).
        if setting(env, "amqp", "command_queue_type", name) != "quorum":
            bad(f"compose: {name}: amqp.command_queue_type is {setting(env, 'amqp', 'command_queue_type', name)!r}, "
                "expected quorum (replicated command queues)")
        # It starts once every broker node is healthy (the quorum queues it declares
        # get a member on each) and the Redis Cluster serves every slot.
        deps = services[name].get("depends_on") or {}
        for node in rabbit_nodes:
            if (deps.get(node) or {}).get("condition") != "service_healthy":
                bad(f"compose: {name} does not wait for {node} to be healthy")
        if (deps.get(REDIS_INIT) or {}).get("condition") != "service_completed_successfully":
            bad(f"compose: {name} does not wait for {REDIS_INIT} to complete")

gw_ids = [svc_setting(g, "gateway", "id") for g in gateways]
if len(set(gw_ids)) != len(gw_ids) or "" in gw_ids:
    bad(f"compose: gateway ids must be set and distinct, got {gw_ids}")

# Settings that must be the same in every Warren service.
for section, key in (("amqp", "prefix"), ("amqp", "shards"), ("amqp", "gateway_accounts"), ("amqp", "command_queue_type"),
                     ("redis", "prefix"), ("redis", "url"), ("redis", "cluster_nodes")):
    values = {svc_setting(s, section, key) for s in warren_services}
    if len(values) > 1:
        bad(f"compose: {section}.{key} differs between services: {sorted(values)}")
for section, key in (("auth", "secret"), ("auth", "algorithm"), ("gateway", "allowed_origins")):
    values = {svc_setting(s, section, key) for s in gateways}
    if len(values) > 1:
        bad(f"compose: {section}.{key} differs between gateways")

# Browsers open the load balancer's published URL: its origin must be allowed.
lb_port = None
for svc_name, svc in services.items():
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            host_ip, published, target = p.get("host_ip"), p.get("published"), p.get("target")
        else:
            m = re.fullmatch(r"(?:([\d.]+):)?(\d+):(\d+)(?:/tcp)?", str(p))
            host_ip, published, target = (m.group(1), m.group(2), m.group(3)) if m else (None, None, None)
        # Safe by default: nothing is published beyond this host unless asked.
        if host_ip != "127.0.0.1":
            bad(f"compose: {svc_name} publishes {p} on {host_ip or 'every interface'} by default, not 127.0.0.1")
        if svc_name == "lb" and target is not None and int(target) == 8080:
            lb_port = int(published)
if lb_port is None:
    bad("compose: lb does not publish its port 8080")
for g in gateways:
    origins = (svc_setting(g, "gateway", "allowed_origins") or "").split(",")
    if lb_port is not None and f"http://localhost:{lb_port}" not in origins:
        bad(f"compose: {g}: allowed_origins {origins} lacks the load balancer's http://localhost:{lb_port}")



def command_text(svc):
    cmd = (services.get(svc) or {}).get("command") or []
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


# Redis persists to a volume (each node of the cluster to its own).
data_volumes = {}
for node in redis_nodes if CLUSTER else ["redis"]:
    if not re.search(r"--appendonly\s+yes", command_text(node)):
        bad(f"compose: {node} does not run with --appendonly yes")
    src = mount(node, "/data")
    if not src:
        bad(f"compose: {node} has no volume on /data")
    elif src in data_volumes:
        bad(f"compose: {node} and {data_volumes[src]} share the volume {src} on /data")
    data_volumes.setdefault(src, node)

# The Redis Cluster: six nodes in cluster mode at fixed addresses (a node keeps its
# peers' addresses in nodes.conf, which outlives the containers), made a cluster of
# three masters with one replica each by the one-shot init, which the services wait for.
if CLUSTER:
    net = ((compose.get("networks") or {}).get("redis") or {}).get("ipam") or {}
    pool = (net.get("config") or [{}])[0]
    subnet = dynamic = None
    if not pool.get("subnet"):
        bad("compose: no `redis` network with an ipam subnet for the Redis nodes' fixed addresses")
    else:
        try:
            subnet = ipaddress.ip_network(pool["subnet"])
            dynamic = ipaddress.ip_network(pool["ip_range"]) if pool.get("ip_range") else None
        except ValueError as e:
            bad(f"compose: the redis network's subnet or ip_range: {e}")
    addresses = {}
    for node in redis_nodes:
        if not re.search(r"--cluster-enabled\s+yes", command_text(node)):
            bad(f"compose: {node} does not run with --cluster-enabled yes")
        nets = (services[node].get("networks") or {})
        addr = ((nets.get("redis") if isinstance(nets, dict) else None) or {}).get("ipv4_address")
        try:
            ip = ipaddress.ip_address(addr or "")
        except ValueError:
            bad(f"compose: {node} has no fixed ipv4_address on the redis network")
            continue
        if subnet and ip not in subnet:
            bad(f"compose: {node}'s address {ip} is not in the redis network {subnet}")
        if dynamic and ip in dynamic:
            bad(f"compose: {node}'s address {ip} is in ip_range {dynamic}, where Docker hands out addresses to others")
        if ip in addresses:
            bad(f"compose: {node} and {addresses[ip]} have the same address {ip}")
        addresses.setdefault(ip, node)
    init = command_text(REDIS_INIT)
    create = re.search(r"--cluster\s+create\b", init)
    listed = set(re.findall(r"\b(redis\d+):6379\b", init))
    if not create or not re.search(r"--cluster-replicas\s+1\b", init) or "--cluster-yes" not in init:
        bad(f"compose: {REDIS_INIT} does not run `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`")
    if listed != set(redis_nodes):
        bad(f"compose: {REDIS_INIT} creates the cluster of {sorted(listed)}, not of {redis_nodes}")
    init_deps = (services.get(REDIS_INIT) or {}).get("depends_on") or {}
    for node in redis_nodes:
        if (init_deps.get(node) or {}).get("condition") != "service_healthy":
            bad(f"compose: {REDIS_INIT} does not wait for {node} to be healthy")


# --- HAProxy against compose ---------------------------------------------------
src = mount("lb", "/usr/local/etc/haproxy/haproxy.cfg")
if not src or not src.endswith("/deploy/haproxy.cfg"):
    bad(f"compose: lb does not mount deploy/haproxy.cfg as /usr/local/etc/haproxy/haproxy.cfg (mounts {src})")
backend = re.search(r"^backend gateways\n(.*?)(?=^\S|\Z)", haproxy_cfg, re.M | re.S)
server_lines = re.findall(r"^\s*server\s+\S+\s+([\w.-]+):(\d+)(.*)$", backend.group(1), re.M) if backend else []
servers = {g: port for g, port, _ in server_lines}
if not backend:
    bad("haproxy.cfg: no `backend gateways`")
if set(servers) != set(gateways):
    bad(f"haproxy.cfg: backend servers {sorted(servers)} differ from the compose gateways {gateways}")
for g, port, rest in server_lines:
    if g in services and int(port) != port_of(svc_setting(g, "gateway", "listen"))[1]:
        bad(f"haproxy.cfg: server {g}:{port} is not the port {g} listens on")
    check_port = re.search(r"\bport\s+(\d+)", rest)
    if g in services and (not check_port or int(check_port.group(1)) != port_of(svc_setting(g, "gateway", "ops_listen"))[1]):
        bad(f"haproxy.cfg: server {g} is not checked on its operations port (gateway.ops_listen)")
for directive in ("option httpchk", "http-check send meth GET uri /readyz", "timeout tunnel"):
    if not re.search(r"^\s*" + re.escape(directive) + r"\b", haproxy_cfg, re.M):
        bad(f"haproxy.cfg: missing `{directive}`")
for sticky in (r"^\s*cookie\b", r"^\s*stick(-table)?\b", r"^\s*balance\s+(source|uri|hdr|url_param)"):
    if re.search(sticky, haproxy_cfg, re.M):
        bad(f"haproxy.cfg: sticky routing ({sticky}) is not wanted; see docs/OPERATIONS.md")
# Redis is bounded and refuses writes when full rather than evicting history, roles or
# bans at random (#13 item 4).
redis_servers = 0
for name, svc in services.items():
    redis_cmd = [str(a) for a in ((svc or {}).get("command") or [])]
    if not redis_cmd or redis_cmd[0] != "redis-server":
        continue
    redis_servers += 1
    if "--maxmemory" not in redis_cmd or "noeviction" not in redis_cmd:
        bad(f"compose: {name} must run with --maxmemory and --maxmemory-policy noeviction (command: {redis_cmd})")
if not redis_servers:
    bad("compose: no service runs redis-server with its command spelt out")
# Tokens travel in `/ws?token=` from clients that cannot send a header: no log may hold
# the query string. `option httplog` and `%r`, `%HU`, `%HQ` log it.
if re.search(r"^\s*option\s+httplog\b", haproxy_cfg, re.M):
    bad("haproxy.cfg: `option httplog` logs the whole request line, tokens in `?token=` included; use a log-format with %HPO")
for line in re.findall(r"^\s*log-format\s+(.*)$", haproxy_cfg, re.M):
    if re.search(r"%(\{[^}]*\})?(r|HU|HQ)\b", line):
        bad("haproxy.cfg: the log-format logs the query string (%r, %HU or %HQ); use %HM %HPO %HV")
maxconn = re.search(r"^global\n(?:.*\n)*?\s*maxconn\s+(\d+)", haproxy_cfg, re.M)
nofile = ((services.get("lb") or {}).get("ulimits") or {}).get("nofile") or {}
nofile = nofile.get("soft") if isinstance(nofile, dict) else nofile
if maxconn and (not nofile or int(nofile) < 2 * int(maxconn.group(1)) + 100):
    bad(f"compose: lb's nofile ulimit ({nofile}) is too low for haproxy.cfg's maxconn {maxconn.group(1)} (HAProxy refuses to start)")

# --- RabbitMQ: rabbitmq.conf -----------------------------------------------------
# The keys this file may use: each exists in RabbitMQ 3.10 and 4.x, except the
# deprecated-features one (3.13+, and only used by the compose image). A typo in a
# key makes the node refuse to boot, which no offline tool here could tell.
KNOWN_CONF = {
    "load_definitions", "listeners.tcp.default", "management.tcp.port",
    "deprecated_features.permit.transient_nonexcl_queues",
    "vm_memory_high_watermark.relative", "disk_free_limit.absolute",
}
conf = {}
for n, line in enumerate(rabbit_conf.splitlines(), 1):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    m = re.fullmatch(r"([\w.$-]+)\s*=\s*(\S.*)", line)
    if not m:
        bad(f"rabbitmq.conf:{n}: not `key = value`: {line}")
        continue
    if m.group(1) not in KNOWN_CONF:
        bad(f"rabbitmq.conf:{n}: unknown key {m.group(1)} (add it to KNOWN_CONF in scripts/validate-deploy.sh if it is real)")
    conf[m.group(1)] = m.group(2)


def conf_mounts(svc):
    """The RabbitMQ configuration files a node mounts (source paths, in load order)."""
    found = []
    for v in (services.get(svc) or {}).get("volumes") or []:
        parts = str(v).split(":")
        if len(parts) >= 2 and re.fullmatch(r"/etc/rabbitmq/(rabbitmq\.conf|conf\.d/[\w.-]+\.conf)", parts[1]):
            found.append((parts[1], parts[0]))
    return [src for _, src in sorted(found)]


for node in rabbit_nodes if CLUSTER else ["rabbitmq"]:
    src = mount(node, conf.get("load_definitions", "?"))
    if src is None:
        bad(f"compose: {node} does not mount the definitions at {conf.get('load_definitions')} (rabbitmq.conf's load_definitions)")
    elif Path(src).resolve() != Path(DEFINITIONS).resolve():
        bad(f"compose: {node} mounts {src} as its definitions, not {DEFINITIONS}")
    confs = conf_mounts(node)
    if not any(c.endswith("/deploy/rabbitmq/rabbitmq.conf") for c in confs):
        bad(f"compose: {node} does not mount deploy/rabbitmq/rabbitmq.conf under /etc/rabbitmq")
    if CLUSTER and not any(c.endswith("/deploy/rabbitmq/cluster.conf") for c in confs):
        bad(f"compose: {node} does not mount deploy/rabbitmq/cluster.conf under /etc/rabbitmq/conf.d")
if conf.get("listeners.tcp.default", "5672") != "5672" or conf.get("management.tcp.port", "15672") != "15672":
    bad("rabbitmq.conf: compose expects AMQP on 5672 and the console on 15672")

# --- RabbitMQ: the cluster (cluster.conf, node names, cookie) -----------------------
# cluster.conf's keys: the compose image's (4.x); continuous membership
# reconciliation is 3.13+.
KNOWN_CLUSTER_CONF = {
    "cluster_formation.peer_discovery_backend",
    "quorum_queue.continuous_membership_reconciliation.enabled",
    "quorum_queue.continuous_membership_reconciliation.target_group_size",
}
if CLUSTER:
    cluster_conf, seeds = {}, set()
    for n, line in enumerate(read("deploy/rabbitmq/cluster.conf").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([\w.$-]+)\s*=\s*(\S.*)", line)
        if not m:
            bad(f"cluster.conf:{n}: not `key = value`: {line}")
        elif re.fullmatch(r"cluster_formation\.classic_config\.nodes\.\d+", m.group(1)):
            seeds.add(m.group(2))
        elif m.group(1) in KNOWN_CONF:
            bad(f"cluster.conf:{n}: {m.group(1)} belongs in rabbitmq.conf")
        elif m.group(1) not in KNOWN_CLUSTER_CONF:
            bad(f"cluster.conf:{n}: unknown key {m.group(1)} (add it to KNOWN_CLUSTER_CONF in scripts/validate-deploy.sh if it is real)")
        else:
            cluster_conf[m.group(1)] = m.group(2)
    if cluster_conf.get("cluster_formation.peer_discovery_backend") not in ("classic_config", "rabbit_peer_discovery_classic_config"):
        bad("cluster.conf: cluster_formation.peer_discovery_backend is not classic_config")
    if cluster_conf.get("quorum_queue.continuous_membership_reconciliation.target_group_size", str(len(rabbit_nodes))) != str(len(rabbit_nodes)):
        bad(f"cluster.conf: the quorum queues' target group size is not the number of nodes ({len(rabbit_nodes)})")
    # A node is rabbit@<its hostname>; a fixed hostname keeps it (and its data).
    names = set()
    for node in rabbit_nodes:
        host = services[node].get("hostname")
        if not host:
            bad(f"compose: {node} has no fixed hostname (its node name, rabbit@<hostname>, would change)")
        else:
            names.add(f"rabbit@{host}")
    if seeds != names:
        bad(f"cluster.conf: classic_config lists {sorted(seeds)}, the compose nodes are {sorted(names)}")
    # One Erlang cookie, from the required variable (the rendering was given it).
    cookies = {node: env_of(node).get("RABBITMQ_ERLANG_COOKIE") for node in rabbit_nodes}
    if set(cookies.values()) != {"validate-deploy-render-cookie"}:
        bad(f"compose: the RabbitMQ nodes do not all take RABBITMQ_ERLANG_COOKIE from WARREN_RABBITMQ_COOKIE: {cookies}")

# --- RabbitMQ: definitions.json ----------------------------------------------------
g0 = gateways[0] if gateways else None
prefix = (svc_setting(g0, "amqp", "prefix") if g0 else None) or "warren"
shards = int((svc_setting(g0, "amqp", "shards") if g0 else None) or 0)
gw_accounts = {a.strip() for a in ((svc_setting(g0, "amqp", "gateway_accounts") if g0 else None) or "").split(",")}
vhosts = [v.get("name") for v in definitions.get("vhosts", [])]
users = {u.get("name"): u for u in definitions.get("users", [])}
perms = {(p.get("user"), p.get("vhost")): p for p in definitions.get("permissions", [])}

EXPECTED_USERS = {"warren-admin": ["administrator"], "warren-gateway": [], "warren-dispatcher": [], "warren-bot": []}
for name, tags in EXPECTED_USERS.items():
    u = users.get(name)
    if not u:
        bad(f"{DEF_NAME}: no user {name}")
        continue
    got = u.get("tags")
    got = [t for t in got.split(",") if t] if isinstance(got, str) else list(got or [])
    if sorted(got) != sorted(tags):
        bad(f"{DEF_NAME}: user {name} has tags {got}, expected {tags}")
if "guest" in users:
    bad(f"{DEF_NAME}: defines `guest`; use the warren-* accounts")


def password_matches(user, password):
    u = users.get(user) or {}
    if u.get("hashing_algorithm") != "rabbit_password_hashing_sha256":
        return False
    try:
        raw = base64.b64decode(u.get("password_hash", ""), validate=True)
    except ValueError:
        return False
    return len(raw) == 36 and hashlib.sha256(raw[:4] + password.encode()).digest() == raw[4:]


# The shipped file carries development passwords: each account's password is its name.
for name in EXPECTED_USERS:
    if name in users and not password_matches(name, name):
        bad(f"{DEF_NAME}: the hash of {name} is not that of its development password ({name}); "
            "a real deployment keeps its own definitions file (WARREN_RABBITMQ_DEFINITIONS)")



def amqp_addresses(svc):
    """The broker URLs a service tries: amqp.urls, or amqp.url when that is empty."""
    urls = [u.strip() for u in (svc_setting(svc, "amqp", "urls") or "").split(",") if u.strip()]
    return urls or [svc_setting(svc, "amqp", "url") or ""]


# Each service logs in as an account that exists, with the password compose gives it,
# on the vhost, at every broker address it has (one login: the nodes share their users).
for svc in warren_services:
    logins = set()
    for address in amqp_addresses(svc):
        url = urlsplit(address)
        login, password, vhost = unquote(url.username or ""), unquote(url.password or ""), unquote(url.path[1:] or "/")
        logins.add(login)
        if login not in users:
            bad(f"compose: {svc} logs in to RabbitMQ as {login!r}, which {DEF_NAME} does not create")
        elif not password_matches(login, password):
            bad(f"compose: {svc}'s default AMQP password does not match {login}'s hash in {DEF_NAME}")
        if vhost not in vhosts:
            bad(f"compose: {svc} uses vhost {vhost!r}; {DEF_NAME} creates {vhosts}")
        elif (login, vhost) not in perms:
            bad(f"{DEF_NAME}: {login} has no permissions on vhost {vhost}")
        is_gw = svc in gateways
        if (login in gw_accounts) != is_gw:
            bad(f"compose: {svc} logs in as {login}, which is {'not ' if is_gw else ''}in amqp.gateway_accounts "
                f"{sorted(gw_accounts)}: the dispatcher would {'not ' if is_gw else ''}trust its commands' actor")
    if len(logins) > 1:
        bad(f"compose: {svc} logs in as {sorted(logins)} on different nodes; the services take one login")
for account in gw_accounts:
    if account not in users:
        bad(f"compose: amqp.gateway_accounts names {account!r}, which {DEF_NAME} does not create")

# Least privilege, as the AMQP operations of each role need it (RabbitMQ matches
# the regular expressions against exchange and queue names, and publishing
# through the default exchange is a write on `amq.default`).
P = prefix
ROLES = {
    # declares nothing shared (passive declares need no permission); declares,
    # binds, consumes and deletes its own queue; publishes commands. It can
    # neither read a command queue nor delete (or declare) a shared exchange.
    "warren-gateway": {
        "configure": ([f"{P}.gw.gateway1"],
                      [f"{P}.commands", f"{P}.commands.0", f"{P}.events", f"{P}.dead",
                       f"{P}.bot.modbot.events", "amq.default", f"x{P}.gw.gateway1"]),
        "write": ([f"{P}.commands", f"{P}.gw.gateway1"],
                  [f"{P}.commands.0", f"{P}.dead", f"{P}.events", "amq.default", f"{P}.bot.modbot.events"]),
        "read": ([f"{P}.events", f"{P}.gw.gateway1"],
                 [f"{P}.commands", f"{P}.commands.0", f"{P}.dead", f"{P}.bot.modbot.events", "amq.default"]),
    },
    # declare the shared topology; consume the shards; publish events, replies
    # (default exchange), rejected commands (dead) and probes (commands).
    # Declaring a shard queue with a dead-letter exchange needs read on the
    # queue and write on the dead-letter exchange.
    "warren-dispatcher": {
        "configure": ([f"{P}.commands", f"{P}.commands.0", f"{P}.events", f"{P}.dead"],
                      [f"{P}.gw.gateway1", f"{P}.bot.modbot.events"]),
        "write": (["amq.default", f"{P}.commands", f"{P}.commands.0", f"{P}.events", f"{P}.dead"],
                  [f"{P}.gw.gateway1", f"{P}.bot.modbot.events"]),
        "read": ([f"{P}.commands", f"{P}.commands.0", f"{P}.dead"],
                 [f"{P}.events", f"{P}.gw.gateway1", f"{P}.bot.modbot.events"]),
    },
    # the shared development account of the two example bots, modbot and echo:
    # their own queues only; publish commands; bind from events.
    "warren-bot": {
        "configure": ([f"{P}.bot.modbot.events", f"{P}.bot.echo.replies"],
                      [f"{P}.bot.other.events", f"{P}.commands", f"{P}.events", f"{P}.commands.0", f"{P}.gw.gateway1"]),
        "write": ([f"{P}.commands", f"{P}.bot.modbot.events"],
                  [f"{P}.events", "amq.default", f"{P}.commands.0", f"{P}.bot.other.events"]),
        "read": ([f"{P}.events", f"{P}.bot.modbot.events"],
                 [f"{P}.commands.0", f"{P}.dead", f"{P}.gw.gateway1", f"{P}.bot.other.events"]),
    },
}
# Topic permissions on the events exchange, matched against routing keys: `write`
# against each publish's key, `read` against each binding's key as written (so a
# wildcard binding must match the pattern literally). Without any, an account may
# use every key, so each role has one.
EVENTS = f"{P}.events"
DM_KEY = "room.dm~alice~bob"
TOPIC_ROLES = {
    # binds the rooms of its clients (dm rooms too) and its own gw key.
    "warren-gateway": {
        "write": ([], ["room.general.message", "user.alice.message", "gw.gateway1"]),
        "read": (["room.general.#", f"{DM_KEY}.#", "gw.gateway1"],
                 ["#", "room.#", "room.*.#", "*.*.*", "user.#", "user.alice.message", "gw.*"]),
    },
    # publishes room and user events and answers to a gateway's key; binds nothing.
    "warren-dispatcher": {
        "write": (["room.general.message", f"{DM_KEY}.message", "user.alice.message", "gw.gateway1"],
                  ["shard.0", "#"]),
        "read": ([], ["#", "room.general.#"]),
    },
    # the default grant: message, member and moderation events of any room that
    # is not a dm room, one room per binding; never user.*, gw.*, a dm room.
    "warren-bot": {
        "write": ([], ["room.general.message"]),
        "read": (["room.general.message", "room.general.member", "room.general.moderation"],
                 ["#", "room.#", "room.*.message", "room.general.#", "room.general.typing", "room.general.kicked",
                  f"{DM_KEY}.message", "user.#", "user.alice.message", "gw.gateway1", "gw.*", "*.*.*"]),
    },
}
vhost = unquote(urlsplit(amqp_addresses(g0)[0] if g0 else "").path[1:] or "/")
topic_perms = {(t.get("user"), t.get("vhost"), t.get("exchange")): t for t in definitions.get("topic_permissions", [])}


def check_patterns(user, what, p, kinds):
    for kind, (allowed, denied) in kinds.items():
        try:
            rx = re.compile(p.get(kind, ""))
        except re.error as e:
            bad(f"{DEF_NAME}: {user}'s {what}{kind} pattern is not a regular expression: {e}")
            continue
        for res in allowed:
            if not rx.search(res):
                bad(f"{DEF_NAME}: {user} needs {what}{kind} on {res}; its pattern {p.get(kind)!r} does not allow it")
        for res in denied:
            if rx.search(res):
                bad(f"{DEF_NAME}: {user}'s {what}{kind} pattern {p.get(kind)!r} also allows {res}; least privilege says no")


for user, kinds in ROLES.items():
    p = perms.get((user, vhost))
    if not p:
        bad(f"{DEF_NAME}: {user} has no permissions on vhost {vhost}")
        continue
    check_patterns(user, "", p, kinds)
for user, kinds in TOPIC_ROLES.items():
    t = topic_perms.get((user, vhost, EVENTS))
    if not t:
        bad(f"{DEF_NAME}: {user} has no topic permissions on {EVENTS} (vhost {vhost}): it could bind and publish any routing key")
        continue
    check_patterns(user, "topic ", t, kinds)
for (user, tvhost, exchange) in topic_perms:
    if user not in TOPIC_ROLES or tvhost != vhost or exchange != EVENTS:
        bad(f"{DEF_NAME}: unexpected topic permissions for {user} on {tvhost}/{exchange}")
# The local stack's accounts (scripts/ensure-services.sh) have the same patterns.
shell_vars = {}
for m in re.finditer(r"^readonly (\w+)=(?:'([^']*)'|\"([^\"]*)\"|([^\s'\"]*))", read("scripts/ensure-services.sh"), re.M):
    value = next(g for g in (m.group(2), m.group(3), m.group(4)) if g is not None)
    if m.group(3) is not None:
        value = re.sub(r"\$\{(\w+)\}", lambda v: shell_vars.get(v.group(1), v.group(0)), value).replace("\\$", "$")
    shell_vars[m.group(1)] = value
if shell_vars.get("EVENTS_EXCHANGE") != EVENTS:
    bad(f"scripts/ensure-services.sh: EVENTS_EXCHANGE {shell_vars.get('EVENTS_EXCHANGE')!r} is not {EVENTS!r}")
for user, var in (("warren-gateway", "GW"), ("warren-bot", "BOT")):
    if shell_vars.get(f"{var}_USER") != user:
        bad(f"scripts/ensure-services.sh: cannot find the {user} account ({var}_USER); update scripts/validate-deploy.sh")
        continue
    if shell_vars.get("PREFIX_RE") != re.escape(prefix):
        bad(f"scripts/ensure-services.sh: PREFIX_RE {shell_vars.get('PREFIX_RE')!r} is not the compose prefix {prefix!r}")
    for kind in ("configure", "write", "read"):
        local = shell_vars.get(f"{var}_{kind.upper()}")
        mine = (perms.get((user, vhost)) or {}).get(kind)
        if local != mine:
            bad(f"{DEF_NAME}: {user}'s {kind} pattern {mine!r} differs from the local stack's {local!r} (scripts/ensure-services.sh)")
    for kind in ("write", "read"):
        local = shell_vars.get(f"{var}_TOPIC_{kind.upper()}")
        mine = (topic_perms.get((user, vhost, EVENTS)) or {}).get(kind)
        if local != mine:
            bad(f"{DEF_NAME}: {user}'s topic {kind} pattern {mine!r} differs from the local stack's {local!r} (scripts/ensure-services.sh)")

admin = perms.get(("warren-admin", vhost)) or {}
if any(admin.get(k) != ".*" for k in ("configure", "write", "read")):
    bad(f"{DEF_NAME}: warren-admin should have full permissions on {vhost}")

# The topology: identical to what the services declare. The cluster's definitions have
# none: the services declare it, the command queues quorum, once every node runs (a
# quorum queue that a node imported at boot, alone, would have no member elsewhere),
# and are otherwise the single-node definitions.
queue_type = (svc_setting(g0, "amqp", "command_queue_type") if g0 else None) or "classic"
if body and shards:
    # Read even where not compared: amqp.rs must still be understood.
    want_ex, want_q, want_b = declared(prefix, shards, queue_type)
if CLUSTER:
    for kind in ("queues", "exchanges", "bindings"):
        if definitions.get(kind):
            bad(f"{DEF_NAME}: has {kind}; the services declare the topology (with quorum command queues)")
    base = load_json("deploy/rabbitmq/definitions.json")
    for kind in sorted(set(base) | set(definitions)):
        if kind not in ("queues", "exchanges", "bindings") and base.get(kind) != definitions.get(kind):
            bad(f"{DEF_NAME}: its {kind} differ from definitions.json's (the clusters's definitions are "
                "definitions.json without the topology)")
elif body and shards:
    got_ex = {e["name"]: {k: e.get(k) for k in ("type", "durable", "auto_delete", "internal", "arguments")}
              for e in definitions.get("exchanges", []) if e.get("vhost") == vhost}
    got_q = {q["name"]: {k: q.get(k) for k in ("durable", "auto_delete", "arguments")}
             for q in definitions.get("queues", []) if q.get("vhost") == vhost}
    got_b = {(b.get("source"), b.get("destination"), b.get("routing_key")) for b in definitions.get("bindings", [])
             if b.get("vhost") == vhost and b.get("destination_type") == "queue"}
    for name, spec in want_ex.items():
        if got_ex.get(name) != spec:
            bad(f"{DEF_NAME}: exchange {name} is {got_ex.get(name)}, the services declare {spec}")
    for name, spec in want_q.items():
        if got_q.get(name) != spec:
            bad(f"{DEF_NAME}: queue {name} is {got_q.get(name)}, the services declare {spec}")
    for extra in sorted(set(got_ex) - set(want_ex)) + sorted(set(got_q) - set(want_q)):
        bad(f"{DEF_NAME}: {extra} is not part of the topology the services declare")
    if got_b != want_b:
        bad(f"{DEF_NAME}: bindings {sorted(got_b)} differ from the services' {sorted(want_b)}")
    if not want_q:
        bad("common/src/amqp.rs: no queues found; update scripts/validate-deploy.sh")
for pol in definitions.get("policies", []):
    if pol.get("vhost") != vhost:
        bad(f"{DEF_NAME}: policy {pol.get('name')} is on vhost {pol.get('vhost')}")
    # A policy key that a shard queue already sets as an argument would be ignored
    # there; one the services do not set would change their queues silently.
    if re.search(pol.get("pattern", ""), f"{prefix}.commands.0"):
        bad(f"{DEF_NAME}: policy {pol.get('name')} applies to the shard queues; keep them as the services declare them")


def finish():
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


# The image and its build context are the same for both compose files: checked once.
if CLUSTER:
    finish()

# --- Dockerfile ----------------------------------------------------------------
stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", dockerfile, re.M | re.I)
args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", dockerfile, re.M))
images = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), s[0]) for s in stages]
if len(images) < 2 or not images[0].startswith("rust:") or not images[-1].startswith("debian:bookworm"):
    bad(f"Dockerfile: expected a rust: build stage and a debian:bookworm runtime, found {images}")
if not re.search(r"cargo build --release --locked --bins", dockerfile):
    bad("Dockerfile: the build does not run `cargo build --release --locked --bins`")
if not re.search(r"--mount=type=cache,[^\n]*target=/usr/local/cargo/registry", dockerfile):
    bad("Dockerfile: no cache mount for the cargo registry")
user = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
if not user or user[-1].split(":")[0] in ("root", "0"):
    bad("Dockerfile: the runtime does not run as a non-root USER")
exposed = set(re.findall(r"\d+", " ".join(re.findall(r"^EXPOSE\s+(.*)$", dockerfile, re.M))))
for svc in warren_services:
    section = "gateway" if svc in gateways else "dispatcher"
    port = str(port_of(svc_setting(svc, section, "listen"))[1])
    if port not in exposed:
        bad(f"Dockerfile: EXPOSE lacks {port} ({svc})")
probe = re.search(r"^COPY --chmod=0755 <<'PROBE' /usr/local/bin/warren-probe\n(.*?)^PROBE$", dockerfile, re.M | re.S)
if not probe:
    bad("Dockerfile: the warren-probe here-document was not found")

# --- .dockerignore ----------------------------------------------------------------
def ignore_rx(pattern):
    pattern = pattern.strip("/")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + "(?:/.*)?")


rules = []
for line in read(".dockerignore").splitlines():
    line = line.strip()
    if line and not line.startswith("#"):
        rules.append((line.startswith("!"), ignore_rx(line.lstrip("!"))))


def ignored(path):
    result = False
    for negate, rx in rules:
        if rx.fullmatch(path):
            result = not negate
    return result


workspace = tomllib.loads(read("Cargo.toml")).get("workspace", {})
needed = ["Cargo.toml", "Cargo.lock"]
for member in workspace.get("members", []):
    needed += [f"{member}/Cargo.toml", f"{member}/src"]
    for rs in Path(member).rglob("*.rs"):
        for inc in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', rs.read_text(errors="replace")):
            target = (rs.parent / inc).resolve()
            try:
                needed.append(str(target.relative_to(Path.cwd().resolve())))
            except ValueError:
                bad(f"{rs}: include of {inc} lies outside the build context")
for path in needed:
    if ignored(path):
        bad(f".dockerignore excludes {path}, which the build needs")
for path in ("target", ".git"):
    if not ignored(path):
        bad(f".dockerignore should exclude {path}/")

finish()
PY
}

# ---------------------------------------------------------------------------
# 4. The health probe baked into the image, and the Dockerfile.
# ---------------------------------------------------------------------------
probe_check() {
    sed -n "/^COPY --chmod=0755 <<'PROBE' /,/^PROBE\$/p" "$DOCKERFILE" | sed '1d;$d' >"$tmp/probe.sh"
    [[ -s $tmp/probe.sh ]] || {
        printf '  the warren-probe here-document was not found in %s\n' "$DOCKERFILE" >&2
        return 1
    }
    bash -n "$tmp/probe.sh" || return 1
    shellcheck -s bash "$tmp/probe.sh" >&2 || return 1
    if have hadolint; then
        # DL3008: unpinned apt packages (ca-certificates follows the base image).
        hadolint --ignore DL3008 "$DOCKERFILE" >&2 || return 1
    fi
}

# ---------------------------------------------------------------------------
# 5. Live (--live): the configuration, run for real on this machine.
# ---------------------------------------------------------------------------
readonly LIVE_AMQP=5690 LIVE_MGMT=15690 LIVE_DIST=25690 LIVE_REDIS=6390
readonly LIVE_GW=(8191 8192) LIVE_OPS=(9191 9192) LIVE_DISPATCHER=9190 LIVE_LB=8190 LIVE_STATS=8490
live_dir=""
live_node=""
live_pids=()

live_cleanup() {
    local pid
    for pid in "${live_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${live_pids[@]}"; do
        timeout 15 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
    live_pids=()
    if [[ -n $live_dir && -f $live_dir/redis.pid ]]; then
        redis-cli -p "$LIVE_REDIS" shutdown nosave >/dev/null 2>&1 || true
    fi
    if [[ -n $live_node ]]; then
        if ! as_root timeout 60 rabbitmqctl -q -n "$live_node" stop >/dev/null 2>&1; then
            # Not registered (yet): stop the Erlang VM by its process id.
            local i node_pid=""
            for ((i = 0; i < 20; i++)); do
                node_pid=$(as_root cat "$live_dir/rabbit/pid" 2>/dev/null) && [[ $node_pid =~ ^[0-9]+$ ]] && break
                node_pid=""
                sleep 0.5
            done
            if [[ -n $node_pid ]]; then
                as_root kill -TERM "$node_pid" 2>/dev/null || true
                timeout 30 tail --pid="$node_pid" -f /dev/null 2>/dev/null || as_root kill -KILL "$node_pid" 2>/dev/null || true
            fi
        fi
        live_node=""
    fi
    if [[ -n $live_dir ]]; then
        as_root rm -rf "$live_dir"
        live_dir=""
    fi
}

port_free() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    ! timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# live_env SERVICE PORT [OPS_PORT]: the environment compose gives SERVICE, mapped to
# this machine (the broker, the store, PORT to listen on, OPS_PORT for a gateway's
# operations listener).
live_env() {
    "$PY" - "$tmp/compose.rendered.yaml" "$1" "$2" "$LIVE_AMQP" "$LIVE_REDIS" "${3:-0}" <<'PY'
import sys, yaml
svc, port, amqp, redis, ops = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
env = yaml.safe_load(open(sys.argv[1]))["services"][svc].get("environment") or {}
for key, value in env.items():
    value = (str(value).replace("@rabbitmq:5672/", f"@127.0.0.1:{amqp}/")
             .replace("redis://redis:6379/", f"redis://127.0.0.1:{redis}/")
             .replace("0.0.0.0:8080", f"127.0.0.1:{port}").replace("0.0.0.0:9090", f"127.0.0.1:{port}")
             .replace("0.0.0.0:9101", f"127.0.0.1:{ops}"))
    print(f"{key}={value}")
PY
}

# live_start NAME BINARY SERVICE PORT [OPS_PORT]: runs BINARY as compose runs SERVICE.
live_start() {
    local name=$1 binary=$2 svc=$3 port=$4 ops=${5:-0} pid
    local -a env_args
    mapfile -t env_args < <(live_env "$svc" "$port" "$ops")
    # A Redis prefix of its own: the private Redis starts empty anyway, but
    # nothing here may touch the shared one by mistake.
    env -i PATH="$PATH" HOME="${HOME:-/root}" "${env_args[@]}" WARREN__REDIS__PREFIX=warren-live \
        setsid "$bin_dir/$binary" --config deploy/local.toml >"$live_dir/$name.log" 2>&1 </dev/null &
    pid=$!
    live_pids+=("$pid")
}

live_wait() {
    local what=$1 deadline=$((SECONDS + $2))
    shift 2
    until "$@" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            printf '  %s: not within the time limit\n' "$what" >&2
            return 1
        fi
        sleep 0.5
    done
}

live_check() {
    local bin port
    [[ -s $tmp/compose.rendered.yaml && -s $tmp/probe.sh ]] || {
        printf '  skipped: needs checks 1 and 3 to pass\n' >&2
        return 1
    }
    for bin in warren-gateway warren-dispatcher warren-token; do
        [[ -x $bin_dir/$bin ]] || {
            printf '  %s/%s is missing: build first (cargo build --bins) or pass --bin-dir\n' "$bin_dir" "$bin" >&2
            return 1
        }
    done
    if ! have rabbitmq-server || ! have redis-server; then
        printf '  needs rabbitmq-server and redis-server (scripts/ensure-services.sh installs them)\n' >&2
        return 1
    fi
    for port in "$LIVE_AMQP" "$LIVE_MGMT" "$LIVE_DIST" "$LIVE_REDIS" "${LIVE_GW[@]}" "${LIVE_OPS[@]}" "$LIVE_DISPATCHER" "$LIVE_LB" "$LIVE_STATS"; do
        port_free "$port" || {
            printf '  port %s is in use; the live check needs it\n' "$port" >&2
            return 1
        }
    done
    live_dir=$(mktemp -d /tmp/warren-live.XXXXXX)
    chmod 755 "$live_dir"
    cp "$tmp/probe.sh" "$live_dir/warren-probe"
    chmod 755 "$live_dir/warren-probe"

    # RabbitMQ: the compose configuration on a node of its own.
    live_node="warren-live-$$@localhost"
    mkdir -p "$live_dir/rabbit/mnesia" "$live_dir/rabbit/log"
    sed -e "s#^load_definitions = .*#load_definitions = $live_dir/rabbit/definitions.json#" \
        -e '/^deprecated_features\./d' \
        -e "s/^listeners.tcp.default = .*/listeners.tcp.default = $LIVE_AMQP/" \
        -e "s/^management.tcp.port = .*/management.tcp.port = $LIVE_MGMT/" \
        deploy/rabbitmq/rabbitmq.conf >"$live_dir/rabbit/rabbitmq.conf"
    cp deploy/rabbitmq/definitions.json "$live_dir/rabbit/"
    echo '[rabbitmq_management].' >"$live_dir/rabbit/enabled_plugins"
    if id rabbitmq >/dev/null 2>&1; then
        as_root chown -R rabbitmq: "$live_dir/rabbit"
    fi
    as_root env RABBITMQ_NODENAME="$live_node" RABBITMQ_NODE_PORT="$LIVE_AMQP" \
        RABBITMQ_DIST_PORT="$LIVE_DIST" RABBITMQ_MNESIA_BASE="$live_dir/rabbit/mnesia" \
        RABBITMQ_LOG_BASE="$live_dir/rabbit/log" RABBITMQ_CONFIG_FILE="$live_dir/rabbit/rabbitmq.conf" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$live_dir/rabbit/enabled_plugins" \
        RABBITMQ_PID_FILE="$live_dir/rabbit/pid" rabbitmq-server -detached >&2 || {
        printf '  the private RabbitMQ node did not start\n' >&2
        return 1
    }
    # -detached returns before the node has registered; await_startup needs it to.
    live_wait "the private RabbitMQ node to register" 60 \
        as_root timeout 10 rabbitmq-diagnostics -q -n "$live_node" ping >/dev/null
    if ! as_root timeout 120 rabbitmqctl -q -n "$live_node" await_startup --timeout 110 >&2; then
        printf '  RabbitMQ did not boot with deploy/rabbitmq/rabbitmq.conf and definitions.json; its log:\n' >&2
        as_root sh -c "tail -n 30 '$live_dir'/rabbit/log/*.log" >&2 || true
        return 1
    fi
    redis-server --port "$LIVE_REDIS" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no \
        --dir "$live_dir" --logfile "$live_dir/redis.log" --pidfile "$live_dir/redis.pid" >&2
    live_wait "Redis" 10 redis-cli -p "$LIVE_REDIS" ping >/dev/null || return 1

    live_start dispatcher warren-dispatcher dispatcher1 "$LIVE_DISPATCHER"
    live_start gateway1 warren-gateway gateway1 "${LIVE_GW[0]}" "${LIVE_OPS[0]}"
    live_start gateway2 warren-gateway gateway2 "${LIVE_GW[1]}" "${LIVE_OPS[1]}"
    # ok: 0 while everything passed; gateways_ok: the WebSocket test can run.
    local ok=0 gateways_ok=0
    for port in "${LIVE_OPS[@]}"; do
        live_wait "gateway /readyz (127.0.0.1:$port)" 30 "$live_dir/warren-probe" "$port" /readyz || gateways_ok=1
    done
    live_wait "dispatcher /readyz (127.0.0.1:$LIVE_DISPATCHER, the compose healthcheck)" 15 \
        "$live_dir/warren-probe" "$LIVE_DISPATCHER" /readyz || ok=1

    # HAProxy: haproxy.cfg with the gateways on 127.0.0.1.
    sed -e "s/gateway1:8080 port 9101/127.0.0.1:${LIVE_GW[0]} port ${LIVE_OPS[0]}/" \
        -e "s/gateway2:8080 port 9101/127.0.0.1:${LIVE_GW[1]} port ${LIVE_OPS[1]}/" \
        -e "s/^\(\s*bind\) :8080/\1 127.0.0.1:$LIVE_LB/" -e "s/^\(\s*bind\) :8404/\1 127.0.0.1:$LIVE_STATS/" \
        -e 's/^\(\s*maxconn\) [0-9]*/\1 1000/' -e 's/maxconn 19500/maxconn 500/' \
        "$HAPROXY_CFG" >"$live_dir/haproxy.cfg"
    setsid haproxy -db -f "$live_dir/haproxy.cfg" >"$live_dir/haproxy.log" 2>&1 </dev/null &
    live_pids+=("$!")
    live_wait "HAProxy /lb-healthz" 20 curl -fsS -o /dev/null "http://127.0.0.1:$LIVE_LB/lb-healthz" || gateways_ok=1

    ((gateways_ok == 0)) || ok=1
    if ((gateways_ok == 0)); then
        local token origin
        local -a gw_env
        mapfile -t gw_env < <(live_env gateway1 "${LIVE_GW[0]}" "${LIVE_OPS[0]}")
        token=$(env -i PATH="$PATH" "${gw_env[@]}" "$bin_dir/warren-token" live-check --name "Live Check" \
            --config deploy/local.toml) || ok=1
        origin=$(live_env gateway1 "${LIVE_GW[0]}" | sed -n 's/^WARREN__GATEWAY__ALLOWED_ORIGINS=\([^,]*\).*/\1/p')
        "$PY" - "127.0.0.1" "$LIVE_LB" "$token" "$origin" <<'PY' || ok=1
# A minimal WebSocket client (RFC 6455, text frames only): through HAProxy, join a
# room and send a message. `joined` comes from the dispatcher through the default
# exchange, the `message` event through warren.events: every account's
# permissions take part.
import base64, json, os, socket, struct, sys, time

host, port, token, origin = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection((host, port), timeout=10)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET /ws?token={token} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
           f"Origin: {origin}\r\n\r\n").encode())
buf = b""
while b"\r\n\r\n" not in buf:
    chunk = s.recv(4096)
    if not chunk:
        sys.exit("  the connection closed during the WebSocket handshake")
    buf += chunk
head, buf = buf.split(b"\r\n\r\n", 1)
if not head.startswith(b"HTTP/1.1 101"):
    sys.exit(f"  WebSocket upgrade through HAProxy refused: {head.decode(errors='replace').splitlines()[0]}")


def send(obj):
    data = json.dumps(obj).encode()
    mask = os.urandom(4)
    n = len(data)
    hdr = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
    s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))


def recv_exact(n):
    global buf
    while len(buf) < n:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("  the gateway closed the WebSocket")
        buf += chunk
    out, buf = buf[:n], buf[n:]
    return out


def recv():
    b0, b1 = recv_exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", recv_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", recv_exact(8))[0]
    payload = recv_exact(n)
    if b0 & 0x0F == 0x8:
        sys.exit(f"  the gateway closed the WebSocket: {payload[:2].hex()} {payload[2:].decode(errors='replace')}")
    return json.loads(payload) if b0 & 0x0F == 0x1 else {"type": "(control frame)"}


def expect(types, deadline):
    seen = set()
    while not types <= seen:
        if time.monotonic() > deadline:
            sys.exit(f"  waited for {sorted(types)}, saw {sorted(seen)}")
        frame = recv()
        if frame.get("type") == "error":
            sys.exit(f"  the gateway answered an error: {frame}")
        seen.add(frame.get("type"))


deadline = time.monotonic() + 15
expect({"welcome"}, deadline)
send({"type": "join", "room": "deploy-live-check", "ref": "j"})
expect({"joined"}, deadline)
send({"type": "send", "room": "deploy-live-check", "text": "hello from validate-deploy", "ref": "m"})
expect({"ack", "message"}, deadline)
PY
    fi
    if ((ok != 0)); then
        local f
        for f in dispatcher gateway1 gateway2 haproxy; do
            [[ -s $live_dir/$f.log ]] || continue
            printf '  last lines of %s:\n' "$f" >&2
            tail -n 5 "$live_dir/$f.log" | sed 's/^/    /' >&2
        done
    fi
    return "$ok"
}

check "compose: docker-compose config" compose_config "$COMPOSE_FILE" "$tmp/compose.rendered.yaml"
check "compose: refuses to render without WARREN_AUTH_SECRET" compose_requires "$COMPOSE_FILE" WARREN_AUTH_SECRET
check "compose (cluster): docker-compose config" compose_config "$CLUSTER_FILE" "$tmp/compose.cluster.rendered.yaml"
check "compose (cluster): refuses to render without WARREN_AUTH_SECRET or WARREN_RABBITMQ_COOKIE" \
    compose_requires "$CLUSTER_FILE" WARREN_AUTH_SECRET WARREN_RABBITMQ_COOKIE
check "haproxy: haproxy -c" haproxy_check
check "agreement: compose, haproxy.cfg, rabbitmq.conf, definitions.json, amqp.rs, Dockerfile" \
    agreement single "$COMPOSE_FILE" "$tmp/compose.rendered.yaml"
check "agreement (cluster): compose.cluster.yaml, cluster.conf, definitions.cluster.json, and the above" \
    agreement cluster "$CLUSTER_FILE" "$tmp/compose.cluster.rendered.yaml"
probe_label="probe: bash -n, shellcheck"
have hadolint && probe_label+=", hadolint"
check "$probe_label" probe_check
if ((live)); then
    trap 'live_cleanup; rm -rf "$tmp"' EXIT
    check "live: RabbitMQ 3.10 with the definitions, the services, HAProxy, a WebSocket round trip" live_check
    live_cleanup
fi

if ((${#failed[@]})); then
    log "${#failed[@]} check(s) failed: ${failed[*]}"
    exit 1
fi
log "all deployment checks passed"
