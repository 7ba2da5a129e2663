#!/usr/bin/env bash
# Makes sure the services Warren needs are installed and answering on this
# machine: Redis on 127.0.0.1:6379 and RabbitMQ on 127.0.0.1:5672 (with the
# management plugin on 127.0.0.1:15672, and the `warren-gateway`, `warren-bot`
# and `warren-admin-cli` accounts with least-privilege permissions, topic
# permissions on the events exchange included).
#
# Idempotent: when everything is already up it only checks, and returns
# quickly. Installs missing packages with apt-get, starts stopped services
# (through the init system when one is usable, directly otherwise) and waits
# for them, within fixed time limits. Progress goes to stderr.
#
# Exit status: 0 when both RabbitMQ and Redis answer, non-zero otherwise.
set -euo pipefail

# rabbitmqctl & co. live in /usr/sbin, which is not on a normal user's PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

readonly REDIS_HOST=127.0.0.1
readonly REDIS_PORT=6379
readonly REDIS_WAIT_S=30

readonly AMQP_HOST=127.0.0.1
readonly AMQP_PORT=5672
readonly RABBIT_WAIT_S=90

readonly MGMT_URL="http://127.0.0.1:15672"
readonly MGMT_AUTH="guest:guest"
readonly MGMT_WAIT_S=60

# RabbitMQ accounts of the local stack (amqp.prefix "warren"), each with the
# least privilege its role needs, in two layers (docs/BOTS.md, docs/OPERATIONS.md):
# - configure/write/read: regular expressions over exchange and queue names on
#   vhost "/" (configure = declare/delete, write = publish to an exchange or bind
#   a queue, read = consume a queue or bind from an exchange);
# - topic permissions on the events exchange: write is matched against the
#   routing key of each publish, read against the key of each queue.bind, as
#   written (a binding "room.*.message" must match literally, so a pattern whose
#   room part admits no "*" or "#" admits no wildcard). An account without topic
#   permissions on an exchange may use any key there, so each gets one.
# The patterns are the contract's (proto/src/accounts.rs), which the tests'
# accounts use with a test prefix; tests/tests/bots.rs proves them against a
# real broker, and tests/tests/deploy_agreement/ (run by
# scripts/validate-deploy.sh) checks that these lines and
# deploy/rabbitmq/definitions.json hold exactly them.
readonly VHOST=/
readonly VHOST_URL=%2F
readonly PREFIX=warren
readonly PREFIX_RE='warren' # amqp.prefix with regex characters escaped
readonly EVENTS_EXCHANGE="${PREFIX}.events"

# The gateways' account. A gateway declares nothing shared: it checks with
# passive declares (which need no permission) that the dispatchers created the
# topology, then declares, binds, consumes and at start deletes its own queue
# <p>.gw.<id>, and publishes commands to <p>.commands. It binds room.<room>.#
# for its clients' rooms (dm rooms are dm~a~b) and its own gw.<id>, never "#"
# or user.*. It may not read command queues or dead letters, delete or declare
# a shared exchange, publish events, use the default exchange, or touch bots'
# queues.
readonly GW_USER=warren-gateway
readonly GW_PASS=warren-gateway
readonly GW_CONFIGURE="^${PREFIX_RE}\.gw\..+\$"
readonly GW_WRITE="^${PREFIX_RE}\.(commands|gw\..+)\$"
readonly GW_READ="^${PREFIX_RE}\.(events|gw\..+)\$"
readonly GW_TOPIC_WRITE='^$'
readonly GW_TOPIC_READ='^(room\.[A-Za-z0-9_~-]+\.(#|[a-z]+)|gw\.[A-Za-z0-9_-]+)$'

