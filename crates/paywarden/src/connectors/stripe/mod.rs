//! The Stripe connector: a real HTTP client of Stripe's API (`https://api.stripe.com`; the base
//! URL is configurable so the offline default can point at the emulator).
//!
//! | operation | request |
//! |---|---|
//! | customers by email | `GET /v1/customers?email=&limit=100` |
//! | customer search | `GET /v1/customers/search?query=&limit=100` |
//! | one customer | `GET /v1/customers/{id}` |
//! | a customer's payments | `GET /v1/payment_intents?customer=&limit=&starting_after=` |
//! | one payment | `GET /v1/payment_intents/{id}` |
//! | one charge | `GET /v1/charges/{id}` |
//! | refund | `POST /v1/refunds` (form: `payment_intent`, `amount`, `reason`, `metadata[k]`) |
//! | a payment's refunds | `GET /v1/refunds?payment_intent=&limit=100&starting_after=` |
//! | demo seeding | `POST /v1/customers`, `/v1/payment_intents`, `/v1/products`, `/v1/prices`, `/v1/payment_links` |
//!
//! Every request carries `Authorization: Bearer <key>` and `Stripe-Version:`
//! [`STRIPE_API_VERSION`]; a POST carries `Idempotency-Key` when given. Bodies are Stripe's form
//! encoding with bracket nesting (`metadata[order_id]=42`, `line_items[0][price]=price_1`).
//! Responses' `Request-Id` and `Idempotent-Replayed` headers are read. Stripe's error JSON
//! (`{"error": {"type", "code", "message", "param", "decline_code"}}`) becomes a typed
//! [`StripeError`]. Amounts are integers in minor units (Stripe's `amount` already is) paired
//! with an ISO 4217 [`paywarden_domain::Currency`] (Stripe's `"usd"` is `USD`).
//!
//! The key is a [`StripeKey`]: test-mode keys only unless live mode is explicitly allowed; it
//! is never printed (Debug shows the prefix and the last four characters) and never appears in
//! an error message.

mod form;
pub mod model;
mod transformers;

#[cfg(test)]
mod provider_fixtures;

use std::{collections::BTreeMap, fmt, time::Duration};

use paywarden_domain::Money;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

use form::Form;
pub use model::{
    Charge, Customer, ListPage, PaymentIntent, PaymentIntentStatus, PaymentLink, Price, Product,
    Refund, RefundReason, RefundStatus, Replayed,
};
use transformers::{
    MappingError, WireCharge, WireCustomer, WireErrorEnvelope, WireList, WirePaymentIntent,
    WirePaymentLink, WirePrice, WireProduct, WireRefund, MISMATCHED_CURRENCIES,
};

/// The Stripe API version every request pins with the `Stripe-Version` header.
pub const STRIPE_API_VERSION: &str = "2024-06-20";

/// Stripe's production API host (test-mode keys work against it too).
pub const STRIPE_API_BASE: &str = "https://api.stripe.com";

/// The most objects a paging helper collects ([`StripeClient::all_payment_intents`],
/// [`StripeClient::refunds_for`]).
pub const MAX_PAGED_OBJECTS: usize = 1000;

/// How many times a request Stripe rate limits (HTTP 429) is sent again before
/// [`StripeError::RateLimited`].
pub const RATE_LIMIT_RETRIES: u32 = 2;

/// The longest wait before sending a rate-limited request again (a longer `Retry-After` is cut
/// to it; the caller is told to retry later instead).
pub const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(5);

/// Stripe's page size limit (`limit` is 1 to 100).
const MAX_PAGE_SIZE: u8 = 100;

/// The payment method [`StripeClient::create_payment_intent`] confirms with: Stripe's test-mode
/// Visa card.
pub const DEMO_PAYMENT_METHOD: &str = "pm_card_visa";

const KEY_PREFIXES: [&str; 4] = ["sk_test_", "rk_test_", "sk_live_", "rk_live_"];

/// A Stripe secret (`sk_`) or restricted (`rk_`) API key.
///
/// Test-mode keys (`sk_test_`, `rk_test_`) are always accepted; live-mode keys (`sk_live_`,
/// `rk_live_`) only when the caller explicitly allows live mode. Debug shows the prefix and the
/// last four characters only (`sk_test_…0000`), like Stripe's dashboard.
#[derive(Clone)]
pub struct StripeKey {
    secret: SecretString,
    prefix: &'static str,
    last4: String,
}

impl StripeKey {
    /// Parses a key.
    ///
    /// # Errors
    /// [`StripeError::InvalidKey`] when `raw` is not `sk_test_`/`rk_test_`/`sk_live_`/`rk_live_`
    /// followed by at least 8 characters of `[A-Za-z0-9_]` (e.g. a publishable `pk_` key,
    /// surrounding whitespace); [`StripeError::LiveKeyRefused`] for a live-mode key when
    /// `allow_live` is false. Neither message contains the key.
    pub fn parse(raw: &str, allow_live: bool) -> Result<Self, StripeError> {
        let Some(prefix) = KEY_PREFIXES.iter().copied().find(|p| raw.starts_with(p)) else {
            let reason = if raw.starts_with("pk_") {
                "this is a publishable key (pk_…); paywarden needs a secret (sk_test_…) or \
                 restricted (rk_test_…) key"
            } else if raw.trim() != raw {
                "the key has surrounding whitespace"
            } else {
                "expected a secret (sk_test_…) or restricted (rk_test_…) Stripe key"
            };
            return Err(StripeError::InvalidKey {
                reason: reason.into(),
            });
        };
        let rest = &raw[prefix.len()..];
        if rest.len() < 8 || !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(StripeError::InvalidKey {
                reason: format!(
                    "after `{prefix}` a Stripe key has at least 8 characters of A-Z, a-z, 0-9 \
                     or `_`"
                ),
            });
        }
        if prefix.contains("_live_") && !allow_live {
            return Err(StripeError::LiveKeyRefused { prefix });
        }
        let last4 = rest[rest.len() - 4..].to_string();
        Ok(Self {
            secret: SecretString::from(raw.to_string()),
            prefix,
            last4,
        })
    }

    /// Whether this is a restricted key (`rk_…`), whose permissions Stripe limits per resource
    /// (a missing permission is [`StripeError::PermissionDenied`]).
    pub fn is_restricted(&self) -> bool {
        self.prefix.starts_with("rk_")
    }

    /// Whether this is a live-mode key (real money).
    pub fn is_live(&self) -> bool {
        self.prefix.contains("_live_")
    }

    /// The non-secret prefix, e.g. `"sk_test_"`.
    pub fn prefix(&self) -> &'static str {
        self.prefix
    }

    fn expose(&self) -> &str {
        self.secret.expose_secret()
    }
}

