//! Stripe Products, Prices and Payment Links: `POST /v1/products`, `POST /v1/prices`,
//! `POST /v1/payment_links` and their `GET .../{id}`.

use serde_json::{json, Value};
use sqlx::SqliteConnection;

use super::error::ApiError;
use super::form::{at_least, at_most, parse_integer, Form};
use super::store::{self, kind, NewObject};
use super::{new_id, now, parse_currency, random_alphanumeric};

/// Stripe's largest `unit_amount`: eight digits in the smallest currency unit.
const MAX_UNIT_AMOUNT: i64 = 99_999_999;

/// Stripe's limit on a payment link's `line_items`.
const MAX_LINE_ITEMS: usize = 20;

/// Stripe's limit on a line item's `quantity`.
const MAX_QUANTITY: i64 = 999_999;

/// `POST /v1/products`: `name` (required, at most 250 characters), `description`, `active`,
/// `metadata`. Answers Stripe's `product` object (`prod_` id).
pub(crate) async fn create_product(
    conn: &mut SqliteConnection,
    account: &str,
    form: &Form,
) -> Result<Value, ApiError> {
    form.only(&["name", "description", "active", "metadata"])?;
    let name = form
        .text("name", 250)?
        .ok_or_else(|| ApiError::missing("name"))?;
    let description = form.text("description", 40_000)?;
    let active = form.boolean("active")?.unwrap_or(true);
    let metadata = form.metadata()?;
    insert_product(conn, account, name, description, active, metadata).await
}

/// Stores a new product and answers its object (for `POST /v1/products` and a price's
/// `product_data`).
async fn insert_product(
    conn: &mut SqliteConnection,
    account: &str,
    name: String,
    description: Option<String>,
    active: bool,
    metadata: serde_json::Map<String, Value>,
) -> Result<Value, ApiError> {
    let id = new_id("prod_", 14);
    let created = now();
    let body = json!({
        "id": id,
        "object": "product",
        "active": active,
        "created": created,
        "default_price": null,
        "description": description,
        "images": [],
        "livemode": false,
        "marketing_features": [],
        "metadata": metadata,
        "name": name,
        "package_dimensions": null,
        "shippable": null,
        "statement_descriptor": null,
        "tax_code": null,
        "type": "service",
        "unit_label": null,
        "updated": created,
        "url": null
    });
    insert(conn, account, kind::PRODUCT, &id, created, &body, None).await?;
    Ok(body)
}

/// `POST /v1/prices`: a one-time price. `product` (an existing product, else 400
/// `resource_missing` on `product`) or `product_data` (a product created with the price:
/// `product_data[name]` required, `product_data[active]`, `product_data[metadata][k]`; Stripe's
/// spec documents `product_data` on this operation), exactly one of the two; `unit_amount`
/// (required, integer minor units, 0..=99999999), `currency` (required, lower-case ISO 4217),
/// `nickname`, `active`, `metadata`. Answers Stripe's `price` object (`price_` id,
/// `type: "one_time"`). Recurring prices are not emulated (`recurring` is `parameter_unknown`).
pub(crate) async fn create_price(
    conn: &mut SqliteConnection,
    account: &str,
    form: &Form,
) -> Result<Value, ApiError> {
    form.only(&[
        "product",
        "product_data",
        "unit_amount",
        "currency",
        "nickname",
        "active",
        "metadata",
    ])?;
    let product_data = product_data(form)?;
    let product = match (form.get("product"), &product_data) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                None,
                "You may only specify one of these parameters: product, product_data.",
                Some("product"),
            ))
        }
        (None, None) => return Err(ApiError::missing("product")),
        (product, _) => product,
    };
    let unit_amount = parse_integer("unit_amount", form.required("unit_amount")?)?;
    let unit_amount = at_most(
        "unit_amount",
        at_least("unit_amount", unit_amount, 0)?,
        MAX_UNIT_AMOUNT,
    )?;
    let currency = parse_currency(form, "currency")?;
    let nickname = form.text("nickname", 5000)?;
    let active = form.boolean("active")?.unwrap_or(true);
    let metadata = form.metadata()?;
    let product = match (product, product_data) {
        (Some(product), _) => {
            store::require(conn, account, kind::PRODUCT, product, "product").await?;
            product.to_string()
        }
        (None, Some(data)) => {
            let created =
                insert_product(conn, account, data.name, None, data.active, data.metadata).await?;
            created["id"].as_str().unwrap_or_default().to_string()
        }
        (None, None) => return Err(ApiError::missing("product")),
    };
    let id = new_id("price_", 24);
    let created = now();
    let body = json!({
        "id": id,
        "object": "price",
        "active": active,
        "billing_scheme": "per_unit",
        "created": created,
        "currency": currency,
        "custom_unit_amount": null,
        "livemode": false,
        "lookup_key": null,
        "metadata": metadata,
        "nickname": nickname,
        "product": product,
        "recurring": null,
        "tax_behavior": "unspecified",
        "tiers_mode": null,
        "transform_quantity": null,
        "type": "one_time",
        "unit_amount": unit_amount,
        "unit_amount_decimal": unit_amount.to_string()
    });
    insert(conn, account, kind::PRICE, &id, created, &body, None).await?;
    Ok(body)
}

