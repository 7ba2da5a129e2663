# shellcheck shell=bash
# Globals set here (GATEWAY_PID, SEED_URL, ...) are read by run.sh:
# shellcheck disable=SC2034
# Helpers for bench/run.sh: starting and stopping Warren's processes and the seed
# program under a unique prefix, pinning, /proc readings, and cleaning the broker and
# Redis after each case. Sourced, not run. Expects ROOT, BIN_DIR, LOADGEN, LOGS set.

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

# A TCP port on 127.0.0.1 that was free a moment ago.
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

# The settings every Warren process of a bench stack gets (an array named WARREN_ENV).
# Rate limits are lifted: they are per-connection policy, not the pipeline measured.
# Extra settings for the gateways the next start_gateway calls start.
GATEWAY_EXTRA_ENV=()
# Settings one case gives its dispatchers (e.g. publish_in_room_order=false).
DISPATCHER_EXTRA_ENV=()

warren_env() {
  local prefix=$1
  WARREN_ENV=(
    "WARREN__AMQP__PREFIX=$prefix"
    "WARREN__REDIS__PREFIX=$prefix"
    "WARREN__AUTH__SECRET=$SECRET"
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
}

# Starts a dispatcher for $1 (prefix); sets DISPATCHER_PID. Waits for /readyz.
start_dispatcher() {
  local prefix=$1 name=${2:-d0} port
  port=$(free_port)
  warren_env "$prefix"
  WARREN_ENV+=("WARREN__DISPATCHER__LISTEN=127.0.0.1:$port" "${DISPATCHER_EXTRA_ENV[@]}")
  ENV_ARRAY=WARREN_ENV start_server "$prefix-$name" "$BIN_DIR/warren-dispatcher"
  DISPATCHER_PID=$STARTED
  wait_http "http://127.0.0.1:$port/readyz" 60 ||
    die "dispatcher $name not ready in 60 s; see $LOGS/$prefix-$name.log"
}

# Starts gateway $2 (0, 1, ...) for prefix $1; sets GATEWAY_PID, GATEWAY_URL and
# GATEWAY_HTTP (its operations listener: /readyz, /metrics, /stats).
start_gateway() {
  local prefix=$1 i=$2 port ops
  port=$(free_port)
  ops=$(free_port)
  warren_env "$prefix"
  WARREN_ENV+=("WARREN__GATEWAY__LISTEN=127.0.0.1:$port" "WARREN__GATEWAY__ID=$prefix-gw$i"
    "WARREN__GATEWAY__OPS_LISTEN=127.0.0.1:$ops")
  # GATEWAY_EXTRA_ENV: settings one case gives its gateways (e.g. write coalescing).
  WARREN_ENV+=("${GATEWAY_EXTRA_ENV[@]}")
  ENV_ARRAY=WARREN_ENV start_server "$prefix-gw$i" "$BIN_DIR/warren-gateway"
  GATEWAY_PID=$STARTED
  GATEWAY_URL="ws://127.0.0.1:$port/ws"
  GATEWAY_HTTP="http://127.0.0.1:$ops"
  wait_http "$GATEWAY_HTTP/readyz" 60 ||
    die "gateway $i not ready in 60 s; see $LOGS/$prefix-gw$i.log"
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
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

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

# Deletes every queue and exchange named "$1.*" and every Redis key "$1:*". Waits (up
# to 60 s) for a broker that another session is restarting.
clean_prefix() {
  local prefix=$1 queues exchanges i
  for ((i = 0; i < 12; i++)); do
    rabbitmqctl -q list_queues name >/dev/null 2>&1 && break
    sleep 5
  done
  queues=$(rabbitmqctl -q list_queues name 2>/dev/null | grep -F "$prefix." | paste -sd, - || true)
  exchanges=$(rabbitmqctl -q list_exchanges name 2>/dev/null | grep -F "$prefix." | paste -sd, - || true)
  if [ -n "$queues$exchanges" ]; then
    "$LOADGEN" cleanup --queues "$queues" --exchanges "$exchanges" >/dev/null ||
      log "cleanup of $prefix in RabbitMQ reported a problem"
  fi
  redis-cli --scan --pattern "$prefix:*" | xargs -r -n 500 redis-cli del >/dev/null || true
}

# Appends one result line: {"case", "run", "extra": {...}, "result": <loadgen JSON>}.
record() {
  local case=$1 run=$2 extra=$3 result=$4
  [ -n "$result" ] || result='{"ok":false,"error":"no output"}'
  printf '{"case":"%s","run":%s,"extra":%s,"result":%s}\n' "$case" "$run" "$extra" "$result" >>"$RESULTS"
}
