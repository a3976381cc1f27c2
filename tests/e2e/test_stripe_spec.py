"""Stripe, checked against Stripe's own OpenAPI specification (issue 14, point 4).

`paywarden serve` runs its Payment Ops tools over MCP (the official Python client) with its
in-process Stripe emulator, and every HTTP request the Stripe connector makes goes through a
recording forward proxy (`HTTP_PROXY`; see `_recording_proxy.py`). Then:

(a) every request the connector sent is checked against the operation's documented parameters
    in the pinned spec (names, types, enums, nesting; `_stripe_spec.check_request`);
(b) every answer the emulator gave to those is checked against the operation's documented
    response (200: the object, with its required keys, types, enums, and no undocumented key;
    otherwise Stripe's `error` object; `_stripe_spec.check_response`).

The spec copy and how to regenerate it: tests/fixtures/providers/stripe/openapi/README.md.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from _recording_proxy import Exchange, RecordingProxy
from _stripe_spec import check_request, check_response, decode_form, operation
from _support import ServerProcess, assert_ok, mcp_http, start_server

SARAH = "sarah@example.com"
NOT_STRIPE = re.compile(r"^/v1/(payments|query)(/|$)")  # OPP's paths on the shared emulator port


def stripe_exchanges(proxy: RecordingProxy) -> list[Exchange]:
    return [e for e in proxy.snapshot() if e.path.startswith("/v1/") and not NOT_STRIPE.match(e.path)]


async def executed(client, tool: str, args: dict) -> dict:  # noqa: ANN001
    """Call a tool and, when the policy asks for a confirmation, confirm it."""
    body = assert_ok(await client.call_tool(tool, args))
    if body.get("status") == "confirmation_required":
        token = body["confirmation"]["token"]
        body = assert_ok(await client.call_tool(tool, {**args, "confirmation_token": token}))
    return body


@pytest.fixture(scope="module")
def recorded(paywarden_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Exchange]]:
    """Every Stripe request and answer of a seeded server driven through all seven ops tools."""
    import anyio

    with RecordingProxy() as proxy:
        env = {"HTTP_PROXY": proxy.url, "http_proxy": proxy.url, "NO_PROXY": "", "no_proxy": "",
               # No start-up registration of paywarden's webhook URL with the emulator
               # (`POST /v1/webhook_endpoints`, sandbox only): it is not a call of the connector,
               # and the trimmed spec copy does not carry that operation.
               "PAYWARDEN_DEMO__WEBHOOKS": "false"}
        server = start_server(tmp_path_factory.mktemp("paywarden-stripe-spec"), env=env)
        try:
            anyio.run(drive_ops_tools, server)
        finally:
            server.stop()
        exchanges = stripe_exchanges(proxy)
    yield exchanges


async def drive_ops_tools(server: ServerProcess) -> None:
    async with mcp_http(server.url("/mcp"), mode="legacy") as conn:
        client = conn.client
        profile = assert_ok(await client.call_tool("lookup_customer", {"email": SARAH}))
        stripe_id = profile["customer"]["stripe_customer_id"]
        listed = assert_ok(await client.call_tool("list_payments", {"customer": stripe_id}))
        assert_ok(await client.call_tool("list_payments", {"email": SARAH, "limit": 2}))
        assert_ok(await client.call_tool("get_order_history", {"email": SARAH}))
        dupes = [p for p in listed["payments"] if p["amount_cents"] == 4999 and p["amount_refunded_cents"] == 0]
        assert dupes, listed
        target = dupes[0]["payment_intent_id"]
        partial = await executed(
            client,
            "issue_refund",
            {"email": SARAH, "charge_id": target, "amount_cents": 999, "reason": "duplicate", "confirmed": True},
        )
        assert partial["status"] == "executed", partial
        rest = await executed(client, "issue_refund", {"email": SARAH, "charge_id": target, "confirmed": True})
        assert rest["status"] == "executed", rest
        link = await executed(
            client,
            "create_payment_link",
            {"amount_cents": 4999, "description": "Spec check", "currency": "eur", "quantity": 2},
        )
        assert link["status"] == "created", link
        today = dt.datetime.now(dt.timezone.utc).date()
        summary = await client.call_tool(
            "revenue_summary",
            {"start_date": (today - dt.timedelta(days=365)).isoformat(), "end_date": today.isoformat()},
        )
        assert summary.is_error is not True, summary
        flagged = await client.call_tool("flag_for_review", {"charge_id": target, "note": "spec check"})
        assert flagged.is_error is not True, flagged


def describe(exchange: Exchange) -> str:
    return f"{exchange.method} {exchange.path}?{exchange.query} body={exchange.request_body[:300]!r}"


def test_the_connector_calls_every_operation_it_is_documented_to_use(recorded: list[Exchange]) -> None:
    """The recording is not empty and covers the connector's calls (a check on the check)."""
    seen = {(e.method, operation(e.method, e.path).template) for e in recorded}
    expected = {
        ("POST", "/v1/customers"),
        ("POST", "/v1/payment_intents"),
        ("GET", "/v1/customers/{customer}"),
        ("GET", "/v1/payment_intents"),
        ("GET", "/v1/payment_intents/{intent}"),
        ("POST", "/v1/refunds"),
        ("POST", "/v1/products"),
        ("POST", "/v1/prices"),
        ("POST", "/v1/payment_links"),
    }
    assert expected <= seen, sorted(seen)


