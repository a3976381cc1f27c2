"""The Payment Ops seed's demo, end to end, with the official Python `mcp` client.

"A customer, sarah@example.com, emailed about a double charge. Look into it and refund the most
recent payment." — against `paywarden serve` on the built-in policy, exactly as the README runs
it: lookup_customer → list_payments → issue_refund (preview) → issue_refund with the preview's
confirmation token → the refund exists in the Stripe emulator, the order is refunded, the
refund_log row and the audit rows are written. Then the seed's own Claude Desktop stdio
configuration (DATABASE_URL, no Stripe key: the offline emulator) with the stdio client, launched
from an unwritable directory and relaunched from others.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from _support import (
    ERAS,
    OPS_TOOLS,
    ServerProcess,
    assert_ok,
    assert_status,
    assert_tool_error,
    audit_export,
    mcp_http,
    start_server,
)
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

pytestmark = pytest.mark.anyio

SARAH = "sarah@example.com"
DEMO_STRIPE_KEY = "sk_test_paywarden_demo_key_only_valid_against_the_emulator"
EMULATOR = re.compile(r"offline emulator at (http://127\.0\.0\.1:\d+)")


@pytest.fixture(scope="module")
def ops_server(paywarden_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The README's run command on a fresh data directory, under the built-in policy."""
    server = start_server(tmp_path_factory.mktemp("paywarden-ops"), policy=None)
    try:
        yield server
    finally:
        server.stop()


def emulator_url(server: ServerProcess) -> str:
    for line in server.stdout_lines:
        if match := EMULATOR.search(line):
            return match.group(1)
    raise AssertionError(f"no emulator URL in the banner:\n{server.diagnostics()}")


