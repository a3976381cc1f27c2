"""The flow every real client runs against paywarden (tests/e2e/test_client_configs.py and
test_node_clients.py): list the tools, one read, one confirmed money-moving call.

Under the built-in policy a capture is `confirm`: the first call returns
`status: confirmation_required` with a single-use `confirmation.token` and moves nothing; the same
call again with `confirmationToken` executes it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from _support import OPP_TOOLS, assert_ok, assert_status, assert_success_transaction, exponent_of, fmt_minor, result_text

CONFIRMATION_TOKEN = re.compile(r"^pwc_[0-9a-f]{64}$")

# Demo pre-authorizations (none captured yet) handed out to the client tests, one each, on the
# module servers of those files (never on the shared session server).
CLIENT_PAS = tuple(f"pw-demo-{i:04d}" for i in range(50) if i % 10 in (0, 1))


def the_demo_url(text: str) -> str:
    """The server URL the documented snippets use; the tests swap in the real one."""
    assert "http://127.0.0.1:8080" in text, "the documented client configuration no longer points at the README's server"
    return "http://127.0.0.1:8080"


def check_tools(names: Iterable[str]) -> None:
    missing = OPP_TOOLS - set(names)
    assert not missing, f"tools/list lacks {sorted(missing)}"


async def read_pa(call: Callable[[str, dict[str, Any]], Awaitable[Any]], merchant_transaction_id: str) -> dict[str, Any]:
    """get_transactions by merchantTransactionId: the demo PA, still uncaptured."""
    body = assert_ok(await call("get_transactions", {"merchantTransactionId": merchant_transaction_id}))
    payments = body["payments"]
    assert len(payments) == 1 and payments[0]["paymentType"] == "PA", payments
    return payments[0]


async def confirmed_capture(call: Callable[[str, dict[str, Any]], Awaitable[Any]], merchant_transaction_id: str) -> dict[str, Any]:
    """Read the demo PA, then capture one major unit of it through the confirm flow."""
    pa = await read_pa(call, merchant_transaction_id)
    args = {
        "referenceId": pa["id"],
        "amount": fmt_minor(10 ** exponent_of(pa["amount"]), exponent_of(pa["amount"])),
        "currency": pa["currency"],
        "idempotencyKey": f"client-{uuid.uuid4()}",
    }
    first = await call("perform_capture", args)
    preview = assert_status(first, "confirmation_required")
    token = preview["confirmation"]["token"]
    assert CONFIRMATION_TOKEN.match(token), preview["confirmation"]
    assert token in result_text(first), "the model reads the token from the text too"
    assert preview.get("id") is None, "a preview must not carry a transaction"
    executed = assert_status(await call("perform_capture", {**args, "confirmationToken": token}), "executed")
    assert_success_transaction(executed, payment_type="CP")
    assert executed["referencedId"] == pa["id"] and executed["amount"] == args["amount"], executed
    return executed