def test_every_request_the_connector_sends_is_one_stripe_documents(recorded: list[Exchange]) -> None:
    problems: list[str] = []
    for exchange in recorded:
        if exchange.method == "POST":
            content_type = exchange.request_headers.get("content-type", "")
            if not content_type.startswith("application/x-www-form-urlencoded"):
                problems.append(f"{describe(exchange)}: Content-Type {content_type!r}, Stripe takes a form")
        body = exchange.request_body.decode("utf-8")
        problems += check_request(exchange.method, exchange.path, exchange.query, body)
        decode_form(exchange.query if exchange.method == "GET" else body)
    assert not problems, "\n".join(problems)


def test_every_answer_the_emulator_gives_them_is_what_stripe_documents(recorded: list[Exchange]) -> None:
    problems: list[str] = []
    for exchange in recorded:
        if not exchange.response_headers.get("content-type", "").startswith("application/json"):
            problems.append(f"{describe(exchange)}: answer is not JSON")
            continue
        body = json.loads(exchange.response_body)
        problems += check_response(exchange.method, exchange.path, exchange.status, body)
    assert not problems, "\n".join(dict.fromkeys(problems))


# --- Stripe's documented examples (tests/fixtures/providers/stripe/*.json) --------------------

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "providers" / "stripe"
FREE_FORM = frozenset({"metadata"})  # caller-chosen keys
# Keys Stripe's examples show that an answer at API 2024-06-20 leaves out unless asked for.
NOT_BY_DEFAULT = {
    # "The refunds property on charges is no longer included by default" (API 2022-11-15,
    # Stripe's changelog); the spec lists it in the charge's x-expandableFields.
    "charge": frozenset({"refunds"}),
}


def fixture_docs() -> list[tuple[str, dict]]:
    return [(p.name, json.loads(p.read_text(encoding="utf-8"))) for p in sorted(FIXTURES.glob("*.json"))]


def json_type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}.get(
        type(value), "null"
    )


def shape_differences(example: object, ours: object, where: str) -> list[str]:
    """Keys and JSON types of `ours` against Stripe's `example` (null matches anything: the
    example and the emulator may simply be in different states). Keys the example lacks are
    left to the spec check, which refuses any key the spec does not document."""
    if example is None or ours is None:
        return []
    if json_type(example) != json_type(ours) and {json_type(example), json_type(ours)} != {"integer", "number"}:
        return [f"{where}: Stripe's example has {json_type(example)}, the emulator {json_type(ours)}"]
    if isinstance(example, dict) and isinstance(ours, dict):
        out = []
        missing = sorted(set(example) - set(ours) - NOT_BY_DEFAULT.get(where, frozenset()))
        if missing:
            out.append(f"{where}: keys missing from the emulator's object: {missing}")
        for key in sorted(set(example) & set(ours) - FREE_FORM):
            out += shape_differences(example[key], ours[key], f"{where}.{key}")
        return out
    return []


