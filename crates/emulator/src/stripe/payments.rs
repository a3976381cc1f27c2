//! Stripe PaymentIntents, Charges and Refunds: `POST/GET /v1/payment_intents`,
//! `GET /v1/payment_intents/{id}`, `GET /v1/charges/{id}`, `POST/GET /v1/refunds`.

use paywarden_domain::{Currency, Money};
use serde_json::{json, Map, Value};
use sqlx::SqliteConnection;

use super::error::ApiError;
use super::form::{at_least, at_most, parse_integer, Form};
use super::store::{self, kind, NewObject};
use super::{list_envelope, list_query, new_id, now, parse_currency, SANDBOX_CREATED};
use axum::http::StatusCode;

/// Stripe's largest `amount`: eight digits in the smallest currency unit.
const MAX_AMOUNT: i64 = 99_999_999;

/// Stripe's refund `reason` values.
const REFUND_REASONS: &[&str] = &["duplicate", "fraudulent", "requested_by_customer"];

/// How a test card is declined: Stripe `code`, `decline_code`, `message`.
type Decline = (&'static str, &'static str, &'static str);

/// A Stripe test payment method id (`pm_card_visa`, ...) and the card behind it.
#[derive(Debug, Clone, Copy)]
struct TestCard {
    token: &'static str,
    brand: &'static str,
    last4: &'static str,
    funding: &'static str,
    decline: Option<Decline>,
}

/// The test payment methods the emulator knows (Stripe's documented `pm_card_*` ids).
const TEST_CARDS: &[TestCard] = &[
    TestCard {
        token: "pm_card_visa",
        brand: "visa",
        last4: "4242",
        funding: "credit",
        decline: None,
    },
    TestCard {
        token: "pm_card_visa_debit",
        brand: "visa",
        last4: "5556",
        funding: "debit",
        decline: None,
    },
    TestCard {
        token: "pm_card_mastercard",
        brand: "mastercard",
        last4: "4444",
        funding: "credit",
        decline: None,
    },
    TestCard {
        token: "pm_card_amex",
        brand: "amex",
        last4: "8431",
        funding: "credit",
        decline: None,
    },
    TestCard {
        token: "pm_card_chargeDeclined",
        brand: "visa",
        last4: "0002",
        funding: "credit",
        decline: Some((
            "card_declined",
            "generic_decline",
            "Your card was declined.",
        )),
    },
    TestCard {
        token: "pm_card_chargeDeclinedInsufficientFunds",
        brand: "visa",
        last4: "9995",
        funding: "credit",
        decline: Some((
            "card_declined",
            "insufficient_funds",
            "Your card has insufficient funds.",
        )),
    },
    TestCard {
        token: "pm_card_chargeDeclinedExpiredCard",
        brand: "visa",
        last4: "0069",
        funding: "credit",
        decline: Some(("expired_card", "expired_card", "Your card has expired.")),
    },
];

/// `POST /v1/payment_intents`: `amount`, `currency`, `customer`, `payment_method` (a test
/// payment method id), `confirm`, `description`, `receipt_email`, `payment_method_types[]`
/// (only `card`), `metadata` (with the emulator-only `metadata[sandbox_created]`).
///
/// With `confirm=true` the payment is attempted at once: a succeeding card gives status
/// `succeeded` with a succeeded Charge (`latest_charge`); a declining card stores a failed
/// Charge, leaves the PaymentIntent in `requires_payment_method` with `last_payment_error`, and
/// answers HTTP 402 `card_error`, as Stripe does.
pub(crate) async fn create_payment_intent(
    conn: &mut SqliteConnection,
    account: &str,
    form: &Form,
) -> Result<Value, ApiError> {
    form.only(&[
        "amount",
        "currency",
        "customer",
        "confirm",
        "payment_method",
        "description",
        "receipt_email",
        "payment_method_types",
        "automatic_payment_methods",
        "metadata",
    ])?;
    let automatic_payment_methods = automatic_payment_methods(form)?;
    let amount = parse_integer("amount", form.required("amount")?)?;
    let amount = at_most("amount", at_least("amount", amount, 1)?, MAX_AMOUNT)?;
    let currency = parse_currency(form, "currency")?;
    let customer = form.get("customer");
    if let Some(c) = customer {
        store::require(conn, account, kind::CUSTOMER, c, "customer").await?;
    }
    if let Some((name, value)) = form_pairs_with_root(form, "payment_method_types")
        .into_iter()
        .find(|(_, v)| v != "card")
    {
        return Err(ApiError::invalid(
            Some("payment_method_invalid_parameter"),
            format!(
                "The payment method type \"{value}\" is invalid. The paywarden emulator supports only \"card\"."
            ),
            Some(&name),
        ));
    }
    let confirm = form.boolean("confirm")?.unwrap_or(false);
    let card = match form.get("payment_method") {
        None => None,
        Some(token) => Some(
            TEST_CARDS
                .iter()
                .find(|c| c.token == token)
                .copied()
                .ok_or_else(|| ApiError::no_such("PaymentMethod", token, "payment_method"))?,
        ),
    };
    let description = form.text("description", 1000)?;
    let receipt_email = form.text("receipt_email", 512)?;
    let metadata = form.metadata()?;
    let now = now();
    let created = match metadata.get(SANDBOX_CREATED).and_then(Value::as_str) {
        None => now,
        Some(raw) => parse_sandbox_created(raw, now)?,
    };
    if confirm && card.is_none() {
        return Err(ApiError::invalid(
            Some("payment_intent_unexpected_state"),
            "You cannot confirm this PaymentIntent because it's missing a payment method. \
             Send payment_method (e.g. pm_card_visa) together with confirm=true.",
            Some("payment_method"),
        ));
    }

    let id = new_id("pi_", 24);
    let client_secret = format!("{id}_secret_{}", super::random_alphanumeric(25));
    let payment_method_id = card.map(|_| new_id("pm_", 24));
    let mut status = match (&card, confirm) {
        (None, _) => "requires_payment_method",
        (Some(_), false) => "requires_confirmation",
        (Some(_), true) => "succeeded",
    };
    let mut latest_charge = None;
    let mut last_payment_error = Value::Null;
    let mut declined = None;
    if let (Some(card), true, Some(pm)) = (card, confirm, payment_method_id.as_deref()) {
        let charge_id = new_id("ch_", 24);
        let charge = charge_body(&ChargeInput {
            id: &charge_id,
            amount,
            currency: &currency,
            customer,
            payment_intent: &id,
            payment_method: pm,
            card,
            created,
            description: description.as_deref(),
            receipt_email: receipt_email.as_deref(),
            metadata: &metadata,
        });
        store::insert(
            conn,
            account,
            &NewObject {
                kind: kind::CHARGE,
                id: &charge_id,
                created,
                customer,
                payment_intent: Some(&id),
                charge: Some(&charge_id),
                email: None,
                body: &charge,
                extra: None,
            },
        )
        .await?;
        if let Some((code, decline_code, message)) = card.decline {
            status = "requires_payment_method";
            last_payment_error = json!({
                "type": "card_error",
                "code": code,
                "decline_code": decline_code,
                "message": message,
                "charge": charge_id,
                // A whole `payment_method` object: the spec's `api_errors.payment_method` is
                // the `payment_method` schema (`billing_details`, `created`, `livemode`, ...
                // required), not a stub.
                "payment_method": {
                    "id": pm,
                    "object": "payment_method",
                    "billing_details": {
                        "address": {
                            "city": null, "country": null, "line1": null, "line2": null,
                            "postal_code": null, "state": null
                        },
                        "email": null,
                        "name": null,
                        "phone": null
                    },
                    "card": {
                        "brand": card.brand,
                        "country": "US",
                        "exp_month": 12,
                        "exp_year": 2034,
                        "funding": card.funding,
                        "last4": card.last4
                    },
                    "created": created,
                    "customer": customer,
                    "livemode": false,
                    "metadata": {},
                    "type": "card"
                }
            });
            declined = Some((code, decline_code, message, charge_id.clone()));
        }
        latest_charge = Some(charge_id);
    }
    let succeeded = status == "succeeded";
    let body = json!({
        "id": id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": { "tip": {} },
        "amount_received": if succeeded { amount } else { 0 },
        "application": null,
        "application_fee_amount": null,
        "automatic_payment_methods": automatic_payment_methods,
        "canceled_at": null,
        "cancellation_reason": null,
        "capture_method": "automatic",
        "client_secret": client_secret,
        "confirmation_method": "automatic",
        "created": created,
        "currency": currency,
        "customer": customer,
        "description": description,
        // Keys of Stripe's example `payment_intent` at API 2024-06-20 (openapi/fixtures3.json).
        "invoice": null,
        "last_payment_error": last_payment_error,
        "latest_charge": latest_charge,
        "livemode": false,
        "metadata": metadata,
        "next_action": null,
        "on_behalf_of": null,
        // A declined payment method is detached from the PaymentIntent (Stripe's behaviour).
        "payment_method": if declined.is_some() { None } else { payment_method_id.clone() },
        "payment_method_configuration_details": null,
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "processing": null,
        "receipt_email": receipt_email,
        "review": null,
        "setup_future_usage": null,
        "shipping": null,
        "source": null,
        "statement_descriptor": null,
        "statement_descriptor_suffix": null,
        "status": status,
        "transfer_data": null,
        "transfer_group": null
    });
    store::insert(
        conn,
        account,
        &NewObject {
            kind: kind::PAYMENT_INTENT,
            id: &id,
            created,
            customer,
            payment_intent: Some(&id),
            charge: None,
            email: None,
            body: &body,
            extra: None,
        },
    )
    .await?;
    if let Some((code, decline_code, message, charge_id)) = declined {
        let mut extra = Map::new();
        extra.insert("decline_code".into(), json!(decline_code));
        extra.insert("charge".into(), json!(charge_id));
        extra.insert("payment_intent".into(), body);
        return Err(ApiError::Stripe {
            status: StatusCode::PAYMENT_REQUIRED,
            kind: "card_error",
            code: Some(code),
            message: message.to_string(),
            param: None,
            extra,
        });
    }
    Ok(body)
}

/// `automatic_payment_methods[enabled]` (boolean, required when the hash is sent) and
/// `automatic_payment_methods[allow_redirects]` (`always` / `never`), as Stripe's
/// PaymentIntent field of that name; `null` when not sent. The emulator only ever charges the
/// given test card, so the setting is recorded, not acted on.
fn automatic_payment_methods(form: &Form) -> Result<Value, ApiError> {
    let pairs = form_pairs_with_root(form, "automatic_payment_methods");
    if pairs.is_empty() {
        return Ok(Value::Null);
    }
    let mut enabled = None;
    let mut allow_redirects = None;
    for (name, value) in &pairs {
        match name.as_str() {
            "automatic_payment_methods[enabled]" => match value.as_str() {
                "true" => enabled = Some(true),
                "false" => enabled = Some(false),
                other => {
                    return Err(ApiError::invalid(
                        None,
                        format!("Invalid boolean: {other}"),
                        Some(name),
                    ))
                }
            },
            "automatic_payment_methods[allow_redirects]" => match value.as_str() {
                "always" | "never" => allow_redirects = Some(value.clone()),
                other => {
                    return Err(ApiError::invalid(
                        None,
                        format!(
                            "Invalid automatic_payment_methods[allow_redirects]: must be one of always or never (got {other})"
                        ),
                        Some(name),
                    ))
                }
            },
            _ => return Err(ApiError::unknown_param(name)),
        }
    }
    let enabled = enabled.ok_or_else(|| ApiError::missing("automatic_payment_methods[enabled]"))?;
    Ok(json!({
        "allow_redirects": allow_redirects.unwrap_or_else(|| "always".to_string()),
        "enabled": enabled
    }))
}

/// `(name, value)` of every parameter whose name is `root` or `root[...]`.
fn form_pairs_with_root(form: &Form, root: &str) -> Vec<(String, String)> {
    form.pairs()
        .iter()
        .filter(|(k, _)| k == root || k.strip_prefix(root).is_some_and(|r| r.starts_with('[')))
        .cloned()
        .collect()
}

/// `metadata[sandbox_created]`: unix seconds, not negative, not in the future.
fn parse_sandbox_created(raw: &str, now: i64) -> Result<i64, ApiError> {
    let param = format!("metadata[{SANDBOX_CREATED}]");
    let value = parse_integer(&param, raw)?;
    if !(0..=now).contains(&value) {
        return Err(ApiError::invalid(
            None,
            format!(
                "metadata[{SANDBOX_CREATED}] only backdates: it must be unix seconds between 0 and now ({now})"
            ),
            Some(&param),
        ));
    }
    Ok(value)
}

struct ChargeInput<'a> {
    id: &'a str,
    amount: i64,
    currency: &'a str,
    customer: Option<&'a str>,
    payment_intent: &'a str,
    payment_method: &'a str,
    card: TestCard,
    created: i64,
    description: Option<&'a str>,
    receipt_email: Option<&'a str>,
    metadata: &'a Map<String, Value>,
}