# The bots' account for local development (warren-modbot and
# bots/python/echo_bot.py use it by default, as the bots "modbot" and "echo").
# A bot declares and consumes its own queues <p>.bot.<name>.*, binds them to
# <p>.events with the keys it is granted, publishes commands to <p>.commands,
# and reads nothing else. Its grant, the topic read pattern: message, member
# and moderation events of any room except dm rooms (room ids are [a-z0-9_-];
# a dm room is dm~a~b in keys), one room per binding (no "*" or "#"); never
# user.*, gw.* or a dm room. Its login is its user id in the rooms, and it
# must never be listed in amqp.gateway_accounts (those may speak for any
# user). In production give each bot its own account, restricted to its own
# queues ^<p>\.bot\.<name>\..+$ and granted its rooms, e.g.
# ^room\.(general|support)\.(message|member|moderation)$ (docs/BOTS.md).
readonly BOT_USER=warren-bot
readonly BOT_PASS=warren-bot
readonly BOT_OWN="${PREFIX_RE}\.bot\.(modbot|echo)\..+"
readonly BOT_CONFIGURE="^${BOT_OWN}\$"
readonly BOT_WRITE="^(${BOT_OWN}|${PREFIX_RE}\.commands)\$"
readonly BOT_READ="^(${BOT_OWN}|${PREFIX_RE}\.events)\$"
readonly BOT_TOPIC_WRITE='^$'
readonly BOT_TOPIC_READ='^room\.[a-z0-9_-]+\.(message|member|moderation)$'

# The admin CLI (warren-admin, docs/ADMIN.md) is a bot: its own queues
# <p>.bot.admin.*, commands, and no event key (it binds nothing). It acts as a
# global admin only where the dispatchers list it in dispatcher.admin_bots.
readonly CLI_USER=warren-admin-cli
readonly CLI_PASS=warren-admin-cli
readonly CLI_OWN="${PREFIX_RE}\.bot\.admin\..+"
readonly CLI_CONFIGURE="^${CLI_OWN}\$"
readonly CLI_WRITE="^(${CLI_OWN}|${PREFIX_RE}\.commands)\$"
readonly CLI_READ="^(${CLI_OWN}|${PREFIX_RE}\.events)\$"
readonly CLI_TOPIC_WRITE='^$'
readonly CLI_TOPIC_READ='^$'

SCRIPT_NAME=ensure-services
# shellcheck source=scripts/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

# Runs a command (as root) keeping its output unless it fails.
quiet_root() {
    local out
    if out=$(as_root "$@" 2>&1); then
        return 0
    else
        local rc=$?
        printf '%s\n' "$out" >&2
        return "$rc"
    fi
}

# True when something accepts TCP connections on host:port.
tcp_open() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# True when an init system is running that can start the named service.
init_usable() {
    local svc=$1 pid1=""
    if [[ -d /run/systemd/system ]]; then
        return 0
    fi
    [[ -r /proc/1/comm ]] && pid1=$(</proc/1/comm)
    [[ $pid1 == init && -x /etc/init.d/$svc ]]
}

# Starts a service through the init system; non-zero if that did not work.
init_start() {
    local svc=$1
    if have service; then
        as_root timeout 120 service "$svc" start >&2
    elif [[ -d /run/systemd/system ]] && have systemctl; then
        as_root timeout 120 systemctl start "$svc" >&2
    elif [[ -x /etc/init.d/$svc ]]; then
        as_root timeout 120 "/etc/init.d/$svc" start >&2
    else
        return 1
    fi
}

# ---------------------------------------------------------------------------
# HTTP (management API): curl, or python3 as a fallback.
# http_get URL USER:PASS prints the status code on the first line (000 when
# nothing answered) and the body after it.
# ---------------------------------------------------------------------------
http_client=""
if have curl; then
    http_client=curl
elif have python3; then
    http_client=python3
fi

http_get() {
    local url=$1 auth=$2
    case $http_client in
    curl)
        local out
        out=$(curl -s -m 5 -u "$auth" -w '\n%{http_code}' "$url" 2>/dev/null) || true
        # curl puts the status last; move it first.
        printf '%s\n%s\n' "${out##*$'\n'}" "${out%$'\n'*}"
        ;;
    python3)
        python3 - "$url" "$auth" <<'PY' 2>/dev/null || printf '000\n\n'
import base64, sys, urllib.error, urllib.request
url, auth = sys.argv[1], sys.argv[2]
req = urllib.request.Request(url)
req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
try:
    with urllib.request.urlopen(req, timeout=5) as resp:
        status, body = resp.status, resp.read()
except urllib.error.HTTPError as err:
    status, body = err.code, err.read()
except Exception:
    status, body = 0, b""
