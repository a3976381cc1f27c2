//! The `ops` toolset: the Payment Ops seed's seven tools (snake_case, the seed's names and
//! parameters), its resource templates `customer://{email}` and `payment://{charge_id}`, and
//! its prompts `daily_revenue_report` and `find_refund_candidates`, with completions of
//! customer e-mails.

use rmcp::{
    handler::server::{common::schema_for_output, wrapper::Parameters},
    model::{
        CallToolResult, CompletionInfo, GetPromptResult, JsonObject, Prompt, PromptArgument,
        PromptMessage, ReadResourceResult, ResourceContents, ResourceTemplate, Role,
    },
    tool, tool_router, ErrorData as McpError,
};

use super::{input_schema, render, CallContext, PaywardenMcp};
use crate::service::{
    ops::{
        EmailParams, FlagOutput, FlagParams, IssueRefundOutput, IssueRefundParams,
        ListPaymentsOutput, ListPaymentsParams, LookupCustomerOutput, OrderHistoryOutput,
        PaymentLinkOutput, PaymentLinkParams, RevenueOutput, RevenueParams,
    },
    Caller,
};

/// The ops tool names (for audit labels and read-only mode).
pub const OPS_TOOLS: &[&str] = &[
    "lookup_customer",
    "list_payments",
    "get_order_history",
    "issue_refund",
    "create_payment_link",
    "revenue_summary",
    "flag_for_review",
];

