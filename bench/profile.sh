#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Profiles one Warren process under a small, short load, for the goals BENCHMARKS.md
# shows as not reached. `perf` needs hardware counters (`perf stat -e instructions true`
# must work); where it does not (virtual machines without a PMU), valgrind is used:
#
#   bench/profile.sh fanout     callgrind on a gateway, steady state: 300 receivers, 2 senders x 5 msg/s
#   bench/profile.sh pipeline   callgrind on the dispatcher: 50 rooms at 50 msg/s
#   bench/profile.sh connect    callgrind on a gateway: sessions opened and closed, 4 at once
#   bench/profile.sh idle       massif (heap) on a gateway holding 500 idle connections
#
# Writes the raw profile and a text summary under target/bench/profile-<what>-<stamp>/
# and prints the summary. Release binaries (run `cargo build --release --bins` first).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

WHAT=${1:-}
case $WHAT in fanout | pipeline | connect | idle) ;; *) sed -n '2,13p' "$0"; exit 2 ;; esac
command -v valgrind >/dev/null || die "valgrind is not installed (apt-get install valgrind)"

BIN_DIR=$ROOT/target/release
LOADGEN=$BIN_DIR/loadgen
OUT=$ROOT/target/bench/profile-$WHAT-$(date -u +%Y%m%dT%H%M%SZ)
LOGS=$OUT
RESULTS=$OUT/results.jsonl
mkdir -p "$OUT"
SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
ulimit -n "$(ulimit -Hn)"

cleanup() {
  local rc=$? pid p
  trap - EXIT INT TERM
  for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
  for p in "${PREFIXES[@]}"; do clean_prefix "$p"; done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts the gateway of $1 under valgrind with the tool options in the rest.
start_gateway_under() {
  local prefix=$1 port ops
  shift
  port=$(free_port)
  ops=$(free_port)
  warren_env "$prefix"
  WARREN_ENV+=("WARREN__GATEWAY__LISTEN=127.0.0.1:$port" "WARREN__GATEWAY__ID=$prefix-gw0"
    "WARREN__GATEWAY__OPS_LISTEN=127.0.0.1:$ops")
  ENV_ARRAY=WARREN_ENV start_server "$prefix-gw0" valgrind "$@" "$BIN_DIR/warren-gateway"
  GATEWAY_PID=$STARTED
  GATEWAY_URL="ws://127.0.0.1:$port/ws"
  wait_http "http://127.0.0.1:$ops/readyz" 120 || die "gateway under valgrind not ready"
}

summarise_callgrind() {
  local file=$1
  {
    echo "== self cost (instructions), top 30"
    callgrind_annotate --inclusive=no "$file" 2>/dev/null | sed -n '/^Ir/,$p' | head -n 40
    echo
    echo "== inclusive cost, top 40"
    callgrind_annotate --inclusive=yes "$file" 2>/dev/null | sed -n '/^Ir/,$p' | head -n 50
  } >"$OUT/summary.txt"
  cat "$OUT/summary.txt"
}

new_prefix
prefix=$PREFIX
case $WHAT in
  fanout)
    # Steady state only: instrumentation starts once every member has joined and the
    # warm-up is over (callgrind_control), so connects and joins are not in the profile.
    start_stack "$prefix" 1 0
    start_gateway_under "$prefix" --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
      --instr-atstart=no
    stats_url="${GATEWAY_URL/ws:/http:}"
    stats_url="${stats_url%/ws}/stats"
    loadgen fanout --url "$GATEWAY_URL" --secret "$SECRET" --receivers 300 --senders 2 --rate 5 \
      --warmup 4 --duration 15 --drain 10 --connect-concurrency 20 --connect-timeout 60 \
      --cpu-pids "gw0=$GATEWAY_PID" >"$OUT/loadgen.json" &
    lg=$!
    for _ in $(seq 1 120); do
      n=$(curl -fsS "$stats_url" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["connections"])' || echo 0)
      [ "$n" -ge 302 ] && break
      sleep 1
    done
    sleep 4
    callgrind_control -i on "$GATEWAY_PID" >/dev/null
    wait "$lg"
    cat "$OUT/loadgen.json"
    stop_pid "$GATEWAY_PID" 120
    summarise_callgrind "$OUT/callgrind.out"
    ;;
  pipeline)
    # The dispatcher under callgrind, a normal gateway.
    port=$(free_port)
    warren_env "$prefix"
    WARREN_ENV+=("WARREN__DISPATCHER__LISTEN=127.0.0.1:$port")
    ENV_ARRAY=WARREN_ENV start_server "$prefix-d0" valgrind --tool=callgrind \
      --callgrind-out-file="$OUT/callgrind.out" "$BIN_DIR/warren-dispatcher"
    d0=$STARTED
    wait_http "http://127.0.0.1:$port/readyz" 120 || die "dispatcher under valgrind not ready"
    start_stack "$prefix" 0 1
    loadgen pipeline --url "$GATEWAY_URL" --secret "$SECRET" --rooms 50 --rate 50 \
      --warmup 2 --duration 15 --drain 10 --connect-concurrency 20 --connect-timeout 60 \
      --cpu-pids "d0=$d0" | tee "$OUT/loadgen.json"
    stop_pid "$d0" 120
    summarise_callgrind "$OUT/callgrind.out"
    ;;
  connect)
    start_gateway_under "$prefix" --tool=callgrind --callgrind-out-file="$OUT/callgrind.out"
    loadgen connect --url "$GATEWAY_URL" --secret "$SECRET" --concurrency 4 --warmup 1 \
      --duration 15 --connect-timeout 30 --cpu-pids "gw0=$GATEWAY_PID" | tee "$OUT/loadgen.json"
    stop_pid "$GATEWAY_PID" 120
    summarise_callgrind "$OUT/callgrind.out"
    ;;
  idle)
    start_gateway_under "$prefix" --tool=massif --massif-out-file="$OUT/massif.out" \
      --pages-as-heap=no --threshold=0.5
    loadgen idle --url "$GATEWAY_URL" --secret "$SECRET" --conns 500 --hold 10 \
      --connect-concurrency 20 --connect-timeout 60 | tee "$OUT/loadgen.json"
    stop_pid "$GATEWAY_PID" 120
    ms_print "$OUT/massif.out" >"$OUT/summary.txt" 2>&1 || true
    head -n 120 "$OUT/summary.txt"
    ;;
esac
echo "profile in $OUT"