impl fmt::Debug for StripeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StripeKey({}…{})", self.prefix, self.last4)
    }
}

/// Stripe's `error.type`. Stripe documents exactly these four.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StripeErrorType {
    /// `api_error`: a problem on Stripe's side.
    ApiError,
    /// `card_error`: the card cannot be charged (declines; see `decline_code`).
    CardError,
    /// `idempotency_error`: an `Idempotency-Key` was reused with different parameters or
    /// endpoint.
    IdempotencyError,
    /// `invalid_request_error`: invalid parameters or a request not allowed in this state.
    InvalidRequestError,
}

impl StripeErrorType {
    /// Stripe's wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiError => "api_error",
            Self::CardError => "card_error",
            Self::IdempotencyError => "idempotency_error",
            Self::InvalidRequestError => "invalid_request_error",
        }
    }

    /// Parses Stripe's wire value; `None` for anything undocumented.
    pub fn from_wire(raw: &str) -> Option<Self> {
        Some(match raw {
            "api_error" => Self::ApiError,
            "card_error" => Self::CardError,
            "idempotency_error" => Self::IdempotencyError,
            "invalid_request_error" => Self::InvalidRequestError,
            _ => return None,
        })
    }
}

impl fmt::Display for StripeErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn describe_code(code: &Option<String>, param: &Option<String>) -> String {
    match (code, param) {
        (Some(c), Some(p)) => format!(" ({c}, param `{p}`)"),
        (Some(c), None) => format!(" ({c})"),
        (None, Some(p)) => format!(" (param `{p}`)"),
        (None, None) => String::new(),
    }
}

/// Errors of the Stripe connector. No message ever contains the API key (Stripe's own messages
/// are scrubbed of it before they are stored here).
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe answered with its error JSON (HTTP 400, 402, 409, 429, 5xx, ...).
    #[error("Stripe refused the request with HTTP {status} {kind}{}: {message}", describe_code(.code, .param))]
    Api {
        /// HTTP status.
        status: u16,
        /// Stripe `error.type`.
        kind: StripeErrorType,
        /// Stripe `error.code` (e.g. `amount_too_large`, `charge_already_refunded`); Stripe adds
        /// codes over time, so it stays a string.
        code: Option<String>,
        /// Stripe `error.message` (human readable).
        message: String,
        /// Stripe `error.param`: the offending request parameter.
        param: Option<String>,
        /// Stripe `error.decline_code` for card declines (e.g. `insufficient_funds`).
        decline_code: Option<String>,
        /// The `Request-Id` response header.
        request_id: Option<String>,
    },
    /// Stripe refused the API key (HTTP 401).
    #[error("Stripe refused the API key (HTTP 401): {message}")]
    Authentication {
        /// Stripe `error.message` (scrubbed of the key).
        message: String,
        /// The `Request-Id` response header.
        request_id: Option<String>,
    },
    /// The (restricted) key lacks a permission for this request (HTTP 403).
    #[error("Stripe refused the request for lack of permission (HTTP 403): {message}")]
    PermissionDenied {
        /// Stripe `error.message` (scrubbed of the key).
        message: String,
        /// The `Request-Id` response header.
        request_id: Option<String>,
    },
    /// The object does not exist (Stripe `error.code` `resource_missing`, HTTP 404 for the
    /// object in the path, HTTP 400 for one named by a parameter), or the customer is deleted.
    #[error("Stripe found no such object: {message}")]
    NotFound {
        /// Stripe `error.message`, e.g. `No such payment_intent: 'pi_x'`.
        message: String,
        /// Stripe `error.param`: which parameter named the missing object.
        param: Option<String>,
        /// The `Request-Id` response header.
        request_id: Option<String>,
    },
    /// Stripe rate limited the request (HTTP 429) every time it was sent ([`RATE_LIMIT_RETRIES`]
    /// retries, waiting as `Retry-After` says, else backing off). Stripe did not process it:
    /// nothing was done, and the same request can be sent again later.
    #[error("Stripe rate limited the request (HTTP 429) {attempts} times; it was not processed: {message}")]
    RateLimited {
        /// How many times it was sent.
        attempts: u32,
        /// Stripe `error.message`.
        message: String,
        /// The last `Retry-After`, if Stripe sent one.
        retry_after: Option<Duration>,
        /// The `Request-Id` response header.
        request_id: Option<String>,
    },
    /// Stripe did not answer within the configured timeout; the outcome of a write is unknown
    /// (retry it with the same `Idempotency-Key`).
    #[error("Stripe did not answer within {0:?}; the outcome is unknown")]
    Timeout(Duration),
    /// Stripe could not be reached at all (connection refused, DNS, TLS): nothing was sent.
    #[error("Stripe could not be reached at {base_url}: {reason}")]
    Unreachable {
        /// The configured base URL.
        base_url: String,
        /// What failed.
        reason: String,
    },
    /// The connection failed after it was made (reset, closed, a body that could not be read):
    /// the request may have reached Stripe, so the outcome of a write is unknown.
    #[error("the connection to Stripe at {base_url} failed after the request may have reached it: {reason}")]
    ConnectionLost {
        /// The configured base URL.
        base_url: String,
        /// What failed.
        reason: String,
    },
    /// Stripe answered with something that is not its documented JSON (or a value outside a
    /// documented closed set, e.g. an unknown PaymentIntent status).
    #[error("Stripe answered HTTP {status} with a body paywarden cannot read: {reason}")]
    UnexpectedResponse {
        /// HTTP status.
        status: u16,
        /// What was wrong.
        reason: String,
        /// The `Request-Id` response header.
        request_id: Option<String>,
    },
    /// A request paywarden refuses to send (checked before any network traffic).
    #[error("invalid Stripe request: {reason}")]
    InvalidArgument {
        /// What was wrong.
        reason: String,
    },
    /// A live-mode key was given while live mode is not allowed.
    #[error(
        "REFUSED A LIVE STRIPE KEY ({prefix}…): live-mode keys move real money and paywarden \
         only accepts them when live mode is explicitly allowed (StripeKey::parse with \
         allow_live = true, i.e. the operator's explicit live-mode opt-in). Use a test-mode key \
         (sk_test_… or rk_test_…) otherwise."
    )]
    LiveKeyRefused {
        /// `sk_live_` or `rk_live_`.
        prefix: &'static str,
    },
    /// The string is not a usable Stripe secret or restricted key.
    #[error("not a usable Stripe API key: {reason}")]
    InvalidKey {
        /// Why (never contains the key).
        reason: String,
    },
}

