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
# runs under its own prefix (soak-<hex>) on the machine's RabbitMQ and Redis; its
# processes, queues, exchanges and Redis keys are removed at the end, also on Ctrl-C.
# Logs: target/soak/<prefix>-*.log.
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
cargo build --release -q -p warren-gateway -p warren-dispatcher --bins
cargo build --release -q -p warren-tests --bin churn

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET == /* ]] || TARGET=$ROOT/$TARGET
BIN=$TARGET/release
LOGS=$TARGET/soak
mkdir -p "$LOGS"

PREFIX=soak-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

# Five free loopback ports, chosen by the kernel (the gateways' public and operations
# listeners, the dispatcher's).
read -r GW0_PORT GW1_PORT D_PORT GW0_OPS GW1_OPS < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
PY
)

common_env=(
    "WARREN__AMQP__PREFIX=$PREFIX"
    "WARREN__REDIS__PREFIX=$PREFIX"
    "WARREN__AUTH__SECRET=$SECRET"
    "WARREN__LOG__LEVEL=warn"
    "WARREN__GATEWAY__SENDS_PER_SEC=1000"
    "WARREN__GATEWAY__BURST=1000"
    "WARREN__DISPATCHER__USER_SENDS_PER_SEC=0"
)

PIDS=()
NAMES=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 1 50); do
        local alive=0
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        ((alive == 0)) && break
        sleep 0.2
    done
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ -n ${CHURN_PID:-} ]]; then
        kill -TERM "$CHURN_PID" 2>/dev/null || true
    fi
    "$BIN/churn" --cleanup --prefix "$PREFIX" || echo "soak: cleanup of $PREFIX had problems" >&2
}
trap cleanup EXIT

start() {
    local name=$1 bin=$2
    shift 2
    env "${common_env[@]}" "$@" "$BIN/$bin" >>"$LOGS/$PREFIX-$name.log" 2>&1 &
    PIDS+=("$!")
    NAMES+=("$name")
}

wait_ready() {
    local port=$1 name=$2
    for _ in $(seq 1 150); do
        if curl -fsS -m 2 "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    echo "soak: $name not ready on 127.0.0.1:$port; see $LOGS/$PREFIX-$name.log" >&2
    exit 1
}

start dispatcher warren-dispatcher "WARREN__DISPATCHER__LISTEN=127.0.0.1:$D_PORT"
wait_ready "$D_PORT" dispatcher
start gw0 warren-gateway "WARREN__GATEWAY__LISTEN=127.0.0.1:$GW0_PORT" "WARREN__GATEWAY__ID=$PREFIX-gw0" \
    "WARREN__GATEWAY__OPS_LISTEN=127.0.0.1:$GW0_OPS"
start gw1 warren-gateway "WARREN__GATEWAY__LISTEN=127.0.0.1:$GW1_PORT" "WARREN__GATEWAY__ID=$PREFIX-gw1" \
    "WARREN__GATEWAY__OPS_LISTEN=127.0.0.1:$GW1_OPS"
wait_ready "$GW0_OPS" gw0
wait_ready "$GW1_OPS" gw1

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
"$BIN/churn" --gateways "127.0.0.1:$GW0_PORT,127.0.0.1:$GW1_PORT" --secret "$SECRET" \
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
