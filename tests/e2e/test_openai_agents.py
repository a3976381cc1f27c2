"""The OpenAI Agents SDK's MCPServerStreamableHttp against the real paywarden server.

No model is involved: the tests call the server object's own list_tools/call_tool, and the
MCPUtil path an Agent uses to turn MCP tools into function tools. With mcp 2.x installed the
Agents SDK builds `mcp.Client(mode="auto")`, so it negotiates the 2026-07-28 era via
server/discover; the tests assert that.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from _support import (
    ALL_TOOLS,
    DEMO_HEADERS,
    ENDPOINTS,
    MODERN_VERSION,
    SANDBOX_PREFIX,
    assert_ok,
    assert_success_transaction,
    exponent_of,
    fmt_minor,
    result_text,
    search_all,
    to_minor,
)
from agents import Agent, RunContextWrapper
from agents.mcp import MCPServerStreamableHttp, MCPUtil

pytestmark = pytest.mark.anyio


def make_server(url: str) -> MCPServerStreamableHttp:
    return MCPServerStreamableHttp(
        params={"url": url, "headers": dict(DEMO_HEADERS), "timeout": 30},
        name="paywarden",
        client_session_timeout_seconds=30,
    )


async def demo_pa(server: MCPServerStreamableHttp, merchant_transaction_id: str) -> dict[str, Any]:
    body = assert_ok(await server.call_tool("get_transactions", {"merchantTransactionId": merchant_transaction_id}))
    assert [p["paymentType"] for p in body["payments"]] == ["PA"], (
        f"precondition: {merchant_transaction_id} should be an uncaptured PA, got {body['payments']}"
    )
    return body["payments"][0]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_connect_and_list_tools(base_url: str, endpoint: str) -> None:
    server = make_server(base_url + endpoint)
    await server.connect()
    try:
        assert server.session is not None
        assert server.session.protocol_version == MODERN_VERSION
        assert server.session.discover_result is not None
        tools = await server.list_tools()
        assert {t.name for t in tools} == ALL_TOOLS[endpoint]
        by_name = {t.name: t for t in tools}
        assert by_name["perform_capture"].annotations.destructive_hint is True
        assert by_name["search_transactions"].annotations.read_only_hint is True
        assert all(t.output_schema for t in tools)
    finally:
        await server.cleanup()
    assert server.session is None


async def test_capture_refund_search(base_url: str, claim_pa) -> None:
    demo_mtid = claim_pa("pw-demo-0021")
    async with make_server(base_url + "/agentic/v1/mcp") as server:
        assert server.session.protocol_version == MODERN_VERSION
        pa = await demo_pa(server, demo_mtid)
        exponent, currency = exponent_of(pa["amount"]), pa["currency"]

        capture_minor = pa["amountMinor"] // 2
        cp_mtid = f"e2e-agents-cp-{uuid.uuid4().hex[:16]}"
        capture_args = {
            "referenceId": pa["id"],
            "amount": fmt_minor(capture_minor, exponent),
            "currency": currency,
            "merchantTransactionId": cp_mtid,
            "idempotencyKey": str(uuid.uuid4()),
        }
        cp = assert_ok(await server.call_tool("perform_capture", capture_args))
        assert_success_transaction(cp, payment_type="CP")
        assert cp["referencedId"] == pa["id"] and cp["amountMinor"] == capture_minor, cp
        assert to_minor(cp["balances"]["capturable"]) == pa["amountMinor"] - capture_minor, cp["balances"]

        # The Agents SDK retrying the same call (same idempotency key) moves no money twice.
        replay = await server.call_tool("perform_capture", capture_args)
        assert replay.is_error is not True and replay.structured_content["id"] == cp["id"]
        assert replay.structured_content["idempotentReplay"] is True

        refund_minor = max(1, capture_minor // 4)
        rf = assert_ok(
            await server.call_tool(
                "perform_refund",
                {"referenceId": cp["id"], "amount": fmt_minor(refund_minor, exponent), "currency": currency, "idempotencyKey": str(uuid.uuid4())},
            )
        )
        assert_success_transaction(rf, payment_type="RF")
        assert rf["referencedId"] == cp["id"] and rf["amountMinor"] == refund_minor, rf
        assert to_minor(rf["balances"]["refundable"]) == capture_minor - refund_minor, rf["balances"]

        found = assert_ok(await server.call_tool("search_transactions", {"merchantTransactionId": cp_mtid}))
        assert [r["id"] for r in found["records"]] == [cp["id"]], found
        tree = assert_ok(await server.call_tool("get_transactions", {"id": pa["id"]}))
        assert sorted(p["paymentType"] for p in tree["payments"]) == ["CP", "PA", "RF"], tree["payments"]


async def test_agent_function_tools(base_url: str, claim_pa) -> None:
    """What an Agent hands the model: the MCP tools as strict function tools. Invoke them with the
    argument shape a strict-mode model produces (every property present, null when unused)."""
    demo_mtid = claim_pa("pw-demo-0030")
    async with make_server(base_url + "/mcp") as server:
        agent = Agent(name="payments-ops", mcp_servers=[server])
        context = RunContextWrapper(context=None)
        function_tools = {t.name: t for t in await MCPUtil.get_function_tools(server, True, context, agent)}
        assert set(function_tools) == ALL_TOOLS["/mcp"]
        assert all(t.strict_json_schema for t in function_tools.values()), {
            n: t.strict_json_schema for n, t in function_tools.items()
        }
        mcp_tools = {t.name: t for t in await server.list_tools()}

        def strict_arguments(name: str, **values: Any) -> str:
            schema = function_tools[name].params_json_schema
            arguments: dict[str, Any] = {}
            for prop, spec in schema["properties"].items():
                types = spec.get("type")
                arguments[prop] = [] if types == "array" else None
            arguments.update(values)
            assert set(arguments) == set(schema["required"]), (arguments, schema["required"])
            return json.dumps(arguments)

        async def invoke(name: str, **values: Any) -> dict[str, Any]:
            output = await MCPUtil.invoke_mcp_tool(server, mcp_tools[name], context, strict_arguments(name, **values))
            text = output["text"] if isinstance(output, dict) else str(output)
            assert text.startswith(SANDBOX_PREFIX), text
            return json.loads(text[text.index("\n{") + 1 :])

        got = await invoke("get_transactions", merchantTransactionId=demo_mtid)
        pa = got["payments"][0]
        assert [p["paymentType"] for p in got["payments"]] == ["PA"], got
        cp = await invoke(
            "perform_capture",
            referenceId=pa["id"],
            amount=fmt_minor(1, exponent_of(pa["amount"])),
            currency=pa["currency"],
            idempotencyKey=str(uuid.uuid4()),
        )
        assert_success_transaction(cp, payment_type="CP")
        page = await invoke("search_transactions", paymentTypes=["CP"], limit=100)
        assert page["records"] and {r["paymentType"] for r in page["records"]} == {"CP"}, page
        records = await search_all(server.call_tool, {"paymentTypes": ["CP"], "limit": 100})
        assert cp["id"] in {r["id"] for r in records}


async def test_tool_error_reaches_the_agent_as_tool_error(base_url: str) -> None:
    async with make_server(base_url + "/agentic/v1/mcp") as server:
        result = await server.call_tool("get_transactions", {"id": "f" * 32})
        assert result.is_error is True
        assert result_text(result).startswith(SANDBOX_PREFIX)
