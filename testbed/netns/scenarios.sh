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
# shellcheck source=testbed/lib/scenarios.sh
source "$here/../lib/scenarios.sh"

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

# One scenario: its own script, in its own process; its measurements and notes are
# repeated under its line.
nb_run_scenario() { "$here/scenarios/$1.sh"; }
run_scenarios --show '^(measured|note): ' testbed/netns nb_run_scenario "${names[@]}"