/// A price's inline product (`product_data[...]`).
struct ProductData {
    name: String,
    active: bool,
    metadata: serde_json::Map<String, Value>,
}

/// `product_data[name]` (required when any `product_data` is sent), `product_data[active]`,
/// `product_data[metadata][k]`; other `product_data[...]` fields are `parameter_unknown`.
fn product_data(form: &Form) -> Result<Option<ProductData>, ApiError> {
    let mut any = false;
    for (name, _) in form.pairs() {
        let Some(rest) = name.strip_prefix("product_data") else {
            continue;
        };
        any = true;
        let field = rest
            .strip_prefix('[')
            .and_then(|r| r.split(']').next())
            .unwrap_or_default();
        if !matches!(field, "name" | "active" | "metadata") {
            return Err(ApiError::unknown_param(name));
        }
    }
    if !any {
        return Ok(None);
    }
    let name = form
        .text("product_data[name]", 250)?
        .ok_or_else(|| ApiError::missing("product_data[name]"))?;
    Ok(Some(ProductData {
        name,
        active: form.boolean("product_data[active]")?.unwrap_or(true),
        metadata: form.metadata_at("product_data[metadata]")?,
    }))
}

/// `POST /v1/payment_links`: `line_items[i][price]` (required, an existing active price) and
/// `line_items[i][quantity]` (required, 1..=999999), 1 to 20 items of one currency, and
/// `metadata`. Answers Stripe's `payment_link` object (`plink_` id). Its `url` points at the
/// emulator's own sandbox page (`/sandbox/pay/{id}` on the host the request was sent to), not at
/// `buy.stripe.com`: no money can be paid through it.
pub(crate) async fn create_payment_link(
    conn: &mut SqliteConnection,
    account: &str,
    form: &Form,
    origin: &str,
) -> Result<Value, ApiError> {
    form.only(&["line_items", "metadata"])?;
    let items = form.line_items()?;
    if items.is_empty() {
        return Err(ApiError::missing("line_items"));
    }
    if items.len() > MAX_LINE_ITEMS {
        return Err(ApiError::invalid(
            None,
            format!("A payment link can have at most {MAX_LINE_ITEMS} line items."),
            Some("line_items"),
        ));
    }
    let metadata = form.metadata()?;
    let mut currency: Option<String> = None;
    let mut lines = Vec::with_capacity(items.len());
    let mut total: i64 = 0;
    for item in &items {
        let price_param = format!("line_items[{}][price]", item.index);
        let quantity_param = format!("line_items[{}][quantity]", item.index);
        let price_id = item
            .price
            .as_deref()
            .ok_or_else(|| ApiError::missing(&price_param))?;
        let quantity = item
            .quantity
            .as_deref()
            .ok_or_else(|| ApiError::missing(&quantity_param))?;
        let quantity = parse_integer(&quantity_param, quantity)?;
        let quantity = at_most(
            &quantity_param,
            at_least(&quantity_param, quantity, 1)?,
            MAX_QUANTITY,
        )?;
        let price = store::require(conn, account, kind::PRICE, price_id, &price_param)
            .await?
            .body;
        if price["active"] != json!(true) {
            return Err(ApiError::invalid(
                None,
                format!("The price {price_id} is not active; a payment link needs active prices."),
                Some(&price_param),
            ));
        }
        let price_currency = price["currency"].as_str().unwrap_or_default().to_string();
        match &currency {
            None => currency = Some(price_currency.clone()),
            Some(c) if *c != price_currency => {
                return Err(ApiError::invalid(
                    None,
                    format!(
                        "All prices on a payment link must have the same currency; {price_id} is in {price_currency}, not {c}."
                    ),
                    Some(&price_param),
                ))
            }
            Some(_) => {}
        }
        let unit_amount = price["unit_amount"].as_i64().unwrap_or(0);
        let amount = unit_amount.checked_mul(quantity).ok_or_else(|| {
            ApiError::invalid(
                Some("amount_too_large"),
                "The line item total is too large.",
                Some(&quantity_param),
            )
        })?;
        total = total.checked_add(amount).ok_or_else(|| {
            ApiError::invalid(
                Some("amount_too_large"),
                "The payment link total is too large.",
                Some("line_items"),
            )
        })?;
        lines.push(json!({
            "price": price_id,
            "quantity": quantity,
            "unit_amount": unit_amount,
            "amount_total": amount
        }));
    }
    let id = new_id("plink_", 24);
    let created = now();
    let url = format!(
        "{origin}/sandbox/pay/{id}?test_{}",
        random_alphanumeric(8).to_lowercase()
    );
    let body = json!({
        "id": id,
        "object": "payment_link",
        "active": true,
        "after_completion": {
            "hosted_confirmation": { "custom_message": null },
            "type": "hosted_confirmation"
        },
        "allow_promotion_codes": false,
        "application": null,
        "application_fee_amount": null,
        "application_fee_percent": null,
        "automatic_tax": { "enabled": false, "liability": null },
        "billing_address_collection": "auto",
        "consent_collection": null,
        "currency": currency,
        "custom_fields": [],
        "custom_text": {
            "after_submit": null,
            "shipping_address": null,
            "submit": null,
            "terms_of_service_acceptance": null
        },
        "customer_creation": "if_required",
        "inactive_message": null,
        "invoice_creation": null,
        "livemode": false,
        "metadata": metadata,
        "on_behalf_of": null,
        "payment_intent_data": null,
        // As in Stripe's example `payment_link` at API 2024-06-20 (openapi/fixtures3.json),
        // like every key above: the spec requires them all.
        "payment_method_collection": "if_required",
        "payment_method_types": null,
        "phone_number_collection": { "enabled": false },
        "restrictions": null,
        "shipping_address_collection": null,
        "shipping_options": [],
        "submit_type": "auto",
        "subscription_data": null,
        "tax_id_collection": { "enabled": false },
        "transfer_data": null,
        "url": url
    });
    let extra = json!({ "line_items": lines, "amount_total": total, "created": created });
    insert(
        conn,
        account,
        kind::PAYMENT_LINK,
        &id,
        created,
        &body,
        Some(&extra),
    )
    .await?;
    Ok(body)
}