/// Stripe's Charge object for a confirmation attempt.
fn charge_body(c: &ChargeInput<'_>) -> Value {
    let succeeded = c.card.decline.is_none();
    let (failure_code, failure_message) = match c.card.decline {
        Some((code, _, message)) => (Some(code), Some(message)),
        None => (None, None),
    };
    let outcome = match c.card.decline {
        None => json!({
            "network_status": "approved_by_network",
            "reason": null,
            "risk_level": "normal",
            "seller_message": "Payment complete.",
            "type": "authorized"
        }),
        Some((_, decline_code, _)) => json!({
            "network_status": "declined_by_network",
            "reason": decline_code,
            "risk_level": "normal",
            "seller_message": "The bank did not return any further details with this decline.",
            "type": "issuer_declined"
        }),
    };
    let card_details = json!({
        "amount_authorized": if succeeded { Some(c.amount) } else { None },
        "brand": c.card.brand,
        "checks": {
            "address_line1_check": null,
            "address_postal_code_check": null,
            "cvc_check": "pass"
        },
        "country": "US",
        "exp_month": 12,
        "exp_year": 2034,
        "extended_authorization": { "status": "disabled" },
        // Stripe's fingerprint is opaque and identifies the card number; the test
        // cards are told apart by brand and last four digits.
        "fingerprint": format!("pwsbx{}{}", c.card.brand, c.card.last4),
        "funding": c.card.funding,
        "incremental_authorization": { "status": "unavailable" },
        "installments": null,
        "last4": c.card.last4,
        "mandate": null,
        "multicapture": { "status": "unavailable" },
        "network": c.card.brand,
        "network_token": { "used": false },
        "overcapture": {
            "maximum_amount_capturable": c.amount,
            "status": "unavailable"
        },
        "three_d_secure": null,
        "wallet": null
    });
    let mut body = json!({
        "id": c.id,
        "object": "charge",
        "amount": c.amount,
        "amount_captured": if succeeded { c.amount } else { 0 },
        "amount_refunded": 0,
        "application": null,
        "application_fee": null,
        "application_fee_amount": null,
        "balance_transaction": null,
        "billing_details": {
            "address": {
                "city": null, "country": null, "line1": null, "line2": null,
                "postal_code": null, "state": null
            },
            "email": null,
            "name": null,
            "phone": null
        },
        "calculated_statement_descriptor": "PAYWARDEN SANDBOX",
        "captured": succeeded,
        "created": c.created,
        "currency": c.currency,
        "customer": c.customer,
        "description": c.description,
        "disputed": false,
        "failure_balance_transaction": null,
        "failure_code": failure_code,
        "failure_message": failure_message,
        "fraud_details": {},
        "livemode": false,
        "metadata": c.metadata,
        "on_behalf_of": null,
        "outcome": outcome,
        "paid": succeeded,
        "payment_intent": c.payment_intent,
        "payment_method": c.payment_method,
        // Every key of Stripe's example charge at API 2024-06-20 (openapi/fixtures3.json)
        // except `refunds`, which Stripe includes only when expanded since API 2022-11-15.
        "payment_method_details": { "card": card_details, "type": "card" },
        "receipt_email": c.receipt_email,
        "receipt_url": null,
        "refunded": false,
        "review": null,
        "shipping": null,
        "status": if succeeded { "succeeded" } else { "failed" }
    });
    if let Some(object) = body.as_object_mut() {
        for key in [
            "invoice",
            "receipt_number",
            "source",
            "source_transfer",
            "statement_descriptor",
            "statement_descriptor_suffix",
            "transfer_data",
            "transfer_group",
        ] {
            object.insert(key.into(), Value::Null);
        }
    }
    body
}

