//! The `opp` toolset: the eight back-office and reporting tools of the OPP seed, with its
//! names, camelCase parameters and `destructiveHint`s. Amounts and currencies are as OPP takes
//! them (`amount` a decimal string, `currency` ISO 4217).

use paywarden_domain::ledger::Operation;
use rmcp::{
    handler::server::{common::schema_for_output, wrapper::Parameters},
    model::{CallToolResult, JsonObject},
    service::RequestContext,
    tool, tool_router, ErrorData as McpError, RoleServer,
};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{input_schema, render, CallContext, PaywardenMcp};
use crate::service::{
    opp::{
        BackofficeOutput, BackofficeParams, LookupOutput, LookupParams, SearchOutput, SearchParams,
    },
    Caller,
};

/// Parameters of `perform_capture`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaptureParams {
    /// Id of the pre-authorization (PA) to capture.
    pub reference_id: String,
    /// Amount to capture as a decimal string with the currency's decimals (e.g. "10.00");
    /// omit (with currency) to capture the whole authorised remainder.
    pub amount: Option<String>,
    /// ISO 4217 currency of `amount`; must be the PA's currency.
    pub currency: Option<String>,
    /// Your reference for this capture (8-255 characters).
    pub merchant_transaction_id: Option<String>,
    /// Idempotency key: a retry with the same key returns the first outcome and moves no money
    /// again; the same key with other arguments is refused.
    pub idempotency_key: Option<String>,
    /// The token from a `confirmation_required` preview, sent with the same arguments to
    /// execute the previewed operation.
    pub confirmation_token: Option<String>,
    /// The id of an approved approval request, sent with the same arguments to execute it.
    pub approval_id: Option<String>,
}

/// Parameters of `perform_reversal`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReversalParams {
    /// Id of the uncaptured pre-authorization (PA) to void in full.
    pub reference_id: String,
    /// Your reference for this reversal (8-255 characters).
    pub merchant_transaction_id: Option<String>,
    /// Idempotency key (see perform_capture).
    pub idempotency_key: Option<String>,
    /// Confirmation token from a preview (see perform_capture).
    pub confirmation_token: Option<String>,
    /// Approved approval request id (see perform_capture).
    pub approval_id: Option<String>,
}

/// Parameters of `perform_refund`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefundParams {
    /// Id of the debit (DB), capture (CP) or rebill (RB) to refund.
    pub reference_id: String,
    /// Amount to refund as a decimal string (e.g. "5.00"); omit (with currency) to refund the
    /// whole refundable remainder.
    pub amount: Option<String>,
    /// ISO 4217 currency of `amount`; must be the referenced transaction's currency.
    pub currency: Option<String>,
    /// Your reference for this refund (8-255 characters).
    pub merchant_transaction_id: Option<String>,
    /// Idempotency key (see perform_capture).
    pub idempotency_key: Option<String>,
    /// Confirmation token from a preview (see perform_capture).
    pub confirmation_token: Option<String>,
    /// Approved approval request id (see perform_capture).
    pub approval_id: Option<String>,
}

/// Parameters of `perform_rebill`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RebillParams {
    /// Id of the debit (DB) to charge again.
    pub reference_id: String,
    /// Additional amount to charge, decimal string (e.g. "5.00"). Required.
    pub amount: String,
    /// ISO 4217 currency of `amount`, the debit's currency. Required.
    pub currency: String,
    /// Your reference for this rebill (8-255 characters).
    pub merchant_transaction_id: Option<String>,
    /// Idempotency key (see perform_capture).
    pub idempotency_key: Option<String>,
    /// Confirmation token from a preview (see perform_capture).
    pub confirmation_token: Option<String>,
    /// Approved approval request id (see perform_capture).
    pub approval_id: Option<String>,
}

