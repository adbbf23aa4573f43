#!/usr/bin/env bash
# Run the local testbed's scenarios (testbed/local/scenarios/*.sh), each with its own
# gateways in its own work directory, one after the other, and end with one line:
#
#   testbed/local: 5 passed in 52.1s     (or: 4 passed, 1 failed in ...)
#
#   testbed/local/scenarios.sh [NAME...]     e.g. rotation outage; all by default
#
# A failed scenario's output is printed in full (with its gateways' last log lines
# and the kept work directory). Needs curl, openssl and .venv/bin/python with
# `cryptography` (./scripts/test.sh installs them). See docs/testbed-local.md.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=testbed/local/lib.sh
source "$here/lib.sh"

names=("$@")
if ((${#names[@]} == 0)); then
    names=(rotation outage rollback kill9 deletion)
fi
for name in "${names[@]}"; do
    [[ -x "$here/scenarios/$name.sh" ]] || { echo "scenarios.sh: no scenario $name" >&2; exit 2; }
done

tb_build
export FEDGW

start=$(date +%s%N)
passed=0
failed=0
failures=()
for name in "${names[@]}"; do
    t0=$(date +%s%N)
    out=$(mktemp)
    if "$here/scenarios/$name.sh" >"$out" 2>&1; then
        status=ok
        passed=$((passed + 1))
    else
        status=FAILED
        failed=$((failed + 1))
        failures+=("$name")
    fi
    ms=$((($(date +%s%N) - t0) / 1000000))
    printf 'scenario %-10s %s (%d.%01ds)\n' "$name" "$status" $((ms / 1000)) $((ms % 1000 / 100))
    if [[ "$status" != ok ]]; then
        sed 's/^/    /' "$out"
    fi
    rm -f "$out"
done

ms=$((($(date +%s%N) - start) / 1000000))
elapsed="$((ms / 1000)).$((ms % 1000 / 100))s"
if ((failed)); then
    echo "failed: ${failures[*]}"
    echo "testbed/local: $passed passed, $failed failed in $elapsed"
    exit 1
fi
echo "testbed/local: $passed passed in $elapsed"
