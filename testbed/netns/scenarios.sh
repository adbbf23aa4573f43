#!/usr/bin/env bash
# Run the netns testbed's scenarios (testbed/netns/scenarios/*.sh): each builds its own
# network of namespaces (two datacenters and a router with netem), PostgreSQL and three
# fedgw replicas sharing it, and removes them when it ends. One line per scenario
# (with what it measured), then:
#
#   testbed/netns: 5 passed in 52.1s     (or: 4 passed, 1 failed in ...)
#
#   sudo testbed/netns/scenarios.sh [NAME...]   e.g. kill9 partition; all by default
#
# Needs root (network namespaces), iproute2 with tc netem, PostgreSQL 15 (Debian's
# /usr/lib/postgresql/15/bin), curl, openssl and .venv/bin/python with
# `cryptography`. Where namespaces cannot be made it says why and exits 0 with
# `testbed/netns: skipped (<reason>)`. See docs/testbed-netns.md.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=testbed/netns/lib.sh
source "$here/lib.sh"

all=(replicated kill9 partition fencing pg-restart)
names=("$@")
if ((${#names[@]} == 0)); then
    names=("${all[@]}")
fi
for name in "${names[@]}"; do
    [[ -x "$here/scenarios/$name.sh" ]] || { echo "scenarios.sh: no scenario $name (${all[*]})" >&2; exit 2; }
done

reason=$(nb_why_not)
if [[ -n "$reason" ]]; then
    printf '!!! testbed/netns: network namespaces cannot be made here: %s; the netns scenarios are SKIPPED !!!\n' "$reason" >&2
    echo "testbed/netns: skipped ($reason)"
    exit 0
fi

nb_build
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
    else
        grep -E '^(measured|note): ' "$out" | sed 's/^/    /' || true
    fi
    rm -f "$out"
done

ms=$((($(date +%s%N) - start) / 1000000))
elapsed="$((ms / 1000)).$((ms % 1000 / 100))s"
if ((failed)); then
    echo "failed: ${failures[*]}"
    echo "testbed/netns: $passed passed, $failed failed in $elapsed"
    exit 1
fi
echo "testbed/netns: $passed passed in $elapsed"
