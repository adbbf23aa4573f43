#!/usr/bin/env bash
# Runs every check and test of fedgw, installing what the tests need first.
#
#   ./scripts/test.sh            everything (what CI runs, via .ci/run)
#
# Steps: system packages (apt, only what is missing: python3 and venv, a C compiler,
# openssl, curl, shellcheck, kubectl, iproute2, iptables, PostgreSQL) -> formatting,
# lints and shellcheck -> Python venv (.venv) -> the real peers built from the Go module
# proxy (SPIRE, go-spiffe programs; cached outside the checkout) -> Rust unit,
# conformance and end-to-end tests -> the local testbed (run.sh --once and the
# scenarios) -> the netns testbed (replicas on PostgreSQL) -> the SPIRE testbed (run.sh
# --once and the scenarios) -> the kind testbed's static checks -> Python interop tests
# (in .venv) -> a short fuzz smoke run of each parser (the nightly toolchain and
# cargo-fuzz are installed if missing) -> the checkout is left as the run found it.
#
# A tool that is missing and cannot be installed fails the run, naming it; nothing
# passes by being skipped. Steps other than the test runners print one line each; a
# failed step prints the end of its output, and every step's full output is kept in
# the log directory named at the end of a failed run. The last line totals every
# check: each test of cargo, pytest and the testbed scenarios, each fuzz target, and
# each other step (fmt, clippy, the library's feature builds, shellcheck, run.sh --once,
# the kind checks, the clean checkout) as one.
#
# Environment: FUZZ_SECONDS (default 15) per fuzz target; SKIP_FUZZ=1 leaves the fuzz
# smoke run out (the totals line then says so).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
root=$(pwd)

# One build per run: incremental compilation data would only take disk space (several
# GB across clippy, the test build and the feature checks) and is never reused.
export CARGO_INCREMENTAL=0

logs=$(mktemp -d "${TMPDIR:-/tmp}/fedgw-test.XXXXXX")
# Every runner's counting lines, totalled at the end.
results="$logs/results"
: >"$results"
steps_passed=0
steps_failed=0
failures=()

heading() { printf '\n==> %s\n' "$*"; }

# step NAME COMMAND...: one check; its output goes to a log, shown (the end of it)
# only when it fails.
step() {
    local name=$1 log t0=$SECONDS
    shift
    log="$logs/$(printf '%s' "$name" | tr -c 'A-Za-z0-9._-' '_').log"
    if "$@" >"$log" 2>&1; then
        steps_passed=$((steps_passed + 1))
        printf 'ok    %s (%ds)\n' "$name" $((SECONDS - t0))
    else
        steps_failed=$((steps_failed + 1))
        failures+=("$name")
        printf 'FAIL  %s (%ds); the end of its output (all of it: %s):\n' "$name" $((SECONDS - t0)) "$log"
        tail -n 60 "$log" | sed 's/^/    /'
    fi
}

# runner NAME COMMAND...: a test runner whose own summary lines count its tests; its
# output is shown as it runs. A runner that fails without a failed test in its
# summary (it did not build, or crashed) counts as one failure.
runner() {
    local name=$1 out before_failed
    shift
    out="$logs/$(printf '%s' "$name" | tr -c 'A-Za-z0-9._-' '_').out"
    before_failed=$(count_failed)
    if "$@" 2>&1 | tee "$out"; then
        cat "$out" >>"$results"
    else
        cat "$out" >>"$results"
        failures+=("$name")
        if (($(count_failed) == before_failed)); then
            steps_failed=$((steps_failed + 1))
        fi
    fi
}

# Totals of the runners' summary lines: cargo's "test result: ok. N passed; M
# failed", pytest's "N passed[, M failed] in" and the testbed's and fuzz smoke's
# "N passed[, M failed] in".
totals() {
    awk '
        /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
        / passed in | failed in / { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed,?$/) p += $(i-1); if ($(i) ~ /^failed,?$/) f += $(i-1) } }
        END { printf "%d %d\n", p, f }
    ' "$results"
}
count_failed() { totals | awk '{ print $2 }'; }

