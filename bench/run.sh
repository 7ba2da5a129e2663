#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Warren's benchmark matrix, one command from a clean clone:
#
#   bench/run.sh                 full matrix, 3 runs per case, medians -> BENCHMARKS.md
#   bench/run.sh --quick         short runs, 1 each, summary on stdout (BENCHMARKS.md kept)
#   bench/run.sh --smoke         <= 10 s: one tiny fan-out; exit 0 when it works (for CI)
#   bench/run.sh --cases fanout,deflate,coalesce,seed,pipeline,unordered,quorum,budget,raw,idle,connect,crowd,restart
#                                a selection. deflate: the fan-out with permessage-deflate on
#                                and off; coalesce: the fan-out with 20 ms write coalescing;
#                                quorum: the pipeline with quorum command queues;
#                                budget: the pipeline with the per-user send budget
#                                checked (a budget too large to refuse anything);
#                                crowd: $CROWD_USERS (19,000) users join one room at once;
#                                restart: RabbitMQ's app stopped and started during a
#                                pipeline run - it stops the machine's broker, so never
#                                while anyone else uses it
#   bench/run.sh --stalled       slow consumer: 200-member room, 0 vs 1 stalled
#                                reader, alternately, 3 runs each -> target/bench/<stamp>/stalled.md
#
# Other options: --runs N, --profile debug|release (default release), --no-build,
# --report (regenerate BENCHMARKS.md even in --quick or with a selection),
# --no-pin-shared (leave RabbitMQ and Redis unpinned), --wait-idle SECONDS (how long to
# wait for a quiet machine first; default 600 for the full matrix, 0 otherwise).
#
# It builds the binaries, builds the seed program (../shared/peers/seed-go, or
# $SEED_DIR), makes sure RabbitMQ and Redis answer (scripts/ensure-services.sh), starts
# what each case needs under a unique prefix (1 dispatcher + 2 gateways for fan-out,
# compression, coalescing, pipeline, crowd and restart; 1 gateway for idle and connect),
# pins every server process to core 0 - RabbitMQ and Redis included, their affinity
# restored at exit - and the load generator to core 1, reads each server process's CPU
# time over each measurement window, and removes every queue, exchange and Redis key it
# made. Results: target/bench/<stamp>/.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

MODE=full
CASES=""
RUNS=""
PROFILE=release
BUILD=1
FORCE_REPORT=0
PIN_SHARED=1
WAIT_IDLE=""
COMMAND="bench/run.sh${*:+ $*}"
while [ $# -gt 0 ]; do
  case $1 in
    --quick) MODE=quick ;;
    --smoke) MODE=smoke ;;
    --cases) CASES=$2; shift ;;
    --runs) RUNS=$2; shift ;;
    --profile) PROFILE=$2; shift ;;
    --no-build) BUILD=0 ;;
    --report) FORCE_REPORT=1 ;;
    --no-pin-shared) PIN_SHARED=0 ;;
    --wait-idle) WAIT_IDLE=$2; shift ;;
    --stalled) MODE=stalled ;;
    -h | --help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done

ALL_CASES="fanout,deflate,coalesce,seed,pipeline,unordered,quorum,budget,raw,idle,connect,crowd,restart"
case $MODE in
  full) : "${CASES:=$ALL_CASES}" "${RUNS:=3}" "${WAIT_IDLE:=600}" ;;
  quick) : "${CASES:=$ALL_CASES}" "${RUNS:=1}" "${WAIT_IDLE:=0}" ;;
  smoke) CASES=smoke RUNS=1 WAIT_IDLE=0 PIN_SHARED=0 ;;
  stalled) CASES=stalled; : "${RUNS:=3}" "${WAIT_IDLE:=600}" ;;
esac
has_case() { [[ ",$CASES," == *",$1,"* ]]; }

# ---- durations and sizes per mode ----------------------------------------------------
# The crowd's size (the target's: 19,000); smaller for a trial, e.g. CROWD_USERS=1000.
CROWD_USERS=${CROWD_USERS:-19000}
# The broker restart: stopped RESTART_AT s into a RESTART_S s window, back 5 s later.
RESTART_S=40 RESTART_AT=5
if [ "$MODE" = full ]; then
  WARMUP=2 DURATION=8 DRAIN=4
  IDLE_COUNTS="10000 19000" IDLE_HOLD=5 CONNECT_S=8
