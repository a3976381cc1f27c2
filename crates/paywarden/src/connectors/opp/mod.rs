//! The Open Payment Platform (OPP, ACI Worldwide) connector: a real HTTP client of OPP's
//! server-to-server API.
//!
//! | operation | request |
//! |---|---|
//! | initial payment (PA/DB) | `POST /v1/payments` (form: `entityId`, `amount`, `currency`, `paymentType`, `paymentBrand`, `card.*`) |
//! | back-office operation (CP/RV/RF/RB/CB/CR) | `POST /v1/payments/{id}` (form: `entityId`, `amount`, `currency`, `paymentType`) |
//! | one transaction | `GET /v1/query/{id}?entityId=` (`includeLinkedTransactions`, `paymentTypes`) |
//! | by merchant reference | `GET /v1/query?entityId=&merchantTransactionId=` |
//! | date-range report | `GET /v1/query?entityId=&date.from=&date.to=&paymentTypes=&paymentMethods=&limit=&pageNo=` |
//!
//! Every request carries `Authorization: Bearer <token>`. The base URL is configurable: OPP's
//! test host is `https://eu-test.oppwa.com`; in the offline default it is the emulator's
//! loopback address. Error bodies (`result.code`, `result.description`,
//! `result.parameterErrors`) become typed [`OppError`]s; result codes are classified with OPP's
//! documented family patterns ([`paywarden_domain::ResultFamily`]).

mod transformers;

use std::time::Duration;

use chrono::{DateTime, Utc};
use paywarden_domain::{Money, PaymentType};
use secrecy::{ExposeSecret, SecretString};

use crate::model::{ParameterError, ResultInfo, Transaction};
use transformers::{format_query_time, WirePayment, WireQuery};

/// The credentials of one OPP entity: `entityId` and its bearer token.
#[derive(Clone)]
pub struct OppCredentials {
    /// OPP `entityId`.
    pub entity_id: String,
    /// Bearer token; never printed.
    pub token: SecretString,
}

impl std::fmt::Debug for OppCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OppCredentials")
            .field("entity_id", &self.entity_id)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// How many times a request OPP throttles (HTTP 429) is sent again before
/// [`OppError::Throttled`].
pub const THROTTLE_RETRIES: u32 = 2;

/// The longest wait before sending a throttled request again.
pub const MAX_THROTTLE_WAIT: Duration = Duration::from_secs(5);

/// Errors of the OPP connector.
#[derive(Debug, thiserror::Error)]
pub enum OppError {
    /// OPP processed the request and rejected it; the rejected transaction is included when OPP
    /// returned one (it has an id, like any transaction).
    #[error("OPP rejected the request: {} {}", result.code, result.description)]
    Rejected {
        /// OPP's result.
        result: ResultInfo,
        /// The rejected transaction, when OPP created one.
        transaction: Option<Box<Transaction>>,
    },
    /// OPP refused parameters (`200.300.404` and friends), with `result.parameterErrors`.
    #[error("OPP refused the parameters: {} {}", result.code, result.description)]
    InvalidParameters {
        /// OPP's result.
        result: ResultInfo,
        /// Which parameters and why.
        parameter_errors: Vec<ParameterError>,
    },
    /// OPP refused the entity id or token (HTTP 401/403, `800.900.3xx`).
    #[error("OPP refused the credentials: {} {}", result.code, result.description)]
    Authentication {
        /// OPP's result.
        result: ResultInfo,
    },
    /// No transaction matched (`700.400.580` and similar).
    #[error("OPP found no such transaction: {} {}", result.code, result.description)]
    NotFound {
        /// OPP's result.
        result: ResultInfo,
    },
    /// OPP did not answer within the configured timeout; the outcome of a write is unknown.
    #[error("OPP did not answer within {0:?}; the outcome is unknown")]
    Timeout(Duration),
    /// OPP could not be reached at all (connection refused, DNS, TLS): nothing was sent.
    #[error("OPP could not be reached at {base_url}: {reason}")]
    Unreachable {
        /// The configured base URL.
        base_url: String,
        /// What failed.
        reason: String,
    },
    /// The connection failed after it was made (reset, closed, a body that could not be read):
    /// the request may have reached OPP, so the outcome of a write is unknown.
    #[error("the connection to OPP at {base_url} failed after the request may have reached it: {reason}")]
    ConnectionLost {
        /// The configured base URL.
        base_url: String,
        /// What failed.
        reason: String,
    },
    /// OPP throttled the request (`800.120.100` "Too many requests. Please try again later.",
    /// OPP API reference, "Throttling"; or HTTP 429): it was refused before it was processed,
    /// so nothing happened; retry later. An HTTP 429 is sent again up to [`THROTTLE_RETRIES`]
    /// times (after `Retry-After`) before it is this error.
    #[error("OPP throttled the request {attempts} time(s) ({}); it was not processed", result.as_ref().map_or_else(|| "HTTP 429".to_string(), |r| format!("{} {}", r.code, r.description)))]
    Throttled {
        /// OPP's result, when its answer carried one.
        result: Option<ResultInfo>,
        /// How many times it was sent.
        attempts: u32,
        /// The last `Retry-After`, if OPP sent one.
        retry_after: Option<Duration>,
    },
    /// The amount cannot be written in OPP's `amount` format, `N10.N2` (OPP API reference,
    /// "Parameters": up to 10 integer digits and exactly two decimals, dot separator): more
    /// than 10 integer digits, or a 3-decimal currency's amount whose last digit is not 0.
    /// Nothing was sent.
    #[error("{0}")]
    AmountFormat(String),
    /// OPP answered with something that is not its documented JSON.
    #[error("OPP answered HTTP {status} with a body paywarden cannot read: {reason}")]
    UnexpectedResponse {
        /// HTTP status.
        status: u16,
        /// What was wrong.
        reason: String,
    },
}