print("%03d" % status)
print(body.decode("utf-8", "replace"))
PY
        ;;
    *) printf '000\n\n' ;;
    esac
}

# Sets HTTP_STATUS and HTTP_BODY for a GET with the given credentials.
fetch() {
    local out
    out=$(http_get "$1" "$2")
    HTTP_STATUS=${out%%$'\n'*}
    HTTP_BODY=""
    if [[ $out == *$'\n'* ]]; then
        HTTP_BODY=${out#*$'\n'}
    fi
}

# Prints the JSON string value of a top-level key of a flat JSON object
# (enough for the management API's user and permission objects).
json_string() {
    local body=$1 key=$2 re val
    re="\"$key\":\"(([^\"\\\\]|\\\\.)*)\""
    [[ $body =~ $re ]] || return 1
    val=${BASH_REMATCH[1]}
    val=${val//\\\\/\\}
    val=${val//\\\"/\"}
    printf '%s' "$val"
}

# Prints the object of a JSON list of topic permissions (the management API's
# answer) whose "exchange" is the given one; nothing when there is none.
topic_entry() {
    local body=$1 exchange=$2 rest=$1 obj
    while [[ $rest =~ \{[^{}]*\} ]]; do
        obj=${BASH_REMATCH[0]}
        rest=${rest#*"$obj"}
        if [[ $(json_string "$obj" exchange) == "$exchange" ]]; then
            printf '%s' "$obj"
            return 0
        fi
    done
    return 0
}

# ---------------------------------------------------------------------------
# 1. Packages.
# ---------------------------------------------------------------------------
install_missing() {
    local pkgs=()
    if ! have rabbitmqctl || ! have rabbitmq-server; then
        pkgs+=(rabbitmq-server)
    fi
    if ! have redis-server; then
        pkgs+=(redis-server)
    fi
    [[ ${#pkgs[@]} -eq 0 ]] && return 0
    apt_install "${pkgs[@]}"
    hash -r
    if ! have rabbitmqctl || ! have rabbitmq-server; then
        die "rabbitmq-server was installed but rabbitmqctl is still missing"
    fi
    have redis-server || die "redis-server was installed but is still missing"
}

# ---------------------------------------------------------------------------
# 2. Redis.
# ---------------------------------------------------------------------------
# True when Redis answers PING with PONG; the reply is kept in REDIS_REPLY.
REDIS_REPLY=""
redis_ping() {
    local reply=""
    REDIS_REPLY=""
    if have redis-cli; then
        reply=$(timeout 5 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null) || true
    else
        # shellcheck disable=SC2016 # expanded by the inner bash
        reply=$(timeout 5 bash -c '
            exec 3<>"/dev/tcp/$1/$2" || exit 1
            printf "PING\r\n" >&3
            IFS= read -r line <&3 && printf "%s" "$line"' _ "$REDIS_HOST" "$REDIS_PORT" 2>/dev/null) || true
        reply=${reply#+}
        reply=${reply%$'\r'}
    fi
    REDIS_REPLY=$reply
    [[ $reply == PONG ]]
}

ensure_redis() {
    redis_ping && return 0
    local logfile dir started=0 deadline=$((SECONDS + REDIS_WAIT_S))
    if tcp_open "$REDIS_HOST" "$REDIS_PORT"; then
        # Something listens: a Redis that is still loading, or not one we
        # can use. Do not start a second one; wait a little, then give up.
        case $REDIS_REPLY in
        *NOAUTH* | *WRONGPASS* | *DENIED*)
            die "the Redis on $REDIS_HOST:$REDIS_PORT wants a password or refuses us: $REDIS_REPLY"
            ;;
        esac
        log "something listens on $REDIS_HOST:$REDIS_PORT but does not answer PONG yet; waiting"
        until redis_ping; do
            if ((SECONDS >= deadline)); then
                die "$REDIS_HOST:$REDIS_PORT is taken by something that does not answer PING with PONG (reply: '${REDIS_REPLY}'); is it Redis?"
            fi
            sleep 1
        done
        log "Redis is up"
        return 0
    fi

    if [[ $EUID -eq 0 && -d /var/log/redis ]]; then
        logfile=/var/log/redis/warren.log
    else
        logfile=${TMPDIR:-/tmp}/warren-redis.log
    fi
    if [[ $EUID -eq 0 && -d /var/lib/redis ]]; then
        dir=/var/lib/redis
    else
        dir=${TMPDIR:-/tmp}
    fi

    if init_usable redis-server; then
        log "starting Redis (service redis-server start)"
        if init_start redis-server; then
            started=1
        else
            warn "the init system could not start redis-server; starting it directly"
        fi
    fi
    if [[ $started -eq 0 ]]; then
        log "starting Redis on $REDIS_HOST:$REDIS_PORT (log: $logfile)"
        redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" \
            --save "" --appendonly no --dir "$dir" --logfile "$logfile" >&2 ||
            die "redis-server failed to start; see $logfile"
    fi

    until redis_ping; do
        if ((SECONDS >= deadline)); then
            [[ -r $logfile ]] && tail -n 20 "$logfile" >&2
            die "Redis did not answer on $REDIS_HOST:$REDIS_PORT within ${REDIS_WAIT_S}s"
        fi
        sleep 0.5
    done
    log "Redis is up"
}

# ---------------------------------------------------------------------------
# 3. RabbitMQ.
# ---------------------------------------------------------------------------
rabbit_port_open() { tcp_open "$AMQP_HOST" "$AMQP_PORT"; }

# Prints "{Booting,Running}" (e.g. {false,true}) when the node answers;
# non-zero when no node is running.
rabbit_node_state() {
    as_root timeout 30 rabbitmqctl -q eval '{rabbit:is_booting(), rabbit:is_running()}.' 2>/dev/null
}

start_rabbit_node() {
    local started=0
    if init_usable rabbitmq-server; then
        log "starting RabbitMQ (service rabbitmq-server start)"
        if init_start rabbitmq-server; then
            started=1
        else
            warn "the init system could not start rabbitmq-server; starting it directly"
        fi
    fi
    if [[ $started -eq 0 ]]; then
        log "starting RabbitMQ (rabbitmq-server -detached)"
        as_root rabbitmq-server -detached >&2 || die "rabbitmq-server -detached failed; see /var/log/rabbitmq/"
    fi
}

ensure_rabbit() {
    rabbit_port_open && return 0

    local state
    if state=$(rabbit_node_state); then
        case $state in
        *'{false,false}'*)
            log "RabbitMQ node is running but its application is stopped; starting it (rabbitmqctl start_app)"
            quiet_root rabbitmqctl -q start_app || die "rabbitmqctl start_app failed"
            ;;
        *'{true,'*) log "RabbitMQ is booting; waiting" ;;
        *) log "RabbitMQ node answers ($state) but port $AMQP_PORT is closed; waiting" ;;
        esac
    else
        start_rabbit_node
    fi

    local deadline=$((SECONDS + RABBIT_WAIT_S))
    until rabbit_port_open; do
        if ((SECONDS >= deadline)); then
            die "RabbitMQ did not open $AMQP_HOST:$AMQP_PORT within ${RABBIT_WAIT_S}s; see /var/log/rabbitmq/"
        fi
        sleep 1
    done
    local left=$((deadline - SECONDS))
    ((left < 5)) && left=5
    as_root timeout "$((left + 5))" rabbitmqctl -q await_startup --timeout "$left" >&2 ||
        die "RabbitMQ did not finish booting within ${RABBIT_WAIT_S}s; see /var/log/rabbitmq/"
    log "RabbitMQ is up"
}

# ---------------------------------------------------------------------------
# 4. Management plugin.
# ---------------------------------------------------------------------------
MGMT_OK=0

mgmt_answers() {
    fetch "$MGMT_URL/api/overview" "$MGMT_AUTH"
    [[ $HTTP_STATUS == 200 ]]
}

ensure_mgmt() {
    if [[ -z $http_client ]]; then
        warn "neither curl nor python3 is installed: not checking the management API"
        quiet_root rabbitmq-plugins -q enable rabbitmq_management ||
            warn "could not enable rabbitmq_management"
        return 0
    fi
    if mgmt_answers; then
        MGMT_OK=1
        return 0
    fi
    log "enabling the RabbitMQ management plugin"
    quiet_root rabbitmq-plugins -q enable rabbitmq_management ||
        warn "rabbitmq-plugins enable rabbitmq_management failed"
    local deadline=$((SECONDS + MGMT_WAIT_S))
    until mgmt_answers; do
        if [[ $HTTP_STATUS == 401 ]]; then
            warn "the management API rejects guest:guest; not using it"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            warn "the management API ($MGMT_URL/api/overview) did not answer within ${MGMT_WAIT_S}s (last status: $HTTP_STATUS)"
            return 0
        fi
        sleep 1
    done
    MGMT_OK=1
    log "management API is up at $MGMT_URL"
}

# ---------------------------------------------------------------------------
# 5. The RabbitMQ accounts (see the constants at the top).
# ---------------------------------------------------------------------------

# check_user_via_api USER PASS CONFIGURE WRITE READ TOPIC_WRITE TOPIC_READ:
# checks the user through the management API (fast). Sets user_exists,
# tags_ok, perms_ok, topic_ok, pass_ok (1 or 0). Non-zero if the API could not
# tell.
check_user_via_api() {
    local user=$1 pass=$2 configure=$3 write=$4 read=$5 topic_write=$6 topic_read=$7
    fetch "$MGMT_URL/api/users/$user" "$MGMT_AUTH"
    case $HTTP_STATUS in
    404)
        user_exists=0
        return 0
        ;;
    200) user_exists=1 ;;
    *) return 1 ;;
    esac
    tags_ok=0
    if [[ $HTTP_BODY =~ \"tags\":(\[\]|\"\") ]]; then
        tags_ok=1
    fi

    fetch "$MGMT_URL/api/permissions/$VHOST_URL/$user" "$MGMT_AUTH"
    perms_ok=0
    case $HTTP_STATUS in
    200)
        if [[ $(json_string "$HTTP_BODY" configure) == "$configure" &&
            $(json_string "$HTTP_BODY" write) == "$write" &&
            $(json_string "$HTTP_BODY" read) == "$read" ]]; then
            perms_ok=1
        fi
        ;;
    404) ;;
    *) return 1 ;;
    esac

    # Topic permissions: a list with one object per exchange.
    fetch "$MGMT_URL/api/topic-permissions/$VHOST_URL/$user" "$MGMT_AUTH"
    topic_ok=0
    case $HTTP_STATUS in
    200)
        local entry
        entry=$(topic_entry "$HTTP_BODY" "$EVENTS_EXCHANGE")
        if [[ -n $entry && $(json_string "$entry" write) == "$topic_write" &&
            $(json_string "$entry" read) == "$topic_read" ]]; then
            topic_ok=1
        fi
        ;;
    404) ;;
    *) return 1 ;;
    esac

    # A user without the management tag gets "Not management user" when its
    # password is right and "Login failed" when it is wrong.
    pass_ok=1
    fetch "$MGMT_URL/api/whoami" "$user:$pass"
    if [[ $HTTP_STATUS == 401 && $HTTP_BODY == *'Login failed'* ]]; then
        pass_ok=0
    fi
    return 0
}

