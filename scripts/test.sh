#!/usr/bin/env bash
# Runs every check and test of fedgw, installing what the tests need first.
#
#   ./scripts/test.sh            everything (what CI runs, via .ci/run)
#
# Steps: system packages (apt, only what is missing) -> formatting and lints ->
# Python venv (.venv) -> Rust unit, conformance and end-to-end tests -> local testbed
# scenarios (testbed/local) -> Python interop tests (in .venv) ->
# a short fuzz smoke run of each parser (if cargo-fuzz and a nightly toolchain can
# be installed; skipped with a message otherwise).
#
# Environment: FUZZ_SECONDS (default 15) per fuzz target; SKIP_FUZZ=1 to skip it.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\n==> %s\n' "$*"; }

# Every runner's output is kept so that the closing line can total what ran.
results=$(mktemp)
trap 'rm -f "$results"' EXIT

# --- system packages --------------------------------------------------------------
need=()
command -v python3 >/dev/null 2>&1 || need+=(python3)
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need+=(python3-venv)
fi
command -v cc >/dev/null 2>&1 || need+=(build-essential)
# Independent TLS/HTTP peers used by the end-to-end tests.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ((${#need[@]})); then
    log "installing system packages: ${need[*]}"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

# --- formatting and lints ---------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

# --- Python venv ------------------------------------------------------------------
# Before the Rust tests: tests/federation_e2e.rs runs .venv/bin/python (cryptography)
# as an independent check of the https_spiffe endpoint's SVID.
log "python venv for the interop checks (.venv)"
"$root/tests/interop/run.sh" --setup-only

# --- Rust tests -------------------------------------------------------------------
log "cargo test --workspace"
cargo test --workspace --locked 2>&1 | tee -a "$results"

# --- local testbed ---------------------------------------------------------------
# Real fedgw processes on loopback (fedgw is built by now): rotation, outage, rolled-back
# sequence, kill -9 and restart, relationship deletion (docs/testbed-local.md).
log "testbed/local scenarios (fedgw processes on loopback)"
"$root/testbed/local/scenarios.sh" 2>&1 | tee -a "$results"

# --- kind testbed, checked statically (no Docker or kind here) --------------------
log "testbed/kind static checks (YAML, referenced files, scripts, kustomize)"
"$root/testbed/kind/verify.sh"

# --- independent implementations (Python) -----------------------------------------
log "interop tests against independent implementations (PyPI spiffe, cryptography)"
"$root/tests/interop/run.sh" 2>&1 | tee -a "$results"

# --- fuzz smoke -------------------------------------------------------------------
if [[ "${SKIP_FUZZ:-0}" == 1 ]]; then
    log "fuzz smoke skipped (SKIP_FUZZ=1)"
else
    "$root/federation/fuzz/smoke.sh" "${FUZZ_SECONDS:-15}"
fi

log "all checks passed"
# One closing line for all runners: cargo's "test result: ok. N passed; M failed" lines,
# pytest's "N passed" line and testbed/local's "N passed in" line.
awk '
    /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
    / passed in / { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i-1); if ($(i) ~ /^failed/) f += $(i-1) } }
    END { printf "total: %d passed, %d failed\n", p, f }
' "$results"