/// `GET /v1/payment_intents?customer=&limit=&starting_after=`: newest first.
pub(crate) async fn list_payment_intents(
    conn: &mut SqliteConnection,
    account: &str,
    form: &Form,
) -> Result<Value, ApiError> {
    form.only(&[
        "customer",
        "created",
        "limit",
        "starting_after",
        "ending_before",
    ])?;
    let mut filters = Vec::new();
    if let Some(c) = form.filter("customer")? {
        filters.push(("customer", c));
    }
    let (data, has_more) = store::list(
        conn,
        account,
        &list_query(form, kind::PAYMENT_INTENT, filters)?,
    )
    .await?;
    Ok(list_envelope("/v1/payment_intents", data, has_more))
}

/// `GET /v1/payment_intents/{id}`.
pub(crate) async fn retrieve_payment_intent(
    conn: &mut SqliteConnection,
    account: &str,
    id: &str,
) -> Result<Value, ApiError> {
    Ok(
        store::require(conn, account, kind::PAYMENT_INTENT, id, "id")
            .await?
            .body,
    )
}

/// `GET /v1/charges/{id}`.
pub(crate) async fn retrieve_charge(
    conn: &mut SqliteConnection,
    account: &str,
    id: &str,
) -> Result<Value, ApiError> {
    Ok(store::require(conn, account, kind::CHARGE, id, "id")
        .await?
        .body)
}