/// Parameters of `perform_chargeback`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChargebackParams {
    /// Id of the debit (DB), capture (CP) or rebill (RB) the bank disputes.
    pub reference_id: String,
    /// Disputed amount, decimal string; omit (with currency) for the whole un-refunded amount.
    pub amount: Option<String>,
    /// ISO 4217 currency of `amount`.
    pub currency: Option<String>,
    /// Your reference (8-255 characters).
    pub merchant_transaction_id: Option<String>,
    /// Idempotency key (see perform_capture).
    pub idempotency_key: Option<String>,
    /// Confirmation token from a preview (see perform_capture).
    pub confirmation_token: Option<String>,
    /// Approved approval request id (see perform_capture).
    pub approval_id: Option<String>,
}

/// Parameters of `perform_chargeback_reversal`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChargebackReversalParams {
    /// Id of the chargeback (CB) to reverse after successful representment.
    pub reference_id: String,
    /// Your reference (8-255 characters).
    pub merchant_transaction_id: Option<String>,
    /// Idempotency key (see perform_capture).
    pub idempotency_key: Option<String>,
    /// Confirmation token from a preview (see perform_capture).
    pub confirmation_token: Option<String>,
    /// Approved approval request id (see perform_capture).
    pub approval_id: Option<String>,
}

/// Parameters of `get_approval`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetApprovalParams {
    /// The approval request's id (`apr_...`), as a money-moving tool returned it.
    pub approval_id: String,
}

/// Parameters of `get_transactions`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetTransactionsParams {
    /// OPP transaction id (the 32-character id OPP returns).
    pub id: Option<String>,
    /// Your merchant reference / order id; returns every transaction carrying it.
    pub merchant_transaction_id: Option<String>,
    /// Also return every transaction linked to the ones found (their payment's PA/DB,
    /// captures, refunds, chargebacks...). Default true.
    pub include_linked_transactions: Option<bool>,
    /// Only these OPP payment types (PA, DB, CP, RV, RF, RB, CB, CR).
    #[serde(default)]
    pub payment_types: Vec<String>,
    /// Without id or merchantTransactionId: page size of the most recent transactions, 1-100
    /// (default 20).
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
    /// Without id or merchantTransactionId: page number from 1 (default 1).
    #[schemars(range(min = 1))]
    pub page_no: Option<u32>,
}

/// Parameters of `search_transactions`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SearchTransactionsParams {
    /// Start of the range (UTC): YYYY-MM-DD, "YYYY-MM-DD HH:MM:SS" or RFC 3339. Default: 30 days
    /// before dateTo.
    pub date_from: Option<String>,
    /// End of the range (UTC), same forms; a bare date means the end of that day. Default: now.
    pub date_to: Option<String>,
    /// Only these OPP payment types (PA, DB, CP, RV, RF, RB, CB, CR).
    #[serde(default)]
    pub payment_types: Vec<String>,
    /// Only these OPP payment methods (e.g. CC credit card, DC debit card).
    #[serde(default)]
    pub payment_methods: Vec<String>,
    /// Only results in these categories: success, success_manual_review, pending,
    /// rejected_by_bank, rejected_by_validation, communication_error, system_error.
    #[serde(default)]
    pub result_categories: Vec<String>,
    /// Only this ISO 4217 currency (required with amountMin/amountMax).
    pub currency: Option<String>,
    /// Minimum amount, decimal string in `currency` (inclusive).
    pub amount_min: Option<String>,
    /// Maximum amount, decimal string in `currency` (inclusive).
    pub amount_max: Option<String>,
    /// Only transactions with this merchant reference.
    pub merchant_transaction_id: Option<String>,
    /// Page size, 1-100 (default 20).
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
    /// Page number from 1 (default 1).
    #[schemars(range(min = 1))]
    pub page_no: Option<u32>,
}

impl PaywardenMcp {
    async fn backoffice(
        &self,
        caller: Caller,
        operation: Operation,
        arguments: JsonObject,
        params: BackofficeParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let outcome = self
            .state
            .opp
            .backoffice(
                &caller,
                operation,
                &serde_json::Value::Object(arguments.clone()),
                params,
            )
            .await;
        if let Ok(pending) = &outcome {
            if pending.structured["status"] == "approval_pending" {
                if let Some(decided) = self.ask_the_user(&caller, pending, context).await {
                    return render(decided);
                }
            }
        }
        render(outcome)
    }