/// A refund of a PaymentIntent (`POST /v1/refunds`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// Stripe `payment_intent`: the PaymentIntent id to refund.
    pub payment_intent: String,
    /// Stripe `amount`: minor units in the PaymentIntent's currency (Stripe takes no currency
    /// on a refund); `None` refunds everything not yet refunded. Must be positive.
    pub amount: Option<i64>,
    /// Stripe `reason`: only `duplicate`, `fraudulent` or `requested_by_customer`.
    pub reason: Option<RefundReason>,
    /// Stripe `metadata` (at most 50 keys of at most 40 characters without `[`/`]`, values of
    /// at most 500 characters).
    pub metadata: BTreeMap<String, String>,
}

/// One HTTP answer, before decoding.
struct Answer {
    status: u16,
    body: String,
    request_id: Option<String>,
    replayed: bool,
}

/// An HTTP client of Stripe's API.
#[derive(Debug, Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base_url: String,
    key: StripeKey,
    timeout: Duration,
}

impl StripeClient {
    /// A client of the Stripe API at `base_url` (e.g. [`STRIPE_API_BASE`]; no trailing slash
    /// needed) authenticating with `key`, whose requests time out after `timeout`.
    ///
    /// # Errors
    /// [`StripeError::Unreachable`] when the HTTP client cannot be built (TLS set-up).
    pub fn new(base_url: &str, key: StripeKey, timeout: Duration) -> Result<Self, StripeError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("paywarden/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StripeError::Unreachable {
                base_url: base_url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            key,
            timeout,
        })
    }

    /// The configured base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The timeout of one request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The key (redacted in Debug).
    pub fn key(&self) -> &StripeKey {
        &self.key
    }

    /// `GET /v1/customers?email=&limit=100`: customers whose `email` equals `email` exactly
    /// (Stripe's filter is case-sensitive), newest first, at most 100.
    ///
    /// # Errors
    /// [`StripeError::InvalidArgument`] for an empty email (refused before sending); any other
    /// [`StripeError`].
    pub async fn customers_by_email(&self, email: &str) -> Result<Vec<Customer>, StripeError> {
        non_empty("email", email)?;
        let query = vec![
            ("email".to_string(), email.to_string()),
            ("limit".into(), MAX_PAGE_SIZE.to_string()),
        ];
        let answer = self.get("/v1/customers", &query).await?;
        let list: WireList<WireCustomer> = decode(&answer)?;
        map_customers(&answer, list).map(|page| page.data)
    }

    /// `GET /v1/customers/search?query=&limit=100`: customers matching a Stripe search query
    /// (Stripe's search language, e.g. `email:'jane@example.com'` or `name~'Jane'`; search is
    /// eventually consistent, new customers can take a minute to appear).
    ///
    /// # Errors
    /// [`StripeError::InvalidArgument`] for an empty query; a malformed query is
    /// [`StripeError::Api`] (`invalid_request_error`); any other [`StripeError`].
    pub async fn search_customers(&self, query: &str) -> Result<ListPage<Customer>, StripeError> {
        non_empty("query", query)?;
        let query = vec![
            ("query".to_string(), query.to_string()),
            ("limit".into(), MAX_PAGE_SIZE.to_string()),
        ];
        let answer = self.get("/v1/customers/search", &query).await?;
        let list: WireList<WireCustomer> = decode(&answer)?;
        map_customers(&answer, list)
    }

    /// `GET /v1/customers/{id}`.
    ///
    /// # Errors
    /// [`StripeError::InvalidArgument`] for an empty or dots-only id (refused before sending);
    /// [`StripeError::NotFound`] for an unknown or deleted customer; any other [`StripeError`].
    pub async fn customer(&self, id: &str) -> Result<Customer, StripeError> {
        let answer = self
            .get(&format!("/v1/customers/{}", path_segment(id)?), &[])
            .await?;
        let wire: WireCustomer = decode(&answer)?;
        match map(&answer, wire.into_model())? {
            Some(customer) => Ok(customer),
            None => Err(StripeError::NotFound {
                message: format!("customer {id} has been deleted"),
                param: Some("id".into()),
                request_id: answer.request_id,
            }),
        }
    }

    /// `GET /v1/payment_intents?customer=&limit=&starting_after=`: one page of PaymentIntents,
    /// newest first; all of the account's when `customer` is `None`. `limit` is 1 to 100;
    /// `starting_after` is the id of the last object of the previous page.
    ///
    /// # Errors
    /// [`StripeError::InvalidArgument`] for a `limit` outside 1..=100 or an empty `customer`;
    /// any other [`StripeError`].
    pub async fn payment_intents(
        &self,
        customer: Option<&str>,
        limit: u8,
        starting_after: Option<&str>,
    ) -> Result<ListPage<PaymentIntent>, StripeError> {
        if limit == 0 || limit > MAX_PAGE_SIZE {
            return Err(invalid(format!(
                "limit {limit} is outside Stripe's 1..=100"
            )));
        }
        let mut query = Vec::new();
        if let Some(c) = customer {
            non_empty("customer", c)?;
            query.push(("customer".to_string(), c.to_string()));
        }
        query.push(("limit".into(), limit.to_string()));
        if let Some(s) = starting_after {
            query.push(("starting_after".into(), s.to_string()));
        }
        let answer = self.get("/v1/payment_intents", &query).await?;
        let list: WireList<WirePaymentIntent> = decode(&answer)?;
        map_list(&answer, list, WirePaymentIntent::into_model)
    }

    /// Every PaymentIntent of `customer` (all of the account's when `None`), newest first,
    /// paging with `starting_after` 100 at a time up to [`MAX_PAGED_OBJECTS`]; `has_more` is
    /// `true` when the cap cut the list short.
    ///
    /// # Errors
    /// Any [`StripeError`] of any page.
    pub async fn all_payment_intents(
        &self,
        customer: Option<&str>,
    ) -> Result<ListPage<PaymentIntent>, StripeError> {
        let mut data: Vec<PaymentIntent> = Vec::new();
        loop {
            let after = data.last().map(|p| p.id.clone());
            let page = self
                .payment_intents(customer, MAX_PAGE_SIZE, after.as_deref())
                .await?;
            let empty = page.data.is_empty();
            data.extend(page.data);
            if let Some(done) = cap(&mut data, page.has_more, empty) {
                return Ok(done);
            }
        }
    }

    /// `GET /v1/payment_intents/{id}`.
    ///
    /// # Errors
    /// [`StripeError::InvalidArgument`] for an empty or dots-only id (refused before sending);
    /// [`StripeError::NotFound`] for an unknown id; any other [`StripeError`].
    pub async fn payment_intent(&self, id: &str) -> Result<PaymentIntent, StripeError> {
        let answer = self
            .get(&format!("/v1/payment_intents/{}", path_segment(id)?), &[])
            .await?;
        let wire: WirePaymentIntent = decode(&answer)?;
        map(&answer, wire.into_model())
    }

    /// `GET /v1/charges/{id}`.
    ///
    /// # Errors
    /// [`StripeError::InvalidArgument`] for an empty or dots-only id (refused before sending);
    /// [`StripeError::NotFound`] for an unknown id; any other [`StripeError`].
    pub async fn charge(&self, id: &str) -> Result<Charge, StripeError> {
        let answer = self
            .get(&format!("/v1/charges/{}", path_segment(id)?), &[])
            .await?;
        let wire: WireCharge = decode(&answer)?;
        map(&answer, wire.into_model())
    }

    /// `POST /v1/refunds` with `Idempotency-Key: idempotency_key` (form: `payment_intent`,
    /// `amount`, `reason`, `metadata[k]`). The [`Replayed`] says whether Stripe returned the
    /// stored result of an earlier request with the same key.
    ///
    /// # Errors
    /// [`StripeError::InvalidArgument`] (checked before sending) for an empty
    /// `payment_intent`, a non-positive amount, a reason Stripe does not accept in requests, bad metadata or an empty/over-long
    /// idempotency key; [`StripeError::NotFound`] for an unknown PaymentIntent;
    /// [`StripeError::Api`] for what Stripe refuses (e.g. `charge_already_refunded`,
    /// `amount_too_large`, `idempotency_error`); any other [`StripeError`].
    pub async fn create_refund(
        &self,
        request: &RefundRequest,
        idempotency_key: &str,
    ) -> Result<(Refund, Replayed), StripeError> {
        non_empty("payment_intent", &request.payment_intent)?;
        let mut form = Form::new();
        form.push("payment_intent", request.payment_intent.clone());
        if let Some(amount) = request.amount {
            if amount <= 0 {
                return Err(invalid(format!(
                    "refund amount {amount} must be a positive number of minor units"
                )));
            }
            form.push("amount", amount.to_string());
        }
        if let Some(reason) = &request.reason {
            if !reason.is_requestable() {
                return Err(invalid(format!(
                    "refund reason {:?} cannot be requested; use duplicate, fraudulent or \
                     requested_by_customer",
                    reason.as_str()
                )));
            }
            form.push("reason", reason.as_str());
        }
        push_metadata(&mut form, &request.metadata)?;
        let answer = self
            .post("/v1/refunds", &form, Some(idempotency_key))
            .await?;
        let wire: WireRefund = decode(&answer)?;
        let refund = map(&answer, wire.into_model())?;
        Ok((
            refund,
            Replayed {
                replayed: answer.replayed,
                request_id: answer.request_id,
            },
        ))
    }

    /// `GET /v1/refunds/{id}`: one refund, with its current `status`.
    ///
    /// # Errors
    /// [`StripeError::InvalidArgument`] for an empty or dots-only id (refused before sending);
    /// [`StripeError::NotFound`] for an unknown id; any other [`StripeError`].
    pub async fn refund(&self, id: &str) -> Result<Refund, StripeError> {
        let answer = self
            .get(&format!("/v1/refunds/{}", path_segment(id)?), &[])
            .await?;
        let wire: WireRefund = decode(&answer)?;
        map(&answer, wire.into_model())
    }

    /// `GET /v1/refunds?payment_intent=&limit=100&starting_after=`: every refund of a
    /// PaymentIntent, newest first, up to [`MAX_PAGED_OBJECTS`] (`has_more` is `true` when the
    /// cap cut the list short).
    ///
    /// # Errors
    /// [`StripeError::InvalidArgument`] for an empty `payment_intent`; any other
    /// [`StripeError`] of any page.
    pub async fn refunds_for(&self, payment_intent: &str) -> Result<ListPage<Refund>, StripeError> {
        non_empty("payment_intent", payment_intent)?;
        let mut data: Vec<Refund> = Vec::new();
        loop {
            let mut query = vec![
                ("payment_intent".to_string(), payment_intent.to_string()),
                ("limit".into(), MAX_PAGE_SIZE.to_string()),
            ];
            if let Some(last) = data.last() {
                query.push(("starting_after".into(), last.id.clone()));
            }
            let answer = self.get("/v1/refunds", &query).await?;
            let list: WireList<WireRefund> = decode(&answer)?;
            let page = map_list(&answer, list, WireRefund::into_model)?;
            let empty = page.data.is_empty();
            data.extend(page.data);
            if let Some(done) = cap(&mut data, page.has_more, empty) {
                return Ok(done);
            }
        }
    }

    /// `POST /v1/customers` (form: `email`, `name`, `metadata[k]`), for demo seeding.
    ///
    /// # Errors
    /// [`StripeError::InvalidArgument`] for bad metadata; any other [`StripeError`].
    pub async fn create_customer(
        &self,
        email: &str,
        name: Option<&str>,
        metadata: &BTreeMap<String, String>,
        idempotency_key: Option<&str>,
    ) -> Result<Customer, StripeError> {
        let mut form = Form::new();
        form.push("email", email);
        if let Some(n) = name {
            form.push("name", n);
        }
        push_metadata(&mut form, metadata)?;
        let answer = self.post("/v1/customers", &form, idempotency_key).await?;
        let wire: WireCustomer = decode(&answer)?;
        map(&answer, wire.into_model())?.ok_or_else(|| StripeError::UnexpectedResponse {
            status: answer.status,
            reason: "a newly created customer came back deleted".into(),
            request_id: answer.request_id.clone(),
        })
    }

    /// `POST /v1/payment_intents` confirmed at once with Stripe's test card, for demo seeding
    /// (form: `customer`, `amount` (minor units), `currency` (lower case), `confirm=true`,
    /// `payment_method=pm_card_visa`, `automatic_payment_methods[enabled]=true`,
    /// `automatic_payment_methods[allow_redirects]=never`, `metadata[k]`).
    ///
    /// # Errors
    /// [`StripeError::InvalidArgument`] for a zero amount, an empty customer, a currency whose
    /// Stripe unit differs from ISO 4217 (ISK, MGA, UGX) or bad metadata; [`StripeError::Api`]
    /// with `card_error` for a decline; any other [`StripeError`].
    pub async fn create_payment_intent(
        &self,
        customer: &str,
        amount: Money,
        metadata: &BTreeMap<String, String>,
        idempotency_key: Option<&str>,
    ) -> Result<PaymentIntent, StripeError> {
        if amount.is_zero() {
            return Err(invalid("a payment amount must be positive".into()));
        }
        non_empty("customer", customer)?;
        let mut form = Form::new();
        form.push("customer", customer)
            .push("amount", amount.minor_units().to_string())
            .push("currency", wire_currency(amount)?)
            .push("confirm", "true")
            .push("payment_method", DEMO_PAYMENT_METHOD)
            .push_nested(&["automatic_payment_methods", "enabled"], "true")
            .push_nested(&["automatic_payment_methods", "allow_redirects"], "never");
        push_metadata(&mut form, metadata)?;
        let answer = self
            .post("/v1/payment_intents", &form, idempotency_key)
            .await?;
        let wire: WirePaymentIntent = decode(&answer)?;
        map(&answer, wire.into_model())
    }

    /// `POST /v1/products` (form: `name`).
    ///
    /// # Errors
    /// Any [`StripeError`].
    pub async fn create_product(
        &self,
        name: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Product, StripeError> {
        let mut form = Form::new();
        form.push("name", name);
        let answer = self.post("/v1/products", &form, idempotency_key).await?;
        let wire: WireProduct = decode(&answer)?;
        Ok(wire.into_model())
    }

    /// `POST /v1/prices`: a one-time price (form: `product`, `unit_amount` (minor units),
    /// `currency` (lower case)).
    ///
    /// # Errors
    /// [`StripeError::InvalidArgument`] for a currency whose Stripe unit differs from ISO 4217
    /// (ISK, MGA, UGX); any other [`StripeError`].
    pub async fn create_price(
        &self,
        product: &str,
        unit_amount: Money,
        idempotency_key: Option<&str>,
    ) -> Result<Price, StripeError> {
        let mut form = Form::new();
        form.push("product", product)
            .push("unit_amount", unit_amount.minor_units().to_string())
            .push("currency", wire_currency(unit_amount)?);
        let answer = self.post("/v1/prices", &form, idempotency_key).await?;
        let wire: WirePrice = decode(&answer)?;
        map(&answer, wire.into_model())
    }

    /// `POST /v1/payment_links` (form: `line_items[i][price]`, `line_items[i][quantity]`,
    /// `metadata[k]`); `lines` are `(price id, quantity)` pairs.
    ///
    /// # Errors
    /// [`StripeError::InvalidArgument`] for no lines, a zero quantity or bad metadata; any
    /// other [`StripeError`].
    pub async fn create_payment_link(
        &self,
        lines: &[(&str, u32)],
        metadata: &BTreeMap<String, String>,
        idempotency_key: Option<&str>,
    ) -> Result<PaymentLink, StripeError> {
        if lines.is_empty() {
            return Err(invalid(
                "a payment link needs at least one line item".into(),
            ));
        }
        if let Some((price, _)) = lines.iter().find(|(_, q)| *q == 0) {
            return Err(invalid(format!("line item {price} has quantity 0")));
        }
        let items: Vec<Vec<(&str, String)>> = lines
            .iter()
            .map(|(price, quantity)| {
                vec![
                    ("price", (*price).to_string()),
                    ("quantity", quantity.to_string()),
                ]
            })
            .collect();
        let mut form = Form::new();
        form.push_array_of_maps("line_items", &items);
        push_metadata(&mut form, metadata)?;
        let answer = self
            .post("/v1/payment_links", &form, idempotency_key)
            .await?;
        let wire: WirePaymentLink = decode(&answer)?;
        Ok(wire.into_model())
    }

    async fn get(&self, path: &str, query: &[(String, String)]) -> Result<Answer, StripeError> {
        let request = self.request(Method::GET, path).query(query);
        self.send(request).await
    }

    async fn post(
        &self,
        path: &str,
        form: &Form,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, StripeError> {
        let mut request = self.request(Method::POST, path).form(form.pairs());
        if let Some(key) = idempotency_key {
            check_idempotency_key(key)?;
            request = request.header("Idempotency-Key", key);
        }
        self.send(request).await
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(self.key.expose())
            .header("Stripe-Version", STRIPE_API_VERSION)
    }

    /// Sends `request`; an HTTP 429 is sent again up to [`RATE_LIMIT_RETRIES`] times, after
    /// `Retry-After` (at most [`MAX_RATE_LIMIT_WAIT`]) or an exponential backoff. Stripe
    /// documents 429 as not processed, and a POST is sent again with its `Idempotency-Key`.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, StripeError> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let retry = if attempt <= RATE_LIMIT_RETRIES {
                request.try_clone()
            } else {
                None
            };
            let this = match retry {
                Some(r) => r,
                None => return self.send_once(request, attempt).await,
            };
            match self.send_once(this, attempt).await {
                Err(StripeError::RateLimited { retry_after, .. }) => {
                    let backoff = Duration::from_millis(250 * (1u64 << attempt.min(6)));
                    let wait = retry_after.unwrap_or(backoff).min(MAX_RATE_LIMIT_WAIT);
                    tracing::warn!(
                        attempt,
                        ?wait,
                        "Stripe rate limited a request; sending it again"
                    );
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    async fn send_once(
        &self,
        request: reqwest::RequestBuilder,
        attempt: u32,
    ) -> Result<Answer, StripeError> {
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let request_id = header("request-id");
        let replayed =
            header("idempotent-replayed").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let body = response.text().await.map_err(|e| self.transport_error(e))?;
        let answer = Answer {
            status,
            body,
            request_id,
            replayed,
        };
        if (200..300).contains(&status) {
            Ok(answer)
        } else if status == 429 {
            let message = match error_from_answer(&answer, self.key.expose()) {
                StripeError::Api { message, .. } => message,
                other => other.to_string(),
            };
            Err(StripeError::RateLimited {
                attempts: attempt,
                message,
                retry_after,
                request_id: answer.request_id,
            })
        } else {
            Err(error_from_answer(&answer, self.key.expose()))
        }
    }

    fn transport_error(&self, error: reqwest::Error) -> StripeError {
        if error.is_timeout() {
            StripeError::Timeout(self.timeout)
        } else if !(error.is_connect() || error.is_builder()) {
            // Connected, then failed: the request may have been delivered.
            StripeError::ConnectionLost {
                base_url: self.base_url.clone(),
                reason: error.without_url().to_string(),
            }
        } else {
            // The key travels in the Authorization header only, never in the URL.
            StripeError::Unreachable {
                base_url: self.base_url.clone(),
                reason: error.without_url().to_string(),
            }
        }
    }
}

fn invalid(reason: String) -> StripeError {
    StripeError::InvalidArgument { reason }
}

/// A list filter must not be empty: Stripe would refuse it, and a client that dropped it
/// instead would list every object of the account (every customer, every payment).
fn non_empty(name: &str, value: &str) -> Result<(), StripeError> {
    if value.trim().is_empty() {
        return Err(invalid(format!(
            "`{name}` is empty; an empty filter would match every object"
        )));
    }
    Ok(())
}

/// Stripe's currency parameter: the lower-case ISO code (`usd`).
fn wire_currency(amount: Money) -> Result<String, StripeError> {
    let code = amount.currency().code();
    if MISMATCHED_CURRENCIES.contains(&code) {
        return Err(invalid(format!(
            "{code} is not supported: Stripe's amount unit for it differs from ISO 4217's minor \
             unit"
        )));
    }
    Ok(code.to_ascii_lowercase())
}

/// Stripe's metadata limits: 50 keys, keys up to 40 characters without square brackets,
/// values up to 500 characters.
fn push_metadata(form: &mut Form, metadata: &BTreeMap<String, String>) -> Result<(), StripeError> {
    if metadata.len() > 50 {
        return Err(invalid(format!(
            "{} metadata keys; Stripe allows 50",
            metadata.len()
        )));
    }
    for (k, v) in metadata {
        if k.is_empty() || k.chars().count() > 40 || k.contains(['[', ']']) {
            return Err(invalid(format!(
                "metadata key {k:?} must be 1 to 40 characters without `[` or `]`"
            )));
        }
        if v.chars().count() > 500 {
            return Err(invalid(format!(
                "metadata value of {k:?} is longer than Stripe's 500 characters"
            )));
        }
    }
    form.push_map("metadata", metadata);
    Ok(())
}

/// Stripe idempotency keys are up to 255 characters; as an HTTP header value they must be
/// visible ASCII.
fn check_idempotency_key(key: &str) -> Result<(), StripeError> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "an idempotency key is 1 to 255 visible ASCII characters".into(),
        ));
    }
    Ok(())
}

