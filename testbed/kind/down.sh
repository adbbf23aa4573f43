#!/usr/bin/env bash
# Delete the testbed's kind clusters and its generated certificates.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for c in east west north; do
    if kind get clusters | grep -qx "fedgw-$c"; then
        kind delete cluster --name "fedgw-$c"
    fi
done
rm -rf "$here/.work"