# check_user_via_ctl USER PASS CONFIGURE WRITE READ TOPIC_WRITE TOPIC_READ:
# as check_user_via_api, through rabbitmqctl.
check_user_via_ctl() {
    local user=$1 pass=$2 configure=$3 write=$4 read=$5 topic_write=$6 topic_read=$7
    local users perms topics
    users=$(as_root rabbitmqctl -q list_users 2>/dev/null) || die "rabbitmqctl list_users failed"
    user_exists=0 tags_ok=0 perms_ok=0 topic_ok=0 pass_ok=1
    local name tags
    while IFS=$'\t' read -r name tags; do
        if [[ $name == "$user" ]]; then
            user_exists=1
            [[ $tags == "[]" || -z $tags ]] && tags_ok=1
        fi
    done <<<"$users"
    [[ $user_exists -eq 1 ]] || return 0
    perms=$(as_root rabbitmqctl -q list_user_permissions "$user" 2>/dev/null) || return 0
    local vhost conf wr rd
    while IFS=$'\t' read -r vhost conf wr rd; do
        if [[ $vhost == "$VHOST" && $conf == "$configure" && $wr == "$write" && $rd == "$read" ]]; then
            perms_ok=1
        fi
    done <<<"$perms"
    topics=$(as_root rabbitmqctl -q list_user_topic_permissions "$user" 2>/dev/null) || topics=""
    local exchange
    while IFS=$'\t' read -r vhost exchange wr rd; do
        if [[ $vhost == "$VHOST" && $exchange == "$EVENTS_EXCHANGE" &&
            $wr == "$topic_write" && $rd == "$topic_read" ]]; then
            topic_ok=1
        fi
    done <<<"$topics"
    as_root rabbitmqctl -q authenticate_user "$user" "$pass" >/dev/null 2>&1 || pass_ok=0
}