/// A back-office operation on a referenced transaction (`POST /v1/payments/{id}`).
#[derive(Debug, Clone)]
pub struct BackofficeRequest {
    /// CP, RV, RF, RB, CB or CR.
    pub payment_type: PaymentType,
    /// Amount and currency; `None` sends neither (OPP takes none for a reversal).
    pub amount: Option<Money>,
    /// Merchant reference to attach.
    pub merchant_transaction_id: Option<String>,
    /// `customParameters[NAME]=VALUE` pairs (OPP's generic extension fields).
    pub custom_parameters: Vec<(String, String)>,
}

/// An initial card payment (`POST /v1/payments`), used to create demo data.
#[derive(Debug, Clone)]
pub struct InitialPaymentRequest {
    /// PA or DB.
    pub payment_type: PaymentType,
    /// Amount and currency.
    pub amount: Money,
    /// Brand, e.g. `VISA`.
    pub payment_brand: String,
    /// Card number (test cards only; never logged).
    pub card_number: SecretString,
    /// Card holder.
    pub card_holder: String,
    /// `MM`.
    pub expiry_month: String,
    /// `YYYY`.
    pub expiry_year: String,
    /// CVV (never logged).
    pub cvv: SecretString,
    /// Merchant reference.
    pub merchant_transaction_id: Option<String>,
    /// `customParameters[NAME]=VALUE` pairs.
    pub custom_parameters: Vec<(String, String)>,
}

/// A date-range report request (`GET /v1/query` with `date.from`/`date.to`).
#[derive(Debug, Clone)]
pub struct ReportQuery {
    /// Start of the range (UTC, inclusive).
    pub from: DateTime<Utc>,
    /// End of the range (UTC, inclusive).
    pub to: DateTime<Utc>,
    /// Only these payment types (OPP `paymentTypes`), empty = all.
    pub payment_types: Vec<PaymentType>,
    /// Only these payment methods (OPP `paymentMethods`, e.g. `CC`, `DC`), empty = all.
    pub payment_methods: Vec<String>,
    /// Page size (OPP `limit`).
    pub limit: u32,
    /// 1-based page number (OPP `pageNo`).
    pub page_no: u32,
}

/// One page of a report.
#[derive(Debug, Clone)]
pub struct ReportPage {
    /// The transactions on this page.
    pub transactions: Vec<Transaction>,
    /// This page's number (1-based).
    pub page_no: u32,
    /// Total pages, when OPP says.
    pub total_pages: Option<u32>,
    /// Total matching transactions, when OPP says.
    pub total_count: Option<u64>,
    /// How many records OPP returned on this page, including those paywarden cannot map (and
    /// skips): paging counts what OPP sent, not what was kept.
    pub record_count: usize,
    /// The ids of the records OPP returned, in order: a page equal to the previous one means
    /// OPP ignored `pageNo`.
    pub record_ids: Vec<String>,
}

