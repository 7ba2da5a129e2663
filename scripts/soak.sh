#!/usr/bin/env bash
# Memory soak (not part of CI): one dispatcher and two gateways (RELEASE builds) under
# churning connections and traffic for a bounded time, with the resident memory (VmRSS)
# of each Warren process sampled every 30 s and printed as a table.
#
#   scripts/soak.sh [minutes]        # default 10, at most 180
#
# The load is tests/src/bin/churn.rs (release build): 16 virtual users, each at most one
# cycle per second (connect to a gateway, join 3 of 12 rooms, send 5 messages and wait
# for each ack, read for 300 ms, close). Everything talks to 127.0.0.1 only. The stack
# is started by the launcher (warren-stack) under its own prefix (soak-<hex>) on the
# machine's RabbitMQ and Redis; when the launcher stops, at the end or on Ctrl-C, it
# removes its processes, queues, exchanges and Redis keys. Logs: target/soak/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

MINUTES=${1:-10}
if ! [[ $MINUTES =~ ^[0-9]+$ ]] || ((MINUTES < 1 || MINUTES > 180)); then
    echo "usage: scripts/soak.sh [minutes 1..180]" >&2
    exit 2
fi
SAMPLE_S=30
WORKERS=16

if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-}/.cargo/bin/cargo ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

bash scripts/ensure-services.sh
echo "soak: building release binaries" >&2
cargo build --release -q -p warren-gateway -p warren-dispatcher -p warren-stack --bins
cargo build --release -q -p warren-tests --bin churn

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET == /* ]] || TARGET=$ROOT/$TARGET
BIN=$TARGET/release
LOGS=$TARGET/soak
mkdir -p "$LOGS"

SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
STACK_JSON=$LOGS/stack-$$.json

STACK_PID=
cleanup() {
    if [[ -n ${CHURN_PID:-} ]]; then
        kill -TERM "$CHURN_PID" 2>/dev/null || true
    fi
    if [[ -n $STACK_PID ]]; then
        kill -TERM "$STACK_PID" 2>/dev/null || true
        wait "$STACK_PID" || echo "soak: warren-stack reported a problem; see $LOGS/stack.log" >&2
    fi
    rm -f "$STACK_JSON"
}
trap cleanup EXIT

"$BIN/warren-stack" --profile release --prefix-tag soak --logs "$LOGS" --secret "$SECRET" \
    --dispatchers 1 --gateways 2 --env WARREN__LOG__LEVEL=warn \
    --env WARREN__GATEWAY__SENDS_PER_SEC=1000 --env WARREN__GATEWAY__BURST=1000 \
    --env WARREN__DISPATCHER__USER_SENDS_PER_SEC=0 \
    </dev/null >"$STACK_JSON" 2>>"$LOGS/stack.log" &
STACK_PID=$!
until [[ -s $STACK_JSON ]]; do
    kill -0 "$STACK_PID" 2>/dev/null || {
        echo "soak: the stack did not start; see $LOGS/stack.log" >&2
        exit 1
    }
    sleep 0.5
done
# The prefix, the gateways' addresses, and "name pid" of each process.
{
    read -r PREFIX
    read -r GATEWAYS
    mapfile -t PROCESSES
} < <(python3 - "$STACK_JSON" <<'PY'
import json, sys
stack = json.load(open(sys.argv[1]))
print(stack["prefix"])
print(",".join(g["addr"] for g in stack["gateways"]))
for i, d in enumerate(stack["dispatchers"]):
    print("dispatcher" if i == 0 else f"dispatcher{i}", d["pid"])
for i, g in enumerate(stack["gateways"]):
    print(f"gw{i}", g["pid"])
PY
)
PIDS=()
NAMES=()
for entry in "${PROCESSES[@]}"; do
    NAMES+=("${entry% *}")
    PIDS+=("${entry#* }")
done

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

declare -A FIRST LAST MAX
sample() {
    local t=$1 row i pid kib
    row=$(printf '%6s' "$t")
    for i in "${!PIDS[@]}"; do
        pid=${PIDS[$i]}
        kib=$(rss_kib "$pid")
        [[ -n $kib ]] || kib=0
        [[ -n ${FIRST[$i]:-} ]] || FIRST[$i]=$kib
        LAST[$i]=$kib
        ((kib > ${MAX[$i]:-0})) && MAX[$i]=$kib
        row+=$(printf ' %12s' "$kib")
    done
    echo "$row"
}

echo "soak: prefix $PREFIX, release build, $MINUTES min, $WORKERS churn workers, load $(cut -d' ' -f1-3 /proc/loadavg)"
header=$(printf '%6s' "t(s)")
for n in "${NAMES[@]}"; do header+=$(printf ' %12s' "$n(KiB)"); done
echo "$header"
sample 0

DURATION=$((MINUTES * 60))
"$BIN/churn" --gateways "$GATEWAYS" --secret "$SECRET" \
    --seconds "$DURATION" --workers "$WORKERS" >"$LOGS/$PREFIX-churn.out" 2>"$LOGS/$PREFIX-churn.log" &
CHURN_PID=$!

started=$SECONDS
while kill -0 "$CHURN_PID" 2>/dev/null && ((SECONDS - started < DURATION + 120)); do
    sleep "$SAMPLE_S"
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || {
            echo "soak: a Warren process ($pid) died; see $LOGS/" >&2
            exit 1
        }
    done
    sample $((SECONDS - started))
done
wait "$CHURN_PID" || echo "soak: churn exited with status $?" >&2
CHURN_PID=
# Idle for one more sample: memory after the load stops.
sleep "$SAMPLE_S"
sample "$((SECONDS - started))(idle)"

echo
printf '%-12s %12s %12s %12s\n' process "start KiB" "end KiB" "max KiB"
for i in "${!PIDS[@]}"; do
    printf '%-12s %12s %12s %12s\n' "${NAMES[$i]}" "${FIRST[$i]}" "${LAST[$i]}" "${MAX[$i]}"
done
cat "$LOGS/$PREFIX-churn.out"
