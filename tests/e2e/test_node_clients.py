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
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
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

    def schema_findings(self) -> tuple[list[str], list[dict[str, Any]]]:
        """`tools/list --strict`: the tool names and every schema-portability finding (errors
        and warnings) the Inspector reports (`schemaFindings` of its JSON envelope)."""
        args = [str(INSPECTOR), "--cli", *self.target, "--format", "json", "-q", "--method", "tools/list", "--strict"]
        done = run_node(self.node, args, self.home)
        assert done.returncode == 0, describe(done)
        out = json.loads(done.stdout)
        names = [t["name"] for t in out["result"]["tools"]]
        found = [{"tool": t["toolName"], **f} for t in out.get("schemaFindings", []) for f in t["findings"]]
        return names, found

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
    # problem (test_inspector_strict_reports_no_schema_findings requires no warning either).
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


# --- schema portability: the Inspector's --strict lint on every endpoint ----------------------


class SeedVersionProxy:
    """Forwards to `/mcp/payments/`, asking in `initialize` for the ifthenpay seed's 2025-03-26
    instead of the Inspector's latest revision, so that the seed's own JSON-RPC answers (the
    Inspector has no option to offer an older revision). Everything else passes unchanged."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.initialize_results: list[dict[str, Any]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                message = None
                try:
                    message = json.loads(body) if body else None
                except ValueError:
                    pass
                is_initialize = isinstance(message, dict) and message.get("method") == "initialize"
                if is_initialize:
                    message["params"]["protocolVersion"] = "2025-03-26"
                    body = json.dumps(message).encode()
                skip = {"host", "content-length", "connection", "accept-encoding"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                answer = httpx.request(self.command, proxy.upstream, content=body, headers=headers, timeout=30)
                if is_initialize and answer.status_code == 200:
                    proxy.initialize_results.append(answer.json()["result"])
                self.send_response(answer.status_code)
                for name in ("content-type", "mcp-session-id", "allow"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_POST = do_GET = do_DELETE = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, name="seed-version-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/mcp/payments/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def strict_inspector(target: str, node: str, server: ServerProcess, home: Path) -> tuple[Inspector, SeedVersionProxy | None]:
    if target == "stdio":
        config = {
            "mcpServers": {
                "paywarden": {
                    "command": str(paywarden_bin()),
                    "args": ["stdio", "--data-dir", str(home.parent / "stdio-data")],
                    "env": {"PAYWARDEN_LOG": "warn"},
                }
            }
        }
        path = home.parent / "stdio.json"
        path.write_text(json.dumps(config))
        return Inspector(node, ["--config", str(path), "--server", "paywarden", "--cwd", str(home.parent)], home), None
    if target == "/mcp/payments/ seed":
        proxy = SeedVersionProxy(server.url("/mcp/payments/"))
        return Inspector.http(node, proxy.url, "legacy", home), proxy
    endpoint, era = target.rsplit(" ", 1)
    return Inspector.http(node, server.url(endpoint), era, home), None


STRICT_TARGETS = [f"{endpoint} {era}" for endpoint in (*ENDPOINTS, "/mcp/payments/") for era in ("legacy", "modern")] + [
    "/mcp/payments/ seed",
    "stdio",
]


@pytest.mark.parametrize("target", STRICT_TARGETS)
def test_inspector_strict_reports_no_schema_findings(node: str, node_server: ServerProcess, target: str, tmp_path: Path) -> None:
    """`tools/list --strict` lints every tool's input and output schema for portability (a
    nullable `type` array, an untyped or boolean schema, a remote `$ref`): none on any endpoint,
    in either protocol era, at /mcp/payments/ in rmcp's and in the seed's own mode, and over stdio."""
    inspector, proxy = strict_inspector(target, node, node_server, tmp_path / "home")
    try:
        names, found = inspector.schema_findings()
    finally:
        if proxy is not None:
            proxy.close()
    assert names, target
    if proxy is not None:
        # The seed's own answer (capabilities {"tools": {}}), not rmcp's.
        assert [r["capabilities"] for r in proxy.initialize_results] == [{"tools": {}}], proxy.initialize_results
        assert len(names) == 9, names
    report = "\n".join(f"{f['severity']} {f['tool']} {f['schema']}.{f['path']}: {f['rule']}" for f in found)
    assert len(found) == 0, f"{target}: {len(found)} schema findings\n{report}"
