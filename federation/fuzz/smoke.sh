#!/usr/bin/env bash
# A short fuzz run of every target, to prove the targets build and their invariants
# hold on what libFuzzer finds in a few seconds. Not a substitute for long runs.
#
#   federation/fuzz/smoke.sh [SECONDS]     default 15 seconds per target
#
# Needs a nightly toolchain and cargo-fuzz; installs them if missing (rustup, cargo
# install) and skips with a message, exit status 0, if that is impossible. A crash or
# a broken invariant fails the run; libFuzzer leaves the input in
# federation/fuzz/artifacts/<target>/, and `cargo +nightly fuzz run <target> <file>`
# replays it.
set -euo pipefail

seconds="${1:-15}"
cd "$(dirname "$0")/.."

skip() {
    printf 'fuzz smoke skipped: %s\n' "$*"
    exit 0
}

command -v rustup >/dev/null 2>&1 || skip "rustup not found (cargo-fuzz needs a nightly toolchain)"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "installing the nightly toolchain for cargo-fuzz"
    rustup toolchain install nightly --profile minimal || skip "could not install a nightly toolchain"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked || skip "could not install cargo-fuzz"
fi

for target in bundle_parse bundle_map_parse spiffe_id_parse; do
    printf '\n--- fuzz %s for %ss\n' "$target" "$seconds"
    mkdir -p "fuzz/corpus/$target"
    args=("-max_total_time=$seconds" "-print_final_stats=1" "-print_funcs=0")
    case "$target" in
        bundle_*) args+=("-dict=fuzz/bundle.dict") ;;
    esac
    # The first corpus folder collects new inputs (ignored by git); the seeds are
    # read only.
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- "${args[@]}"
done
