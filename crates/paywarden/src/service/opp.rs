//! The OPP toolset's operations on the pipeline: the six back-office operations and the two
//! reporting queries.
//!
//! Every back-office call is checked before anything is sent: paywarden reads the referenced
//! transaction and its linked transactions from OPP (`GET /v1/query/{id}`), applies OPP's state
//! rules ([`paywarden_domain::ledger::evaluate`]) to refuse what OPP would refuse and to work
//! out the default amount (capture and refund default to the remainder), then sends the
//! operation with an explicit amount and currency, as OPP requires. OPP (or the emulator)
//! checks again atomically when it writes.

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, NaiveDateTime, Utc};
use paywarden_domain::{
    ledger::{self, Operation},
    Currency, Money, PaymentType,
};
use schemars::JsonSchema;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::{AuditFacts, Caller, Pipeline, ServiceError, Settlement, ToolOutcome};
use crate::{
    connectors::opp::{BackofficeRequest, OppClient, OppCredentials, OppError, ReportQuery},
    model::{serde_label, ResultInfo, Transaction, TransactionView},
};

/// The toolset's name in configuration and the audit log.
pub const TOOLSET: &str = "opp";

/// Largest number of transactions `search_transactions` reads from OPP for one search
/// (100 per page, 20 pages); a larger match is reported as `truncated`.
pub const SEARCH_SCAN_LIMIT: usize = 2_000;

/// A back-office operation, validated.
#[derive(Debug, Clone)]
pub struct BackofficeCommand {
    /// Which operation.
    pub operation: Operation,
    /// The referenced transaction's id.
    pub reference_id: String,
    /// Requested amount (with currency); `None` = the default for the operation.
    pub amount: Option<Money>,
    /// Merchant reference to attach.
    pub merchant_transaction_id: Option<String>,
    /// The caller's idempotency key.
    pub idempotency_key: Option<String>,
}

/// Raw back-office parameters as a tool receives them (OPP's camelCase names), before
/// validation.
#[derive(Debug, Clone, Default)]
pub struct BackofficeParams {
    /// `referenceId`.
    pub reference_id: String,
    /// `amount`, an OPP decimal string such as `"10.00"`.
    pub amount: Option<String>,
    /// `currency`, ISO 4217.
    pub currency: Option<String>,
    /// `merchantTransactionId`.
    pub merchant_transaction_id: Option<String>,
    /// `idempotencyKey`.
    pub idempotency_key: Option<String>,
}

/// Balances of the referenced transaction after an operation, in its currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BalancesView {
    /// The referenced transaction's id.
    pub transaction_id: String,
    /// ISO 4217 currency of every amount here.
    pub currency: String,
    /// Authorised amount (PA), decimal string.
    pub authorized: String,
    /// Captured amount, decimal string.
    pub captured: String,
    /// Refunded amount, decimal string.
    pub refunded: String,
    /// Charged back and not reversed, decimal string.
    pub charged_back: String,
    /// What can still be captured, decimal string.
    pub capturable: String,
    /// What can still be refunded, decimal string.
    pub refundable: String,
    /// Whether the authorisation was reversed.
    pub reversed: bool,
}

/// The output of the six back-office tools: the new transaction in OPP's shape, plus balances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackofficeOutput {
    /// The transaction OPP created.
    #[serde(flatten)]
    pub transaction: TransactionView,
    /// The referenced transaction's balances after this operation.
    pub balances: Option<BalancesView>,
    /// True when the offline emulator answered (no real money moved).
    pub sandbox: bool,
    /// True when this is the stored first outcome of a retried idempotency key.
    pub idempotent_replay: bool,
}

/// The output of `get_transactions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LookupOutput {
    /// OPP's query result (`000.000.100 successful request`).
    pub result: ResultInfo,
    /// The transactions found, oldest first (with linked transactions when asked).
    pub payments: Vec<TransactionView>,
    /// True when the offline emulator answered.
    pub sandbox: bool,
}

