"""`paywarden stdio` driven by the MCP SDK's stdio_client (the Claude-Desktop style transport).

With no PAYWARDEN_ENTITY_ID/PAYWARDEN_TOKEN the server acts as the emulator's demo entity, so
no headers are involved. Each test launches its own process on its own data directory, under
the permissive test policy (stdio_params' default); test_safety_flows covers stdio under the
built-in policy.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from _support import (
    ERAS,
    STDIO_TOOLS,
    assert_ok,
    assert_success_transaction,
    assert_tool_error,
    exponent_of,
    fmt_minor,
    stdio_params,
)
from mcp import Client
from mcp.client.stdio import stdio_client

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("era", list(ERAS))
async def test_stdio_list_tools_and_get_transactions(paywarden_binary: Path, tmp_path: Path, era: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with open(tmp_path / "stderr.log", "w") as errlog:
        async with Client(stdio_client(stdio_params(paywarden_binary, data_dir), errlog=errlog), mode=ERAS[era]["mode"], read_timeout_seconds=60) as client:
            assert client.protocol_version == ERAS[era]["version"]
            tools = (await client.list_tools()).tools
            assert {t.name for t in tools} == STDIO_TOOLS
            body = assert_ok(await client.call_tool("get_transactions", {"merchantTransactionId": "pw-demo-0000"}))
            payments = body["payments"]
            assert payments and payments[0]["merchantTransactionId"] == "pw-demo-0000", payments
            assert_success_transaction(payments[0], payment_type="PA")


async def test_stdio_capture_and_rejection(paywarden_binary: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with open(tmp_path / "stderr.log", "w") as errlog:
        async with Client(stdio_client(stdio_params(paywarden_binary, data_dir), errlog=errlog), mode="legacy", read_timeout_seconds=60) as client:
            pa = assert_ok(await client.call_tool("get_transactions", {"merchantTransactionId": "pw-demo-0001"}))["payments"][0]
            exponent = exponent_of(pa["amount"])
            cp = assert_ok(
                await client.call_tool(
                    "perform_capture",
                    {"referenceId": pa["id"], "amount": pa["amount"], "currency": pa["currency"], "idempotencyKey": str(uuid.uuid4())},
                )
            )
            assert_success_transaction(cp, payment_type="CP")
            assert cp["amountMinor"] == pa["amountMinor"] and cp["balances"]["capturable"] == fmt_minor(0, exponent)
            again = await client.call_tool(
                "perform_capture",
                {"referenceId": pa["id"], "amount": fmt_minor(1, exponent), "currency": pa["currency"], "idempotencyKey": str(uuid.uuid4())},
            )
            assert_tool_error(again, "700.400.100")
