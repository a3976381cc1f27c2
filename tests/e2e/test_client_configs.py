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
import sys
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
    assert_ok,
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


# The OPP seed's OpenAI Agents SDK example, as the seed prints it (placeholders and all).
SEED_AGENTS_EXAMPLE = """
from agents import Agent
from agents.mcp import MCPServerStreamableHttp
OPP_server = MCPServerStreamableHttp(
    url="https://eu-test.OPP.com/agentic/v1/mcp",
    headers={
        "X-Entity-Id": "YOUR_ENTITY_ID",
        "X-Token": "YOUR_ACCESS_TOKEN"
    }
)
"""


def test_the_opp_seeds_agents_example_is_refused_by_openai_agents() -> None:
    """The README says why its snippet differs from the OPP seed's: the seed passes url=/headers=
    directly, which current openai-agents refuses. If a release accepts them, reword the README."""
    with pytest.raises(TypeError, match="unexpected keyword argument 'url'"):
        exec(compile(SEED_AGENTS_EXAMPLE, "<OPP seed example>", "exec"), {"__name__": "opp_seed_example"})
    assert "`url=` and `headers=`" in README.read_text() and "TypeError" in README.read_text()


# --- stdio -------------------------------------------------------------------------------------


def per_user_data_dir(home: Path) -> Path:
    """Where paywarden keeps its data with HOME=home and nothing configured (README, "Where
    data lives")."""
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "paywarden"
    return home / ".local" / "share" / "paywarden"


async def test_claude_desktop_stdio_config(tmp_path: Path) -> None:
    """`claude_desktop_config.json`: the documented command and args, launched as Claude Desktop
    launches them (its env over the SDK's minimal default environment, with HOME a temporary
    directory here) from a directory nothing can be written to (Claude Desktop uses `/` on
    macOS; /proc here, which refuses root too), twice. The data lives in the per-user data
    directory, and the second launch sees what the first one did."""
    entry = load_json("claude-desktop-stdio.json")["mcpServers"]["paywarden"]
    placeholder_bin = "/absolute/path/to/paywarden/target/debug/paywarden"
    assert entry == {"command": placeholder_bin, "args": ["stdio"]}, entry
    home = tmp_path / "home"
    home.mkdir()
    params = StdioServerParameters(
        command=str(paywarden_bin()),  # this checkout's target/debug/paywarden
        args=entry["args"],
        env={"HOME": str(home)},  # Claude Desktop passes no PAYWARDEN_*: the built-in policy, the demo entity
        cwd="/proc",
    )
    with open(tmp_path / "stderr.log", "w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode="legacy", read_timeout_seconds=60) as client:
            assert client.protocol_version == LEGACY_VERSION
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == STDIO_TOOLS
            captured = await confirmed_capture(client.call_tool, PAS["stdio"])
    data_dir = per_user_data_dir(home)
    assert (data_dir / "paywarden.db").is_file() and (data_dir / "emulator.db").is_file(), (tmp_path / "stderr.log").read_text()
    with open(tmp_path / "stderr-2.log", "w") as errlog:
        async with Client(stdio_client(params.model_copy(update={"cwd": str(tmp_path)}), errlog=errlog), mode="legacy", read_timeout_seconds=60) as client:
            tree = assert_ok(await client.call_tool("get_transactions", {"merchantTransactionId": PAS["stdio"]}))
            assert captured["id"] in {p["id"] for p in tree["payments"]}, tree
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "stderr-2.log", "stderr.log"]
