"""Shared helpers for paywarden's end-to-end tests.

These tests drive the real `paywarden` binary (built by `scripts/test.sh`) over the wire:
Streamable HTTP with the official Python MCP SDK (`mcp` 2.x) and the OpenAI Agents SDK, and
stdio with the MCP SDK's `stdio_client`. Nothing here mocks the server.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import jsonschema
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

REPO_ROOT = Path(__file__).resolve().parents[2]

DEMO_ENTITY_ID = "8ac7a4c9000000000000000000000001"
DEMO_TOKEN = "pw_demo_sandbox_token_only_valid_against_the_paywarden_emulator"
SECOND_ENTITY_ID = "8ac7a4c9000000000000000000000002"
SECOND_TOKEN = "pw_demo_second_entity_sandbox_token"

DEMO_HEADERS = {"X-Entity-Id": DEMO_ENTITY_ID, "X-Token": DEMO_TOKEN}
SECOND_HEADERS = {"X-Entity-Id": SECOND_ENTITY_ID, "X-Token": SECOND_TOKEN}

ENDPOINTS = ("/mcp", "/agentic/v1/mcp")

DESTRUCTIVE_TOOLS = frozenset(
    {
        "perform_capture",
        "perform_reversal",
        "perform_refund",
        "perform_rebill",
        "perform_chargeback",
        "perform_chargeback_reversal",
    }
)
READ_ONLY_TOOLS = frozenset({"get_transactions", "search_transactions"})
# The OPP seed's eight tools: exactly what the OPP compat endpoint serves.
OPP_TOOLS = DESTRUCTIVE_TOOLS | READ_ONLY_TOOLS
# paywarden's own tools, served only on the unified endpoint (and stdio).
PAYWARDEN_TOOLS = frozenset({"get_approval"})
# The ifthenpay seed's nine tools (tests/e2e/test_ifthenpay.py), on /mcp and on /mcp/payments/.
IFTHENPAY_READ_TOOLS = frozenset({"mbway_check_status", "payments_list"})
IFTHENPAY_TOOLS = IFTHENPAY_READ_TOOLS | frozenset(
    {
        "multibanco_create_reference",
        "mbway_request_payment",
        "payshop_create_reference",
        "creditcard_create_payment",
        "pinpay_create_payment",
        "cofidis_create_payment",
        "pix_create_payment",
    }
)
# The Payment Ops seed's seven tools (Stripe + orders database), on the unified endpoint.
OPS_TOOLS = frozenset(
    {
        "lookup_customer",
        "list_payments",
        "get_order_history",
        "issue_refund",
        "create_payment_link",
        "revenue_summary",
        "flag_for_review",
    }
)
# Every tool each endpoint serves; stdio serves what /mcp serves.
ALL_TOOLS = {
    "/mcp": OPP_TOOLS | PAYWARDEN_TOOLS | OPS_TOOLS | IFTHENPAY_TOOLS,
    "/agentic/v1/mcp": OPP_TOOLS,
}
STDIO_TOOLS = ALL_TOOLS["/mcp"]

# Protocol eras. "legacy" is the initialize handshake (Mcp-Session-Id sessions); "modern" is the
# 2026-07-28 per-request envelope, reached by the SDK's `mode="auto"` server/discover probe.
LEGACY_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
ERAS = {
    "legacy": {"mode": "legacy", "version": LEGACY_VERSION},
    "modern": {"mode": "auto", "version": MODERN_VERSION},
}

# OPP's "successfully processed" result-code patterns (the two success families).
SUCCESS_CODE = re.compile(r"^(000\.000\.|000\.100\.1|000\.[36]|000\.400\.[1][12]0)")
CODE_CAPTURE_REJECTED = "700.400.100"
INVALID_PARAMS = -32602
SANDBOX_PREFIX = "[SANDBOX"

BANNER = re.compile(r"^paywarden (\S+) listening on (http://127\.0\.0\.1:\d+)\s*$")
STARTUP_TIMEOUT_S = 90.0

# ---------------------------------------------------------------------------------------------
# Demo data: the uncaptured pre-authorizations the seed creates (i % 10 in {0, 1}). Each test that
# moves money claims its own one through `claim_pa`, so tests sharing a server never interfere.
UNCAPTURED_DEMO_PAS = tuple(f"pw-demo-{i:04d}" for i in range(50) if i % 10 in (0, 1))
# The demo debits (DB) with nothing on them yet (i % 10 in {5, 6}); claim them with `claim_db`.
UNTOUCHED_DEMO_DBS = tuple(f"pw-demo-{i:04d}" for i in range(50) if i % 10 in (5, 6))

# The approval page's demo operator (HTTP Basic), configured only when the emulator is the provider.
DEMO_OPERATOR = ("demo-operator", "pw_demo_operator_token_sandbox_only")


def paywarden_bin() -> Path:
    explicit = os.environ.get("PAYWARDEN_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    if not target.is_absolute():
        target = REPO_ROOT / target
    return target / "debug" / "paywarden"


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a spawned paywarden: the caller's, minus every PAYWARDEN_* variable,
    so a developer's own configuration (say, a real OPP base URL) can never leak into a test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYWARDEN_")}
    env.update({"PAYWARDEN_LOG": "info", "NO_COLOR": "1"})
    env.update(extra)
    return env


@dataclass
class ServerProcess:
    """A running `paywarden serve` child process."""

    proc: subprocess.Popen[str]
    data_dir: Path
    stderr_path: Path
    stdout_lines: list[str] = field(default_factory=list)
    base_url: str = ""
    version: str = ""

    def stderr_tail(self, n: int = 60) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").splitlines()
        except OSError:
            return "<no stderr>"
        return "\n".join(lines[-n:])

    def diagnostics(self) -> str:
        return (
            f"--- paywarden stdout ---\n{''.join(self.stdout_lines)}"
            f"--- paywarden stderr (tail) ---\n{self.stderr_tail()}"
        )

    def url(self, endpoint: str) -> str:
        return self.base_url + endpoint

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # paywarden shuts down gracefully on Ctrl-C
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


ALLOW_ALL_POLICY = REPO_ROOT / "tests" / "policies" / "allow-all.toml"


def start_server(
    data_dir: Path,
    *extra_args: str,
    policy: Path | None = ALLOW_ALL_POLICY,
    env: Mapping[str, str] | None = None,
) -> ServerProcess:
    """Start `paywarden serve` on an ephemeral port and wait for its banner and /healthz.

    The provider-mechanics tests run under a permissive policy (`policy`); pass `policy=None`
    for the built-in default policy (confirmation and human approval). `env` adds variables to
    the child's environment (e.g. `HTTP_PROXY` for a recording proxy)."""
    binary = paywarden_bin()
    if not binary.is_file():
        raise RuntimeError(f"{binary} not found: build it first (`cargo build -p paywarden`; scripts/test.sh does)")
    data_dir.mkdir(parents=True, exist_ok=True)
    stderr_path = data_dir / "paywarden.stderr.log"
    with open(stderr_path, "w") as stderr_file:
        proc = subprocess.Popen(
            [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), *extra_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            cwd=data_dir,  # no stray ./paywarden.toml or ./paywarden-data from the caller's directory
            env=child_env(**({"PAYWARDEN_SAFETY__POLICY_FILE": str(policy)} if policy else {}), **(env or {})),
            text=True,
            bufsize=1,
        )
    server = ServerProcess(proc=proc, data_dir=data_dir, stderr_path=stderr_path)
    ready = threading.Event()

    def pump() -> None:
        # Keep draining stdout for the whole life of the process so it can never block on a full pipe.
        assert proc.stdout is not None
        for line in proc.stdout:
            server.stdout_lines.append(line)
            match = BANNER.match(line)
            if match and not ready.is_set():
                server.version, server.base_url = match.group(1), match.group(2)
                ready.set()
        ready.set()  # EOF: unblock the waiter; it checks base_url

    threading.Thread(target=pump, name=f"paywarden-stdout-{proc.pid}", daemon=True).start()
    try:
        if not ready.wait(STARTUP_TIMEOUT_S) or not server.base_url:
            raise RuntimeError(
                f"paywarden serve printed no 'listening on' banner within {STARTUP_TIMEOUT_S}s "
                f"(exit code {proc.poll()})\n{server.diagnostics()}"
            )
        deadline = time.monotonic() + 20
        last_error = ""
        while time.monotonic() < deadline:
            try:
                response = httpx.get(server.base_url + "/healthz", timeout=2)
                if response.status_code == 200:
                    break
                last_error = f"HTTP {response.status_code}: {response.text}"
            except httpx.HTTPError as exc:
                last_error = repr(exc)
            time.sleep(0.1)
        else:
            raise RuntimeError(f"/healthz never answered 200 ({last_error})\n{server.diagnostics()}")
        # The banner (credentials, client config) is printed in one go before serving starts;
        # give the reader thread a moment to have consumed all of it.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and client_config_from_banner(server.stdout_lines) is None:
            time.sleep(0.05)
    except BaseException:
        server.stop()
        raise
    return server


