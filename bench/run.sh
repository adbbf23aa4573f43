#!/usr/bin/env bash
# Runs fedgw's benchmarks in release mode and writes their tables into
# docs/benchmarks.md. Not part of the test command: numbers need a quiet machine.
#
#   bench/run.sh                        every benchmark but spire-rotation
#   bench/run.sh throughput scale       only these (any of: sinks throughput scale disk
#                                       replicas spire-rotation)
#   ROUNDS=1000 bench/run.sh sinks      more rounds for the change -> sinks latency
#   SCALE_DOMAINS=1000 SCALE_RUNS=1 bench/run.sh scale
#   SCALE_DEADLINE=300 bench/run.sh scale   wait longer for a first round
#   DISK_BASELINE=/path/to/older/fedgw bench/run.sh disk   before/after columns
#   DISK_CHANGES=500 bench/run.sh disk      accepted changes of a 1 MiB bundle
#   REPLICAS_DOMAINS=1000 bench/run.sh replicas   replicas on PostgreSQL (10000)
#   REPLICAS_ROUNDS=200 REPLICAS_LEASE_TIMES=3,15 bench/run.sh replicas
#   bench/run.sh spire-rotation         X.509 CA rotation between real SPIRE servers,
#                                       federating directly and through fedgw
#                                       (bench/spire_rotation.sh, about 8 minutes)
#   ROTATIONS=3 bench/run.sh spire-rotation   fewer rotations per set-up (8)
#
# Needs the Rust toolchain (the README's set-up), python3, curl and openssl; installs
# nginx and wrk from the distribution (apt-get, with sudo when not root) if missing.
# spire-rotation also needs Go (scripts/peers.sh builds SPIRE and the go-spiffe
# workload, cached), which is why it is not in the default set.
# replicas also needs PostgreSQL's server binaries (Debian's postgresql package, found
# in /usr/lib/postgresql/*/bin or $PG_BIN_DIR); it starts a throwaway server of its own.
# Each benchmark replaces its own section of docs/benchmarks.md, between its
# <!-- name:start/end --> markers, and the machine section is rewritten from this
# machine.
set -euo pipefail
cd "$(dirname "$0")/.."
doc=docs/benchmarks.md

log() { printf '\n==> %s\n' "$*"; }

# Replace the section between <!-- $1:start --> and <!-- $1:end --> of $doc with $2.
replace_section() {
    python3 - "$doc" "$1" "$2" <<'PY'
import sys
path, name, text = sys.argv[1], sys.argv[2], sys.argv[3]
doc = open(path).read()
start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
i, j = doc.index(start), doc.index(end)
open(path, "w").write(doc[: i + len(start)] + "\n" + text.rstrip("\n") + "\n" + doc[j:])
PY
}

if (($# == 0)); then set -- sinks throughput scale disk replicas; fi
for b in "$@"; do
    case $b in
    sinks | throughput | scale | disk | replicas | spire-rotation) ;;
    *)
        echo "unknown benchmark $b (sinks, throughput, scale, disk, replicas, spire-rotation)" >&2
        exit 2
        ;;
    esac
done
selected=" $* "
run() { [[ $selected == *" $1 "* ]]; }

if run throughput && ! { command -v nginx && command -v wrk; } >/dev/null; then
    log "install nginx and wrk"
    as_root=()
    if [[ $(id -u) != 0 ]]; then as_root=(sudo); fi
    "${as_root[@]}" apt-get update -q
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx wrk
fi
for tool in python3 curl openssl; do
    command -v "$tool" >/dev/null || { echo "bench/run.sh needs $tool" >&2; exit 1; }
done

log "machine"
cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
tmpfs_type=$(df -T "${TMPDIR:-/tmp}" | awk 'NR == 2 {print $2}')
machine=$(printf -- '- %s, %s logical CPUs, %s GiB RAM\n- %s %s, %s\n- data directories in %s (%s, real fsync unless tmpfs)\n- load average when the run started: %s\n- measured %s\n' \
    "${cpu:-unknown CPU}" "$(nproc)" "$(free -g | awk '/^Mem:/ {print $2}')" \
    "$(uname -s)" "$(uname -r)" "$(rustc --version)" "${TMPDIR:-/tmp}" "$tmpfs_type" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$(date -u +%Y-%m-%d)")
printf '%s\n' "$machine"
replace_section machine "$machine"

log "build (release)"
# Two invocations: the examples pull in dev-dependency features (tokio's test-util),
# and the fedgw binary measured must be the one `cargo build --release` makes.
cargo build --release --locked -q --bin fedgw
cargo build --release --locked -q --example sink_latency --example scale --example disk \
    --example replicas

if run sinks; then
    log "change -> sinks latency"
    ./target/release/examples/sink_latency --rounds "${ROUNDS:-500}" --markdown "$doc"
fi

if run throughput; then
    log "bundle endpoint throughput: fedgw vs nginx"
    table=$(bench/throughput.sh target/release/fedgw)
    printf '%s\n' "$table"
    replace_section throughput "$table"
fi

if run scale; then
    log "scale: ${SCALE_DOMAINS:-1000,10000} foreign domains"
    ./target/release/examples/scale --fedgw target/release/fedgw \
        --domains "${SCALE_DOMAINS:-1000,10000}" --runs "${SCALE_RUNS:-3,1}" \
        --deadline "${SCALE_DEADLINE:-120}" --markdown "$doc"
fi

if run disk; then
    log "disk: ${DISK_CHANGES:-500} accepted changes of a 1 MiB bundle"
    baseline=()
    if [[ -n ${DISK_BASELINE:-} ]]; then baseline=(--baseline "$DISK_BASELINE"); fi
    ./target/release/examples/disk --fedgw target/release/fedgw "${baseline[@]}" \
        --changes "${DISK_CHANGES:-500}" --markdown "$doc"
fi

if run replicas; then
    log "replicas on PostgreSQL: ${REPLICAS_DOMAINS:-10000} foreign domains over 1 and 3 replicas"
    ./target/release/examples/replicas --fedgw target/release/fedgw \
        --domains "${REPLICAS_DOMAINS:-10000}" --rounds "${REPLICAS_ROUNDS:-200}" \
        --lease-times "${REPLICAS_LEASE_TIMES:-3,15}" --deadline "${REPLICAS_DEADLINE:-300}" \
        --markdown "$doc"
fi

if run spire-rotation; then
    log "X.509 CA rotation across SPIRE federation: directly and through fedgw"
    table=$(FEDGW=target/release/fedgw bench/spire_rotation.sh)
    printf '%s\n' "$table"
    replace_section spire-rotation "$table"
fi

log "done: $doc"
