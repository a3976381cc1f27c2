//! The `ifthenpay` toolset on rmcp (`/mcp` and stdio): the ifthenpay seed's nine tools with its
//! snake_case parameters. Each tool hands its arguments to
//! [`crate::service::ifthenpay::IfthenpayService::call`]; the seed's own endpoint,
//! `/mcp/payments/`, calls the same service ([`crate::ifthenpay_http`]).

use rmcp::{
    handler::server::{common::schema_for_output, router::tool::ToolRouter, wrapper::Parameters},
    model::{CallToolResult, JsonObject},
    service::RequestContext,
    tool, tool_router, ErrorData as McpError, RoleServer,
};
use secrecy::SecretString;

use super::{input_schema, render, CallContext, PaywardenMcp, HEADER_ENTITY_ID, HEADER_TOKEN};
use crate::service::{
    ifthenpay::{
        CheckoutOutput, CofidisParams, CreditCardParams, Identity, IfthenpayService,
        MbwayRequestOutput, MbwayRequestParams, MbwayStatusOutput, MbwayStatusParams,
        MultibancoOutput, MultibancoParams, PaymentsListOutput, PaymentsListParams, PayshopOutput,
        PayshopParams, PinpayOutput, PinpayParams, PixOutput, PixParams, TOOLS,
    },
    Caller,
};

impl PaywardenMcp {
    /// Who calls: the `X-Entity-Id`/`X-Token` headers over HTTP (checked by the service before
    /// a configured key is used), the configured local caller over stdio.
    pub(super) fn ifthenpay_identity(&self, context: &RequestContext<RoleServer>) -> Identity {
        let client_name = context.client_info().map(|info| info.name);
        if let Some(parts) = context.extensions.get::<http::request::Parts>() {
            let header = |name: &str| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(String::from)
            };
            return match (header(HEADER_ENTITY_ID), header(HEADER_TOKEN)) {
                (Some(entity_id), Some(token)) => Identity::Claimed(Caller {
                    entity_id,
                    token: SecretString::from(token),
                    client_name,
                }),
                _ => Identity::Anonymous { client_name },
            };
        }
        match &self.state.local_caller {
            Some(caller) => Identity::Local(Caller {
                client_name,
                ..caller.clone()
            }),
            None => Identity::Anonymous { client_name },
        }
    }

    async fn ifthenpay(
        &self,
        tool: &str,
        arguments: JsonObject,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let identity = self.ifthenpay_identity(context);
        render(self.state.ifthenpay.call(&identity, tool, &arguments).await)
    }
}