/// `POST /v1/refunds`: `payment_intent` or `charge`, `amount` (default: all that is left),
/// `reason`, `metadata`. Runs inside the caller's `BEGIN IMMEDIATE` transaction, so the check
/// "amount ≤ charge amount − amount_refunded" and the update of the charge's
/// `amount_refunded` / `refunded` cannot interleave with another refund.
/// With `pending` (a sandbox fault) the refund is created `pending`; the charge counts it as
/// refunded, as Stripe's `amount_refunded` counts pending refunds.
pub(crate) async fn create_refund(
    conn: &mut SqliteConnection,
    account: &str,
    form: &Form,
    pending: bool,
) -> Result<Value, ApiError> {
    form.only(&["payment_intent", "charge", "amount", "reason", "metadata"])?;
    let requested = form
        .integer("amount")?
        .map(|a| at_least("amount", a, 1))
        .transpose()?;
    let reason = form.get("reason");
    if let Some(r) = reason {
        if !REFUND_REASONS.contains(&r) {
            return Err(ApiError::invalid(
                None,
                "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer",
                Some("reason"),
            ));
        }
    }
    let metadata = form.metadata()?;
    let charge_id = match (form.get("payment_intent"), form.get("charge")) {
        (None, None) => {
            return Err(ApiError::invalid(
                Some("parameter_missing"),
                "One of the following params should be provided for this request: payment_intent or charge.",
                None,
            ))
        }
        (Some(pi), charge) => {
            let intent =
                store::require(conn, account, kind::PAYMENT_INTENT, pi, "payment_intent").await?;
            let latest = intent.body["latest_charge"].as_str().map(str::to_string);
            let (true, Some(latest)) = (intent.body["status"] == "succeeded", latest) else {
                return Err(ApiError::invalid(
                    None,
                    format!("This PaymentIntent ({pi}) does not have a successful charge to refund."),
                    Some("payment_intent"),
                ));
            };
            if let Some(c) = charge {
                if c != latest {
                    return Err(ApiError::invalid(
                        None,
                        format!("The charge {c} does not belong to the PaymentIntent {pi}."),
                        Some("charge"),
                    ));
                }
            }
            latest
        }
        (None, Some(c)) => c.to_string(),
    };
    let mut charge = store::require(conn, account, kind::CHARGE, &charge_id, "charge")
        .await?
        .body;
    if charge["status"] != "succeeded" {
        return Err(ApiError::invalid(
            None,
            format!("Charge {charge_id} did not succeed; there is nothing to refund."),
            Some("charge"),
        ));
    }
    let total = charge["amount"].as_i64().unwrap_or(0);
    let refunded = charge["amount_refunded"].as_i64().unwrap_or(0);
    let currency = charge["currency"].as_str().unwrap_or("").to_string();
    let remaining = total - refunded;
    if remaining <= 0 {
        return Err(ApiError::invalid(
            Some("charge_already_refunded"),
            format!("Charge {charge_id} has already been refunded."),
            None,
        ));
    }
    let amount = requested.unwrap_or(remaining);
    if amount > remaining {
        return Err(ApiError::invalid(
            Some("amount_too_large"),
            format!(
                "Refund amount ({}) is greater than unrefunded amount on charge ({})",
                dollars(amount, &currency),
                dollars(remaining, &currency)
            ),
            Some("amount"),
        ));
    }
    let now = now();
    charge["amount_refunded"] = json!(refunded + amount);
    charge["refunded"] = json!(refunded + amount == total);
    store::update_body(conn, account, &charge_id, &charge).await?;
    let payment_intent = charge["payment_intent"].as_str().map(str::to_string);
    let id = new_id("re_", 24);
    let body = json!({
        "id": id,
        "object": "refund",
        "amount": amount,
        "balance_transaction": null,
        "charge": charge_id,
        "created": now,
        "currency": currency,
        "destination_details": {
            "card": {
                "reference_status": "pending",
                "reference_type": "acquirer_reference_number",
                "type": "refund"
            },
            "type": "card"
        },
        "metadata": metadata,
        "payment_intent": payment_intent,
        "reason": reason,
        "receipt_number": null,
        "source_transfer_reversal": null,
        "status": if pending { "pending" } else { "succeeded" },
        "transfer_reversal": null
    });
    store::insert(
        conn,
        account,
        &NewObject {
            kind: kind::REFUND,
            id: &id,
            created: now,
            customer: charge["customer"].as_str(),
            payment_intent: payment_intent.as_deref(),
            charge: Some(&charge_id),
            email: None,
            body: &body,
            extra: None,
        },
    )
    .await?;
    Ok(body)
}

