#!/usr/bin/env bash
# Builds the real peers the tests run against, from the Go module proxy, into a cache
# outside the repository, and prints one line per module: NAME=BINDIR.
#
#   scripts/peers.sh            build what is missing, print NAME=BINDIR lines
#   scripts/peers.sh NAME...    only these modules (directories under tests/peers/)
#
# Each directory under tests/peers/ with a go.mod is one module: its go.mod pins every
# version and its go.sum is committed. The module's binaries are its `tool`
# directives (tests/peers/spire: spire-server and spire-agent) or, without any, its
# main packages (tests/peers/go: fedgw-peer). The cache key is a digest of the
# module's files and the Go version, so a change to either builds afresh and a second
# run builds nothing. Cache: $FEDGW_PEERS_CACHE, default ~/.cache/fedgw-peers.
#
# Go is needed (1.26 or later); without it the script fails saying so.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${FEDGW_PEERS_CACHE:-$HOME/.cache/fedgw-peers}

if ! command -v go >/dev/null 2>&1; then
    echo "peers.sh: the go command is missing: install Go 1.26 or later (https://go.dev/dl/ or the machine's Go) and run again" >&2
    exit 1
fi
go_version=$(go env GOVERSION)

modules=("$@")
if ((${#modules[@]} == 0)); then
    for dir in "$root"/tests/peers/*/; do
        [[ -f "$dir/go.mod" ]] && modules+=("$(basename "$dir")")
    done
fi

for name in "${modules[@]}"; do
    src="$root/tests/peers/$name"
    if [[ ! -f "$src/go.mod" ]]; then
        echo "peers.sh: tests/peers/$name has no go.mod" >&2
        exit 1
    fi
    key=$(cd "$src" && { echo "$go_version"; find . -type f ! -name '*.md' -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-16)
    bin="$cache/$name-$key/bin"
    if [[ ! -f "$cache/$name-$key/done" ]]; then
        echo "peers.sh: building tests/peers/$name with $go_version into $bin (cached for later runs)" >&2
        rm -rf "$cache/$name-$key"
        mkdir -p "$bin"
        # -mod=readonly: go.mod and go.sum are used as committed, never rewritten.
        if grep -q '^tool' "$src/go.mod"; then
            (cd "$src" && GOFLAGS=-mod=readonly go build -trimpath -o "$bin/" tool) >&2
        else
            (cd "$src" && GOFLAGS=-mod=readonly go build -trimpath -o "$bin/" ./...) >&2
        fi
        touch "$cache/$name-$key/done"
    fi
    echo "$name=$bin"
done
