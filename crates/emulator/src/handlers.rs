//! The HTTP endpoints: authentication, parameter validation, and the four OPP operations.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use paywarden_domain::ledger::{self, Operation};
use paywarden_domain::{Currency, Money, PaymentType, TransactionId};
use serde_json::Value;

use crate::card::{self, CardOutcome};
use crate::codes;
use crate::error::EmulatorError;
use crate::params::{Collector, ParamError, Params};
use crate::store::{CardSummary, Filter, Page, Store, Tx};
use crate::wire;
use crate::EntityCredential;

/// The emulator-only backdating parameter (OPP's generic `customParameters[NAME]` mechanism).
const SANDBOX_TIMESTAMP: &str = "customParameters[SANDBOX_TIMESTAMP]";

/// The header on every response, so nobody mistakes the emulator for OPP.
const SANDBOX_HEADER: &str = "x-paywarden-sandbox";

/// OPP `paymentBrand` values the emulator accepts for card payments.
const CARD_BRANDS: &[&str] = &[
    "VISA",
    "MASTER",
    "AMEX",
    "DINERS",
    "DISCOVER",
    "JCB",
    "MAESTRO",
    "VPAY",
    "VISAELECTRON",
    "CARTEBANCAIRE",
    "DANKORT",
    "UNIONPAY",
];

/// The payment method of every emulator transaction (OPP `paymentMethods` value for cards).
const CARD_METHOD: &str = "CC";

/// Default and maximum `limit` of the date-range report.
const MAX_LIMIT: u32 = 100;

/// State shared by every request.
pub(crate) struct Shared {
    pub store: Store,
    pub entities: Vec<EntityCredential>,
    pub latency: Duration,
    pub write_latency: Duration,
    /// Sends OPP webhook notifications ([`crate::webhooks`]).
    pub webhooks: Arc<crate::webhooks::Webhooks>,
}

/// The OPP API router with latency, the sandbox header and request logging.
///
/// `other` (the Stripe API's router) is merged in before the layers, so the latencies, the
/// sandbox header and the request log apply to it too.
pub(crate) fn router(shared: Arc<Shared>, other: Router) -> Router {
    let latency = (shared.latency, shared.write_latency);
    Router::new()
        .route("/v1/payments", post(create_payment))
        .route("/v1/payments/{id}", post(backoffice))
        .route("/v1/query", get(query))
        .route("/v1/query/{id}", get(query_by_id))
        .with_state(shared)
        .merge(other)
        .layer(middleware::from_fn_with_state(latency, around))
}

/// Applies the configured latencies, stamps `X-Paywarden-Sandbox: true` and logs method, path
/// and status (never headers, query strings or bodies: they carry tokens and card data).
async fn around(
    State((latency, write_latency)): State<(Duration, Duration)>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut response = next.run(request).await;
    // The write is done; only the answer is late (a lost or slow response).
    if method == axum::http::Method::POST && !write_latency.is_zero() {
        tokio::time::sleep(write_latency).await;
    }
    response
        .headers_mut()
        .insert(SANDBOX_HEADER, HeaderValue::from_static("true"));
    tracing::debug!(
        %method,
        %path,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "emulator request"
    );
    response
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// Why a request is refused before any endpoint logic runs.
enum Refusal {
    /// HTTP 401 `800.900.300`: missing or unknown bearer token.
    Unauthenticated,
    /// HTTP 403 `800.900.301`: the token belongs to another entity.
    Forbidden,
    /// HTTP 400 `200.300.404`: undecodable body/query, wrong content type, missing `entityId`.
    Parameters(Vec<ParamError>),
}

impl Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthenticated => wire::error(
                StatusCode::UNAUTHORIZED,
                codes::INVALID_AUTHENTICATION,
                None,
            ),
            Refusal::Forbidden => {
                wire::error(StatusCode::FORBIDDEN, codes::INSUFFICIENT_RIGHTS, None)
            }
            Refusal::Parameters(errors) => wire::parameter_errors(errors, None),
        }
    }
}

/// The entity whose token is in `Authorization: Bearer <token>`.
fn authenticate<'a>(
    shared: &'a Shared,
    headers: &HeaderMap,
) -> Result<&'a EntityCredential, Refusal> {
    let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err(Refusal::Unauthenticated);
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return Err(Refusal::Unauthenticated);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::Unauthenticated);
    }
    let token = token.trim();
    shared
        .entities
        .iter()
        .find(|e| constant_time_eq(e.token.as_bytes(), token.as_bytes()))
        .ok_or(Refusal::Unauthenticated)
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `entityId` must be present and be the token's entity.
fn authorize(credential: &EntityCredential, params: &Params) -> Result<(), Refusal> {
    match params.get("entityId") {
        Err(e) => Err(Refusal::Parameters(vec![e])),
        Ok(None) => Err(Refusal::Parameters(vec![ParamError::missing(
            "entityId",
            "the OPP entity id the bearer token belongs to",
        )])),
        Ok(Some(entity)) if entity == credential.entity_id => Ok(()),
        Ok(Some(_)) => Err(Refusal::Forbidden),
    }
}

