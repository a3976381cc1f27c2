"""The ifthenpay toolset end to end: clients written from the ifthenpay seed alone (plain JSON-RPC
2.0 over HTTP POST, and the official `mcp` client) against the real `paywarden serve` binary at
/mcp/payments/, with paywarden's offline ifthenpay emulator behind it.

A shopper is played through the emulator (the `paywarden ifthenpay shopper` CLI and its HTTP
control endpoint); the emulator then calls paywarden back as ifthenpay does, and the payment
shows in payments_list.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import (
    IFTHENPAY_TOOLS,
    ServerProcess,
    describe_cli,
    mcp_http,
    result_text,
    run_cli,
    start_server,
)

pytestmark = pytest.mark.anyio

ENDPOINT = "/mcp/payments/"

# The emulator's public demo keys (README: "The ifthenpay tools").
MB_KEY = "PWD-100001"
MBWAY_KEY = "PWD-100002"
PAYSHOP_KEY = "PWD-100003"
CCARD_KEY = "PWD-100004"
GATEWAY_KEY = "PWD-100005"
BO_KEY = "0000-PWDM-0000-0001"


@pytest.fixture(scope="module")
def ifthenpay_server(paywarden_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the built-in policy (its ifthenpay rule allows payment requests)."""
    server = start_server(tmp_path_factory.mktemp("paywarden-ifthenpay"), "--no-seed", policy=None)
    try:
        yield server
    finally:
        server.stop()


def order_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