/// An HTTP client of OPP's server-to-server API.
#[derive(Debug, Clone)]
pub struct OppClient {
    http: reqwest::Client,
    base_url: String,
    timeout: Duration,
}

impl OppClient {
    /// A client of the OPP API at `base_url` (no trailing slash needed) whose requests time out
    /// after `timeout`.
    ///
    /// # Errors
    /// [`OppError::Unreachable`] when the HTTP client cannot be built (TLS set-up).
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, OppError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("paywarden/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OppError::Unreachable {
                base_url: base_url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
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

    /// `POST /v1/payments`: an initial PA or DB card payment.
    ///
    /// # Errors
    /// Any [`OppError`]; a declined payment is [`OppError::Rejected`] with its transaction.
    pub async fn create_payment(
        &self,
        credentials: &OppCredentials,
        request: &InitialPaymentRequest,
    ) -> Result<Transaction, OppError> {
        let mut form = vec![
            ("entityId".to_string(), credentials.entity_id.clone()),
            ("amount".into(), opp_amount(request.amount)?),
            (
                "currency".into(),
                request.amount.currency().code().to_string(),
            ),
            (
                "paymentType".into(),
                request.payment_type.code().to_string(),
            ),
            ("paymentBrand".into(), request.payment_brand.clone()),
            (
                "card.number".into(),
                request.card_number.expose_secret().to_string(),
            ),
            ("card.holder".into(), request.card_holder.clone()),
            ("card.expiryMonth".into(), request.expiry_month.clone()),
            ("card.expiryYear".into(), request.expiry_year.clone()),
            ("card.cvv".into(), request.cvv.expose_secret().to_string()),
        ];
        if let Some(m) = &request.merchant_transaction_id {
            form.push(("merchantTransactionId".into(), m.clone()));
        }
        push_custom(&mut form, &request.custom_parameters);
        let url = format!("{}/v1/payments", self.base_url);
        self.post_payment(credentials, &url, &form).await
    }

    /// `POST /v1/payments/{reference_id}`: a back-office operation.
    ///
    /// # Errors
    /// Any [`OppError`]; an operation OPP refuses is [`OppError::Rejected`].
    pub async fn backoffice(
        &self,
        credentials: &OppCredentials,
        reference_id: &str,
        request: &BackofficeRequest,
    ) -> Result<Transaction, OppError> {
        let mut form = vec![
            ("entityId".to_string(), credentials.entity_id.clone()),
            (
                "paymentType".into(),
                request.payment_type.code().to_string(),
            ),
        ];
        if let Some(amount) = &request.amount {
            form.push(("amount".into(), opp_amount(*amount)?));
            form.push(("currency".into(), amount.currency().code().to_string()));
        }
        if let Some(m) = &request.merchant_transaction_id {
            form.push(("merchantTransactionId".into(), m.clone()));
        }
        push_custom(&mut form, &request.custom_parameters);
        let url = format!(
            "{}/v1/payments/{}",
            self.base_url,
            path_segment(reference_id)
        );
        self.post_payment(credentials, &url, &form).await
    }

    /// `GET /v1/query/{id}`: one transaction; with `include_linked`, every transaction of its
    /// payment (OPP `includeLinkedTransactions=true`), optionally only `payment_types`.
    ///
    /// # Errors
    /// [`OppError::NotFound`] for an unknown id (or another entity's); any other [`OppError`].
    pub async fn query_by_id(
        &self,
        credentials: &OppCredentials,
        id: &str,
        include_linked: bool,
        payment_types: &[PaymentType],
    ) -> Result<Vec<Transaction>, OppError> {
        let mut query = vec![("entityId".to_string(), credentials.entity_id.clone())];
        if include_linked {
            query.push(("includeLinkedTransactions".into(), "true".into()));
        }
        if !payment_types.is_empty() {
            query.push(("paymentTypes".into(), join_types(payment_types)));
        }
        let url = format!("{}/v1/query/{}", self.base_url, path_segment(id));
        let (status, body) = self.get(credentials, &url, &query).await?;
        let value: serde_json::Value = parse_json(status, &body)?;
        if value.get("payments").is_some() || value.get("records").is_some() {
            let envelope: WireQuery = from_value(status, value)?;
            self.query_envelope(status, envelope).map(|(txs, _)| txs)
        } else {
            let payment: WirePayment = from_value(status, value)?;
            classify_query_failure(status, &payment.result)?;
            Ok(vec![map_payment(status, payment)?])
        }
    }

    /// `GET /v1/query?merchantTransactionId=`: every transaction with that merchant reference.
    ///
    /// # Errors
    /// [`OppError::NotFound`] when none matches; any other [`OppError`].
    pub async fn query_by_merchant_transaction_id(
        &self,
        credentials: &OppCredentials,
        merchant_transaction_id: &str,
    ) -> Result<Vec<Transaction>, OppError> {
        let query = vec![
            ("entityId".to_string(), credentials.entity_id.clone()),
            (
                "merchantTransactionId".into(),
                merchant_transaction_id.to_string(),
            ),
        ];
        let url = format!("{}/v1/query", self.base_url);
        let (status, body) = self.get(credentials, &url, &query).await?;
        let envelope: WireQuery = parse_as(status, &body)?;
        self.query_envelope(status, envelope).map(|(txs, _)| txs)
    }

    /// `GET /v1/query` with `date.from`/`date.to`: one page of the transaction report.
    ///
    /// # Errors
    /// Any [`OppError`]. An empty range is an empty page, not an error.
    pub async fn report(
        &self,
        credentials: &OppCredentials,
        report: &ReportQuery,
    ) -> Result<ReportPage, OppError> {
        let mut query = vec![
            ("entityId".to_string(), credentials.entity_id.clone()),
            ("date.from".into(), format_query_time(report.from)),
            ("date.to".into(), format_query_time(report.to)),
            ("limit".into(), report.limit.to_string()),
            ("pageNo".into(), report.page_no.to_string()),
        ];
        if !report.payment_types.is_empty() {
            query.push(("paymentTypes".into(), join_types(&report.payment_types)));
        }
        if !report.payment_methods.is_empty() {
            query.push(("paymentMethods".into(), report.payment_methods.join(",")));
        }
        let url = format!("{}/v1/query", self.base_url);
        let (status, body) = self.get(credentials, &url, &query).await?;
        let envelope: WireQuery = parse_as(status, &body)?;
        let page_no = envelope.page_no.unwrap_or(report.page_no);
        let total_pages = envelope.total_pages;
        let total_count = envelope.total_count;
        let record_ids: Vec<String> = envelope
            .records
            .iter()
            .chain(&envelope.payments)
            .map(|p| p.id.clone().unwrap_or_default())
            .collect();
        let record_count = record_ids.len();
        match self.query_envelope(status, envelope) {
            Ok((transactions, _)) => Ok(ReportPage {
                transactions,
                page_no,
                total_pages,
                total_count,
                record_count,
                record_ids,
            }),
            Err(OppError::NotFound { .. }) => Ok(ReportPage {
                transactions: Vec::new(),
                page_no,
                total_pages: Some(0),
                total_count: Some(0),
                record_count: 0,
                record_ids: Vec::new(),
            }),
            Err(e) => Err(e),
        }
    }

    fn query_envelope(
        &self,
        status: u16,
        envelope: WireQuery,
    ) -> Result<(Vec<Transaction>, Option<u32>), OppError> {
        classify_query_failure(status, &envelope.result)?;
        let mut out = Vec::with_capacity(envelope.payments.len() + envelope.records.len());
        for payment in envelope.payments.into_iter().chain(envelope.records) {
            match payment.into_model() {
                Ok(tx) => out.push(tx),
                // OPP has payment types paywarden does not model (e.g. RC receipts, 3D);
                // they are not part of any back-office workflow here, so they are skipped.
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an OPP transaction paywarden cannot map")
                }
            }
        }
        Ok((out, envelope.total_pages))
    }

