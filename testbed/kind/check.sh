#!/usr/bin/env bash
# The cross-cluster calls, around the ring east -> west -> north -> east: the demo
# client in each cluster calls its Envoy's outbound listener, which opens mTLS to the
# next cluster's Envoy with SVIDs and bundles from SPIRE's SDS. The peers' bundles
# reached SPIRE through the fedgw gateways (a full mesh of relationships). First each
# fedgw's relationships and status.
set -euo pipefail

fail=0
declare -A next=([east]=west [west]=north [north]=east)
for c in east west north; do
    peer="${next[$c]}"
    ctx="kind-fedgw-$c"
    echo "== $c: fedgw relationships and status"
    kubectl --context "$ctx" -n fedgw exec deploy/fedgw -- fedgw federation list --admin unix:/var/lib/fedgw/admin.sock
    kubectl --context "$ctx" -n fedgw exec deploy/fedgw -- fedgw status --admin unix:/var/lib/fedgw/admin.sock
    # What the Lease holder wrote: each relationship's status, each peer's bundle.
    kubectl --context "$ctx" get clusterfederatedtrustdomains
    kubectl --context "$ctx" -n fedgw get lease fedgw-writer
    for other in east west north; do
        [[ "$other" == "$c" ]] && continue
        ready="$(kubectl --context "$ctx" get clusterfederatedtrustdomain "$other" \
            -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')"
        if [[ "$ready" != "True" ]]; then
            echo "FAILED: $c: ClusterFederatedTrustDomain $other is not Ready ($ready)" >&2
            fail=1
        fi
    done
    # ClusterTrustBundles need Kubernetes 1.37 (or the certificates.k8s.io/v1beta1
    # feature gates before it): listed when the cluster serves them.
    kubectl --context "$ctx" get clustertrustbundles -l app.kubernetes.io/managed-by=fedgw || true
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