elif [ "$MODE" = stalled ]; then
  # Long enough for the stalled reader to fill its socket and the gateway's queue and be
  # cut off inside the window (about 10 s in); each run stays under 30 s.
  WARMUP=2 DURATION=20 DRAIN=4
else
  WARMUP=1 DURATION=3 DRAIN=3
  IDLE_COUNTS="2000" IDLE_HOLD=3 CONNECT_S=3
fi

# ---- build ---------------------------------------------------------------------------
cd "$ROOT"
if [ "$PROFILE" = release ]; then BIN_DIR=$ROOT/target/release; else BIN_DIR=$ROOT/target/debug; fi
if [ "$BUILD" = 1 ]; then
  log "building ($PROFILE)"
  if [ "$PROFILE" = release ]; then cargo build --release --bins -q; else cargo build --bins -q; fi
fi
LOADGEN=$BIN_DIR/loadgen
for b in loadgen warren-stack warren-gateway warren-dispatcher; do
  [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b is missing (build first, or drop --no-build)"
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/target/bench/$STAMP
LOGS=$OUT/logs
RESULTS=$OUT/results.jsonl
mkdir -p "$LOGS"
: >"$RESULTS"
SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

SEED_BIN=""
if has_case seed; then
  SEED_DIR=${SEED_DIR:-$ROOT/../shared/peers/seed-go}
  [ -x "$SEED_DIR/build.sh" ] ||
    die "the seed program is not at $SEED_DIR (set SEED_DIR, or drop 'seed' from --cases)"
  SEED_BIN=$OUT/seed-go
  log "building the seed program"
  "$SEED_DIR/build.sh" "$SEED_BIN" >"$LOGS/seed-build.log" 2>&1 ||
    die "seed build failed; see $LOGS/seed-build.log"
fi

# ---- services, limits, quiet machine -----------------------------------------------
if [ -x "$ROOT/scripts/ensure-services.sh" ]; then
  "$ROOT/scripts/ensure-services.sh" >"$LOGS/services.log" 2>&1 ||
    die "RabbitMQ/Redis not available; see $LOGS/services.log"
fi
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge 20000 ] || log "open files limit is $(ulimit -n): the 19,000-connection case will fail"

BUSY_NOTE=""
if [ "$WAIT_IDLE" -gt 0 ]; then
  waited=0
  while :; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    if awk -v l="$load" 'BEGIN { exit !(l < 0.8) }'; then break; fi
    if [ "$waited" -ge "$WAIT_IDLE" ]; then
      BUSY_NOTE="the machine was still busy after ${WAIT_IDLE} s of waiting (1-min load $load when the runs began)"
      log "$BUSY_NOTE: running anyway"
      break
    fi
    [ $((waited % 60)) -eq 0 ] && log "machine busy (1-min load $load); waiting for it to settle"
    sleep 10
    waited=$((waited + 10))
  done
fi
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

cleanup() {
  local rc=$? pid p
  trap - EXIT INT TERM
  if [ "$BROKER_STOPPED" = 1 ]; then broker_start || log "RabbitMQ is still stopped: rabbitmqctl start_app"; fi
  for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
  restore_pinning
  for p in "${PREFIXES[@]}"; do clean_prefix "$p"; done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

shared_pids
if [ "$PIN_SHARED" = 1 ]; then pin_shared; fi

# ---- the machine -----------------------------------------------------------------------
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "command: $COMMAND"
  echo "mode: $MODE, runs per case: $RUNS"
  echo "cpus: $(nproc)"
  echo "cpu model: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)"
  echo "memory: $(free -h | awk '/^Mem:/ {print $2}')"
  echo "kernel: $(uname -r)"
  echo "rabbitmq: $(rabbitmqctl -q version 2>/dev/null || echo unknown)"
  echo "redis: $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
  echo "source: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || echo ' with uncommitted changes')"
  echo "rustc: $(rustc --version)"
  echo "go: $( (go version 2>/dev/null || echo none) | sed 's/^go version //')"
  echo "open files (soft/hard): $(ulimit -Sn)/$(ulimit -Hn)"
  echo "load at start: $LOAD_AT_START"
  echo "pinning: servers on core $SERVER_CPU, loadgen on core $LOADGEN_CPU, RabbitMQ and Redis $([ "$PIN_SHARED" = 1 ] && echo "on core $SERVER_CPU" || echo unpinned)"
  [ -z "$BUSY_NOTE" ] || echo "busy: $BUSY_NOTE"
} >"$OUT/machine.txt"

