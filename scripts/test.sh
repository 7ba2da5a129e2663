#!/usr/bin/env bash
# Runs Warren's whole test suite against a real RabbitMQ and Redis on this
# machine (installed and started if needed by scripts/ensure-services.sh):
#
#   1. services      scripts/ensure-services.sh
#   2. build         cargo build --workspace --bins  (the cross-service tests
#                    spawn target/debug/warren-gateway etc.)
#   3. unit tests    cargo test --workspace --exclude warren-tests
#   4. e2e tests     cargo test -p warren-tests --test e2e
#   5. fault tests   cargo test -p warren-tests --test faults -- --test-threads=1
#                    (only if tests/tests/faults.rs exists; these restart the
#                    shared broker and store, so they run alone)
#   6. cluster tests cargo test -p warren-tests --test cluster_rabbitmq --test
#                    cluster_redis -- --test-threads=1: each starts its own 3-node
#                    RabbitMQ cluster or 6-node Redis Cluster (scripts/rabbitmq-cluster.sh,
#                    scripts/redis-cluster.sh) on ports of its own, and stops it; alone, last
#   7. services      scripts/ensure-services.sh, to leave them running
#
# Stops at the first failing step, with a non-zero exit status.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

export RUST_BACKTRACE=1

# rustup installs into ~/.cargo/bin, which a fresh shell may not have on PATH.
if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-}/.cargo/bin/cargo ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || {
    echo "test.sh: error: cargo is not installed (https://rustup.rs)" >&2
    exit 1
}

started_at=$SECONDS
passed=()

joined() {
    local out
    out=$(printf '%s, ' "${passed[@]}")
    printf '%s' "${out%, }"
}

# step NAME COMMAND...: prints a banner, runs the command, stops on failure.
step() {
    local name=$1 rc=0 t0=$SECONDS
    shift
    printf '\n==> test.sh: %s: %s\n' "$name" "$*" >&2
    "$@" || rc=$?
    if ((rc != 0)); then
        printf '\n==> test.sh: FAILED at "%s" (exit status %d, after %ds); passed before it: %s\n' \
            "$name" "$rc" "$((SECONDS - started_at))" "$(joined)" >&2
        exit "$rc"
    fi
    printf '==> test.sh: %s: ok (%ds)\n' "$name" "$((SECONDS - t0))" >&2
    passed+=("$name")
}

step "services" bash scripts/ensure-services.sh
step "build" cargo build --workspace --bins
step "unit tests" cargo test --workspace --exclude warren-tests
step "python env" bash scripts/python-env.sh
step "e2e tests" cargo test -p warren-tests --test e2e --test rooms --test bots --test ops --test hostile --test security --test scale_path --test scale_out --test limits --test tokens
step "browser tests" bash scripts/test-browser.sh
step "websocket conformance" bash scripts/autobahn.sh
step "loadgen smoke" bash bench/run.sh --smoke --profile debug --no-build
step "deploy files" bash scripts/validate-deploy.sh
if [[ -f tests/tests/faults.rs ]]; then
    step "fault tests" cargo test -p warren-tests --test faults -- --test-threads=1
else
    printf '\n==> test.sh: fault tests: skipped (tests/tests/faults.rs does not exist)\n' >&2
fi
step "cluster tests" cargo test -p warren-tests --test cluster_rabbitmq --test cluster_redis -- --test-threads=1
step "services still up" bash scripts/ensure-services.sh

printf '\ntest.sh: PASSED: %s (%ds)\n' "$(joined)" "$((SECONDS - started_at))"
