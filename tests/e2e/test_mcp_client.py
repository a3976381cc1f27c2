"""The official Python MCP SDK (`mcp` 2.x) against the real paywarden server over Streamable HTTP.

Every MCP test runs in both protocol eras and on both endpoints:

* legacy — `Client(mode="legacy")`: the `initialize` handshake. The SDK offers
  LATEST_HANDSHAKE_VERSION (2025-11-25); the server answers with a session (Mcp-Session-Id).
* modern — `Client(mode="auto")`: the SDK probes `server/discover` at LATEST_MODERN_VERSION
  (2026-07-28) and adopts it only if the server advertises it; otherwise it silently falls back to
  `initialize`, so each test asserts the version it got and what went over the wire (no session id,
  MCP-Protocol-Version: 2026-07-28 on every request).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import httpx
import pytest
from _support import (
    ALL_TOOLS,
    CODE_CAPTURE_REJECTED,
    DEMO_HEADERS,
    DESTRUCTIVE_TOOLS,
    ENDPOINTS,
    ERAS,
    IFTHENPAY_READ_TOOLS,
    IFTHENPAY_TOOLS,
    INVALID_PARAMS,
    LEGACY_VERSION,
    MODERN_VERSION,
    OPP_TOOLS,
    PAYWARDEN_TOOLS,
    READ_ONLY_TOOLS,
    SANDBOX_PREFIX,
    SECOND_HEADERS,
    Connection,
    assert_ok,
    assert_success_transaction,
    assert_tool_error,
    describe,
    exponent_of,
    fmt_minor,
    mcp_http,
    result_text,
    search_all,
    to_minor,
    utc_search_window,
    validate_output,
)
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

pytestmark = pytest.mark.anyio

ERA_IDS = list(ERAS)
# One uncaptured demo PA per (era, endpoint) flow, so the flows never touch the same payment.
FLOW_PAS = {
    ("legacy", "/mcp"): "pw-demo-0000",
    ("legacy", "/agentic/v1/mcp"): "pw-demo-0001",
    ("modern", "/mcp"): "pw-demo-0010",
    ("modern", "/agentic/v1/mcp"): "pw-demo-0011",
}
# A well-formed transaction id that does not exist: argument errors must be caught before any lookup.
NO_SUCH_ID = "0" * 32


def era_endpoint_params():
    return pytest.mark.parametrize(
        ("era", "endpoint"),
        [(era, endpoint) for era in ERA_IDS for endpoint in ENDPOINTS],
        ids=[f"{era}-{endpoint.strip('/').replace('/', '_')}" for era in ERA_IDS for endpoint in ENDPOINTS],
    )


def connect(base_url: str, endpoint: str, era: str, **kwargs: Any):
    return mcp_http(base_url + endpoint, mode=ERAS[era]["mode"], **kwargs)


def new_mtid(kind: str) -> str:
    return f"e2e-{kind}-{uuid.uuid4().hex[:20]}"


async def output_schemas(conn: Connection) -> dict[str, dict[str, Any]]:
    tools = (await conn.client.list_tools()).tools
    return {tool.name: tool.output_schema for tool in tools}


async def find_demo_pa(conn: Connection, merchant_transaction_id: str) -> dict[str, Any]:
    """Find the demo PA through search_transactions (PA, success) and check it is uncaptured."""
    records = await search_all(
        conn.client.call_tool,
        {"paymentTypes": ["PA"], "resultCategories": ["success"], "limit": 100},
    )
    assert records, "search_transactions found no successful PA in the demo data"
    assert {r["paymentType"] for r in records} == {"PA"}, records
    matches = [r for r in records if r.get("merchantTransactionId") == merchant_transaction_id]
    assert len(matches) == 1, f"{merchant_transaction_id} not found once among {[r.get('merchantTransactionId') for r in records]}"
    pa = matches[0]
    assert_success_transaction(pa, payment_type="PA")
    tree = assert_ok(await conn.client.call_tool("get_transactions", {"id": pa["id"]}))
    assert [p["paymentType"] for p in tree["payments"]] == ["PA"], (
        f"precondition: demo payment {merchant_transaction_id} should be an uncaptured PA, got {tree['payments']}"
    )
    return pa


# --- protocol eras ----------------------------------------------------------------------------


@era_endpoint_params()
async def test_negotiated_protocol_era(base_url: str, era: str, endpoint: str) -> None:
    async with connect(base_url, endpoint, era) as conn:
        session = conn.client.session
        assert conn.protocol_version == ERAS[era]["version"]
        assert conn.client.server_info is not None and conn.client.server_info.name == "paywarden"
        # Some real traffic after the negotiation.
        assert {t.name for t in (await conn.client.list_tools()).tools} == ALL_TOOLS[endpoint]
        assert_ok(await conn.client.call_tool("get_transactions", {"merchantTransactionId": "pw-demo-0005"}))
        wire = list(conn.wire)

    assert wire, "no HTTP traffic recorded"
    if era == "legacy":
        assert session.initialize_result is not None and session.discover_result is None
        assert session.initialize_result.protocol_version == LEGACY_VERSION
        first, rest = wire[0], wire[1:]
        assert first.method == "POST" and first.status == 200, first
        session_id = first.response_session_id
        assert session_id, f"initialize answered without Mcp-Session-Id: {first}"
        # Every later request (initialized notification, GET stream, calls, DELETE) carries the session.
        assert rest and all(r.request_session_id == session_id for r in rest), rest
        assert all(r.request_protocol_version == LEGACY_VERSION for r in rest), rest
    else:
        assert session.discover_result is not None and session.initialize_result is None
        assert MODERN_VERSION in session.discover_result.supported_versions
        # Stateless: no session is ever issued or sent, no GET stream, the version on every request.
        assert all(r.response_session_id is None for r in wire), wire
        assert all(r.request_session_id is None for r in wire), wire
        assert all(r.method == "POST" for r in wire), wire
        assert all(r.request_protocol_version == MODERN_VERSION for r in wire), wire
        assert all(r.status == 200 for r in wire), wire


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_session_ends_cleanly_on_exit(base_url: str, endpoint: str, caplog: pytest.LogCaptureFixture) -> None:
    """Leaving `async with` makes the SDK DELETE its session; it counts only 200/204 as success
    and logs "Session termination failed: <status>" otherwise."""
    with caplog.at_level(logging.WARNING, logger="mcp"):
        async with mcp_http(base_url + endpoint, mode="legacy") as conn:
            assert conn.protocol_version == LEGACY_VERSION
            await conn.client.list_tools()
            wire = conn.wire
    deletes = [r for r in wire if r.method == "DELETE"]
    assert [r.status for r in deletes] == [200], wire
    failures = [r.getMessage() for r in caplog.records if "Session termination failed" in r.getMessage()]
    assert not failures, failures


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_pinned_modern_version_without_probe(base_url: str, endpoint: str) -> None:
    """mode="2026-07-28" adopts the version without server/discover: the very first request is
    already a stateless 2026-07-28 request and the server must answer it."""
    async with mcp_http(base_url + endpoint, mode=MODERN_VERSION) as conn:
        assert conn.protocol_version == MODERN_VERSION
        tools = (await conn.client.list_tools()).tools
        assert {t.name for t in tools} == ALL_TOOLS[endpoint]
        body = assert_ok(await conn.client.call_tool("get_transactions", {"merchantTransactionId": "pw-demo-0000"}))
        assert [p["merchantTransactionId"] for p in body["payments"]][:1] == ["pw-demo-0000"]
        wire = list(conn.wire)
    assert len(wire) == 2, wire  # no discover probe, no initialize, no DELETE
    assert all(r.request_protocol_version == MODERN_VERSION and r.response_session_id is None for r in wire), wire


def _jsonrpc_body(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message of a Streamable HTTP response (plain JSON or an SSE stream)."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                message = json.loads(line[5:])
                if "id" in message:
                    return message
        raise AssertionError(f"no JSON-RPC response in SSE body: {response.text!r}")
    return response.json()


MCP_HTTP_HEADERS = {**DEMO_HEADERS, "accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18", LEGACY_VERSION, MODERN_VERSION])
def test_raw_initialize_handshake_versions(base_url: str, version: str) -> None:
    """The handshake era on the wire: each 2025 revision is accepted as offered, with a session.
    2026-07-28 is not a handshake version, so an `initialize` offering it gets a counter-offer."""
    with httpx.Client(base_url=base_url, headers=MCP_HTTP_HEADERS, timeout=30) as http:
        response = http.post(
            "/mcp",
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "e2e-raw", "version": "0"}},
            },
        )
        assert response.status_code == 200, response.text
        message = _jsonrpc_body(response)
        session_id = response.headers.get("mcp-session-id")
        assert session_id, response.headers
        negotiated = message["result"]["protocolVersion"]
        if version in HANDSHAKE_PROTOCOL_VERSIONS:
            assert negotiated == version, message
        else:
            assert negotiated in HANDSHAKE_PROTOCOL_VERSIONS, message
        http.delete("/mcp", headers={"mcp-session-id": session_id, "mcp-protocol-version": negotiated})


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_raw_server_discover_is_stateless(base_url: str, endpoint: str) -> None:
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
        "io.modelcontextprotocol/clientInfo": {"name": "e2e-raw", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    headers = {"mcp-protocol-version": MODERN_VERSION, "mcp-method": "server/discover"}
    with httpx.Client(base_url=base_url, headers=MCP_HTTP_HEADERS, timeout=30) as http:
        response = http.post(
            endpoint,
            headers=headers,
            json={"jsonrpc": "2.0", "id": 7, "method": "server/discover", "params": {"_meta": meta}},
        )
    assert response.status_code == 200, response.text
    assert "mcp-session-id" not in response.headers, response.headers
    result = _jsonrpc_body(response)["result"]
    assert MODERN_VERSION in result["supportedVersions"], result
    assert "tools" in result["capabilities"], result


# --- tools ------------------------------------------------------------------------------------

# The ops toolset's annotations: (readOnlyHint, destructiveHint). Only issue_refund moves money
# out; a payment link asks for money and a review flag is a note.
OPS_ANNOTATIONS = {
    "lookup_customer": (True, False),
    "list_payments": (True, False),
    "get_order_history": (True, False),
    "revenue_summary": (True, False),
    "issue_refund": (False, True),
    "create_payment_link": (False, False),
    "flag_for_review": (False, False),
}


@era_endpoint_params()
async def test_list_tools(base_url: str, era: str, endpoint: str) -> None:
    async with connect(base_url, endpoint, era) as conn:
        tools = {t.name: t for t in (await conn.client.list_tools()).tools}
    assert set(tools) == ALL_TOOLS[endpoint], sorted(tools)
    if endpoint == "/mcp":
        assert PAYWARDEN_TOOLS <= set(tools), sorted(tools)
    else:
        assert set(tools) == OPP_TOOLS and not PAYWARDEN_TOOLS & set(tools), sorted(tools)
    for name, tool in tools.items():
        assert tool.annotations is not None, name
        if name in DESTRUCTIVE_TOOLS:
            assert tool.annotations.destructive_hint is True, (name, tool.annotations)
            assert tool.annotations.read_only_hint is False, (name, tool.annotations)
        elif name == "get_approval":
            # It can execute an approved operation (once), so it is not read-only.
            assert tool.annotations.read_only_hint is False, (name, tool.annotations)
            assert tool.annotations.destructive_hint is True, (name, tool.annotations)
            assert tool.annotations.idempotent_hint is True, (name, tool.annotations)
        elif name in OPS_ANNOTATIONS:
            read_only, destructive = OPS_ANNOTATIONS[name]
            assert tool.annotations.read_only_hint is read_only, (name, tool.annotations)
            assert tool.annotations.destructive_hint is destructive, (name, tool.annotations)
        elif name in IFTHENPAY_TOOLS:
            # Payment requests collect money; they destroy nothing (test_ifthenpay.py).
            assert tool.annotations.read_only_hint is (name in IFTHENPAY_READ_TOOLS), (name, tool.annotations)
            assert tool.annotations.destructive_hint is False, (name, tool.annotations)
        else:
            assert name in READ_ONLY_TOOLS
            assert tool.annotations.read_only_hint is True, (name, tool.annotations)
            assert tool.annotations.destructive_hint is False, (name, tool.annotations)
        assert isinstance(tool.output_schema, dict) and tool.output_schema.get("type") == "object", (name, tool.output_schema)
        assert tool.output_schema.get("properties"), name
        assert tool.input_schema.get("type") == "object", name
        assert tool.description, name

    back_office = {"referenceId", "idempotencyKey", "merchantTransactionId", "confirmationToken", "approvalId"}
    for name in DESTRUCTIVE_TOOLS:
        props = set(tools[name].input_schema["properties"])
        assert back_office <= props, (name, props)
        assert "referenceId" in tools[name].input_schema.get("required", []), name
        assert not {"confirmationToken", "approvalId"} & set(tools[name].input_schema.get("required", [])), name
        assert {"status", "confirmation", "approval", "sandbox"} <= set(tools[name].output_schema["properties"]), name
        assert "status" in tools[name].output_schema.get("required", []), name
    if "get_approval" in tools:
        get_approval = tools["get_approval"]
        assert set(get_approval.input_schema["properties"]) == {"approvalId"}, get_approval.input_schema
        assert get_approval.input_schema.get("required") == ["approvalId"], get_approval.input_schema
        assert {"status", "approval", "id", "paymentType", "balances", "sandbox"} <= set(get_approval.output_schema["properties"])
    for name in ("perform_capture", "perform_refund", "perform_rebill"):
        assert {"amount", "currency"} <= set(tools[name].input_schema["properties"]), name
    assert {"referenceId", "amount", "currency"} <= set(tools["perform_rebill"].input_schema["required"])
    assert {"id", "merchantTransactionId", "includeLinkedTransactions", "paymentTypes"} <= set(
        tools["get_transactions"].input_schema["properties"]
    )
    assert {
        "dateFrom", "dateTo", "paymentTypes", "paymentMethods", "resultCategories", "currency",
        "amountMin", "amountMax", "merchantTransactionId", "limit", "pageNo",
    } <= set(tools["search_transactions"].input_schema["properties"])
    for name in ("perform_capture", "perform_refund"):
        assert {"id", "paymentType", "amount", "amountMinor", "currency", "result", "balances", "sandbox", "idempotentReplay"} <= set(
            tools[name].output_schema["properties"]
        ), name
    assert {"result", "payments", "sandbox"} <= set(tools["get_transactions"].output_schema["properties"])
    assert {"result", "records", "pageNo", "limit", "totalCount", "totalPages", "dateFrom", "dateTo", "truncated", "sandbox"} <= set(
        tools["search_transactions"].output_schema["properties"]
    )


# --- the money flow ---------------------------------------------------------------------------


@era_endpoint_params()
async def test_capture_refund_search_flow(base_url: str, era: str, endpoint: str, claim_pa) -> None:
    demo_mtid = claim_pa(FLOW_PAS[(era, endpoint)])
    async with connect(base_url, endpoint, era) as conn:
        assert conn.protocol_version == ERAS[era]["version"]
        call = conn.client.call_tool
        schemas = await output_schemas(conn)

        # 1. The uncaptured PA, found among the demo data.
        pa = await find_demo_pa(conn, demo_mtid)
        currency, exponent, authorised = pa["currency"], exponent_of(pa["amount"]), pa["amountMinor"]
        assert authorised >= 3, pa

        # 2. Capture part of it.
        capture_minor = authorised // 2
        capture_amount = fmt_minor(capture_minor, exponent)
        cp_mtid = new_mtid("cp")
        capture_key = str(uuid.uuid4())
        capture_args = {
            "referenceId": pa["id"],
            "amount": capture_amount,
            "currency": currency,
            "merchantTransactionId": cp_mtid,
            "idempotencyKey": capture_key,
        }
        cp = assert_ok(await call("perform_capture", capture_args))
        validate_output(schemas, "perform_capture", cp)
        assert_success_transaction(cp, payment_type="CP")
        assert cp["referencedId"] == pa["id"], cp
        assert (cp["amount"], cp["amountMinor"], cp["currency"]) == (capture_amount, capture_minor, currency), cp
        assert cp["idempotentReplay"] is False, cp
        assert cp["sandbox"] is True
        balances = cp["balances"]
        assert balances["currency"] == currency, balances
        assert to_minor(balances["captured"]) == capture_minor, balances
        assert to_minor(balances["capturable"]) == authorised - capture_minor, balances
        assert to_minor(balances["refunded"]) == 0, balances

        # 3. A retry with the same idempotency key replays the first outcome; no second capture.
        replay_result = await call("perform_capture", capture_args)
        assert replay_result.is_error is not True, describe(replay_result)
        replay = replay_result.structured_content
        validate_output(schemas, "perform_capture", replay)
        assert replay["id"] == cp["id"], (replay, cp)
        assert replay["idempotentReplay"] is True, replay
        assert (replay["amount"], replay["paymentType"]) == (capture_amount, "CP"), replay

        # 4. The same key with different arguments is refused, naming the key.
        conflict = await call("perform_capture", {**capture_args, "amount": fmt_minor(1 if capture_minor != 1 else 2, exponent)})
        assert_tool_error(conflict, "idempotency key", capture_key)

        # 5. Capturing more than the remainder is an OPP rejection, not a protocol error.
        remainder = authorised - capture_minor
        over = await call(
            "perform_capture",
            {"referenceId": pa["id"], "amount": fmt_minor(remainder + 1, exponent), "currency": currency, "idempotencyKey": str(uuid.uuid4())},
        )
        assert_tool_error(over, CODE_CAPTURE_REJECTED)
        assert result_text(over).startswith(SANDBOX_PREFIX), describe(over)

        # 6. Exactly one CP moved money on this PA.
        tree = assert_ok(await call("get_transactions", {"id": pa["id"]}))
        validate_output(schemas, "get_transactions", tree)
        captures = [p for p in tree["payments"] if p["paymentType"] == "CP"]
        assert [(p["id"], p["amount"]) for p in captures] == [(cp["id"], capture_amount)], tree["payments"]

        # 7. Refund part of the capture.
        refund_minor = max(1, capture_minor // 3)
        refund_amount = fmt_minor(refund_minor, exponent)
        rf_mtid = new_mtid("rf")
        rf = assert_ok(
            await call(
                "perform_refund",
                {
                    "referenceId": cp["id"],
                    "amount": refund_amount,
                    "currency": currency,
                    "merchantTransactionId": rf_mtid,
                    "idempotencyKey": str(uuid.uuid4()),
                },
            )
        )
        validate_output(schemas, "perform_refund", rf)
        assert_success_transaction(rf, payment_type="RF")
        assert rf["referencedId"] == cp["id"], rf
        assert (rf["amount"], rf["amountMinor"], rf["currency"]) == (refund_amount, refund_minor, currency), rf
        assert rf["idempotentReplay"] is False, rf
        rf_balances = rf["balances"]
        assert to_minor(rf_balances["captured"]) == capture_minor, rf_balances
        assert to_minor(rf_balances["refunded"]) == refund_minor, rf_balances
        assert to_minor(rf_balances["refundable"]) == capture_minor - refund_minor, rf_balances

        # 8. search_transactions finds the new CP and RF: by merchantTransactionId...
        for mtid, tx in ((cp_mtid, cp), (rf_mtid, rf)):
            body = assert_ok(await call("search_transactions", {"merchantTransactionId": mtid}))
            validate_output(schemas, "search_transactions", body)
            assert [(r["id"], r["paymentType"], r["amount"]) for r in body["records"]] == [
                (tx["id"], tx["paymentType"], tx["amount"])
            ], body
            assert body["totalCount"] == 1 and body["pageNo"] == 1 and body["truncated"] is False, body

        # ...and by date range and payment type.
        date_from, date_to = utc_search_window()
        records = await search_all(
            call,
            {"dateFrom": date_from, "dateTo": date_to, "paymentTypes": ["CP", "RF"], "resultCategories": ["success"], "limit": 100},
        )
        assert {r["paymentType"] for r in records} <= {"CP", "RF"}, records
        by_id = {r["id"]: r for r in records}
        assert cp["id"] in by_id and rf["id"] in by_id, sorted(by_id)
        assert (by_id[cp["id"]]["paymentType"], by_id[cp["id"]]["amount"], by_id[cp["id"]]["referencedId"]) == ("CP", capture_amount, pa["id"])
        assert (by_id[rf["id"]]["paymentType"], by_id[rf["id"]]["amount"], by_id[rf["id"]]["referencedId"]) == ("RF", refund_amount, cp["id"])

        # 9. The payment tree as get_transactions sees it.
        tree = assert_ok(await call("get_transactions", {"id": pa["id"]}))
        assert sorted((p["paymentType"], p["id"]) for p in tree["payments"]) == sorted(
            [("PA", pa["id"]), ("CP", cp["id"]), ("RF", rf["id"])]
        ), tree["payments"]
        alone = assert_ok(await call("get_transactions", {"id": pa["id"], "includeLinkedTransactions": False}))
        assert [p["id"] for p in alone["payments"]] == [pa["id"]], alone
        only_cp = assert_ok(await call("get_transactions", {"id": pa["id"], "paymentTypes": ["CP"]}))
        assert [p["id"] for p in only_cp["payments"]] == [cp["id"]], only_cp
        # By merchantTransactionId: the transactions carrying that reference, alone...
        by_reference = assert_ok(await call("get_transactions", {"merchantTransactionId": demo_mtid, "includeLinkedTransactions": False}))
        assert [p["id"] for p in by_reference["payments"]] == [pa["id"]], by_reference
        by_reference = assert_ok(await call("get_transactions", {"merchantTransactionId": cp_mtid, "includeLinkedTransactions": False}))
        assert [p["id"] for p in by_reference["payments"]] == [cp["id"]], by_reference
        # ...and, by default, with every transaction of their payment.
        linked = assert_ok(await call("get_transactions", {"merchantTransactionId": cp_mtid}))
        assert {pa["id"], cp["id"]} <= {p["id"] for p in linked["payments"]}, linked


async def test_idempotent_replay_text_starts_with_sandbox_banner(base_url: str, claim_pa) -> None:
    demo_mtid = claim_pa("pw-demo-0040")
    async with connect(base_url, "/mcp", "legacy") as conn:
        pa = await find_demo_pa(conn, demo_mtid)
        args = {
            "referenceId": pa["id"],
            "amount": fmt_minor(1, exponent_of(pa["amount"])),
            "currency": pa["currency"],
            "idempotencyKey": str(uuid.uuid4()),
        }
        first = await conn.client.call_tool("perform_capture", args)
        assert_ok(first)
        replay = await conn.client.call_tool("perform_capture", args)
        assert replay.structured_content["idempotentReplay"] is True, describe(replay)
        assert result_text(replay).startswith(SANDBOX_PREFIX), describe(replay)


async def test_idempotency_key_outlives_the_connection_and_the_era(base_url: str, claim_pa) -> None:
    """A client that lost its connection retries on a new one, possibly speaking the other era:
    the key still replays the first capture instead of capturing again."""
    demo_mtid = claim_pa("pw-demo-0041")
    async with connect(base_url, "/mcp", "legacy") as conn:
        pa = await find_demo_pa(conn, demo_mtid)
        args = {
            "referenceId": pa["id"],
            "amount": fmt_minor(pa["amountMinor"] // 2, exponent_of(pa["amount"])),
            "currency": pa["currency"],
            "idempotencyKey": str(uuid.uuid4()),
        }
        first = assert_ok(await conn.client.call_tool("perform_capture", args))
        assert first["idempotentReplay"] is False
    for era, endpoint in (("modern", "/agentic/v1/mcp"), ("legacy", "/agentic/v1/mcp")):
        async with connect(base_url, endpoint, era) as conn:
            retry = await conn.client.call_tool("perform_capture", args)
            assert retry.is_error is not True, describe(retry)
            assert retry.structured_content["id"] == first["id"], (era, retry.structured_content)
            assert retry.structured_content["idempotentReplay"] is True, (era, retry.structured_content)
            tree = assert_ok(await conn.client.call_tool("get_transactions", {"id": pa["id"], "paymentTypes": ["CP"]}))
            assert [p["id"] for p in tree["payments"]] == [first["id"]], tree


async def test_reversal_then_capture_is_rejected(base_url: str, claim_pa) -> None:
    demo_mtid = claim_pa("pw-demo-0031")
    async with connect(base_url, "/agentic/v1/mcp", "modern") as conn:
        call = conn.client.call_tool
        schemas = await output_schemas(conn)
        pa = await find_demo_pa(conn, demo_mtid)
        rv = assert_ok(await call("perform_reversal", {"referenceId": pa["id"], "idempotencyKey": str(uuid.uuid4())}))
        validate_output(schemas, "perform_reversal", rv)
        assert_success_transaction(rv, payment_type="RV")
        assert rv["referencedId"] == pa["id"], rv
        assert rv["balances"]["reversed"] is True and to_minor(rv["balances"]["capturable"]) == 0, rv["balances"]
        late = await call(
            "perform_capture",
            {"referenceId": pa["id"], "amount": fmt_minor(1, exponent_of(pa["amount"])), "currency": pa["currency"], "idempotencyKey": str(uuid.uuid4())},
        )
        assert_tool_error(late, CODE_CAPTURE_REJECTED)
        tree = assert_ok(await call("get_transactions", {"id": pa["id"]}))
        assert sorted(p["paymentType"] for p in tree["payments"]) == ["PA", "RV"], tree["payments"]


# --- malformed arguments and credentials ------------------------------------------------------

INVALID_CALLS = [
    pytest.param("perform_capture", {"referenceId": NO_SUCH_ID, "amount": "10.001", "currency": "EUR"}, id="too-many-decimals"),
    pytest.param("perform_refund", {"referenceId": NO_SUCH_ID, "amount": "-1.00", "currency": "EUR"}, id="negative-amount"),
    pytest.param("perform_capture", {"amount": "1.00", "currency": "EUR"}, id="missing-referenceId"),
    pytest.param("perform_capture", {"referenceId": NO_SUCH_ID, "bogus": 1}, id="unknown-field"),
    pytest.param("perform_rebill", {"referenceId": NO_SUCH_ID}, id="rebill-without-amount"),
    pytest.param("search_transactions", {"limit": 0}, id="limit-0"),
    pytest.param("search_transactions", {"limit": 101}, id="limit-101"),
]


@pytest.mark.parametrize("era", ERA_IDS)
@pytest.mark.parametrize(("tool", "arguments"), INVALID_CALLS)
async def test_malformed_arguments_are_invalid_params(base_url: str, era: str, tool: str, arguments: dict[str, Any]) -> None:
    async with connect(base_url, "/mcp", era) as conn:
        with pytest.raises(MCPError) as caught:
            result = await conn.client.call_tool(tool, arguments)
            pytest.fail(f"expected JSON-RPC error {INVALID_PARAMS}, got a tool result:\n{describe(result)}")
    assert caught.value.code == INVALID_PARAMS, (caught.value.code, caught.value.message)
    assert caught.value.message, caught.value


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("headers", "missing"),
    [({}, "X-Entity-Id"), ({"X-Entity-Id": DEMO_HEADERS["X-Entity-Id"]}, "X-Token"), ({"X-Token": DEMO_HEADERS["X-Token"]}, "X-Entity-Id")],
    ids=["no-headers", "no-token", "no-entity"],
)
def test_missing_credentials_is_401(base_url: str, endpoint: str, headers: dict[str, str], missing: str) -> None:
    response = httpx.post(
        base_url + endpoint,
        headers={**headers, "accept": "application/json, text/event-stream"},
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": LEGACY_VERSION, "capabilities": {}, "clientInfo": {"name": "e2e", "version": "0"}},
        },
        timeout=30,
    )
    assert response.status_code == 401, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert missing in response.text, response.text
    assert "mcp-session-id" not in response.headers


def test_healthz(base_url: str) -> None:
    response = httpx.get(base_url + "/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "sandbox": True}


@pytest.mark.parametrize("era", ERA_IDS)
async def test_second_entity_cannot_see_demo_payments(base_url: str, era: str) -> None:
    async with connect(base_url, "/agentic/v1/mcp", era, headers=SECOND_HEADERS) as conn:
        result = await conn.client.call_tool("get_transactions", {"merchantTransactionId": "pw-demo-0000"})
        found = await conn.client.call_tool("search_transactions", {"merchantTransactionId": "pw-demo-0000"})
    # Either "not found" as a tool error or an empty list; never entity 1's payment.
    if result.is_error:
        assert result_text(result).startswith(SANDBOX_PREFIX), describe(result)
        assert "pw-demo-0000" not in json.dumps(result.structured_content), describe(result)
    else:
        assert result.structured_content["payments"] == [], describe(result)
    assert assert_ok(found)["records"] == [], describe(found)