#[tool_router(router = ifthenpay_tools, vis = "pub(crate)")]
impl PaywardenMcp {
    #[tool(
        description = "Creates a Multibanco payment reference (entity + 9-digit reference) for payment at any Portuguese ATM or online banking. Amount in EUR (e.g. 10.50). Returns entity, reference, amount, expiry_date (YYYYMMDD or null) and request_id. Retrying with the same order_id and arguments returns the same reference.",
        input_schema = input_schema::<MultibancoParams>(),
        output_schema = schema_for_output::<MultibancoOutput>(),
        annotations(title = "Create a Multibanco reference", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    async fn multibanco_create_reference(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        self.ifthenpay("multibanco_create_reference", arguments, &context)
            .await
    }

    #[tool(
        description = "Sends a payment request to the customer's phone via the MB WAY app (phone as 351#912345678). The customer has 4 minutes to approve; poll mbway_check_status with the returned request_id. Status is always \"pending\" at first.",
        input_schema = input_schema::<MbwayRequestParams>(),
        output_schema = schema_for_output::<MbwayRequestOutput>(),
        annotations(title = "Request an MB WAY payment", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    async fn mbway_request_payment(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        self.ifthenpay("mbway_request_payment", arguments, &context)
            .await
    }

    #[tool(
        description = "Checks the status of an MB WAY payment request: paid | rejected | expired | declined | pending | unknown, with ifthenpay's raw code (000=paid, 020=rejected, 101=expired, 122=cancelled). Use the request_id returned by mbway_request_payment. Read-only.",
        input_schema = input_schema::<MbwayStatusParams>(),
        output_schema = schema_for_output::<MbwayStatusOutput>(),
        annotations(title = "Check an MB WAY payment", read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    async fn mbway_check_status(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        self.ifthenpay("mbway_check_status", arguments, &context)
            .await
    }

    #[tool(
        description = "Generates a 13-digit Payshop reference for cash payment at over 5,000 agents, CTT post offices and convenience stores in Portugal. Amount in EUR; optional expiry_date as YYYYMMDD.",
        input_schema = input_schema::<PayshopParams>(),
        output_schema = schema_for_output::<PayshopOutput>(),
        annotations(title = "Create a Payshop reference", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    async fn payshop_create_reference(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        self.ifthenpay("payshop_create_reference", arguments, &context)
            .await
    }

    #[tool(
        description = "Creates a hosted credit/debit card payment session (Visa, Mastercard) and returns its payment_url. Amount in EUR; success_url, error_url and cancel_url are where the customer returns. For new integrations pinpay_create_payment with selected_method=\"4\" does the same.",
        input_schema = input_schema::<CreditCardParams>(),
        output_schema = schema_for_output::<CheckoutOutput>(),
        annotations(title = "Create a card payment", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    async fn creditcard_create_payment(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        self.ifthenpay("creditcard_create_payment", arguments, &context)
            .await
    }

    #[tool(
        description = "Creates a PinPay (Pay by Link) payment link supporting several methods; returns redirect_url, pinpay_url and a pin_code for the customer. accounts lists methods as METHOD|KEY separated by ';' (MB, MBWAY, PAYSHOP, CCARD, COFIDIS, PIX, GOOGLE, APPLE); selected_method pre-selects one (1=MB, 2=MBWAY, 3=Payshop, 4=Card, 7=Cofidis, 8=PIX); otp=\"true\" makes it single-use.",
        input_schema = input_schema::<PinpayParams>(),
        output_schema = schema_for_output::<PinpayOutput>(),
        annotations(title = "Create a PinPay payment link", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    async fn pinpay_create_payment(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        self.ifthenpay("pinpay_create_payment", arguments, &context)
            .await
    }

    #[tool(
        description = "Creates a Cofidis Pay instalment payment (mainly Portugal and Spain) and returns its payment_url. Amount in EUR, subject to the Cofidis account's limits; the return_url gets &Success=True on approval.",
        input_schema = input_schema::<CofidisParams>(),
        output_schema = schema_for_output::<CheckoutOutput>(),
        annotations(title = "Create a Cofidis Pay payment", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    async fn cofidis_create_payment(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        self.ifthenpay("cofidis_create_payment", arguments, &context)
            .await
    }

    #[tool(
        description = "Creates a PIX payment for Brazilian customers (amount in BRL) and returns payment_url and the PIX QR code value. Requires the customer's name, email, phone (+55...) and CPF (11 digits, valid check digits).",
        input_schema = input_schema::<PixParams>(),
        output_schema = schema_for_output::<PixOutput>(),
        annotations(title = "Create a PIX payment", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    async fn pix_create_payment(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        self.ifthenpay("pix_create_payment", arguments, &context)
            .await
    }

    #[tool(
        description = "Lists completed payments via the Backoffice key, newest first. Filters: entity (MB, MBWAY, PAYSHOP, CCARD, COFIDIS, GOOGLE, APPLE, PIX or a 5-digit entity), sub_entity, order_id, reference, request_id, amount (exact), date_start / date_end (dd-MM-yyyy HH:mm:ss). Returns up to 1,000 records without filters. Read-only.",
        input_schema = input_schema::<PaymentsListParams>(),
        output_schema = schema_for_output::<PaymentsListOutput>(),
        annotations(title = "List completed payments", read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    async fn payments_list(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        CallContext(context): CallContext,
    ) -> Result<CallToolResult, McpError> {
        self.ifthenpay("payments_list", arguments, &context).await
    }
}

impl PaywardenMcp {
    /// The ifthenpay tools' definitions (names, descriptions, schemas, annotations) in the
    /// seed's order, as this server serves them: a tool's key argument is required (a string,
    /// as in the seed) unless paywarden holds that key in its configuration.
    pub fn ifthenpay_tool_list(service: &IfthenpayService) -> Vec<rmcp::model::Tool> {
        let mut tools = Self::ifthenpay_tools().list_all();
        seed_order(&mut tools);
        tools.into_iter().map(|t| require_key(t, service)).collect()
    }

    /// The tools as `/mcp/payments/` lists them: [`Self::ifthenpay_tool_list`] with their
    /// schemas declared as JSON Schema Draft 7, as the seed says (they use no keyword Draft 7
    /// lacks), made portable as on every endpoint ([`super::schema::portable_tool`]).
    pub fn ifthenpay_seed_tool_list(service: &IfthenpayService) -> Vec<rmcp::model::Tool> {
        Self::ifthenpay_tool_list(service)
            .into_iter()
            .map(draft_07)
            .map(super::schema::portable_tool)
            .collect()
    }

    /// The tool router of `/mcp/payments/` (rmcp): the tools of
    /// [`Self::ifthenpay_seed_tool_list`].
    pub(crate) fn ifthenpay_compat_router(service: &IfthenpayService) -> ToolRouter<PaywardenMcp> {
        let mut router = Self::ifthenpay_router(service);
        for route in router.map.values_mut() {
            route.attr = draft_07(route.attr.clone());
        }
        router
    }

    /// What `/mcp/payments/` says of itself to MCP clients: the seed's server name and version,
    /// and paywarden's capabilities (prompts, resources and completions are empty there).
    pub(crate) fn ifthenpay_compat_info(&self) -> rmcp::model::ServerConfig {
        let sandbox = self.state.ifthenpay.sandbox();
        let mut implementation = rmcp::model::Implementation::new(
            crate::ifthenpay_http::SERVER_NAME,
            crate::ifthenpay_http::SERVER_VERSION,
        );
        let mut config = rmcp::model::ServerConfig::new(super::server_capabilities());
        if sandbox {
            implementation.title = Some(crate::ifthenpay_http::SANDBOX_TITLE.into());
            config = config.with_instructions(crate::ifthenpay_http::SANDBOX_INSTRUCTIONS);
        }
        config.with_server_info(implementation)
    }
}

/// Sorts tools into the seed's order.
pub(crate) fn seed_order(tools: &mut [rmcp::model::Tool]) {
    tools.sort_by_key(|t| {
        TOOLS
            .iter()
            .position(|n| *n == t.name)
            .unwrap_or(usize::MAX)
    });
}

/// The JSON Schema dialect the seed names for `tools/list`.
const DRAFT_07: &str = "http://json-schema.org/draft-07/schema#";

/// Declares the tool's input and output schemas as JSON Schema Draft 7.
fn draft_07(mut tool: rmcp::model::Tool) -> rmcp::model::Tool {
    let mut input = (*tool.input_schema).clone();
    input.insert("$schema".into(), serde_json::json!(DRAFT_07));
    tool.input_schema = std::sync::Arc::new(input);
    if let Some(output) = &tool.output_schema {
        let mut output = (**output).clone();
        output.insert("$schema".into(), serde_json::json!(DRAFT_07));
        tool.output_schema = Some(std::sync::Arc::new(output));
    }
    tool
}

impl PaywardenMcp {
    /// The ifthenpay tool router for `/mcp`, with the key arguments required as in
    /// [`Self::ifthenpay_tool_list`].
    pub(crate) fn ifthenpay_router(service: &IfthenpayService) -> ToolRouter<PaywardenMcp> {
        let mut router = Self::ifthenpay_tools();
        for route in router.map.values_mut() {
            route.attr = require_key(route.attr.clone(), service);
        }
        router
    }
}

/// Marks the tool's key argument as a required string unless paywarden holds that key.
fn require_key(mut tool: rmcp::model::Tool, service: &IfthenpayService) -> rmcp::model::Tool {
    let Some(argument) = IfthenpayService::key_argument(&tool.name) else {
        return tool;
    };
    if service.holds_key(argument) {
        return tool;
    }
    let mut schema = (*tool.input_schema).clone();
    if let Some(property) = schema
        .get_mut("properties")
        .and_then(|p| p.get_mut(argument))
        .and_then(serde_json::Value::as_object_mut)
    {
        property.insert("type".into(), serde_json::json!("string"));
    }
    let required = schema
        .entry("required")
        .or_insert_with(|| serde_json::json!([]));
    if let Some(list) = required.as_array_mut() {
        if !list.iter().any(|v| v == argument) {
            list.insert(0, serde_json::json!(argument));
        }
    }
    tool.input_schema = std::sync::Arc::new(schema);
    tool
}
