"""The safety layer end to end, under paywarden's built-in policy (no policy file).

The built-in policy: reads are allowed; chargebacks and chargeback reversals need a person;
amounts of 500 or more need a person; so does a day's total of 2,000 or more; so do refunds of
payments older than 60 days; everything else that moves money needs the agent to confirm.

* confirm — the call returns `confirmation_required` with a preview and a single-use token and
  moves nothing; the same call again with `confirmationToken` executes it.
* human — the call returns `approval_pending` with an approval request (`apr_...`) that only an
  operator can decide (`paywarden approvals approve|deny`, or the approval page); the agent then
  completes it with `get_approval` (on /mcp) or by calling the tool again with `approvalId`.

Every test here runs against one module server started with `policy=None`, with its own data
directory so the operator CLI (`paywarden approvals`, `paywarden audit`) reaches its database.
Each test claims its own demo payments on that server (claim_pa/claim_db with server=...).

Daily totals count executed movements per currency, so the flows that really move 600.00 (the
approved rebills) use GBP and USD debits, and every confirm flow moves at most a few EUR: no test
can push another one over the 2,000 day total whatever the order.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import (
    ALL_TOOLS,
    DEMO_ENTITY_ID,
    DEMO_HEADERS,
    DEMO_OPERATOR,
    DEMO_TOKEN,
    ERAS,
    INVALID_PARAMS,
    MODERN_VERSION,
    SANDBOX_PREFIX,
    STDIO_TOOLS,
    Connection,
    ServerProcess,
    approvals_cli,
    assert_ok,
    assert_status,
    assert_success_transaction,
    assert_tool_error,
    audit_export,
    describe,
    describe_cli,
    exponent_of,
    fmt_minor,
    mcp_http,
    result_text,
    run_cli,
    start_server,
    stdio_params,
    to_minor,
    validate_output,
)
from agents import Agent, RunContextWrapper
from agents.mcp import MCPServerStreamableHttp, MCPUtil
from mcp import Client
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio

ERA_IDS = list(ERAS)
OPP_ENDPOINT = "/agentic/v1/mcp"
UNIFIED_ENDPOINT = "/mcp"

RULE_CONFIRM = "money-moves-with-confirmation"
RULE_CHARGEBACK = "chargebacks-need-a-person"
RULE_LARGE = "large-amounts-need-a-person"
RULE_OLD_REFUND = "old-refunds-need-a-person"

APPROVAL_ID = re.compile(r"^apr_[0-9a-f]{16,}$")
CONFIRMATION_TOKEN = re.compile(r"^pwc_[0-9a-f]{64}$")
OPERATOR_PASSWORD = DEMO_OPERATOR[1]
# A rebill of a DB is allowed by OPP's rules for any amount: 600.00 is a large amount (human).
LARGE_AMOUNT = "600.00"

# --- which demo payment each test moves (on the module server) ---------------------------------
CONFIRM_PAS = {
    ("legacy", UNIFIED_ENDPOINT): "pw-demo-0000",
    ("legacy", OPP_ENDPOINT): "pw-demo-0001",
    ("modern", UNIFIED_ENDPOINT): "pw-demo-0010",
    ("modern", OPP_ENDPOINT): "pw-demo-0011",
}
# Token abuse: legacy on the OPP endpoint, modern on the unified one.
ABUSE_CASES = {"legacy": (OPP_ENDPOINT, "pw-demo-0020"), "modern": (UNIFIED_ENDPOINT, "pw-demo-0021")}
AGENTS_PA = "pw-demo-0030"
POLICY_PA = "pw-demo-0031"
AUDIT_PA = "pw-demo-0040"
SECRETS_PA = "pw-demo-0041"  # only a refused reversal: nothing moves
# Approved (executed) 600.00 rebills: GBP and USD debits only (see the module docstring).
GET_APPROVAL_DBS = {"legacy": "pw-demo-0006", "modern": "pw-demo-0035"}
FOLLOW_UP_DBS = {"legacy": "pw-demo-0036", "modern": "pw-demo-0045"}
DENIED_DBS = {"legacy": "pw-demo-0005", "modern": "pw-demo-0016"}
PAGE_DB = "pw-demo-0025"
CLI_FORM_DB = "pw-demo-0046"
OLD_DB = "pw-demo-0026"  # 61-89 days old: refundable (90-day window) but old enough for a person
YOUNG_DB = "pw-demo-0015"  # under 60 days old
UNCLAIMED_CHARGEBACK = "pw-demo-0009"  # DB + CB; only previewed here, nothing moves on it


@pytest.fixture(scope="module")
def safety_server(paywarden_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A seeded server under the built-in policy, with a data directory of its own."""
    server = start_server(tmp_path_factory.mktemp("paywarden-safety"), policy=None)
    try:
        yield server
    finally:
        server.stop()


def era_endpoint_params():
    return pytest.mark.parametrize(
        ("era", "endpoint"),
        [(era, endpoint) for era in ERA_IDS for endpoint in (UNIFIED_ENDPOINT, OPP_ENDPOINT)],
        ids=[f"{era}-{endpoint.strip('/').replace('/', '_')}" for era in ERA_IDS for endpoint in (UNIFIED_ENDPOINT, OPP_ENDPOINT)],
    )


