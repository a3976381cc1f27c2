"""The client configurations the README documents are the ones these tests use.

Each snippet lives in docs/clients/ and the README carries a copy right after a
`<!-- docs/clients/NAME -->` marker; `test_readme_copies_match_the_files` fails when the two
drift. Every other test loads one file, swaps the README's server (http://127.0.0.1:8080) for a
real `paywarden serve` under the built-in policy, connects the way that client would, lists the
tools, reads a demo PA and captures part of it through the confirm flow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _client_flows import CLIENT_PAS, check_tools, confirmed_capture, the_demo_url
from _support import (
    LEGACY_VERSION,
    MODERN_VERSION,
    REPO_ROOT,
    STDIO_TOOLS,
    ServerProcess,
    child_env,
    mcp_http,
    paywarden_bin,
    start_server,
)
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client

pytestmark = pytest.mark.anyio

DOCS = REPO_ROOT / "docs" / "clients"
README = REPO_ROOT / "README.md"
MARKER = re.compile(r"<!-- (docs/clients/[\w.-]+) -->\n```[\w-]*\n(.*?)```", re.S)

# Which demo PA each test captures from (on this module's own server).
PAS = dict(zip(("cursor", "anythingllm", "claude-remote", "openai-agents", "stdio", "cursor-sse"), CLIENT_PAS))


@pytest.fixture(scope="module")
def docs_server(paywarden_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A seeded server under the built-in policy (captures need confirmation)."""
    server = start_server(tmp_path_factory.mktemp("paywarden-docs"), policy=None)
    try:
        yield server
    finally:
        server.stop()


def load_json(name: str, server: ServerProcess | None = None) -> dict[str, Any]:
    text = (DOCS / name).read_text()
    if server is not None:
        text = text.replace(the_demo_url(text), server.base_url)
    return json.loads(text)


# --- the README and the files ------------------------------------------------------------------


def test_readme_copies_match_the_files() -> None:
    readme = README.read_text()
    copies = {path: body for path, body in MARKER.findall(readme)}
    files = {f"docs/clients/{p.name}" for p in DOCS.iterdir() if p.is_file() and p.name != "README.md"}
    assert set(copies) == files, f"README markers {sorted(copies)} != files {sorted(files)}"
    for path, body in copies.items():
        assert body == (REPO_ROOT / path).read_text(), f"the README's copy of {path} differs from the file: edit both"


# --- HTTP clients ------------------------------------------------------------------------------


async def run_flow(url: str, headers: dict[str, str], *, mode: str, expected_version: str, pa: str) -> None:
    async with mcp_http(url, mode=mode, headers=headers) as conn:
        assert conn.protocol_version == expected_version
        check_tools(t.name for t in (await conn.client.list_tools()).tools)
        await confirmed_capture(conn.client.call_tool, pa)


async def test_cursor_config(docs_server: ServerProcess, claim_pa) -> None:
    """Cursor's `~/.cursor/mcp.json`: url + headers, Streamable HTTP (a 2025-era session client)."""
    entry = load_json("cursor.json", docs_server)["mcpServers"]["paywarden"]
    assert set(entry) == {"url", "headers"}, entry
    await run_flow(entry["url"], entry["headers"], mode="legacy", expected_version=LEGACY_VERSION, pa=claim_pa(PAS["cursor"], server=docs_server))


async def test_cursor_sse_config(docs_server: ServerProcess, claim_pa) -> None:
    """Cursor's `~/.cursor/mcp.json` on the 2024-11-05 HTTP+SSE transport (what Cursor and older
    SDK clients fall back to): the same url + headers shape, the `/agentic/v1/sse` URL."""
    entry = load_json("cursor-sse.json", docs_server)["mcpServers"]["paywarden"]
    assert set(entry) == {"url", "headers"} and entry["url"].endswith("/agentic/v1/sse"), entry
    async with Client(sse_client(entry["url"], headers=entry["headers"], timeout=30), mode="legacy", read_timeout_seconds=30) as client:
        assert client.protocol_version == LEGACY_VERSION
        check_tools(t.name for t in (await client.list_tools()).tools)
        await confirmed_capture(client.call_tool, claim_pa(PAS["cursor-sse"], server=docs_server))