    /// Human approval through URL-mode MCP elicitation: when the session client declared URL
    /// elicitation, its user is sent to paywarden's approval page, where a person holding an
    /// operator credential decides; when the user comes back, paywarden reads the stored
    /// decision (and executes an approved operation, exactly once). The client's answer itself
    /// decides nothing: the server cannot tell a person from client code, so a form
    /// elicitation is never an approval (issue 12). Clients without URL elicitation,
    /// 2026-07-28 clients (served by an `input_required` round trip instead), and a user who
    /// dismisses the page leave the request pending for the approval page or the CLI.
    pub(crate) async fn ask_the_user(
        &self,
        caller: &Caller,
        pending: &crate::service::ToolOutcome,
        context: &RequestContext<RoleServer>,
    ) -> Option<Result<crate::service::ToolOutcome, crate::service::ServiceError>> {
        let legacy = context
            .protocol_version()
            .is_none_or(|v| v < rmcp::model::ProtocolVersion::V_2026_07_28);
        if !legacy
            || !context
                .peer
                .supported_elicitation_modes()
                .contains(&rmcp::service::ElicitationMode::Url)
        {
            return None;
        }
        let approval = &pending.structured["approval"];
        let id = approval["id"].as_str()?.to_string();
        let url = approval["url"].as_str()?.parse::<url::Url>().ok()?;
        let action = context
            .peer
            .elicit_url_with_timeout(
                approval_page_message(approval),
                url,
                id.clone(),
                Some(ELICITATION_TIMEOUT),
            )
            .await
            .ok()?;
        if action != rmcp::model::ElicitationAction::Accept {
            return None;
        }
        // Where the approval stands now: only an operator's stored decision executes it.
        let arguments = serde_json::json!({ "approvalId": id });
        Some(self.resolve_approval(caller, &arguments, id).await)
    }
}

/// What a URL-mode elicitation tells the client's user: what waits for an operator, and
/// that the page (not the client) decides.
pub(crate) fn approval_page_message(approval: &serde_json::Value) -> String {
    let preview = &approval["preview"];
    format!(
        "paywarden needs an operator to approve {} {} {} (policy rule {}). Open paywarden's approval page; an operator decides there with their own credentials.",
        preview["operation"].as_str().unwrap_or_default(),
        preview["amount"].as_str().unwrap_or_default(),
        preview["currency"].as_str().unwrap_or_default(),
        approval["rule"].as_str().unwrap_or_default(),
    )
}

/// How long paywarden waits for a client's user to come back from the approval page.
const ELICITATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