/// An amount as Stripe writes it in refund messages: `$` and the decimal in the currency's
/// exponent (`$10.00`; `$1000` for a zero-decimal currency).
fn dollars(minor: i64, currency: &str) -> String {
    let decimal = Currency::from_code(&currency.to_ascii_uppercase())
        .ok()
        .and_then(|c| Money::from_minor(minor, c).ok())
        .map(|m| m.to_decimal_string())
        .unwrap_or_else(|| minor.to_string());
    format!("${decimal}")
}

/// `GET /v1/refunds?payment_intent=&charge=&limit=&starting_after=`: newest first.
pub(crate) async fn list_refunds(
    conn: &mut SqliteConnection,
    account: &str,
    form: &Form,
) -> Result<Value, ApiError> {
    form.only(&[
        "payment_intent",
        "charge",
        "created",
        "limit",
        "starting_after",
        "ending_before",
    ])?;
    let mut filters = Vec::new();
    if let Some(pi) = form.filter("payment_intent")? {
        filters.push(("payment_intent", pi));
    }
    if let Some(c) = form.filter("charge")? {
        filters.push(("charge", c));
    }
    let (data, has_more) =
        store::list(conn, account, &list_query(form, kind::REFUND, filters)?).await?;
    Ok(list_envelope("/v1/refunds", data, has_more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refund_amounts_in_dollars() {
        assert_eq!(dollars(1500, "usd"), "$15.00");
        assert_eq!(dollars(1000, "jpy"), "$1000");
        assert_eq!(dollars(7, "xxx_unknown"), "$7");
    }

    #[test]
    fn sandbox_created() {
        assert_eq!(parse_sandbox_created("100", 200).unwrap(), 100);
        assert!(parse_sandbox_created("300", 200).is_err());
        assert!(parse_sandbox_created("-1", 200).is_err());
        assert!(parse_sandbox_created("x", 200).is_err());
    }
}
