//! Playing the shopper (emulator only): pay, reject or let expire a pending payment request,
//! and the callback ifthenpay sends the merchant when a payment completes.
//!
//! `POST /sandbox/ifthenpay/shopper` with JSON
//! `{"action": "pay" | "reject" | "expire" | "refund", "request_id" | "reference" | "pin_code": ..., "method": "CCARD"}`
//! (`method`: which of a PinPay link's methods the shopper uses; default `CCARD`). Answers
//! `{"request_id", "order_id", "method", "status", "amount", "callback": {...}}`; 404 for an
//! unknown request, 409 when it is no longer pending (or an MB WAY request is rejected ...
//! only MB WAY requests can be rejected by the shopper).

use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{self, Row, DB_TIME, WIRE_TIME};
use super::{Method, State};

/// What the shopper does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Action {
    /// Pays (at the ATM, the Payshop agent, in the MB WAY app, on the checkout page).
    Pay,
    /// Rejects an MB WAY request in the app (status 020).
    Reject,
    /// Lets the request expire (MB WAY after 4 minutes: status 101; a reference past its date).
    Expire,
    /// The merchant refunded a paid card or PinPay payment in ifthenpay's backoffice:
    /// ifthenpay calls back with `[STATUS]` = `DEVOLVIDO` (the status the WooCommerce plugin's
    /// card and gateway callbacks handle besides `PAGO`: webdados/Multibanco-ifthenpay-Gateway-
    /// for-WooCommerce class-wc-creditcard-ifthen-webdados.php). Sandbox only.
    Refund,
}

/// The control request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShopperRequest {
    action: Action,
    request_id: Option<String>,
    reference: Option<String>,
    pin_code: Option<String>,
    method: Option<String>,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

async fn find(state: &State, request: &ShopperRequest) -> Result<Option<Row>, sqlx::Error> {
    let (column, value) = match (&request.request_id, &request.reference, &request.pin_code) {
        (Some(id), _, _) => ("request_id", id),
        (None, Some(reference), _) => ("reference", reference),
        (None, None, Some(pin)) => ("pin_code", pin),
        (None, None, None) => return Ok(None),
    };
    sqlx::query_as::<_, Row>(&format!(
        "SELECT * FROM ifthenpay_requests WHERE {column} = ? ORDER BY seq DESC LIMIT 1"
    ))
    .bind(value)
    .fetch_optional(&state.pool)
    .await
}

pub(crate) async fn act(
    AxumState(state): AxumState<State>,
    fault: Option<axum::Extension<crate::faults::CallbackFault>>,
    body: axum::body::Bytes,
) -> Response {
    let fault = fault.map(|f| f.0).unwrap_or_default();
    let request: ShopperRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("invalid shopper request: {e}; send {{\"action\": \"pay\"|\"reject\"|\"expire\", \"request_id\" | \"reference\" | \"pin_code\": ...}}"),
            )
        }
    };
    let row = match find(&state, &request).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            return refuse(
                StatusCode::NOT_FOUND,
                "no payment request matches: give request_id, reference or pin_code",
            )
        }
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let row = match api::expire_if_timed_out(&state, row).await {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if request.action == Action::Refund {
        let refundable = row.status == "paid"
            && matches!(
                row.method(),
                Some(Method::Ccard | Method::Pinpay | Method::Google | Method::Apple)
            );
        if !refundable {
            return refuse(
                StatusCode::CONFLICT,
                format!(
                    "request {} is a {} request that is {}: only paid card and PinPay payments are refunded with a callback",
                    row.request_id, row.method, row.status
                ),
            );
        }
        let callback = fire_callback(&state, &row, CallbackStatus::Refunded).await;
        return Json(json!({
            "request_id": row.request_id,
            "order_id": row.order_id,
            "method": row.method,
            "paid_method": row.paid_method,
            "status": "refunded",
            "amount": row.amount(),
            "reference": row.reference,
            "callback": callback,
        }))
        .into_response();
    }
    if row.status != "pending" {
        return refuse(
            StatusCode::CONFLICT,
            format!("request {} is {}, not pending", row.request_id, row.status),
        );
    }
    let Some(method) = row.method() else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "unreadable method");
    };
    let updated = match request.action {
        Action::Reject if method != Method::MbWay => {
            return refuse(
                StatusCode::CONFLICT,
                "only MB WAY requests can be rejected by the shopper; use expire",
            )
        }
        Action::Reject => api::set_status(&state, &row, "rejected").await,
        // Handled above.
        Action::Refund => Ok(row.clone()),
        Action::Expire => api::set_status(&state, &row, "expired").await,
        Action::Pay => {
            let paid_method = match method {
                Method::Pinpay => {
                    let chosen = request.method.as_deref().unwrap_or("CCARD");
                    match Method::from_code(chosen).filter(|m| *m != Method::Pinpay) {
                        Some(m) => m,
                        None => {
                            return refuse(
                                StatusCode::BAD_REQUEST,
                                format!("unknown method {chosen:?}"),
                            )
                        }
                    }
                }
                Method::Mb
                | Method::MbWay
                | Method::Payshop
                | Method::Ccard
                | Method::Cofidis
                | Method::Pix
                | Method::Google
                | Method::Apple => method,
            };
            pay(&state, &row, paid_method).await
        }
    };
    let row = match updated {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let callback = if row.status == "paid" && fault.delay_ms > 0 {
        // A sandbox fault: the callback arrives late, after this answer.
        let (state, row) = (state.clone(), row.clone());
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(fault.delay_ms)).await;
            fire_callback(&state, &row, CallbackStatus::Paid).await;
        });
        json!({"sent": false, "late_ms": fault.delay_ms})
    } else if row.status == "paid" {
        let first = fire_callback(&state, &row, CallbackStatus::Paid).await;
        // A sandbox fault: the same callback again (ifthenpay may repeat a callback).
        let mut copies = Vec::new();
        for _ in 0..fault.extra_copies {
            copies.push(fire_callback(&state, &row, CallbackStatus::Paid).await);
        }
        if copies.is_empty() {
            first
        } else {
            let mut first = first;
            first["duplicates"] = json!(copies);
            first
        }
    } else {
        json!({"sent": false, "reason": "ifthenpay calls back only for payments"})
    };
    Json(json!({
        "request_id": row.request_id,
        "order_id": row.order_id,
        "method": row.method,
        "paid_method": row.paid_method,
        "status": row.status,
        "amount": row.amount(),
        "reference": row.reference,
        "callback": callback,
    }))
    .into_response()
}