def test_stripes_documented_examples_are_what_its_spec_describes() -> None:
    """The fixtures, checked by the same validator: the examples and the spec agree (a check on
    the check, and on the 2023 spec's use for 2024-06-20 objects)."""
    problems: list[str] = []
    docs = fixture_docs()
    assert len(docs) >= 13, [name for name, _ in docs]
    for name, doc in docs:
        for key in ("source", "retrieved", "api_version", "request", "status", "response"):
            assert key in doc, f"{name}: no {key!r}"
        request = doc["request"]
        form = request["form"] or ""
        problems += [f"{name}: {p}" for p in check_request(request["method"], request["path"], form if request["method"] == "GET" else "", form if request["method"] == "POST" else "")]
        problems += [f"{name}: {p}" for p in check_response(request["method"], request["path"], doc["status"], doc["response"])]
    assert not problems, "\n".join(problems)


def test_the_emulators_objects_have_the_keys_and_types_of_stripes_examples(recorded: list[Exchange]) -> None:
    examples = {doc["response"]["object"]: doc["response"] for _, doc in fixture_docs() if doc["status"] == 200}
    seen: dict[str, dict] = {}
    for exchange in recorded:
        if exchange.status != 200:
            continue
        body = json.loads(exchange.response_body)
        for item in body.get("data", []) if body.get("object") in ("list", "search_result") else [body]:
            seen.setdefault(item.get("object"), item)
    assert {"customer", "payment_intent", "refund", "product", "price", "payment_link"} <= set(seen), sorted(seen)
    problems: list[str] = []
    for kind, ours in sorted(seen.items()):
        if kind in examples:
            problems += shape_differences(examples[kind], ours, kind)
    assert not problems, "\n".join(problems)


# --- the current API, as Stripe's SDK types it --------------------------------------------------

SDK_PARAMS = {
    ("GET", "/v1/customers"): "CustomerListParams",
    ("POST", "/v1/customers"): "CustomerCreateParams",
    ("GET", "/v1/customers/search"): "CustomerSearchParams",
    ("GET", "/v1/customers/{customer}"): "CustomerRetrieveParams",
    ("GET", "/v1/payment_intents"): "PaymentIntentListParams",
    ("POST", "/v1/payment_intents"): "PaymentIntentCreateParams",
    ("GET", "/v1/payment_intents/{intent}"): "PaymentIntentRetrieveParams",
    ("GET", "/v1/charges/{charge}"): "ChargeRetrieveParams",
    ("GET", "/v1/refunds"): "RefundListParams",
    ("POST", "/v1/refunds"): "RefundCreateParams",
    ("POST", "/v1/products"): "ProductCreateParams",
    ("POST", "/v1/prices"): "PriceCreateParams",
    ("POST", "/v1/payment_links"): "PaymentLinkCreateParams",
}


def sdk_parameter_names(class_name: str) -> set[str]:
    import stripe.params

    names: set[str] = set()
    for klass in getattr(stripe.params, class_name).__mro__:
        names |= set(getattr(klass, "__annotations__", {}))
    return names


def test_every_parameter_the_connector_sends_is_still_in_stripes_current_api(recorded: list[Exchange]) -> None:
    """The spec copy is of 2023-08-16; Stripe's SDK 16.1.0 types the parameters of the API as
    it is now (2026-10-28): a parameter the connector sends that Stripe has since removed fails
    here."""
    problems: list[str] = []
    for exchange in recorded:
        template = operation(exchange.method, exchange.path).template
        class_name = SDK_PARAMS.get((exchange.method, template))
        assert class_name, f"no SDK parameter type mapped for {exchange.method} {template}"
        sent = decode_form(exchange.query if exchange.method == "GET" else exchange.request_body.decode())
        unknown = sorted(set(sent) - sdk_parameter_names(class_name))
        if unknown:
            problems.append(f"{exchange.method} {template}: {unknown} not in stripe.params.{class_name}")
    assert not problems, "\n".join(dict.fromkeys(problems))