/// Authenticates a POST and decodes its form body.
fn post_prelude<'a>(
    shared: &'a Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(&'a EntityCredential, Params), Refusal> {
    let credential = authenticate(shared, headers)?;
    if let Some(content_type) = headers.get(CONTENT_TYPE) {
        let essence = content_type
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(Refusal::Parameters(vec![ParamError::new(
                "Content-Type",
                essence,
                "OPP takes form-encoded requests: send Content-Type: application/x-www-form-urlencoded",
            )]));
        }
    }
    let params = Params::decode(body).map_err(|e| Refusal::Parameters(vec![e]))?;
    authorize(credential, &params)?;
    Ok((credential, params))
}

/// Authenticates a GET and decodes its query string.
fn get_prelude<'a>(
    shared: &'a Shared,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(&'a EntityCredential, Params), Refusal> {
    let credential = authenticate(shared, headers)?;
    let params =
        Params::decode(query.unwrap_or("").as_bytes()).map_err(|e| Refusal::Parameters(vec![e]))?;
    authorize(credential, &params)?;
    Ok((credential, params))
}

/// The `{id}` path segment; one axum cannot decode (invalid percent-encoding or UTF-8) is
/// returned empty, which no transaction has, so it is answered like an unknown id.
fn path_id(path: Result<Path<String>, PathRejection>) -> String {
    path.map(|Path(id)| id).unwrap_or_default()
}

/// HTTP 500 `999.999.999` for a storage failure (logged; the request may not have been stored).
fn internal(error: EmulatorError, entity_id: &str) -> Response {
    tracing::error!(%error, "emulator storage failure");
    wire::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        codes::SYSTEM_ERROR,
        Some(entity_id),
    )
}

// ---------------------------------------------------------------------------------------------
// Field validation

fn text(name: &str, value: &str, min: usize, max: usize) -> Result<String, ParamError> {
    let len = value.chars().count();
    if len < min || len > max || value.chars().any(char::is_control) {
        return Err(ParamError::new(
            name,
            value,
            format!("{name} must be {min} to {max} characters without control characters"),
        ));
    }
    Ok(value.to_string())
}

fn parse_currency(value: &str) -> Result<Currency, ParamError> {
    Currency::from_code(value).map_err(|e| {
        ParamError::new(
            "currency",
            value,
            format!("{e} (an active ISO 4217 code in upper case, e.g. EUR)"),
        )
    })
}

/// OPP's `amount` format, `N10.N2`: `[0-9]{1,10}(\.[0-9]{2})?` (OPP API reference,
/// "Parameters"): up to 10 integer digits, and if there are decimals, exactly two.
pub(crate) fn is_n10_n2(value: &str) -> bool {
    let (integer, decimals) = match value.split_once('.') {
        Some((i, d)) => (i, Some(d)),
        None => (value, None),
    };
    (1..=10).contains(&integer.len())
        && integer.bytes().all(|b| b.is_ascii_digit())
        && decimals.is_none_or(|d| d.len() == 2 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// An amount as OPP formats it, `N10.N2`: the currency's exponent for 0- and 2-decimal
/// currencies (`1000`, `10.00`), two decimals for 3-decimal ones (`1.50` KWD), which is all
/// N10.N2 can hold (amounts arrive in that format, so nothing is lost).
pub(crate) fn opp_amount(amount: Money) -> String {
    let currency = amount.currency();
    match currency.exponent() {
        0..=2 => amount.to_decimal_string(),
        exponent => {
            let hundredths = amount.minor_units() / 10_i64.pow(u32::from(exponent) - 2);
            format!("{}.{:02}", hundredths / 100, hundredths % 100)
        }
    }
}

fn parse_amount(value: &str, currency: Currency) -> Result<Money, ParamError> {
    if !is_n10_n2(value) {
        return Err(ParamError::new(
            "amount",
            value,
            format!(
                "OPP's amount format is N10.N2: up to 10 digits, then optionally a dot and exactly two decimals (e.g. {})",
                example_amount(currency)
            ),
        ));
    }
    // N10.N2 always allows two decimals; a 0-decimal currency's `.00` carries no value.
    let value = match (currency.exponent(), value.strip_suffix(".00")) {
        (0, Some(integer)) => integer,
        _ => value,
    };
    Money::parse_positive(value, currency).map_err(|e| {
        ParamError::new(
            "amount",
            value,
            format!(
                "{e} (expected a positive decimal with at most {} fraction digits for {}, e.g. {})",
                currency.exponent(),
                currency.code(),
                example_amount(currency)
            ),
        )
    })
}

fn example_amount(currency: Currency) -> String {
    match currency.exponent() {
        0 => "1000".to_string(),
        _ => "10.00".to_string(),
    }
}

/// `customParameters[SANDBOX_TIMESTAMP]`: an RFC 3339 time, not in the future, as UTC.
fn parse_sandbox_timestamp(value: &str, now: NaiveDateTime) -> Result<NaiveDateTime, ParamError> {
    let parsed = DateTime::parse_from_rfc3339(value).map_err(|e| {
        ParamError::new(
            SANDBOX_TIMESTAMP,
            value,
            format!("not an RFC 3339 time ({e}); send e.g. 2026-01-31T09:30:00Z"),
        )
    })?;
    let utc = parsed.naive_utc();
    let utc = chrono::Timelike::with_nanosecond(&utc, 0).unwrap_or(utc);
    if utc > now {
        return Err(ParamError::new(
            SANDBOX_TIMESTAMP,
            value,
            "the sandbox timestamp only backdates: it must not be in the future",
        ));
    }
    Ok(utc)
}

fn parse_query_time(name: &str, value: &str) -> Result<NaiveDateTime, ParamError> {
    NaiveDateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S").map_err(|_| {
        ParamError::new(
            name,
            value,
            format!(
                "{name} must be a UTC time formatted YYYY-MM-DD HH:MM:SS, e.g. 2026-01-31 23:59:59"
            ),
        )
    })
}