def client_config_from_banner(lines: list[str]) -> dict[str, Any] | None:
    """The client-configuration JSON object printed after the banner, or None if not (yet) there."""
    text = "".join(lines)
    start = text.find("\n{")
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start + 1 :])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


# ---------------------------------------------------------------------------------------------
# MCP client (official SDK) over Streamable HTTP, with a record of what went over the wire.


@dataclass
class WireRecord:
    method: str
    path: str
    status: int
    request_session_id: str | None
    request_protocol_version: str | None
    response_session_id: str | None


@dataclass
class Connection:
    client: Client
    wire: list[WireRecord]

    @property
    def protocol_version(self) -> str:
        return self.client.protocol_version


@asynccontextmanager
async def mcp_http(
    url: str,
    *,
    mode: str,
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[Connection]:
    """Connect the official MCP client to `url` in `mode` ("legacy", "auto" or a modern version)."""
    wire: list[WireRecord] = []

    async def record(response: httpx2.Response) -> None:
        request = response.request
        wire.append(
            WireRecord(
                method=request.method,
                path=request.url.path,
                status=response.status_code,
                request_session_id=request.headers.get("mcp-session-id"),
                request_protocol_version=request.headers.get("mcp-protocol-version"),
                response_session_id=response.headers.get("mcp-session-id"),
            )
        )

    http_client = httpx2.AsyncClient(
        headers=dict(DEMO_HEADERS if headers is None else headers),
        timeout=httpx2.Timeout(30, read=60),
        event_hooks={"response": [record]},
    )
    async with http_client:
        transport = streamable_http_client(url, http_client=http_client)
        async with Client(transport, mode=mode, read_timeout_seconds=30) as client:
            yield Connection(client=client, wire=wire)


# ---------------------------------------------------------------------------------------------
# Results and amounts.


def result_text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if getattr(block, "type", None) == "text")