def connect(server: ServerProcess, endpoint: str, era: str, **kwargs: Any):
    return mcp_http(server.url(endpoint), mode=ERAS[era]["mode"], **kwargs)


def new_key() -> str:
    return str(uuid.uuid4())


def new_mtid(kind: str) -> str:
    return f"e2e-{kind}-{uuid.uuid4().hex[:20]}"


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def age_days(transaction: dict[str, Any]) -> int:
    at = dt.datetime.strptime(transaction["timestamp"], "%Y-%m-%d %H:%M:%S%z")
    return (dt.datetime.now(dt.timezone.utc) - at).days


async def output_schemas(conn: Connection) -> dict[str, dict[str, Any]]:
    return {tool.name: tool.output_schema for tool in (await conn.client.list_tools()).tools}


async def untouched(call, merchant_transaction_id: str, payment_type: str) -> dict[str, Any]:
    """The demo payment `merchant_transaction_id`, checked to be alone in its payment (nothing
    captured, refunded, rebilled or charged back yet)."""
    body = assert_ok(await call("get_transactions", {"merchantTransactionId": merchant_transaction_id}))
    assert [p["paymentType"] for p in body["payments"]] == [payment_type], (
        f"precondition: {merchant_transaction_id} should be a lone {payment_type}, got {body['payments']}"
    )
    payment = body["payments"][0]
    assert_success_transaction(payment, payment_type=payment_type)
    return payment


async def payment_tree(call, transaction_id: str) -> list[tuple[str, str]]:
    """(paymentType, id) of every transaction of the payment, sorted: what has moved."""
    body = assert_ok(await call("get_transactions", {"id": transaction_id}))
    return sorted((p["paymentType"], p["id"]) for p in body["payments"])


def types_of(tree: list[tuple[str, str]]) -> list[str]:
    return sorted(t for t, _ in tree)


def check_preview(
    preview: dict[str, Any],
    *,
    tool: str,
    reference: dict[str, Any],
    amount: str,
    currency: str,
) -> None:
    assert preview["tool"] == tool, preview
    assert preview["entity"] == DEMO_ENTITY_ID, preview
    assert preview["referenceId"] == reference["id"], preview
    assert preview["referencePaymentType"] == reference["paymentType"], preview
    assert (preview["amount"], preview["amountMinor"], preview["currency"]) == (amount, to_minor(amount), currency), preview
    assert preview["operation"] and preview["from"] and preview["to"], preview
    assert preview["sandbox"] is True, preview


def check_confirmation(body: dict[str, Any], *, rule: str = RULE_CONFIRM) -> str:
    """A `confirmation_required` result: a token and a preview, nothing executed. Returns the token."""
    confirmation = body["confirmation"]
    assert isinstance(confirmation, dict), body
    assert CONFIRMATION_TOKEN.match(confirmation["token"]), confirmation
    assert parse_time(confirmation["expiresAt"]) > dt.datetime.now(dt.timezone.utc), confirmation
    assert confirmation["rule"] == rule and confirmation["message"], confirmation
    assert body.get("approval") is None and body.get("balances") is None, body
    assert body.get("id") is None and body.get("paymentType") is None, f"a preview must not carry a transaction: {body}"
    return confirmation["token"]


def check_pending_approval(server: ServerProcess, body: dict[str, Any], *, rule: str) -> dict[str, Any]:
    """An `approval_pending` result: a pending request nobody decided yet, nothing executed."""
    approval = body["approval"]
    assert isinstance(approval, dict), body
    assert APPROVAL_ID.match(approval["id"]), approval
    assert approval["status"] == "pending", approval
    assert approval["url"] == f"{server.base_url}/approvals/{approval['id']}", approval
    assert parse_time(approval["expiresAt"]) > dt.datetime.now(dt.timezone.utc), approval
    assert approval["rule"] == rule and approval["message"], approval
    assert approval["decidedBy"] is None and approval["decidedAt"] is None, approval
    assert body.get("confirmation") is None and body.get("balances") is None, body
    assert body.get("id") is None and body.get("paymentType") is None, f"a pending approval must not carry a transaction: {body}"
    return approval


def cli_ok(completed) -> str:
    assert completed.returncode == 0, describe_cli(completed)
    return completed.stdout


# --- confirm --------------------------------------------------------------------------------