fn parse_payment_types(value: &str) -> Result<Vec<PaymentType>, ParamError> {
    value
        .split(',')
        .map(|code| {
            PaymentType::from_str(code).map_err(|_| {
                ParamError::new(
                    "paymentTypes",
                    value,
                    format!(
                        "{code:?} is not an OPP payment type; send a comma-separated list of PA, DB, CP, RV, RF, RB, CB, CR"
                    ),
                )
            })
        })
        .collect()
}

/// `paymentMethods`: a comma-separated list of two-letter OPP payment methods (`CC`, `DC`,
/// `DD`, `VA`, ...). Returns whether it includes cards (`CC`), the only method the emulator has.
fn parse_payment_methods(value: &str) -> Result<bool, ParamError> {
    let mut includes_cards = false;
    for method in value.split(',') {
        if method.len() != 2 || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ParamError::new(
                "paymentMethods",
                value,
                format!(
                    "{method:?} is not an OPP payment method; send a comma-separated list of two-letter codes such as CC"
                ),
            ));
        }
        includes_cards |= method == CARD_METHOD;
    }
    Ok(includes_cards)
}

fn parse_bounded(name: &str, value: &str, min: u32, max: u32) -> Result<u32, ParamError> {
    match value.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) && value.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(ParamError::new(
            name,
            value,
            format!("{name} must be an integer from {min} to {max}"),
        )),
    }
}

/// Type and method filters shared by the query endpoints.
struct Filters {
    payment_types: Option<Vec<PaymentType>>,
    methods_match: bool,
}

impl Filters {
    fn read(c: &mut Collector, params: &Params) -> Filters {
        let payment_types = c
            .get(params, "paymentTypes")
            .and_then(|v| c.check(parse_payment_types(v)));
        let methods_match = c
            .get(params, "paymentMethods")
            .map_or(Some(true), |v| c.check(parse_payment_methods(v)))
            .unwrap_or(true);
        Filters {
            payment_types,
            methods_match,
        }
    }

    fn keeps(&self, tx: &Tx) -> bool {
        self.methods_match
            && self
                .payment_types
                .as_ref()
                .is_none_or(|types| types.contains(&tx.payment_type))
    }
}

// ---------------------------------------------------------------------------------------------
// POST /v1/payments

/// A validated initial payment request.
struct InitialPayment {
    payment_type: PaymentType,
    amount: Money,
    brand: String,
    card_number: String,
    holder: Option<String>,
    expiry_month: String,
    expiry_year: String,
    merchant_transaction_id: Option<String>,
    descriptor: Option<String>,
    created_at: NaiveDateTime,
    custom_parameters: Vec<(String, String)>,
}