def describe(result: CallToolResult) -> str:
    return (
        f"isError={result.is_error}\ntext={result_text(result)!r}\n"
        f"structuredContent={json.dumps(result.structured_content, indent=1)[:4000]}"
    )


def assert_ok(result: CallToolResult) -> dict[str, Any]:
    """A successful tool result: not isError, sandbox banner first, structuredContent present."""
    assert result.is_error is not True, describe(result)
    assert result_text(result).startswith(SANDBOX_PREFIX), describe(result)
    assert isinstance(result.structured_content, dict), describe(result)
    assert result.structured_content.get("sandbox") is True, describe(result)
    return result.structured_content


def assert_status(result: CallToolResult, status: str) -> dict[str, Any]:
    """A successful back-office result whose structuredContent has `status` (executed,
    confirmation_required, approval_pending, approval_denied, approval_expired)."""
    body = assert_ok(result)
    assert body.get("status") == status, f"expected status {status!r}\n{describe(result)}"
    return body


def assert_tool_error(result: CallToolResult, *needles: str) -> str:
    """An isError tool result whose text names every needle (e.g. an OPP result code)."""
    text = result_text(result)
    assert result.is_error is True, describe(result)
    for needle in needles:
        assert needle.lower() in text.lower(), f"{needle!r} not in error text\n{describe(result)}"
    return text


