"""Stripe's official Python SDK (`stripe`, pinned in requirements.txt) against the emulator.

Every call paywarden's Stripe connector makes, and the documented parameters a typical
integration sends to those endpoints (`product_data` on prices, `created[gte]` on lists,
`expand`, `limit`/`starting_after` paging, metadata, a decline, refund errors), made with
`stripe.StripeClient` pointed at `paywarden emulator`: each must succeed (or fail as Stripe
documents) and parse into the SDK's own objects. The SDK's requests go through the recording
proxy, and every answer is also checked against Stripe's OpenAPI spec (`_stripe_spec`).
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import stripe
from _recording_proxy import RecordingProxy
from _stripe_spec import check_request, check_response
from _support import child_env

DEMO_STRIPE_KEY = "sk_test_paywarden_demo_key_only_valid_against_the_emulator"
EMULATOR_BANNER = re.compile(r"emulator \(SANDBOX, no real money\) on (http://127\.0\.0\.1:\d+)")


@pytest.fixture(scope="module")
def emulator(paywarden_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`paywarden emulator` on a loopback port: its base URL."""
    data_dir = tmp_path_factory.mktemp("stripe-sdk-emulator")
    proc = subprocess.Popen(
        [str(paywarden_binary), "emulator", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=data_dir,
        env=child_env(),
        text=True,
    )
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if (match := EMULATOR_BANNER.search(line)) and not found:
                found.append(match.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert ready.wait(60) and found, "paywarden emulator printed no banner"
        yield found[0]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def proxy() -> Iterator[RecordingProxy]:
    with RecordingProxy() as recording:
        yield recording


@pytest.fixture(scope="module")
def client(emulator: str, proxy: RecordingProxy) -> stripe.StripeClient:
    return stripe.StripeClient(
        DEMO_STRIPE_KEY,
        base_addresses={"api": emulator},
        proxy=proxy.url,
        max_network_retries=0,
    )


def spec_problems(proxy: RecordingProxy, since: int) -> list[str]:
    problems: list[str] = []
    for exchange in proxy.snapshot()[since:]:
        problems += check_request(exchange.method, exchange.path, exchange.query, exchange.request_body.decode())
        problems += check_response(exchange.method, exchange.path, exchange.status, json.loads(exchange.response_body))
    return problems


def test_customers(client: stripe.StripeClient, proxy: RecordingProxy) -> None:
    start = len(proxy.snapshot())
    email = f"sdk-{time.time_ns()}@example.com"
    created = client.v1.customers.create(
        params={"email": email, "name": "SDK Test", "phone": "+15555550100", "metadata": {"order_id": "42"}}
    )
    assert isinstance(created, stripe.Customer) and created.id.startswith("cus_")
    assert created.metadata["order_id"] == "42"
    again = client.v1.customers.retrieve(created.id)
    assert again.email == email
    updated = client.v1.customers.update(created.id, params={"description": "vip", "metadata": {"tier": "gold"}})
    assert updated.description == "vip" and updated.metadata.to_dict() == {"order_id": "42", "tier": "gold"}
    listed = client.v1.customers.list(params={"email": email, "limit": 3})
    assert isinstance(listed, stripe.ListObject) and [c.id for c in listed.data] == [created.id]
    found = client.v1.customers.search(params={"query": f"email:'{email}'", "limit": 10})
    assert isinstance(found, stripe.SearchResultObject) and [c.id for c in found.data] == [created.id]
    recent = client.v1.customers.list(params={"created": {"gte": created.created - 1}, "limit": 100})
    assert created.id in [c.id for c in recent.data]
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.customers.retrieve("cus_doesnotexist")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"
    assert spec_problems(proxy, start) == []


def test_payment_intents_charges_and_refunds(client: stripe.StripeClient, proxy: RecordingProxy) -> None:
    start = len(proxy.snapshot())
    customer = client.v1.customers.create(params={"email": f"pi-{time.time_ns()}@example.com"})
    intents = [
        client.v1.payment_intents.create(
            params={
                "amount": amount,
                "currency": "usd",
                "customer": customer.id,
                "payment_method": "pm_card_visa",
                "confirm": True,
                "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
                "description": "SDK order",
                "receipt_email": "receipts@example.com",
                "metadata": {"order_id": str(amount)},
            }
        )
        for amount in (1500, 2500, 3500)
    ]
    assert all(isinstance(pi, stripe.PaymentIntent) and pi.status == "succeeded" for pi in intents)
    card_only = client.v1.payment_intents.create(
        params={"amount": 700, "currency": "usd", "payment_method_types": ["card"], "customer": customer.id}
    )
    assert card_only.status == "requires_payment_method" and card_only.payment_method_types == ["card"]

    # Paging as a typical integration does it: limit + starting_after, and the SDK's own iterator.
    first = client.v1.payment_intents.list(params={"customer": customer.id, "limit": 2})
    assert first.has_more is True and len(first.data) == 2
    second = client.v1.payment_intents.list(
        params={"customer": customer.id, "limit": 2, "starting_after": first.data[-1].id}
    )
    assert len(second.data) == 2 and second.has_more is False
    every = [pi.id for pi in client.v1.payment_intents.list(params={"customer": customer.id, "limit": 1}).auto_paging_iter()]
    assert sorted(every) == sorted([pi.id for pi in intents] + [card_only.id])
    since = client.v1.payment_intents.list(params={"created": {"gte": intents[0].created}, "customer": customer.id})
    assert {pi.id for pi in since.data} >= {pi.id for pi in intents}

    # expand: the charge comes back as an object, not an id.
    expanded = client.v1.payment_intents.retrieve(intents[0].id, params={"expand": ["latest_charge"]})
    assert isinstance(expanded.latest_charge, stripe.Charge), expanded.latest_charge
    charge = client.v1.charges.retrieve(intents[0].latest_charge)
    assert isinstance(charge, stripe.Charge) and charge.amount == 1500 and charge.payment_intent == intents[0].id

    refund = client.v1.refunds.create(
        params={"payment_intent": intents[0].id, "amount": 500, "reason": "requested_by_customer", "metadata": {"ticket": "T-1"}}
    )
    assert isinstance(refund, stripe.Refund) and refund.amount == 500 and refund.status == "succeeded"
    assert client.v1.refunds.retrieve(refund.id).id == refund.id
    listed = client.v1.refunds.list(params={"payment_intent": intents[0].id, "limit": 10})
    assert [r.id for r in listed.data] == [refund.id]
    by_charge = client.v1.refunds.create(params={"charge": charge.id})
    assert by_charge.amount == 1000

    # Stripe's errors, parsed by the SDK.
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        client.v1.refunds.create(params={"payment_intent": intents[1].id, "amount": 999999})
    assert too_much.value.code == "amount_too_large" and too_much.value.param == "amount"
    with pytest.raises(stripe.InvalidRequestError) as refunded:
        client.v1.refunds.create(params={"charge": charge.id})
    assert refunded.value.code == "charge_already_refunded"
    with pytest.raises(stripe.InvalidRequestError) as unpaid:
        client.v1.refunds.create(params={"payment_intent": card_only.id})
    assert unpaid.value.http_status == 400
    with pytest.raises(stripe.CardError) as declined:
        client.v1.payment_intents.create(
            params={"amount": 100, "currency": "usd", "payment_method": "pm_card_chargeDeclined", "confirm": True}
        )
    assert declined.value.code == "card_declined" and declined.value.error.decline_code == "generic_decline"
    assert spec_problems(proxy, start) == []


def test_products_prices_and_payment_links(client: stripe.StripeClient, proxy: RecordingProxy) -> None:
    start = len(proxy.snapshot())
    product = client.v1.products.create(params={"name": "SDK T-shirt", "description": "cotton", "metadata": {"sku": "T1"}})
    assert isinstance(product, stripe.Product) and product.active is True
    assert client.v1.products.retrieve(product.id).name == "SDK T-shirt"
    price = client.v1.prices.create(params={"product": product.id, "unit_amount": 2500, "currency": "eur", "nickname": "std"})
    assert isinstance(price, stripe.Price) and price.unit_amount == 2500 and price.currency == "eur"
    # product_data: the product created inline with its price, as Stripe documents.
    inline = client.v1.prices.create(params={"product_data": {"name": "SDK mug"}, "unit_amount": 900, "currency": "eur"})
    assert inline.product.startswith("prod_")
    assert client.v1.products.retrieve(inline.product).name == "SDK mug"
    assert client.v1.prices.retrieve(inline.id).unit_amount == 900
    link = client.v1.payment_links.create(
        params={
            "line_items": [{"price": price.id, "quantity": 2}, {"price": inline.id, "quantity": 1}],
            "metadata": {"campaign": "sdk"},
        }
    )
    assert isinstance(link, stripe.PaymentLink) and link.active is True and link.url
    assert client.v1.payment_links.retrieve(link.id).id == link.id
    assert spec_problems(proxy, start) == []


def test_errors_without_a_code_are_stripes_error_object(
    emulator: str, client: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    """Stripe's `api_errors.code` is an optional string: an error with no code has no `code`
    key (the SDK then reads `code` as None), never `"code": null`."""
    start = len(proxy.snapshot())
    bad_key = stripe.StripeClient(
        "sk_test_not_a_key_the_emulator_knows", base_addresses={"api": emulator}, proxy=proxy.url, max_network_retries=0
    )
    with pytest.raises(stripe.AuthenticationError) as unauthenticated:
        bad_key.v1.customers.list()
    assert unauthenticated.value.code is None
    intent = client.v1.payment_intents.create(params={"amount": 300, "currency": "usd"})
    with pytest.raises(stripe.InvalidRequestError) as unpaid:
        client.v1.refunds.create(params={"payment_intent": intent.id})
    assert unpaid.value.code is None
    key = f"sdk-{time.time_ns()}"
    client.v1.customers.create(params={"name": "first"}, options={"idempotency_key": key})
    with pytest.raises(stripe.IdempotencyError) as reused:
        client.v1.customers.create(params={"name": "second"}, options={"idempotency_key": key})
    assert reused.value.code is None
    errors = [json.loads(e.response_body)["error"] for e in proxy.snapshot()[start:] if e.status >= 400]
    assert len(errors) == 3 and all("code" not in e for e in errors), errors
    assert spec_problems(proxy, start) == []


def test_an_expansion_the_emulator_cannot_make_is_refused_and_nothing_is_written(
    client: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    """Never an id where the caller asked for an object: a field whose object the emulator does
    not keep is a 400, and the write it came with is not kept."""
    start = len(proxy.snapshot())
    customer = client.v1.customers.create(params={"email": f"expand-{time.time_ns()}@example.com"})
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.payment_intents.create(
            params={
                "amount": 500,
                "currency": "usd",
                "customer": customer.id,
                "payment_method": "pm_card_visa",
                "confirm": True,
                "expand": ["payment_method"],
            }
        )
    assert refused.value.http_status == 400 and "cannot be expanded (payment_method)" in str(refused.value)
    assert client.v1.payment_intents.list(params={"customer": customer.id}).data == []
    nested = client.v1.payment_intents.create(
        params={"amount": 600, "currency": "usd", "customer": customer.id, "payment_method": "pm_card_visa", "confirm": True}
    )
    listed = client.v1.payment_intents.list(
        params={"customer": customer.id, "expand": ["data.latest_charge.customer"]}
    )
    assert [pi.id for pi in listed.data] == [nested.id]
    assert isinstance(listed.data[0].latest_charge, stripe.Charge)
    assert isinstance(listed.data[0].latest_charge.customer, stripe.Customer)
    assert spec_problems(proxy, start) == []
