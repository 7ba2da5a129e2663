# shellcheck shell=bash
# Globals set here (GATEWAY_PID, SEED_URL, ...) are read by run.sh:
# shellcheck disable=SC2034
# Helpers for bench/run.sh: starting and stopping a Warren stack (through the launcher,
# warren-stack, which also removes its prefix from the broker and Redis when it stops)
# and the seed program, pinning, /proc readings, and cleaning what a case left. Sourced,
# not run. Expects ROOT, BIN_DIR, LOADGEN, LOGS set.

# Server side on core 0, load generator on core 1 (on a machine with one core, both 0).
SERVER_CPU=0
LOADGEN_CPU=1
if [ "$(nproc)" -lt 2 ]; then LOADGEN_CPU=0; fi

# Every pid this script started, so the exit trap can stop them (by pid, nothing else).
STARTED_PIDS=()
# Every prefix used, so the exit trap can clean the broker and Redis.
PREFIXES=()
# "pid mask" of shared services whose affinity we changed, restored on exit.
PINNED=()

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# A TCP port on 127.0.0.1 that was free a moment ago, for the programs the launcher does
# not start (the seed program, a service under valgrind in profile.sh): the kernel may
# hand it to another process before they bind it, so a Warren stack never uses this.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Sets PREFIX to a fresh prefix for queues, exchanges and Redis keys, recorded for the
# exit trap's cleanup (not through $(...): a subshell would lose the record).
new_prefix() {
  PREFIX="wb-$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')"
  PREFIXES+=("$PREFIX")
}

# Waits until URL answers 200, at most $2 seconds.
wait_http() {
  local url=$1 limit=${2:-30} i
  for ((i = 0; i < limit * 10; i++)); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)" = 200 ]; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# Waits until something listens on 127.0.0.1:$1, at most $2 seconds.