/// The output of `search_transactions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchOutput {
    /// OPP's query result.
    pub result: ResultInfo,
    /// This page of matches, oldest first.
    pub records: Vec<TransactionView>,
    /// This page's number, from 1.
    pub page_no: u32,
    /// Page size.
    pub limit: u32,
    /// Matches across all pages.
    pub total_count: u64,
    /// Pages of matches.
    pub total_pages: u32,
    /// The date range searched (UTC, `YYYY-MM-DD HH:MM:SS`).
    pub date_from: String,
    /// End of the range searched.
    pub date_to: String,
    /// True when more than the scan limit matched OPP's filters and the rest was not read;
    /// narrow the date range.
    pub truncated: bool,
    /// True when the offline emulator answered.
    pub sandbox: bool,
}

/// A lookup by id or merchant reference, validated.
#[derive(Debug, Clone)]
pub struct LookupQuery {
    /// OPP transaction id.
    pub id: Option<String>,
    /// Merchant reference.
    pub merchant_transaction_id: Option<String>,
    /// Include every transaction of the same payment (default true).
    pub include_linked: bool,
    /// Only these types.
    pub payment_types: Vec<PaymentType>,
}

/// Raw search filters as the tool receives them.
#[derive(Debug, Clone, Default)]
pub struct SearchParams {
    /// Start, `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS` or RFC 3339 (UTC).
    pub date_from: Option<String>,
    /// End, same forms.
    pub date_to: Option<String>,
    /// OPP payment type codes.
    pub payment_types: Vec<String>,
    /// OPP payment method codes (CC, DC, ...).
    pub payment_methods: Vec<String>,
    /// Result categories.
    pub result_categories: Vec<String>,
    /// ISO 4217 currency.
    pub currency: Option<String>,
    /// Minimum amount, decimal string in `currency`.
    pub amount_min: Option<String>,
    /// Maximum amount, decimal string in `currency`.
    pub amount_max: Option<String>,
    /// Merchant reference.
    pub merchant_transaction_id: Option<String>,
    /// Page size, 1..=100.
    pub limit: Option<u32>,
    /// Page number, from 1.
    pub page_no: Option<u32>,
}

/// The OPP toolset's service.
#[derive(Debug, Clone)]
pub struct OppService {
    pipeline: Pipeline,
    client: OppClient,
}

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArguments(message.into())
}

/// Checks an OPP transaction id: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, starting with a
/// letter or digit.
pub fn validate_id(field: &str, id: &str) -> Result<String, ServiceError> {
    let id = id.trim();
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(id.to_string())
    } else {
        Err(invalid(format!(
            "{field} {id:?} is not an OPP transaction id: send the 32-character id OPP returned (letters, digits, '.', '_', '-'; at most 64)"
        )))
    }
}

fn validate_merchant_reference(value: Option<String>) -> Result<Option<String>, ServiceError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_empty() || v.len() > 255 || v.chars().any(char::is_control) => Err(
            invalid("merchantTransactionId must be 1 to 255 printable characters"),
        ),
        Some(v) => Ok(Some(v)),
    }
}

/// Parses an amount/currency pair: both or neither.
pub fn parse_amount(
    amount: Option<&str>,
    currency: Option<&str>,
) -> Result<Option<Money>, ServiceError> {
    match (amount, currency) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(
            "amount was given without currency: send both, e.g. amount \"10.00\" and currency \"EUR\"",
        )),
        (None, Some(_)) => Err(invalid(
            "currency was given without amount: send both, or neither to use the default amount",
        )),
        (Some(amount), Some(currency)) => {
            let currency = Currency::from_code(currency).map_err(|e| invalid(e.to_string()))?;
            Money::parse_positive(amount, currency)
                .map(Some)
                .map_err(|e| invalid(e.to_string()))
        }
    }
}

