#!/usr/bin/env bash
# Brings up the whole Warren stack on this machine: makes sure RabbitMQ and
# Redis run (scripts/ensure-services.sh), builds the binaries, starts one
# dispatcher and two gateways (127.0.0.1:8080 and 127.0.0.1:8081) with
# deploy/local.toml, waits until the gateways are ready and prints where to
# connect, with ready-made tokens for the users alice and bob.
#
# Usage:
#   scripts/run-local.sh            run in the foreground; Ctrl-C stops everything
#   scripts/run-local.sh --detach   leave the services running in the background
#   scripts/run-local.sh --stop     stop the services a previous run started
#
# Environment:
#   WARREN_PROFILE=debug   use a debug build instead of a release build
#   CARGO_TARGET_DIR       honoured, as cargo does
#
# Logs go to .local/logs/<name>.log, process ids to .local/pids.
set -euo pipefail

orig_pwd=$PWD
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

readonly CONFIG=deploy/local.toml
readonly LOG_DIR=.local/logs
readonly PID_FILE=.local/pids
readonly READY_WAIT_S=30
readonly STOP_WAIT_S=10
readonly GATEWAY_PORTS=(8080 8081)
# The gateways' operations listeners, in the same order.
readonly OPS_PORTS=(9101 9102)

SCRIPT_NAME=run-local
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

# ---------------------------------------------------------------------------
# Processes.
# ---------------------------------------------------------------------------

# True while the process runs (a zombie that nobody has reaped yet is dead).
alive() {
    local pid=$1 stat state
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -d /proc/$pid ]]; then
        { read -r stat <"/proc/$pid/stat"; } 2>/dev/null || return 1
        state=${stat##*) }
        state=${state%% *}
        [[ $state != Z ]]
    fi
}

# True when the pid is (still) one of ours and not a reused pid: a Warren
# binary, or this script supervising them.
ours() {
    local pid=$1 cmd
    [[ -r /proc/$pid/cmdline ]] || return 0
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmd == *warren-* || $cmd == *run-local* ]]
}

