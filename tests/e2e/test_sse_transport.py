"""The 2024-11-05 HTTP+SSE transport with the official Python client's `sse_client`.

Cursor and older SDK clients still speak it (the OPP seed: "Streamable HTTP (or SSE)"). Both
endpoint families are served, with the same tools, credentials and safety as Streamable HTTP:
`GET /agentic/v1/sse` (the OPP seed's eight tools) and `GET /sse` (everything `/mcp` serves).
Under the built-in policy a money-moving call first returns `confirmation_required`; the same
call with the confirmation token executes it, and every call lands in the audit log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
import signal
from pathlib import Path

import httpx
import pytest
from _client_flows import confirmed_capture, read_pa
from _support import (
    DEMO_ENTITY_ID,
    DEMO_HEADERS,
    ERAS,
    LEGACY_VERSION,
    OPP_TOOLS,
    OPS_TOOLS,
    SECOND_HEADERS,
    ServerProcess,
    assert_ok,
    assert_status,
    audit_export,
    start_server,
)
from mcp import Client
from mcp.client.sse import sse_client

pytestmark = pytest.mark.anyio

SARAH = "sarah@example.com"


@pytest.fixture(scope="module")
def sse_server(paywarden_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A seeded server under the built-in policy (money-moving calls need confirmation)."""
    server = start_server(tmp_path_factory.mktemp("paywarden-sse"), policy=None)
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def mcp_sse(url: str, headers: dict[str, str] = DEMO_HEADERS, *, mode: str = "legacy") -> AsyncIterator[Client]:
    async with Client(sse_client(url, headers=dict(headers), timeout=30), mode=mode, read_timeout_seconds=30) as client:
        yield client


# The SDK's default mode ("auto") probes server/discover and speaks 2026-07-28 over the stream;
# "legacy" is the initialize handshake the 2024-11-05-era clients run.
@pytest.mark.parametrize(("era", "pa"), [("legacy", "pw-demo-0000"), ("modern", "pw-demo-0010")])
async def test_opp_family_over_sse(sse_server: ServerProcess, claim_pa, era: str, pa: str) -> None:
    pa_mtid = claim_pa(pa, server=sse_server)
    async with mcp_sse(sse_server.url("/agentic/v1/sse"), mode=ERAS[era]["mode"]) as client:
        assert client.protocol_version == ERAS[era]["version"]
        assert {t.name for t in (await client.list_tools()).tools} == OPP_TOOLS
        # Reads: get_transactions and search_transactions.
        pa = await read_pa(client.call_tool, pa_mtid)
        found = assert_ok(await client.call_tool("search_transactions", {"merchantTransactionId": pa_mtid}))
        assert [r["id"] for r in found["records"]] == [pa["id"]], found
        # A money-moving call: confirmation_required, then the token executes it.
        executed = await confirmed_capture(client.call_tool, pa_mtid)
    rows = [r for r in audit_export(sse_server.data_dir) if r["entity_id"] == DEMO_ENTITY_ID]
    captures = [r["outcome"] for r in rows if r["tool"] == "perform_capture" and r["arguments"].get("referenceId") == pa["id"]]
    assert captures == ["confirmation_required", "ok"], captures
    assert any(r["transaction_id"] == executed["id"] for r in rows), "the capture is audited"


async def test_unified_family_over_sse(sse_server: ServerProcess) -> None:
    async with mcp_sse(sse_server.url("/sse")) as client:
        assert client.protocol_version == LEGACY_VERSION
        names = {t.name for t in (await client.list_tools()).tools}
        assert OPP_TOOLS | OPS_TOOLS <= names, sorted(names)
        profile = assert_ok(await client.call_tool("lookup_customer", {"email": SARAH}))
        assert profile["customer"]["name"] == "Sarah Test", profile
        listed = assert_ok(await client.call_tool("list_payments", {"email": SARAH}))
        target = next(p for p in listed["payments"] if p["amount_cents"] == 4999 and p["amount_refunded_cents"] == 0)
        args = {"email": SARAH, "charge_id": target["payment_intent_id"], "reason": "duplicate", "confirmed": True}
        preview = assert_status(await client.call_tool("issue_refund", args), "confirmation_required")
        assert preview["confirmation"]["preview"]["amountMinor"] == 4999, preview
        token = preview["confirmation"]["token"]
        done = assert_status(await client.call_tool("issue_refund", {**args, "confirmation_token": token}), "executed")
        assert done["refund"]["amount_cents"] == 4999, done
    refunds = [r for r in audit_export(sse_server.data_dir) if r["tool"] == "issue_refund"]
    assert [r["outcome"] for r in refunds][-2:] == ["confirmation_required", "ok"], refunds


async def test_the_second_entity_sees_only_its_own(sse_server: ServerProcess) -> None:
    async with mcp_sse(sse_server.url("/agentic/v1/sse"), SECOND_HEADERS) as client:
        found = assert_ok(await client.call_tool("search_transactions", {"merchantTransactionId": "pw-demo-0001"}))
    assert found["records"] == [], found


def test_a_session_is_bound_to_its_streams_credentials(sse_server: ServerProcess) -> None:
    """Another entity's POST to a session it did not open is refused, and never reaches it."""
    with httpx.Client(timeout=30) as http:
        with http.stream("GET", sse_server.url("/agentic/v1/sse"), headers=DEMO_HEADERS) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(lines) == "event: endpoint"
            endpoint = next(lines).removeprefix("data: ")
            assert endpoint.startswith("/agentic/v1/messages?sessionId="), endpoint
            ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
            refused = http.post(sse_server.url(endpoint), json=ping, headers=SECOND_HEADERS)
            assert refused.status_code == 403, refused.text
            assert http.post(sse_server.url(endpoint), json=ping, headers=DEMO_HEADERS).status_code == 202


def test_shutdown_ends_open_streams(server_factory) -> None:
    """Ctrl-C with an SSE stream open: the stream ends and the server exits cleanly, no kill."""
    server = server_factory()
    with httpx.Client(timeout=30) as http:
        with http.stream("GET", server.url("/sse"), headers=DEMO_HEADERS) as stream:
            lines = stream.iter_lines()
            assert next(lines) == "event: endpoint"
            server.proc.send_signal(signal.SIGINT)
            assert server.proc.wait(timeout=20) == 0, server.diagnostics()
            rest = list(lines)  # ends without error: the server closed the stream properly
            assert rest[0].startswith("data: /messages?sessionId="), rest