def assert_success_transaction(tx: Mapping[str, Any], *, payment_type: str) -> None:
    assert tx["paymentType"] == payment_type, tx
    assert SUCCESS_CODE.match(tx["result"]["code"]), tx["result"]
    assert tx["resultCategory"] == "success", tx
    assert tx["id"], tx
    assert to_minor(tx["amount"]) == tx["amountMinor"], tx


def validate_output(tool_schemas: Mapping[str, Mapping[str, Any]], name: str, structured: Any) -> None:
    """structuredContent must validate against the tool's declared outputSchema."""
    jsonschema.Draft202012Validator(dict(tool_schemas[name])).validate(structured)


def exponent_of(amount: str) -> int:
    return len(amount.split(".", 1)[1]) if "." in amount else 0


def to_minor(amount: str) -> int:
    whole, _, frac = amount.partition(".")
    return int(whole + frac)


def fmt_minor(minor: int, exponent: int) -> str:
    """Integer minor units as OPP's decimal string with `exponent` fraction digits."""
    assert minor >= 0
    if exponent == 0:
        return str(minor)
    digits = str(minor).rjust(exponent + 1, "0")
    return f"{digits[:-exponent]}.{digits[-exponent:]}"


def utc_search_window() -> tuple[str, str]:
    """dateFrom/dateTo (bare UTC dates) covering yesterday and today, so a flow that straddles
    midnight UTC still finds what it just created."""
    today = dt.datetime.now(dt.timezone.utc).date()
    return (today - dt.timedelta(days=1)).isoformat(), today.isoformat()


async def search_all(call, arguments: dict[str, Any], *, max_pages: int = 20) -> list[dict[str, Any]]:
    """Every record of a search_transactions query, following pageNo up to totalPages."""
    records: list[dict[str, Any]] = []
    page = 1
    while True:
        result = await call("search_transactions", {**arguments, "pageNo": page})
        body = assert_ok(result)
        records.extend(body["records"])
        if page >= body["totalPages"] or page >= max_pages:
            return records
        page += 1


# ---------------------------------------------------------------------------------------------
# The paywarden CLI (operators' side: approvals, audit) and stdio.

CLI_TIMEOUT_S = 60


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `paywarden ARGS...` to completion (stdout/stderr captured, never raising on exit code)."""
    return subprocess.run(
        [str(paywarden_bin()), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=cwd,
        timeout=CLI_TIMEOUT_S,
    )


def describe_cli(completed: subprocess.CompletedProcess[str]) -> str:
    return f"$ {' '.join(map(str, completed.args))}\nexit {completed.returncode}\n--- stdout ---\n{completed.stdout}--- stderr ---\n{completed.stderr}"


def approvals_cli(data_dir: Path, action: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`paywarden approvals --data-dir DIR ACTION ARGS...` against a server's data directory.

    `--data-dir` is placed before the action because that is the only place the CLI accepts it
    (see test_safety_flows.test_approvals_cli_accepts_data_dir_after_the_action)."""
    return run_cli("approvals", "--data-dir", str(data_dir), action, *args, cwd=data_dir)


def audit_export(data_dir: Path) -> list[dict[str, Any]]:
    """`paywarden audit export --data-dir DIR`: every audit entry (JSON Lines), oldest first."""
    completed = run_cli("audit", "export", "--data-dir", str(data_dir), cwd=data_dir)
    assert completed.returncode == 0, describe_cli(completed)
    return [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]


def stdio_params(binary: Path, data_dir: Path, *, policy: Path | None = ALLOW_ALL_POLICY, **env: str):
    """Launch parameters for `paywarden stdio` on `data_dir` under `policy` (None: the built-in one).

    stdio_client passes only a safe subset of our environment plus `env`; child_env() leaves out
    any PAYWARDEN_* configuration of the caller."""
    from mcp import StdioServerParameters

    extra = {"PAYWARDEN_LOG": "warn", **env}
    if policy is not None:
        extra["PAYWARDEN_SAFETY__POLICY_FILE"] = str(policy)
    return StdioServerParameters(
        command=str(binary),
        args=["stdio", "--data-dir", str(data_dir)],
        env=child_env(**extra),
        cwd=str(data_dir),
    )
