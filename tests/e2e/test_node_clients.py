"""Real Node.js MCP clients against paywarden: the TypeScript SDK (@modelcontextprotocol/sdk)
client in tests/clients/ts/client.mjs, and the MCP Inspector's CLI mode
(@modelcontextprotocol/inspector --cli), both as pinned in tests/clients/ts/package-lock.json.

They need Node.js >= 22.19 and `npm ci` in tests/clients/ts: scripts/test.sh installs both
(scripts/setup-node.sh puts the project's own Node first on PATH). Run outside it, the tests
fail with what to do; they are never skipped.

Each client lists the tools, reads a demo PA and captures part of it through the confirm flow of
the built-in policy (confirmation_required + token, then the same call with the token).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _client_flows import CLIENT_PAS, CONFIRMATION_TOKEN, check_tools
from _support import (
    DEMO_HEADERS,
    STDIO_TOOLS,
    ENDPOINTS,
    REPO_ROOT,
    SANDBOX_PREFIX,
    ServerProcess,
    assert_success_transaction,
    client_config_from_banner,
    exponent_of,
    fmt_minor,
    paywarden_bin,
    start_server,
)

TS_DIR = REPO_ROOT / "tests" / "clients" / "ts"
INSPECTOR = TS_DIR / "node_modules" / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"
NODE_TIMEOUT_S = 120

# Demo PAs of this module's own server: the TS SDK client on each endpoint, the Inspector in
# each era on each endpoint.
TS_PAS = {"/mcp": CLIENT_PAS[0], "/agentic/v1/mcp": CLIENT_PAS[1]}
INSPECTOR_PAS = {
    ("legacy", "/mcp"): CLIENT_PAS[2],
    ("legacy", "/agentic/v1/mcp"): CLIENT_PAS[3],
    ("modern", "/mcp"): CLIENT_PAS[4],
    ("modern", "/agentic/v1/mcp"): CLIENT_PAS[5],
}


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not on PATH: run scripts/test.sh (scripts/setup-node.sh installs Node.js 22)", pytrace=False)
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    major, minor = (int(x) for x in version.lstrip("v").split(".")[:2])
    if (major, minor) < (22, 19):
        pytest.fail(f"{found} is Node.js {version}; these clients need >= 22.19: run scripts/test.sh (scripts/setup-node.sh)", pytrace=False)
    if not INSPECTOR.is_file() or not (TS_DIR / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir():
        pytest.fail("tests/clients/ts/node_modules is missing: `npm ci --prefix tests/clients/ts` (scripts/test.sh does)", pytrace=False)
    return found


@pytest.fixture(scope="module")
def node_server(paywarden_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A seeded server under the built-in policy (captures need confirmation)."""
    server = start_server(tmp_path_factory.mktemp("paywarden-node-clients"), policy=None)
    try:
        yield server
    finally:
        server.stop()


def node_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYWARDEN_")}
    # The Inspector keeps a catalog and OAuth state under $HOME; keep the developer's untouched.
    env.update({"HOME": str(home), "NO_COLOR": "1", "npm_config_update_notifier": "false"})
    return env


def run_node(node: str, args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [node, *args], cwd=TS_DIR, env=node_env(home), capture_output=True, text=True, timeout=NODE_TIMEOUT_S, stdin=subprocess.DEVNULL
    )


def describe(done: subprocess.CompletedProcess[str]) -> str:
    return f"$ {' '.join(done.args)}\nexit {done.returncode}\n--- stdout ---\n{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-4000:]}"


# --- the TypeScript SDK ------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_typescript_sdk_client(node: str, node_server: ServerProcess, endpoint: str, claim_pa, tmp_path: Path) -> None:
    pa = claim_pa(TS_PAS[endpoint], server=node_server)
    headers = [arg for name, value in DEMO_HEADERS.items() for arg in ("--header", f"{name}: {value}")]
    done = run_node(node, ["client.mjs", "--url", node_server.url(endpoint), *headers, "--pa", pa], tmp_path / "home")
    assert done.returncode == 0, describe(done)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["protocolVersion"] == "2025-11-25" and seen["sessionId"], seen
    assert seen["server"]["name"] == "paywarden", seen
    check_tools(seen["tools"])
    assert seen["capture"]["status"] == "executed" and seen["capture"]["currency"] == seen["read"]["currency"], seen


# --- the MCP Inspector CLI ---------------------------------------------------------------------


