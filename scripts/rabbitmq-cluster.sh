#!/usr/bin/env bash
# Runs a 3-node RabbitMQ cluster on this machine from the Debian package
# (rabbitmq-server 3.10), beside the machine's default node (rabbit@localhost on
# 127.0.0.1:5672), which it never touches: for the cluster tests, and for trying
# Warren on a cluster (WARREN__AMQP__URLS, WARREN__AMQP__COMMAND_QUEUE_TYPE=quorum).
#
# Each node has its own name, ports, configuration, data and log under DIR, and
# listens on 127.0.0.1 only (AMQP, management, Erlang distribution):
#
#   node  name                      AMQP     management  distribution
#   1     warren-c1-BASE@localhost  BASE     BASE+10000  BASE+20000
#   2     warren-c2-BASE@localhost  BASE+1   BASE+10001  BASE+20001
#   3     warren-c3-BASE@localhost  BASE+2   BASE+10002  BASE+20002
#
# With the default BASE 5681: AMQP 5681-5683, management 15681-15683 (guest:guest,
# e.g. /api/consumers), distribution 25681-25683. The base port is part of the node
# names, so clusters on different bases can run side by side. The clients log in as
# `guest`, which RabbitMQ admits from loopback only; that is all this cluster serves.
#
# The package runs every node and rabbitmqctl as the `rabbitmq` account, so the
# nodes share its Erlang cookie (/var/lib/rabbitmq/.erlang.cookie) with the default
# node, and `rabbitmqctl -n NODE ...` works on them as on the default node. Nothing
# in /etc/rabbitmq applies to them: each has its own rabbitmq.conf,
# advanced.config, rabbitmq-env.conf and enabled_plugins in DIR/nodeN.
#
# Commands:
#   start          starts the nodes that do not run (all at once; a new node 2 or 3
#                  then joins node 1: stop_app, join_cluster, start_app), waits until
#                  node 1 sees all three running, and prints the AMQP URLs,
#                  comma-separated, as the last line of stdout. When the cluster
#                  already runs it only checks, and prints them. About 35 s here.
#   stop           stops every node and removes DIR; nothing running is success.
#   status         one line per node on stdout (running, app stopped, booting,
#                  down), then what a running node sees of the cluster.
#   stop-node N [--app|--kill]
#                  stops node N (1-3): the whole node (rabbitmqctl stop), only its
#                  RabbitMQ application (--app: stop_app, its Erlang VM stays up), or
#                  kills its Erlang VM with SIGKILL (--kill: a crash).
#   start-node N   starts node N again (start_app, or the whole node, which rejoins
#                  the cluster by itself), waits until it runs in the cluster, and
#                  prints its AMQP URL.
#
# Options:
#   --dir DIR      where the nodes live (default /tmp/warren-rabbitmq-cluster)
#   --port BASE    the base port (default 5681); the other commands read it from DIR
#
# A node stopped with stop-node waits for its peers' data when it starts again:
# start it while at least one other node runs. Every wait is bounded; on a timeout
# the script says what it waited for and prints the end of the node's log. Progress
# goes to stderr. Needs rabbitmq-server (scripts/ensure-services.sh installs it), and
# root or sudo, as rabbitmqctl does. Not meant to run twice at once on one DIR.
#
# Exit status: 0 on success (status: all three nodes run), 1 when status finds a
# node not running, 2 on an error.
#
# Usage: scripts/rabbitmq-cluster.sh [--dir DIR] [--port BASE] start|stop|status
#        scripts/rabbitmq-cluster.sh [--dir DIR] [--port BASE] stop-node N [--app|--kill]
#        scripts/rabbitmq-cluster.sh [--dir DIR] [--port BASE] start-node N
set -euo pipefail

# rabbitmqctl & co. live in /usr/sbin, which is not on a normal user's PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