/// Parses `YYYY-MM-DD` (start or end of that day), `YYYY-MM-DD HH:MM:SS` or RFC 3339, as UTC.
pub fn parse_date(field: &str, raw: &str, end_of_day: bool) -> Result<DateTime<Utc>, ServiceError> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S") {
        return Ok(t.and_utc());
    }
    if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        let time = if end_of_day {
            d.and_hms_opt(23, 59, 59)
        } else {
            d.and_hms_opt(0, 0, 0)
        };
        if let Some(t) = time {
            return Ok(t.and_utc());
        }
    }
    Err(invalid(format!(
        "{field} {raw:?} is not a date: use YYYY-MM-DD, \"YYYY-MM-DD HH:MM:SS\" (UTC) or RFC 3339"
    )))
}

/// Parses OPP payment type codes.
pub fn parse_payment_types(field: &str, raw: &[String]) -> Result<Vec<PaymentType>, ServiceError> {
    raw.iter()
        .map(|t| {
            t.trim().parse::<PaymentType>().map_err(|_| {
                invalid(format!(
                    "{field} contains {t:?}: use OPP payment type codes PA, DB, CP, RV, RF, RB, CB, CR"
                ))
            })
        })
        .collect()
}

fn money_text(m: Money) -> String {
    format!("{} {}", m.to_decimal_string(), m.currency().code())
}

fn balances_view(target: &Transaction, tree: &[paywarden_domain::TxRecord]) -> BalancesView {
    let b = ledger::balances(&target.ledger_record(), tree);
    BalancesView {
        transaction_id: target.id.clone(),
        currency: target.amount.currency().code().to_string(),
        authorized: b.authorized.to_decimal_string(),
        captured: b.captured.to_decimal_string(),
        refunded: b.refunded.to_decimal_string(),
        charged_back: b.charged_back.to_decimal_string(),
        capturable: b.capturable.to_decimal_string(),
        refundable: b.refundable.to_decimal_string(),
        reversed: b.reversed,
    }
}

fn tool_of(op: Operation) -> &'static str {
    match op {
        Operation::Capture => "perform_capture",
        Operation::Reversal => "perform_reversal",
        Operation::Refund => "perform_refund",
        Operation::Rebill => "perform_rebill",
        Operation::Chargeback => "perform_chargeback",
        Operation::ChargebackReversal => "perform_chargeback_reversal",
    }
}

