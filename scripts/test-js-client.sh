#!/usr/bin/env bash
# Runs the JavaScript client library's tests (clients/js/test/, node's built-in test
# runner): unit tests of the backoff, and the client against real stacks started by
# target/debug/warren-stack (a gateway restart, token expiry, lost acks, lost frames),
# then the example of docs/CLIENTS.md against a stack of its own.
#
#   1. node      installed with apt when missing (node 20 or later is required)
#   2. packages  npm ci in clients/js (TypeScript, to check warren.d.ts), when
#                node_modules is missing or older than package-lock.json
#   3. tests     node --test clients/js/test/*.test.mjs
#
# Node 20 has its WebSocket behind --experimental-websocket; from Node 22 on it is
# global and the flag is not given. Expects target/debug/warren-{stack,gateway,dispatcher}
# (the test command builds them first) and RabbitMQ and Redis on 127.0.0.1
# (scripts/ensure-services.sh). Service logs go to target/test-logs/. Non-interactive.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SCRIPT_NAME=test-js-client.sh
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

have node || apt_install nodejs
have npm || apt_install npm
major=$(node -p 'process.versions.node.split(".")[0]')
((major >= 20)) || die "node $(node --version) is too old: the client needs node 20 or later"

for bin in warren-stack warren-gateway warren-dispatcher; do
    [[ -x target/debug/$bin ]] || die "target/debug/$bin is missing: run cargo build --workspace --bins first"
done

# TypeScript, the library's one dev dependency (typings.test.mjs type-checks a program
# against warren.d.ts); npm ci only when node_modules is missing or older than the lock.
marker=clients/js/node_modules/.package-lock.json
if [[ ! -f $marker || clients/js/package-lock.json -nt $marker ]]; then
    log "npm ci in clients/js"
    (cd clients/js && npm ci --no-audit --no-fund --loglevel=error)
fi

flags=()
if [[ $(node -p 'typeof globalThis.WebSocket') != function ]]; then
    flags+=(--experimental-websocket)
fi

log "node ${flags[*]} --test clients/js/test/*.test.mjs"
exec node "${flags[@]}" --test clients/js/test/*.test.mjs