async fn pay(state: &State, row: &Row, method: Method) -> Result<Row, sqlx::Error> {
    let at = api::now().format(DB_TIME).to_string();
    sqlx::query(
        "UPDATE ifthenpay_requests SET status = 'paid', paid_method = ?, paid_at = ?, updated_at = ? \
         WHERE seq = ? AND status = 'pending'",
    )
    .bind(method.code())
    .bind(&at)
    .bind(&at)
    .bind(row.seq)
    .execute(&state.pool)
    .await?;
    sqlx::query_as::<_, Row>("SELECT * FROM ifthenpay_requests WHERE seq = ?")
        .bind(row.seq)
        .fetch_one(&state.pool)
        .await
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a callback reports: `[STATUS]` is `PAGO` for a payment, `DEVOLVIDO` for a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallbackStatus {
    Paid,
    Refunded,
}

/// The placeholders ifthenpay fills in the callback of a payment by `method` (the method the
/// request was created with: PinPay for a link, whatever the shopper paid it with). The others
/// stay in the URL as they were registered, unfilled. Sources:
/// - every method: `[ID]` (order id), `[REQUEST_ID]`, `[AMOUNT]`, `[ANTI_PHISHING_KEY]`
///   (ifthenpay-sdk-php src/Service/WebhookService.php `getWebhookParams`), and
///   `[PAYMENT_DATETIME]` (ifthenpay.com/docs/en/guides/callback);
/// - `[ORDER_ID]`: Multibanco, MB WAY, Payshop, Cofidis Pay, PIX (the guide's examples;
///   the WooCommerce plugin's Cofidis callback); card and PinPay callbacks carry the order as
///   `[ID]` only (WooCommerce plugin class-wc-ifthen-webdados.php);
/// - `[REFERENCE]`: Multibanco, Payshop (SDK); `[ENTITY]`: Multibanco (guide);
/// - `[STATUS]` (`PAGO` / `DEVOLVIDO`): card and PinPay (WooCommerce plugin);
/// - `[PAYMENT_METHOD]`: PinPay (SDK `gpm`, WooCommerce plugin).
fn placeholders(method: Method) -> &'static [&'static str] {
    const COMMON: [&str; 5] = [
        "[ANTI_PHISHING_KEY]",
        "[ID]",
        "[AMOUNT]",
        "[REQUEST_ID]",
        "[PAYMENT_DATETIME]",
    ];
    match method {
        Method::Mb => &[
            COMMON[0],
            COMMON[1],
            COMMON[2],
            COMMON[3],
            COMMON[4],
            "[ORDER_ID]",
            "[REFERENCE]",
            "[ENTITY]",
        ],
        Method::Payshop => &[
            COMMON[0],
            COMMON[1],
            COMMON[2],
            COMMON[3],
            COMMON[4],
            "[ORDER_ID]",
            "[REFERENCE]",
        ],
        Method::MbWay | Method::Cofidis | Method::Pix => &[
            COMMON[0],
            COMMON[1],
            COMMON[2],
            COMMON[3],
            COMMON[4],
            "[ORDER_ID]",
        ],
        Method::Ccard | Method::Google | Method::Apple => &[
            COMMON[0], COMMON[1], COMMON[2], COMMON[3], COMMON[4], "[STATUS]",
        ],
        Method::Pinpay => &[
            COMMON[0],
            COMMON[1],
            COMMON[2],
            COMMON[3],
            COMMON[4],
            "[STATUS]",
            "[PAYMENT_METHOD]",
        ],
    }
}