    async fn post_payment(
        &self,
        credentials: &OppCredentials,
        url: &str,
        form: &[(String, String)],
    ) -> Result<Transaction, OppError> {
        let request = self
            .http
            .post(url)
            .bearer_auth(credentials.token.expose_secret())
            .form(form);
        let (status, body) = self.send(request).await?;
        let payment: WirePayment = parse_as(status, &body)?;
        let result = payment.result.to_model();
        classify_common_failure(status, &payment.result)?;
        if result.is_success() || result.family() == paywarden_domain::ResultFamily::Pending {
            return map_payment(status, payment);
        }
        let transaction = payment.into_model().ok().map(Box::new);
        Err(OppError::Rejected {
            result,
            transaction,
        })
    }

    async fn get(
        &self,
        credentials: &OppCredentials,
        url: &str,
        query: &[(String, String)],
    ) -> Result<(u16, String), OppError> {
        let request = self
            .http
            .get(url)
            .bearer_auth(credentials.token.expose_secret())
            .query(query);
        self.send(request).await
    }

    /// Sends `request`; OPP's throttling answer (HTTP 429) is sent again up to
    /// [`THROTTLE_RETRIES`] times after `Retry-After` (at most [`MAX_THROTTLE_WAIT`]) or an
    /// exponential backoff, then is [`OppError::Throttled`].
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, String), OppError> {
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            let Some(this) = request.try_clone() else {
                return self.send_once(request).await.map(|(s, b, _)| (s, b));
            };
            let (status, body, retry_after) = self.send_once(this).await?;
            if status != 429 {
                return Ok((status, body));
            }
            if attempts > THROTTLE_RETRIES {
                return Err(OppError::Throttled {
                    result: throttle_result(&body),
                    attempts,
                    retry_after,
                });
            }
            let backoff = Duration::from_millis(250 * (1u64 << attempts.min(6)));
            let wait = retry_after.unwrap_or(backoff).min(MAX_THROTTLE_WAIT);
            tracing::warn!(attempts, ?wait, "OPP throttled a request; sending it again");
            tokio::time::sleep(wait).await;
        }
    }

    async fn send_once(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, String, Option<Duration>), OppError> {
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.text().await.map_err(|e| self.transport_error(e))?;
        Ok((status, body, retry_after))
    }

    fn transport_error(&self, error: reqwest::Error) -> OppError {
        if error.is_timeout() {
            OppError::Timeout(self.timeout)
        } else if !(error.is_connect() || error.is_builder()) {
            // Connected, then failed: the request may have been delivered.
            OppError::ConnectionLost {
                base_url: self.base_url.clone(),
                reason: error.without_url().to_string(),
            }
        } else {
            // reqwest's error text can contain the URL, which carries no secret (credentials
            // travel in the Authorization header and the form body).
            OppError::Unreachable {
                base_url: self.base_url.clone(),
                reason: error.without_url().to_string(),
            }
        }
    }
}