@era_endpoint_params()
async def test_confirm_flow(safety_server: ServerProcess, era: str, endpoint: str, claim_pa) -> None:
    """Preview (nothing moves), then the same call plus the token executes it, exactly once."""
    demo_mtid = claim_pa(CONFIRM_PAS[(era, endpoint)], server=safety_server)
    async with connect(safety_server, endpoint, era) as conn:
        assert conn.protocol_version == ERAS[era]["version"]
        call = conn.client.call_tool
        schemas = await output_schemas(conn)
        pa = await untouched(call, demo_mtid, "PA")
        exponent, currency = exponent_of(pa["amount"]), pa["currency"]
        amount = fmt_minor(min(10**exponent, pa["amountMinor"]), exponent)  # one major unit: 1.00 EUR
        args = {
            "referenceId": pa["id"],
            "amount": amount,
            "currency": currency,
            "merchantTransactionId": new_mtid("cp"),
            "idempotencyKey": new_key(),
        }

        preview_result = await call("perform_capture", args)
        preview = assert_status(preview_result, "confirmation_required")
        validate_output(schemas, "perform_capture", preview)
        token = check_confirmation(preview)
        check_preview(preview["confirmation"]["preview"], tool="perform_capture", reference=pa, amount=amount, currency=currency)
        assert token in result_text(preview_result), describe(preview_result)  # the agent reads it from the text too
        assert await payment_tree(call, pa["id"]) == [("PA", pa["id"])], "a preview moved money"

        executed = assert_status(await call("perform_capture", {**args, "confirmationToken": token}), "executed")
        validate_output(schemas, "perform_capture", executed)
        assert_success_transaction(executed, payment_type="CP")
        assert executed["referencedId"] == pa["id"], executed
        assert (executed["amount"], executed["currency"]) == (amount, currency), executed
        assert executed["merchantTransactionId"] == args["merchantTransactionId"], executed
        assert executed["idempotentReplay"] is False, executed
        assert executed["confirmation"] is None and executed["approval"] is None, executed
        assert to_minor(executed["balances"]["captured"]) == to_minor(amount), executed["balances"]
        assert to_minor(executed["balances"]["capturable"]) == pa["amountMinor"] - to_minor(amount), executed["balances"]

        # A retry of the confirmed call (same idempotency key) replays it; nothing moves twice.
        replay = assert_status(await call("perform_capture", {**args, "confirmationToken": token}), "executed")
        assert replay["id"] == executed["id"] and replay["idempotentReplay"] is True, replay
        assert await payment_tree(call, pa["id"]) == sorted([("PA", pa["id"]), ("CP", executed["id"])])


@pytest.mark.parametrize("era", ERA_IDS)
async def test_confirmation_token_abuse(safety_server: ServerProcess, era: str, claim_pa) -> None:
    endpoint, demo = ABUSE_CASES[era]
    demo_mtid = claim_pa(demo, server=safety_server)
    async with connect(safety_server, endpoint, era) as conn:
        call = conn.client.call_tool
        pa = await untouched(call, demo_mtid, "PA")
        exponent, currency = exponent_of(pa["amount"]), pa["currency"]
        amount = fmt_minor(1, exponent)
        args = {"referenceId": pa["id"], "amount": amount, "currency": currency}
        nothing_moved = [("PA", pa["id"])]

        # A made-up token (well-formed) was never issued.
        made_up = await call("perform_capture", {**args, "idempotencyKey": new_key(), "confirmationToken": "pwc_" + secrets.token_hex(32)})
        assert_tool_error(made_up, "never issued")
        assert result_text(made_up).startswith(SANDBOX_PREFIX), describe(made_up)

        token = check_confirmation(assert_status(await call("perform_capture", {**args, "idempotencyKey": new_key()}), "confirmation_required"))

        # The token confirms exactly the previewed operation: not a higher amount, not another tool.
        higher = await call(
            "perform_capture",
            {**args, "amount": fmt_minor(2, exponent), "idempotencyKey": new_key(), "confirmationToken": token},
        )
        assert_tool_error(higher, "different arguments")
        other_tool = await call("perform_reversal", {"referenceId": pa["id"], "idempotencyKey": new_key(), "confirmationToken": token})
        assert_tool_error(other_tool, "different arguments")
        # There is no way around the token: `confirmed: true` is not an argument at all.
        with pytest.raises(MCPError) as caught:
            result = await call("perform_capture", {**args, "idempotencyKey": new_key(), "confirmed": True})
            pytest.fail(f"expected JSON-RPC error {INVALID_PARAMS}, got a tool result:\n{describe(result)}")
        assert caught.value.code == INVALID_PARAMS, (caught.value.code, caught.value.message)
        assert "confirmed" in caught.value.message, caught.value.message
        assert await payment_tree(call, pa["id"]) == nothing_moved

        # The refusals did not burn the token: it still confirms the previewed capture, once.
        executed = assert_status(await call("perform_capture", {**args, "idempotencyKey": new_key(), "confirmationToken": token}), "executed")
        assert_success_transaction(executed, payment_type="CP")
        reused = await call("perform_capture", {**args, "idempotencyKey": new_key(), "confirmationToken": token})
        assert_tool_error(reused, "already used")
        assert await payment_tree(call, pa["id"]) == sorted(nothing_moved + [("CP", executed["id"])])


# --- human: approved ------------------------------------------------------------------------