/// Calls the merchant's activated callback URL for a paid (or refunded) request (a GET, as
/// ifthenpay does), filling only the placeholders the request's method documents.
/// Returns what happened, without the URL (it carries the anti-phishing key).
async fn fire_callback(state: &State, row: &Row, what: CallbackStatus) -> Value {
    let activation: Option<(String, String)> = match sqlx::query_as(
        "SELECT url, anti_phishing_key FROM ifthenpay_callbacks WHERE account_key = ?",
    )
    .bind(&row.account_key)
    .fetch_optional(&state.pool)
    .await
    {
        Ok(a) => a,
        Err(e) => return json!({"sent": false, "error": e.to_string()}),
    };
    let Some((template, ap_key)) = activation else {
        return json!({"sent": false, "reason": "no callback activated for this key"});
    };
    let Some(method) = row.method() else {
        return json!({"sent": false, "reason": "unreadable method"});
    };
    let paid_at = row.paid_at.clone().unwrap_or_default();
    let payment_datetime = chrono::NaiveDateTime::parse_from_str(&paid_at, DB_TIME)
        .map(|t| t.format(WIRE_TIME).to_string())
        .unwrap_or_default();
    let entity = row.entity.clone().unwrap_or_default();
    let status = match what {
        CallbackStatus::Paid => "PAGO",
        CallbackStatus::Refunded => "DEVOLVIDO",
    };
    let filled = placeholders(method);
    let url = [
        ("[ANTI_PHISHING_KEY]", ap_key.as_str()),
        ("[ID]", row.order_id.as_str()),
        ("[ORDER_ID]", row.order_id.as_str()),
        ("[AMOUNT]", row.amount().as_str()),
        ("[REQUEST_ID]", row.request_id.as_str()),
        ("[ENTITY]", entity.as_str()),
        ("[REFERENCE]", row.reference.as_deref().unwrap_or_default()),
        ("[PAYMENT_DATETIME]", payment_datetime.as_str()),
        ("[STATUS]", status),
        (
            "[PAYMENT_METHOD]",
            row.paid_method.as_deref().unwrap_or_default(),
        ),
    ]
    .into_iter()
    .filter(|(placeholder, _)| filled.contains(placeholder))
    .fold(template, |url, (placeholder, value)| {
        url.replace(placeholder, &encode(value))
    });
    match state.http.get(&url).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body: String = response
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(500)
                .collect();
            json!({"sent": true, "status": status, "body": body})
        }
        // Without the URL: it carries the anti-phishing key.
        Err(e) => json!({"sent": false, "error": e.without_url().to_string()}),
    }
}

fn describe(row: &Row) -> Value {
    json!({
        "sandbox": true,
        "method": row.method,
        "order_id": row.order_id,
        "amount": row.amount(),
        "currency": row.currency,
        "status": row.status,
        "request_id": row.request_id,
        "how_to_pay": "POST /sandbox/ifthenpay/shopper {\"action\": \"pay\", \"request_id\": \"...\"} or `paywarden ifthenpay shopper pay --request-id ...`",
    })
}

/// The hosted checkout page of a card, Cofidis, PIX or PinPay request (JSON, sandbox only).
pub(crate) async fn checkout(
    AxumState(state): AxumState<State>,
    Path(token): Path<String>,
) -> Response {
    match sqlx::query_as::<_, Row>("SELECT * FROM ifthenpay_requests WHERE token = ?")
        .bind(&token)
        .fetch_optional(&state.pool)
        .await
    {
        Ok(Some(row)) => Json(describe(&row)).into_response(),
        Ok(None) => refuse(StatusCode::NOT_FOUND, "unknown checkout"),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The PinPay page of a PIN (JSON, sandbox only).
pub(crate) async fn pinpay_page(
    AxumState(state): AxumState<State>,
    Path(pin): Path<String>,
) -> Response {
    match sqlx::query_as::<_, Row>("SELECT * FROM ifthenpay_requests WHERE pin_code = ?")
        .bind(&pin)
        .fetch_optional(&state.pool)
        .await
    {
        Ok(Some(row)) => Json(describe(&row)).into_response(),
        Ok(None) => refuse(StatusCode::NOT_FOUND, "unknown PIN"),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn encoding() {
        assert_eq!(
            super::encode("03-01-2024 15:15:16"),
            "03-01-2024%2015%3A15%3A16"
        );
        assert_eq!(super::encode("a&b=c"), "a%26b%3Dc");
    }
}