impl OppService {
    /// The OPP service over `pipeline`, sending to OPP through `client`.
    pub fn new(pipeline: Pipeline, client: OppClient) -> Self {
        Self { pipeline, client }
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The connector.
    pub fn client(&self) -> &OppClient {
        &self.client
    }

    fn credentials(caller: &Caller) -> OppCredentials {
        OppCredentials {
            entity_id: caller.entity_id.clone(),
            token: secrecy::SecretString::from(caller.token.expose_secret().to_string()),
        }
    }

    /// Validates raw back-office parameters for `operation`.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] naming the bad field and the expected form.
    pub fn validate_backoffice(
        operation: Operation,
        params: BackofficeParams,
    ) -> Result<BackofficeCommand, ServiceError> {
        let reference_id = validate_id("referenceId", &params.reference_id)?;
        let amount = parse_amount(params.amount.as_deref(), params.currency.as_deref())?;
        if operation == Operation::Rebill && amount.is_none() {
            return Err(invalid(
                "perform_rebill needs amount and currency: the additional amount to charge, e.g. amount \"5.00\", currency \"EUR\"",
            ));
        }
        let idempotency_key = match params.idempotency_key {
            Some(k) if k.trim().is_empty() || k.len() > 255 => {
                return Err(invalid("idempotencyKey must be 1 to 255 characters"))
            }
            other => other,
        };
        Ok(BackofficeCommand {
            operation,
            reference_id,
            amount,
            merchant_transaction_id: validate_merchant_reference(params.merchant_transaction_id)?,
            idempotency_key,
        })
    }

    /// Runs a back-office tool: validation, idempotency, the pre-check, the OPP call, audit.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] for malformed arguments (audited);
    /// [`ServiceError::Store`] when paywarden's database fails. Provider rejections are
    /// tool-error outcomes, not errors.
    pub async fn backoffice(
        &self,
        caller: &Caller,
        operation: Operation,
        arguments: &serde_json::Value,
        params: BackofficeParams,
    ) -> Result<ToolOutcome, ServiceError> {
        let tool = tool_of(operation);
        let command = match Self::validate_backoffice(operation, params) {
            Ok(c) => c,
            Err(e) => {
                return self
                    .pipeline
                    .read(caller, TOOLSET, tool, arguments, || async { Err(e) })
                    .await
            }
        };
        let key = command.idempotency_key.clone();
        self.pipeline
            .write(caller, TOOLSET, tool, arguments, key.as_deref(), || {
                self.execute_backoffice(caller, command)
            })
            .await
    }

    async fn execute_backoffice(
        &self,
        caller: &Caller,
        command: BackofficeCommand,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let tool = tool_of(command.operation);
        let credentials = Self::credentials(caller);
        // 1. Pre-check against the referenced transaction and its payment.
        let linked = match self
            .client
            .query_by_id(&credentials, &command.reference_id, true, &[])
            .await
        {
            Ok(linked) => linked,
            Err(OppError::NotFound { .. }) => {
                let (code, description) =
                    paywarden_domain::result_code::codes::REFERENCE_NOT_EXISTING;
                return Ok((
                    self.rejection_outcome(
                        tool,
                        &ResultInfo::new(code, description),
                        &format!(
                            "no transaction {} exists for entity {}",
                            command.reference_id, caller.entity_id
                        ),
                        None,
                        false,
                    ),
                    Settlement::Final,
                ));
            }
            Err(e) => return Ok(self.provider_failure(tool, e, true)),
        };
        let Some(target) = linked
            .iter()
            .find(|t| t.id == command.reference_id)
            .cloned()
        else {
            let (code, description) = paywarden_domain::result_code::codes::REFERENCE_NOT_EXISTING;
            return Ok((
                self.rejection_outcome(
                    tool,
                    &ResultInfo::new(code, description),
                    &format!(
                        "OPP's answer did not include transaction {}",
                        command.reference_id
                    ),
                    None,
                    false,
                ),
                Settlement::Final,
            ));
        };
        let tree: Vec<_> = linked.iter().map(Transaction::ledger_record).collect();
        let amount = match ledger::evaluate(
            command.operation,
            &target.ledger_record(),
            &tree,
            command.amount,
        ) {
            Ok(amount) => amount,
            Err(rejection) => {
                return Ok((
                    self.rejection_outcome(
                        tool,
                        &ResultInfo::new(rejection.code, rejection.description),
                        &rejection.reason,
                        None,
                        false,
                    ),
                    Settlement::Final,
                ))
            }
        };
        // 2. The operation itself, with an explicit amount (OPP requires one) except for a
        //    reversal, which voids the whole authorisation.
        let request = BackofficeRequest {
            payment_type: command.operation.payment_type(),
            amount: (command.operation != Operation::Reversal).then_some(amount),
            merchant_transaction_id: command.merchant_transaction_id.clone(),
            custom_parameters: Vec::new(),
        };
        match self
            .client
            .backoffice(&credentials, &command.reference_id, &request)
            .await
        {
            Ok(created) => {
                let mut after = tree.clone();
                after.push(created.ledger_record());
                let balances = balances_view(&target, &after);
                let view = created.view();
                let output = BackofficeOutput {
                    transaction: view,
                    balances: Some(balances.clone()),
                    sandbox: self.pipeline.sandbox(),
                    idempotent_replay: false,
                };
                let summary = format!(
                    "{tool} succeeded: {} {} on {} {} -> new {} transaction {} (result {} {}). {} now: captured {} {cur}, refunded {} {cur}, capturable {} {cur}, refundable {} {cur}.",
                    created.payment_type.description(),
                    money_text(created.amount),
                    target.payment_type.code(),
                    target.id,
                    created.payment_type.code(),
                    created.id,
                    created.result.code,
                    created.result.description,
                    target.id,
                    balances.captured,
                    balances.refunded,
                    balances.capturable,
                    balances.refundable,
                    cur = balances.currency,
                );
                let structured =
                    serde_json::to_value(&output).map_err(crate::store::StoreError::from)?;
                Ok((
                    ToolOutcome {
                        text: self
                            .pipeline
                            .decorate(&format!("{summary}\n{}", structured)),
                        structured,
                        is_error: false,
                        audit: AuditFacts {
                            outcome: "ok".into(),
                            result_code: Some(created.result.code.clone()),
                            provider_request_id: created.ndc.clone(),
                            transaction_id: Some(created.id.clone()),
                        },
                    },
                    Settlement::Final,
                ))
            }
            Err(OppError::Rejected {
                result,
                transaction,
            }) => Ok((
                self.rejection_outcome(
                    tool,
                    &result,
                    "OPP refused the operation",
                    transaction.as_deref(),
                    true,
                ),
                Settlement::Final,
            )),
            Err(e) => Ok(self.provider_failure(tool, e, false)),
        }
    }

    fn rejection_outcome(
        &self,
        tool: &str,
        result: &ResultInfo,
        reason: &str,
        transaction: Option<&Transaction>,
        sent: bool,
    ) -> ToolOutcome {
        let family = result.family();
        let category = family.category();
        let where_ = if sent {
            "OPP rejected it"
        } else {
            "paywarden refused it before sending anything to OPP, by OPP's own rules"
        };
        let message = format!(
            "{tool} was rejected ({where_}): result code {} \"{}\" - {reason}. This code is in OPP's \"{}\" group ({}). What to do: {}",
            result.code,
            result.description,
            family.description(),
            serde_label(&category),
            category.guidance(),
        );
        ToolOutcome {
            structured: serde_json::json!({
                "error": {
                    "kind": "rejected",
                    "resultCode": result.code,
                    "description": result.description,
                    "resultFamily": serde_label(&family),
                    "resultCategory": serde_label(&category),
                    "reason": reason,
                    "guidance": category.guidance(),
                    "sentToProvider": sent,
                },
                "transaction": transaction.map(Transaction::view),
                "sandbox": self.pipeline.sandbox(),
            }),
            is_error: true,
            text: self.pipeline.decorate(&message),
            audit: AuditFacts {
                outcome: "rejected".into(),
                result_code: Some(result.code.clone()),
                provider_request_id: transaction.and_then(|t| t.ndc.clone()),
                transaction_id: transaction.map(|t| t.id.clone()),
            },
        }
    }

    /// Turns a connector failure into a tool error and says whether the operation may have
    /// happened. `before_write` is true for the pre-check read, after which nothing was sent.
    fn provider_failure(
        &self,
        tool: &str,
        error: OppError,
        before_write: bool,
    ) -> (ToolOutcome, Settlement) {
        let (kind, message, settlement, code) = match &error {
            OppError::Authentication { result } => (
                "authentication",
                format!(
                    "{tool} failed: OPP refused the credentials ({} {}). Check the X-Entity-Id and X-Token headers (or PAYWARDEN_ENTITY_ID/PAYWARDEN_TOKEN for stdio); nothing was changed.",
                    result.code, result.description
                ),
                Settlement::Final,
                Some(result.code.clone()),
            ),
            OppError::InvalidParameters {
                result,
                parameter_errors,
            } => (
                "invalid_parameters",
                format!(
                    "{tool} failed: OPP refused the parameters ({} {}): {}. Nothing was changed.",
                    result.code,
                    result.description,
                    parameter_errors
                        .iter()
                        .map(|p| format!("{}: {}", p.name, p.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                Settlement::Final,
                Some(result.code.clone()),
            ),
            OppError::Timeout(d) if before_write => (
                "timeout",
                format!("{tool} failed: OPP did not answer the pre-check within {d:?}; nothing was sent. Retry later."),
                Settlement::NotSent,
                None,
            ),
            OppError::Timeout(d) => (
                "timeout_outcome_unknown",
                format!(
                    "{tool}: OPP did not answer within {d:?}, so the outcome is UNKNOWN: the operation may or may not have happened. Do not retry blindly: call get_transactions with the referenced id to see whether it went through."
                ),
                Settlement::Unknown,
                None,
            ),
            OppError::Unreachable { reason, .. } => (
                "unreachable",
                format!("{tool} failed: OPP could not be reached ({reason}); nothing was sent. Retry later, or check the server's OPP base URL."),
                Settlement::NotSent,
                None,
            ),
            OppError::UnexpectedResponse { .. } if before_write => (
                "unexpected_response",
                format!("{tool} failed: {error}; nothing was sent."),
                Settlement::NotSent,
                None,
            ),
            OppError::UnexpectedResponse { .. } => (
                "unexpected_response",
                format!("{tool}: {error}. The outcome is unknown: check with get_transactions before retrying."),
                Settlement::Unknown,
                None,
            ),
            OppError::NotFound { result } | OppError::Rejected { result, .. } => (
                "rejected",
                format!("{tool} failed: {} {}", result.code, result.description),
                Settlement::Final,
                Some(result.code.clone()),
            ),
        };
        let mut outcome = self.pipeline.error_outcome(kind, &message, code.as_deref());
        outcome.audit.outcome = "error".into();
        (outcome, settlement)
    }

    /// `get_transactions`: by id (with linked transactions) or by merchant reference.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] when neither or both of id and merchantTransactionId
    /// are given or they are malformed; [`ServiceError::Store`].
    pub async fn get_transactions(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        id: Option<String>,
        merchant_transaction_id: Option<String>,
        include_linked: Option<bool>,
        payment_types: Vec<String>,
    ) -> Result<ToolOutcome, ServiceError> {
        self.pipeline
            .read(caller, TOOLSET, "get_transactions", arguments, || async {
                let query = LookupQuery {
                    id: id.as_deref().map(|i| validate_id("id", i)).transpose()?,
                    merchant_transaction_id: validate_merchant_reference(merchant_transaction_id)?,
                    include_linked: include_linked.unwrap_or(true),
                    payment_types: parse_payment_types("paymentTypes", &payment_types)?,
                };
                let credentials = Self::credentials(caller);
                let found = match (&query.id, &query.merchant_transaction_id) {
                    (Some(id), None) => {
                        self.client
                            .query_by_id(&credentials, id, query.include_linked, &query.payment_types)
                            .await
                    }
                    (None, Some(m)) => {
                        match self.client.query_by_merchant_transaction_id(&credentials, m).await {
                            Ok(found) if query.include_linked => {
                                // OPP links by id only: expand each match to its payment.
                                let mut all: Vec<Transaction> = Vec::new();
                                let mut failure = None;
                                for tx in &found {
                                    if all.iter().any(|t| t.id == tx.id) {
                                        continue;
                                    }
                                    match self
                                        .client
                                        .query_by_id(&credentials, &tx.id, true, &query.payment_types)
                                        .await
                                    {
                                        Ok(linked) => {
                                            for l in linked {
                                                if !all.iter().any(|t| t.id == l.id) {
                                                    all.push(l);
                                                }
                                            }
                                        }
                                        Err(e) => {
                                            failure = Some(e);
                                            break;
                                        }
                                    }
                                }
                                match failure {
                                    Some(e) => Err(e),
                                    None => Ok(all),
                                }
                            }
                            Ok(found) => Ok(found
                                .into_iter()
                                .filter(|t| {
                                    query.payment_types.is_empty()
                                        || query.payment_types.contains(&t.payment_type)
                                })
                                .collect()),
                            Err(e) => Err(e),
                        }
                    }
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            "give either id or merchantTransactionId, not both",
                        ))
                    }
                    (None, None) => {
                        return Err(invalid(
                            "give id (an OPP transaction id) or merchantTransactionId; to list transactions by date, use search_transactions",
                        ))
                    }
                };
                match found {
                    Ok(transactions) => {
                        let (code, description) =
                            paywarden_domain::result_code::codes::SUCCESSFUL_REQUEST;
                        let output = LookupOutput {
                            result: ResultInfo::new(code, description),
                            payments: transactions.iter().map(Transaction::view).collect(),
                            sandbox: self.pipeline.sandbox(),
                        };
                        let structured =
                            serde_json::to_value(&output).map_err(crate::store::StoreError::from)?;
                        Ok(ToolOutcome {
                            text: self.pipeline.decorate(&format!(
                                "Found {} transaction(s).\n{}",
                                output.payments.len(),
                                structured
                            )),
                            structured,
                            is_error: false,
                            audit: AuditFacts {
                                outcome: "ok".into(),
                                result_code: Some(code.to_string()),
                                provider_request_id: None,
                                transaction_id: query.id.clone(),
                            },
                        })
                    }
                    Err(OppError::NotFound { result }) => Ok(self.pipeline.error_outcome(
                        "not_found",
                        &format!(
                            "No transaction found ({} {}): check the id or merchantTransactionId; transactions of other entities are never visible.",
                            result.code, result.description
                        ),
                        Some(&result.code),
                    )),
                    Err(e) => Ok(self.provider_failure("get_transactions", e, true).0),
                }
            })
            .await
    }

    /// `search_transactions`: a date-range report from OPP (with OPP's own payment type and
    /// method filters), then paywarden's filters (result category, currency, amount range,
    /// merchant reference) and paging.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] for malformed filters; [`ServiceError::Store`].
    pub async fn search_transactions(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        params: SearchParams,
    ) -> Result<ToolOutcome, ServiceError> {
        self.pipeline
            .read(caller, TOOLSET, "search_transactions", arguments, || async {
                let now = Utc::now();
                let to = match &params.date_to {
                    Some(raw) => parse_date("dateTo", raw, true)?,
                    None => now,
                };
                let from = match &params.date_from {
                    Some(raw) => parse_date("dateFrom", raw, false)?,
                    None => to - ChronoDuration::days(30),
                };
                if from > to {
                    return Err(invalid("dateFrom is after dateTo: swap them"));
                }
                let payment_types = parse_payment_types("paymentTypes", &params.payment_types)?;
                let mut categories = Vec::new();
                for c in &params.result_categories {
                    let known = [
                        "success",
                        "success_manual_review",
                        "pending",
                        "rejected_by_bank",
                        "rejected_by_validation",
                        "communication_error",
                        "system_error",
                        "unknown",
                    ];
                    if !known.contains(&c.as_str()) {
                        return Err(invalid(format!(
                            "resultCategories contains {c:?}: use {}",
                            known.join(", ")
                        )));
                    }
                    categories.push(c.clone());
                }
                let currency = params
                    .currency
                    .as_deref()
                    .map(Currency::from_code)
                    .transpose()
                    .map_err(|e| invalid(e.to_string()))?;
                let bound = |field: &str, raw: &Option<String>| -> Result<Option<Money>, ServiceError> {
                    match raw {
                        None => Ok(None),
                        Some(raw) => {
                            let Some(currency) = currency else {
                                return Err(invalid(format!(
                                    "{field} needs currency: amounts are compared in one currency's minor units"
                                )));
                            };
                            Money::parse(raw, currency)
                                .map(Some)
                                .map_err(|e| invalid(format!("{field}: {e}")))
                        }
                    }
                };
                let amount_min = bound("amountMin", &params.amount_min)?;
                let amount_max = bound("amountMax", &params.amount_max)?;
                if let (Some(a), Some(b)) = (amount_min, amount_max) {
                    if a.minor_units() > b.minor_units() {
                        return Err(invalid("amountMin is larger than amountMax"));
                    }
                }
                let merchant = validate_merchant_reference(params.merchant_transaction_id.clone())?;
                let limit = params.limit.unwrap_or(20);
                if !(1..=100).contains(&limit) {
                    return Err(invalid("limit must be between 1 and 100"));
                }
                let page_no = params.page_no.unwrap_or(1);
                if page_no == 0 {
                    return Err(invalid("pageNo starts at 1"));
                }
                for m in &params.payment_methods {
                    if m.is_empty() || m.len() > 8 || !m.chars().all(|c| c.is_ascii_alphanumeric()) {
                        return Err(invalid(format!(
                            "paymentMethods contains {m:?}: use OPP payment method codes such as CC (credit card) or DC (debit card)"
                        )));
                    }
                }

                let credentials = Self::credentials(caller);
                let mut scanned = Vec::new();
                let mut opp_page = 1;
                let mut truncated = false;
                loop {
                    let report = ReportQuery {
                        from,
                        to,
                        payment_types: payment_types.clone(),
                        payment_methods: params.payment_methods.clone(),
                        limit: 100,
                        page_no: opp_page,
                    };
                    let page = match self.client.report(&credentials, &report).await {
                        Ok(p) => p,
                        Err(e) => return Ok(self.provider_failure("search_transactions", e, true).0),
                    };
                    let n = page.transactions.len();
                    scanned.extend(page.transactions);
                    if scanned.len() >= SEARCH_SCAN_LIMIT {
                        truncated = page.total_pages.is_some_and(|t| t > opp_page) || n == 100;
                        scanned.truncate(SEARCH_SCAN_LIMIT);
                        break;
                    }
                    let more = match page.total_pages {
                        Some(total) => opp_page < total,
                        None => n == 100,
                    };
                    if !more || n == 0 {
                        break;
                    }
                    opp_page += 1;
                }
                let matches: Vec<&Transaction> = scanned
                    .iter()
                    .filter(|t| {
                        categories.is_empty()
                            || categories.contains(&serde_label(&t.result.category()))
                    })
                    .filter(|t| currency.is_none_or(|c| t.amount.currency() == c))
                    .filter(|t| amount_min.is_none_or(|m| t.amount.minor_units() >= m.minor_units()))
                    .filter(|t| amount_max.is_none_or(|m| t.amount.minor_units() <= m.minor_units()))
                    .filter(|t| {
                        merchant.is_none()
                            || t.merchant_transaction_id.as_deref() == merchant.as_deref()
                    })
                    .collect();
                let total_count = matches.len() as u64;
                let total_pages = u32::try_from(matches.len().div_ceil(limit as usize)).unwrap_or(u32::MAX);
                let start = (page_no as usize - 1).saturating_mul(limit as usize);
                let records: Vec<TransactionView> = matches
                    .iter()
                    .skip(start)
                    .take(limit as usize)
                    .map(|t| t.view())
                    .collect();
                let (code, description) = paywarden_domain::result_code::codes::SUCCESSFUL_REQUEST;
                let output = SearchOutput {
                    result: ResultInfo::new(code, description),
                    records,
                    page_no,
                    limit,
                    total_count,
                    total_pages,
                    date_from: from.format("%Y-%m-%d %H:%M:%S").to_string(),
                    date_to: to.format("%Y-%m-%d %H:%M:%S").to_string(),
                    truncated,
                    sandbox: self.pipeline.sandbox(),
                };
                let structured = serde_json::to_value(&output).map_err(crate::store::StoreError::from)?;
                Ok(ToolOutcome {
                    text: self.pipeline.decorate(&format!(
                        "{} match(es) between {} and {} UTC; page {} of {} ({} shown).\n{}",
                        total_count,
                        output.date_from,
                        output.date_to,
                        page_no,
                        total_pages.max(1),
                        output.records.len(),
                        structured
                    )),
                    structured,
                    is_error: false,
                    audit: AuditFacts {
                        outcome: "ok".into(),
                        result_code: Some(code.to_string()),
                        ..AuditFacts::default()
                    },
                })
            })
            .await
    }
}
