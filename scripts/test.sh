#!/usr/bin/env bash
# paywarden's test command: builds the server, runs the Rust tests, then the end-to-end suite
# (tests/e2e: the official Python MCP SDK and the OpenAI Agents SDK against the real binary).
#
#   scripts/test.sh                 everything
#   scripts/test.sh --e2e-only      skip `cargo test --workspace` (still builds the binary)
#   scripts/test.sh -- -k stdio     anything after `--` goes to pytest
#
# Environment: PYTHON (interpreter for the venv, default python3, needs >= 3.10),
# CARGO_TARGET_DIR (honoured), E2E_VENV (default .venv-e2e in the repository root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

run_cargo_test=1
pytest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --e2e-only) run_cargo_test=0 ;;
        --) shift; pytest_args+=("$@"); break ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "scripts/test.sh: unknown argument '$1' (pytest arguments go after --)" >&2; exit 2 ;;
    esac
    shift
done

step() { printf '\n==> %s\n' "$*"; }

step "cargo build -p paywarden"
cargo build -p paywarden

if [ "$run_cargo_test" = 1 ]; then
    step "browser test prerequisites (scripts/setup-browser.sh)"
    bash "$ROOT/scripts/setup-browser.sh"
    step "cargo test --workspace"
    cargo test --workspace
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

step "pytest tests/e2e"
status=0
"$VENV/bin/python" -m pytest tests/e2e -q ${pytest_args[@]+"${pytest_args[@]}"} || status=$?
if [ "$status" -eq 5 ]; then
    echo "scripts/test.sh: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit "$status"
