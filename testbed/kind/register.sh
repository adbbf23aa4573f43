#!/usr/bin/env bash
# Register, in each cluster's SPIRE server, the node alias, fedgw and the demo
# workload. fedgw's entry (spiffe://<td>/ns/fedgw/sa/fedgw) gives it the local bundle
# and the https_spiffe SVID it takes from the agent; no federatesWith, it fetches the
# peers' bundles itself. The demo's entry federates with both peer trust domains (so
# the agent hands their bundles to Envoy); SPIRE refuses it until it holds those
# bundles, fetched from this cluster's fedgw relay, so it is created once they are
# there (up to REGISTER_WAIT seconds per cluster, default 300).
set -euo pipefail

clusters=(east west north)
wait_s="${REGISTER_WAIT:-300}"

srv() {
    local c="$1"
    shift
    kubectl --context "kind-fedgw-$c" -n spire exec spire-server-0 -- /opt/spire/bin/spire-server "$@"
}

# ensure_entry C SPIFFE_ID ARGS...: create the entry unless one with that ID exists.
ensure_entry() {
    local c="$1" id="$2" found
    shift 2
    found="$(srv "$c" entry show -spiffeID "$id")"
    if [[ "$found" != *"Entry ID"* ]]; then
        srv "$c" entry create -spiffeID "$id" "$@"
    fi
}

for c in "${clusters[@]}"; do
    td="$c.kind.test"
    node_id="spiffe://$td/ns/spire/sa/spire-agent"
    ensure_entry "$c" "$node_id" -node \
        -selector "k8s_psat:cluster:fedgw-$c" \
        -selector "k8s_psat:agent_ns:spire" -selector "k8s_psat:agent_sa:spire-agent"
    # The ID is endpoints.httpsSpiffe.endpointSpiffeId in overlays/<c>/values.yaml and in server.conf.
    ensure_entry "$c" "spiffe://$td/ns/fedgw/sa/fedgw" -parentID "$node_id" \
        -selector k8s:ns:fedgw -selector k8s:sa:fedgw
done

# has_bundle C PEER: cluster C's SPIRE server holds PEER's bundle; if not, ask every
# fedgw replica and the SPIRE server to fetch it now instead of at their next poll
# (a failed refresh is expected until the chain is up, and only reported).
has_bundle() {
    local c="$1" peer="$2" ctx="kind-fedgw-$1" pod
    if srv "$c" bundle list -id "spiffe://$peer.kind.test" >/dev/null 2>&1; then
        return 0
    fi
    for pod in $(kubectl --context "$ctx" -n fedgw get pods -l app=fedgw -o name); do
        kubectl --context "$ctx" -n fedgw exec "$pod" -- \
            fedgw federation refresh "$peer.kind.test" --admin unix:/var/lib/fedgw/admin.sock >/dev/null ||
            echo "register.sh: $c: $pod cannot fetch $peer.kind.test yet" >&2
    done
    srv "$c" federation refresh -id "spiffe://$peer.kind.test" >/dev/null ||
        echo "register.sh: $c: SPIRE server cannot fetch $peer.kind.test from the relay yet" >&2
    return 1
}

for c in "${clusters[@]}"; do
    td="$c.kind.test"
    federates=()
    for peer in "${clusters[@]}"; do
        [[ "$peer" == "$c" ]] && continue
        federates+=(-federatesWith "spiffe://$peer.kind.test")
        deadline=$((SECONDS + wait_s))
        until has_bundle "$c" "$peer"; do
            if ((SECONDS >= deadline)); then
                echo "register.sh: $c: SPIRE server has no bundle of $peer.kind.test after ${wait_s}s" >&2
                echo "  (fedgw status: kubectl --context kind-fedgw-$c -n fedgw exec deploy/fedgw -- fedgw status --admin unix:/var/lib/fedgw/admin.sock)" >&2
                exit 1
            fi
            sleep 5
        done
        echo "register.sh: $c: SPIRE server holds the bundle of $peer.kind.test"
    done
    ensure_entry "$c" "spiffe://$td/ns/demo/sa/demo" \
        -parentID "spiffe://$td/ns/spire/sa/spire-agent" \
        -selector k8s:ns:demo -selector k8s:sa:demo \
        "${federates[@]}"
done
