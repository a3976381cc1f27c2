"""The `paywarden serve` process itself: banner, client configuration, --no-seed."""

from __future__ import annotations

import httpx
import pytest
from _support import (
    DEMO_ENTITY_ID,
    DEMO_HEADERS,
    DEMO_TOKEN,
    ServerProcess,
    assert_ok,
    client_config_from_banner,
    mcp_http,
)

pytestmark = pytest.mark.anyio


def test_banner_and_client_config(server_process: ServerProcess) -> None:
    stdout = "".join(server_process.stdout_lines)
    assert server_process.version == "0.1.0", stdout
    assert server_process.stdout_lines[0].startswith(f"paywarden 0.1.0 listening on {server_process.base_url}"), stdout
    assert DEMO_ENTITY_ID in stdout and DEMO_TOKEN in stdout, stdout
    config = client_config_from_banner(server_process.stdout_lines)
    assert config is not None, f"no client configuration JSON in the banner:\n{stdout}"
    (entry,) = config["servers"].values()
    assert entry["url"] == server_process.base_url + "/agentic/v1/mcp", entry
    assert entry["headers"] == DEMO_HEADERS, entry


@pytest.mark.slow
async def test_no_seed_server_starts_empty(server_factory) -> None:
    server: ServerProcess = server_factory("--no-seed")
    assert httpx.get(server.base_url + "/healthz", timeout=10).json() == {"status": "ok", "sandbox": True}
    async with mcp_http(server.url("/mcp"), mode="auto") as conn:
        body = assert_ok(await conn.client.call_tool("search_transactions", {"limit": 100}))
        assert body["records"] == [] and body["totalCount"] == 0, body
        missing = await conn.client.call_tool("get_transactions", {"merchantTransactionId": "pw-demo-0000"})
        assert missing.is_error is True or missing.structured_content["payments"] == []