/// Keeps an id from escaping its path segment (Stripe ids are `[A-Za-z0-9_]`; anything else is
/// percent-encoded, so a crafted id cannot reach another endpoint).
///
/// # Errors
/// [`StripeError::InvalidArgument`] for an empty id or one made only of dots: URL
/// normalisation would turn `/v1/customers/` (or `/v1/customers/..`, also when the dots are
/// percent-encoded) into another endpoint, e.g. Stripe's list of all customers.
fn path_segment(id: &str) -> Result<String, StripeError> {
    if id.is_empty() || id.bytes().all(|b| b == b'.') {
        return Err(invalid(format!("{id:?} is not a Stripe object id")));
    }
    Ok(id
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect())
}

/// Applies the paging cap; `Some` when paging is over.
fn cap<T>(data: &mut Vec<T>, has_more: bool, empty_page: bool) -> Option<ListPage<T>> {
    if data.len() >= MAX_PAGED_OBJECTS {
        let truncated = data.len() > MAX_PAGED_OBJECTS || has_more;
        data.truncate(MAX_PAGED_OBJECTS);
        return Some(ListPage {
            data: std::mem::take(data),
            has_more: truncated,
        });
    }
    if !has_more || empty_page {
        return Some(ListPage {
            data: std::mem::take(data),
            has_more: false,
        });
    }
    None
}

