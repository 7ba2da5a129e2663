#!/usr/bin/env bash
# Runs the web client's end-to-end tests in headless Chromium (tests/browser/,
# node's built-in test runner, playwright-core driving Debian's chromium).
#
#   1. chromium   installed with apt when /usr/bin/chromium is missing
#   2. packages   npm ci in tests/browser, when node_modules is missing or older
#                 than package-lock.json
#   3. tests      node --test tests/browser/
#
# Expects target/debug/warren-gateway and target/debug/warren-dispatcher (the test
# command builds them first) and RabbitMQ (with its management plugin) and Redis
# running on 127.0.0.1 (scripts/ensure-services.sh). Screenshots and service logs go
# to target/test-logs/. Non-interactive; run as root (or with sudo for the apt step).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TESTS=tests/browser

say() { printf '==> test-browser.sh: %s\n' "$*" >&2; }

SCRIPT_NAME=test-browser.sh
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

if [[ ! -x /usr/bin/chromium ]]; then
    apt_install chromium
fi

for tool in node npm; do
    command -v "$tool" >/dev/null 2>&1 || {
        say "error: $tool is not installed (node 20 or later)"
        exit 1
    }
done

for bin in warren-gateway warren-dispatcher; do
    [[ -x target/debug/$bin ]] || {
        say "error: target/debug/$bin is missing: run cargo build --workspace --bins first"
        exit 1
    }
done

# npm ci wipes and reinstalls node_modules; only when it is missing or stale.
marker=$TESTS/node_modules/.package-lock.json
if [[ ! -f $marker || $TESTS/package-lock.json -nt $marker ]]; then
    say "npm ci in $TESTS"
    (cd "$TESTS" && npm ci --no-audit --no-fund --loglevel=error)
fi

say "node --test $TESTS/"
exec node --test "$TESTS/"