readonly NODES=(1 2 3)
readonly DEFAULT_DIR=/tmp/warren-rabbitmq-cluster
readonly DEFAULT_BASE=5681
# Time limits, in seconds.
readonly BOOT_WAIT_S=120   # a node's Erlang VM and RabbitMQ application to start
readonly CTL_WAIT_S=60     # one rabbitmqctl command (stop_app, join_cluster, ...)
readonly CLUSTER_WAIT_S=60 # the cluster to list a started node as running
readonly STOP_WAIT_S=60    # a node to stop, before SIGKILL

SCRIPT_NAME=rabbitmq-cluster
DIE_STATUS=2
# shellcheck source=scripts/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

dir=$DEFAULT_DIR
base=""
command=""
node_arg=""
stop_how=node
while (($#)); do
    arg=$1
    shift
    case $arg in
    --dir)
        (($#)) || die "--dir needs a directory"
        dir=$1
        shift
        ;;
    --port)
        (($#)) || die "--port needs a port number"
        base=$1
        shift
        ;;
    --app) stop_how=app ;;
    --kill) stop_how="kill" ;;
    -h | --help)
        usage
        exit 0
        ;;
    start | stop | status | stop-node | start-node)
        [[ -z $command ]] || die "one command at a time ('$command', then '$arg')"
        command=$arg
        ;;
    [0-9]*) node_arg=$arg ;;
    *) die "unknown argument '$arg' (try --help)" ;;
    esac
done
[[ -n $command ]] || die "no command: start, stop, status, stop-node N or start-node N (try --help)"
case $command in
stop-node | start-node)
    [[ $node_arg =~ ^[123]$ ]] || die "$command needs a node number: 1, 2 or 3"
    ;;
