#!/usr/bin/env bash
# Validates Warren's deployment files offline, without a Docker engine:
#
#   1. compose     `docker-compose config` (Debian's docker-compose 1.29, which needs
#                  no engine) renders deploy/compose.yaml and deploy/compose.cluster.yaml
#                  with their default variables and only the required secrets set
#                  (WARREN_AUTH_SECRET, and WARREN_RABBITMQ_COOKIE for the cluster): it
#                  rejects unknown keys, bad value types, unset variables and references
#                  to undefined services, networks or volumes. Any warning is a failure.
#                  Without any one of the secrets the rendering must fail (safe by
#                  default). With --profile observability both render too and have
#                  the services prometheus and grafana.
#   2. haproxy     `haproxy -c` on deploy/haproxy.cfg. The gateway host names resolve
#                  only inside compose (`init-addr libc,none`): those warnings are the
#                  only ones accepted.
#   3. probe       bash -n and shellcheck on the health probe the Dockerfile writes
#                  into the image; hadolint on the Dockerfile when it is installed.
#   4. prometheus  `promtool check config` on deploy/prometheus/prometheus*.yml (which
#                  also checks the rule files they load), `promtool check rules` and
#                  `promtool test rules` (deploy/prometheus/tests/: which alerts fire on
#                  given series, and which must not).
#   5. kubernetes  `kubernetes-validate --strict` (PyPI, with the API's schemas inside:
#                  no cluster, no network) on every manifest in deploy/k8s/, against
#                  Kubernetes $K8S_VERSION (default 1.30, the oldest the manifests target).
#   6. agreement   `cargo test -p warren-tests --test deploy_agreement`: compose,
#                  haproxy.cfg, rabbitmq.conf, cluster.conf, definitions.json and
#                  definitions.cluster.json, scripts/ensure-services.sh, the Dockerfile
#                  and .dockerignore against the contract in proto/ (topology, accounts
#                  and permissions) and against each other; the Grafana dashboard and
#                  the alert rules against the metrics the services register, the
#                  Prometheus targets against compose, the Kubernetes manifests against
#                  the settings; the test says what it checks.
#
# Missing tools (docker-compose, haproxy, shellcheck; promtool from Debian's
# `prometheus` package) are installed with apt-get, as root or through sudo, and
# kubernetes-validate into .local/venv by scripts/python-env.sh; with --no-install
# the script fails instead. Runs every check, prints each problem, and exits non-zero
# if any failed.
#
# Usage: scripts/validate-deploy.sh [--no-install]
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SCRIPT_NAME=validate-deploy
DIE_STATUS=2
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

install=1
for arg in "$@"; do
    case $arg in
    --no-install) install=0 ;;
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) die "unknown argument '$arg' (try --help)" ;;
    esac
done

readonly K8S_VERSION=${K8S_VERSION:-1.30}
readonly KUBERNETES_VALIDATE=.local/venv/bin/kubernetes-validate

missing=()
for tool in docker-compose haproxy shellcheck; do
    have "$tool" || missing+=("$tool")
