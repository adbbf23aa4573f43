#!/usr/bin/env bash
# Register, in each cluster's SPIRE server, the node alias and the demo workload
# (federated with both peer trust domains, so the agent hands their bundles to Envoy).
set -euo pipefail

clusters=(east west north)
for c in "${clusters[@]}"; do
    federates=()
    for peer in "${clusters[@]}"; do
        [[ "$peer" == "$c" ]] || federates+=(-federatesWith "spiffe://$peer.kind.test")
    done
    ctx="kind-fedgw-$c"
    td="$c.kind.test"
    srv=(kubectl --context "$ctx" -n spire exec spire-server-0 -- /opt/spire/bin/spire-server)
    node_id="spiffe://$td/ns/spire/sa/spire-agent"
    if ! "${srv[@]}" entry show -spiffeID "$node_id" | grep -q "Entry ID"; then
        "${srv[@]}" entry create -node -spiffeID "$node_id" \
            -selector "k8s_psat:cluster:fedgw-$c" \
            -selector "k8s_psat:agent_ns:spire" -selector "k8s_psat:agent_sa:spire-agent"
    fi
    wl_id="spiffe://$td/ns/demo/sa/demo"
    if ! "${srv[@]}" entry show -spiffeID "$wl_id" | grep -q "Entry ID"; then
        "${srv[@]}" entry create -parentID "$node_id" -spiffeID "$wl_id" \
            -selector k8s:ns:demo -selector k8s:sa:demo \
            "${federates[@]}"
    fi
done