impl InitialPayment {
    fn read(params: &Params, now: NaiveDateTime) -> Result<InitialPayment, Vec<ParamError>> {
        let mut c = Collector::default();

        let payment_type = c
            .require(params, "paymentType", "PA (preauthorization) or DB (debit)")
            .and_then(|v| {
                c.check(match PaymentType::from_str(v) {
                    Ok(t @ (PaymentType::Preauthorization | PaymentType::Debit)) => Ok(t),
                    Ok(_) => Err(ParamError::new(
                        "paymentType",
                        v,
                        "POST /v1/payments takes PA or DB; CP, RV, RF, RB, CB and CR go to POST /v1/payments/{id}",
                    )),
                    Err(_) => Err(ParamError::new(
                        "paymentType",
                        v,
                        "paymentType must be PA (preauthorization) or DB (debit)",
                    )),
                })
            });
        let currency = c
            .require(params, "currency", "an ISO 4217 code such as EUR")
            .and_then(|v| c.check(parse_currency(v)));
        let raw_amount = c.require(params, "amount", "a positive decimal such as 10.00");
        let amount = match (raw_amount, currency) {
            (Some(v), Some(cur)) => c.check(parse_amount(v, cur)),
            _ => None,
        };
        let brand = match c.get(params, "paymentBrand") {
            None => Some("VISA".to_string()),
            Some(v) if CARD_BRANDS.contains(&v) => Some(v.to_string()),
            Some(v) => {
                c.push(ParamError::new(
                    "paymentBrand",
                    v,
                    format!("paymentBrand must be one of {}", CARD_BRANDS.join(", ")),
                ));
                None
            }
        };
        let card_number = c
            .require(params, "card.number", "12 to 19 digits")
            .and_then(|v| {
                let ok = (12..=19).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit());
                c.check(if ok {
                    Ok(v.to_string())
                } else {
                    Err(ParamError::new(
                        "card.number",
                        v,
                        "card.number must be 12 to 19 digits without spaces or separators",
                    ))
                })
            });
        let holder = c
            .get(params, "card.holder")
            .and_then(|v| c.check(text("card.holder", v, 1, 128)));
        let expiry_month = c
            .require(params, "card.expiryMonth", "two digits, 01 to 12")
            .and_then(|v| {
                let ok = v.len() == 2
                    && v.bytes().all(|b| b.is_ascii_digit())
                    && matches!(v.parse::<u32>(), Ok(1..=12));
                c.check(if ok {
                    Ok(v.to_string())
                } else {
                    Err(ParamError::new(
                        "card.expiryMonth",
                        v,
                        "card.expiryMonth must be two digits, 01 to 12",
                    ))
                })
            });
        let expiry_year = c
            .require(params, "card.expiryYear", "four digits, e.g. 2034")
            .and_then(|v| {
                let ok = v.len() == 4 && v.bytes().all(|b| b.is_ascii_digit());
                c.check(if ok {
                    Ok(v.to_string())
                } else {
                    Err(ParamError::new(
                        "card.expiryYear",
                        v,
                        "card.expiryYear must be four digits, e.g. 2034",
                    ))
                })
            });
        if let Some(v) = c.get(params, "card.cvv") {
            let ok = (3..=4).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit());
            if !ok {
                c.push(ParamError::new(
                    "card.cvv",
                    v,
                    "card.cvv must be 3 or 4 digits",
                ));
            }
        }
        let merchant_transaction_id = c
            .get(params, "merchantTransactionId")
            .and_then(|v| c.check(text("merchantTransactionId", v, 8, 255)));
        let descriptor = c
            .get(params, "descriptor")
            .and_then(|v| c.check(text("descriptor", v, 1, 127)));
        let created_at = c
            .get(params, SANDBOX_TIMESTAMP)
            .map_or(Some(now), |v| c.check(parse_sandbox_timestamp(v, now)));
        let custom_parameters = c
            .check(params.custom_parameters(&[SANDBOX_TIMESTAMP]))
            .unwrap_or_default();

        if let (Some(month), Some(year), Some(at)) = (&expiry_month, &expiry_year, created_at) {
            if card_expired(month, year, at) {
                c.push(ParamError::new(
                    "card.expiryYear",
                    year,
                    format!(
                        "the card expired at the end of {month}/{year}, before the transaction time; use a later expiry"
                    ),
                ));
            }
        }

        match (
            payment_type,
            amount,
            brand,
            card_number,
            expiry_month,
            expiry_year,
            created_at,
        ) {
            (
                Some(payment_type),
                Some(amount),
                Some(brand),
                Some(card_number),
                Some(expiry_month),
                Some(expiry_year),
                Some(created_at),
            ) if c.errors.is_empty() => Ok(InitialPayment {
                payment_type,
                amount,
                brand,
                card_number,
                holder,
                expiry_month,
                expiry_year,
                merchant_transaction_id,
                descriptor,
                created_at,
                custom_parameters,
            }),
            _ => Err(c.errors),
        }
    }
}

/// Whether a card valid through the end of `month`/`year` has expired at `at`.
fn card_expired(month: &str, year: &str, at: NaiveDateTime) -> bool {
    let (Ok(month), Ok(year)) = (month.parse::<u32>(), year.parse::<i32>()) else {
        return true;
    };
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    match NaiveDate::from_ymd_opt(next_year, next_month, 1) {
        Some(first_invalid_day) => at.date() >= first_invalid_day,
        None => true,
    }
}

