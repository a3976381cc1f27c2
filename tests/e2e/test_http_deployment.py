"""Deployment-facing HTTP behaviour of `paywarden serve`, on the real binary.

What a real deployment (behind a reverse proxy, on its own domain, with browsers around) relies
on: the `Host` and `Origin` allow-lists (403 otherwise; configurable with `[http] allowed_hosts`
and `allowed_origins`), session deletion and expiry (`[http] session_idle_timeout_secs`), the
`MCP-Protocol-Version` header (400 for a version paywarden doesn't speak), and the request-body
bound (`[http] max_body_bytes`, 413 beyond). The conformance suite (tests/conformance) checks the
DNS-rebinding defaults too; this file checks the configured, non-default cases.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _support import (
    DEMO_HEADERS,
    ENDPOINTS,
    LEGACY_VERSION,
    MODERN_VERSION,
    ServerProcess,
    mcp_http,
    start_server,
)

pytestmark = pytest.mark.anyio

DOMAIN = "payments.example.com"
ACCEPT = "application/json, text/event-stream"


def initialize_body(version: str = LEGACY_VERSION) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "deployment-test", "version": "1"}},
    }


def post(url: str, body, *, headers: dict[str, str] | None = None, credentials: bool = True) -> httpx.Response:
    sent = {"content-type": "application/json", "accept": ACCEPT}
    if credentials:
        sent.update(DEMO_HEADERS)
    sent.update(headers or {})
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(url, content=content, headers=sent, timeout=30)


def open_session(url: str, headers: dict[str, str] | None = None) -> str:
    """initialize + notifications/initialized; returns the Mcp-Session-Id."""
    response = post(url, initialize_body(), headers=headers)
    assert response.status_code == 200, response.text
    session = response.headers["mcp-session-id"]
    done = post(
        url,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers={**(headers or {}), "mcp-session-id": session, "mcp-protocol-version": LEGACY_VERSION},
    )
    assert done.status_code == 202, done.text
    return session


def list_tools_in(url: str, session: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return post(
        url,
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        headers={**(headers or {}), "mcp-session-id": session, "mcp-protocol-version": LEGACY_VERSION},
    )


def write_config(path: Path, http_section: str) -> Path:
    path.write_text(f"[http]\n{http_section}\n")
    return path


@pytest.fixture(scope="module")
def domain_server(paywarden_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Configured as it would be behind a reverse proxy on its own domain, with a 2-second
    session idle timeout and a small body bound."""
    data_dir = tmp_path_factory.mktemp("paywarden-domain")
    config = write_config(
        data_dir / "paywarden.toml",
        f'allowed_hosts = ["{DOMAIN}", "127.0.0.1"]\n'
        f'allowed_origins = ["https://{DOMAIN}"]\n'
        "max_body_bytes = 4096\n"
        "session_idle_timeout_secs = 2\n",
    )
    server = start_server(data_dir, "--config", str(config))
    try:
        yield server
    finally:
        server.stop()


