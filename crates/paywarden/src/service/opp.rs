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

use super::{
    gate::{derived_key, Gate, GateRequest},
    reconcile::{Found, Intent, Reconciler},
    safety::{binding_hash, ApprovalView, ConfirmationView, PreviewView},
    AuditFacts, Caller, Pipeline, ServiceError, Settlement, ToolOutcome,
};
use crate::{
    connectors::opp::{BackofficeRequest, OppClient, OppCredentials, OppError, ReportQuery},
    model::{serde_label, ResultInfo, Transaction, TransactionView},
    policy::{Decision, PolicyInput},
    store::{Approval, ApprovalStatus},
};

/// The toolset's name in configuration and the audit log.
pub const TOOLSET: &str = "opp";

/// The OPP custom parameter (`customParameters[PAYWARDEN_REF]`) carrying paywarden's derived
/// reference of an idempotency key ([`derived_merchant_reference`]) on every keyed operation,
/// whatever `merchantTransactionId` the caller chose: how an operation whose answer paywarden
/// never heard is recognised at OPP.
pub const REFERENCE_PARAMETER: &str = "PAYWARDEN_REF";

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
    /// A confirmation token from an earlier preview.
    pub confirmation_token: Option<String>,
    /// An approval id from an earlier `human` decision.
    pub approval_id: Option<String>,
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
    /// `confirmationToken`.
    pub confirmation_token: Option<String>,
    /// `approvalId`.
    pub approval_id: Option<String>,
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

/// The output of the six back-office tools (and `get_approval`): the new transaction in OPP's
/// shape plus balances when executed; a preview and token when confirmation is required; the
/// approval request when a person must decide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackofficeOutput {
    /// `executed`, `confirmation_required`, `approval_pending`, `approval_denied` or
    /// `approval_expired`.
    pub status: String,
    /// The transaction OPP created (when executed).
    #[serde(flatten)]
    pub transaction: Option<TransactionView>,
    /// The referenced transaction's balances after this operation (when executed).
    pub balances: Option<BalancesView>,
    /// The confirmation request (when `confirmation_required`).
    pub confirmation: Option<ConfirmationView>,
    /// The approval request (when a person decides).
    pub approval: Option<ApprovalView>,
    /// The signed receipt of the movement (when executed): see `paywarden receipt verify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub receipt: Option<crate::receipts::Receipt>,
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
    /// The transactions found: by id or merchant reference, oldest first (with linked
    /// transactions when asked); with neither, the most recent, newest first.
    pub payments: Vec<TransactionView>,
    /// Present when neither `id` nor `merchantTransactionId` was given: which page of the most
    /// recent transactions this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent: Option<RecentPage>,
    /// True when the offline emulator answered.
    pub sandbox: bool,
}

/// The page of most recent transactions `get_transactions` returns when called without `id` or
/// `merchantTransactionId` (OPP's transaction report over the last
/// [`RECENT_WINDOW_DAYS`] days, newest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecentPage {
    /// This page's number, from 1.
    pub page_no: u32,
    /// Page size.
    pub limit: u32,
    /// Transactions in the window across all pages.
    pub total_count: u64,
    /// Pages in the window.
    pub total_pages: u32,
    /// Start of the window (UTC, `YYYY-MM-DD HH:MM:SS`).
    pub date_from: String,
    /// End of the window (now).
    pub date_to: String,
    /// True when more transactions than the scan limit fall in the window; older ones were not
    /// read (use search_transactions with a narrower range).
    pub truncated: bool,
}

/// How far back `get_transactions` without an id looks: the same default window as
/// `search_transactions` (30 days before now).
pub const RECENT_WINDOW_DAYS: i64 = 30;

/// `get_transactions` parameters, as the OPP seed names them (all optional).
#[derive(Debug, Clone, Default)]
pub struct LookupParams {
    /// OPP transaction id.
    pub id: Option<String>,
    /// Merchant reference.
    pub merchant_transaction_id: Option<String>,
    /// Include linked transactions (default true).
    pub include_linked: Option<bool>,
    /// Only these payment types.
    pub payment_types: Vec<String>,
    /// Page size for the most-recent listing, 1-100 (default 20).
    pub limit: Option<u32>,
    /// Page number for the most-recent listing, from 1 (default 1).
    pub page_no: Option<u32>,
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

/// The merchant reference paywarden sends to OPP for an idempotency key: `pw` + 30 hex
/// characters of SHA-256(entity, key), stable across retries and within OPP's 8-255 limit.
pub fn derived_merchant_reference(entity_id: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{entity_id}\n{key}").as_bytes());
    format!("pw{}", &hex::encode(digest)[..30])
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
        let confirmation_token = match params.confirmation_token {
            Some(t) if t.trim().is_empty() || t.len() > 100 => {
                return Err(invalid(
                    "confirmationToken must be the token a preview returned (pwc_...)",
                ))
            }
            other => other,
        };
        let approval_id = match params.approval_id {
            Some(a) if a.trim().is_empty() || a.len() > 100 => {
                return Err(invalid(
                    "approvalId must be the id an approval request returned (apr_...)",
                ))
            }
            other => other,
        };
        Ok(BackofficeCommand {
            operation,
            reference_id,
            amount,
            merchant_transaction_id: validate_merchant_reference(params.merchant_transaction_id)?,
            idempotency_key,
            confirmation_token,
            approval_id,
        })
    }

