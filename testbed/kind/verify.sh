#!/usr/bin/env bash
# Static checks of the kind testbed, run by scripts/test.sh (no Docker or kind needed):
# every YAML document parses, every file named by a kustomization or the Dockerfile
# exists, each overlay builds with `kubectl kustomize` (offline), the scripts pass
# `bash -n` and shellcheck (both tools are required: a missing one fails, naming the
# package), and a client-side `kubectl apply --dry-run` runs as well when kubectl can
# reach an API server (it needs one for discovery; not a check of the test command).
# Each overlay has a federation.yaml of ClusterFederatedTrustDomain objects, and the
# scripts name exactly the overlays' clusters. The fedgw.toml files are loaded with
# fedgw's own loader, and the federation.yaml files parsed with fedgw's own
# ClusterFederatedTrustDomain parser, by tests/testbed_kind.rs.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="$root/.venv/bin/python"
[[ -x "$python" ]] || python=python3
cd "$here"

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