class SeedClient:
    """A client written from the seed's document: JSON-RPC 2.0 over POST, nothing else."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.next_id = 0

    def rpc(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            message["params"] = params
        response = httpx.post(self.url, json=message, headers={"Content-Type": "application/json"}, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["jsonrpc"] == "2.0" and body["id"] == self.next_id, body
        return body

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """tools/call; returns the data of `content[0].text` (a JSON string) on success."""
        body = self.rpc("tools/call", {"name": name, "arguments": arguments})
        assert "error" not in body, body
        result = body["result"]
        assert result["isError"] is False, result
        data = json.loads(result["content"][0]["text"])
        assert isinstance(data, dict), result
        return data

    def call_error(self, name: str, arguments: dict[str, Any]) -> str:
        result = self.rpc("tools/call", {"name": name, "arguments": arguments})["result"]
        assert result["isError"] is True, result
        return result["content"][0]["text"]


def emulator_url(server: ServerProcess) -> str:
    return (server.data_dir / "emulator.url").read_text().strip()


def shopper_cli(server: ServerProcess, action: str, *selector: str) -> dict[str, Any]:
    completed = run_cli("ifthenpay", "--data-dir", str(server.data_dir), "shopper", action, *selector, cwd=server.data_dir)
    assert completed.returncode == 0, describe_cli(completed)
    return json.loads(completed.stdout)


def test_seed_client_creates_a_multibanco_reference_the_shopper_pays_and_lists_it(ifthenpay_server: ServerProcess) -> None:
    client = SeedClient(ifthenpay_server.url(ENDPOINT))
    init = client.rpc("initialize", {"protocolVersion": "2025-03-26", "clientInfo": {"name": "my-client", "version": "1.0.0"}})
    assert init["result"]["protocolVersion"] == "2025-03-26"
    assert init["result"]["serverInfo"]["name"] == "ifthenpay-mcp"
    assert init["result"]["serverInfo"]["version"] == "1.0.0"
    assert init["result"]["capabilities"] == {"tools": {}}
    assert client.rpc("ping")["result"] == {}
    tools = client.rpc("tools/list")["result"]["tools"]
    assert {t["name"] for t in tools} == IFTHENPAY_TOOLS
    assert all(t["inputSchema"]["type"] == "object" for t in tools)

    order = order_id("MB")
    ref = client.call("multibanco_create_reference", {"mb_key": MB_KEY, "order_id": order, "amount": 25.00})
    assert set(ref) >= {"entity", "reference", "amount", "expiry_date", "request_id"}, ref
    assert len(ref["entity"]) == 5 and ref["entity"].isdigit(), ref
    assert len(ref["reference"]) == 9 and ref["reference"].isdigit(), ref
    assert ref["amount"] == "25.00" and ref["expiry_date"] is None, ref

    paid = shopper_cli(ifthenpay_server, "pay", "--reference", ref["reference"])
    assert paid["status"] == "paid" and paid["callback"]["status"] == 200, paid

    listed = client.call("payments_list", {"bo_key": BO_KEY, "entity": "MB", "order_id": order})
    assert listed["count"] == 1, listed
    payment = listed["payments"][0]
    assert (payment["order_id"], payment["amount"], payment["status"]) == (order, "25.00", "paid"), payment

    # The seed's tool error.
    text = client.call_error("multibanco_create_reference", {"mb_key": "AAA-000000", "order_id": order_id("X"), "amount": 1})
    assert text.startswith("Invalid key or API error: "), text


async def test_mcp_client_requests_an_mbway_payment_and_polls_until_paid(ifthenpay_server: ServerProcess) -> None:
    order = order_id("W")
    async with mcp_http(ifthenpay_server.url(ENDPOINT), mode="legacy", headers={}) as conn:
        assert conn.protocol_version == "2025-03-26"
        tools = {t.name: t for t in (await conn.client.list_tools()).tools}
        assert set(tools) == IFTHENPAY_TOOLS
        assert tools["mbway_check_status"].annotations.read_only_hint is True

        result = await conn.client.call_tool(
            "mbway_request_payment", {"mbway_key": MBWAY_KEY, "order_id": order, "amount": 15.50, "phone": "351#912345678"}
        )
        assert result.is_error is not True, result_text(result)
        sent = json.loads(result_text(result))
        assert sent["status"] == "pending" and sent["message"] == "Payment request sent", sent
        assert result.structured_content == sent

        status_args = {"mbway_key": MBWAY_KEY, "request_id": sent["request_id"]}
        pending = json.loads(result_text(await conn.client.call_tool("mbway_check_status", status_args)))
        assert pending["status"] == "pending", pending

        # The shopper approves in the MB WAY app (the emulator's control endpoint).
        response = httpx.post(
            emulator_url(ifthenpay_server) + "/sandbox/ifthenpay/shopper",
            json={"action": "pay", "request_id": sent["request_id"]},
            timeout=30,
        )
        assert response.status_code == 200 and response.json()["callback"]["status"] == 200, response.text

        deadline = time.monotonic() + 10
        while True:
            status = json.loads(result_text(await conn.client.call_tool("mbway_check_status", status_args)))
            if status["status"] != "pending" or time.monotonic() > deadline:
                break
        assert (status["status"], status["status_code"], status["message"]) == ("paid", "000", "Payment approved"), status

        listed = json.loads(
            result_text(await conn.client.call_tool("payments_list", {"bo_key": BO_KEY, "request_id": sent["request_id"]}))
        )
        assert listed["count"] == 1 and listed["payments"][0]["order_id"] == order, listed
        assert listed["payments"][0]["amount"] == "15.50", listed


async def test_mcp_client_in_2026_07_28_mode_creates_a_payshop_reference(ifthenpay_server: ServerProcess) -> None:
    """The official client's `auto` mode finds the stateless 2026-07-28 protocol (server/discover)
    on the seed's endpoint, served by rmcp with the same nine tools as `ifthenpay-mcp` 1.0.0."""
    async with mcp_http(ifthenpay_server.url(ENDPOINT), mode="auto", headers={}) as conn:
        assert conn.protocol_version == "2026-07-28"
        assert all(record.response_session_id is None for record in conn.wire), conn.wire
        tools = [t.name for t in (await conn.client.list_tools()).tools]
        assert set(tools) == IFTHENPAY_TOOLS
        result = await conn.client.call_tool(
            "payshop_create_reference", {"payshop_key": PAYSHOP_KEY, "order_id": order_id("M"), "amount": 7.25}
        )
        assert result.is_error is not True, result_text(result)
        data = json.loads(result_text(result))
        assert len(data["reference"]) == 13 and data["amount"] == "7.25", data
        assert result.structured_content == data