def stripe_refunds(server: ServerProcess, payment_intent: str) -> list[dict]:
    """The refunds Stripe (the emulator) holds for a PaymentIntent, read with Stripe's own API."""
    response = httpx.get(
        f"{emulator_url(server)}/v1/refunds",
        params={"payment_intent": payment_intent},
        headers={"Authorization": f"Bearer {DEMO_STRIPE_KEY}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


@pytest.mark.parametrize("era", list(ERAS))
async def test_the_seeds_double_charge_demo(ops_server: ServerProcess, era: str) -> None:
    async with mcp_http(ops_server.url("/mcp"), mode=ERAS[era]["mode"]) as conn:
        client = conn.client
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert OPS_TOOLS <= set(tools), sorted(tools)
        assert tools["issue_refund"].annotations.destructive_hint is True
        assert tools["lookup_customer"].annotations.read_only_hint is True

        profile = assert_ok(await client.call_tool("lookup_customer", {"email": SARAH}))
        assert profile["customer"]["name"] == "Sarah Test"
        assert profile["stripe"]["status"] == "ok"
        stripe_id = profile["customer"]["stripe_customer_id"]
        assert stripe_id.startswith("cus_")

        # The seed's demo, step 2, verbatim: list_payments(customer="cus_...") with the id
        # lookup_customer returned.
        listed = assert_ok(await client.call_tool("list_payments", {"customer": stripe_id}))
        assert listed["customer"]["email"] == SARAH
        by_email = assert_ok(await client.call_tool("list_payments", {"email": SARAH}))
        assert [p["payment_intent_id"] for p in by_email["payments"]] == [
            p["payment_intent_id"] for p in listed["payments"]
        ]
        # The duplicate $49.99: each era's run refunds one of the two.
        open_dupes = [
            p for p in listed["payments"] if p["amount_cents"] == 4999 and p["amount_refunded_cents"] == 0
        ]
        assert open_dupes, listed
        target = open_dupes[0]["payment_intent_id"]
        args = {"email": SARAH, "charge_id": target, "reason": "duplicate", "confirmed": True}

        preview = assert_status(await client.call_tool("issue_refund", args), "confirmation_required")
        assert preview["confirmation"]["preview"]["amountMinor"] == 4999
        assert stripe_refunds(ops_server, target) == []  # nothing moved yet

        token = preview["confirmation"]["token"]
        done = assert_status(await client.call_tool("issue_refund", {**args, "confirmation_token": token}), "executed")
        assert done["refund"]["amount_cents"] == 4999
        assert done["order"]["status"] == "refunded"
        refunds = stripe_refunds(ops_server, target)
        assert [r["id"] for r in refunds] == [done["refund"]["stripe_refund_id"]]
        assert refunds[0]["amount"] == 4999 and refunds[0]["status"] == "succeeded"

        # The same confirmed call again: the first outcome, no second refund.
        again = assert_ok(await client.call_tool("issue_refund", {**args, "confirmation_token": token}))
        assert again["idempotentReplay"] is True
        assert len(stripe_refunds(ops_server, target)) == 1

        history = assert_ok(await client.call_tool("get_order_history", {"email": SARAH}))
        order = next(o for o in history["orders"] if o["stripe_charge_id"] == target)
        assert order["status"] == "refunded"
        assert [r["stripe_refund_id"] for r in order["refunds"]] == [done["refund"]["stripe_refund_id"]]
        assert order["refunds"][0]["reason"] == "duplicate"
        # refund_log as the seed's schema defines it.
        assert order["refunds"][0]["refunded_by"] == "ai-assistant"

        # Beyond the remainder and past the 90-day rule: clear errors.
        assert_tool_error(await client.call_tool("issue_refund", {"email": SARAH, "charge_id": target}), "already refunded")

    rows = [r for r in audit_export(ops_server.data_dir) if r["toolset"] == "ops"]
    tools_audited = {r["tool"] for r in rows}
    assert {"lookup_customer", "list_payments", "issue_refund", "get_order_history"} <= tools_audited
    executed = [r for r in rows if r["tool"] == "issue_refund" and r["outcome"] == "ok"]
    assert any(r["transaction_id"] == done["refund"]["stripe_refund_id"] for r in executed), executed
    assert all(DEMO_STRIPE_KEY not in str(r) for r in rows)


async def test_resources_and_prompts(ops_server: ServerProcess) -> None:
    async with mcp_http(ops_server.url("/mcp"), mode="legacy") as conn:
        templates = await conn.client.list_resource_templates()
        assert {t.uri_template for t in templates.resource_templates} == {
            "customer://{email}",
            "payment://{charge_id}",
            "paywarden://payments/{provider}/{payment_id}",
        }
        read = await conn.client.read_resource(f"customer://{SARAH}")
        assert '"email":"sarah@example.com"' in read.contents[0].text
        prompts = await conn.client.list_prompts()
        assert {p.name for p in prompts.prompts} == {"daily_revenue_report", "find_refund_candidates"}
        report = await conn.client.get_prompt("daily_revenue_report", {"date": "2026-03-01"})
        assert "revenue_summary" in report.messages[0].content.text


# A directory nobody can create anything in, root included (CI runs as root, and chmod does not
# stop root): Claude Desktop on macOS starts its servers in `/`, which is not writable either.
UNWRITABLE_CWD = Path("/proc")


def seed_claude_desktop(binary: Path, database: Path, home: Path, cwd: Path) -> StdioServerParameters:
    """The Payment Ops seed's claude_desktop_config.json entry, launched as Claude Desktop does:
    `command` and `"args": ["stdio"]`, its `env` over a minimal default environment (the SDK's
    get_default_environment(): HOME, PATH, USER...), from a working directory the user did not
    choose. No STRIPE_API_KEY: the offline Stripe emulator. HOME is a temporary directory, so no
    per-user data directory of this machine is touched."""
    return StdioServerParameters(
        command=str(binary),
        args=["stdio"],
        env={"HOME": str(home), "DATABASE_URL": f"sqlite:///{database}"},
        cwd=str(cwd),
    )


@asynccontextmanager
async def desktop_session(params: StdioServerParameters, log: Path) -> AsyncIterator[Client]:
    """One Claude Desktop session: a fresh process; its stderr (paywarden's log) goes to `log`
    and is shown when the launch fails."""
    try:
        with open(log, "w") as errlog:
            async with Client(stdio_client(params, errlog=errlog), mode="legacy", read_timeout_seconds=60) as client:
                yield client
    except Exception as error:
        raise AssertionError(f"launch from {params.cwd} failed: {error!r}\n--- paywarden stderr ---\n{log.read_text()}") from error


async def sarahs_stripe_customer(client: Client) -> str:
    """The demo's step 1: the orders database and Stripe both know Sarah."""
    profile = assert_ok(await client.call_tool("lookup_customer", {"email": SARAH}))
    assert profile["customer"]["name"] == "Sarah Test" and profile["order_count"] == 3, profile
    assert profile["stripe"]["status"] == "ok", profile  # the emulator has her: state was found
    return profile["customer"]["stripe_customer_id"]


async def sarahs_payments(client: Client, customer: str) -> dict[str, dict]:
    """The demo's step 2, verbatim: list_payments(customer="cus_...") with the id step 1 returned."""
    listed = assert_ok(await client.call_tool("list_payments", {"customer": customer}))
    return {p["payment_intent_id"]: p for p in listed["payments"]}


async def refund_with_confirmation(client: Client, payment_intent: str) -> str:
    """Steps 3-4: issue_refund's preview, then the confirmed call with its token."""
    args = {"email": SARAH, "charge_id": payment_intent, "reason": "duplicate", "confirmed": True}
    preview = assert_status(await client.call_tool("issue_refund", args), "confirmation_required")
    assert preview["confirmation"]["preview"]["amountMinor"] == 4999, preview
    token = preview["confirmation"]["token"]
    done = assert_status(await client.call_tool("issue_refund", {**args, "confirmation_token": token}), "executed")
    assert done["refund"]["amount_cents"] == 4999 and done["order"]["status"] == "refunded", done
    return done["refund"]["stripe_refund_id"]


async def test_the_seeds_claude_desktop_config_from_any_working_directory(paywarden_binary: Path, tmp_path: Path) -> None:
    """The seed's Claude Desktop stdio config, verbatim with the emulator: launched from an
    unwritable directory, then relaunched from two other directories in turn. Each launch finds
    the same orders database and the same Stripe (emulator) state beside it, whatever the working
    directory: a refund made in one launch is there in the next."""
    with pytest.raises(OSError):  # the precondition: even this user cannot write there
        (UNWRITABLE_CWD / "paywarden-e2e-probe").mkdir()
    database, home = tmp_path / "payments.db", tmp_path / "home"
    home.mkdir()
    elsewhere = [tmp_path / "launched-from-a", tmp_path / "launched-from-b"]
    for directory in elsewhere:
        directory.mkdir()

    def launch(cwd: Path) -> StdioServerParameters:
        return seed_claude_desktop(paywarden_binary, database, home, cwd)

    # Launch 1, from a directory where nothing can be written: the demo, start to finish.
    async with desktop_session(launch(UNWRITABLE_CWD), tmp_path / "launch-1.log") as client:
        assert OPS_TOOLS <= {t.name for t in (await client.list_tools()).tools}
        stripe_id = await sarahs_stripe_customer(client)
        payments = await sarahs_payments(client, stripe_id)
        dupes = sorted(pi for pi, p in payments.items() if p["amount_cents"] == 4999)
        assert len(dupes) == 2 and all(payments[pi]["amount_refunded_cents"] == 0 for pi in dupes), payments
        first_refund = await refund_with_confirmation(client, dupes[0])

    # Launch 2, from another directory: the same customer in Stripe, launch 1's refund there.
    async with desktop_session(launch(elsewhere[0]), tmp_path / "launch-2.log") as client:
        assert await sarahs_stripe_customer(client) == stripe_id
        payments = await sarahs_payments(client, stripe_id)
        assert payments[dupes[0]]["amount_refunded_cents"] == 4999, payments
        history = assert_ok(await client.call_tool("get_order_history", {"email": SARAH}))
        refunded = {o["stripe_charge_id"]: o for o in history["orders"]}[dupes[0]]
        assert refunded["status"] == "refunded" and [r["stripe_refund_id"] for r in refunded["refunds"]] == [first_refund]
        assert_tool_error(await client.call_tool("issue_refund", {"email": SARAH, "charge_id": dupes[0]}), "already refunded")
        second_refund = await refund_with_confirmation(client, dupes[1])

    # Launch 3, from a third directory: both refunds, in the orders database and in Stripe.
    async with desktop_session(launch(elsewhere[1]), tmp_path / "launch-3.log") as client:
        assert await sarahs_stripe_customer(client) == stripe_id
        payments = await sarahs_payments(client, stripe_id)
        assert [payments[pi]["amount_refunded_cents"] for pi in dupes] == [4999, 4999], payments
        history = assert_ok(await client.call_tool("get_order_history", {"email": SARAH}))
        refunds = {r["stripe_refund_id"] for o in history["orders"] for r in o["refunds"]}
        assert refunds == {first_refund, second_refund}, history

    assert database.is_file(), "DATABASE_URL was not used"
    state = tmp_path / "payments.db-paywarden"  # documented in the README: beside the database
    assert (state / "emulator.db").is_file(), sorted(p.name for p in tmp_path.iterdir())
    for directory in elsewhere:
        assert list(directory.iterdir()) == [], f"something was written to the working directory {directory}"
    assert not (home / ".local").exists(), "with a database named, nothing goes to the per-user directory"
