"""Fixtures: the real paywarden server as a child process.

Nothing is built here: scripts/test.sh runs `cargo build -p paywarden` first (or set
PAYWARDEN_BIN to a binary). Servers run on 127.0.0.1 port 0 with a temporary data directory,
so with no OPP configured each one starts paywarden's in-process offline OPP emulator and seeds
the ~50 demo payments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _support import UNCAPTURED_DEMO_PAS, UNTOUCHED_DEMO_DBS, ServerProcess, paywarden_bin, start_server


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def paywarden_binary() -> Path:
    binary = paywarden_bin()
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `cargo build -p paywarden` (scripts/test.sh does)", pytrace=False)
    return binary


@pytest.fixture(scope="session")
def server_process(paywarden_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One seeded server shared by the whole session."""
    server = start_server(tmp_path_factory.mktemp("paywarden-session"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def base_url(server_process: ServerProcess) -> str:
    """Base URL (http://127.0.0.1:PORT) of the shared session server."""
    return server_process.base_url


@pytest.fixture(scope="module")
def module_server(paywarden_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A fresh seeded server for one test module, for tests that must not share state."""
    server = start_server(tmp_path_factory.mktemp("paywarden-module"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server_factory(paywarden_binary: Path, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start extra servers (e.g. `--no-seed`) that are stopped when the test ends."""
    started: list[ServerProcess] = []

    def start(*extra_args: str) -> ServerProcess:
        server = start_server(tmp_path / f"server-{len(started)}", *extra_args)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


# --- demo payment allocation ------------------------------------------------------------------

# (server data directory, merchantTransactionId) -> the test that claimed it.
_claimed: dict[tuple[str, str], str] = {}


def _claimer(request: pytest.FixtureRequest, pool: tuple[str, ...], kind: str) -> Callable[..., str]:
    def claim(merchant_transaction_id: str, *, server: ServerProcess | None = None) -> str:
        assert merchant_transaction_id in pool, f"{merchant_transaction_id} is not one of the {kind}: {pool}"
        where = str(server.data_dir) if server is not None else "<session server>"
        owner = _claimed.setdefault((where, merchant_transaction_id), request.node.nodeid)
        assert owner == request.node.nodeid, f"{merchant_transaction_id} on {where} already used by {owner}"
        return merchant_transaction_id

    return claim


@pytest.fixture
def claim_pa(request: pytest.FixtureRequest) -> Callable[..., str]:
    """claim_pa("pw-demo-0010") reserves that uncaptured demo PA for the calling test.

    Each money-moving test names its own PA; claiming one twice on the same server is a bug in
    the tests (they would interfere), so it fails loudly. Tests on a server of their own (a
    module server) pass it: claim_pa("pw-demo-0010", server=server).
    """
    return _claimer(request, UNCAPTURED_DEMO_PAS, "uncaptured demo PAs")


@pytest.fixture
def claim_db(request: pytest.FixtureRequest) -> Callable[..., str]:
    """claim_db("pw-demo-0016", server=server) reserves an untouched demo debit (DB), like claim_pa."""
    return _claimer(request, UNTOUCHED_DEMO_DBS, "untouched demo DBs")