/// `GET /v1/products/{id}`, `/v1/prices/{id}`, `/v1/payment_links/{id}`, `/v1/refunds/{id}`:
/// one object of `kind`; 404 `resource_missing` when unknown.
pub(crate) async fn retrieve(
    conn: &mut SqliteConnection,
    account: &str,
    kind: &'static str,
    id: &str,
) -> Result<Value, ApiError> {
    Ok(store::require(conn, account, kind, id, "id").await?.body)
}

/// The emulator-only line items of a payment link (for its sandbox page): `(link, extra)`.
pub(crate) async fn payment_link_page(
    conn: &mut SqliteConnection,
    id: &str,
) -> Result<Option<(Value, Value)>, ApiError> {
    let row = store::get_any_account(conn, kind::PAYMENT_LINK, id).await?;
    Ok(row.map(|s| (s.body, s.extra.unwrap_or(Value::Null))))
}

async fn insert(
    conn: &mut SqliteConnection,
    account: &str,
    kind: &'static str,
    id: &str,
    created: i64,
    body: &Value,
    extra: Option<&Value>,
) -> Result<(), ApiError> {
    store::insert(
        conn,
        account,
        &NewObject {
            kind,
            id,
            created,
            customer: None,
            payment_intent: None,
            charge: None,
            email: None,
            body,
            extra,
        },
    )
    .await
}