wait_port() {
  local port=$1 limit=${2:-30} i
  for ((i = 0; i < limit * 10; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

alive() { kill -0 "$1" 2>/dev/null; }

# SIGTERM, up to $2 seconds (default 10), then SIGKILL; reaps it.
stop_pid() {
  local pid=$1 limit=${2:-10} i
  alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < limit * 10; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
}

# Starts "$@" pinned to the server core with its output in $LOGS/$1.log (the first
# argument is a name); sets STARTED to its pid. Extra environment comes from the
# array named by $ENV_ARRAY.
start_server() {
  local name=$1
  shift
  local -a env_kv=()
  if [ -n "${ENV_ARRAY:-}" ]; then
    local -n env_ref="$ENV_ARRAY"
    env_kv=("${env_ref[@]}")
  fi
  env "${env_kv[@]}" taskset -c "$SERVER_CPU" "$@" >>"$LOGS/$name.log" 2>&1 &
  STARTED=$!
  STARTED_PIDS+=("$STARTED")
}

# The settings every Warren process of a bench stack gets (BENCH_SETTINGS; as the
# launcher's options in STACK_SETTINGS). Rate limits are lifted: they are
# per-connection policy, not the pipeline measured.
# Extra settings for the gateways the next start_stack starts.
GATEWAY_EXTRA_ENV=()
# Settings one case gives its dispatchers (e.g. publish_in_room_order=false).
DISPATCHER_EXTRA_ENV=()

BENCH_SETTINGS=(
  "WARREN__LOG__LEVEL=warn"
  "WARREN__GATEWAY__SENDS_PER_SEC=1000000"
  "WARREN__GATEWAY__BURST=1000000"
  "WARREN__GATEWAY__FRAMES_PER_SEC=1000000"
  "WARREN__GATEWAY__FRAMES_BURST=1000000"
  "WARREN__DISPATCHER__USER_SENDS_PER_SEC=0"
  "WARREN__DISPATCHER__BOT_COMMANDS_PER_SEC=0"
  "WARREN__GATEWAY__MAX_CONNECTIONS=19900"
  "WARREN__GATEWAY__MAX_PENDING_HANDSHAKES_PER_IP=0"
)

# The same settings as environment (an array named WARREN_ENV) for a process started
# without the launcher (profile.sh's service under valgrind), under prefix $1.
warren_env() {
  WARREN_ENV=("WARREN__AMQP__PREFIX=$1" "WARREN__REDIS__PREFIX=$1" "WARREN__AUTH__SECRET=$SECRET"
    "${BENCH_SETTINGS[@]}")
}

stack_settings() {
  local kv
  STACK_SETTINGS=()
  for kv in "${BENCH_SETTINGS[@]}"; do STACK_SETTINGS+=(--env "$kv"); done
  for kv in "${GATEWAY_EXTRA_ENV[@]}"; do STACK_SETTINGS+=(--gateway-env "$kv"); done
  for kv in "${DISPATCHER_EXTRA_ENV[@]}"; do STACK_SETTINGS+=(--dispatcher-env "$kv"); done
}

# Starts a stack under prefix $1 with $2 dispatchers and $3 gateways through the
# launcher, pinned to the server core (its processes inherit the pinning), and waits
# until every process is ready (at most 120 s). Sets STACK_PID; D0 and DISPATCHER_PID
# (the first dispatcher); for each gateway i of the first two GWi (pid), URLi
# (WebSocket) and HTTPi (its operations listener: /readyz, /metrics, /stats); and
# GATEWAY_PID, GATEWAY_URL, GATEWAY_HTTP as gateway 0's.
start_stack() {
  local prefix=$1 dispatchers=$2 gateways=$3 json i
  json=$LOGS/$prefix-stack.json
  stack_settings
  taskset -c "$SERVER_CPU" "$BIN_DIR/warren-stack" --profile "$(basename "$BIN_DIR")" \
    --prefix "$prefix" --secret "$SECRET" --logs "$LOGS" --dispatchers "$dispatchers" \
    --gateways "$gateways" "${STACK_SETTINGS[@]}" \
    </dev/null >"$json" 2>>"$LOGS/$prefix-stack.log" &
  STACK_PID=$!
  STARTED_PIDS+=("$STACK_PID")
  for ((i = 0; i < 1200; i++)); do
    [ -s "$json" ] && break
    alive "$STACK_PID" || die "the stack $prefix did not start; see $LOGS/$prefix-stack.log"
    sleep 0.1
  done
  [ -s "$json" ] || die "the stack $prefix was not ready in 120 s; see $LOGS/$prefix-stack.log"
  eval "$(python3 - "$json" <<'PY'
import json, shlex, sys
stack = json.load(open(sys.argv[1]))
out = {}
if stack["dispatchers"]:
    out["D0"] = out["DISPATCHER_PID"] = stack["dispatchers"][0]["pid"]
for i, g in enumerate(stack["gateways"][:2]):
    out[f"GW{i}"], out[f"URL{i}"], out[f"HTTP{i}"] = g["pid"], g["ws"], g["ops"]
if stack["gateways"]:
    out["GATEWAY_PID"], out["GATEWAY_URL"], out["GATEWAY_HTTP"] = out["GW0"], out["URL0"], out["HTTP0"]
print(" ".join(f"{k}={shlex.quote(str(v))}" for k, v in out.items()))
PY
)"
}

# Stops the stack start_stack started last (SIGTERM to the launcher: it stops its
# processes and removes the prefix), at most 60 s.
stop_stack() {
  stop_pid "$STACK_PID" 60
}

# Starts the seed program; sets SEED_PID and SEED_URL.
start_seed() {
  local port
  port=$(free_port)
  ENV_ARRAY='' start_server seed "${SEED_BIN:?}" -addr "127.0.0.1:$port"
  SEED_PID=$STARTED
  SEED_URL="ws://127.0.0.1:$port/ws"
  wait_port "$port" 30 || die "seed program did not listen in 30 s; see $LOGS/seed.log"
}

# The running RabbitMQ node's and Redis's pids (re-read per case: another session may
# restart them).
shared_pids() {
  BEAM_PID=$(pgrep -f 'beam.smp.*rabbit boot' | head -n1 || true)
  REDIS_PID=$(pgrep -x redis-server | head -n1 || true)
  [ -n "$BEAM_PID" ] || die "no RabbitMQ node (beam.smp ... rabbit boot) running"
  [ -n "$REDIS_PID" ] || die "no redis-server running"
}

# Pins RabbitMQ and Redis (every thread) to the server core, remembering their masks.
pin_shared() {
  local pid mask
  for pid in "$BEAM_PID" "$REDIS_PID"; do
    mask=$(taskset -p "$pid" | awk '{print $NF}')
    PINNED+=("$pid $mask")
    taskset -a -p -c "$SERVER_CPU" "$pid" >/dev/null
  done
}

restore_pinning() {
  local entry pid mask
  for entry in "${PINNED[@]}"; do
    pid=${entry% *}
    mask=${entry#* }
    if alive "$pid"; then taskset -a -p "$mask" "$pid" >/dev/null 2>&1 || true; fi
  done
  PINNED=()
}

# The load generator, pinned to its core; prints its one JSON line.
loadgen() {
  taskset -c "$LOADGEN_CPU" "$LOADGEN" "$@"
}

# The load generator on the server core (for the raw broker path, whose tasks play the
# servers' part).
loadgen_as_server() {
  taskset -c "$SERVER_CPU" "$LOADGEN" "$@"
}

# Resident memory of $1 in KiB.
# Fails (prints nothing) when the process is gone.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }

# A number from a gateway's /stats ($1: its operations URL, $2: the field), or null.
stats_field() {
  local v
  v=$(curl -s --max-time 5 "$1/stats" | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" || true)
  echo "${v:-null}"
}

# Stops RabbitMQ's application (the Erlang node and its pid stay, so the pinning holds);
# BROKER_STOPPED tells the exit trap to start it again should the script end meanwhile.
BROKER_STOPPED=0
broker_stop() {
  BROKER_STOPPED=1
  timeout 60 rabbitmqctl -q stop_app >>"$LOGS/rabbitmqctl.log" 2>&1 ||
    log "rabbitmqctl stop_app failed or timed out; see $LOGS/rabbitmqctl.log"
}

# Starts RabbitMQ's application again: 3 attempts of at most 120 s each.
broker_start() {
  local i
  for i in 1 2 3; do
    if timeout 120 rabbitmqctl -q start_app >>"$LOGS/rabbitmqctl.log" 2>&1; then
      BROKER_STOPPED=0
      return 0
    fi
    log "rabbitmqctl start_app failed (attempt $i of 3); see $LOGS/rabbitmqctl.log"
    sleep 5
  done
  return 1
}

# Deletes every queue and exchange named "$1.*" and every Redis key "$1:*" (the
# launcher's removal, for what a stack or a case left). Waits (up to 60 s) for a broker
# that another session is restarting.
clean_prefix() {
  local prefix=$1 i
  for ((i = 0; i < 12; i++)); do
    rabbitmqctl -q list_queues name >/dev/null 2>&1 && break
    sleep 5
  done
  "$BIN_DIR/warren-stack" --remove-prefix "$prefix" 2>>"$LOGS/clean.log" ||
    log "cleanup of $prefix reported a problem; see $LOGS/clean.log"
}

# Appends one result line: {"case", "run", "extra": {...}, "result": <loadgen JSON>}.
record() {
  local case=$1 run=$2 extra=$3 result=$4
  [ -n "$result" ] || result='{"ok":false,"error":"no output"}'
  printf '{"case":"%s","run":%s,"extra":%s,"result":%s}\n' "$case" "$run" "$extra" "$result" >>"$RESULTS"
}
