#!/usr/bin/env bash
# A short fuzz run of every target, to prove the targets build and their invariants
# hold on what libFuzzer finds in a few seconds. Not a substitute for long runs.
#
#   federation/fuzz/smoke.sh [SECONDS]     default 15 seconds per target
#
# Needs a nightly toolchain and cargo-fuzz, and installs them when missing (rustup,
# `cargo install --locked cargo-fuzz`); if that is impossible it fails saying what to
# install, never skips. The fuzz crate is built against its committed Cargo.lock
# (checked with --locked first, so the run never rewrites it). libFuzzer's progress
# goes to target/fuzz-smoke/<target>.log, kept (and its end printed) only when a target
# fails; a crash or broken invariant leaves the input in
# federation/fuzz/artifacts/<target>/, and `cargo +nightly fuzz run <target> <file>`
# replays it. One line per target, then: fuzz smoke: N passed[, M failed] in T.
set -euo pipefail

seconds="${1:-15}"
cd "$(dirname "$0")/.."
logs="$(cd .. && pwd)/target/fuzz-smoke"
mkdir -p "$logs"

missing() {
    printf 'fuzz smoke: FAILED: %s\n' "$*" >&2
    exit 1
}

command -v rustup >/dev/null 2>&1 ||
    missing "rustup not found; cargo-fuzz needs a nightly toolchain (install rustup: https://rustup.rs)"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz smoke: installing the nightly toolchain (rustup toolchain install nightly --profile minimal)"
    rustup toolchain install nightly --profile minimal >"$logs/nightly-install.log" 2>&1 ||
        missing "could not install the nightly toolchain (see $logs/nightly-install.log); run: rustup toolchain install nightly"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke: installing cargo-fuzz (cargo install --locked cargo-fuzz)"
    cargo install --locked cargo-fuzz >"$logs/cargo-fuzz-install.log" 2>&1 ||
        missing "could not install cargo-fuzz (see $logs/cargo-fuzz-install.log); run: cargo install --locked cargo-fuzz"
fi

# cargo-fuzz has no --locked: check the lock file first, so that a stale one fails
# here instead of being rewritten by the build.
cargo +nightly metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null ||
    missing "federation/fuzz/Cargo.lock is not up to date with federation/fuzz/Cargo.toml; update it (cargo +nightly update --manifest-path federation/fuzz/Cargo.toml) and commit it"
if ! cargo +nightly fuzz build -O >"$logs/build.log" 2>&1; then
    tail -n 40 "$logs/build.log" >&2
    missing "the fuzz targets do not build (log: $logs/build.log)"
fi

start=$(date +%s%N)
passed=0
failed=0
for target in bundle_parse bundle_map_parse spiffe_id_parse; do
    mkdir -p "fuzz/corpus/$target"
    args=("-max_total_time=$seconds" "-print_final_stats=1" "-print_funcs=0")
    case "$target" in
        bundle_*) args+=("-dict=fuzz/bundle.dict") ;;
    esac
    log="$logs/$target.log"
    # The first corpus folder collects new inputs (ignored by git); the seeds are
    # read only.
    if cargo +nightly fuzz run -O "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" \
        -- "${args[@]}" >"$log" 2>&1; then
        runs=$(awk '/^stat::number_of_executed_units:/ { print $NF }' "$log")
        corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
        printf 'fuzz %-17s ok: %s runs in %ss, corpus %s inputs\n' "$target" "${runs:-?}" "$seconds" "$corpus"
        passed=$((passed + 1))
        rm -f "$log"
    else
        printf 'fuzz %-17s FAILED; the end of its log (%s):\n' "$target" "$log"
        tail -n 40 "$log" | sed 's/^/    /'
        failed=$((failed + 1))
    fi
done
rm -f "$logs/build.log"

ms=$((($(date +%s%N) - start) / 1000000))
elapsed="$((ms / 1000)).$((ms % 1000 / 100))s"
if ((failed)); then
    echo "fuzz smoke: $passed passed, $failed failed in $elapsed"
    exit 1
fi
echo "fuzz smoke: $passed passed in $elapsed"