cpu_pids() { # labels=pids of the servers of a case, plus RabbitMQ and Redis
  shared_pids
  printf '%s,rabbitmq=%s,redis=%s' "$1" "$BEAM_PID" "$REDIS_PID"
}

# ---- cases -----------------------------------------------------------------------------
smoke_case() {
  local prefix out
  new_prefix
  prefix=$PREFIX
  start_stack "$prefix" 1 1
  out=$(loadgen fanout --url "$GATEWAY_URL" --secret "$SECRET" --receivers 20 --senders 2 \
    --rate 10 --warmup 0.5 --duration 2 --drain 3 --timeout 30 || true)
  record smoke 1 '{}' "$out"
  echo "$out"
  stop_stack
  python3 "$HERE/report.py" smoke "$RESULTS"
}

# The fan-out of section 1 against Warren: 1,000 receivers over the gateways $1 (comma
# separated), 10 senders x 10 msg/s, 64 B; $2 the --cpu-pids, $3 the run id, then extra
# loadgen options. Prints loadgen's JSON line.
warren_fanout() {
  local urls=$1 pids=$2 run_id=$3
  shift 3
  loadgen fanout --url "$urls" --secret "$SECRET" --receivers 1000 --senders 10 \
    --rate 10 --payload 64 --warmup "$WARMUP" --duration "$DURATION" --drain "$DRAIN" \
    --cpu-pids "$pids" --run-id "$run_id" "$@"
}

# RUNS fan-outs against the stack start_chat_stack started last under PREFIX, recorded
# as case $1 with extra $2; $3 names them in the log, $4 goes before the run in run ids.
chat_fanout_runs() {
  local case=$1 extra=$2 label=$3 tag=$4 run out
  for ((run = 1; run <= RUNS; run++)); do
    log "$label, run $run/$RUNS"
    out=$(warren_fanout "$URL0,$URL1" "$(chat_pids)" \
      "$PREFIX-$tag$run" || true)
    record "$case" "$run" "$extra" "$out"
  done
}

# Fan-out, compression and pipeline share one stack: 1 dispatcher + 2 gateways.
warren_chat_cases() {
  local prefix pids run out side
  start_chat_stack
  prefix=$PREFIX
  local url0=$URL0 url1=$URL1 http0=$HTTP0 http1=$HTTP1
  if has_case fanout; then
    chat_fanout_runs fanout '{}' "fanout (Warren)" ""
  fi
  # Compression (goal 5): the same fan-out, every client offering permessage-deflate
  # (on) or none offering it (off), against the same gateways, whose compression stays
  # enabled: a connection that did not agree it takes the same path as
  # WARREN__GATEWAY__COMPRESSION=false, and on and off alternate without restarts (the
  # order flips every run). The gateways' byte counters are read at the window's edges.
  if has_case deflate; then
    for ((run = 1; run <= RUNS; run++)); do
      local sides="on off"
      [ $((run % 2)) -eq 0 ] && sides="off on"
      for side in $sides; do
        log "fanout with compression $side, run $run/$RUNS"
        local -a flags=()
        [ "$side" = on ] && flags=(--deflate)
        pids=$(chat_pids)
        out=$(warren_fanout "$url0,$url1" "$pids" "$prefix-z$side$run" "${flags[@]}" \
          --window-metrics "$http0/metrics,$http1/metrics" || true)
        record "deflate_$side" "$run" '{}' "$out"
        sleep 2
      done
    done
  fi
  if has_case pipeline; then
    pipeline_runs pipeline "Warren" "$url0,$url1" "$(chat_pids)" "$prefix"
  fi
  stop_stack
}

