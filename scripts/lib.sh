# Helpers shared by the project's scripts. Source it after setting SCRIPT_NAME (the
# prefix of every message); DIE_STATUS, if set, is the exit status of `die` (default 1).
# shellcheck shell=bash

log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
    exit "${DIE_STATUS:-1}"
}
have() { command -v "$1" >/dev/null 2>&1; }

# Runs a command as root: directly when we are root, through sudo otherwise
# (non-interactively when there is no terminal to ask for a password on).
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif have sudo; then
        if [[ -t 0 ]]; then
            sudo "$@"
        else
            sudo -n "$@"
        fi
    else
        die "'$*' needs root, and sudo is not installed; run this script as root"
    fi
}

# Installs Debian packages quietly (after refreshing the package lists).
apt_install() {
    have apt-get || die "missing $* and apt-get is not available; install them by hand"
    log "installing $* (apt-get)"
    as_root apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
    hash -r
}