# The checkout as the run found it, to check it is left that way.
status_before=$(git status --porcelain --untracked-files=all 2>/dev/null)

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
# The shell scripts' lint and the kind overlays' build (testbed/kind/verify.sh).
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
# The netns testbed's namespaces, veths, bridges and routes.
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# Its Service address (DNAT) and, where the kernel has no netem, the delay's stand-in.
command -v iptables >/dev/null 2>&1 || need+=(iptables)
# The storage tests run a throwaway PostgreSQL server from Debian's packages.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
if ((${#need[@]})); then
    heading "installing system packages: ${need[*]}"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"; } >"$logs/apt.log" 2>&1; then
        tail -n 20 "$logs/apt.log"
        echo "FAIL: could not install ${need[*]} with apt-get; install them and run again (log: $logs/apt.log)"
        exit 1
    fi
fi

# --- formatting and lints ---------------------------------------------------------
heading "formatting and lints"
step "cargo fmt --check" cargo fmt --all --check
step "cargo clippy --all-targets -- -D warnings" cargo clippy -q --all-targets --locked -- -D warnings
# The library's core stays lean: without default features spiffe-federation builds and
# its normal dependencies include no HTTP client or server, async runtime or JOSE
# library; each feature also builds on its own (federation/src/lib.rs, "Features").
federation_features() {
    local tree crate feature found=()
    cargo check -q -p spiffe-federation --no-default-features --locked || return 1
    tree=$(cargo tree -p spiffe-federation --no-default-features -e normal --prefix none --locked) || return 1
    if ! grep -q '^spiffe-federation ' <<<"$tree"; then
        echo "cargo tree -p spiffe-federation printed no spiffe-federation line; cannot check its dependencies:"
        printf '%s\n' "$tree"
        return 1
    fi
    for crate in reqwest tokio jsonwebtoken hyper; do
        grep -q "^$crate " <<<"$tree" && found+=("$crate")
    done
    if ((${#found[@]})); then
        echo "spiffe-federation --no-default-features depends on ${found[*]};" \
            "see why: cargo tree -p spiffe-federation --no-default-features -e normal -i ${found[0]}"
        return 1
    fi
    for feature in client server jwt tls; do
        if ! cargo check -q -p spiffe-federation --no-default-features --features "$feature" --locked; then
            echo "spiffe-federation does not build with only the feature $feature"
            return 1
        fi
    done
}
step "spiffe-federation: core without default features (no reqwest, tokio, jsonwebtoken, hyper); each feature alone" \
    federation_features
step "shellcheck (scripts, testbeds, fuzz, interop, bench)" \
    shellcheck -x scripts/*.sh testbed/local/*.sh testbed/local/scenarios/*.sh testbed/spire/*.sh \
    testbed/netns/*.sh testbed/netns/scenarios/*.sh testbed/lib/*.sh \
    federation/fuzz/*.sh tests/interop/run.sh bench/*.sh .ci/run

# --- Python venv ------------------------------------------------------------------
# Before the Rust tests: tests/federation_e2e.rs runs .venv/bin/python (cryptography)
# as an independent check of the https_spiffe endpoint's SVID.
heading "python venv for the interop checks (.venv)"
step "python venv (.venv, tests/interop/requirements.txt)" "$root/tests/interop/run.sh" --setup-only

# --- real peers -------------------------------------------------------------------
# SPIRE (spire-server, spire-agent), the go-spiffe peer programs, and Kubernetes'
# kube-apiserver and kubectl with etcd, built from the Go module proxy at the versions
# tests/peers/*/go.mod pin, into a cache outside the checkout (~/.cache/fedgw-peers):
# the first run builds them (about 15 minutes on 2 cores), later runs find them. The
# tests that use them run scripts/peers.sh again and read where the binaries are.
heading "real peers (scripts/peers.sh: SPIRE, go-spiffe, kube-apiserver and etcd, cached)"
step "scripts/peers.sh (Go module proxy builds, pinned by go.sum)" "$root/scripts/peers.sh"

# --- Rust tests -------------------------------------------------------------------
heading "cargo test --workspace"
# Built first and quietly, so the log holds the tests rather than the compiler's
# progress.
step "cargo test --workspace --no-run (build)" cargo test -q --workspace --locked --no-run
# --no-fail-fast: a failing test binary does not stop the ones after it, so the totals
# count every test and a failure never hides another.
runner "cargo test --workspace" cargo test --workspace --locked --no-fail-fast

# --- local testbed ---------------------------------------------------------------
# Real fedgw processes on loopback (fedgw is built by now): rotation, outage, rolled-back
# sequence, kill -9 and restart, relationship deletion (docs/testbed-local.md).
heading "local testbed (fedgw processes on loopback)"
step "testbed/local/run.sh --once (the README's first command)" "$root/testbed/local/run.sh" --once
runner "testbed/local scenarios" "$root/testbed/local/scenarios.sh"

# --- netns testbed ----------------------------------------------------------------
# Three fedgw replicas on one PostgreSQL in network namespaces (two datacenters joined
# by a router): replication, kill -9 take-over, a partition from the database,
# fencing, a PostgreSQL restart under writes (docs/testbed-netns.md). Skipped, saying
# why, only where network namespaces cannot be made (not root).
heading "netns testbed (replicas on PostgreSQL in network namespaces)"
fedgw_bin="${CARGO_TARGET_DIR:-target}/debug/fedgw"
[[ $fedgw_bin == /* ]] || fedgw_bin="$root/$fedgw_bin"
runner "testbed/netns scenarios" env FEDGW="$fedgw_bin" "$root/testbed/netns/scenarios.sh"

# --- SPIRE testbed -----------------------------------------------------------------
# Real SPIRE servers and agents (scripts/peers.sh built them), a fedgw per trust domain
# as a workload of its SPIRE, go-spiffe workloads: the mesh, CA and JWT key rotation,
# an outage, kill -9, deletion (docs/spire.md).
heading "SPIRE testbed (real SPIRE, fedgw as a SPIRE workload, go-spiffe workloads)"
step "testbed/spire/run.sh --once" "$root/testbed/spire/run.sh" --once
runner "testbed/spire scenarios" "$root/testbed/spire/scenarios.sh"

# --- kind testbed, checked statically (no Docker or kind here) --------------------
heading "kind testbed, static checks"
step "testbed/kind/verify.sh (YAML, referenced files, shellcheck, kustomize)" "$root/testbed/kind/verify.sh"

# --- independent implementations (Python) -----------------------------------------
heading "interop tests against independent implementations (PyPI spiffe, cryptography)"
runner "interop (pytest)" "$root/tests/interop/run.sh" -q -p no:cacheprovider

# --- fuzz smoke -------------------------------------------------------------------
fuzz_note=""
if [[ "${SKIP_FUZZ:-0}" == 1 ]]; then
    fuzz_note=" (fuzz smoke not run: SKIP_FUZZ=1)"
    heading "fuzz smoke not run (SKIP_FUZZ=1)"
else
    heading "fuzz smoke (${FUZZ_SECONDS:-15}s per target)"
    runner "fuzz smoke" "$root/federation/fuzz/smoke.sh" "${FUZZ_SECONDS:-15}"
fi

# --- the checkout is left as the run found it -------------------------------------
heading "the checkout"
unchanged() {
    local after
    after=$(git status --porcelain --untracked-files=all)
    if [[ "$after" != "$status_before" ]]; then
        echo "the run changed the checkout (git status --porcelain before and after):"
        diff <(printf '%s\n' "$status_before") <(printf '%s\n' "$after")
        return 1
    fi
}
step "git status unchanged by the run (tests write only to ignored or temporary places)" unchanged

# --- one closing line for every check ---------------------------------------------
read -r tests_passed tests_failed < <(totals)
passed=$((tests_passed + steps_passed))
failed=$((tests_failed + steps_failed))
if ((failed)); then
    printf '\nfailed: %s\n' "$(printf '%s; ' "${failures[@]}" | sed 's/; $//')"
    echo "logs: $logs"
    echo "total: $passed passed, $failed failed$fuzz_note"
    exit 1
fi
rm -rf "$logs"
printf '\n'
echo "total: $passed passed, $failed failed$fuzz_note"