# Starts one dispatcher and two gateways under a fresh PREFIX (with DISPATCHER_EXTRA_ENV
# and GATEWAY_EXTRA_ENV as the caller set them); sets D0, GW0, GW1, URL0, URL1, HTTP0, HTTP1.
start_chat_stack() {
  new_prefix
  start_stack "$PREFIX" 1 2
}

# The --cpu-pids of the stack start_chat_stack started last.
chat_pids() {
  cpu_pids "gw0=$GW0,gw1=$GW1,d0=$D0"
}

# RUNS pipeline runs against the gateways $3 (comma separated), each at the most
# (window 4) and at 1,000 msg/s, recorded as $1_max and $1_1000; $2 names them in the
# log, $4 is the --cpu-pids, $5 a prefix for the run ids.
pipeline_runs() {
  local case=$1 label=$2 urls=$3 pids=$4 id=$5 run out
  for ((run = 1; run <= RUNS; run++)); do
    log "pipeline ($label) max run $run/$RUNS"
    out=$(loadgen pipeline --url "$urls" --secret "$SECRET" --rooms 200 --rate 0 \
      --window 4 --warmup "$WARMUP" --duration "$DURATION" --drain "$DRAIN" \
      --cpu-pids "$pids" --run-id "$id-m$run" || true)
    record "${case}_max" "$run" '{}' "$out"
    log "pipeline ($label) at 1,000 msg/s run $run/$RUNS"
    out=$(loadgen pipeline --url "$urls" --secret "$SECRET" --rooms 200 --rate 1000 \
      --warmup "$WARMUP" --duration "$DURATION" --drain "$DRAIN" \
      --cpu-pids "$pids" --run-id "$id-r$run" || true)
    record "${case}_1000" "$run" '{}' "$out"
  done
}

# Write coalescing: the same fan-out against gateways that gather each
# connection's writes for 20 ms (WARREN__GATEWAY__WRITE_COALESCE_MS=20), on a stack of
# its own so that the fanout case keeps the default (0).
coalesce_cases() {
  GATEWAY_EXTRA_ENV=("WARREN__GATEWAY__WRITE_COALESCE_MS=20")
  start_chat_stack
  GATEWAY_EXTRA_ENV=()
  chat_fanout_runs coalesce '{"write_coalesce_ms":20}' "fanout with 20 ms write coalescing" k
  stop_stack
}

# The pipeline on a stack of its own (1 dispatcher, 2 gateways), started with
# DISPATCHER_EXTRA_ENV and GATEWAY_EXTRA_ENV as the caller set them (both are emptied
# once it runs): $1 the case, $2 its label in the log, $3 the run ids' suffix.
pipeline_variant() {
  local case=$1 label=$2 suffix=$3 prefix
  start_chat_stack
  prefix=$PREFIX
  DISPATCHER_EXTRA_ENV=()
  GATEWAY_EXTRA_ENV=()
  pipeline_runs "$case" "$label" "$URL0,$URL1" "$(chat_pids)" \
    "$prefix-$suffix"
  stop_stack
}

# The pipeline again with dispatcher.publish_in_room_order = false: a command's
# publishes go at once instead of waiting for the earlier ones of its room to be
# confirmed (gateways repair any order from Redis). Both are measured.
unordered_cases() {
  DISPATCHER_EXTRA_ENV=("WARREN__DISPATCHER__PUBLISH_IN_ROOM_ORDER=false")
  pipeline_variant pipeline_unordered "Warren, publishes not held in room order" u
}

# The pipeline again with quorum command queues (amqp.command_queue_type = quorum) on
# the machine's one node: what the Raft log costs a command before any replica does
# (both types measured, to choose the default).
quorum_cases() {
  DISPATCHER_EXTRA_ENV=("WARREN__AMQP__COMMAND_QUEUE_TYPE=quorum")
  GATEWAY_EXTRA_ENV=("WARREN__AMQP__COMMAND_QUEUE_TYPE=quorum")
  pipeline_variant pipeline_quorum "Warren, quorum command queues" q
}