/// `amount` in OPP's documented format `N10.N2` (`[0-9]{1,10}(\.[0-9]{2})?`: OPP API
/// reference, "Parameters"): two decimals for 2-decimal currencies (`10.00`), none for
/// 0-decimal ones (`1000`, which the pattern allows), and two for 3-decimal ones (`1.50` for
/// 1.500 KWD); an amount N10.N2 cannot hold is refused before anything is sent.
///
/// # Errors
/// [`OppError::AmountFormat`].
pub fn opp_amount(amount: Money) -> Result<String, OppError> {
    let currency = amount.currency();
    let minor = amount.minor_units();
    let text = match currency.exponent() {
        0..=2 => amount.to_decimal_string(),
        exponent => {
            let drop = 10_i64.pow(u32::from(exponent) - 2);
            if minor % drop != 0 {
                return Err(OppError::AmountFormat(format!(
                    "{} {} cannot be sent to OPP: OPP's amount format N10.N2 allows exactly two decimals; send a multiple of {}",
                    amount.to_decimal_string(),
                    currency.code(),
                    Money::from_minor(drop, currency)
                        .map(|m| m.to_decimal_string())
                        .unwrap_or_default()
                )));
            }
            let hundredths = minor / drop;
            format!("{}.{:02}", hundredths / 100, hundredths % 100)
        }
    };
    let integer_digits = text.split('.').next().unwrap_or_default().len();
    if integer_digits > 10 {
        return Err(OppError::AmountFormat(format!(
            "{text} {} cannot be sent to OPP: OPP's amount format N10.N2 allows at most 10 integer digits",
            currency.code()
        )));
    }
    Ok(text)
}

fn push_custom(form: &mut Vec<(String, String)>, custom: &[(String, String)]) {
    for (name, value) in custom {
        form.push((format!("customParameters[{name}]"), value.clone()));
    }
}

fn join_types(types: &[PaymentType]) -> String {
    types.iter().map(|t| t.code()).collect::<Vec<_>>().join(",")
}

/// Keeps an id from escaping its path segment (ids are `[A-Za-z0-9._-]`; anything else is
/// percent-encoded, so a crafted id cannot reach another endpoint).
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn parse_json(status: u16, body: &str) -> Result<serde_json::Value, OppError> {
    serde_json::from_str(body).map_err(|e| OppError::UnexpectedResponse {
        status,
        reason: format!("not JSON ({e})"),
    })
}

