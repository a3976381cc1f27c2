//! Parameters and outputs of the OPP tools.

use super::*;

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
    /// `executed`, `pending` (OPP accepted it with a pending result code, `000.200.*`,
    /// `800.400.5*` or `100.400.500`: its outcome comes later), `confirmation_required`,
    /// `approval_pending`, `approval_denied` or `approval_expired`.
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