async def large_rebill(server: ServerProcess, call, demo_mtid: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Ask for a 600.00 rebill of the demo DB: (db, arguments, approval) with the approval pending
    and nothing moved."""
    db = await untouched(call, demo_mtid, "DB")
    assert exponent_of(db["amount"]) == 2, f"precondition: {demo_mtid} should be in a 2-decimal currency: {db}"
    assert db["currency"] != "EUR", f"precondition: approved rebills stay out of EUR, the confirm flows' currency: {db}"
    args = {"referenceId": db["id"], "amount": LARGE_AMOUNT, "currency": db["currency"], "idempotencyKey": new_key()}
    requested = await call("perform_rebill", args)
    body = assert_status(requested, "approval_pending")
    approval = check_pending_approval(server, body, rule=RULE_LARGE)
    check_preview(approval["preview"], tool="perform_rebill", reference=db, amount=LARGE_AMOUNT, currency=db["currency"])
    assert approval["id"] in result_text(requested), describe(requested)
    assert await payment_tree(call, db["id"]) == [("DB", db["id"])], "an approval request moved money"
    return db, args, approval


def operator_approves(server: ServerProcess, approval: dict[str, Any], operator: str = "alice") -> None:
    assert approval["id"] in cli_ok(approvals_cli(server.data_dir, "list"))
    shown = cli_ok(approvals_cli(server.data_dir, "show", approval["id"]))
    assert LARGE_AMOUNT in shown and approval["preview"]["currency"] in shown, shown
    approved = cli_ok(approvals_cli(server.data_dir, "approve", approval["id"], "--as", operator))
    assert approval["id"] in approved, approved


@pytest.mark.parametrize("era", ERA_IDS)
async def test_human_flow_completed_with_get_approval(safety_server: ServerProcess, era: str, claim_db) -> None:
    demo_mtid = claim_db(GET_APPROVAL_DBS[era], server=safety_server)
    async with connect(safety_server, UNIFIED_ENDPOINT, era) as conn:
        call = conn.client.call_tool
        schemas = await output_schemas(conn)
        db, args, approval = await large_rebill(safety_server, call, demo_mtid)
        approval_id = approval["id"]

        # The agent cannot approve: polling reports pending, the follow-up call is refused.
        polled = assert_status(await call("get_approval", {"approvalId": approval_id}), "approval_pending")
        validate_output(schemas, "get_approval", polled)
        assert polled["approval"]["id"] == approval_id and polled["approval"]["status"] == "pending", polled
        early = await call("perform_rebill", {**args, "approvalId": approval_id})
        assert_tool_error(early, approval_id)
        assert await payment_tree(call, db["id"]) == [("DB", db["id"])]

        operator_approves(safety_server, approval)

        done_result = await call("get_approval", {"approvalId": approval_id})
        done = assert_status(done_result, "executed")
        validate_output(schemas, "get_approval", done)
        assert_success_transaction(done, payment_type="RB")
        assert done["referencedId"] == db["id"], done
        assert (done["amount"], done["currency"]) == (LARGE_AMOUNT, db["currency"]), done
        assert await payment_tree(call, db["id"]) == sorted([("DB", db["id"]), ("RB", done["id"])])

        # Polling again returns the same outcome and moves nothing again.
        again = await call("get_approval", {"approvalId": approval_id})
        assert again.is_error is not True, describe(again)
        assert again.structured_content["status"] == "executed", describe(again)
        assert again.structured_content["id"] == done["id"], describe(again)
        assert await payment_tree(call, db["id"]) == sorted([("DB", db["id"]), ("RB", done["id"])])
        shown = cli_ok(approvals_cli(safety_server.data_dir, "show", approval_id))
        assert "alice" in shown and "executed" in shown.lower(), shown

        # Like every other result (idempotent replays included), the text starts with the banner.
        assert_ok(again)


@pytest.mark.parametrize("era", ERA_IDS)
async def test_human_flow_completed_with_approval_id(safety_server: ServerProcess, era: str, claim_db) -> None:
    demo_mtid = claim_db(FOLLOW_UP_DBS[era], server=safety_server)
    async with connect(safety_server, OPP_ENDPOINT, era) as conn:
        call = conn.client.call_tool
        db, args, approval = await large_rebill(safety_server, call, demo_mtid)
        approval_id = approval["id"]

        # The OPP compat endpoint has no get_approval: the follow-up call is the way here.
        with pytest.raises(MCPError) as caught:
            await call("get_approval", {"approvalId": approval_id})
        assert caught.value.code == INVALID_PARAMS and "get_approval" in caught.value.message, caught.value.message
        early = await call("perform_rebill", {**args, "approvalId": approval_id})
        assert_tool_error(early, approval_id)

        operator_approves(safety_server, approval)

        # An approval approves exactly the reviewed operation.
        altered = await call("perform_rebill", {**args, "amount": "700.00", "idempotencyKey": new_key(), "approvalId": approval_id})
        assert_tool_error(altered, approval_id)
        assert await payment_tree(call, db["id"]) == [("DB", db["id"])]

        done = assert_status(await call("perform_rebill", {**args, "approvalId": approval_id}), "executed")
        assert_success_transaction(done, payment_type="RB")
        assert done["referencedId"] == db["id"] and (done["amount"], done["currency"]) == (LARGE_AMOUNT, db["currency"]), done
        assert done["idempotentReplay"] is False, done

        retry = assert_status(await call("perform_rebill", {**args, "approvalId": approval_id}), "executed")
        assert retry["id"] == done["id"] and retry["idempotentReplay"] is True, retry
        assert await payment_tree(call, db["id"]) == sorted([("DB", db["id"]), ("RB", done["id"])])


# --- human: denied --------------------------------------------------------------------------


@pytest.mark.parametrize("era", ERA_IDS)
async def test_human_flow_denied(safety_server: ServerProcess, era: str, claim_db) -> None:
    demo_mtid = claim_db(DENIED_DBS[era], server=safety_server)
    async with connect(safety_server, UNIFIED_ENDPOINT, era) as conn:
        call = conn.client.call_tool
        db = await untouched(call, demo_mtid, "DB")
        args = {"referenceId": db["id"], "idempotencyKey": new_key()}
        body = assert_status(await call("perform_chargeback", args), "approval_pending")
        approval = check_pending_approval(safety_server, body, rule=RULE_CHARGEBACK)
        check_preview(approval["preview"], tool="perform_chargeback", reference=db, amount=db["amount"], currency=db["currency"])

        cli_ok(approvals_cli(safety_server.data_dir, "deny", approval["id"], "--as", "bob", "--note", "e2e: not this one"))

        denied = assert_status(await call("get_approval", {"approvalId": approval["id"]}), "approval_denied")
        assert denied["approval"]["id"] == approval["id"], denied
        assert denied["approval"]["status"] == "denied", denied
        assert denied["approval"]["decidedBy"] == "bob" and denied["approval"]["decidedAt"], denied
        assert denied.get("id") is None, denied

        follow_up = await call("perform_chargeback", {**args, "approvalId": approval["id"]})
        assert_tool_error(follow_up, "denied")

        # A decision is final: the operator cannot flip it to approved.
        flipped = approvals_cli(safety_server.data_dir, "approve", approval["id"], "--as", "alice")
        assert flipped.returncode != 0, describe_cli(flipped)
        assert_status(await call("get_approval", {"approvalId": approval["id"]}), "approval_denied")
        assert await payment_tree(call, db["id"]) == [("DB", db["id"])]


# --- the approval page and the CLI ----------------------------------------------------------


async def test_approval_page_needs_an_operator(safety_server: ServerProcess, claim_db) -> None:
    demo_mtid = claim_db(PAGE_DB, server=safety_server)
    async with connect(safety_server, UNIFIED_ENDPOINT, "legacy") as conn:
        call = conn.client.call_tool
        db = await untouched(call, demo_mtid, "DB")
        body = assert_status(await call("perform_chargeback", {"referenceId": db["id"]}), "approval_pending")
        approval = check_pending_approval(safety_server, body, rule=RULE_CHARGEBACK)
        page = approval["url"]

        with httpx.Client(timeout=30) as http:
            anonymous = http.get(page)
            assert anonymous.status_code == 401, (anonymous.status_code, anonymous.text[:500])
            assert anonymous.headers.get("www-authenticate", "").lower().startswith("basic"), anonymous.headers
            assert db["amount"] not in anonymous.text, "the 401 page shows what the approval is about"
            # The agent's own credentials are not an operator's.
            assert http.get(page, headers=DEMO_HEADERS).status_code == 401
            assert http.get(page, auth=(DEMO_OPERATOR[0], DEMO_TOKEN)).status_code == 401
            assert http.get(page, auth=(DEMO_OPERATOR[0], OPERATOR_PASSWORD + "x")).status_code == 401
            assert http.post(f"{page}/decision", data={"decision": "approve"}).status_code == 401

            operator = http.get(page, auth=DEMO_OPERATOR)
            assert operator.status_code == 200, (operator.status_code, operator.text[:500])
            assert operator.headers["content-type"].startswith("text/html"), operator.headers
            assert approval["id"] in operator.text, operator.text[:2000]
            assert db["amount"] in operator.text and db["currency"] in operator.text, operator.text[:2000]

        # Nothing above decided anything.
        still = assert_status(await call("get_approval", {"approvalId": approval["id"]}), "approval_pending")
        assert still["approval"]["decidedBy"] is None, still
        assert await payment_tree(call, db["id"]) == [("DB", db["id"])]
    cli_ok(approvals_cli(safety_server.data_dir, "deny", approval["id"], "--as", "e2e-cleanup"))


async def test_approvals_cli_accepts_data_dir_after_the_action(safety_server: ServerProcess, claim_db) -> None:
    """`paywarden approvals approve <id> --as alice --data-dir <dir>`, the documented form (like
    `paywarden audit export --data-dir <dir>`), must reach that data directory."""
    demo_mtid = claim_db(CLI_FORM_DB, server=safety_server)
    async with connect(safety_server, UNIFIED_ENDPOINT, "modern") as conn:
        db = await untouched(conn.client.call_tool, demo_mtid, "DB")
        body = assert_status(await conn.client.call_tool("perform_chargeback", {"referenceId": db["id"]}), "approval_pending")
        approval_id = body["approval"]["id"]
    data_dir = str(safety_server.data_dir)
    listed = run_cli("approvals", "list", "--data-dir", data_dir, cwd=safety_server.data_dir)
    assert listed.returncode == 0 and approval_id in listed.stdout, describe_cli(listed)
    shown = run_cli("approvals", "show", approval_id, "--data-dir", data_dir, cwd=safety_server.data_dir)
    assert shown.returncode == 0 and approval_id in shown.stdout, describe_cli(shown)
    denied = run_cli("approvals", "deny", approval_id, "--as", "alice", "--data-dir", data_dir, cwd=safety_server.data_dir)
    assert denied.returncode == 0, describe_cli(denied)


# --- the built-in policy's decisions --------------------------------------------------------


async def test_builtin_policy_decisions(safety_server: ServerProcess, claim_pa, claim_db) -> None:
    """Previews only: which calls the built-in policy confirms and which go to a person."""
    pa_mtid = claim_pa(POLICY_PA, server=safety_server)
    old_mtid = claim_db(OLD_DB, server=safety_server)
    young_mtid = claim_db(YOUNG_DB, server=safety_server)
    async with connect(safety_server, OPP_ENDPOINT, "modern") as conn:
        call = conn.client.call_tool
        pa = await untouched(call, pa_mtid, "PA")
        old = await untouched(call, old_mtid, "DB")
        young = await untouched(call, young_mtid, "DB")
        assert 61 <= age_days(old) <= 89, f"precondition: {old_mtid} should be 61-89 days old: {old}"
        assert age_days(young) < 60, f"precondition: {young_mtid} should be under 60 days old: {young}"
        assert exponent_of(old["amount"]) == 2, old
        chargebacks = assert_ok(await call("get_transactions", {"merchantTransactionId": UNCLAIMED_CHARGEBACK}))["payments"]
        (chargeback,) = [p for p in chargebacks if p["paymentType"] == "CB"]
        one = lambda t: fmt_minor(1, exponent_of(t["amount"]))  # noqa: E731

        def pending(rule: str):
            return lambda body: check_pending_approval(safety_server, body, rule=rule)

        cases = [
            ("perform_capture", {"referenceId": pa["id"], "amount": one(pa), "currency": pa["currency"]}, "confirmation_required", check_confirmation),
            ("perform_reversal", {"referenceId": pa["id"]}, "confirmation_required", check_confirmation),
            ("perform_refund", {"referenceId": young["id"], "amount": one(young), "currency": young["currency"]}, "confirmation_required", check_confirmation),
            ("perform_rebill", {"referenceId": old["id"], "amount": "499.99", "currency": old["currency"]}, "confirmation_required", check_confirmation),
            ("perform_rebill", {"referenceId": old["id"], "amount": "500.00", "currency": old["currency"]}, "approval_pending", pending(RULE_LARGE)),
            ("perform_refund", {"referenceId": old["id"], "amount": one(old), "currency": old["currency"]}, "approval_pending", pending(RULE_OLD_REFUND)),
            ("perform_chargeback", {"referenceId": young["id"]}, "approval_pending", pending(RULE_CHARGEBACK)),
            ("perform_chargeback_reversal", {"referenceId": chargeback["id"]}, "approval_pending", pending(RULE_CHARGEBACK)),
        ]
        for tool, arguments, status, check in cases:
            result = await call(tool, {**arguments, "idempotencyKey": new_key()})
            assert result.structured_content and result.structured_content.get("status") == status, (tool, arguments, describe(result))
            check(assert_status(result, status))

        # Reads are allowed outright.
        assert "status" not in assert_ok(await call("search_transactions", {"limit": 1}))
        assert await payment_tree(call, pa["id"]) == [("PA", pa["id"])]
        assert await payment_tree(call, old["id"]) == [("DB", old["id"])]
        assert await payment_tree(call, young["id"]) == [("DB", young["id"])]
        assert types_of(await payment_tree(call, chargeback["id"])) == ["CB", "DB"]


# --- other clients --------------------------------------------------------------------------


async def test_openai_agents_confirmed_capture(safety_server: ServerProcess, claim_pa) -> None:
    """What an Agent does with its MCP function tools: the preview comes back as text, the model
    shows it, then calls the same tool again with the token (strict-mode arguments: every
    property present, null when unused)."""
    demo_mtid = claim_pa(AGENTS_PA, server=safety_server)
    server = MCPServerStreamableHttp(
        params={"url": safety_server.url(OPP_ENDPOINT), "headers": dict(DEMO_HEADERS), "timeout": 30},
        name="paywarden",
        client_session_timeout_seconds=30,
    )
    async with server:
        assert server.session.protocol_version == MODERN_VERSION
        agent = Agent(name="payments-ops", mcp_servers=[server])
        context = RunContextWrapper(context=None)
        function_tools = {t.name: t for t in await MCPUtil.get_function_tools(server, True, context, agent)}
        assert set(function_tools) == ALL_TOOLS[OPP_ENDPOINT]
        mcp_tools = {t.name: t for t in await server.list_tools()}

        async def invoke(name: str, **values: Any) -> tuple[str, dict[str, Any]]:
            schema = function_tools[name].params_json_schema
            arguments: dict[str, Any] = {prop: ([] if spec.get("type") == "array" else None) for prop, spec in schema["properties"].items()}
            arguments.update(values)
            assert set(arguments) == set(schema["required"]), (arguments, schema["required"])
            output = await MCPUtil.invoke_mcp_tool(server, mcp_tools[name], context, json.dumps(arguments))
            text = output["text"] if isinstance(output, dict) else str(output)
            assert text.startswith(SANDBOX_PREFIX), text
            return text, json.loads(text[text.index("\n{") + 1 :])

        pa = await untouched(server.call_tool, demo_mtid, "PA")
        args = {
            "referenceId": pa["id"],
            "amount": fmt_minor(1, exponent_of(pa["amount"])),
            "currency": pa["currency"],
            "idempotencyKey": new_key(),
        }
        text, preview = await invoke("perform_capture", **args)
        assert preview["status"] == "confirmation_required", text
        token = check_confirmation(preview)
        assert token in text and "CONFIRM" in text.upper(), text
        check_preview(preview["confirmation"]["preview"], tool="perform_capture", reference=pa, amount=args["amount"], currency=pa["currency"])
        assert await payment_tree(server.call_tool, pa["id"]) == [("PA", pa["id"])]

        text, executed = await invoke("perform_capture", **args, confirmationToken=token)
        assert executed["status"] == "executed", text
        assert_success_transaction(executed, payment_type="CP")
        assert executed["referencedId"] == pa["id"] and executed["amount"] == args["amount"], executed
        assert await payment_tree(server.call_tool, pa["id"]) == sorted([("PA", pa["id"]), ("CP", executed["id"])])


@pytest.mark.parametrize("era", ERA_IDS)
async def test_stdio_under_the_builtin_policy(paywarden_binary: Path, tmp_path: Path, era: str) -> None:
    """stdio (Claude Desktop style) gets the same tools and the same safety as /mcp."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    params = stdio_params(paywarden_binary, data_dir, policy=None)
    with open(tmp_path / "stderr.log", "w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode=ERAS[era]["mode"], read_timeout_seconds=60) as client:
            assert client.protocol_version == ERAS[era]["version"]
            assert {t.name for t in (await client.list_tools()).tools} == STDIO_TOOLS
            call = client.call_tool

            pa = await untouched(call, "pw-demo-0000", "PA")
            args = {"referenceId": pa["id"], "amount": fmt_minor(1, exponent_of(pa["amount"])), "currency": pa["currency"], "idempotencyKey": new_key()}
            token = check_confirmation(assert_status(await call("perform_capture", args), "confirmation_required"))
            assert await payment_tree(call, pa["id"]) == [("PA", pa["id"])]
            cp = assert_status(await call("perform_capture", {**args, "confirmationToken": token}), "executed")
            assert_success_transaction(cp, payment_type="CP")

            db = await untouched(call, "pw-demo-0006", "DB")
            pending = assert_status(
                await call("perform_rebill", {"referenceId": db["id"], "amount": LARGE_AMOUNT, "currency": db["currency"]}),
                "approval_pending",
            )
            approval = pending["approval"]
            assert APPROVAL_ID.match(approval["id"]) and approval["rule"] == RULE_LARGE, approval
            assert approval["url"].endswith(f"/approvals/{approval['id']}"), approval
            cli_ok(approvals_cli(data_dir, "approve", approval["id"], "--as", "alice"))
            rb = assert_status(await call("get_approval", {"approvalId": approval["id"]}), "executed")
            assert_success_transaction(rb, payment_type="RB")
            assert rb["referencedId"] == db["id"] and rb["amount"] == LARGE_AMOUNT, rb
            assert await payment_tree(call, db["id"]) == sorted([("DB", db["id"]), ("RB", rb["id"])])


# --- audit and secrets (last: they also look at what every test above left behind) ----------


async def test_audit_log_records_every_call(safety_server: ServerProcess, claim_pa) -> None:
    demo_mtid = claim_pa(AUDIT_PA, server=safety_server)
    data_dir = safety_server.data_dir
    async with connect(safety_server, UNIFIED_ENDPOINT, "legacy") as conn:
        call = conn.client.call_tool
        pa = await untouched(call, demo_mtid, "PA")
        before = len(audit_export(data_dir))

        capture = {"referenceId": pa["id"], "amount": fmt_minor(1, exponent_of(pa["amount"])), "currency": pa["currency"], "idempotencyKey": new_key()}
        token = check_confirmation(assert_status(await call("perform_capture", capture), "confirmation_required"))
        cp = assert_status(await call("perform_capture", {**capture, "confirmationToken": token}), "executed")
        chargeback = {"referenceId": cp["id"], "idempotencyKey": new_key()}
        approval_id = assert_status(await call("perform_chargeback", chargeback), "approval_pending")["approval"]["id"]
        assert_status(await call("get_approval", {"approvalId": approval_id}), "approval_pending")
        cli_ok(approvals_cli(data_dir, "deny", approval_id, "--as", "bob"))
        assert_status(await call("get_approval", {"approvalId": approval_id}), "approval_denied")
        assert_tool_error(await call("perform_chargeback", {**chargeback, "approvalId": approval_id}), "denied")
        with pytest.raises(MCPError):
            await call("perform_capture", {**capture, "idempotencyKey": new_key(), "confirmed": True})

    entries = audit_export(data_dir)
    # The calls' rows; provider events (the emulator's OPP notifications of the capture, audited
    # as `opp_webhook` / `stripe_webhook`) land in the same chain and are checked elsewhere.
    mine = [e for e in entries[before:] if not e["tool"].endswith("_webhook")]
    assert [(e["tool"], e["outcome"]) for e in mine] == [
        ("perform_capture", "confirmation_required"),
        ("perform_capture", "ok"),
        ("perform_chargeback", "approval_requested"),
        ("get_approval", "ok"),
        ("perform_chargeback", "denied"),  # the operator's decision, made with the CLI
        ("get_approval", "ok"),
        ("perform_chargeback", "error"),
        ("perform_capture", "error"),
    ], json.dumps(mine, indent=1)
    assert all(e["entity_id"] == DEMO_ENTITY_ID and e["sandbox"] is True for e in mine), mine
    assert mine[0]["arguments"]["idempotencyKey"] == capture["idempotencyKey"], mine[0]
    assert mine[1]["arguments"]["confirmationToken"] == "[redacted]", mine[1]
    assert mine[1]["transaction_id"] == cp["id"] and mine[1]["result_code"] == cp["result"]["code"], mine[1]
    assert mine[2]["transaction_id"] == approval_id, mine[2]
    assert mine[3]["arguments"] == {"approvalId": approval_id} == mine[5]["arguments"], mine[3:6]
    assert mine[4]["client_name"] == "operator:bob" and mine[4]["transaction_id"] == approval_id, mine[4]
    assert mine[4]["arguments"]["decision"] == "deny", mine[4]
    assert "denied" in (mine[6]["message"] or ""), mine[6]
    assert "confirmed" in (mine[7]["message"] or ""), mine[7]
    # The whole log (every test on this server) holds both safety outcomes, in a chain intact.
    outcomes = {e["outcome"] for e in entries}
    assert {"confirmation_required", "approval_requested", "ok"} <= outcomes, outcomes
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1)), "audit sequence numbers have gaps"
    verified = run_cli("audit", "verify", "--data-dir", str(data_dir), cwd=data_dir)
    assert verified.returncode == 0, describe_cli(verified)