#[tool_router(router = ops_tools, vis = "pub(crate)")]
impl PaywardenMcp {
    #[tool(
        description = "Look up a customer by e-mail address. Returns the merged view: the orders database's record (orders, lifetime value) and the live Stripe customer. Use this first when handling any customer support request.",
        input_schema = input_schema::<EmailParams>(),
        output_schema = schema_for_output::<LookupCustomerOutput>(),
        annotations(title = "Look up a customer", read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    async fn lookup_customer(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        let (p, caller) = self
            .parse::<EmailParams>("lookup_customer", &arguments, &context)
            .await?;
        render(
            self.state
                .ops
                .lookup_customer(&caller, &serde_json::Value::Object(arguments), p)
                .await,
        )
    }

    #[tool(
        description = "List a customer's most recent Stripe PaymentIntents, newest first, by `email` or by `customer` (the Stripe customer id cus_... that lookup_customer returns, or an e-mail): amount, status, date, PaymentIntent and charge ids, refunded amount and the internal order. Use it to review payments (e.g. spot a duplicate charge) before any action.",
        input_schema = input_schema::<ListPaymentsParams>(),
        output_schema = schema_for_output::<ListPaymentsOutput>(),
        annotations(title = "List a customer's payments", read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    async fn list_payments(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        let (p, caller) = self
            .parse::<ListPaymentsParams>("list_payments", &arguments, &context)
            .await?;
        render(
            self.state
                .ops
                .list_payments(&caller, &serde_json::Value::Object(arguments), p)
                .await,
        )
    }

    #[tool(
        description = "Return the customer's full order history from the internal orders database: order ids, amounts, statuses (paid, refunded, partially_refunded), Stripe PaymentIntent ids and every refund logged.",
        input_schema = input_schema::<EmailParams>(),
        output_schema = schema_for_output::<OrderHistoryOutput>(),
        annotations(title = "Order history", read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_order_history(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        let (p, caller) = self
            .parse::<EmailParams>("get_order_history", &arguments, &context)
            .await?;
        render(
            self.state
                .ops
                .get_order_history(&caller, &serde_json::Value::Object(arguments), p)
                .await,
        )
    }

    #[tool(
        description = "Refund a customer's charge at Stripe, in two steps. 1) Call it: it returns a PREVIEW (status confirmation_required: customer, order, charge, amount, reason) and a confirmation token, and moves nothing. Show the preview to the user and ask whether to proceed. 2) Only if they say yes, call it again with exactly the same arguments plus confirmation_token. `confirmed: true` alone never moves money. Large refunds return status approval_pending instead: a person approves them (you cannot); then call again with approval_id or poll get_approval. charge_id is the PaymentIntent id (pi_...) from list_payments; omitted, the most recent paid order. amount_cents omitted refunds everything not yet refunded. The server refuses refunds older than 90 days, beyond the refundable remainder, or of another customer's charge. On success the refund exists in Stripe, the order's status is updated and a refund_log row written.",
        input_schema = input_schema::<IssueRefundParams>(),
        output_schema = schema_for_output::<IssueRefundOutput>(),
        annotations(title = "Refund a charge (preview, then confirm)", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = true)
    )]
    async fn issue_refund(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        let (p, caller) = self
            .parse::<IssueRefundParams>("issue_refund", &arguments, &context)
            .await?;
        let outcome = self
            .state
            .ops
            .issue_refund(&caller, &serde_json::Value::Object(arguments), p)
            .await;
        self.render_with_approval(&caller, outcome, &context).await
    }

    #[tool(
        description = "Create a Stripe payment link for an amount (amount_cents, minor units: 4999 = $49.99) and a description, optionally a currency (default usd) and quantity (default 1). Returns the URL to send to the customer. It asks the customer for money; it pays nothing out.",
        input_schema = input_schema::<PaymentLinkParams>(),
        output_schema = schema_for_output::<PaymentLinkOutput>(),
        annotations(title = "Create a payment link", read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true)
    )]
    async fn create_payment_link(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        let (p, caller) = self
            .parse::<PaymentLinkParams>("create_payment_link", &arguments, &context)
            .await?;
        render(
            self.state
                .ops
                .create_payment_link(&caller, &serde_json::Value::Object(arguments), p)
                .await,
        )
    }

    #[tool(
        description = "Summarize revenue from paid orders between two dates (YYYY-MM-DD, UTC, end inclusive), net of refunds, per day and currency, with totals per currency.",
        input_schema = input_schema::<RevenueParams>(),
        output_schema = schema_for_output::<RevenueOutput>(),
        annotations(title = "Revenue summary", read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn revenue_summary(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        let (p, caller) = self
            .parse::<RevenueParams>("revenue_summary", &arguments, &context)
            .await?;
        render(
            self.state
                .ops
                .revenue_summary(&caller, &serde_json::Value::Object(arguments), p)
                .await,
        )
    }

    #[tool(
        description = "Flag a charge (its PaymentIntent id, pi_...) for manual review by a person, with a note. Use when a charge looks suspicious or needs human follow-up. Moves no money.",
        input_schema = input_schema::<FlagParams>(),
        output_schema = schema_for_output::<FlagOutput>(),
        annotations(title = "Flag a charge for review", read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    async fn flag_for_review(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        let (p, caller) = self
            .parse::<FlagParams>("flag_for_review", &arguments, &context)
            .await?;
        render(
            self.state
                .ops
                .flag_for_review(&caller, &serde_json::Value::Object(arguments), p)
                .await,
        )
    }
}

/// The resource templates of the ops toolset.
pub fn resource_templates() -> Vec<ResourceTemplate> {
    let template = |uri: &str, name: &str, title: &str, description: &str| {
        ResourceTemplate::new(uri, name)
            .with_title(title)
            .with_description(description)
            .with_mime_type("application/json")
    };
    vec![
        template(
            "customer://{email}",
            "customer",
            "Customer profile",
            "A customer's profile by e-mail: the orders database's record merged with the live Stripe customer (as lookup_customer).",
        ),
        template(
            "payment://{charge_id}",
            "payment",
            "Order by charge",
            "The order paid by a Stripe PaymentIntent (pi_...), with its refunds and the live Stripe payment.",
        ),
    ]
}

/// The ops prompts.
pub fn prompts() -> Vec<Prompt> {
    let mut date = PromptArgument::new("date");
    date.description = Some("The day to report on, YYYY-MM-DD (default: today, UTC).".into());
    date.required = Some(false);
    let mut email = PromptArgument::new("email");
    email.description =
        Some("Only look at this customer (e-mail); default: every customer.".into());
    email.required = Some(false);
    vec![
        Prompt::new(
            "daily_revenue_report",
            Some("Produce a revenue report for one day: revenue_summary for the day, then the top customers by value."),
            Some(vec![date]),
        ),
        Prompt::new(
            "find_refund_candidates",
            Some("Review recent orders for refund candidates (duplicate charges, disputes, anomalies) without refunding anything."),
            Some(vec![email]),
        ),
    ]
}

/// The text of prompt `name` with `arguments`.
///
/// # Errors
/// Invalid params for an unknown prompt or a malformed date.
pub fn prompt(name: &str, arguments: Option<&JsonObject>) -> Result<GetPromptResult, McpError> {
    let arg = |key: &str| {
        arguments
            .and_then(|a| a.get(key))
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from)
    };
    match name {
        "daily_revenue_report" => {
            let day = match arg("date") {
                Some(d) => chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                    .map_err(|_| {
                        McpError::invalid_params(
                            format!("date {d:?} is not YYYY-MM-DD"),
                            None,
                        )
                    })?
                    .to_string(),
                None => chrono::Utc::now().date_naive().to_string(),
            };
            let text = format!(
                "Please generate a daily revenue report for {day}. Use the revenue_summary tool with start_date='{day}' and end_date='{day}' (amounts are net of refunds, per currency). Then list the top customers by value using lookup_customer and get_order_history. Do not issue refunds or create payment links while reporting."
            );
            let mut result = GetPromptResult::new(vec![PromptMessage::new_text(
                Role::User,
                text,
            )]);
            result.description = Some(format!("Daily revenue report for {day}"));
            Ok(result)
        }
        "find_refund_candidates" => {
            let scope = match arg("email") {
                Some(e) => format!("the orders of {e}"),
                None => "recent orders".to_string(),
            };
            let text = format!(
                "Review {scope} and identify potential refund candidates. Look for: duplicate charges (same customer, same amount within 5 minutes), charges marked as disputed, or any anomalies. Use list_payments and get_order_history to investigate, and flag_for_review for anything a person should look at. Do NOT issue any refunds: if one seems right, call issue_refund only to get its preview and show it to the user, and proceed only if they explicitly confirm."
            );
            let mut result = GetPromptResult::new(vec![PromptMessage::new_text(
                Role::User,
                text,
            )]);
            result.description = Some("Find refund candidates".into());
            Ok(result)
        }
        other => Err(McpError::invalid_params(
            format!("unknown prompt {other:?}: this server has daily_revenue_report, find_refund_candidates"),
            None,
        )),
    }
}

