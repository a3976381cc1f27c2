#!/usr/bin/env bash
# Re-creates vendor/CRATE: the crates.io release of CRATE (its version now in vendor/CRATE, or
# VERSION), taken through cargo's own cache, with paywarden's patch vendor/CRATE.patch applied.
# The workspace uses each through `[patch.crates-io]` in Cargo.toml until the change is released
# upstream (docs/performance.md: "Per-session memory", "A result serialized once" and "Spawned
# futures boxed" for rmcp; "sqlx's ping on release", "One round trip per BEGIN", "Write
# transactions on the caller's thread", "Queries on the caller's thread" and "Rows read once"
# for sqlx-sqlite; "PostgreSQL: no ping round trip on a busy connection" for sqlx-postgres).
#
#   scripts/vendor.sh rmcp                 re-create vendor/rmcp from the version it has now
#   scripts/vendor.sh rmcp 3.10.0          move to another release (the patch must still apply)
#   scripts/vendor.sh sqlx-sqlite
#   scripts/vendor.sh sqlx-postgres
#
# What is kept: src/, the licence files, README.md (rmcp's lib.rs includes it) and a Cargo.toml
# without its build script (rmcp's configures git hooks in its own repository), tests, examples,
# benches and dev-dependencies (a vendored crate is not a member of this workspace and is not
# tested here).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
crate="${1:-}"
if [ -z "$crate" ] || [ ! -f "vendor/$crate.patch" ]; then
    echo "scripts/vendor.sh: give a vendored crate with a patch in vendor/ ($(cd vendor && ls ./*.patch | sed 's|^\./||; s|\.patch$||' | paste -sd' '))" >&2
    exit 2
fi
version="${2:-$(sed -n 's/^version = "\(.*\)"/\1/p' "vendor/$crate/Cargo.toml" 2>/dev/null | head -1)}"
if [ -z "$version" ]; then
    echo "scripts/vendor.sh: give the $crate version to vendor (e.g. scripts/vendor.sh $crate 1.2.3)" >&2
    exit 2
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# A throw-away crate that depends on exactly that release, so cargo downloads and unpacks it.
mkdir -p "$work/probe/src"
printf '[package]\nname = "probe"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n%s = { version = "=%s", default-features = false }\n[workspace]\n' \
    "$crate" "$version" >"$work/probe/Cargo.toml"
: >"$work/probe/src/lib.rs"
src="$(cd "$work/probe" && cargo metadata --format-version 1 |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(next(p["manifest_path"] for p in d["packages"] if p["name"]==sys.argv[1]).rsplit("/",1)[0])' "$crate")"
new="vendor/$crate.new"
rm -rf "$new" && mkdir -p "$new"
cp -r "$src/src" "$src/Cargo.toml" "$new/"
for extra in "$src"/LICENSE* "$src/README.md"; do
    if [ -e "$extra" ]; then cp "$extra" "$new/"; fi
done
python3 - "$new/Cargo.toml" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read().replace('build = "build.rs"\n', '')
sections = re.split(r'(?m)^(?=\[)', text)
drop = re.compile(r'\[\[(test|example|bench)\]\]|\[(dev-dependencies|target\.[^\]]*\.dev-dependencies)')
open(path, 'w').write(''.join(s for s in sections if not drop.match(s)))
PY
(cd "$new" && patch -p1 --no-backup-if-mismatch <"$ROOT/vendor/$crate.patch")
rm -rf "vendor/$crate" && mv "$new" "vendor/$crate"
echo "vendor/$crate: $crate $version with vendor/$crate.patch applied" >&2