# The pipeline again with the per-user send budget checked on every send
# (one token bucket per user in Redis), set too large to refuse anything, so that
# only its cost shows; the other cases run with it off, like the per-connection limits.
budget_cases() {
  DISPATCHER_EXTRA_ENV=("WARREN__DISPATCHER__USER_SENDS_PER_SEC=1000000"
    "WARREN__DISPATCHER__USER_SEND_BURST=1000000")
  pipeline_variant pipeline_budget "Warren, per-user send budget checked" b
}

# The raw path's publisher, relay and consumer stand for Warren's gateway and dispatcher,
# so that load generator runs on the server core, beside RabbitMQ.
raw_cases() {
  local prefix run out pids
  for ((run = 1; run <= RUNS; run++)); do
    pids=$(cpu_pids "")
    pids=${pids#,}
    new_prefix
    prefix=$PREFIX
    log "raw broker path, persistent, max, run $run/$RUNS"
    out=$(loadgen_as_server raw --prefix "$prefix" --rate 0 --durability persistent --warmup "$WARMUP" \
      --duration "$DURATION" --drain "$DRAIN" --cpu-pids "$pids" || true)
    record raw_max "$run" '{}' "$out"
    log "raw broker path, persistent, 1,000 msg/s, run $run/$RUNS"
    out=$(loadgen_as_server raw --prefix "$prefix" --rate 1000 --durability persistent --warmup "$WARMUP" \
      --duration "$DURATION" --drain "$DRAIN" --cpu-pids "$pids" || true)
    record raw_1000 "$run" '{}' "$out"
    log "raw broker path, transient, max, run $run/$RUNS"
    out=$(loadgen_as_server raw --prefix "$prefix" --rate 0 --durability transient --warmup "$WARMUP" \
      --duration "$DURATION" --drain "$DRAIN" --cpu-pids "$pids" || true)
    record raw_transient_max "$run" '{}' "$out"
    clean_prefix "$prefix"
  done
}

seed_cases() {
  local run out attempt crashes
  for ((run = 1; run <= RUNS; run++)); do
    crashes=0
    for attempt in 1 2 3 4 5; do
      log "fanout (seed) run $run/$RUNS, attempt $attempt"
      start_seed
      out=$(loadgen seed-fanout --url "$SEED_URL" --receivers 1000 --senders 10 --rate 10 \
        --payload 64 --warmup "$WARMUP" --duration "$DURATION" --drain "$DRAIN" \
        --cpu-pids "seed=$SEED_PID" || true)
      # Judged by the run alone: the seed may still crash while loadgen disconnects.
      if [[ $out == *'"ok":true'* ]] && [[ $out != *'"closed_by_server":'[1-9]* ]]; then
        stop_pid "$SEED_PID"
        break
      fi
      crashes=$((crashes + 1))
      log "seed program died or failed during the run (see $LOGS/seed.log); retrying"
      stop_pid "$SEED_PID"
    done
    record seed_fanout "$run" "{\"seed_crashes\":$crashes}" "$out"
  done
  # Idle memory of the seed, 10,000 connections (for the side-by-side row).
  local count=${IDLE_COUNTS%% *}
  for ((run = 1; run <= RUNS; run++)); do
    log "idle (seed) $count connections, run $run/$RUNS"
    # The seed program may die under 10,000 connections: a run it did not live through
    # is not recorded, and is tried again (three times at most).
    local attempt
    for attempt in 1 2 3; do
      start_seed
      if idle_run seed_idle "$run" "$count" "$SEED_PID" "$SEED_URL" seed; then
        stop_pid "$SEED_PID"
        break
      fi
      log "seed program died during the idle run (attempt $attempt, see $LOGS/seed.log)"
      stop_pid "$SEED_PID"
    done
  done
}

# One idle measurement: C connections split over loadgen processes of at most 9,500
# connections, each from its own source address; RSS of $4 before and after.
idle_run() {
  local case=$1 run=$2 count=$3 pid=$4 url=$5 flavor=$6
  local per=9500 procs i n p left before after conns out files=() lg_pids=() flags=()
  [ "$flavor" = seed ] && flags=(--seed true) || flags=(--secret "$SECRET")
  procs=$(((count + per - 1) / per))
  sleep 1
  before=$(rss_kib "$pid") || return 1
  left=$count
  for ((i = 0; i < procs; i++)); do
    n=$((left / (procs - i)))
    left=$((left - n))
    files+=("$OUT/idle-$case-$run-$i")
    # Not through loadgen(): started in the background, a function would be a subshell
    # whose pid is not the load generator's.
    taskset -c "$LOADGEN_CPU" "$LOADGEN" idle --url "$url" "${flags[@]}" --conns "$n" \
      --hold $((IDLE_HOLD + 60)) --source-ip "127.0.0.$((20 + i))" --run-id "$case$run-$i" \
      --timeout 420 >"${files[i]}.json" 2>"${files[i]}.err" &
    lg_pids+=($!)
    STARTED_PIDS+=($!)
  done
  # Wait (bounded) for every process's "ready" line, then let the server settle.
  local t
  for ((t = 0; t < 3000; t++)); do
    n=0
    for i in "${!files[@]}"; do grep -q '^ready' "${files[i]}.err" 2>/dev/null && n=$((n + 1)); done
    [ "$n" -eq "$procs" ] && break
    sleep 0.1
  done
  sleep "$IDLE_HOLD"
  after=$(rss_kib "$pid") || after=
  conns=0
  for i in "${!files[@]}"; do
    n=$(sed -n 's/^ready connected=\([0-9]*\).*/\1/p' "${files[i]}.err" | head -n1)
    conns=$((conns + ${n:-0}))
  done
  # The gateway's own count of its connections, as a cross-check.
  local seen=null
  if [ "$flavor" = warren ]; then seen=$(stats_field "$GATEWAY_HTTP" connections); fi
  for p in "${lg_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${lg_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "$after" ] || return 1 # the server died under the load: no figure
  out=$(printf '{"ok":%s,"mode":"idle","conns":%s,"connected":%s,"processes":%s}' \
    "$([ "$conns" -eq "$count" ] && echo true || echo false)" "$count" "$conns" "$procs")
  record "$case" "$run" "{\"rss_before_kib\":$before,\"rss_after_kib\":$after,\"server_connections\":$seen}" "$out"
}

warren_idle_cases() {
  local count run prefix
  for count in $IDLE_COUNTS; do
    for ((run = 1; run <= RUNS; run++)); do
      log "idle (Warren) $count connections, run $run/$RUNS"
      new_prefix
      prefix=$PREFIX
      # One dispatcher beside the gateway: it declares the shared topology, without
      # which the gateway is never ready (it declares nothing shared itself); it sits
      # idle, and only the gateway's memory is measured.
      start_stack "$prefix" 1 1
      idle_run "idle_$count" "$run" "$count" "$GATEWAY_PID" "$GATEWAY_URL" warren
      stop_stack
    done
  done
}

# A session costs the broker nothing: the gateway binds its queue once (gw.<id>) and
# records its users in Redis. Its /stats "bindings" is read before and after each run,
# and by the load generator every 100 ms during it.
connect_cases() {
  local prefix run out pids before after
  new_prefix
  prefix=$PREFIX
  # One dispatcher for the shared topology (see warren_idle_cases); a session never
  # reaches it, and only the gateway's CPU is counted.
  start_stack "$prefix" 1 1
  for ((run = 1; run <= RUNS; run++)); do
    log "connect (Warren) run $run/$RUNS"
    pids=$(cpu_pids "gw0=$GATEWAY_PID")
    before=$(stats_field "$GATEWAY_HTTP" bindings)
    out=$(loadgen connect --url "$GATEWAY_URL" --secret "$SECRET" --concurrency 64 \
      --warmup 1 --duration "$CONNECT_S" --source-ip 127.0.0.30-127.0.0.61 \
      --stats-url "$GATEWAY_HTTP/stats" --cpu-pids "$pids" || true)
    sleep 1
    after=$(stats_field "$GATEWAY_HTTP" bindings)
    record connect "$run" "{\"bindings_before\":$before,\"bindings_after\":$after}" "$out"
    sleep 1
  done
  stop_stack
}

# A crowd: CROWD_USERS users connect and join one room through two gateways,
# one load generator process per gateway (at most 9,500 users each, from source
# addresses of their own), all starting at the same instant. Each process's JSON line
# is recorded as a part of the run; report.py adds them up.
crowd_cases() {
  local run
  start_chat_stack
  for ((run = 1; run <= RUNS; run++)); do
    log "crowd: $CROWD_USERS users join one room, run $run/$RUNS"
    crowd_run "$run" "$(chat_pids)" "crowd-$PREFIX-$run" "$URL0" "$URL1"
    sleep 2
  done
  stop_stack
}

# One crowd: run $1, --cpu-pids $2, room $3, then the gateways' URLs (process i speaks
# to URL i modulo their number).
crowd_run() {
  local run=$1 pids=$2 room=$3
  shift 3
  local -a urls=("$@") files=() lg_pids=()
  local per=9500 procs i n left start out
  procs=$(((CROWD_USERS + per - 1) / per))
  [ "$procs" -ge "${#urls[@]}" ] || procs=${#urls[@]}
  # Every process waits for the same instant, a moment after the last one started.
  start=$(($(date +%s%3N) + 2000))
  left=$CROWD_USERS
  for ((i = 0; i < procs; i++)); do
    n=$((left / (procs - i)))
    left=$((left - n))
    files+=("$OUT/crowd-$run-$i")
    # Not through loadgen(): started in the background, a function would be a subshell
    # whose pid is not the load generator's.
    taskset -c "$LOADGEN_CPU" "$LOADGEN" crowd --url "${urls[i % ${#urls[@]}]}" --secret "$SECRET" \
      --users "$n" --room "$room" --concurrency 500 --connect-timeout 10 --start-at "$start" \
      --hold 3 --source-ip "127.0.0.$((70 + 4 * i))-127.0.0.$((73 + 4 * i))" \
      --run-id "$room-$i" --cpu-pids "$pids" >"${files[i]}.json" 2>"${files[i]}.err" &
    lg_pids+=($!)
    STARTED_PIDS+=($!)
  done
  # Each is bounded by its own --timeout (300 s).
  for i in "${!lg_pids[@]}"; do
    wait "${lg_pids[i]}" || true
    out=$(cat "${files[i]}.json" 2>/dev/null || true)
    record crowd "$run" "{\"part\":$i,\"parts\":$procs,\"users\":$CROWD_USERS}" "$out"
  done
}

# A broker restart during a 200-room pipeline at 500 msg/s over two gateways:
# RabbitMQ's application is stopped RESTART_AT s into the window and started again 5 s
# later. loadgen keeps every WebSocket open, sends refused and unanswered messages again
# with the same ref, and checks that each member got every acked message once, in seq
# order; "recovery" runs from the moment start_app returned (written to a file loadgen
# reads at the end) to the first ack after it. This stops the machine's RabbitMQ: never
# run it while anyone else uses that broker.
restart_cases() {
  local run file lg t stopped back out
  start_chat_stack
  for ((run = 1; run <= RUNS; run++)); do
    log "broker restart during a 200-room pipeline at 500 msg/s, run $run/$RUNS"
    file=$OUT/restart-$run
    rm -f "$file.back"
    taskset -c "$LOADGEN_CPU" "$LOADGEN" pipeline --url "$URL0,$URL1" --secret "$SECRET" \
      --rooms 200 --rate 500 --warmup "$WARMUP" --duration "$RESTART_S" --drain 10 \
      --drain-max 120 --retry --ready-line --broker-back-file "$file.back" \
      --run-id "$PREFIX-b$run" --timeout 400 >"$file.json" 2>"$file.err" &
    lg=$!
    STARTED_PIDS+=("$lg")
    for ((t = 0; t < 1200; t++)); do
      if grep -q '^ready' "$file.err" 2>/dev/null || ! alive "$lg"; then break; fi
      sleep 0.1
    done
    stopped=null back=null
    if grep -q '^ready' "$file.err" 2>/dev/null; then
      sleep $((WARMUP + RESTART_AT))
      log "stopping RabbitMQ (rabbitmqctl stop_app) for 5 s"
      stopped=$(date +%s%3N)
      broker_stop
      sleep 5
      broker_start || die "RabbitMQ did not start again; see $LOGS/rabbitmqctl.log"
      back=$(date +%s%3N)
      echo "$back" >"$file.back"
      log "RabbitMQ is back after $(((back - stopped) / 1000)) s"
    else
      log "loadgen did not get ready (see $file.err): no restart in run $run"
    fi
    wait "$lg" || true
    out=$(cat "$file.json" 2>/dev/null || true)
    record restart "$run" "{\"broker_stop_ms\":$stopped,\"broker_back_ms\":$back}" "$out"
    sleep 5
  done
  stop_stack
}

# Slow consumer (the promise: the others within 10 %): one room of 200 members on one gateway (190
# receivers + 10 senders × 20 msg/s, 4,000-byte texts: 200 msg/s, 40,000 deliveries/s,
# about 170 MB/s of frames), with 0 and then 1 of the receivers stalled (SO_RCVBUF 4 KiB,
# never read after its join); the two alternate so that drift hits both alike. Each run
# watches the gateway's /metrics for the 1013.
stalled_cases() {
  local prefix run n out pids
  new_prefix
  prefix=$PREFIX
  start_stack "$prefix" 1 1
  local d0=$D0 gw0=$GW0
  for ((run = 1; run <= RUNS; run++)); do
    for n in 0 1; do
      log "slow consumer: $n stalled reader(s), run $run/$RUNS"
      pids=$(cpu_pids "gw0=$gw0,d0=$d0")
      out=$(loadgen fanout --url "$GATEWAY_URL" --secret "$SECRET" --receivers 190 --senders 10 \
        --rate 20 --payload 4000 --stalled "$n" --stalled-rcvbuf 4096 \
        --metrics-url "$GATEWAY_HTTP/metrics" --warmup "$WARMUP" --duration "$DURATION" \
        --drain "$DRAIN" --drain-max 10 --timeout 90 --cpu-pids "$pids" \
        --run-id "$prefix-s$n-$run" || true)
      record "stalled_$n" "$run" '{}' "$out"
      sleep 2
    done
  done
  stop_stack
}

if [ "$MODE" = smoke ]; then
  smoke_case
  exit $?
fi

if [ "$MODE" = stalled ]; then
  started=$(date +%s)
  stalled_cases
  echo "elapsed: $(($(date +%s) - started)) s" >>"$OUT/machine.txt"
  log "results in $RESULTS"
  python3 "$HERE/report.py" stalled "$RESULTS" "$OUT/machine.txt" | tee "$OUT/stalled.md"
  exit "${PIPESTATUS[0]}"
fi

started=$(date +%s)
if has_case fanout || has_case deflate || has_case pipeline; then warren_chat_cases; fi
if has_case coalesce; then coalesce_cases; fi
if has_case unordered; then unordered_cases; fi
if has_case quorum; then quorum_cases; fi
if has_case budget; then budget_cases; fi
if has_case raw; then raw_cases; fi
if has_case seed; then seed_cases; fi
if has_case idle; then warren_idle_cases; fi
if has_case connect; then connect_cases; fi
if has_case crowd; then crowd_cases; fi
# Last: it stops and starts the broker.
if has_case restart; then restart_cases; fi
echo "elapsed: $(($(date +%s) - started)) s" >>"$OUT/machine.txt"
log "results in $RESULTS"

python3 "$HERE/report.py" summary "$RESULTS" "$OUT/machine.txt"
if [ "$FORCE_REPORT" = 1 ] || { [ "$MODE" = full ] && [ "$CASES" = "$ALL_CASES" ]; }; then
  python3 "$HERE/report.py" render "$RESULTS" "$OUT/machine.txt" "$ROOT/BENCHMARKS.md"
  log "BENCHMARKS.md tables regenerated"
fi
