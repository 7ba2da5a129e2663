#!/usr/bin/env bash
# A local Redis Cluster for trying and testing Warren on one: six redis-server
# processes from the Debian package on 127.0.0.1 (three masters, each with a
# replica), on their own ports and in their own directory, persisting nothing.
# The machine's own Redis (6379) is not touched.
#
# Usage:
#   scripts/redis-cluster.sh start  [--dir DIR] [--port BASE]
#   scripts/redis-cluster.sh stop   [--dir DIR] [--port BASE]
#   scripts/redis-cluster.sh status [--dir DIR] [--port BASE]
#
#   --dir DIR    where the nodes keep nodes.conf, pid file and log, one
#                directory per port (default /tmp/warren-redis-cluster)
#   --port BASE  the nodes listen on BASE .. BASE+5 (default 7101); Redis also
#                uses BASE+10000 .. BASE+10005 for the cluster bus
#
# start creates the cluster (redis-cli --cluster create, one replica per
# master), waits until every node reports cluster_state:ok and every master
# has its replica in sync, and prints the seed URLs, comma-separated, for
# WARREN__REDIS__CLUSTER_NODES. A cluster already running there is left as it
# is (its seeds are printed again). cluster-node-timeout is 2000 ms, so a
# replica takes over a few seconds after its master stops.
#
# stop shuts every node down without saving and removes DIR; stopping what
# does not run is not an error. status says which nodes run and their role;
# it exits 0 when the whole cluster is up, 3 when nothing runs, 1 otherwise.
#
# redis-server and redis-cli come from the Debian package redis-server,
# installed with apt-get when missing (as scripts/ensure-services.sh does).
set -euo pipefail

readonly NODES=6
readonly NODE_TIMEOUT_MS=2000
readonly READY_WAIT_S=60
readonly STOP_WAIT_S=15
# Marks DIR as made by this script: stop removes only such a directory.
readonly MARKER=.warren-redis-cluster

SCRIPT_NAME=redis-cluster
# shellcheck source=scripts/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

