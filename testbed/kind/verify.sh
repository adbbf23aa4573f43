#!/usr/bin/env bash
# Static checks of the kind testbed, run by scripts/test.sh (no Docker or kind needed):
# every YAML document parses, every file named by a kustomization or the Dockerfile
# exists, each overlay builds with `kubectl kustomize` (offline) and fedgw's part of it
# renders with the chart (`helm template charts/fedgw -f overlays/<c>/values.yaml`;
# helm from the PATH or built by scripts/peers.sh helm), the scripts pass
# `bash -n` and shellcheck (both tools are required: a missing one fails, naming the
# package), and a client-side `kubectl apply --dry-run` runs as well when kubectl can
# reach an API server (it needs one for discovery). The server-side dry run of every
# overlay against a real API server is tests/kubernetes.rs's.
# Each overlay has a federation.yaml of ClusterFederatedTrustDomain objects, and the
# scripts name exactly the overlays' clusters. fedgw is a workload of its cluster's
# SPIRE, and what has to agree for that does: the agent's socket (agent.conf, the
# hostPath it shares with fedgw and Envoy, fedgw.toml's workload_api_socket keys,
# envoy.yaml), fedgw's SPIFFE ID (fedgw.toml, register.sh, each server.conf's
# federates_with), the https_spiffe port (fedgw.toml, Deployment, Service
# fedgw-spiffe), and neither the k8sbundle notifier nor its ConfigMap is left. The
# fedgw.toml the chart renders for each overlay is loaded with fedgw's own loader, and
# the federation.yaml files parsed with fedgw's own ClusterFederatedTrustDomain
# parser, by tests/testbed_kind.rs.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="$root/.venv/bin/python"
[[ -x "$python" ]] || python=python3
cd "$here"

if command -v helm >/dev/null; then
    helm=helm
else
    helm="$("$root/scripts/peers.sh" helm | sed -n 's/^helm=//p')/helm"
