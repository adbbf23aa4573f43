#!/usr/bin/env bash
# Bring up three SPIFFE trust domains on loopback, each with a real SPIRE server
# (sqlite datastore, join_token node attestation) and agent, a fedgw registered as a
# workload of its own SPIRE (its local bundle and its https_spiffe endpoint's SVID come
# from its agent), and a go-spiffe workload. Each SPIRE server federates only with its
# own fedgw (/relay/<td>, https_spiffe, the fedgw's own SPIFFE ID); the fedgws federate
# with each other, mixing https_spiffe and https_web. A fourth domain, not federated,
# has SPIRE and a workload only.
#
#   testbed/spire/run.sh [--once]
#
# It waits until every SPIRE server holds every other federated domain's bundle, then
# proves the mesh: every workload completes mTLS with every other federated domain's
# workload (go-spiffe, authorising the peer's exact SPIFFE ID), and the unfederated
# domain's workload is refused. With --once it then stops everything and exits (0 if
# the mesh was proved); without, it keeps running until Ctrl-C and prints where the
# sockets are. Needs Go (SPIRE and the go-spiffe peers are built from the Go module
# proxy by scripts/peers.sh, cached), openssl, python3 and the Rust toolchain. See
# docs/spire.md.
set -euo pipefail

# shellcheck source=testbed/spire/lib.sh
source "$(dirname "$0")/lib.sh"

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }

once=0
while (($#)); do
    case "$1" in
    --once) once=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
    shift
done

sp_build
sp_up 3 1
sp_prove_mesh

if ((once)); then
    sp_log "the mesh is proved; stopping"
    exit 0
fi
for ((i = 0; i < ${#SP_TD[@]}; i++)); do
    printf '  %-18s SPIRE server %s  agent %s  fedgw admin %s\n' "${SP_TD[i]}" \
        "$(sp_server_sock "$i")" "$(sp_agent_sock "$i")" "$(sp_admin "$i")"
done
sp_log "running; Ctrl-C stops everything"
while true; do sleep 3600; done