class Inspector:
    """`mcp-inspector --cli TARGET... --format json -q --method ...`: TARGET is a URL with
    `--transport http --header ... --protocol-era ERA`, or `--config FILE --server NAME`."""

    def __init__(self, node: str, target: list[str], home: Path) -> None:
        self.node, self.target, self.home = node, target, home

    @classmethod
    def http(cls, node: str, url: str, era: str, home: Path) -> Inspector:
        headers = [arg for name, value in DEMO_HEADERS.items() for arg in ("--header", f"{name}: {value}")]
        return cls(node, [url, "--transport", "http", *headers, "--protocol-era", era], home)

    def run(self, *method_args: str) -> dict[str, Any]:
        args = [str(INSPECTOR), "--cli", *self.target, "--format", "json", "-q", *method_args]
        done = run_node(self.node, args, self.home)
        assert done.returncode == 0, describe(done)
        out = json.loads(done.stdout)
        assert "result" in out, describe(done)
        return out["result"]

    def call(self, tool: str, **arguments: str) -> dict[str, Any]:
        # --tool-arg values are parsed as JSON when they can be (so 1.00 would become the number
        # 1): strings that look like numbers are passed as JSON strings, e.g. amount="1.00".
        pairs = [f"{k}={json.dumps(v) if _looks_like_json(v) else v}" for k, v in arguments.items()]
        result = self.run("--method", "tools/call", "--tool-name", tool, "--tool-arg", *pairs)
        text = "\n".join(block["text"] for block in result["content"] if block["type"] == "text")
        assert result.get("isError") is not True, text
        assert text.startswith(SANDBOX_PREFIX), text
        structured = result["structuredContent"]
        structured["_text"] = text
        return structured


def _looks_like_json(value: str) -> bool:
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_inspector_cli(node: str, node_server: ServerProcess, era: str, endpoint: str, claim_pa, tmp_path: Path) -> None:
    pa_mtid = claim_pa(INSPECTOR_PAS[(era, endpoint)], server=node_server)
    inspector_flow(Inspector.http(node, node_server.url(endpoint), era, tmp_path / "home"), pa_mtid, tag=era)


def inspector_flow(inspector: Inspector, pa_mtid: str, *, tag: str) -> None:
    """tools/list, get_transactions, then perform_capture: preview with a token, then confirmed."""
    # --strict: the Inspector's tool-schema portability check fails (exit 6) on any error-severity
    # problem; warnings (nullable `type` arrays, non-standard `format`s) are only counted.
    tools = inspector.run("--method", "tools/list", "--strict")["tools"]
    check_tools(t["name"] for t in tools)

    payments = inspector.call("get_transactions", merchantTransactionId=pa_mtid)["payments"]
    assert len(payments) == 1 and payments[0]["paymentType"] == "PA", payments
    pa = payments[0]

    exponent = exponent_of(pa["amount"])
    args = {"referenceId": pa["id"], "amount": fmt_minor(10**exponent, exponent), "currency": pa["currency"], "idempotencyKey": f"inspector-{tag}-{pa['id']}"}
    preview = inspector.call("perform_capture", **args)
    assert preview["status"] == "confirmation_required", preview
    token = preview["confirmation"]["token"]
    assert CONFIRMATION_TOKEN.match(token) and token in preview["_text"], preview

    executed = inspector.call("perform_capture", **args, confirmationToken=token)
    assert executed["status"] == "executed", executed
    executed.pop("_text")
    assert_success_transaction(executed, payment_type="CP")
    assert executed["referencedId"] == pa["id"] and executed["amount"] == args["amount"], executed


def test_inspector_with_the_config_serve_prints(node: str, node_server: ServerProcess, tmp_path: Path) -> None:
    """The client configuration `paywarden serve` prints ("type": "http", url, headers), as an
    Inspector config file (which wants the block under "mcpServers")."""
    printed = client_config_from_banner(node_server.stdout_lines)
    assert printed is not None, node_server.diagnostics()
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": printed["servers"]}))
    args = [str(INSPECTOR), "--cli", "--config", str(config), "--server", "paywarden", "--format", "json", "-q", "--method", "tools/list"]
    done = run_node(node, args, tmp_path / "home")
    assert done.returncode == 0, describe(done)
    check_tools(t["name"] for t in json.loads(done.stdout)["result"]["tools"])


def test_inspector_with_the_claude_desktop_stdio_config(node: str, tmp_path: Path) -> None:
    """docs/clients/claude-desktop-stdio.json as an Inspector config: the Inspector spawns the
    documented command and args (this checkout's binary, a fresh per-user data directory) over stdio.
    Each CLI call is a new process on the same data directory, as a restarted desktop app is:
    the confirmation token of the first survives into the second."""
    config = json.loads((REPO_ROOT / "docs" / "clients" / "claude-desktop-stdio.json").read_text())
    entry = config["mcpServers"]["paywarden"]
    entry["command"] = str(paywarden_bin())
    # No --data-dir: the per-user data directory, here under a temporary HOME.
    data_home = tmp_path / "server-home" / ".local" / "share"
    entry["env"] = {"PAYWARDEN_LOG": "warn", "HOME": str(tmp_path / "server-home"), "XDG_DATA_HOME": str(data_home)}
    path = tmp_path / "claude_desktop_config.json"
    path.write_text(json.dumps(config))
    inspector = Inspector(node, ["--config", str(path), "--server", "paywarden", "--cwd", str(tmp_path)], tmp_path / "home")
    assert {t["name"] for t in inspector.run("--method", "tools/list")["tools"]} == STDIO_TOOLS
    inspector_flow(inspector, CLIENT_PAS[0], tag="stdio")
    assert (data_home / "paywarden" / "paywarden.db").is_file(), "the per-user data directory was not used"
