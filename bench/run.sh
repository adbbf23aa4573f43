#!/usr/bin/env bash
# Runs fedgw's benchmarks in release mode and writes their tables into
# docs/benchmarks.md. Not part of the test command: numbers need a quiet machine.
#
#   bench/run.sh                 every benchmark
#   ROUNDS=1000 bench/run.sh     more rounds for the change -> sinks latency
#
# Needs only the Rust toolchain (the README's set-up). Each benchmark replaces its
# own section of docs/benchmarks.md, between its <!-- name:start/end --> markers, and
# the machine section is rewritten from this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
doc=docs/benchmarks.md

log() { printf '\n==> %s\n' "$*"; }

log "machine"
cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
tmpfs_type=$(df -T "${TMPDIR:-/tmp}" | awk 'NR == 2 {print $2}')
machine=$(printf -- '- %s, %s logical CPUs, %s GiB RAM\n- %s %s, %s\n- data directories in %s (%s, real fsync unless tmpfs)\n- measured %s\n' \
    "${cpu:-unknown CPU}" "$(nproc)" "$(free -g | awk '/^Mem:/ {print $2}')" \
    "$(uname -s)" "$(uname -r)" "$(rustc --version)" "${TMPDIR:-/tmp}" "$tmpfs_type" \
    "$(date -u +%Y-%m-%d)")
printf '%s\n' "$machine"
python3 - "$doc" "$machine" <<'PY'
import sys
path, text = sys.argv[1], sys.argv[2]
doc = open(path).read()
start, end = "<!-- machine:start -->", "<!-- machine:end -->"
i, j = doc.index(start), doc.index(end)
open(path, "w").write(doc[: i + len(start)] + "\n" + text + "\n" + doc[j:])
PY

log "build (release)"
cargo build --release --locked -q --example sink_latency

log "change -> sinks latency"
./target/release/examples/sink_latency --rounds "${ROUNDS:-500}" --markdown "$doc"

log "done: $doc"
