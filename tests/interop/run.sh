#!/usr/bin/env bash
# Cross-check spiffe-federation against independent Python implementations.
#
# Usage (from anywhere): tests/interop/run.sh [pytest args...]
#                         tests/interop/run.sh --setup-only
# Creates .venv in the repository root if missing, installs requirements.txt, builds
# the Rust probe once (honouring CARGO_TARGET_DIR, else ./target) and runs pytest.
# With --setup-only it stops after the venv: the Rust end-to-end tests
# (tests/federation_e2e.rs) run .venv/bin/python themselves.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
if [ "${1:-}" = "--setup-only" ]; then
    exit 0
fi

cargo build --quiet -p spiffe-federation --example interop_probe
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac
export INTEROP_PROBE="$target_dir/debug/examples/interop_probe"
if [ ! -x "$INTEROP_PROBE" ]; then
    echo "run.sh: probe not found at $INTEROP_PROBE" >&2
    exit 1
fi

exec .venv/bin/python -m pytest tests/interop "$@"