async def test_audit_log_names_the_client_in_both_eras(safety_server: ServerProcess) -> None:
    """The audit log records the MCP client's clientInfo name: the same SDK is the same client,
    whether it spoke the handshake era or sent clientInfo in each request's _meta."""
    names = {}
    for era in ERA_IDS:
        async with connect(safety_server, UNIFIED_ENDPOINT, era) as conn:
            marker = new_mtid(f"audit-{era}")
            assert_ok(await conn.client.call_tool("search_transactions", {"merchantTransactionId": marker}))
        (entry,) = [e for e in audit_export(safety_server.data_dir) if e["arguments"].get("merchantTransactionId") == marker]
        names[era] = entry["client_name"]
    assert names["legacy"], names
    assert names["modern"] == names["legacy"], f"client_name per era: {names}"


async def test_no_secrets_in_server_log_or_audit(safety_server: ServerProcess, claim_pa) -> None:
    """The demo X-Token, the operator's password and confirmation tokens never reach the server's
    log or the audit log (nor does anything the tests above sent)."""
    demo_mtid = claim_pa(SECRETS_PA, server=safety_server)
    async with connect(safety_server, UNIFIED_ENDPOINT, "modern") as conn:
        # A few calls of its own, so the check means something when run alone.
        assert_ok(await conn.client.call_tool("get_transactions", {"merchantTransactionId": "pw-demo-0002"}))
        made_up = "pwc_" + secrets.token_hex(32)
        pa = await untouched(conn.client.call_tool, demo_mtid, "PA")
        refused = await conn.client.call_tool("perform_reversal", {"referenceId": pa["id"], "confirmationToken": made_up})
        assert_tool_error(refused, "never issued")
    export = run_cli("audit", "export", "--data-dir", str(safety_server.data_dir), cwd=safety_server.data_dir)
    assert export.returncode == 0 and export.stdout.strip(), describe_cli(export)
    server_log = safety_server.stderr_path.read_text(errors="replace")
    assert server_log.strip(), "the server wrote no log at all: nothing to check"
    for where, text in (("server stderr log", server_log), ("audit export", export.stdout)):
        assert DEMO_TOKEN not in text, f"the demo X-Token appears in the {where}"
        assert OPERATOR_PASSWORD not in text, f"the demo operator's password appears in the {where}"
        assert made_up not in text and not re.search(r"pwc_[0-9a-f]{64}", text), f"a confirmation token appears in the {where}"
