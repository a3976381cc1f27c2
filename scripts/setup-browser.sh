#!/usr/bin/env bash
# Installs what the browser test of the operator approval page needs
# (crates/paywarden/tests/approvals_browser.rs and console_browser.rs drive tests/browser/*.mjs):
#   - Debian's Chromium at /usr/bin/chromium (apt-get, only when missing; needs root or sudo)
#   - playwright-core, exactly as pinned in tests/browser/package-lock.json (npm ci)
# Safe to run again: it only installs what is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ ! -x /usr/bin/chromium ]; then
    echo "==> installing Debian's chromium"
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends chromium
fi
/usr/bin/chromium --version 2>/dev/null || true

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "scripts/setup-browser.sh: node and npm are needed (Node.js >= 20)" >&2
    exit 1
fi
lock="$ROOT/tests/browser/package-lock.json"
stamp="$ROOT/tests/browser/node_modules/.package-lock.sha256"
want="$(sha256sum "$lock" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "==> npm ci --prefix tests/browser"
    npm ci --prefix "$ROOT/tests/browser" --no-audit --no-fund
    echo "$want" > "$stamp"
fi
echo "browser test prerequisites are in place"