    /// Runs a back-office tool through the whole pipeline: validation, idempotency (a retry
    /// replays the first outcome), OPP's state rules and the refund window, policy
    /// (allow / confirm / human / deny), then, under a per-transaction lease, the rules again
    /// on fresh provider state and the OPP call, then audit.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] for malformed arguments (audited);
    /// [`ServiceError::Store`] when paywarden's database fails. Rejections, previews and
    /// approval requests are outcomes, not errors.
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
        if self.pipeline.safety().config.read_only {
            let outcome = self.pipeline.error_outcome(
                "read_only",
                &format!("{tool} is refused: this paywarden runs in read-only mode, where no tool moves money."),
                None,
            );
            return self
                .pipeline
                .read(caller, TOOLSET, tool, arguments, || async { Ok(outcome) })
                .await;
        }
        let binding = binding_hash(tool, arguments);
        // With no key of its own, a confirmed or approved call is keyed by its token or
        // approval, so a retry of it can never move money twice.
        let key = derived_key(
            command.idempotency_key.as_deref(),
            command.confirmation_token.as_deref(),
            command.approval_id.as_deref(),
        );
        let mut command = command;
        if let Some(key) = &key {
            // The key reaches OPP in OPP's own form, the merchant reference, unless the caller
            // chose one: that is how an unknown outcome is looked up before any retry.
            if command.merchant_transaction_id.is_none() {
                command.merchant_transaction_id =
                    Some(derived_merchant_reference(&caller.entity_id, key));
            }
        }
        // Operations that reached OPP after their key was released are recorded and reported
        // first; then an unknown outcome of this key is resolved at OPP before anything is sent.
        self.pipeline.check_late(self, caller, TOOLSET).await;
        if let Some(key) = &key {
            self.pipeline.reconcile(self, caller, key, &binding).await?;
        }
        self.pipeline
            .write(caller, TOOLSET, tool, arguments, key.as_deref(), || {
                self.decide(caller, command, arguments, binding, key.clone())
            })
            .await
    }

    /// Reads the referenced transaction's payment from OPP and applies OPP's state rules and
    /// the refund window. `Ok(Err(outcome))` is a refusal to return as is.
    async fn check(
        &self,
        caller: &Caller,
        command: &BackofficeCommand,
    ) -> Result<
        Result<(Transaction, Vec<Transaction>, Money), (ToolOutcome, Settlement)>,
        ServiceError,
    > {
        let tool = tool_of(command.operation);
        let credentials = Self::credentials(caller);
        let linked = match self
            .client
            .query_by_id(&credentials, &command.reference_id, true, &[])
            .await
        {
            Ok(linked) => linked,
            Err(OppError::NotFound { .. }) => {
                let (code, description) =
                    paywarden_domain::result_code::codes::REFERENCE_NOT_EXISTING;
                return Ok(Err((
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
                )));
            }
            Err(e) => return Ok(Err(self.provider_failure(tool, e, true))),
        };
        let Some(target) = linked
            .iter()
            .find(|t| t.id == command.reference_id)
            .cloned()
        else {
            let (code, description) = paywarden_domain::result_code::codes::REFERENCE_NOT_EXISTING;
            return Ok(Err((
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
            )));
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
                return Ok(Err((
                    self.rejection_outcome(
                        tool,
                        &ResultInfo::new(rejection.code, rejection.description),
                        &rejection.reason,
                        None,
                        false,
                    ),
                    Settlement::Final,
                )))
            }
        };
        if command.operation == Operation::Refund {
            let window = self.pipeline.safety().config.refund_window_days;
            if let Some(at) = target.timestamp {
                let age = Utc::now() - at;
                if age > ChronoDuration::days(window) {
                    return Ok(Err((
                        self.pipeline.error_outcome(
                            "refund_window",
                            &format!(
                                "{tool} is refused: {} {} was made {} days ago, past the {window}-day refund window. paywarden refuses refunds of older payments whatever is asked; handle this case outside the agent.",
                                target.payment_type.code(),
                                target.id,
                                age.num_days()
                            ),
                            None,
                        ),
                        Settlement::Final,
                    )));
                }
            }
        }
        Ok(Ok((target, linked, amount)))
    }

    fn preview(
        &self,
        caller: &Caller,
        command: &BackofficeCommand,
        target: &Transaction,
        linked: &[Transaction],
        amount: Money,
    ) -> PreviewView {
        // The card of the payment's initial transaction names the shopper.
        let card = linked
            .iter()
            .filter(|t| t.card.is_some())
            .find(|t| {
                matches!(
                    t.payment_type,
                    PaymentType::Preauthorization | PaymentType::Debit
                )
            })
            .and_then(|t| t.card.clone());
        let shopper = match card {
            Some(c) => format!(
                "the shopper's card {}****{}{}",
                c.bin.as_deref().unwrap_or(""),
                c.last4_digits.as_deref().unwrap_or("????"),
                c.holder.map(|h| format!(" ({h})")).unwrap_or_default()
            ),
            None => "the shopper".to_string(),
        };
        let merchant = format!("merchant entity {}", caller.entity_id);
        let (from, to) = match command.operation {
            Operation::Capture | Operation::Rebill => (shopper, merchant),
            Operation::Refund | Operation::Chargeback => (merchant, shopper),
            Operation::ChargebackReversal => (shopper, merchant),
            Operation::Reversal => (
                format!("{shopper} (the authorisation hold is released)"),
                "nobody: nothing is settled".to_string(),
            ),
        };
        PreviewView {
            tool: tool_of(command.operation).to_string(),
            operation: format!(
                "{} ({})",
                command.operation.payment_type().description(),
                command.operation.payment_type().code()
            ),
            entity: caller.entity_id.clone(),
            reference_id: target.id.clone(),
            reference_payment_type: target.payment_type.code().to_string(),
            amount: amount.to_decimal_string(),
            amount_minor: amount.minor_units(),
            currency: amount.currency().code().to_string(),
            from,
            to,
            sandbox: self.pipeline.sandbox(),
        }
    }

    async fn decide(
        &self,
        caller: &Caller,
        command: BackofficeCommand,
        arguments: &serde_json::Value,
        binding: String,
        key: Option<String>,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let tool = tool_of(command.operation);
        let (target, linked, amount) = match self.check(caller, &command).await? {
            Ok(checked) => checked,
            Err(refusal) => return Ok(refusal),
        };
        let moved_today = self
            .pipeline
            .store()
            .moved_today(&caller.entity_id, amount.currency().code())
            .await?;
        let policy = PolicyInput {
            toolset: TOOLSET.into(),
            tool: tool.into(),
            entity: caller.entity_id.clone(),
            moves_money: true,
            amount_minor: Some(amount.minor_units()),
            currency: Some(amount.currency().code().to_string()),
            transaction_age_days: target.timestamp.map(|t| (Utc::now() - t).num_days()),
            moved_today_minor: moved_today,
            client: caller.client_name.clone(),
        };
        let preview = self.preview(caller, &command, &target, &linked, amount);
        let gate = self
            .pipeline
            .gate(GateRequest {
                caller,
                toolset: TOOLSET,
                tool,
                arguments,
                binding: &binding,
                preview,
                policy,
                floor: Decision::Allow,
                confirmation_token: command.confirmation_token.as_deref(),
                approval_id: command.approval_id.as_deref(),
                argument_names: ("confirmationToken", "approvalId"),
                output_defaults: serde_json::json!({ "balances": null }),
                key: key.as_deref(),
            })
            .await?;
        match gate {
            Gate::Stop(outcome, settlement) => Ok((outcome, settlement)),
            Gate::Execute(claims) => {
                let (mut outcome, settlement) = self
                    .execute_locked(caller, &command, key.as_deref())
                    .await?;
                self.pipeline
                    .attach_receipt(&claims, &mut outcome, settlement, "opp");
                self.pipeline
                    .finish_gated(&claims, &outcome, settlement)
                    .await
                    .map_err(|e| match (e, settlement) {
                        (ServiceError::Store(source), Settlement::Final | Settlement::Unknown) => {
                            self.pipeline.unrecorded(source)
                        }
                        (e, _) => e,
                    })?;
                Ok((outcome, settlement))
            }
        }
    }

    fn approval_view(&self, approval: &Approval) -> ApprovalView {
        self.pipeline.approval_view(approval)
    }

    /// Holds the per-transaction lease, re-checks OPP's rules on fresh provider state, and
    /// sends the operation. Concurrent operations on one transaction run one after another,
    /// across processes sharing the database.
    async fn execute_locked(
        &self,
        caller: &Caller,
        command: &BackofficeCommand,
        key: Option<&str>,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let tool = tool_of(command.operation);
        let store = self.pipeline.store();
        let holder = uuid::Uuid::new_v4().to_string();
        // The lease outlives the provider timeout, so a crashed holder cannot block forever.
        let lease = ChronoDuration::milliseconds(
            i64::try_from(self.client.timeout().as_millis()).unwrap_or(i64::MAX / 4) * 3 + 5_000,
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if store
                .try_lock_transaction(&caller.entity_id, &command.reference_id, &holder, lease)
                .await?
            {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Ok((
                    self.pipeline.error_outcome(
                        "busy",
                        &format!("{tool}: another operation on {} has been running for 30 s; nothing was sent. Retry with the same idempotencyKey.", command.reference_id),
                        None,
                    ),
                    Settlement::NotSent,
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        }
        let result = self.execute_unlocked(caller, command, key).await;
        // Past the send, a failure to give the lease back must not hide the outcome: the
        // lease runs out on its own.
        if let Err(e) = store
            .unlock_transaction(&caller.entity_id, &command.reference_id, &holder)
            .await
        {
            tracing::warn!(error = %e, "could not release a transaction lease; it runs out on its own");
        }
        result
    }

    /// Sends the operation. With an idempotency key, the operation carries paywarden's derived
    /// reference of the key (`customParameters[PAYWARDEN_REF]`), and what is sent is recorded on
    /// the key first ([`Intent`]), so an outcome paywarden never hears is found at OPP later.
    /// Once sent, no failure says that nothing was sent.
    async fn execute_unlocked(
        &self,
        caller: &Caller,
        command: &BackofficeCommand,
        key: Option<&str>,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let tool = tool_of(command.operation);
        let (target, linked, amount) = match self.check(caller, command).await? {
            Ok(checked) => checked,
            Err(refusal) => return Ok(refusal),
        };
        let tree: Vec<_> = linked.iter().map(Transaction::ledger_record).collect();
        let credentials = Self::credentials(caller);
        // An explicit amount (OPP requires one) except for a reversal, which voids the whole
        // authorisation.
        let sent_amount = (command.operation != Operation::Reversal).then_some(amount);
        let marker = key.map(|k| derived_merchant_reference(&caller.entity_id, k));
        let request = BackofficeRequest {
            payment_type: command.operation.payment_type(),
            amount: sent_amount,
            merchant_transaction_id: command.merchant_transaction_id.clone(),
            custom_parameters: marker
                .iter()
                .map(|m| (REFERENCE_PARAMETER.to_string(), m.clone()))
                .collect(),
        };
        if let (Some(key), Some(marker)) = (key, marker) {
            let intent = Intent {
                toolset: TOOLSET.into(),
                tool: tool.into(),
                reference_id: command.reference_id.clone(),
                operation: command.operation.payment_type().code().into(),
                amount_minor: sent_amount.map(|m| m.minor_units()),
                currency: amount.currency().code().into(),
                marker,
                settle_window_ms: u64::try_from(self.pipeline.settle_window().as_millis())
                    .unwrap_or(u64::MAX),
                extra: serde_json::Value::Null,
            };
            self.pipeline
                .store()
                .record_idempotent_intent(
                    &caller.entity_id,
                    key,
                    &serde_json::to_value(&intent).map_err(crate::store::StoreError::from)?,
                )
                .await?;
        }
        match self
            .client
            .backoffice(&credentials, &command.reference_id, &request)
            .await
        {
            Ok(created) => match self
                .executed(caller, command, &target, &tree, &created)
                .await
            {
                Ok(done) => Ok(done),
                // OPP executed it but paywarden could not record it: the key stays blocked as
                // an unknown outcome, and the retry finds the operation at OPP and records it.
                Err(e) => {
                    tracing::error!(error = %e, transaction = %created.id, "OPP executed an operation paywarden could not record yet");
                    Ok((
                        self.pipeline.error_outcome(
                            "not_recorded",
                            &format!(
                                "{tool}: OPP executed it (transaction {}, {} {}), but paywarden could not record it ({e}). Do not start a new operation: retry this exact call with the same idempotencyKey; paywarden finds it at OPP and records it, and never sends it twice.",
                                created.id,
                                created.amount.to_decimal_string(),
                                created.amount.currency().code()
                            ),
                            Some(&created.result.code),
                        ),
                        Settlement::Unknown,
                    ))
                }
            },
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

    /// Records an operation OPP executed (the movement) and builds the tool's outcome.
    async fn executed(
        &self,
        caller: &Caller,
        command: &BackofficeCommand,
        target: &Transaction,
        tree: &[paywarden_domain::TxRecord],
        created: &Transaction,
    ) -> Result<(ToolOutcome, Settlement), crate::store::StoreError> {
        let tool = tool_of(command.operation);
        self.pipeline
            .store()
            .record_movement(
                &caller.entity_id,
                TOOLSET,
                tool,
                &target.id,
                &created.id,
                created.amount.minor_units(),
                created.amount.currency().code(),
            )
            .await?;
        let mut after = tree.to_vec();
        after.push(created.ledger_record());
        let balances = balances_view(target, &after);
        let output = BackofficeOutput {
            status: "executed".into(),
            transaction: Some(created.view()),
            balances: Some(balances.clone()),
            confirmation: None,
            approval: None,
            sandbox: self.pipeline.sandbox(),
            idempotent_replay: false,
            receipt: None,
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
        let structured = serde_json::to_value(&output)?;
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
                    receipt: None,
                },
            },
            Settlement::Final,
        ))
    }

    /// `get_approval`: the state of an approval request; once approved, runs the operation
    /// (exactly once) and returns its outcome; once executed, returns that outcome again.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] for a malformed id; [`ServiceError::Store`].
    pub async fn get_approval(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        approval_id: String,
    ) -> Result<ToolOutcome, ServiceError> {
        self.pipeline
            .read(caller, TOOLSET, "get_approval", arguments, || async {
                let store = self.pipeline.store();
                let approval = match store.approval(&approval_id).await? {
                    Some(a) if a.entity_id == caller.entity_id => a,
                    _ => {
                        return Ok(self.pipeline.error_outcome(
                            "not_found",
                            &format!("no approval request {approval_id:?} exists for this entity"),
                            None,
                        ))
                    }
                };
                match approval.status {
                    ApprovalStatus::Approved => {
                        let operation = match approval.tool.as_str() {
                            "perform_capture" => Operation::Capture,
                            "perform_reversal" => Operation::Reversal,
                            "perform_refund" => Operation::Refund,
                            "perform_rebill" => Operation::Rebill,
                            "perform_chargeback" => Operation::Chargeback,
                            "perform_chargeback_reversal" => Operation::ChargebackReversal,
                            other => {
                                return Ok(self.pipeline.error_outcome(
                                    "not_executable",
                                    &format!("approval {approval_id} is for {other}, which get_approval cannot run; call that tool with approvalId"),
                                    None,
                                ))
                            }
                        };
                        let args = &approval.arguments;
                        let field = |name: &str| args.get(name).and_then(|v| v.as_str()).map(String::from);
                        let params = BackofficeParams {
                            reference_id: field("referenceId").unwrap_or_default(),
                            amount: field("amount"),
                            currency: field("currency"),
                            merchant_transaction_id: field("merchantTransactionId"),
                            idempotency_key: None,
                            confirmation_token: None,
                            approval_id: Some(approval.id.clone()),
                        };
                        let command = Self::validate_backoffice(operation, params)?;
                        let key = format!("approval:{}", approval.id);
                        let binding = approval.request_hash.clone();
                        // Under the approval's own idempotency key: a concurrent follow-up
                        // call with approvalId replays instead of running twice.
                        let mut bound = args.clone();
                        if let serde_json::Value::Object(map) = &mut bound {
                            map.insert("approvalId".into(), approval.id.clone().into());
                        }
                        self.pipeline
                            .write(caller, TOOLSET, &approval.tool, &bound, Some(&key), || async {
                                // The same path as re-calling the tool with approvalId: OPP's
                                // rules on fresh state, the policy, the approval claimed only
                                // if what would move now is what the person approved.
                                self.decide(caller, command.clone(), &bound, binding.clone(), Some(key.clone())).await
                            })
                            .await
                    }
                    ApprovalStatus::Executed => {
                        let outcome = approval.outcome.clone().unwrap_or_default();
                        let mut structured = outcome.get("structured").cloned().unwrap_or_default();
                        if let serde_json::Value::Object(map) = &mut structured {
                            map.insert("idempotentReplay".into(), serde_json::Value::Bool(true));
                        }
                        let text = outcome.get("text").and_then(|t| t.as_str()).unwrap_or_default();
                        let text = text
                            .strip_prefix(super::SANDBOX_BANNER)
                            .map(|t| t.trim_start_matches('\n'))
                            .unwrap_or(text);
                        Ok(ToolOutcome {
                            structured,
                            is_error: outcome.get("isError").and_then(|v| v.as_bool()).unwrap_or(false),
                            text: self.pipeline.decorate(&format!("Approval {} was executed; this is its outcome (no money moved again).\n{text}", approval.id)),
                            audit: AuditFacts { outcome: "ok".into(), transaction_id: Some(approval.id.clone()), ..AuditFacts::default() },
                        })
                    }
                    status => {
                        let label = match status {
                            ApprovalStatus::Denied => "approval_denied",
                            ApprovalStatus::Expired => "approval_expired",
                            _ => "approval_pending",
                        };
                        let view = self.approval_view(&approval);
                        let output = BackofficeOutput {
                            status: label.into(),
                            transaction: None,
                            balances: None,
                            confirmation: None,
                            approval: Some(view.clone()),
                            sandbox: self.pipeline.sandbox(),
                            idempotent_replay: false,
                            receipt: None,
                        };
                        let structured = serde_json::to_value(&output).map_err(crate::store::StoreError::from)?;
                        let text = match status {
                            ApprovalStatus::Denied => format!("Approval {} was DENIED by {}: nothing will move. Do not retry this operation.", approval.id, view.decided_by.as_deref().unwrap_or("an operator")),
                            ApprovalStatus::Expired => format!("Approval {} EXPIRED without a decision: nothing moved. Ask again only if the user still wants it.", approval.id),
                            _ => format!("Approval {} is {}: waiting for a person at {}.", approval.id, view.status, view.url),
                        };
                        Ok(ToolOutcome {
                            text: self.pipeline.decorate(&format!("{text}\n{structured}")),
                            structured,
                            is_error: false,
                            audit: AuditFacts { outcome: "ok".into(), transaction_id: Some(approval.id.clone()), ..AuditFacts::default() },
                        })
                    }
                }
            })
            .await
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
                receipt: None,
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
            // OPP refuses credentials before it processes anything: nothing moved, so whatever
            // was claimed for this call (key, approval, confirmation) is given back.
            OppError::Authentication { result } => (
                "authentication",
                format!(
                    "{tool} failed: OPP refused the credentials ({} {}). Check the X-Entity-Id and X-Token headers (or PAYWARDEN_ENTITY_ID/PAYWARDEN_TOKEN for stdio); nothing was changed.",
                    result.code, result.description
                ),
                Settlement::NotSent,
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
                    "{tool}: OPP did not answer within {d:?}, so the outcome is UNKNOWN: the operation may or may not have happened. Do not start a new operation: retry this exact call with the same idempotencyKey (paywarden asks OPP first and never sends it twice), or call get_transactions with the referenced id to see whether it went through."
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
            OppError::ConnectionLost { reason, .. } if before_write => (
                "connection_lost",
                format!("{tool} failed: the connection to OPP broke while paywarden read the referenced transaction ({reason}); nothing was sent. Retry later."),
                Settlement::NotSent,
                None,
            ),
            OppError::ConnectionLost { reason, .. } => (
                "connection_lost_outcome_unknown",
                format!(
                    "{tool}: the connection to OPP broke after the request may have reached it ({reason}), so the outcome is UNKNOWN: the operation may or may not have happened. Do not start a new operation: retry this exact call with the same idempotencyKey (paywarden asks OPP first and never sends it twice), or call get_transactions with the referenced id."
                ),
                Settlement::Unknown,
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

    /// The policy's word on a read: `None` to go ahead, or the refusal. Reads cannot be
    /// confirmed or approved; a policy that says anything but `allow` for one refuses it.
    fn read_refusal(&self, caller: &Caller, tool: &str) -> Option<ToolOutcome> {
        let input = PolicyInput {
            toolset: TOOLSET.into(),
            tool: tool.into(),
            entity: caller.entity_id.clone(),
            moves_money: false,
            client: caller.client_name.clone(),
            ..PolicyInput::default()
        };
        match self.pipeline.safety().policy.evaluate(&input) {
            Ok(v) if v.decision == Decision::Allow => None,
            Ok(v) => {
                let mut outcome = self.pipeline.error_outcome(
                    "denied_by_policy",
                    &format!(
                        "{tool} is refused by policy rule {:?}: {}",
                        v.rule, v.message
                    ),
                    None,
                );
                outcome.audit.outcome = "denied".into();
                Some(outcome)
            }
            Err(e) => Some(self.pipeline.error_outcome(
                "policy_error",
                &format!("{tool} is refused: the policy could not be evaluated ({e})"),
                None,
            )),
        }
    }

    /// Reads OPP's transaction report for `from..=to` page by page (100 per OPP page), up to
    /// [`SEARCH_SCAN_LIMIT`] transactions; the flag is true when more matched and were not read.
    ///
    /// # Errors
    /// The first [`OppError`] of a report page.
    async fn scan_report(
        &self,
        credentials: &OppCredentials,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        payment_types: &[PaymentType],
        payment_methods: &[String],
    ) -> Result<(Vec<Transaction>, bool), OppError> {
        let mut scanned = Vec::new();
        let mut opp_page = 1;
        let mut truncated = false;
        loop {
            let report = ReportQuery {
                from,
                to,
                payment_types: payment_types.to_vec(),
                payment_methods: payment_methods.to_vec(),
                limit: 100,
                page_no: opp_page,
            };
            let page = self.client.report(credentials, &report).await?;
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
        Ok((scanned, truncated))
    }

    /// `get_transactions`: by id (with linked transactions) or by merchant reference; with
    /// neither (the OPP seed makes every parameter optional), the most recent transactions of
    /// the last [`RECENT_WINDOW_DAYS`] days, newest first, paged like `search_transactions`.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] when both of id and merchantTransactionId are given,
    /// paging is out of range, or a value is malformed; [`ServiceError::Store`].
    pub async fn get_transactions(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        params: LookupParams,
    ) -> Result<ToolOutcome, ServiceError> {
        self.pipeline
            .read(caller, TOOLSET, "get_transactions", arguments, || async {
                if let Some(refusal) = self.read_refusal(caller, "get_transactions") {
                    return Ok(refusal);
                }
                let query = LookupQuery {
                    id: params.id.as_deref().map(|i| validate_id("id", i)).transpose()?,
                    merchant_transaction_id: validate_merchant_reference(
                        params.merchant_transaction_id.clone(),
                    )?,
                    include_linked: params.include_linked.unwrap_or(true),
                    payment_types: parse_payment_types("paymentTypes", &params.payment_types)?,
                };
                if query.id.is_some() || query.merchant_transaction_id.is_some() {
                    if params.limit.is_some() || params.page_no.is_some() {
                        return Err(invalid(
                            "limit and pageNo page the most recent transactions (no id or merchantTransactionId); drop them, or drop id/merchantTransactionId",
                        ));
                    }
                } else {
                    return self.recent_transactions(caller, &query, &params).await;
                }
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
                    (None, None) => return self.recent_transactions(caller, &query, &params).await,
                };
                match found {
                    Ok(transactions) => {
                        let (code, description) =
                            paywarden_domain::result_code::codes::SUCCESSFUL_REQUEST;
                        let output = LookupOutput {
                            result: ResultInfo::new(code, description),
                            payments: transactions.iter().map(Transaction::view).collect(),
                            recent: None,
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
                                receipt: None,
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

    /// `get_transactions` without an id: the last [`RECENT_WINDOW_DAYS`] days of OPP's report,
    /// newest first, one page of `limit` (default 20).
    async fn recent_transactions(
        &self,
        caller: &Caller,
        query: &LookupQuery,
        params: &LookupParams,
    ) -> Result<ToolOutcome, ServiceError> {
        let limit = params.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(invalid("limit must be between 1 and 100"));
        }
        let page_no = params.page_no.unwrap_or(1);
        if page_no == 0 {
            return Err(invalid("pageNo starts at 1"));
        }
        let to = Utc::now();
        let from = to - ChronoDuration::days(RECENT_WINDOW_DAYS);
        let credentials = Self::credentials(caller);
        let (mut scanned, truncated) = match self
            .scan_report(&credentials, from, to, &query.payment_types, &[])
            .await
        {
            Ok(found) => found,
            Err(e) => return Ok(self.provider_failure("get_transactions", e, true).0),
        };
        // Newest first; ties (same second) by id so pages are stable.
        scanned.sort_by(|a, b| b.timestamp.cmp(&a.timestamp).then_with(|| b.id.cmp(&a.id)));
        let total_count = scanned.len() as u64;
        let total_pages = u32::try_from(scanned.len().div_ceil(limit as usize)).unwrap_or(u32::MAX);
        let start = (page_no as usize - 1).saturating_mul(limit as usize);
        let payments: Vec<TransactionView> = scanned
            .iter()
            .skip(start)
            .take(limit as usize)
            .map(Transaction::view)
            .collect();
        let (code, description) = paywarden_domain::result_code::codes::SUCCESSFUL_REQUEST;
        let output = LookupOutput {
            result: ResultInfo::new(code, description),
            payments,
            recent: Some(RecentPage {
                page_no,
                limit,
                total_count,
                total_pages,
                date_from: from.format("%Y-%m-%d %H:%M:%S").to_string(),
                date_to: to.format("%Y-%m-%d %H:%M:%S").to_string(),
                truncated,
            }),
            sandbox: self.pipeline.sandbox(),
        };
        let structured = serde_json::to_value(&output).map_err(crate::store::StoreError::from)?;
        Ok(ToolOutcome {
            text: self.pipeline.decorate(&format!(
                "No id or merchantTransactionId given: the most recent transactions of the last {RECENT_WINDOW_DAYS} days, newest first; page {page_no} of {} ({} shown of {total_count}{}).\n{}",
                total_pages.max(1),
                output.payments.len(),
                if truncated { ", older ones not read: narrow the range with search_transactions" } else { "" },
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
                if let Some(refusal) = self.read_refusal(caller, "search_transactions") {
                    return Ok(refusal);
                }
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
                let (scanned, truncated) = match self
                    .scan_report(&credentials, from, to, &payment_types, &params.payment_methods)
                    .await
                {
                    Ok(found) => found,
                    Err(e) => return Ok(self.provider_failure("search_transactions", e, true).0),
                };
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

impl Reconciler for OppService {
    type Op = Transaction;

    fn found(op: &Transaction) -> Found {
        Found {
            transaction_id: op.id.clone(),
            succeeded: op.result.is_success(),
        }
    }

    /// The operations on `intent.reference_id` of exactly its type, amount and currency that
    /// carry the key's derived reference (as `customParameters[PAYWARDEN_REF]`, or, from OPP
    /// answers without custom parameters, as the merchant reference paywarden chose). A
    /// caller's own `merchantTransactionId` never identifies an operation: it may be reused.
    async fn find(&self, caller: &Caller, intent: &Intent) -> Result<Vec<Transaction>, String> {
        let payment_type: PaymentType = intent
            .operation
            .parse()
            .map_err(|_| format!("unknown OPP payment type {:?}", intent.operation))?;
        let found = match self
            .client
            .query_by_id(
                &Self::credentials(caller),
                &intent.reference_id,
                true,
                &[payment_type],
            )
            .await
        {
            Ok(found) => found,
            Err(OppError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.to_string()),
        };
        Ok(found
            .into_iter()
            .filter(|t| {
                let marked = match t.custom_parameters.get(REFERENCE_PARAMETER) {
                    Some(m) => *m == intent.marker,
                    None => {
                        t.custom_parameters.is_empty()
                            && t.merchant_transaction_id.as_deref() == Some(intent.marker.as_str())
                    }
                };
                marked
                    && t.payment_type == payment_type
                    && t.referenced_id.as_deref() == Some(intent.reference_id.as_str())
                    && t.amount.currency().code() == intent.currency
                    && intent
                        .amount_minor
                        .is_none_or(|a| t.amount.minor_units() == a)
            })
            .collect())
    }

    async fn record(
        &self,
        caller: &Caller,
        intent: &Intent,
        tx: &Transaction,
    ) -> Result<ToolOutcome, ServiceError> {
        if !tx.result.is_success() {
            return Ok(self.rejection_outcome(
                &intent.tool,
                &tx.result,
                "OPP refused the operation (found at OPP after its answer was lost)",
                Some(tx),
                true,
            ));
        }
        self.pipeline
            .store()
            .record_movement(
                &caller.entity_id,
                TOOLSET,
                &intent.tool,
                &intent.reference_id,
                &tx.id,
                tx.amount.minor_units(),
                tx.amount.currency().code(),
            )
            .await?;
        let output = BackofficeOutput {
            status: "executed".into(),
            transaction: Some(tx.view()),
            balances: None,
            confirmation: None,
            approval: None,
            sandbox: self.pipeline.sandbox(),
            idempotent_replay: false,
            receipt: None,
        };
        let structured = serde_json::to_value(&output).map_err(crate::store::StoreError::from)?;
        let text = self.pipeline.decorate(&format!(
            "{}: paywarden had not heard OPP's answer, and OPP shows it went through: {} {} {} -> transaction {} (result {} {}).\n{structured}",
            intent.tool,
            tx.payment_type.description(),
            tx.amount.to_decimal_string(),
            tx.amount.currency().code(),
            tx.id,
            tx.result.code,
            tx.result.description
        ));
        Ok(ToolOutcome {
            structured,
            is_error: false,
            text,
            audit: AuditFacts {
                outcome: "ok".into(),
                result_code: Some(tx.result.code.clone()),
                provider_request_id: tx.ndc.clone(),
                transaction_id: Some(tx.id.clone()),
                receipt: None,
            },
        })
    }
}
