#!/usr/bin/env bash
# Runs Warren's cargo-fuzz targets (fuzz/) one after the other, each for a bounded time,
# and prints what each run did: executions, corpus size, crashes.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     default 600 (10 minutes per target)
#
# Targets:
#   client_frame   arbitrary bytes through proto::client::ClientFrame::parse
#   command        arbitrary bytes through serde_json::from_slice::<proto::amqp::Command>
#                  and warren_dispatcher::intake::read
#   ws_decoder     arbitrary bytes, cut into reads, through the WebSocket decoder the
#                  gateway runs (warren-ws-codec's Decoder), compression on or off
#
# Not part of CI (scripts/test.sh): it is slow by design and needs a sanitizer build.
# cargo-fuzz passes nightly-only compiler flags; RUSTC_BOOTSTRAP=1 lets a stable
# toolchain accept them. The corpus grows in fuzz/corpus/<target> (not committed) from
# the seeds in fuzz/seeds/<target>; a crash is saved under fuzz/artifacts/<target>/ and
# makes this script exit non-zero. Reproduce one with
#   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> artifacts/<target>/<file>
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_PER_TARGET=${1:-600}
# FUZZ_TARGETS="ws_decoder" picks some of them.
read -r -a TARGETS <<<"${FUZZ_TARGETS:-client_frame command ws_decoder}"

if ! [[ $SECONDS_PER_TARGET =~ ^[0-9]+$ ]] || ((SECONDS_PER_TARGET < 1)); then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]" >&2
    exit 2
fi
if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-}/.cargo/bin/cargo ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

cd "$ROOT/fuzz"
echo "==> fuzz.sh: building the targets (sanitizer build; the first one takes minutes)" >&2
cargo fuzz build

summary=()
crashed=0
for target in "${TARGETS[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log="target/fuzz-$target.log"
    before=$(find "artifacts/$target" -type f | wc -l)
    echo "==> fuzz.sh: $target for ${SECONDS_PER_TARGET}s (log: fuzz/$log)" >&2
    started=$SECONDS
    rc=0
    cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?
    took=$((SECONDS - started))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    files=$(find "corpus/$target" -type f | wc -l)
    bytes=$(du -sb "corpus/$target" | cut -f1)
    crashes=$(($(find "artifacts/$target" -type f | wc -l) - before))
    if ((rc != 0 || crashes > 0)); then
        crashed=1
        tail -40 "$log" >&2
    fi
    summary+=("$(printf '%-13s %6ss %12s runs %7s corpus files %10s bytes %3s new crashes (exit %s)' \
        "$target" "$took" "${runs:-?}" "$files" "$bytes" "$crashes" "$rc")")
done

echo
echo "fuzz.sh: ${SECONDS_PER_TARGET}s per target"
printf '  %s\n' "${summary[@]}"
exit "$crashed"