impl PaywardenMcp {
    /// Reads `customer://{email}` or `payment://{charge_id}` for `caller`.
    ///
    /// # Errors
    /// Resource-not-found for an unknown customer or charge (or another entity's), invalid
    /// params for another scheme, internal error when the database fails.
    pub(crate) async fn read_ops_resource(
        &self,
        caller: &Caller,
        uri: &str,
    ) -> Result<ReadResourceResult, McpError> {
        let decode = |raw: &str| {
            url::form_urlencoded::parse(format!("v={raw}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let json = |value: serde_json::Value| {
            ReadResourceResult::new(vec![ResourceContents::TextResourceContents {
                uri: uri.to_string(),
                mime_type: Some("application/json".into()),
                text: value.to_string(),
                meta: None,
            }])
        };
        let store_failure = |e: crate::service::ServiceError| {
            tracing::error!(error = %e, "resource read failed");
            McpError::internal_error("paywarden's database failed; retry later", None)
        };
        if let Some(email) = uri.strip_prefix("customer://") {
            let email = decode(email);
            if !self.state.ops.authenticates(caller) {
                return Err(McpError::invalid_request(
                    "paywarden does not know this entity with this token",
                    None,
                ));
            }
            return match self
                .state
                .ops
                .customer_profile(caller, &email)
                .await
                .map_err(store_failure)?
            {
                Ok((profile, _)) => Ok(json(
                    serde_json::to_value(profile).unwrap_or(serde_json::Value::Null),
                )),
                Err(_) => Err(McpError::resource_not_found(
                    format!("no customer with e-mail {email:?}"),
                    Some(serde_json::json!({ "uri": uri })),
                )),
            };
        }
        if let Some(charge) = uri.strip_prefix("payment://") {
            let charge = decode(charge);
            if !self.state.ops.authenticates(caller) {
                return Err(McpError::invalid_request(
                    "paywarden does not know this entity with this token",
                    None,
                ));
            }
            return match self
                .state
                .ops
                .payment_resource(caller, &charge)
                .await
                .map_err(store_failure)?
            {
                Some(value) => Ok(json(value)),
                None => Err(McpError::resource_not_found(
                    format!("no order with charge id {charge:?}"),
                    Some(serde_json::json!({ "uri": uri })),
                )),
            };
        }
        Err(McpError::resource_not_found(
            format!("unknown resource {uri:?}: this server has customer://{{email}} and payment://{{charge_id}}"),
            Some(serde_json::json!({ "uri": uri })),
        ))
    }

    /// Completes a customer e-mail (resource `customer://{email}`, prompt argument `email`) or
    /// a PaymentIntent id (`payment://{charge_id}`) from the caller's own records.
    pub(crate) async fn complete_ops(
        &self,
        caller: &Caller,
        argument: &str,
        prefix: &str,
    ) -> CompletionInfo {
        let store = self.state.ops.pipeline().store();
        let mut values: Vec<String> = Vec::new();
        if self.state.ops.authenticates(caller) {
            if let Ok(customers) = store.customers(&caller.entity_id).await {
                for c in customers {
                    match argument {
                        "email" => values.push(c.email),
                        "charge_id" => {
                            if let Ok(orders) = store.orders_of(&caller.entity_id, &c.id).await {
                                values
                                    .extend(orders.into_iter().filter_map(|o| o.stripe_charge_id));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        let prefix = prefix.to_ascii_lowercase();
        values.retain(|v| v.to_ascii_lowercase().starts_with(&prefix));
        values.sort();
        let total = values.len();
        values.truncate(CompletionInfo::MAX_VALUES);
        let has_more = total > values.len();
        CompletionInfo::with_pagination(
            values,
            Some(u32::try_from(total).unwrap_or(u32::MAX)),
            has_more,
        )
        .unwrap_or_default()
    }
}