#[tool_router(router = opp_tools, vis = "pub(crate)")]
impl PaywardenMcp {
    #[tool(
        description = "Capture (CP) a pre-authorization (PA): finalizes it for settlement and moves the money. Amount defaults to the whole authorised remainder; partial captures are allowed up to that remainder. Returns the new CP transaction and the PA's balances. Refused (isError, with OPP's result code) if the PA is reversed, fully captured, rejected, of another type, or in another currency.",
        input_schema = input_schema::<CaptureParams>(),
        output_schema = schema_for_output::<BackofficeOutput>(),
        annotations(title = "Capture a pre-authorization", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = true)
    )]
    async fn perform_capture(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        let (p, caller) = self
            .parse::<CaptureParams>("perform_capture", &arguments, &context)
            .await?;
        let params = BackofficeParams {
            reference_id: p.reference_id,
            amount: p.amount,
            currency: p.currency,
            merchant_transaction_id: p.merchant_transaction_id,
            idempotency_key: p.idempotency_key,
            confirmation_token: p.confirmation_token,
            approval_id: p.approval_id,
        };
        self.backoffice(caller, Operation::Capture, arguments, params, &context)
            .await
    }

    #[tool(
        description = "Reverse (RV) an uncaptured pre-authorization (PA) in full, releasing the shopper's funds. Refused if any amount was captured (refund the capture instead) or it was already reversed.",
        input_schema = input_schema::<ReversalParams>(),
        output_schema = schema_for_output::<BackofficeOutput>(),
        annotations(title = "Void a pre-authorization", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = true)
    )]
    async fn perform_reversal(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        let (p, caller) = self
            .parse::<ReversalParams>("perform_reversal", &arguments, &context)
            .await?;
        let params = BackofficeParams {
            reference_id: p.reference_id,
            merchant_transaction_id: p.merchant_transaction_id,
            idempotency_key: p.idempotency_key,
            confirmation_token: p.confirmation_token,
            approval_id: p.approval_id,
            ..BackofficeParams::default()
        };
        self.backoffice(caller, Operation::Reversal, arguments, params, &context)
            .await
    }

    #[tool(
        description = "Refund (RF) a debit (DB), capture (CP) or rebill (RB): returns funds to the shopper. Amount defaults to the whole refundable remainder (amount minus earlier refunds); partial refunds are allowed. Refused beyond the refundable remainder, on a charged-back payment, or in another currency.",
        input_schema = input_schema::<RefundParams>(),
        output_schema = schema_for_output::<BackofficeOutput>(),
        annotations(title = "Refund a payment", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = true)
    )]
    async fn perform_refund(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        let (p, caller) = self
            .parse::<RefundParams>("perform_refund", &arguments, &context)
            .await?;
        let params = BackofficeParams {
            reference_id: p.reference_id,
            amount: p.amount,
            currency: p.currency,
            merchant_transaction_id: p.merchant_transaction_id,
            idempotency_key: p.idempotency_key,
            confirmation_token: p.confirmation_token,
            approval_id: p.approval_id,
        };
        self.backoffice(caller, Operation::Refund, arguments, params, &context)
            .await
    }

    #[tool(
        description = "Rebill (RB) a debit (DB): charges the shopper an additional amount on top of it, with the same payment details. amount and currency are required.",
        input_schema = input_schema::<RebillParams>(),
        output_schema = schema_for_output::<BackofficeOutput>(),
        annotations(title = "Charge an additional amount", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = true)
    )]
    async fn perform_rebill(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        let (p, caller) = self
            .parse::<RebillParams>("perform_rebill", &arguments, &context)
            .await?;
        let params = BackofficeParams {
            reference_id: p.reference_id,
            amount: Some(p.amount),
            currency: Some(p.currency),
            merchant_transaction_id: p.merchant_transaction_id,
            idempotency_key: p.idempotency_key,
            confirmation_token: p.confirmation_token,
            approval_id: p.approval_id,
        };
        self.backoffice(caller, Operation::Rebill, arguments, params, &context)
            .await
    }

    #[tool(
        description = "Record a chargeback (CB) on a debit (DB), capture (CP) or rebill (RB): the bank-initiated dispute reversal of the shopper's payment. One chargeback per payment. Amount defaults to the un-refunded amount. Blocks further refunds until reversed.",
        input_schema = input_schema::<ChargebackParams>(),
        output_schema = schema_for_output::<BackofficeOutput>(),
        annotations(title = "Record a chargeback", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = true)
    )]
    async fn perform_chargeback(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        let (p, caller) = self
            .parse::<ChargebackParams>("perform_chargeback", &arguments, &context)
            .await?;
        let params = BackofficeParams {
            reference_id: p.reference_id,
            amount: p.amount,
            currency: p.currency,
            merchant_transaction_id: p.merchant_transaction_id,
            idempotency_key: p.idempotency_key,
            confirmation_token: p.confirmation_token,
            approval_id: p.approval_id,
        };
        self.backoffice(caller, Operation::Chargeback, arguments, params, &context)
            .await
    }

    #[tool(
        description = "Reverse a chargeback (CR) after successful representment: referenceId is the chargeback (CB) transaction's id. Reverses the whole chargeback amount; once per chargeback.",
        input_schema = input_schema::<ChargebackReversalParams>(),
        output_schema = schema_for_output::<BackofficeOutput>(),
        annotations(title = "Reverse a chargeback", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = true)
    )]
    async fn perform_chargeback_reversal(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        let (p, caller) = self
            .parse::<ChargebackReversalParams>("perform_chargeback_reversal", &arguments, &context)
            .await?;
        let params = BackofficeParams {
            reference_id: p.reference_id,
            merchant_transaction_id: p.merchant_transaction_id,
            idempotency_key: p.idempotency_key,
            confirmation_token: p.confirmation_token,
            approval_id: p.approval_id,
            ..BackofficeParams::default()
        };
        self.backoffice(
            caller,
            Operation::ChargebackReversal,
            arguments,
            params,
            &context,
        )
        .await
    }

    #[tool(
        description = "Retrieve transaction(s) by OPP transaction id (with every linked transaction of the same payment, by default) or by merchant transaction id (your order id); give at most one of the two. With neither, returns the most recent transactions of the last 30 days, newest first, paged (limit 1-100, default 20; pageNo from 1). Read-only.",
        input_schema = input_schema::<GetTransactionsParams>(),
        output_schema = schema_for_output::<LookupOutput>(),
        annotations(title = "Get transactions", read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    async fn get_transactions(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        let (p, caller) = self
            .parse::<GetTransactionsParams>("get_transactions", &arguments, &context)
            .await?;
        render(
            self.state
                .opp
                .get_transactions(
                    &caller,
                    &serde_json::Value::Object(arguments),
                    LookupParams {
                        id: p.id,
                        merchant_transaction_id: p.merchant_transaction_id,
                        include_linked: p.include_linked_transactions,
                        payment_types: p.payment_types,
                        limit: p.limit,
                        page_no: p.page_no,
                    },
                )
                .await,
        )
    }

    #[tool(
        description = "Search transactions over a date range (default: the last 30 days) with structured filters: payment types, payment methods, result categories, currency, amount range, merchant transaction id; paged (limit 1-100, pageNo from 1). Read-only.",
        input_schema = input_schema::<SearchTransactionsParams>(),
        output_schema = schema_for_output::<SearchOutput>(),
        annotations(title = "Search transactions", read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    async fn search_transactions(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        let (p, caller) = self
            .parse::<SearchTransactionsParams>("search_transactions", &arguments, &context)
            .await?;
        let params = SearchParams {
            date_from: p.date_from,
            date_to: p.date_to,
            payment_types: p.payment_types,
            payment_methods: p.payment_methods,
            result_categories: p.result_categories,
            currency: p.currency,
            amount_min: p.amount_min,
            amount_max: p.amount_max,
            merchant_transaction_id: p.merchant_transaction_id,
            limit: p.limit,
            page_no: p.page_no,
        };
        render(
            self.state
                .opp
                .search_transactions(&caller, &serde_json::Value::Object(arguments), params)
                .await,
        )
    }
}

#[tool_router(router = paywarden_tools, vis = "pub(crate)")]
impl PaywardenMcp {
    #[tool(
        description = "Check an approval request that a money-moving tool created (status approval_pending). Only a person can approve it, on the approval page or the CLI; you cannot. Once approved, this runs the operation exactly once and returns its result (status executed); afterwards it returns that same result. Denied or expired requests never move money.",
        input_schema = input_schema::<GetApprovalParams>(),
        output_schema = schema_for_output::<BackofficeOutput>(),
        annotations(title = "Check or complete an approval", read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = true)
    )]
    async fn get_approval(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        let (p, caller) = self
            .parse::<GetApprovalParams>("get_approval", &arguments, &context)
            .await?;
        render(
            self.resolve_approval(
                &caller,
                &serde_json::Value::Object(arguments),
                p.approval_id,
            )
            .await,
        )
    }
}
