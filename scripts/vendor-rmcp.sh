#!/usr/bin/env bash
# Re-creates vendor/rmcp: the rmcp release named in vendor/rmcp.patch's header (or $1), taken
# from crates.io through cargo's own cache, with paywarden's memory patch (vendor/rmcp.patch)
# applied. The workspace uses it through `[patch.crates-io]` in Cargo.toml until the change is
# released upstream (docs/performance.md, "Per-session memory").
#
#   scripts/vendor-rmcp.sh            re-create vendor/rmcp from the version it has now
#   scripts/vendor-rmcp.sh 3.10.0     move to another release (the patch must still apply)
#
# What is kept: src/, LICENSE, README.md (lib.rs includes it) and a Cargo.toml without its
# build script (it configures git hooks in rmcp's own repository), tests, examples, benches and
# dev-dependencies (the crate is not a member of this workspace and is not tested here).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
version="${1:-$(sed -n 's/^version = "\(.*\)"/\1/p' vendor/rmcp/Cargo.toml | head -1)}"
if [ -z "$version" ]; then
    echo "scripts/vendor-rmcp.sh: give the rmcp version to vendor (e.g. 3.9.0)" >&2
    exit 2
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# A throw-away crate that depends on exactly that release, so cargo downloads and unpacks it.
mkdir -p "$work/probe/src"
printf '[package]\nname = "probe"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nrmcp = { version = "=%s", default-features = false }\n[workspace]\n' \
    "$version" >"$work/probe/Cargo.toml"
: >"$work/probe/src/lib.rs"
src="$(cd "$work/probe" && cargo metadata --format-version 1 |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(next(p["manifest_path"] for p in d["packages"] if p["name"]=="rmcp").rsplit("/",1)[0])')"
rm -rf vendor/rmcp.new && mkdir -p vendor/rmcp.new
cp -r "$src/src" "$src/LICENSE" "$src/README.md" "$src/Cargo.toml" vendor/rmcp.new/
python3 - vendor/rmcp.new/Cargo.toml <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read().replace('build = "build.rs"\n', '')
sections = re.split(r'(?m)^(?=\[)', text)
drop = re.compile(r'\[\[(test|example|bench)\]\]|\[(dev-dependencies|target\.[^\]]*\.dev-dependencies)')
open(path, 'w').write(''.join(s for s in sections if not drop.match(s)))
PY
(cd vendor/rmcp.new && patch -p1 --no-backup-if-mismatch <"$ROOT/vendor/rmcp.patch")
rm -rf vendor/rmcp && mv vendor/rmcp.new vendor/rmcp
echo "vendor/rmcp: rmcp $version with vendor/rmcp.patch applied" >&2
