#!/usr/bin/env bash
# Brings up the whole Warren stack on this machine: makes sure RabbitMQ and
# Redis run (scripts/ensure-services.sh), builds the binaries, starts one
# dispatcher and two gateways (127.0.0.1:8080 and 127.0.0.1:8081) with
# deploy/local.toml through the stack launcher (warren-stack, which waits until
# each is ready), and prints where to connect, with ready-made tokens for the
# users alice and bob. The launcher keeps the stack's data (prefix "warren")
# from one run to the next.
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
# Logs go to .local/logs/ (warren-stack.log, warren-<process>.log), the
# launcher's process id to .local/pids.
set -euo pipefail

orig_pwd=$PWD
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

readonly CONFIG=deploy/local.toml
readonly LOG_DIR=.local/logs
readonly PID_FILE=.local/pids
readonly READY_WAIT_S=30
readonly STOP_WAIT_S=10
readonly STACK_JSON=.local/stack.json
readonly GATEWAY_IDS=(gw-a gw-b)
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

# True when the pid is (still) the launcher and not a reused pid.
ours() {
    local pid=$1 cmd
    [[ -r /proc/$pid/cmdline ]] || return 0
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmd == *warren-stack* ]]
}

# Stops the launcher (SIGTERM: it stops the services in order), waiting up to
# STOP_WAIT_S for each of them, then SIGKILL.
stop_launcher() {
    local pid=$1 i
    [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" && ours "$pid" || return 0
    log "stopping the stack (warren-stack, pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_WAIT_S * 15; i++)); do
        alive "$pid" || return 0
        sleep 0.2
    done
    log "still running after $((STOP_WAIT_S * 3))s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

# Stops whatever a previous run recorded in the pid file.
stop_recorded() {
    [[ -f $PID_FILE ]] || return 1
    local name pid
    while read -r name pid _; do
        [[ $name == warren-stack ]] && stop_launcher "${pid:-}"
    done <"$PID_FILE"
    rm -f "$PID_FILE"
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

bash "$ROOT/scripts/ensure-services.sh"

# rustup installs into ~/.cargo/bin, which a fresh shell may not have on PATH.
if ! have cargo && [[ -x ${HOME:-}/.cargo/bin/cargo ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
have cargo || die "cargo is not installed (https://rustup.rs)"
build_cmd=(cargo build "${build_args[@]}" --bins)
log "building ($profile build): ${build_cmd[*]}"
"${build_cmd[@]}"

for bin in warren-stack warren-dispatcher warren-gateway warren-token warren-admin; do
    [[ -x $bin_dir/$bin ]] || die "$bin_dir/$bin is missing after the build"
done

# ---------------------------------------------------------------------------
# Start: the launcher binds the ports, starts the processes, waits until each is
# ready, then prints one JSON line and stays until SIGTERM.
# ---------------------------------------------------------------------------
launcher_pid=""
keep_running=0

on_exit() {
    local rc=$?
    trap '' INT TERM HUP
    trap - EXIT
    if ((keep_running == 0)) && [[ -n $launcher_pid ]]; then
        stop_launcher "$launcher_pid"
        wait 2>/dev/null || true
        # Only forget the pid file if it is still ours (a newer run may
        # already have replaced it).
        if [[ -f $PID_FILE && $(<"$PID_FILE") == "warren-stack $launcher_pid" ]]; then
            rm -f "$PID_FILE"
        fi
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Gateways log in with their own least-privilege account (made by ensure-services.sh);
# it is listed in amqp.gateway_accounts, so the dispatcher believes the actor it sends.
GATEWAY_AMQP_URL='amqp://warren-gateway:warren-gateway@127.0.0.1:5672/%2f'
stack_args=(--profile "$profile" --config "$CONFIG" --secret-from-config --prefix warren
    --keep-data --dispatchers 1 --gateways 2 --logs "$LOG_DIR"
    --gateway-env "WARREN__AMQP__URL=$GATEWAY_AMQP_URL")
# Each gateway's operations endpoints (/readyz, /metrics, /stats) on a loopback port
# of their own; the public ports serve only /ws and the web client.
for i in 0 1; do
    stack_args+=(--gateway-id "${GATEWAY_IDS[i]}" --gateway-listen "127.0.0.1:${GATEWAY_PORTS[i]}"
        --gateway-ops-listen "127.0.0.1:${OPS_PORTS[i]}")
done

# The stack gets a session of its own, so that a detached stack survives the
# terminal, and Ctrl-C reaches only this script (which then stops it).
launcher=()
have setsid && launcher=(setsid)
: >"$STACK_JSON"
: >"$LOG_DIR/warren-stack.log"
"${launcher[@]}" "$bin_dir/warren-stack" "${stack_args[@]}" \
    </dev/null >"$STACK_JSON" 2>>"$LOG_DIR/warren-stack.log" &
launcher_pid=$!
printf 'warren-stack %s\n' "$launcher_pid" >"$PID_FILE"
log "started warren-stack (pid $launcher_pid, log $LOG_DIR/warren-stack.log)"

deadline=$((SECONDS + READY_WAIT_S * 3))
until [[ -s $STACK_JSON ]]; do
    if ! alive "$launcher_pid"; then
        tail -n 20 "$LOG_DIR/warren-stack.log" >&2 || true
        die "the stack did not start; see $LOG_DIR/"
    fi
    ((SECONDS < deadline)) || die "not ready within $((READY_WAIT_S * 3))s; see $LOG_DIR/"
    sleep 0.5
done

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
  Admin CLI:                $bin_dir/warren-admin --config deploy/local.toml rooms  (docs/ADMIN.md)
  Logs:                     $LOG_DIR/ (warren-stack.log, warren-d0.log, warren-gw0.log, warren-gw1.log)

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
# Stay here until a signal arrives (the traps then stop the stack) or the
# launcher exits by itself (a service exited: it says which).
rc=0
wait "$launcher_pid" || rc=$?
tail -n 5 "$LOG_DIR/warren-stack.log" >&2 || true
die "the stack stopped by itself (status $rc); see $LOG_DIR/"
