#!/usr/bin/env bash
# Create three kind clusters (fedgw-east, fedgw-west, fedgw-north), build and load the
# fedgw image, deploy SPIRE and the demo workload (kustomize overlays) and fedgw (the
# Helm chart, charts/fedgw, with overlays/<c>/values.yaml) in each, and wire the
# clusters together in a full mesh through the kind docker network: each fedgw polls
# the two others (overlays/*/federation.yaml, ClusterFederatedTrustDomain objects that
# fedgw watches, writing their status and a ClusterTrustBundle per peer domain) and
# each SPIRE server federates with its own fedgw's relay. fedgw is a workload of its
# cluster's SPIRE: register.sh gives it its entry, then waits for the peers' bundles in
# SPIRE before the demo's entry. Needs docker, kind, kubectl and openssl, and helm (on
# the PATH, or built by scripts/peers.sh helm, which needs Go).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
image="fedgw:dev"
clusters=(east west north)
work="$here/.work"
mkdir -p "$work"

for tool in docker kind kubectl openssl; do
    command -v "$tool" >/dev/null || { echo "up.sh: $tool is required" >&2; exit 1; }
done
if command -v helm >/dev/null; then
    helm=helm
else
    helm="$("$root/scripts/peers.sh" helm | sed -n 's/^helm=//p')/helm"
fi

log() { printf '\n== %s\n' "$*"; }

log "kind clusters"
for c in "${clusters[@]}"; do
    if ! kind get clusters | grep -qx "fedgw-$c"; then
        kind create cluster --name "fedgw-$c" --wait 120s
    fi
done

log "fedgw image"
docker build -f "$here/Dockerfile" -t "$image" "$root"
for c in "${clusters[@]}"; do
    kind load docker-image "$image" --name "fedgw-$c"
done

# The https_web certificates the gateways show each other (the https_spiffe one, for
# the SPIRE server, comes from the SPIRE agent).
log "testbed CA and fedgw certificates"
if [[ ! -f "$work/ca.crt" ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj "/CN=fedgw kind testbed CA" -keyout "$work/ca.key" -out "$work/ca.crt"
fi
for c in "${clusters[@]}"; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=fedgw.$c.kind.test" -keyout "$work/$c.key" -out "$work/$c.csr"
    printf 'subjectAltName=DNS:fedgw.%s.kind.test\n' "$c" >"$work/$c.ext"
    openssl x509 -req -in "$work/$c.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
        -CAcreateserial -days 30 -extfile "$work/$c.ext" -out "$work/$c.crt"
done

node_ip() {
    docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "fedgw-$1-control-plane"
}

for c in "${clusters[@]}"; do
    ctx="kind-fedgw-$c"
    # The peers' gateways and demo services, reached on the peers' kind nodes
    # (NodePorts 30443 and 30444) through hostAliases.
    aliases=()
    for peer in "${clusters[@]}"; do
        [[ "$peer" == "$c" ]] && continue
        aliases+=("{\"ip\":\"$(node_ip "$peer")\",\"hostnames\":[\"fedgw.$peer.kind.test\",\"demo.$peer.kind.test\"]}")
    done
    host_aliases="[$(IFS=,; echo "${aliases[*]}")]"
    log "deploy $c (peers: $host_aliases)"
    kubectl --context "$ctx" apply -f "$here/base/namespace.yaml" -f "$here/spire/namespace.yaml"
    kubectl --context "$ctx" create namespace demo --dry-run=client -o yaml | kubectl --context "$ctx" apply -f -
    kubectl --context "$ctx" -n fedgw create secret generic fedgw-tls \
        --from-file=tls.crt="$work/$c.crt" --from-file=tls.key="$work/$c.key" \
        --from-file=ca.crt="$work/ca.crt" --dry-run=client -o yaml | kubectl --context "$ctx" apply -f -
    kubectl --context "$ctx" apply -k "$here/overlays/$c"
    "$helm" --kube-context "$ctx" upgrade --install fedgw "$root/charts/fedgw" \
        --namespace fedgw -f "$here/overlays/$c/values.yaml" \
        --set-json "hostAliases=$host_aliases"
    # The relationships, once the chart has installed their CRD.
    kubectl --context "$ctx" apply -f "$here/overlays/$c/federation.yaml"
    kubectl --context "$ctx" -n demo patch deployment demo --type merge -p \
        "{\"spec\":{\"template\":{\"spec\":{\"hostAliases\":$host_aliases}}}}"
done

for c in "${clusters[@]}"; do
    ctx="kind-fedgw-$c"
    log "wait for $c"
    kubectl --context "$ctx" -n spire rollout status statefulset/spire-server --timeout 180s
    kubectl --context "$ctx" -n spire rollout status daemonset/spire-agent --timeout 180s
    # Ready once its admin socket answers, also before register.sh has created its
    # entry: until then fedgw status shows the local domain failing ("no
    # registration entry matches this process") and the https_spiffe port is closed.
    kubectl --context "$ctx" -n fedgw rollout status deployment/fedgw --timeout 300s
    # The relationships of federation.yaml (origin kubernetes), and their status.
    kubectl --context "$ctx" -n fedgw exec deploy/fedgw -- \
        fedgw federation list --admin unix:/var/lib/fedgw/admin.sock
    kubectl --context "$ctx" get clusterfederatedtrustdomains
done

"$here/register.sh"

for c in "${clusters[@]}"; do
    kubectl --context "kind-fedgw-$c" -n demo rollout status deployment/demo --timeout 180s
done
log "up: run $here/check.sh"
