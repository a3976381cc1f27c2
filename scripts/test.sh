#!/usr/bin/env bash
# paywarden's test command: builds the server, runs the Rust tests, then the official MCP
# conformance suite (tests/conformance, both protocol eras, every endpoint) and the end-to-end
# suite (tests/e2e: the official Python MCP SDK, the OpenAI Agents SDK, the TypeScript SDK and
# the MCP Inspector CLI against the real binary). Node.js 22 is the project's own
# (scripts/setup-node.sh, from the npm registry).
#
#   scripts/test.sh                 everything
#   scripts/test.sh --e2e-only      skip `cargo test --workspace` (still builds the binary)
#   scripts/test.sh -- -k stdio     anything after `--` goes to pytest
#
# The Rust integration tests run twice: on SQLite, then on PostgreSQL (each test on a fresh
# pw_test_* database of the server at 127.0.0.1:5432, started here when it is not running).
#
# Environment: PYTHON (interpreter for the venv, default python3, needs >= 3.10),
# CARGO_TARGET_DIR (honoured), E2E_VENV (default .venv-e2e in the repository root),
# PAYWARDEN_TEST_ENGINES (default "sqlite postgres"), PAYWARDEN_TEST_PG_URL (default
# postgres://postgres@127.0.0.1:5432, trust auth; the tests create and drop databases there).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

run_cargo_test=1
pytest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --e2e-only) run_cargo_test=0 ;;
        --) shift; pytest_args+=("$@"); break ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "scripts/test.sh: unknown argument '$1' (pytest arguments go after --)" >&2; exit 2 ;;
    esac
    shift
done

step() { printf '\n==> %s\n' "$*"; }

PG_URL="${PAYWARDEN_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432}"
export PAYWARDEN_TEST_PG_URL="$PG_URL"
# This run's test databases are pw_test_<run>_*: the clean-up below touches only them.
export PAYWARDEN_TEST_RUN_ID="r$$"

# Starts the machine's PostgreSQL cluster when nothing answers at $PG_URL.
ensure_postgres() {
    if pg_isready -q -d "$PG_URL/postgres" 2>/dev/null; then return 0; fi
    step "starting PostgreSQL"
    local sudo="" version
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)"
    if [ -z "$version" ]; then
        echo "scripts/test.sh: no PostgreSQL answers at $PG_URL and none is installed (/etc/postgresql)" >&2
        exit 1
    fi
    $sudo pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do
        if pg_isready -q -d "$PG_URL/postgres"; then return 0; fi
        sleep 1
    done
    echo "scripts/test.sh: PostgreSQL did not come up at $PG_URL" >&2
    exit 1
}

# Drops this run's test databases that a crashed test may have left behind.
drop_test_databases() {
    local name
    for name in $(psql -d "$PG_URL/postgres" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'pw\_test\_${PAYWARDEN_TEST_RUN_ID}\_%'" 2>/dev/null); do
        psql -d "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null 2>&1 || true
    done
}

step "cargo build -p paywarden"
cargo build -p paywarden

if [ "$run_cargo_test" = 1 ]; then
    step "browser test prerequisites (scripts/setup-browser.sh)"
    bash "$ROOT/scripts/setup-browser.sh"
    for engine in ${PAYWARDEN_TEST_ENGINES:-sqlite postgres}; do
        case "$engine" in
            sqlite)
                step "cargo test --workspace (SQLite)"
                PAYWARDEN_TEST_DATABASE=sqlite cargo test --workspace
                ;;
            postgres)
                ensure_postgres
                step "cargo test -p paywarden --tests (PostgreSQL: PAYWARDEN_TEST_DATABASE=postgres)"
                pg_status=0
                PAYWARDEN_TEST_DATABASE=postgres cargo test -p paywarden --tests || pg_status=$?
                drop_test_databases
                [ "$pg_status" -eq 0 ] || exit "$pg_status"
                ;;
            *) echo "scripts/test.sh: unknown engine '$engine' in PAYWARDEN_TEST_ENGINES" >&2; exit 2 ;;
        esac
    done
fi

target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$target_dir" in /*) ;; *) target_dir="$ROOT/$target_dir" ;; esac
export PAYWARDEN_BIN="$target_dir/debug/paywarden"
if [ ! -x "$PAYWARDEN_BIN" ]; then
    echo "scripts/test.sh: $PAYWARDEN_BIN was not built" >&2
    exit 1
fi

# --- the e2e virtualenv, reinstalled only when requirements.txt (or the interpreter) changes ---
VENV="${E2E_VENV:-$ROOT/.venv-e2e}"
REQUIREMENTS="$ROOT/tests/e2e/requirements.txt"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.requirements.sha256"

if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    echo "scripts/test.sh: the e2e tests need Python >= 3.10 ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    step "creating $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
want="$({ sha256sum "$REQUIREMENTS"; "$VENV/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
    step "pip install -r tests/e2e/requirements.txt"
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$want" > "$STAMP"
fi

# --- the project's own Node.js (>= 22) for the MCP conformance suite and the Node clients ------
step "Node.js (scripts/setup-node.sh)"
node_bin="$(bash "$ROOT/scripts/setup-node.sh")"
export PATH="$node_bin:$PATH"
echo "node $(node --version) at $(command -v node)"
# npm ci|install DIR: the versions in DIR/package-lock.json, reinstalled only when it changed.
npm_deps() {
    local how="$1" dir="$ROOT/$2" want
    want="$({ sha256sum "$dir/package-lock.json"; node --version; } | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$dir/node_modules/.package-lock.sha256" ] || [ "$(cat "$dir/node_modules/.package-lock.sha256")" != "$want" ]; then
        step "npm $how --prefix $2"
        npm "$how" --prefix "$dir" --no-audit --no-fund --loglevel=error
        echo "$want" > "$dir/node_modules/.package-lock.sha256"
    fi
}
npm_deps ci tests/conformance
# `npm install` (which installs what the lockfile pins) rather than `npm ci`: the Inspector pulls
# in vite, whose optional Windows-only dependency napi-windows-process-start-time is not on the
# registry, so the lockfile can't list it and `npm ci` refuses the lockfile as out of sync.
npm_deps install tests/clients/ts

step "MCP conformance suite, both protocol eras, every endpoint (tests/conformance/run.mjs)"
conformance_status=0
node tests/conformance/run.mjs || conformance_status=$?

step "pytest tests/e2e"
status=0
"$VENV/bin/python" -m pytest tests/e2e -q ${pytest_args[@]+"${pytest_args[@]}"} || status=$?
if [ "$status" -eq 5 ]; then
    echo "scripts/test.sh: pytest collected no tests; that is a failure" >&2
    exit 1
fi
if [ "$conformance_status" -ne 0 ]; then
    echo "scripts/test.sh: the MCP conformance suite failed (see above; logs in tests/conformance/results/)" >&2
    [ "$status" -ne 0 ] || status=$conformance_status
fi
exit "$status"