# ensure_user USER PASS CONFIGURE WRITE READ TOPIC_WRITE TOPIC_READ: creates the
# user or repairs its password, tags (none), permissions on $VHOST and topic
# permissions on $EVENTS_EXCHANGE; only checks when all is well.
ensure_user() {
    local user=$1 pass=$2 configure=$3 write=$4 read=$5 topic_write=$6 topic_read=$7
    local user_exists=0 tags_ok=0 perms_ok=0 topic_ok=0 pass_ok=1
    if [[ $MGMT_OK -eq 0 ]] || ! check_user_via_api "$@"; then
        check_user_via_ctl "$@"
    fi
    if [[ $user_exists -eq 0 ]]; then
        log "creating RabbitMQ user $user"
        quiet_root rabbitmqctl -q add_user "$user" "$pass" || die "rabbitmqctl add_user $user failed"
        tags_ok=0 perms_ok=0 topic_ok=0
    elif [[ $pass_ok -eq 0 ]]; then
        log "resetting the password of RabbitMQ user $user"
        quiet_root rabbitmqctl -q change_password "$user" "$pass" || die "rabbitmqctl change_password $user failed"
    fi
    if [[ $tags_ok -eq 0 ]]; then
        log "clearing the tags of RabbitMQ user $user"
        quiet_root rabbitmqctl -q set_user_tags "$user" || die "rabbitmqctl set_user_tags $user failed"
    fi
    if [[ $perms_ok -eq 0 ]]; then
        log "setting permissions of $user on vhost $VHOST"
        quiet_root rabbitmqctl -q set_permissions -p "$VHOST" "$user" "$configure" "$write" "$read" ||
            die "rabbitmqctl set_permissions $user failed"
    fi
    if [[ $topic_ok -eq 0 ]]; then
        log "setting topic permissions of $user on $EVENTS_EXCHANGE"
        quiet_root rabbitmqctl -q set_topic_permissions -p "$VHOST" "$user" "$EVENTS_EXCHANGE" \
            "$topic_write" "$topic_read" ||
            die "rabbitmqctl set_topic_permissions $user failed"
    fi
}