def test_mbway_rejected_and_expired_through_the_shopper_cli(ifthenpay_server: ServerProcess) -> None:
    client = SeedClient(ifthenpay_server.url(ENDPOINT))
    outcomes = {}
    for action in ("reject", "expire"):
        sent = client.call(
            "mbway_request_payment", {"mbway_key": MBWAY_KEY, "order_id": order_id("R"), "amount": 3, "phone": "351#912345678"}
        )
        shopper_cli(ifthenpay_server, action, "--request-id", sent["request_id"])
        outcomes[action] = client.call("mbway_check_status", {"mbway_key": MBWAY_KEY, "request_id": sent["request_id"]})
    assert (outcomes["reject"]["status"], outcomes["reject"]["status_code"]) == ("rejected", "020"), outcomes
    assert (outcomes["expire"]["status"], outcomes["expire"]["status_code"]) == ("expired", "101"), outcomes


def test_seed_examples_payshop_and_pinpay(ifthenpay_server: ServerProcess) -> None:
    client = SeedClient(ifthenpay_server.url(ENDPOINT))
    payshop = client.call("payshop_create_reference", {"payshop_key": PAYSHOP_KEY, "order_id": order_id("P"), "amount": 50.00})
    assert len(payshop["reference"]) == 13 and payshop["amount"] == "50.00", payshop
    link = client.call(
        "pinpay_create_payment",
        {
            "gateway_key": GATEWAY_KEY,
            "order_id": order_id("CC")[:15],
            "amount": 99.99,
            "accounts": f"CCARD|{CCARD_KEY}",
            "selected_method": "4",
            "otp": "true",
        },
    )
    assert link["redirect_url"].startswith("http") and link["pin_code"] and link["amount"] == "99.99", link
    paid = shopper_cli(ifthenpay_server, "pay", "--pin-code", link["pin_code"], "--method", "CCARD")
    assert paid["paid_method"] == "CCARD" and paid["callback"]["status"] == 200, paid


def test_serve_prints_the_endpoint_and_the_demo_keys(ifthenpay_server: ServerProcess) -> None:
    banner = "".join(ifthenpay_server.stdout_lines)
    assert ifthenpay_server.url(ENDPOINT) in banner, banner
    for key in (MB_KEY, MBWAY_KEY, PAYSHOP_KEY, CCARD_KEY, GATEWAY_KEY, BO_KEY):
        assert key in banner, (key, banner)
    assert "paywarden ifthenpay shopper" in banner, banner


def test_http_contract_cors_405_and_json_rpc_errors(ifthenpay_server: ServerProcess) -> None:
    url = ifthenpay_server.url(ENDPOINT)
    preflight = httpx.options(url, timeout=10)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert preflight.headers["access-control-allow-headers"] == "Content-Type, Authorization"
    assert preflight.headers["access-control-allow-methods"] == "POST, OPTIONS"
    assert httpx.get(url, timeout=10).status_code == 405
    assert httpx.put(url, content=b"{}", timeout=10).status_code == 405

    def error_code(payload: bytes) -> int:
        return httpx.post(url, content=payload, headers={"Content-Type": "application/json"}, timeout=10).json()["error"]["code"]

    assert error_code(b"{oops") == -32700
    assert error_code(json.dumps({"id": 1, "method": "ping"}).encode()) == -32600
    assert error_code(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "nope"}).encode()) == -32601
    assert error_code(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "nope"}}).encode()) == -32602
    invalid = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "pix_create_payment", "arguments": {
        "pix_key": "PWD-100007", "order_id": "PX", "amount": 10, "redirect_url": "https://shop.example/r", "customer_name": "Ana",
        "customer_cpf": "74026594024", "customer_email": "ana@example.com", "customer_phone": "+5585912345678"}}}
    body = httpx.post(url, json=invalid, timeout=10).json()
    assert body["error"]["code"] == -32602 and "check digits" in body["error"]["message"], body