done
# promtool comes with Debian's Prometheus server package.
have promtool || missing+=(prometheus)
if ((${#missing[@]})); then
    ((install)) || die "missing: ${missing[*]}; not installing (--no-install)"
    # --no-install-recommends: docker-compose recommends docker.io, a whole engine
    # that `docker-compose config` does not use.
    apt_install --no-install-recommends "${missing[@]}"
    # The package also enables a Prometheus server on :9090, the dispatchers' default
    # port: only promtool is wanted here.
    if [[ " ${missing[*]} " == *" prometheus "* && -d /run/systemd/system ]]; then
        as_root systemctl disable --now prometheus.service >&2 || true
    fi
fi
if [[ ! -x $KUBERNETES_VALIDATE ]]; then
    ((install)) || die "missing: $KUBERNETES_VALIDATE; not installing (--no-install)"
    "$ROOT/scripts/python-env.sh" >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: >"$tmp/empty.env"

failed=()
# check NAME COMMAND...: runs one check, keeps going when it fails.
check() {
    local name=$1
    shift
    if "$@"; then
        log "ok: $name"
    else
        log "FAILED: $name"
        failed+=("$name")
    fi
}

# render FILE VAR=VALUE...: docker-compose config of FILE with nothing but the given
# variables (not deploy/.env, none of the caller's); its messages in $tmp/err.
render() {
    local file=$1
    shift
    env -i PATH="$PATH" HOME="${HOME:-/root}" LANG=C.UTF-8 "$@" \
        docker-compose --env-file "$tmp/empty.env" -f "$file" config >/dev/null 2>"$tmp/err"
}

# compose_check FILE REQUIRED...: FILE renders cleanly with the REQUIRED secrets set,
# and refuses to without any one of them, naming it.
compose_check() {
    local file=$1 var other
    shift
    local -a all=()
    for var in "$@"; do all+=("$var=validate-deploy-render-${var,,}"); done
    if ! render "$file" "${all[@]}" || [[ -s $tmp/err ]]; then
        printf '  docker-compose config (%s) says (any warning is a failure):\n' "$file" >&2
        sed 's/^/    /' "$tmp/err" >&2
        return 1
    fi
    for var in "$@"; do
        local -a given=()
        for other in "${all[@]}"; do [[ $other == "$var="* ]] || given+=("$other"); done
        if render "$file" "${given[@]}" || ! grep -q "$var" "$tmp/err"; then
            printf '  %s renders without %s; it must not:\n' "$file" "$var" >&2
            sed 's/^/    /' "$tmp/err" >&2
            return 1
        fi
    done
}

haproxy_check() {
    local out
    out=$(haproxy -c -f deploy/haproxy.cfg 2>&1) || {
        printf '  haproxy -c failed:\n%s\n' "$out" >&2
        return 1
    }
    ! grep -E '\[(WARNING|ALERT)\]' <<<"$out" | grep -v "could not resolve address 'gateway" >&2
}

probe_check() {
    sed -n "/^COPY --chmod=0755 <<'PROBE' /,/^PROBE\$/p" deploy/Dockerfile | sed '1d;$d' >"$tmp/probe.sh"
    [[ -s $tmp/probe.sh ]] || {
        printf '  the warren-probe here-document was not found in deploy/Dockerfile\n' >&2
        return 1
    }
    bash -n "$tmp/probe.sh" && shellcheck -s bash "$tmp/probe.sh" >&2 || return 1
    # DL3008: unpinned apt packages (ca-certificates follows the base image).
    ! have hadolint || hadolint --ignore DL3008 deploy/Dockerfile >&2
}

# profile_check FILE REQUIRED...: with --profile observability, FILE renders cleanly
# and has the services prometheus and grafana. (That a plain `up` leaves them out, by
# `profiles: [observability]`, is the agreement test's to check: Compose 1.29 lists
# every service with `config --services`, profile or not.)
profile_check() {
    local file=$1 var services
    shift
    local -a all=()
    for var in "$@"; do all+=("$var=validate-deploy-render-${var,,}"); done
    if ! services=$(env -i PATH="$PATH" HOME="${HOME:-/root}" LANG=C.UTF-8 "${all[@]}" \
        docker-compose --env-file "$tmp/empty.env" -f "$file" --profile observability \
        config --services 2>"$tmp/err") || [[ -s $tmp/err ]]; then
        printf '  docker-compose --profile observability config (%s) says:\n' "$file" >&2
        sed 's/^/    /' "$tmp/err" >&2
        return 1
    fi
    for var in prometheus grafana; do
        grep -qx "$var" <<<"$services" || {
            printf '  %s: no service %s in the observability profile\n' "$file" "$var" >&2
            return 1
        }
    done
}

prometheus_check() {
    local ok=0 config
    for config in deploy/prometheus/prometheus*.yml; do
        promtool check config "$config" >"$tmp/out" 2>&1 || {
            printf '  promtool check config %s:\n' "$config" >&2
            sed 's/^/    /' "$tmp/out" >&2
            ok=1
        }
    done
    promtool check rules deploy/prometheus/rules/*.yml >"$tmp/out" 2>&1 || {
        sed 's/^/    /' "$tmp/out" >&2
        ok=1
    }
    promtool test rules deploy/prometheus/tests/*.yml >"$tmp/out" 2>&1 || {
        sed 's/^/    /' "$tmp/out" >&2
        ok=1
    }
    return "$ok"
}

kubernetes_check() {
    local -a manifests=()
    local f
    for f in deploy/k8s/*.yaml; do
        # kustomization.yaml is kustomize's, not an API object.
        [[ $(basename "$f") == kustomization.yaml ]] || manifests+=("$f")
    done
    ((${#manifests[@]})) || {
        printf '  no manifests in deploy/k8s/\n' >&2
        return 1
    }
    "$KUBERNETES_VALIDATE" --strict --quiet -k "$K8S_VERSION" "${manifests[@]}" >&2
}

check "compose: deploy/compose.yaml" compose_check deploy/compose.yaml WARREN_AUTH_SECRET
check "compose: deploy/compose.cluster.yaml" compose_check deploy/compose.cluster.yaml \
    WARREN_AUTH_SECRET WARREN_RABBITMQ_COOKIE
check "compose: deploy/compose.yaml, profile observability" \
    profile_check deploy/compose.yaml WARREN_AUTH_SECRET
check "compose: deploy/compose.cluster.yaml, profile observability" \
    profile_check deploy/compose.cluster.yaml WARREN_AUTH_SECRET WARREN_RABBITMQ_COOKIE
check "haproxy: haproxy -c" haproxy_check
check "probe: bash -n, shellcheck" probe_check
check "prometheus: promtool check config, check rules, test rules" prometheus_check
check "kubernetes: kubernetes-validate --strict (Kubernetes $K8S_VERSION)" kubernetes_check
check "agreement: cargo test --test deploy_agreement" \
    cargo test -q -p warren-tests --test deploy_agreement

if ((${#failed[@]})); then
    log "${#failed[@]} check(s) failed: ${failed[*]}"
    exit 1
fi
log "all deployment checks passed"