dir=/tmp/warren-redis-cluster
base=7101
action=""
while (($#)); do
    case $1 in
    start | stop | status) action=$1 ;;
    --dir)
        (($# >= 2)) || die "--dir needs a directory"
        dir=$2
        shift
        ;;
    --port)
        (($# >= 2)) || die "--port needs a port number"
        base=$2
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
[[ -n $action ]] || die "say start, stop or status (see --help)"
if ! [[ $base =~ ^[0-9]+$ ]] || ((base < 1024 || base + NODES - 1 + 10000 > 65535)); then
    die "--port $base: the nodes need BASE..BASE+5 and BASE+10000..BASE+10005 below 65536"
fi
[[ -n $dir && $dir != / ]] || die "--dir must name a directory of its own"

ports=()
for ((i = 0; i < NODES; i++)); do
    ports+=($((base + i)))
done

cli() {
    local port=$1
    shift
    timeout 10 redis-cli -h 127.0.0.1 -p "$port" "$@"
}

# The value of FIELD in the output of `redis-cli -p PORT CLUSTER INFO` (or INFO
# SECTION when given), empty when the node does not answer.
info_field() {
    local port=$1 field=$2
    shift 2
    local out
    out=$(cli "$port" "$@" 2>/dev/null) || return 0
    out=$(printf '%s\n' "$out" | tr -d '\r' | sed -n "s/^$field://p")
    printf '%s' "$out"
}

answers() { [[ $(cli "$1" ping 2>/dev/null) == PONG ]]; }

# The pid in the node's pid file, when that process still runs redis-server.
node_pid() {
    local file=$dir/$1/redis.pid pid
    [[ -r $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r /proc/$pid/comm && $(<"/proc/$pid/comm") != redis-server* ]]; then
        return 1 # the pid was reused
    fi
    printf '%s' "$pid"
}

seeds() {
    local out=() port
    for port in "${ports[@]}"; do
        out+=("redis://127.0.0.1:$port")
    done
    (
        IFS=,
        printf '%s\n' "${out[*]}"
    )
}

# True when every node answers, reports cluster_state:ok and knows all six,
# and every master has a replica online.
cluster_ready() {
    local port role
    for port in "${ports[@]}"; do
        [[ $(info_field "$port" cluster_state cluster info) == ok ]] || return 1
        [[ $(info_field "$port" cluster_known_nodes cluster info) == "$NODES" ]] || return 1
        role=$(info_field "$port" role info replication)
        if [[ $role == master ]]; then
            cli "$port" info replication 2>/dev/null | grep -q '^slave0:.*state=online' || return 1
        fi
    done
}

# ---------------------------------------------------------------------------

ensure_installed() {
    if ! have redis-server || ! have redis-cli; then
        apt_install redis-server
        if ! have redis-server || ! have redis-cli; then
            die "redis-server was installed but is still missing"
        fi
    fi
}

start_node() {
    local port=$1 node_dir=$dir/$1
    mkdir -p "$node_dir"
    # No config file: Debian's /etc/redis/redis.conf belongs to the machine's Redis.
    redis-server \
        --port "$port" \
        --bind 127.0.0.1 \
        --daemonize yes \
        --dir "$node_dir" \
        --pidfile "$node_dir/redis.pid" \
        --logfile "$node_dir/redis.log" \
        --cluster-enabled yes \
        --cluster-config-file nodes.conf \
        --cluster-node-timeout "$NODE_TIMEOUT_MS" \
        --save "" \
        --appendonly no >&2
}

start() {
    ensure_installed
    local port running=0
    for port in "${ports[@]}"; do
        if node_pid "$port" >/dev/null; then
            running=$((running + 1))
        elif answers "$port"; then
            die "something else answers on 127.0.0.1:$port; choose other ports with --port"
        fi
    done
    if ((running == NODES)) && cluster_ready; then
        log "the cluster already runs in $dir"
        seeds
        return 0
    fi
    ((running == 0)) || die "$running of $NODES nodes run in $dir, not as a cluster: run '$0 stop --dir $dir --port $base' first"
    if [[ -e $dir && ! -e $dir/$MARKER ]]; then
        die "$dir exists and was not made by this script; choose another --dir"
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    : >"$dir/$MARKER"
    log "starting $NODES nodes on 127.0.0.1:${ports[0]}..${ports[-1]} in $dir"
    for port in "${ports[@]}"; do
        start_node "$port"
    done
    local i
    for port in "${ports[@]}"; do
        for ((i = 0; i < 50; i++)); do
            answers "$port" && break
            sleep 0.1
        done
        answers "$port" || die "the node on $port did not start; see $dir/$port/redis.log"
    done
    local addrs=()
    for port in "${ports[@]}"; do
        addrs+=("127.0.0.1:$port")
    done
    log "creating the cluster (3 masters, 1 replica each)"
    timeout 60 redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >&2 ||
        die "redis-cli --cluster create failed; see $dir/*/redis.log"
    local deadline=$((SECONDS + READY_WAIT_S))
    until cluster_ready; do
        ((SECONDS < deadline)) || die "the cluster is not ready after ${READY_WAIT_S} s; see '$0 status' and $dir/*/redis.log"
        sleep 0.5
    done
    log "cluster ready"
    seeds
}

# Asks the node to shut down without saving; prints its pid when it ran.
shutdown_node() {
    local port=$1 pid
    pid=$(node_pid "$port") || return 0
    # NOW: no waiting for replicas to catch up, everything is about to go.
    cli "$port" shutdown nosave now >/dev/null 2>&1 || cli "$port" shutdown nosave >/dev/null 2>&1 || true
    printf '%s\n' "$pid"
}

stop() {
    local port pid pids=()
    for port in "${ports[@]}"; do
        pid=$(shutdown_node "$port")
        [[ -z $pid ]] || pids+=("$pid")
    done
    local deadline=$((SECONDS + STOP_WAIT_S))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            warn "redis-server pid $pid did not stop; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    if [[ -e $dir/$MARKER ]]; then
        rm -rf "$dir"
        log "stopped; removed $dir"
    elif [[ -e $dir ]]; then
        warn "$dir was not made by this script; left in place"
    else
        log "nothing runs in $dir"
    fi
}

status() {
    local port pid up=0 role state
    for port in "${ports[@]}"; do
        if pid=$(node_pid "$port"); then
            up=$((up + 1))
            role=$(info_field "$port" role info replication)
            state=$(info_field "$port" cluster_state cluster info)
            printf '127.0.0.1:%s pid %s, %s, cluster_state %s\n' "$port" "$pid" "${role:-not answering}" "${state:-unknown}"
        else
            printf '127.0.0.1:%s not running\n' "$port"
        fi
    done
    if ((up == 0)); then
        log "nothing runs in $dir"
        return 3
    fi
    if ((up == NODES)) && cluster_ready; then
        log "the cluster is up: $(seeds)"
        return 0
    fi
    log "$up of $NODES nodes run, and the cluster is not fully up"
    return 1
}

"$action"