ensure_accounts() {
    ensure_user "$GW_USER" "$GW_PASS" "$GW_CONFIGURE" "$GW_WRITE" "$GW_READ" \
        "$GW_TOPIC_WRITE" "$GW_TOPIC_READ"
    ensure_user "$BOT_USER" "$BOT_PASS" "$BOT_CONFIGURE" "$BOT_WRITE" "$BOT_READ" \
        "$BOT_TOPIC_WRITE" "$BOT_TOPIC_READ"
    ensure_user "$CLI_USER" "$CLI_PASS" "$CLI_CONFIGURE" "$CLI_WRITE" "$CLI_READ" \
        "$CLI_TOPIC_WRITE" "$CLI_TOPIC_READ"
}

# ---------------------------------------------------------------------------
main() {
    install_missing
    ensure_redis
    ensure_rabbit
    ensure_mgmt
    ensure_accounts

    redis_ping || die "Redis stopped answering on $REDIS_HOST:$REDIS_PORT"
    rabbit_port_open || die "RabbitMQ stopped answering on $AMQP_HOST:$AMQP_PORT"
    log "ok: Redis $REDIS_HOST:$REDIS_PORT, RabbitMQ $AMQP_HOST:$AMQP_PORT, console $MGMT_URL"
}

# Sourcing the file (for testing its functions) does not run it.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