# --- Host and Origin ---------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_default_host_and_origin_allow_lists(base_url: str, endpoint: str) -> None:
    url = base_url + endpoint
    port = base_url.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        assert post(url, initialize_body(), headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", f"evil.example:{port}", f"{DOMAIN}"):
        response = post(url, initialize_body(), headers={"Host": host})
        assert response.status_code == 403, (host, response.status_code, response.text)
    for origin in (f"http://localhost:{port}", "http://127.0.0.1:5173", "https://localhost"):
        assert post(url, initialize_body(), headers={"Origin": origin}).status_code == 200, origin
    for origin in ("https://evil.example", "http://localhost.evil.example:8080", "null"):
        response = post(url, initialize_body(), headers={"Origin": origin})
        assert response.status_code == 403, (origin, response.status_code, response.text)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_foreign_host_or_origin_is_403_before_credentials(base_url: str, endpoint: str) -> None:
    """A foreign name or page is refused as such (403), not told how to authenticate (401)."""
    url = base_url + endpoint
    for headers in ({"Host": "evil.example"}, {"Origin": "https://evil.example"}):
        response = post(url, initialize_body(), headers=headers, credentials=False)
        assert response.status_code == 403, (headers, response.status_code, response.text)
        assert "X-Token" not in response.text, response.text
    assert post(url, initialize_body(), credentials=False).status_code == 401  # a local caller without credentials


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_configured_domain_behind_a_proxy(domain_server: ServerProcess, endpoint: str) -> None:
    """`[http] allowed_hosts/allowed_origins` for a real domain: a proxy forwarding the public
    Host and a browser on the public origin get through; everything else is 403."""
    url = domain_server.url(endpoint)
    ok = {"Host": DOMAIN, "Origin": f"https://{DOMAIN}"}
    assert post(url, initialize_body(), headers=ok).status_code == 200
    assert post(url, initialize_body(), headers={"Host": f"{DOMAIN}:443"}).status_code == 200  # host entries without a port match any port
    for headers in (
        {"Host": "localhost"},  # no longer in the list
        {"Host": f"evil.{DOMAIN}"},
        {"Host": DOMAIN, "Origin": "http://localhost:3000"},  # the defaults are replaced, not extended
        {"Host": DOMAIN, "Origin": f"http://{DOMAIN}"},  # scheme matters
        {"Host": DOMAIN, "Origin": "https://evil.example"},
    ):
        response = post(url, initialize_body(), headers=headers)
        assert response.status_code == 403, (headers, response.status_code, response.text)


async def test_real_client_through_the_public_host_name(domain_server: ServerProcess) -> None:
    """The official client, sending the public Host name as a reverse proxy would pass it on."""
    headers = {**DEMO_HEADERS, "Host": DOMAIN}
    async with mcp_http(domain_server.url("/agentic/v1/mcp"), mode="legacy", headers=headers) as conn:
        assert conn.protocol_version == LEGACY_VERSION
        assert "get_transactions" in {t.name for t in (await conn.client.list_tools()).tools}


# --- sessions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_session_delete(base_url: str, endpoint: str) -> None:
    url = base_url + endpoint
    session = open_session(url)
    assert list_tools_in(url, session).status_code == 200
    deleted = httpx.delete(url, headers={**DEMO_HEADERS, "mcp-session-id": session, "mcp-protocol-version": LEGACY_VERSION}, timeout=30)
    assert deleted.status_code == 200, deleted.text  # what the SDKs count as success (not 202)
    gone = list_tools_in(url, session)
    assert gone.status_code == 404, (gone.status_code, gone.text)  # the client must start a new session
    # A request of the session era without any session id is a client error, not a new session.
    assert post(url, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, headers={"mcp-protocol-version": LEGACY_VERSION}).status_code == 400


def test_idle_session_expires(domain_server: ServerProcess) -> None:
    """`session_idle_timeout_secs = 2`: a used session stays, an idle one is closed (404)."""
    url = domain_server.url("/mcp")
    session = open_session(url)
    for _ in range(6):  # activity keeps it alive past the timeout
        time.sleep(0.5)
        assert list_tools_in(url, session).status_code == 200
    time.sleep(4.5)
    expired = list_tools_in(url, session)
    assert expired.status_code == 404, (expired.status_code, expired.text)
    assert list_tools_in(url, open_session(url)).status_code == 200  # a new session works


async def test_modern_clients_are_not_affected_by_session_expiry(domain_server: ServerProcess) -> None:
    """2026-07-28 clients are stateless: nothing to expire between their requests."""
    async with mcp_http(domain_server.url("/mcp"), mode="auto") as conn:
        assert conn.protocol_version == MODERN_VERSION
        await conn.client.list_tools()
        time.sleep(3)
        await conn.client.list_tools()


# --- protocol version --------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_protocol_version_header(base_url: str, endpoint: str) -> None:
    url = base_url + endpoint
    session = open_session(url)
    with_session = {"mcp-session-id": session}
    tools_list = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    assert post(url, tools_list, headers={**with_session, "mcp-protocol-version": LEGACY_VERSION}).status_code == 200
    bad = post(url, tools_list, headers={**with_session, "mcp-protocol-version": "1999-01-01"})
    assert bad.status_code == 400 and "1999-01-01" in bad.text, (bad.status_code, bad.text)

    # The stateless era: an unsupported version is JSON-RPC -32022 naming the supported ones.
    meta = {
        "io.modelcontextprotocol/protocolVersion": "1999-01-01",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "deployment-test", "version": "1"},
    }
    stateless = post(
        url,
        {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": meta}},
        headers={"mcp-protocol-version": "1999-01-01", "mcp-method": "tools/list"},
    )
    assert stateless.status_code == 400, (stateless.status_code, stateless.text)
    error = stateless.json()["error"]
    assert error["code"] == -32022 and MODERN_VERSION in error["data"]["supported"], error
    # A header that contradicts the request's own _meta version is refused too.
    meta["io.modelcontextprotocol/protocolVersion"] = MODERN_VERSION
    mismatch = post(
        url,
        {"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {"_meta": meta}},
        headers={"mcp-protocol-version": LEGACY_VERSION, "mcp-method": "tools/list"},
    )
    assert mismatch.status_code == 400, (mismatch.status_code, mismatch.text)


# --- request size ------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_request_body_bound(base_url: str, domain_server: ServerProcess, endpoint: str) -> None:
    # Default bound, 1 MiB.
    too_big = json.dumps({**initialize_body(), "padding": "x" * (1024 * 1024)})
    response = post(base_url + endpoint, too_big)
    assert response.status_code == 413, (response.status_code, response.text[:300])
    # Configured bound, 4096 bytes: a normal request fits, 5000 bytes don't.
    url = domain_server.url(endpoint)
    assert post(url, initialize_body()).status_code == 200
    response = post(url, json.dumps({**initialize_body(), "padding": "x" * 5000}))
    assert response.status_code == 413, (response.status_code, response.text[:300])