async def test_anythingllm_config(docs_server: ServerProcess, claim_pa) -> None:
    """AnythingLLM's `anythingllm_mcp_servers.json`: `"type": "streamable"` is its name for
    Streamable HTTP; here with a 2026-07-28 client."""
    entry = load_json("anythingllm.json", docs_server)["mcpServers"]["paywarden"]
    assert entry["type"] == "streamable", entry
    await run_flow(entry["url"], entry["headers"], mode="auto", expected_version=MODERN_VERSION, pa=claim_pa(PAS["anythingllm"], server=docs_server))


async def test_claude_remote_connector(docs_server: ServerProcess, claim_pa) -> None:
    """What the README tells a Claude user to enter for a remote connector: URL and headers."""
    entry = load_json("claude-remote-connector.json", docs_server)
    assert entry["name"] == "paywarden", entry
    await run_flow(entry["url"], entry["headers"], mode="auto", expected_version=MODERN_VERSION, pa=claim_pa(PAS["claude-remote"], server=docs_server))


async def test_openai_agents_snippet(docs_server: ServerProcess, claim_pa) -> None:
    """The README's Python snippet, executed as written (server URL swapped): its
    `MCPServerStreamableHttp` connects, and the `Agent` it builds sees paywarden's tools."""
    from agents import RunContextWrapper
    from agents.mcp import MCPUtil

    source = (DOCS / "openai-agents.py").read_text()
    namespace: dict[str, Any] = {"__name__": "paywarden_docs_snippet"}
    exec(compile(source.replace(the_demo_url(source), docs_server.base_url), str(DOCS / "openai-agents.py"), "exec"), namespace)
    paywarden, agent = namespace["paywarden"], namespace["agent"]
    assert paywarden in agent.mcp_servers
    async with paywarden:
        function_tools = await MCPUtil.get_function_tools(paywarden, True, RunContextWrapper(context=None), agent)
        check_tools(t.name for t in function_tools)
        check_tools(t.name for t in await agent.get_mcp_tools(RunContextWrapper(context=None)))
        await confirmed_capture(paywarden.call_tool, claim_pa(PAS["openai-agents"], server=docs_server))


# --- stdio -------------------------------------------------------------------------------------


async def test_claude_desktop_stdio_config(tmp_path: Path) -> None:
    """`claude_desktop_config.json`: the documented command and args spawn the server, with the
    placeholders for this checkout's binary and a data directory filled in."""
    entry = load_json("claude-desktop-stdio.json")["mcpServers"]["paywarden"]
    placeholder_bin, placeholder_data = "/absolute/path/to/paywarden/target/debug/paywarden", "/absolute/path/to/paywarden-data"
    assert entry["command"] == placeholder_bin and placeholder_data in entry["args"], entry
    data_dir = tmp_path / "paywarden-data"
    args = [str(data_dir) if a == placeholder_data else a for a in entry["args"]]
    params = StdioServerParameters(
        command=str(paywarden_bin()),  # this checkout's target/debug/paywarden
        args=args,
        env=child_env(PAYWARDEN_LOG="warn"),  # Claude Desktop passes no PAYWARDEN_* either: the built-in policy, the demo entity
        cwd=str(tmp_path),
    )
    with open(tmp_path / "stderr.log", "w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode="legacy", read_timeout_seconds=60) as client:
            assert client.protocol_version == LEGACY_VERSION
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == STDIO_TOOLS
            await confirmed_capture(client.call_tool, PAS["stdio"])
    assert (data_dir / "paywarden.db").exists(), "the documented --data-dir was not used"