*) [[ -z $node_arg ]] || die "$command takes no node number" ;;
esac
[[ $stop_how == node || $command == stop-node ]] || die "--app and --kill go with stop-node"
[[ $dir == /* ]] || dir=$PWD/$dir
dir=${dir%/}
[[ -n $dir && $dir != / ]] || die "--dir must not be /"

# DIR/cluster.env records the base port, so that every later command finds the nodes
# that `start` made. It also marks DIR as ours: `stop` removes only such a directory.
readonly STATE_FILE=$dir/cluster.env
if [[ -f $STATE_FILE ]]; then
    stored=$(sed -n 's/^BASE=\([0-9]*\)$/\1/p' "$STATE_FILE")
    [[ -n $stored ]] || die "$STATE_FILE has no BASE=; remove $dir by hand"
    if [[ -n $base && $base != "$stored" ]]; then
        die "$dir holds a cluster on base port $stored, not $base; stop it first or use another --dir"
    fi
    base=$stored
fi
base=${base:-$DEFAULT_BASE}
if ! [[ $base =~ ^[0-9]+$ ]] || ((base < 1024 || base + 20002 > 65535)); then
    die "--port must be a number from 1024 to 45533 (BASE+20002 is a port too), not '$base'"
fi

node_name() { printf 'warren-c%s-%s@localhost' "$1" "$base"; }
amqp_port() { printf '%s' $((base + $1 - 1)); }
mgmt_port() { printf '%s' $((base + 10000 + $1 - 1)); }
dist_port() { printf '%s' $((base + 20000 + $1 - 1)); }
node_dir() { printf '%s/node%s' "$dir" "$1"; }
amqp_url() { printf 'amqp://guest:guest@127.0.0.1:%s/%%2f' "$(amqp_port "$1")"; }
all_urls() {
    local n urls=()
    for n in "${NODES[@]}"; do
        urls+=("$(amqp_url "$n")")
    done
    local IFS=,
    printf '%s\n' "${urls[*]}"
}

# The package's programs, and the account its wrappers in /usr/sbin run them as.
readonly PKG_BIN=/usr/lib/rabbitmq/bin
rabbit_home=$(getent passwd rabbitmq | cut -d: -f6) || rabbit_home=""

# ctl LIMIT ARGS...: rabbitmqctl ARGS as the rabbitmq account, stopped after LIMIT
# seconds. Not through the wrapper in /usr/sbin where it can be helped: that one runs
# the tool with `su -c`, in a session of its own, which `timeout` cannot stop.
ctl() {
    local limit=$1
    shift
    if [[ -x $PKG_BIN/rabbitmqctl && -n $rabbit_home ]]; then
        as_root runuser -u rabbitmq -- env HOME="$rabbit_home" \
            timeout -k 5 "$limit" "$PKG_BIN/rabbitmqctl" "$@"
    else
        as_root timeout -k 5 "$limit" rabbitmqctl "$@"
    fi
}

# quiet_ctl LIMIT ARGS...: ctl, keeping its output unless it fails (join_cluster
# logs harmless errors about the joining node's stopped application).
quiet_ctl() {
    local out rc=0
    out=$(ctl "$@" 2>&1) || rc=$?
    ((rc == 0)) || printf '%s\n' "$out" >&2
    return "$rc"
}

# True when something accepts TCP connections on 127.0.0.1:port.
port_open() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# Prints the state of node N: running, app-stopped, booting or down.
node_state() {
    local out
    if ! out=$(ctl 30 -q -n "$(node_name "$1")" eval '{rabbit:is_booting(), rabbit:is_running()}.' 2>/dev/null); then
        echo down
        return 0
    fi
    case $out in
    *'{false,true}'*) echo running ;;
    *'{true,'*) echo booting ;;
    *'{false,false}'*) echo app-stopped ;;
    *) echo down ;;
    esac
}

# Prints the nodes that node N sees running in its cluster, one per line.
running_nodes_seen_by() {
    local out re='"running_nodes":\[([^]]*)\]'
    out=$(ctl 30 -q -n "$(node_name "$1")" cluster_status --formatter json 2>/dev/null) || return 1
    [[ $out =~ $re ]] || return 1
    local list=${BASH_REMATCH[1]//\"/}
    tr ',' '\n' <<<"$list" | sed '/^$/d'
}

# The process id of node N's Erlang VM, if it runs: from its pid file, checked
# against the process's environment (the node name is not on its command line), so
# that a reused pid is never taken for it.
node_pid() {
    local pid
    pid=$(as_root cat "$(node_dir "$1")/pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    # shellcheck disable=SC2016 # expanded by the inner sh
    as_root sh -c 'tr "\0" "\n" <"/proc/$1/environ"' _ "$pid" 2>/dev/null |
        grep -qxF "RABBITMQ_NODENAME=$(node_name "$1")" || return 1
    printf '%s\n' "$pid"
}

log_tail() {
    local file
    file="$(node_dir "$1")/log/$(node_name "$1").log"
    if as_root test -r "$file"; then
        printf '%s: last lines of %s:\n' "$SCRIPT_NAME" "$file" >&2
        as_root tail -n 30 "$file" | sed 's/^/    /' >&2
    else
        printf '%s: no log at %s\n' "$SCRIPT_NAME" "$file" >&2
    fi
}

# fail_node N MESSAGE: dies with MESSAGE after the end of node N's log.
fail_node() {
    log_tail "$1"
    die "$2"
}

# ---------------------------------------------------------------------------
# Files.
# ---------------------------------------------------------------------------
# put FILE: writes stdin to FILE (as root: DIR belongs to the rabbitmq account).
put() {
    # shellcheck disable=SC2016 # expanded by the inner sh
    as_root sh -c 'cat >"$1"' _ "$1"
}

prepare_dir() {
    if as_root test -e "$dir" && ! as_root test -f "$STATE_FILE"; then
        if [[ -n $(as_root find "$dir" -mindepth 1 -maxdepth 1 -print -quit) ]]; then
            die "$dir exists and is not a cluster directory of this script (no cluster.env); use another --dir"
        fi
    fi
    as_root mkdir -p "$dir"
    printf 'BASE=%s\n' "$base" | put "$STATE_FILE"
    local n nd
    for n in "${NODES[@]}"; do
        nd=$(node_dir "$n")
        as_root mkdir -p "$nd/mnesia" "$nd/log"
        put "$nd/rabbitmq.conf" <<EOF
# $(node_name "$n"), written by scripts/rabbitmq-cluster.sh: loopback only.
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$n")
management.tcp.ip = 127.0.0.1
management.tcp.port = $(mgmt_port "$n")
EOF
        echo '[].' | put "$nd/advanced.config"
        echo '[rabbitmq_management].' | put "$nd/enabled_plugins"
        # Instead of /etc/rabbitmq/rabbitmq-env.conf (which names the default node):
        # epmd and the Erlang distribution on loopback only.
        put "$nd/rabbitmq-env.conf" <<'EOF'
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
    done
    if id rabbitmq >/dev/null 2>&1; then
        as_root chown -R rabbitmq:rabbitmq "$dir"
        as_root runuser -u rabbitmq -- test -w "$dir/node1/mnesia" ||
            die "the rabbitmq account cannot write to $dir (a parent directory closed to it?); use another --dir"
    fi
}

# ---------------------------------------------------------------------------
# Nodes.
# ---------------------------------------------------------------------------
# Starts node N's Erlang VM in the background; wait_booted waits for it.
launch_node() {
    local n=$1 nd port
    nd=$(node_dir "$n")
    for port in "$(amqp_port "$n")" "$(mgmt_port "$n")" "$(dist_port "$n")"; do
        if port_open "$port"; then
            die "port $port (node $n) is taken by another program; choose another --port"
        fi
    done
    log "starting $(node_name "$n") (AMQP 127.0.0.1:$(amqp_port "$n"), management :$(mgmt_port "$n"))"
    as_root env RABBITMQ_NODENAME="$(node_name "$n")" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
        RABBITMQ_DIST_PORT="$(dist_port "$n")" \
        RABBITMQ_CONFIG_FILE="$nd/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$nd/advanced.config" \
        RABBITMQ_CONF_ENV_FILE="$nd/rabbitmq-env.conf" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$nd/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$nd/mnesia" RABBITMQ_LOG_BASE="$nd/log" \
        RABBITMQ_PID_FILE="$nd/pid" \
        rabbitmq-server -detached >&2 || fail_node "$n" "rabbitmq-server -detached failed for node $n"
}

# True while a process of node N runs: its Erlang VM, or the scripts launching it
# (all carry its RABBITMQ_NODENAME; the VM's command line does not name it).
node_process_exists() {
    # shellcheck disable=SC2016 # expanded by the inner sh
    as_root sh -c 'grep -qszxF "$1" /proc/[0-9]*/environ' _ "RABBITMQ_NODENAME=$(node_name "$1")"
}

# Waits until node N's RabbitMQ application runs: first for its VM to write the pid
# file (early in the boot), giving up as soon as no process of the node is left, then
# for the boot to end (await_startup gives up when the VM exits).
wait_booted() {
    local n=$1 deadline=$((SECONDS + BOOT_WAIT_S)) left
    until node_pid "$n" >/dev/null; do
        if ! node_process_exists "$n"; then
            sleep 1
            node_pid "$n" >/dev/null && break
            fail_node "$n" "the Erlang VM of node $n ($(node_name "$n")) exited while booting"
        fi
        ((SECONDS < deadline)) || fail_node "$n" "node $n ($(node_name "$n")) wrote no pid file within ${BOOT_WAIT_S}s"
        sleep 0.5
    done
    left=$((deadline - SECONDS))
    ((left >= 10)) || left=10
    if ! ctl $((left + 10)) -q -n "$(node_name "$n")" await_startup --timeout "$left" >/dev/null 2>&1; then
        fail_node "$n" "node $n ($(node_name "$n")) did not boot within ${BOOT_WAIT_S}s"
    fi
}

# Node 2 or 3, new: becomes a member of node 1's cluster.
join_node() {
    local n=$1 name
    name=$(node_name "$n")
    log "$name joins $(node_name 1)"
    quiet_ctl "$CTL_WAIT_S" -q -n "$name" stop_app || fail_node "$n" "rabbitmqctl -n $name stop_app failed"
    quiet_ctl "$CTL_WAIT_S" -q -n "$name" join_cluster "$(node_name 1)" ||
        fail_node "$n" "rabbitmqctl -n $name join_cluster $(node_name 1) failed"
    quiet_ctl "$CTL_WAIT_S" -q -n "$name" start_app || fail_node "$n" "rabbitmqctl -n $name start_app failed"
    as_root touch "$(node_dir "$n")/joined"
}

# wait_running_in_cluster VIEWER N...: waits until node VIEWER lists nodes N... as
# running members of its cluster.
wait_running_in_cluster() {
    local viewer=$1 deadline=$((SECONDS + CLUSTER_WAIT_S)) seen n missing
    shift
    while :; do
        missing=()
        seen=$(running_nodes_seen_by "$viewer") || seen=""
        for n in "$@"; do
            grep -qxF "$(node_name "$n")" <<<"$seen" || missing+=("$n")
        done
        ((${#missing[@]} == 0)) && return 0
        if ((SECONDS >= deadline)); then
            log "$(node_name "$viewer") sees running: ${seen//$'\n'/ }"
            fail_node "${missing[0]}" \
                "$(node_name "$viewer") did not list node(s) ${missing[*]} as running within ${CLUSTER_WAIT_S}s"
        fi
        sleep 1
    done
}

# Stops node N: the whole node, its application only (app) or its VM by SIGKILL (kill).
stop_node() {
    local n=$1 how=${2:-node} name pid
    name=$(node_name "$n")
    case $how in
    app)
        log "stopping the application of $name (stop_app)"
        quiet_ctl "$CTL_WAIT_S" -q -n "$name" stop_app || die "rabbitmqctl -n $name stop_app failed"
        return 0
        ;;
    kill)
        pid=$(node_pid "$n") || die "node $n ($name) has no running Erlang VM to kill"
        log "killing $name (SIGKILL to pid $pid)"
        as_root kill -KILL "$pid"
        timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || die "pid $pid ($name) survived SIGKILL"
        return 0
        ;;
    esac
    # rabbitmqctl stop with the pid file returns once the VM has exited (on a node
    # that does not answer, it would wait for the file until its time limit).
    if [[ $(node_state "$n") != down ]]; then
        ctl "$STOP_WAIT_S" -q -n "$name" stop "$(node_dir "$n")/pid" >/dev/null 2>&1 || true
    fi
    # It did not answer, or is still there: stop its VM by pid.
    pid=$(node_pid "$n") || return 0
    log "$name did not stop through rabbitmqctl; SIGTERM to pid $pid"
    as_root kill -TERM "$pid" 2>/dev/null || true
    if ! timeout "$STOP_WAIT_S" tail --pid="$pid" -f /dev/null 2>/dev/null; then
        warn "$name still runs after ${STOP_WAIT_S}s; SIGKILL"
        as_root kill -KILL "$pid" 2>/dev/null || true
        timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || die "pid $pid ($name) survived SIGKILL"
    fi
}

# ---------------------------------------------------------------------------
# Commands.
# ---------------------------------------------------------------------------
need_rabbitmq() {
    if ! have rabbitmq-server || ! have rabbitmqctl; then
        die "rabbitmq-server is not installed (scripts/ensure-services.sh installs it)"
    fi
}

cmd_start() {
    need_rabbitmq
    local n state started=() to_join=()
    local -A states
    for n in "${NODES[@]}"; do
        states[$n]=$(node_state "$n")
    done
    if [[ ${states[1]} == running && ${states[2]} == running && ${states[3]} == running ]] &&
        [[ $(running_nodes_seen_by 1 | grep -c "^warren-c[123]-$base@") == 3 ]]; then
        log "already running: $(node_name 1), $(node_name 2), $(node_name 3)"
        all_urls
        return 0
    fi
    prepare_dir
    # Every node that is down boots at the same time (the boot is most of the wait);
    # nodes that were members already find each other again on their own.
    for n in "${NODES[@]}"; do
        case ${states[$n]} in
        down)
            launch_node "$n"
            started+=("$n")
            ;;
        app-stopped)
            log "starting the application of $(node_name "$n") (start_app)"
            quiet_ctl "$CTL_WAIT_S" -q -n "$(node_name "$n")" start_app ||
                fail_node "$n" "rabbitmqctl -n $(node_name "$n") start_app failed"
            ;;
        esac
    done
    for n in "${NODES[@]}"; do
        [[ ${states[$n]} == running ]] || wait_booted "$n"
    done
    ((${#started[@]})) && log "booted: ${started[*]/#/node } (${SECONDS}s)"
    for n in 2 3; do
        as_root test -e "$(node_dir "$n")/joined" || to_join+=("$n")
    done
    for n in "${to_join[@]}"; do
        join_node "$n"
    done
    as_root touch "$(node_dir 1)/joined"
    wait_running_in_cluster 1 "${NODES[@]}"
    log "cluster of $(node_name 1), $(node_name 2), $(node_name 3) is running (${SECONDS}s)"
    all_urls
}

cmd_stop() {
    local n pids=() rc=0 pid
    if have rabbitmqctl; then
        # In parallel: each stop waits for its VM to exit.
        for n in "${NODES[@]}"; do
            stop_node "$n" node &
            pids+=("$!")
        done
        for pid in "${pids[@]}"; do
            wait "$pid" || rc=1
        done
    fi
    ((rc == 0)) || die "not every node stopped; $dir is left in place"
    if as_root test -f "$STATE_FILE"; then
        as_root rm -rf "$dir"
        log "stopped; removed $dir"
    elif as_root test -e "$dir"; then
        warn "$dir is not a cluster directory of this script (no cluster.env); left in place"
    else
        log "nothing left running (base port $base)"
    fi
}

cmd_status() {
    local n state all=1 seen viewer=""
    need_rabbitmq
    for n in "${NODES[@]}"; do
        state=$(node_state "$n")
        [[ $state == running ]] || all=0
        [[ $state == running && -z $viewer ]] && viewer=$n
        printf 'node %s %s amqp=127.0.0.1:%s management=127.0.0.1:%s %s\n' \
            "$n" "$(node_name "$n")" "$(amqp_port "$n")" "$(mgmt_port "$n")" "${state/-/ }"
    done
    if [[ -n $viewer ]] && seen=$(running_nodes_seen_by "$viewer"); then
        printf 'cluster: %s sees running: %s\n' "$(node_name "$viewer")" "$(tr '\n' ' ' <<<"$seen" | sed 's/ $//')"
    else
        printf 'cluster: no node runs\n'
    fi
    ((all))
}

cmd_stop_node() {
    need_rabbitmq
    as_root test -f "$STATE_FILE" || die "no cluster in $dir (start it first)"
    stop_node "$node_arg" "$stop_how"
    log "node $node_arg ($(node_name "$node_arg")) stopped (${stop_how/node/whole node})"
}

cmd_start_node() {
    local n=$node_arg state other viewer=""
    need_rabbitmq
    as_root test -f "$STATE_FILE" || die "no cluster in $dir (start it first)"
    state=$(node_state "$n")
    case $state in
    running) log "$(node_name "$n") already runs" ;;
    app-stopped)
        log "starting the application of $(node_name "$n") (start_app)"
        quiet_ctl "$CTL_WAIT_S" -q -n "$(node_name "$n")" start_app ||
            fail_node "$n" "rabbitmqctl -n $(node_name "$n") start_app failed"
        ;;
    booting) wait_booted "$n" ;;
    down)
        launch_node "$n"
        wait_booted "$n"
        ;;
    esac
    if ! as_root test -e "$(node_dir "$n")/joined"; then
        [[ $(node_state 1) == running ]] || die "node $n never joined node 1, and node 1 does not run"
        join_node "$n"
    fi
    # The cluster as another running node sees it, or as node N does when it is alone.
    for other in "${NODES[@]}"; do
        if [[ $other != "$n" && $(node_state "$other") == running ]]; then
            viewer=$other
            break
        fi
    done
    wait_running_in_cluster "${viewer:-$n}" "$n"
    log "node $n ($(node_name "$n")) runs in the cluster"
    amqp_url "$n"
    echo
}

main() {
    case $command in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    stop-node) cmd_stop_node ;;
    start-node) cmd_start_node ;;
    esac
}

# On one line, so that bash has read all it runs before it runs it (an edit of this
# file while a run is under way cannot change that run).
main "$@"; exit