/// `POST /v1/payments`: an initial PA or DB card payment.
async fn create_payment(
    State(shared): State<Arc<Shared>>,
    pending: Option<axum::Extension<crate::faults::OppPending>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (credential, params) = match post_prelude(&shared, &headers, &body) {
        Ok(ok) => ok,
        Err(refusal) => return refusal.into_response(),
    };
    let entity_id = credential.entity_id.as_str();
    let request = match InitialPayment::read(&params, wire::now()) {
        Ok(r) => r,
        Err(errors) => return wire::parameter_errors(errors, Some(entity_id)),
    };

    let (succeeded, (code, description)) = match card::outcome(&request.card_number) {
        // The `opp_pending` sandbox fault: approved cards are answered pending.
        CardOutcome::Approve if pending.is_some() => (false, codes::TRANSACTION_PENDING),
        CardOutcome::Approve => (true, codes::TEST_MODE_SUCCESS),
        CardOutcome::DeclineInvalidCard => (false, codes::DECLINED_INVALID_CARD),
        CardOutcome::DeclineAmountExceedsCredit => (false, codes::DECLINED_INSUFFICIENT_FUNDS),
        CardOutcome::InvalidNumber => (false, codes::INVALID_CARD_NUMBER),
    };
    let number = &request.card_number;
    let id = wire::new_id();
    let tx = Tx {
        root_id: id.clone(),
        id,
        entity_id: entity_id.to_string(),
        referenced_id: None,
        payment_type: request.payment_type,
        payment_brand: request.brand,
        amount: request.amount,
        descriptor: request.descriptor.unwrap_or_else(wire::default_descriptor),
        merchant_transaction_id: request.merchant_transaction_id,
        succeeded,
        result_code: code.to_string(),
        result_description: description.to_string(),
        result_reason: None,
        card: Some(CardSummary {
            bin: number.chars().take(6).collect(),
            last4: number
                .chars()
                .skip(number.len().saturating_sub(4))
                .collect(),
            holder: request.holder,
            expiry_month: request.expiry_month,
            expiry_year: request.expiry_year,
        }),
        connector_tx_id: wire::new_connector_tx_id(),
        ndc: wire::new_ndc(Some(entity_id)),
        created_at: request.created_at,
        custom_parameters: request.custom_parameters,
    };
    if let Err(e) = shared.store.insert(&tx).await {
        return internal(e, entity_id);
    }
    let status = if succeeded || is_pending(&tx) {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let body = wire::transaction(&tx);
    shared.webhooks.opp_payment(entity_id, &body);
    wire::reply(status, body)
}

// ---------------------------------------------------------------------------------------------
// POST /v1/payments/{id}

/// A validated back-office request.
struct BackofficeRequest {
    payment_type: PaymentType,
    operation: Operation,
    amount: Option<Money>,
    merchant_transaction_id: Option<String>,
    /// The raw and parsed backdating time, when sent.
    sandbox_timestamp: Option<(String, NaiveDateTime)>,
    /// `customParameters[NAME]` other than the backdating one, echoed in answers.
    custom_parameters: Vec<(String, String)>,
}

impl BackofficeRequest {
    fn read(params: &Params, now: NaiveDateTime) -> Result<BackofficeRequest, Vec<ParamError>> {
        let mut c = Collector::default();
        let types = "CP (capture), RV (reversal), RF (refund), RB (rebill), CB (chargeback) or CR (chargeback reversal)";
        let payment_type = c.require(params, "paymentType", types).and_then(|v| {
            let parsed = PaymentType::from_str(v).ok();
            match parsed.and_then(|t| Operation::from_payment_type(t).map(|op| (t, op))) {
                Some(ok) => Some(ok),
                None => {
                    let message = if matches!(
                        parsed,
                        Some(PaymentType::Preauthorization | PaymentType::Debit)
                    ) {
                        format!("PA and DB are initial payments: send them to POST /v1/payments; here paymentType must be {types}")
                    } else {
                        format!("paymentType must be {types}")
                    };
                    c.push(ParamError::new("paymentType", v, message));
                    None
                }
            }
        });
        let raw_amount = c.get(params, "amount");
        let raw_currency = c.get(params, "currency");
        let amount = match (raw_amount, raw_currency) {
            (Some(a), Some(cur)) => c
                .check(parse_currency(cur))
                .and_then(|cur| c.check(parse_amount(a, cur))),
            (Some(_), None) => {
                c.push(ParamError::missing(
                    "currency",
                    "an ISO 4217 code must accompany amount",
                ));
                None
            }
            (None, Some(cur)) => {
                c.push(ParamError::new(
                    "amount",
                    "",
                    format!(
                        "amount is required when currency ({cur}) is given: send both or neither"
                    ),
                ));
                None
            }
            (None, None) => {
                if matches!(payment_type, Some((PaymentType::Rebill, _))) {
                    c.push(ParamError::missing(
                        "amount",
                        "RB (rebill) needs amount and currency",
                    ));
                }
                None
            }
        };
        let merchant_transaction_id = c
            .get(params, "merchantTransactionId")
            .and_then(|v| c.check(text("merchantTransactionId", v, 8, 255)));
        let custom_parameters = c
            .check(params.custom_parameters(&[SANDBOX_TIMESTAMP]))
            .unwrap_or_default();
        let sandbox_timestamp = match c.get(params, SANDBOX_TIMESTAMP) {
            None => Some(None),
            Some(v) => c
                .check(parse_sandbox_timestamp(v, now))
                .map(|t| Some((v.to_string(), t))),
        };
        match (payment_type, sandbox_timestamp) {
            (Some((payment_type, operation)), Some(sandbox_timestamp)) if c.errors.is_empty() => {
                Ok(BackofficeRequest {
                    payment_type,
                    operation,
                    amount,
                    merchant_transaction_id,
                    sandbox_timestamp,
                    custom_parameters,
                })
            }
            _ => Err(c.errors),
        }
    }
}

/// Builds the new back-office transaction from the ledger's verdict on the payment tree.
/// Refuses (nothing stored) a sandbox timestamp earlier than the referenced transaction.
fn build_backoffice(
    entity_id: &str,
    target: &Tx,
    tree: &[Tx],
    request: &BackofficeRequest,
    now: NaiveDateTime,
    pending: bool,
) -> Result<Tx, ParamError> {
    let created_at = match &request.sandbox_timestamp {
        Some((raw, t)) if *t < target.created_at => {
            return Err(ParamError::new(
                SANDBOX_TIMESTAMP,
                raw,
                format!(
                    "must not be earlier than the referenced transaction ({})",
                    wire::opp_time(target.created_at)
                ),
            ));
        }
        Some((_, t)) => *t,
        None => now.max(target.created_at),
    };
    let records: Vec<_> = tree.iter().map(Tx::record).collect();
    let verdict = ledger::evaluate(
        request.operation,
        &target.record(),
        &records,
        request.amount,
    );
    let (amount, succeeded, code, description, reason) = match verdict {
        // The `opp_pending` sandbox fault: accepted, answered pending, not counted yet.
        Ok(amount) if pending => (
            amount,
            false,
            codes::TRANSACTION_PENDING.0,
            codes::TRANSACTION_PENDING.1,
            None,
        ),
        Ok(amount) => (
            amount,
            true,
            codes::TEST_MODE_SUCCESS.0,
            codes::TEST_MODE_SUCCESS.1,
            None,
        ),
        Err(rejection) => (
            request
                .amount
                .unwrap_or_else(|| Money::zero(target.amount.currency())),
            false,
            rejection.code,
            rejection.description,
            Some(rejection.reason),
        ),
    };
    Ok(Tx {
        id: wire::new_id(),
        entity_id: entity_id.to_string(),
        root_id: target.root_id.clone(),
        referenced_id: Some(target.id.clone()),
        payment_type: request.payment_type,
        payment_brand: target.payment_brand.clone(),
        amount,
        descriptor: wire::default_descriptor(),
        merchant_transaction_id: request.merchant_transaction_id.clone(),
        succeeded,
        result_code: code.to_string(),
        result_description: description.to_string(),
        result_reason: reason,
        card: None,
        connector_tx_id: wire::new_connector_tx_id(),
        ndc: wire::new_ndc(Some(entity_id)),
        created_at,
        custom_parameters: request.custom_parameters.clone(),
    })
}

/// `POST /v1/payments/{id}`: capture, reversal, refund, rebill, chargeback or chargeback
/// reversal of transaction `{id}`.
async fn backoffice(
    State(shared): State<Arc<Shared>>,
    pending: Option<axum::Extension<crate::faults::OppPending>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (credential, params) = match post_prelude(&shared, &headers, &body) {
        Ok(ok) => ok,
        Err(refusal) => return refusal.into_response(),
    };
    let entity_id = credential.entity_id.as_str();
    let id = path_id(path);
    let now = wire::now();
    let request = match BackofficeRequest::read(&params, now) {
        Ok(r) => r,
        Err(errors) => return wire::parameter_errors(errors, Some(entity_id)),
    };
    let not_found = || {
        wire::error(
            StatusCode::BAD_REQUEST,
            codes::REFERENCE_NOT_EXISTING,
            Some(entity_id),
        )
    };
    if TransactionId::parse(&id).is_err() {
        return not_found();
    }
    let outcome = shared
        .store
        .backoffice(entity_id, &id, |target, tree| {
            build_backoffice(entity_id, target, tree, &request, now, pending.is_some())
        })
        .await;
    match outcome {
        Err(e) => internal(e, entity_id),
        Ok(None) => not_found(),
        Ok(Some(Err(error))) => wire::parameter_errors(vec![error], Some(entity_id)),
        Ok(Some(Ok(tx))) => {
            let status = if tx.succeeded || is_pending(&tx) {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            };
            let body = wire::transaction(&tx);
            shared.webhooks.opp_payment(entity_id, &body);
            wire::reply(status, body)
        }
    }
}

/// Whether `tx` is in OPP's pending group (`^(000\.200)`): accepted, its outcome not known
/// yet. OPP answers it with HTTP 200, the result code saying what it is (OPP "Result codes":
/// success is read from the code, not from the HTTP status).
fn is_pending(tx: &Tx) -> bool {
    tx.result_code.starts_with("000.200")
}

/// Resolves pending transaction `id` (left by the `opp_pending` fault) to `result`:
/// `succeeded` (`000.600.000` "transaction succeeded due to external update", OPP's code for a
/// transaction updated after the fact) or `declined` (`800.100.100` "transaction declined for
/// unknown reason"), then sends the `PAYMENT` webhook notification OPP sends "when a payment is
/// created or updated" (OPP "Webhooks", payload). A back-office operation succeeds only if
/// OPP's rules still allow it on the payment as it is now (something else may have moved
/// meanwhile); otherwise 409 and it stays pending. Answers the transaction as
/// `GET /v1/query/{id}` does.
///
/// # Errors
/// 400 for another `result`, 404 for an unknown id, 409 when it is not pending or its
/// operation is no longer allowed, 500 when storage fails.
pub(crate) async fn resolve_pending(
    store: &Store,
    webhooks: &crate::webhooks::Webhooks,
    id: &str,
    result: &str,
) -> Result<Value, (StatusCode, String)> {
    let succeed = match result {
        "succeeded" => true,
        "declined" => false,
        _ => {
            return Err((
                StatusCode::BAD_REQUEST,
                "result must be succeeded or declined".into(),
            ))
        }
    };
    let settled = store
        .settle(id, |tx, target, tree| {
            if !is_pending(tx) {
                return Err(format!(
                    "transaction {id} is not pending (result {} {})",
                    tx.result_code, tx.result_description
                ));
            }
            let mut settled = tx.clone();
            let (code, description) = if !succeed {
                codes::DECLINED_UNKNOWN_REASON
            } else {
                if let Some(op) = Operation::from_payment_type(tx.payment_type) {
                    let others: Vec<_> = tree
                        .iter()
                        .filter(|t| t.id != tx.id)
                        .map(Tx::record)
                        .collect();
                    let requested = (op != Operation::Reversal).then_some(tx.amount);
                    if let Err(rejection) =
                        ledger::evaluate(op, &target.record(), &others, requested)
                    {
                        return Err(format!(
                            "transaction {id} cannot succeed now: {} {} ({}); it stays pending",
                            rejection.code, rejection.description, rejection.reason
                        ));
                    }
                }
                codes::SUCCEEDED_EXTERNAL_UPDATE
            };
            settled.succeeded = succeed;
            settled.result_code = code.to_string();
            settled.result_description = description.to_string();
            Ok(settled)
        })
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match settled {
        None => Err((StatusCode::NOT_FOUND, format!("no transaction {id}"))),
        Some(Err(message)) => Err((StatusCode::CONFLICT, message)),
        Some(Ok(tx)) => {
            tracing::warn!(transaction = id, result, "sandbox OPP transaction resolved");
            let body = wire::transaction(&tx);
            webhooks.opp_payment(&tx.entity_id, &body);
            Ok(body)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GET /v1/query/{id}

fn cannot_find(entity_id: &str) -> Response {
    wire::error(
        StatusCode::NOT_FOUND,
        codes::CANNOT_FIND_TRANSACTION,
        Some(entity_id),
    )
}

/// `GET /v1/query/{id}`: one transaction, or with `includeLinkedTransactions=true` every
/// transaction of its payment (oldest first), optionally filtered.
async fn query_by_id(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let (credential, params) = match get_prelude(&shared, &headers, query.as_deref()) {
        Ok(ok) => ok,
        Err(refusal) => return refusal.into_response(),
    };
    let entity_id = credential.entity_id.as_str();
    let id = path_id(path);
    let mut c = Collector::default();
    let linked = match c.get(&params, "includeLinkedTransactions") {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            c.push(ParamError::new(
                "includeLinkedTransactions",
                v,
                "includeLinkedTransactions must be true or false",
            ));
            false
        }
    };
    let filters = Filters::read(&mut c, &params);
    if !c.errors.is_empty() {
        return wire::parameter_errors(c.errors, Some(entity_id));
    }
    if TransactionId::parse(&id).is_err() {
        return cannot_find(entity_id);
    }
    if !linked {
        return match shared.store.find(entity_id, &id).await {
            Err(e) => internal(e, entity_id),
            Ok(None) => cannot_find(entity_id),
            Ok(Some(tx)) => wire::reply(StatusCode::OK, wire::transaction(&tx)),
        };
    }
    let tree = match shared.store.with_tree(entity_id, &id).await {
        Err(e) => return internal(e, entity_id),
        Ok(None) => return cannot_find(entity_id),
        Ok(Some((_, tree))) => tree,
    };
    let kept: Vec<Tx> = tree.into_iter().filter(|t| filters.keeps(t)).collect();
    wire::list_reply(wire::ListKey::Payments, &kept, None, entity_id)
}

// ---------------------------------------------------------------------------------------------
// GET /v1/query

/// `GET /v1/query`: by `merchantTransactionId` (every match, oldest first; 404 when none), or
/// the `date.from`/`date.to` report (paged, oldest first).
async fn query(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let (credential, params) = match get_prelude(&shared, &headers, query.as_deref()) {
        Ok(ok) => ok,
        Err(refusal) => return refusal.into_response(),
    };
    let entity_id = credential.entity_id.as_str();
    let mut c = Collector::default();
    let merchant_transaction_id = c.get(&params, "merchantTransactionId");
    let raw_from = c.get(&params, "date.from");
    let raw_to = c.get(&params, "date.to");
    let from = raw_from.and_then(|v| c.check(parse_query_time("date.from", v)));
    let to = raw_to.and_then(|v| c.check(parse_query_time("date.to", v)));
    let filters = Filters::read(&mut c, &params);
    let limit = c.get(&params, "limit").map_or(Some(MAX_LIMIT), |v| {
        c.check(parse_bounded("limit", v, 1, MAX_LIMIT))
    });
    let page_no = c.get(&params, "pageNo").map_or(Some(1), |v| {
        c.check(parse_bounded("pageNo", v, 1, u32::MAX))
    });

    if merchant_transaction_id.is_none() {
        match (raw_from, raw_to) {
            (None, None) => c.push(ParamError::missing(
                "date.from",
                "send merchantTransactionId, or date.from and date.to (UTC, YYYY-MM-DD HH:MM:SS)",
            )),
            (None, Some(_)) => c.push(ParamError::missing(
                "date.from",
                "date.to needs date.from (UTC, YYYY-MM-DD HH:MM:SS)",
            )),
            (Some(_), None) => c.push(ParamError::missing(
                "date.to",
                "date.from needs date.to (UTC, YYYY-MM-DD HH:MM:SS)",
            )),
            (Some(_), Some(_)) => {}
        }
    }
    if let (Some(f), Some(t), Some(raw)) = (from, to, raw_from) {
        if f > t {
            c.push(ParamError::new(
                "date.from",
                raw,
                "date.from must not be later than date.to",
            ));
        }
    }
    if !c.errors.is_empty() {
        return wire::parameter_errors(c.errors, Some(entity_id));
    }

    let filter = Filter {
        merchant_transaction_id: merchant_transaction_id.map(str::to_string),
        from,
        to,
        payment_types: filters.payment_types,
        methods_match: filters.methods_match,
    };

    if filter.merchant_transaction_id.is_some() {
        return match shared.store.search(entity_id, &filter, None).await {
            Err(e) => internal(e, entity_id),
            Ok((txs, _)) if txs.is_empty() => cannot_find(entity_id),
            Ok((txs, _)) => wire::list_reply(wire::ListKey::Payments, &txs, None, entity_id),
        };
    }

    let page = Page {
        limit: limit.unwrap_or(MAX_LIMIT),
        page_no: page_no.unwrap_or(1),
    };
    match shared.store.search(entity_id, &filter, Some(page)).await {
        Err(e) => internal(e, entity_id),
        Ok((txs, total)) => wire::list_reply(
            wire::ListKey::Records,
            &txs,
            Some(wire::Paging {
                page_no: page.page_no,
                limit: page.limit,
                total_count: total,
                total_pages: total.div_ceil(u64::from(page.limit)),
            }),
            entity_id,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn expiry() {
        assert!(!card_expired("05", "2034", t("2034-05-31 23:59:59")));
        assert!(card_expired("05", "2034", t("2034-06-01 00:00:00")));
        assert!(!card_expired("12", "2026", t("2026-12-31 00:00:00")));
        assert!(card_expired("12", "2026", t("2027-01-01 00:00:00")));
    }

    #[test]
    fn sandbox_timestamp() {
        let now = t("2026-11-21 14:03:22");
        assert_eq!(
            parse_sandbox_timestamp("2026-01-31T09:30:00.5+01:00", now).unwrap(),
            t("2026-01-31 08:30:00")
        );
        assert!(parse_sandbox_timestamp("2026-11-21T14:03:23Z", now).is_err());
        assert!(parse_sandbox_timestamp("2026-01-31 09:30", now).is_err());
    }

    #[test]
    fn methods_and_types() {
        assert!(parse_payment_methods("CC").unwrap());
        assert!(!parse_payment_methods("DD,VA").unwrap());
        assert!(parse_payment_methods("cc").is_err());
        assert_eq!(
            parse_payment_types("PA,CP").unwrap(),
            vec![PaymentType::Preauthorization, PaymentType::Capture]
        );
        assert!(parse_payment_types("PA,").is_err());
        assert!(parse_bounded("limit", "+5", 1, 100).is_err());
        assert_eq!(parse_bounded("limit", "100", 1, 100).unwrap(), 100);
        assert!(parse_bounded("limit", "101", 1, 100).is_err());
    }

    #[test]
    fn constant_time() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
