#!/usr/bin/env bash
# The cross-cluster call: the demo client in each cluster calls its Envoy's outbound
# listener, which opens mTLS to the peer cluster's Envoy with SVIDs and bundles from
# SPIRE's SDS. The peer's bundle reached SPIRE through the two fedgw gateways.
set -euo pipefail

fail=0
for c in east west; do
    if [[ "$c" == east ]]; then peer=west; else peer=east; fi
    ctx="kind-fedgw-$c"
    echo "== $c: fedgw status"
    kubectl --context "$ctx" -n fedgw exec deploy/fedgw -- fedgw status --admin unix:/var/lib/fedgw/admin.sock
    echo "== $c -> $peer over mTLS"
    got=""
    for _ in $(seq 30); do
        if got="$(kubectl --context "$ctx" -n demo exec deploy/demo -c client -- \
            curl -sS --max-time 5 http://127.0.0.1:9000/ 2>&1)" && [[ "$got" == *"hello from $peer.kind.test"* ]]; then
            break
        fi
        sleep 4
    done
    if [[ "$got" == *"hello from $peer.kind.test"* ]]; then
        echo "ok: $got"
    else
        echo "FAILED: $c -> $peer: $got" >&2
        fail=1
    fi
done
exit "$fail"
