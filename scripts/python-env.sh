#!/usr/bin/env bash
# Makes the Python environment the bot tests use: a virtualenv in .local/venv
# with tests/requirements.txt installed (pika for bots/python/echo_bot.py, the
# test tools, kubernetes-validate for scripts/validate-deploy.sh).
#
# Idempotent and quick when nothing changed: the venv is reused, and pip runs
# only when requirements.txt differs from what was last installed (its hash is
# kept in .local/venv/.requirements.sha256) or an import fails. Installs
# python3 and python3-venv with apt-get when they are missing, as
# scripts/ensure-services.sh does for the services.
#
# Usage: scripts/python-env.sh        (then: .local/venv/bin/python bots/python/echo_bot.py --help)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

readonly VENV=.local/venv
readonly REQUIREMENTS=tests/requirements.txt
readonly STAMP=$VENV/.requirements.sha256
readonly PIP_TIMEOUT_S=300

SCRIPT_NAME=python-env
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

[[ -f $REQUIREMENTS ]] || die "$REQUIREMENTS is missing"
want=$(cat "$REQUIREMENTS" bots/python/requirements.txt | sha256sum | cut -d' ' -f1)

# Fast path: the venv exists, was made from this requirements file, and works.
if [[ -x $VENV/bin/python && -f $STAMP && $(<"$STAMP") == "$want" ]] &&
    "$VENV/bin/python" -c 'import pika, prometheus_client, websockets, kubernetes_validate' 2>/dev/null; then
    log "ok: $VENV is up to date"
    exit 0
fi

have python3 || apt_install python3
# `python3 -m venv` needs ensurepip, which Debian ships in python3-venv.
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3-venv
fi

if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    log "creating $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
fi

log "installing $REQUIREMENTS into $VENV"
timeout "$PIP_TIMEOUT_S" "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -r "$REQUIREMENTS" >&2 || die "pip install -r $REQUIREMENTS failed"
"$VENV/bin/python" -c 'import pika, prometheus_client, websockets, kubernetes_validate' || die "pika, prometheus_client, websockets or kubernetes_validate does not import after the install"
printf '%s\n' "$want" >"$STAMP"
log "ok: $VENV ($("$VENV/bin/python" --version 2>&1), pika $("$VENV/bin/python" -c 'import pika; print(pika.__version__)'))"
