#!/usr/bin/env bash
# Runs Warren's whole test suite against a real RabbitMQ and Redis on this
# machine, in fifteen steps; it stops at the first that fails, with a non-zero exit
# status, and says which passed before it:
#
#   1. services          scripts/ensure-services.sh (installs and starts RabbitMQ and
#                        Redis if missing, creates the accounts)
#   2. build             cargo build --workspace --bins (the cross-service tests and
#                        the launcher, warren-stack, run target/debug/warren-*)
#   3. unit tests        cargo test --workspace --exclude warren-tests (every crate's
#                        own tests, the dispatcher's in-process suites and the
#                        launcher's, which start stacks of their own)
#   4. otlp exporter     cargo test -p warren-common --features otlp --test otlp (the
#                        optional OpenTelemetry exporter sends a span to a collector
#                        stand-in on 127.0.0.1)
#   5. otlp build        cargo check of gateway and dispatcher with --features otlp
#                        (a check: target/debug/warren-* stay the default build)
#   6. python env        scripts/python-env.sh (.local/venv with pika, websockets and
#                        kubernetes-validate)
#   7. e2e tests         cargo test -p warren-tests --test e2e --test rooms ...: the
#                        cross-service tests, each on a stack with its own prefix,
#                        the dashboards' metrics, traces and the admin CLI included
#   8. browser tests     scripts/test-browser.sh (headless Chromium, playwright-core)
#   9. js client tests   scripts/test-js-client.sh (clients/js with node --test against
#                        real stacks)
#  10. websocket         scripts/autobahn.sh (Autobahn|Testsuite against the gateway's
#      conformance       WebSocket layer)
#  11. loadgen smoke     bench/run.sh --smoke (one tiny fan-out through the launcher)
#  12. deploy files      scripts/validate-deploy.sh (docker-compose config with and
#                        without the observability profile, haproxy -c, promtool
#                        check config/rules and test rules, kubernetes-validate on
#                        deploy/k8s/, and the Rust agreement test against proto)
#  13. fault tests       cargo test -p warren-tests --test faults -- --test-threads=1
#                        (they kill processes and restart the shared broker and store,
#                        so they run alone)
#  14. cluster tests     cargo test -p warren-tests --test cluster_rabbitmq --test
#                        cluster_redis -- --test-threads=1: each starts its own 3-node
#                        RabbitMQ cluster or 6-node Redis Cluster on ports of its own
#                        (scripts/rabbitmq-cluster.sh, scripts/redis-cluster.sh) and
#                        stops it; alone, last
#  15. services          scripts/ensure-services.sh again, to leave them running
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
step "otlp exporter" cargo test -p warren-common --features otlp --test otlp
step "otlp build" cargo check -p warren-gateway -p warren-dispatcher --features otlp
step "python env" bash scripts/python-env.sh
step "e2e tests" cargo test -p warren-tests --test e2e --test rooms --test bots --test ops --test hostile --test security --test scale_path --test scale_out --test limits --test tokens --test dashboards --test traces --test admin
step "browser tests" bash scripts/test-browser.sh
step "js client tests" bash scripts/test-js-client.sh
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