/// `body` read as `T` in one pass, without a `serde_json::Value` in between (a report page's
/// 20 records are about 500 values): [`OppError::UnexpectedResponse`] with "not JSON (...)"
/// when it is not JSON, or with serde's reason when it is JSON of another shape.
fn parse_as<T: serde::de::DeserializeOwned>(status: u16, body: &str) -> Result<T, OppError> {
    serde_json::from_str(body).map_err(|e| OppError::UnexpectedResponse {
        status,
        reason: if e.is_data() {
            e.to_string()
        } else {
            format!("not JSON ({e})")
        },
    })
}

fn from_value<T: serde::de::DeserializeOwned>(
    status: u16,
    value: serde_json::Value,
) -> Result<T, OppError> {
    serde_json::from_value(value).map_err(|e| OppError::UnexpectedResponse {
        status,
        reason: e.to_string(),
    })
}

fn map_payment(status: u16, payment: WirePayment) -> Result<Transaction, OppError> {
    payment
        .into_model()
        .map_err(|e| OppError::UnexpectedResponse {
            status,
            reason: e.to_string(),
        })
}

/// OPP's `result` in a throttling answer's body, if it has one.
fn throttle_result(body: &str) -> Option<ResultInfo> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let code = value.pointer("/result/code")?.as_str()?;
    let description = value
        .pointer("/result/description")
        .and_then(|d| d.as_str())
        .unwrap_or_default();
    Some(ResultInfo::new(code, description))
}

/// Authentication and parameter failures look the same on every endpoint.
fn classify_common_failure(status: u16, result: &transformers::WireResult) -> Result<(), OppError> {
    let info = result.to_model();
    if status == 401 || status == 403 || info.code.starts_with("800.900.3") {
        return Err(OppError::Authentication { result: info });
    }
    // OPP's throttling answer (API reference, "Throttling": `800.120.100` "Too many requests.
    // Please try again later."), and HTTP 429.
    if status == 429 || info.code == "800.120.100" {
        return Err(OppError::Throttled {
            result: Some(info),
            attempts: 1,
            retry_after: None,
        });
    }
    if !result.parameter_errors.is_empty() || info.code == "200.300.404" {
        return Err(OppError::InvalidParameters {
            parameter_errors: result.parameter_errors(),
            result: info,
        });
    }
    Ok(())
}

fn classify_query_failure(status: u16, result: &transformers::WireResult) -> Result<(), OppError> {
    classify_common_failure(status, result)?;
    let info = result.to_model();
    if status == 404 || info.code == "700.400.580" || info.code == "700.100.100" {
        return Err(OppError::NotFound { result: info });
    }
    if status >= 500 {
        return Err(OppError::UnexpectedResponse {
            status,
            reason: format!("{} {}", info.code, info.description),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_n10_n2() {
        use paywarden_domain::Currency;
        let m = |minor, c| Money::from_minor(minor, c).expect("money");
        assert_eq!(opp_amount(m(1050, Currency::EUR)).unwrap(), "10.50");
        assert_eq!(opp_amount(m(1000, Currency::JPY)).unwrap(), "1000");
        assert_eq!(opp_amount(m(1500, Currency::KWD)).unwrap(), "1.50");
        assert_eq!(opp_amount(m(1_000_010, Currency::KWD)).unwrap(), "1000.01");
        assert!(matches!(
            opp_amount(m(1505, Currency::KWD)),
            Err(OppError::AmountFormat(_))
        ));
        assert!(matches!(
            opp_amount(m(100_000_000_000, Currency::JPY)),
            Err(OppError::AmountFormat(_))
        ));
        assert_eq!(
            opp_amount(m(999_999_999_999, Currency::EUR)).unwrap(),
            "9999999999.99"
        );
    }

    #[test]
    fn path_segments_cannot_escape() {
        assert_eq!(path_segment("8ac7a4c9-._"), "8ac7a4c9-._");
        assert_eq!(path_segment("a/v1/x?y"), "a%2Fv1%2Fx%3Fy");
    }

    #[test]
    fn credentials_debug_redacts_the_token() {
        let c = OppCredentials {
            entity_id: "e".into(),
            token: SecretString::from("super-secret"),
        };
        assert!(!format!("{c:?}").contains("super-secret"));
    }
}