fn decode<W: DeserializeOwned>(answer: &Answer) -> Result<W, StripeError> {
    serde_json::from_str(&answer.body).map_err(|e| StripeError::UnexpectedResponse {
        status: answer.status,
        reason: format!("not the expected Stripe object ({e})"),
        request_id: answer.request_id.clone(),
    })
}

fn map<T>(answer: &Answer, mapped: Result<T, MappingError>) -> Result<T, StripeError> {
    mapped.map_err(|e| StripeError::UnexpectedResponse {
        status: answer.status,
        reason: e.to_string(),
        request_id: answer.request_id.clone(),
    })
}

fn map_list<W, T>(
    answer: &Answer,
    list: WireList<W>,
    into_model: fn(W) -> Result<T, MappingError>,
) -> Result<ListPage<T>, StripeError> {
    let data = list
        .data
        .into_iter()
        .map(|w| map(answer, into_model(w)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ListPage {
        data,
        has_more: list.has_more,
    })
}

fn map_customers(
    answer: &Answer,
    list: WireList<WireCustomer>,
) -> Result<ListPage<Customer>, StripeError> {
    let mut data = Vec::with_capacity(list.data.len());
    for wire in list.data {
        if let Some(customer) = map(answer, wire.into_model())? {
            data.push(customer);
        }
    }
    Ok(ListPage {
        data,
        has_more: list.has_more,
    })
}

/// Maps a non-2xx answer onto a [`StripeError`], scrubbing `secret` from Stripe's texts.
fn error_from_answer(answer: &Answer, secret: &str) -> StripeError {
    let status = answer.status;
    let request_id = answer.request_id.clone();
    let scrub = |s: &str| {
        if secret.is_empty() {
            s.to_string()
        } else {
            s.replace(secret, "[redacted]")
        }
    };
    let envelope: WireErrorEnvelope = match serde_json::from_str(&answer.body) {
        Ok(e) => e,
        Err(e) => {
            return StripeError::UnexpectedResponse {
                status,
                reason: format!("not Stripe's error JSON ({e})"),
                request_id,
            }
        }
    };
    let error = envelope.error;
    let message = scrub(error.message.as_deref().unwrap_or("(no message)"));
    if status == 401 {
        return StripeError::Authentication {
            message,
            request_id,
        };
    }
    if status == 403 {
        return StripeError::PermissionDenied {
            message,
            request_id,
        };
    }
    if error.code.as_deref() == Some("resource_missing") {
        return StripeError::NotFound {
            message,
            param: error.param,
            request_id,
        };
    }
    match error.kind.as_deref().and_then(StripeErrorType::from_wire) {
        Some(kind) => StripeError::Api {
            status,
            kind,
            code: error.code,
            message,
            param: error.param,
            decline_code: error.decline_code,
            request_id,
        },
        None => StripeError::UnexpectedResponse {
            status,
            reason: format!(
                "error of undocumented type {:?}: {message}",
                error.kind.as_deref().unwrap_or("")
            ),
            request_id,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_KEY: &str = "sk_test_pwdemo_51PaywardenSandboxOnly000000";

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.into(),
            request_id: Some("req_123".into()),
            replayed: false,
        }
    }

    #[test]
    fn keys_parse_and_redact() {
        let k = StripeKey::parse(TEST_KEY, false).unwrap();
        assert!(!k.is_restricted());
        assert!(!k.is_live());
        let shown = format!("{k:?}");
        assert_eq!(shown, "StripeKey(sk_test_…0000)");
        let r = StripeKey::parse("rk_test_pwdemo_51PaywardenSandboxOnly000000", false).unwrap();
        assert!(r.is_restricted());
        for bad in [
            "",
            "pk_test_abcdefgh1234",
            "sk_test_",
            "sk_test_short",
            " sk_test_abcdefgh1234",
            "sk_test_abc def ghi",
            "whsec_abcdefgh1234",
        ] {
            let e = StripeKey::parse(bad, true).unwrap_err();
            assert!(
                matches!(e, StripeError::InvalidKey { .. }),
                "{bad:?}: {e:?}"
            );
            if bad.len() > 8 {
                assert!(!e.to_string().contains(bad.trim()), "{e}");
            }
        }
    }

    #[test]
    fn live_keys_are_refused_unless_allowed() {
        for live in [
            "sk_live_51Abcdefghijklmnop9876",
            "rk_live_51Abcdefghijklmnop9876",
        ] {
            let e = StripeKey::parse(live, false).unwrap_err();
            assert!(matches!(e, StripeError::LiveKeyRefused { .. }));
            let msg = e.to_string();
            assert!(msg.contains("LIVE") && msg.contains("allow_live"), "{msg}");
            assert!(!msg.contains(live));
            let k = StripeKey::parse(live, true).unwrap();
            assert!(k.is_live());
            assert_eq!(format!("{k:?}"), format!("StripeKey({}…9876)", &live[..8]));
        }
    }

    #[test]
    fn client_debug_does_not_print_the_key() {
        let key = StripeKey::parse(TEST_KEY, false).unwrap();
        let client = StripeClient::new("http://127.0.0.1:1/", key, Duration::from_secs(1)).unwrap();
        assert_eq!(client.base_url(), "http://127.0.0.1:1");
        assert!(!format!("{client:?}").contains(TEST_KEY));
    }

    #[test]
    fn error_json_maps_to_typed_errors() {
        let e = error_from_answer(
            &answer(
                402,
                r#"{"error":{"type":"card_error","code":"card_declined","decline_code":"insufficient_funds","message":"Your card has insufficient funds.","param":""}}"#,
            ),
            TEST_KEY,
        );
        match e {
            StripeError::Api {
                status,
                kind,
                code,
                decline_code,
                request_id,
                ..
            } => {
                assert_eq!(status, 402);
                assert_eq!(kind, StripeErrorType::CardError);
                assert_eq!(code.as_deref(), Some("card_declined"));
                assert_eq!(decline_code.as_deref(), Some("insufficient_funds"));
                assert_eq!(request_id.as_deref(), Some("req_123"));
            }
            other => panic!("{other:?}"),
        }
        for (status, kind, expected) in [
            (500, "api_error", StripeErrorType::ApiError),
            (409, "idempotency_error", StripeErrorType::IdempotencyError),
            (
                400,
                "invalid_request_error",
                StripeErrorType::InvalidRequestError,
            ),
        ] {
            let body = format!(r#"{{"error":{{"type":"{kind}","message":"m"}}}}"#);
            let e = error_from_answer(&answer(status, &body), TEST_KEY);
            assert!(
                matches!(e, StripeError::Api { kind, status: s, .. } if kind == expected && s == status),
                "{e:?}"
            );
        }
    }

    #[test]
    fn auth_not_found_and_garbage_map_to_their_variants() {
        let e = error_from_answer(
            &answer(
                401,
                &format!(
                    r#"{{"error":{{"type":"invalid_request_error","message":"Invalid API Key provided: {TEST_KEY}"}}}}"#
                ),
            ),
            TEST_KEY,
        );
        assert!(matches!(e, StripeError::Authentication { .. }), "{e:?}");
        assert!(!e.to_string().contains(TEST_KEY), "{e}");
        assert!(!format!("{e:?}").contains(TEST_KEY));
        let e = error_from_answer(
            &answer(
                403,
                r#"{"error":{"type":"invalid_request_error","message":"no permission"}}"#,
            ),
            TEST_KEY,
        );
        assert!(matches!(e, StripeError::PermissionDenied { .. }));
        let e = error_from_answer(
            &answer(
                404,
                r#"{"error":{"type":"invalid_request_error","code":"resource_missing","param":"id","message":"No such payment_intent: 'pi_x'"}}"#,
            ),
            TEST_KEY,
        );
        assert!(
            matches!(e, StripeError::NotFound { ref param, .. } if param.as_deref() == Some("id"))
        );
        let e = error_from_answer(&answer(502, "<html>bad gateway</html>"), TEST_KEY);
        assert!(matches!(
            e,
            StripeError::UnexpectedResponse { status: 502, .. }
        ));
        let e = error_from_answer(
            &answer(400, r#"{"error":{"type":"brand_new_error","message":"m"}}"#),
            TEST_KEY,
        );
        assert!(matches!(
            e,
            StripeError::UnexpectedResponse { status: 400, .. }
        ));
    }

    #[test]
    fn paging_cap() {
        let mut data: Vec<u32> = (0..1000).collect();
        let page = cap(&mut data, true, false).unwrap();
        assert_eq!(page.data.len(), 1000);
        assert!(page.has_more);
        let mut data: Vec<u32> = (0..1000).collect();
        assert!(!cap(&mut data, false, false).unwrap().has_more);
        let mut data: Vec<u32> = (0..10).collect();
        assert!(cap(&mut data, true, false).is_none());
        assert_eq!(cap(&mut data, false, false).unwrap().data.len(), 10);
    }

    #[test]
    fn request_arguments_are_checked() {
        assert!(check_idempotency_key("refund-pi_1-1").is_ok());
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key("has space").is_err());
        assert!(check_idempotency_key(&"x".repeat(256)).is_err());
        let mut form = Form::new();
        let mut m = BTreeMap::new();
        m.insert("a[b]".to_string(), "v".to_string());
        assert!(push_metadata(&mut form, &m).is_err());
        let isk = paywarden_domain::Currency::from_code("ISK").unwrap();
        assert!(wire_currency(Money::from_minor(5, isk).unwrap()).is_err());
        let usd = Money::from_minor(5, paywarden_domain::Currency::USD).unwrap();
        assert_eq!(wire_currency(usd).unwrap(), "usd");
        assert_eq!(path_segment("pi_1/../x").unwrap(), "pi_1%2F..%2Fx");
        for bad in ["", ".", ".."] {
            assert!(matches!(
                path_segment(bad),
                Err(StripeError::InvalidArgument { .. })
            ));
        }
    }
}
