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
# shellcheck source=testbed/lib/scenarios.sh
source "$here/../lib/scenarios.sh"

names=("$@")
if ((${#names[@]} == 0)); then
    names=(rotation outage rollback kill9 deletion)
fi
for name in "${names[@]}"; do
    [[ -x "$here/scenarios/$name.sh" ]] || { echo "scenarios.sh: no scenario $name" >&2; exit 2; }
done

tb_build
export FEDGW

# One scenario: its own script, in its own process.
tb_run_scenario() { "$here/scenarios/$1.sh"; }
run_scenarios testbed/local tb_run_scenario "${names[@]}"