fi
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
for overlay in "$here"/overlays/*/; do
    name="$(basename "$overlay")"
    "$helm" template fedgw "$root/charts/fedgw" --namespace fedgw \
        -f "$overlay/values.yaml" >"$rendered/$name.yaml"
    echo "testbed/kind: overlay $name: the chart renders ($(grep -c '^kind:' "$rendered/$name.yaml") objects)"
done
export RENDERED="$rendered"

echo "testbed/kind: YAML parses, referenced files exist"
"$python" - <<'PY'
import pathlib, sys
import yaml
bad = 0
here = pathlib.Path(".")
for path in sorted(here.rglob("*.yaml")):
    if ".work" in path.parts:
        continue
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as err:
        print(f"FAIL {path}: {err}"); bad += 1; continue
    if not docs:
        print(f"FAIL {path}: no YAML document"); bad += 1
    if path.name == "kustomization.yaml":
        k = docs[0]
        refs = list(k.get("resources", []))
        for gen in k.get("configMapGenerator", []):
            refs += gen.get("files", [])
        for ref in refs:
            if not (path.parent / ref).exists():
                print(f"FAIL {path}: {ref} does not exist"); bad += 1
overlays = sorted(p.name for p in (here / "overlays").iterdir() if p.is_dir())
for name in overlays:
    fed = here / "overlays" / name / "federation.yaml"
    if not fed.exists():
        print(f"FAIL overlays/{name}: no federation.yaml"); bad += 1; continue
    for doc in yaml.safe_load_all(fed.read_text()):
        if doc is not None and doc.get("kind") != "ClusterFederatedTrustDomain":
            print(f"FAIL {fed}: kind {doc.get('kind')!r}"); bad += 1
for script in ["up.sh", "register.sh", "check.sh", "down.sh"]:
    text = (here / script).read_text()
    for name in overlays:
        if name not in text:
            print(f"FAIL {script}: does not name cluster {name}"); bad += 1
for ref in ["../../Cargo.toml", "../../Cargo.lock", "../../.dockerignore"]:
    if not (here / ref).exists():
        print(f"FAIL Dockerfile context: {ref} missing"); bad += 1
sys.exit(1 if bad else 0)
PY

echo "testbed/kind: fedgw is a workload of its cluster's SPIRE (socket, SPIFFE IDs, relay URLs agree)"
"$python" - <<'PY'
import os, pathlib, re, sys, tomllib
import yaml
bad = 0
rendered = pathlib.Path(os.environ["RENDERED"])
def fail(msg):
    global bad
    print(f"FAIL {msg}"); bad += 1
here = pathlib.Path(".")
def docs(path):
    return [d for d in yaml.safe_load_all((here / path).read_text()) if d is not None]
def one(path, kind, name):
    found = [d for d in docs(path) if d["kind"] == kind and d["metadata"]["name"] == name]
    if len(found) != 1:
        print(f"FAIL {path}: {len(found)} {kind} {name}"); sys.exit(1)
    return found[0]
def chart_one(cluster, kind, name):
    text = (rendered / f"{cluster}.yaml").read_text()
    found = [d for d in yaml.safe_load_all(text)
             if d is not None and d["kind"] == kind and d["metadata"]["name"] == name]
    if len(found) != 1:
        print(f"FAIL {path}: {len(found)} {kind} {name}"); sys.exit(1)
    return found[0]
def host_mounts(pod, container):
    """mountPath -> hostPath path, for the container's hostPath volumes."""
    vols = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    (c,) = [c for c in pod["containers"] if c["name"] == container]
    return {m["mountPath"]: vols[m["name"]] for m in c.get("volumeMounts", []) if m["name"] in vols}
def host_dir(mounts, socket, what):
    """The node directory that holds socket, through one of the mounts."""
    parent = str(pathlib.PurePosixPath(socket).parent)
    if parent not in mounts:
        fail(f"{what}: {socket} is not in a hostPath mount ({sorted(mounts)})"); return None
    return mounts[parent]

agent_pod = one("spire/agent.yaml", "DaemonSet", "spire-agent")["spec"]["template"]["spec"]
agent_mounts = host_mounts(agent_pod, "spire-agent")
demo_pod = one("workload/demo.yaml", "Deployment", "demo")["spec"]["template"]["spec"]
demo_mounts = host_mounts(demo_pod, "envoy")
register = (here / "register.sh").read_text()
# The k8sbundle notifier's ConfigMap served only fedgw, which now takes its bundle
# from the Workload API.
for path in sorted(here.rglob("*.yaml")):
    if ".work" not in path.parts:
        for doc in docs(path.relative_to(here)):
            if doc.get("metadata", {}).get("name") == "spire-bundle":
                fail(f"{path}: {doc['kind']} spire-bundle is left over")
clusters = sorted(p.name for p in (here / "overlays").iterdir() if p.is_dir())
for c in clusters:
    o = here / "overlays" / c
    td = f"{c}.kind.test"
    dep = chart_one(c, "Deployment", "fedgw")
    pod = dep["spec"]["template"]["spec"]
    fedgw_mounts = host_mounts(pod, "fedgw")
    (fedgw_c,) = [x for x in pod["containers"] if x["name"] == "fedgw"]
    ports = {p["name"]: p["containerPort"] for p in fedgw_c["ports"]}
    sa = pod["serviceAccountName"]
    ns = dep["metadata"]["namespace"]
    for want in [f"spiffe://$td/ns/{ns}/sa/{sa}", f"-selector k8s:ns:{ns} -selector k8s:sa:{sa}"]:
        if want not in register:
            fail(f"register.sh: no {want!r} (fedgw's registration entry)")
    spiffe_svc = chart_one(c, "Service", "fedgw-spiffe")
    (svc_port,) = spiffe_svc["spec"]["ports"]
    if spiffe_svc["spec"].get("type", "ClusterIP") != "ClusterIP":
        fail(f"{c}: Service fedgw-spiffe (for the SPIRE server only) must stay in-cluster")
    web_svc = chart_one(c, "Service", "fedgw")
    if [p.get("nodePort") for p in web_svc["spec"]["ports"] if p["name"] == "bundle"] != [30443]:
        fail(f"{c}: Service fedgw must expose the bundle port as NodePort 30443 (federation.yaml's URLs)")
    conf = tomllib.loads(chart_one(c, "ConfigMap", "fedgw-config")["data"]["fedgw.toml"])
    found = re.search(r'socket_path = "([^"]+)"', (o / "agent.conf").read_text())
    if not found:
        fail(f"{o}/agent.conf: no socket_path"); continue
    agent_socket = found.group(1)
    node_dir = host_dir(agent_mounts, agent_socket, f"spire/agent.yaml ({c})")
    uri = "unix://" + agent_socket
    locals_ = conf.get("local", [])
    if [entry.get("trust_domain") for entry in locals_] != [td]:
        fail(f"{o}/values.yaml (rendered fedgw.toml): local domains {[entry.get('trust_domain') for entry in locals_]}, want [{td!r}]")
    elif locals_[0].get("source") != {"workload_api_socket": uri}:
        fail(f"{o}/values.yaml (rendered fedgw.toml): local source {locals_[0].get('source')}, want the agent's socket {uri}")
    spiffe = conf.get("endpoint", {}).get("https_spiffe", {})
    web = conf.get("endpoint", {}).get("https_web", {})
    if spiffe.get("workload_api_socket") != uri:
        fail(f"{o}/values.yaml (rendered fedgw.toml): https_spiffe workload_api_socket {spiffe.get('workload_api_socket')!r}, want {uri!r}")
    fedgw_id = f"spiffe://{td}/ns/{ns}/sa/{sa}"
    if spiffe.get("endpoint_spiffe_id") != fedgw_id:
        fail(f"{o}/values.yaml (rendered fedgw.toml): endpoint_spiffe_id {spiffe.get('endpoint_spiffe_id')!r}, want {fedgw_id!r} (register.sh's entry)")
    for what, got, want in [("https_spiffe", spiffe.get("listen", ""), ports.get(svc_port["targetPort"])),
                            ("https_web", web.get("listen", ""), ports.get("bundle"))]:
        if want is None or not got.endswith(f":{want}"):
            fail(f"{o}/values.yaml (rendered fedgw.toml): {what} listen {got!r}, but the Deployment's port is {want}")
    if node_dir is not None:
        if host_dir(fedgw_mounts, agent_socket, f"the chart's Deployment ({c})") != node_dir:
            fail(f"{c}: the chart's Deployment does not mount the agent's socket directory {node_dir}")
        if host_dir(demo_mounts, agent_socket, f"workload/demo.yaml ({c})") != node_dir:
            fail(f"workload/demo.yaml: Envoy does not mount the agent's socket directory {node_dir}")
    if f"pipe: {{path: {agent_socket}}}" not in (o / "envoy.yaml").read_text():
        fail(f"{o}/envoy.yaml: its SDS cluster is not the agent's socket {agent_socket}")
    server = (o / "server.conf").read_text()
    stanzas = re.findall(r'federates_with "([^"]+)" \{\s*bundle_endpoint_url = "([^"]+)"\s*'
                         r'bundle_endpoint_profile "([^"]+)" \{\s*endpoint_spiffe_id = "([^"]+)"', server)
    want = [(f"{p}.kind.test",
             f"https://fedgw-spiffe.{ns}.svc:{svc_port['port']}/relay/{p}.kind.test",
             "https_spiffe", fedgw_id) for p in clusters if p != c]
    if sorted(stanzas) != sorted(want) or server.count("federates_with") != len(want):
        fail(f"{o}/server.conf: federates_with {stanzas}, want {want}")
    if 'Notifier "k8sbundle"' in server:
        fail(f"{o}/server.conf: the k8sbundle notifier is left over")
sys.exit(1 if bad else 0)
PY

echo "testbed/kind: scripts (bash -n, shellcheck)"
for script in "$here"/*.sh; do
    bash -n "$script"
done
command -v shellcheck >/dev/null || {
    echo "FAIL testbed/kind: shellcheck is not installed (Debian: apt-get install shellcheck)" >&2
    exit 1
}
shellcheck "$here"/*.sh

if command -v kubectl >/dev/null; then
    for overlay in "$here"/overlays/*/; do
        name="$(basename "$overlay")"
        out="$(mktemp)"
        kubectl kustomize "$overlay" >"$out"
        echo "testbed/kind: overlay $name builds ($(grep -c '^kind:' "$out") objects)"
        if timeout 5 kubectl version --request-timeout=2s >/dev/null 2>&1; then
            kubectl apply --dry-run=client --validate=false -f "$out" >/dev/null
            echo "testbed/kind: overlay $name passes kubectl apply --dry-run=client"
        else
            echo "testbed/kind: overlay $name: kubectl apply --dry-run=client needs an API server (not a check here; testbed/kind/up.sh runs against one)"
        fi
        rm -f "$out"
    done
else
    echo "FAIL testbed/kind: kubectl is not installed, so the overlays cannot be built (Debian: apt-get install kubernetes-client; or https://kubernetes.io/docs/tasks/tools/)" >&2
    exit 1
fi
echo "testbed/kind: static checks passed"