# stop_procs NAME PID NAME PID ...: SIGTERM, wait up to STOP_WAIT_S, SIGKILL.
stop_procs() {
    local names=() pids=()
    while (($# >= 2)); do
        if [[ $2 =~ ^[0-9]+$ ]] && [[ $2 -ne $$ ]] && alive "$2" && ours "$2"; then
            names+=("$1")
            pids+=("$2")
        fi
        shift 2
    done
    ((${#pids[@]})) || return 0
    log "stopping ${names[*]}"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local i pid left
    for ((i = 0; i < STOP_WAIT_S * 5; i++)); do
        left=()
        for pid in "${pids[@]}"; do
            alive "$pid" && left+=("$pid")
        done
        ((${#left[@]})) || return 0
        sleep 0.2
    done
    log "still running after ${STOP_WAIT_S}s, killing: ${left[*]}"
    kill -KILL "${left[@]}" 2>/dev/null || true
}

# Stops whatever a previous run recorded in the pid file.
stop_recorded() {
    [[ -f $PID_FILE ]] || return 1
    local entries=() name pid
    while read -r name pid _; do
        [[ -n ${pid:-} ]] && entries+=("$name" "$pid")
    done <"$PID_FILE"
    if ((${#entries[@]})); then
        stop_procs "${entries[@]}"
    fi
    rm -f "$PID_FILE"
}

# ---------------------------------------------------------------------------
# HTTP status of a GET (000 when nothing answers): curl, else python3.
# ---------------------------------------------------------------------------
http_status() {
    local url=$1
    if have curl; then
        curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" 2>/dev/null || true
    elif have python3; then
        python3 - "$url" <<'PY' 2>/dev/null || printf '000'
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as resp:
        print(resp.status, end="")
except urllib.error.HTTPError as err:
    print(err.code, end="")
except Exception:
    print("000", end="")
PY
    else
        printf 'none'
    fi
}

# ---------------------------------------------------------------------------
# Arguments.
# ---------------------------------------------------------------------------
mode=foreground
for arg in "$@"; do
    case $arg in
    --detach) mode=detach ;;
    --stop) mode=stop ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument '$arg' (try --help)" ;;
    esac
done

if [[ $mode == stop ]]; then
    if stop_recorded; then
        log "stopped"
    else
        log "nothing to stop ($PID_FILE does not exist)"
    fi
    exit 0
fi

profile=${WARREN_PROFILE:-release}
case $profile in
release) build_args=(--release) ;;
debug) build_args=() ;;
*) die "WARREN_PROFILE must be 'release' or 'debug', not '$profile'" ;;
esac

# cargo reads a relative CARGO_TARGET_DIR from where it runs; resolve it from
# where this script was started, then hand cargo the absolute path.
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $target_dir == /* ]] || target_dir=$orig_pwd/$target_dir
if [[ -n ${CARGO_TARGET_DIR:-} ]]; then
    export CARGO_TARGET_DIR=$target_dir
fi
bin_dir=$target_dir/$profile

# ---------------------------------------------------------------------------
# Services, build.
# ---------------------------------------------------------------------------
mkdir -p "$LOG_DIR"
if [[ -f $PID_FILE ]]; then
    log "stopping what a previous run left behind"
    stop_recorded || true
fi

# A gateway left over from elsewhere would answer /readyz for ours.
for port in "${GATEWAY_PORTS[@]}" "${OPS_PORTS[@]}"; do
    # shellcheck disable=SC2016 # expanded by the inner bash
    if timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$port" 2>/dev/null; then
        die "127.0.0.1:$port is already in use by another process (see: ss -ltnp 'sport = :$port')"
    fi
done

bash "$ROOT/scripts/ensure-services.sh"

# rustup installs into ~/.cargo/bin, which a fresh shell may not have on PATH.
if ! have cargo && [[ -x ${HOME:-}/.cargo/bin/cargo ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
have cargo || die "cargo is not installed (https://rustup.rs)"
build_cmd=(cargo build "${build_args[@]}" --bins)
log "building ($profile build): ${build_cmd[*]}"
"${build_cmd[@]}"

for bin in warren-dispatcher warren-gateway warren-token; do
    [[ -x $bin_dir/$bin ]] || die "$bin_dir/$bin is missing after the build"
done

# ---------------------------------------------------------------------------
# Start.
# ---------------------------------------------------------------------------
started=()    # NAME PID NAME PID ...
record=""     # what this run wrote to the pid file
keep_running=0

on_exit() {
    local rc=$?
    trap '' INT TERM HUP
    trap - EXIT
    if ((keep_running == 0 && ${#started[@]})); then
        stop_procs "${started[@]}"
        wait 2>/dev/null || true
        # Only forget the pid file if it is still ours (a newer run may
        # already have replaced it).
        if [[ -f $PID_FILE && $(<"$PID_FILE") == "${record%$'\n'}" ]]; then
            rm -f "$PID_FILE"
        fi
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# The services get a session of their own, so that a detached stack
# survives the terminal, and Ctrl-C reaches only this script (which then
# stops them in order).
launcher=()
have setsid && launcher=(setsid)

# start NAME BINARY [VAR=VALUE...]
start() {
    local name=$1 bin=$2 pid
    shift 2
    : >"$LOG_DIR/$name.log"
    "${launcher[@]}" env "$@" "$bin_dir/$bin" --config "$CONFIG" \
        </dev/null >>"$LOG_DIR/$name.log" 2>&1 &
    pid=$!
    started+=("$name" "$pid")
    record+="$name $pid"$'\n'
    printf '%s' "$record" >"$PID_FILE"
    log "started $name (pid $pid, log $LOG_DIR/$name.log)"
}

if [[ $mode == foreground ]]; then
    record+="run-local $$"$'\n'
fi
start dispatcher warren-dispatcher
# Gateways log in with their own least-privilege account (made by ensure-services.sh);
# it is listed in amqp.gateway_accounts, so the dispatcher believes the actor it sends.
GATEWAY_AMQP_URL='amqp://warren-gateway:warren-gateway@127.0.0.1:5672/%2f'
# Each gateway's operations endpoints (/readyz, /metrics, /stats) on a loopback port
# of their own; the public ports serve only /ws and the web client.
start gateway-a warren-gateway WARREN__GATEWAY__LISTEN=127.0.0.1:8080 WARREN__GATEWAY__ID=gw-a \
    "WARREN__GATEWAY__OPS_LISTEN=127.0.0.1:${OPS_PORTS[0]}" "WARREN__AMQP__URL=$GATEWAY_AMQP_URL"
start gateway-b warren-gateway WARREN__GATEWAY__LISTEN=127.0.0.1:8081 WARREN__GATEWAY__ID=gw-b \
    "WARREN__GATEWAY__OPS_LISTEN=127.0.0.1:${OPS_PORTS[1]}" "WARREN__AMQP__URL=$GATEWAY_AMQP_URL"

# Dies, showing its log, if one of the services has exited.
check_started() {
    local i name pid
    for ((i = 0; i < ${#started[@]}; i += 2)); do
        name=${started[i]}
        pid=${started[i + 1]}
        if ! alive "$pid"; then
            log "$name exited; last lines of $LOG_DIR/$name.log:"
            tail -n 20 "$LOG_DIR/$name.log" >&2 || true
            die "$name is not running"
        fi
    done
}

# ---------------------------------------------------------------------------
# Wait until ready.
# ---------------------------------------------------------------------------
pending=("${OPS_PORTS[@]}")
deadline=$((SECONDS + READY_WAIT_S))
while ((${#pending[@]})); do
    check_started
    still=()
    for port in "${pending[@]}"; do
        status=$(http_status "http://127.0.0.1:$port/readyz")
        if [[ $status == none ]]; then
            log "neither curl nor python3 is installed: not waiting for /readyz"
            sleep 2
            check_started
            break 2
        fi
        [[ $status == 200 ]] || still+=("$port")
    done
    pending=("${still[@]}")
    ((${#pending[@]})) || break
    if ((SECONDS >= deadline)); then
        die "not ready within ${READY_WAIT_S}s: http://127.0.0.1:${pending[0]}/readyz (last status $status); see $LOG_DIR/"
    fi
    sleep 0.5
done
check_started

# ---------------------------------------------------------------------------
# Tokens, and where to connect.
# ---------------------------------------------------------------------------
mint() {
    local token
    token=$("$bin_dir/warren-token" "$1" --name "$2" --config "$CONFIG" 2>>"$LOG_DIR/warren-token.log") ||
        die "warren-token $1 failed; see $LOG_DIR/warren-token.log"
    token=${token//[$'\t\r\n ']/}
    [[ -n $token ]] || die "warren-token $1 printed no token; see $LOG_DIR/warren-token.log"
    printf '%s' "$token"
}
: >"$LOG_DIR/warren-token.log"
alice_token=$(mint alice Alice)
bob_token=$(mint bob Bob)

cat <<EOF

Warren is running locally (dispatcher, gateways gw-a and gw-b; $profile build).

  WebSocket, gateway gw-a:  ws://127.0.0.1:8080/ws
  WebSocket, gateway gw-b:  ws://127.0.0.1:8081/ws
  Web client:               http://127.0.0.1:8080/
  Operations (loopback):    http://127.0.0.1:${OPS_PORTS[0]}/metrics, http://127.0.0.1:${OPS_PORTS[1]}/metrics  (/readyz, /stats)
  RabbitMQ console:         http://127.0.0.1:15672  (guest / guest)
  Logs:                     $LOG_DIR/dispatcher.log, $LOG_DIR/gateway-a.log, $LOG_DIR/gateway-b.log

Tokens:
  alice:  $alice_token
  bob:    $bob_token

Try it (two terminals):
  websocat "ws://127.0.0.1:8080/ws?token=$alice_token"
  websocat "ws://127.0.0.1:8081/ws?token=$bob_token"

EOF

if [[ $mode == detach ]]; then
    keep_running=1
    echo "Running in the background. Stop with: scripts/run-local.sh --stop"
    exit 0
fi

echo "Press Ctrl-C to stop."
# Stay here until a signal arrives (the traps then stop everything) or one
# of the services exits by itself.
while :; do
    rc=0
    wait -n || rc=$?
    for ((i = 0; i < ${#started[@]}; i += 2)); do
        if ! alive "${started[i + 1]}"; then
            log "${started[i]} exited (status $rc); last lines of $LOG_DIR/${started[i]}.log:"
            tail -n 20 "$LOG_DIR/${started[i]}.log" >&2 || true
            exit 1
        fi
    done
done
