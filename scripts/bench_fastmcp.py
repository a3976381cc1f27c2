"""FastMCP's stateless no-op tool, the Python peers' stack in scripts/bench.sh.

Usage: python bench_fastmcp.py PORT   (serves http://127.0.0.1:PORT/mcp; fastmcp==4.0.10, which
answers 2026-07-28 stateless calls, the same request the rmcp no-op row sends).
"""

import sys

from fastmcp import FastMCP

mcp = FastMCP("noop")


@mcp.tool
def noop() -> str:
    """Does nothing: the protocol's cost alone."""
    return "ok"


if __name__ == "__main__":
    mcp.run(
        transport="http",
        host="127.0.0.1",
        port=int(sys.argv[1]),
        stateless_http=True,
        log_level="warning",
        show_banner=False,
    )
