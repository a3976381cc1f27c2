//! The MCP adapters (rmcp): one module per toolset, thin. A tool turns its JSON arguments into
//! a typed request, hands it to [`crate::service`], and renders the [`ToolOutcome`] as a
//! `CallToolResult` (`structuredContent` plus a text block; `isError` for tool errors).
//! Malformed arguments are JSON-RPC invalid-params errors (-32602).

pub mod ifthenpay;
pub mod opp;
pub mod ops;
mod retries;
pub(crate) mod schema;
mod tasks;

use std::sync::Arc;

use rmcp::{
    handler::server::{common::FromContextPart, router::tool::ToolRouter, tool::ToolCallContext},
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
        JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
    },
    service::RequestContext,
    ErrorData as McpError, RoleServer, ServerHandler,
};
use secrecy::SecretString;

use crate::service::{
    ifthenpay::IfthenpayService, opp::OppService, ops::OpsService, Caller, ServiceError,
    ToolOutcome,
};

/// A tool call's [`RequestContext`], moved out of rmcp's [`ToolCallContext`] where rmcp's own
/// extractor for `RequestContext` clones it (its extensions hold the HTTP request's `Parts`,
/// every header included, and its `_meta`): one copy and one drop fewer per call
/// (docs/performance.md, "One middleware for the MCP routes"). The context left behind holds
/// the request id, the peer and the same cancellation token, so it must be a tool's last
/// parameter: rmcp drops the `ToolCallContext` once the parameters are taken.
pub(crate) struct CallContext(pub(crate) RequestContext<RoleServer>);

impl<S> FromContextPart<ToolCallContext<'_, S>> for CallContext {
    fn from_context_part(context: &mut ToolCallContext<'_, S>) -> Result<Self, McpError> {
        let taken = &mut context.request_context;
        let mut rest = RequestContext::new(taken.id.clone(), taken.peer.clone());
        rest.ct = taken.ct.clone();
        Ok(Self(std::mem::replace(taken, rest)))
    }
}

/// HTTP header carrying the caller's entity id (OPP `entityId`).
pub const HEADER_ENTITY_ID: &str = "x-entity-id";
/// HTTP header carrying the caller's token (passed on as OPP's bearer token).
pub const HEADER_TOKEN: &str = "x-token";

/// What every MCP session shares.
#[derive(Debug)]
pub struct McpState {
    /// The OPP toolset's service.
    pub opp: OppService,
    /// The ops toolset's service (Stripe + orders database).
    pub ops: OpsService,
    /// The ifthenpay toolset's service.
    pub ifthenpay: IfthenpayService,
    /// The caller for transports without headers (stdio): from configuration.
    pub local_caller: Option<Caller>,
    /// Whether the offline emulator stands in for the providers.
    pub sandbox: bool,
    /// Toolsets served.
    pub toolsets: Vec<String>,
    /// Hide every tool that moves money.
    pub read_only: bool,
    /// Seals the `requestState` of approval questions (a per-process random key).
    pub approval_questions: rmcp::model::RequestStateCodec,
    /// Judges HTTP callers' credentials (every HTTP transport runs it first).
    pub authenticator: Arc<crate::auth::Authenticator>,
    /// Session clients' resource subscriptions, told of provider events ([`crate::events`]).
    pub subscriptions: Arc<crate::events::Subscriptions>,
}

/// Which endpoint a handler serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/mcp` and stdio: every enabled toolset and paywarden's own tools.
    Unified,
    /// `/agentic/v1/mcp`: exactly the OPP seed's eight tools.
    OppCompat,
    /// `/mcp/payments/` for every client but the ifthenpay seed's own 2025-03-26 requests
    /// ([`crate::ifthenpay_http`] routes them): exactly the ifthenpay seed's nine tools, in its
    /// order and with its Draft 7 schemas, as the server `ifthenpay-mcp` 1.0.0.
    IfthenpayCompat,
}

/// The protocol versions `/mcp/payments/` speaks: the seed's 2025-03-26 for every client with
/// an `initialize` handshake (the seed: "MCP specification version 2025-03-26"), and the
/// stateless 2026-07-28.
const IFTHENPAY_COMPAT_VERSIONS: &[rmcp::model::ProtocolVersion] = &[
    rmcp::model::ProtocolVersion::V_2025_03_26,
    rmcp::model::ProtocolVersion::V_2026_07_28,
];

/// The toolsets paywarden knows.
pub const KNOWN_TOOLSETS: &[&str] = &["opp", "ops", "ifthenpay"];

/// paywarden's MCP server handler: the enabled toolsets' tools on one pipeline.
#[derive(Clone)]
pub struct PaywardenMcp {
    state: Arc<McpState>,
    /// Shared by every clone: rmcp clones the handler for each session (and, stateless, for
    /// each request), and a deep copy of ~40 tools' descriptions and schemas was most of a
    /// session's memory and a measurable part of a stateless call.
    tool_router: Arc<ToolRouter<PaywardenMcp>>,
    ops_enabled: bool,
    endpoint: Endpoint,
    /// What `get_info` answers, built on its first call and shared by every clone: rmcp asks
    /// for it on every stateless request, and building it (the instructions grown piece by
    /// piece) was 0.5 % of an audited read's CPU (docs/performance.md, "An audited read's own
    /// formatting"). What it is built from (the endpoint, the toolsets, sandbox) does not change
    /// while the server runs.
    info: Arc<std::sync::OnceLock<ServerConfig>>,
}

impl PaywardenMcp {
    /// A handler for `/mcp` (and stdio): every enabled toolset plus paywarden's own tools
    /// (`get_approval`); in read-only mode without money-moving tools.
    pub fn new(state: Arc<McpState>) -> Self {
        Self::for_endpoint(state, Endpoint::Unified)
    }

    /// A handler for `endpoint`: the unified one, or a seed's compat endpoint with exactly
    /// that seed's tools.
    pub fn for_endpoint(state: Arc<McpState>, endpoint: Endpoint) -> Self {
        let mut tool_router = ToolRouter::new();
        if endpoint == Endpoint::IfthenpayCompat {
            if state.toolsets.iter().any(|t| t == "ifthenpay") {
                tool_router.merge(Self::ifthenpay_compat_router(&state.ifthenpay));
            }
        } else if state.toolsets.iter().any(|t| t == "opp") {
            tool_router.merge(Self::opp_tools());
        }
        if endpoint == Endpoint::Unified {
            if state.toolsets.iter().any(|t| t == "ops") {
                tool_router.merge(Self::ops_tools());
            }
            if state.toolsets.iter().any(|t| t == "ifthenpay") {
                tool_router.merge(Self::ifthenpay_router(&state.ifthenpay));
            }
            tool_router.merge(Self::paywarden_tools());
        }
        if state.read_only {
            for name in crate::catalog::hidden_in_read_only_tools() {
                tool_router.remove_route(name);
            }
        }
        for route in tool_router.map.values_mut() {
            route.attr = schema::portable_tool(route.attr.clone());
        }
        let ops_enabled =
            endpoint == Endpoint::Unified && state.toolsets.iter().any(|t| t == "ops");
        Self {
            state,
            tool_router: Arc::new(tool_router),
            ops_enabled,
            endpoint,
            info: Arc::default(),
        }
    }

    /// The caller of the current request: `X-Entity-Id`/`X-Token` headers over HTTP, the
    /// configured local caller over stdio.
    fn caller(&self, context: &RequestContext<RoleServer>) -> Result<Caller, McpError> {
        // Per request in the 2026-07-28 era (request `_meta`), from the handshake before it.
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
            // The transport verified these credentials ([`crate::auth`]) and marked the request.
            let verified = parts
                .extensions
                .get::<crate::auth::Authenticated>()
                .map(|a| a.entity_id.as_str());
            return match (header(HEADER_ENTITY_ID), header(HEADER_TOKEN)) {
                (Some(entity_id), Some(token)) if verified == Some(entity_id.as_str()) => {
                    Ok(Caller {
                        entity_id,
                        token: SecretString::from(token),
                        client_name,
                    })
                }
                (Some(_), Some(_)) => Err(McpError::invalid_request(
                    "X-Entity-Id / X-Token were not accepted for this request: send your OPP entity id and its access token",
                    None,
                )),
                (None, _) => Err(McpError::invalid_request(
                    "missing X-Entity-Id header: every request must carry X-Entity-Id and X-Token",
                    None,
                )),
                (_, None) => Err(McpError::invalid_request(
                    "missing X-Token header: every request must carry X-Entity-Id and X-Token",
                    None,
                )),
            };
        }
        match &self.state.local_caller {
            Some(caller) => Ok(Caller {
                client_name,
                ..caller.clone()
            }),
            None => Err(McpError::invalid_request(
                "no entity configured for this transport: set PAYWARDEN_ENTITY_ID and PAYWARDEN_TOKEN",
                None,
            )),
        }
    }
}

impl PaywardenMcp {
    /// Resolves the caller and parses the arguments; malformed arguments are audited and
    /// answered with a JSON-RPC invalid-params error.
    pub(crate) async fn parse<T: serde::de::DeserializeOwned>(
        &self,
        tool: &str,
        arguments: &JsonObject,
        context: &RequestContext<RoleServer>,
    ) -> Result<(T, Caller), McpError> {
        let caller = self.caller(context)?;
        match parse_args::<T>(tool, arguments) {
            Ok(parsed) => Ok((parsed, caller)),
            Err(error) => {
                let message = error.message.to_string();
                let (pipeline, toolset) = if ops::OPS_TOOLS.contains(&tool) {
                    (self.state.ops.pipeline(), crate::service::ops::TOOLSET)
                } else {
                    (self.state.opp.pipeline(), crate::service::opp::TOOLSET)
                };
                let audited = pipeline
                    .read(
                        &caller,
                        toolset,
                        tool,
                        &serde_json::Value::Object(arguments.clone()),
                        || async { Err(ServiceError::InvalidArguments(message)) },
                    )
                    .await;
                render(audited).and(Err(error))
            }
        }
    }
}

impl PaywardenMcp {
    /// Puts a request that is not a tool call (`resources/read`, `completion/complete`, an
    /// unknown tool named `what`) on the audit record through the pipeline, as every tool call
    /// is: under the caller's entity (`anonymous` without credentials), masked like every row
    /// (no e-mail of a `customer://` URI, no key among an unknown tool's arguments). Toolset
    /// `ops` where the ops toolset serves it, `ifthenpay` on `/mcp/payments/`, else `paywarden`.
    ///
    /// # Errors
    /// An internal error when the audit log cannot be written: nothing is served off the record.
    async fn audit_request<T>(
        &self,
        context: &RequestContext<RoleServer>,
        what: &str,
        arguments: serde_json::Value,
        result: &Result<T, McpError>,
    ) -> Result<(), McpError> {
        let caller = if self.endpoint == Endpoint::IfthenpayCompat {
            // Callers there are anonymous unless they authenticate as an entity.
            self.state
                .ifthenpay
                .audit_caller(&self.ifthenpay_identity(context))
        } else {
            self.caller(context).unwrap_or_else(|_| Caller {
                entity_id: "anonymous".into(),
                token: SecretString::from(String::new()),
                client_name: context.client_info().map(|info| info.name),
            })
        };
        let toolset = match self.endpoint {
            Endpoint::IfthenpayCompat => crate::service::ifthenpay::TOOLSET,
            _ if self.serves_ops() && matches!(what, "resources/read" | "completion/complete") => {
                crate::service::ops::TOOLSET
            }
            _ => "paywarden",
        };
        let outcome = ToolOutcome {
            structured_json: None,
            structured: serde_json::Value::Null,
            is_error: result.is_err(),
            text: result
                .as_ref()
                .err()
                .map(|e| e.message.to_string())
                .unwrap_or_default(),
            audit: crate::service::AuditFacts {
                outcome: if result.is_err() { "error" } else { "ok" }.into(),
                ..Default::default()
            },
        };
        self.state
            .ops
            .pipeline()
            .read(&caller, toolset, what, &arguments, || async { Ok(outcome) })
            .await
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(error = %e, "audit append failed");
                McpError::internal_error(
                    "paywarden's audit log could not be written; nothing was served. Retry later.",
                    None,
                )
            })
    }
}

/// An error as the client gets it: personal data masked in its message and data
/// ([`crate::mask`]).
fn masked(mut error: McpError) -> McpError {
    error.message = crate::mask::text(&error.message).into();
    error.data = error.data.as_ref().map(crate::mask::arguments);
    error
}

impl PaywardenMcp {
    /// `get_approval` for any toolset: an approved request of the ops toolset is executed by
    /// its service (exactly once); everything else (OPP operations, and the status of any
    /// request) by the OPP service's generic handling.
    pub(crate) async fn resolve_approval(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        approval_id: String,
    ) -> Result<ToolOutcome, ServiceError> {
        if let Ok(Some(approval)) = self
            .state
            .ops
            .pipeline()
            .store()
            .approval(&approval_id)
            .await
        {
            if approval.toolset == crate::service::ops::TOOLSET
                && approval.entity_id == caller.entity_id
                && approval.status == crate::store::ApprovalStatus::Approved
            {
                return self.state.ops.execute_approval(caller, &approval).await;
            }
        }
        self.state
            .opp
            .get_approval(caller, arguments, approval_id)
            .await
    }

    /// Renders an outcome; a pending approval is first put to the client's user through
    /// elicitation when the client supports it.
    pub(crate) async fn render_with_approval(
        &self,
        caller: &Caller,
        outcome: Result<ToolOutcome, ServiceError>,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        if let Ok(pending) = &outcome {
            if pending.structured["status"] == "approval_pending" {
                if let Some(decided) = self.ask_the_user(caller, pending, context).await {
                    return render(decided);
                }
            }
        }
        render(outcome)
    }

    /// Whether the ops toolset's resources and prompts are served here.
    fn serves_ops(&self) -> bool {
        self.ops_enabled
    }

    /// Whether this request comes from a 2026-07-28 client that declared URL-mode
    /// elicitation, which can be sent to the approval page with an `input_required` round
    /// trip. Form elicitation is never offered for an approval: a client's answer is the
    /// client speaking, not an operator.
    fn can_ask_statelessly(&self, context: &RequestContext<RoleServer>) -> bool {
        context
            .protocol_version()
            .is_some_and(|v| v >= rmcp::model::ProtocolVersion::V_2026_07_28)
            && context
                .client_capabilities()
                .is_some_and(|c| c.elicitation.as_ref().is_some_and(|e| e.url.is_some()))
    }

    /// The retry of an `input_required` approval question: open the sealed state and report
    /// where the approval stands, executing it once if an operator approved it on the page or
    /// with the CLI. Whatever `inputResponses` says is ignored: it is the client's answer, and
    /// a client never approves a `human` call.
    async fn finish_approval_question(
        &self,
        sealed: &str,
        request: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let caller = self.caller(context)?;
        let state: ApprovalQuestionState = self
            .state
            .approval_questions
            .open_json(sealed)
            .map_err(|_| McpError::invalid_params("unknown or tampered requestState", None))?;
        let arguments = request.arguments.clone().unwrap_or_default();
        if state.entity_id != caller.entity_id
            || state.tool != request.name
            || state.request_hash != retries::request_hash(&request.name, &arguments)
        {
            return Err(McpError::invalid_params(
                "this requestState belongs to another call",
                None,
            ));
        }
        // Whatever was answered, report where the approval stands now (executing it once if
        // it was approved); a dismissed question leaves it pending for an operator.
        let arguments = serde_json::json!({ "approvalId": state.approval_id });
        render(
            self.resolve_approval(&caller, &arguments, state.approval_id.clone())
                .await,
        )
        .map(CallToolResponse::from)
    }
}

/// The input-request key of the approval question.
pub(crate) const APPROVAL_QUESTION: &str = "approval";

/// What the sealed `requestState` of an approval question carries.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ApprovalQuestionState {
    approval_id: String,
    entity_id: String,
    tool: String,
    /// [`retries::request_hash`] of the call asked about: a retry with other arguments is
    /// another call, refused (a state sealed without it matches no call).
    #[serde(default)]
    request_hash: String,
}

/// Turns an `approval_pending` result into an `input_required` URL-mode elicitation that sends
/// the client's user to the approval page (where an operator decides).
fn approval_question(
    result: &CallToolResult,
    request_hash: String,
    codec: &rmcp::model::RequestStateCodec,
) -> Option<rmcp::model::InputRequiredResult> {
    let structured = result.structured_value()?;
    if structured["status"] != "approval_pending" {
        return None;
    }
    let approval = &structured["approval"];
    let preview = &approval["preview"];
    let state = ApprovalQuestionState {
        approval_id: approval["id"].as_str()?.to_string(),
        entity_id: preview["entity"].as_str()?.to_string(),
        tool: preview["tool"].as_str()?.to_string(),
        request_hash,
    };
    let sealed = codec.seal_json(&state).ok()?;
    let url = approval["url"].as_str()?.to_string();
    let mut requests = rmcp::model::InputRequests::new();
    requests.insert(
        APPROVAL_QUESTION.to_string(),
        rmcp::model::InputRequest::Elicitation(rmcp::model::ElicitRequest::new(
            rmcp::model::ElicitRequestParams::UrlElicitationParams {
                meta: None,
                message: opp::approval_page_message(approval),
                url,
                elicitation_id: state.approval_id.clone(),
            },
        )),
    );
    Some(rmcp::model::InputRequiredResult::new(
        Some(requests),
        Some(sealed),
    ))
}

/// Parses tool arguments into `T`, as a JSON-RPC invalid-params error when they don't fit.
pub(crate) fn parse_args<T: serde::de::DeserializeOwned>(
    tool: &str,
    arguments: &JsonObject,
) -> Result<T, McpError> {
    crate::mask::deserialize(serde_json::Value::Object(arguments.clone())).map_err(|e| {
        McpError::invalid_params(
            format!("invalid arguments for {tool}: {e}; see the tool's inputSchema"),
            None,
        )
    })
}

/// Renders a service result as a tool result.
pub(crate) fn render(
    result: Result<ToolOutcome, ServiceError>,
) -> Result<CallToolResult, McpError> {
    match result {
        Ok(outcome) => {
            let mut rendered = if outcome.is_error {
                CallToolResult::error(vec![ContentBlock::text(crate::mask::text(&outcome.text))])
            } else {
                CallToolResult::success(vec![ContentBlock::text(outcome.text)])
            };
            if !outcome.is_error {
                match outcome.structured_json {
                    // Serialized once by the tool; rmcp writes it as it is.
                    Some(json) => rendered.structured_content_json = Some(json.0),
                    None => rendered.structured_content = Some(outcome.structured),
                }
            }
            Ok(rendered)
        }
        Err(ServiceError::InvalidArguments(message)) => {
            Err(McpError::invalid_params(crate::mask::text(&message), None))
        }
        Err(e @ ServiceError::Store(_)) => {
            tracing::error!(error = %e, "store failure");
            Err(McpError::internal_error(
                "paywarden's database failed before anything was sent to the provider; nothing was sent. Retry later.",
                None,
            ))
        }
        // The request may have reached the provider: say so, never "nothing was sent".
        Err(e @ ServiceError::Unrecorded { .. }) => {
            tracing::error!(error = %e, "store failure after sending");
            Err(McpError::internal_error(e.to_string(), None))
        }
    }
}

/// The input schema of parameter type `T` (an object schema).
pub(crate) fn input_schema<T: schemars::JsonSchema + 'static>() -> Arc<JsonObject> {
    rmcp::handler::server::common::schema_for_input::<T>()
        .unwrap_or_else(|_| rmcp::handler::server::common::schema_for_type::<T>())
}

impl PaywardenMcp {
    /// The server's info and instructions for this endpoint ([`ServerHandler::get_info`]).
    fn server_info(&self) -> ServerConfig {
        if self.endpoint == Endpoint::IfthenpayCompat {
            return self.ifthenpay_compat_info();
        }
        let mut instructions = String::from(
            "paywarden: payment back-office and reporting tools for ACI's Open Payment Platform (OPP). \
             Money-moving tools (perform_*) act on a referenced transaction id; amounts are decimal strings \
             in the currency's minor-unit precision (\"10.00\" EUR, \"1000\" JPY) and always go with an ISO 4217 currency. \
             Capture and refund default to the full remaining amount. Pass an idempotencyKey on every money-moving call \
             and reuse it when retrying: a retry then returns the first outcome and moves no money twice. \
             Look transactions up with get_transactions (by id or merchantTransactionId) and search_transactions (date range and filters).",
        );
        if self.state.toolsets.iter().any(|t| t == "ifthenpay") {
            instructions.push_str(
                " ifthenpay tools (multibanco_create_reference, mbway_request_payment, mbway_check_status, payshop_create_reference, creditcard_create_payment, pinpay_create_payment, cofidis_create_payment, pix_create_payment, payments_list) create Portuguese and Brazilian payment requests; amounts are EUR numbers (BRL for PIX) and each result is JSON.",
            );
        }
        if self.state.sandbox {
            instructions.push_str(
                " SANDBOX: this server is connected to paywarden's offline OPP emulator; no real money moves and no real provider is contacted.",
            );
        }
        let mut implementation = Implementation::from_build_env();
        implementation.name = "paywarden".into();
        implementation.version = env!("CARGO_PKG_VERSION").into();
        implementation.title = Some(if self.state.sandbox {
            "paywarden (SANDBOX: offline emulator)".into()
        } else {
            "paywarden".into()
        });
        if self.serves_ops() {
            instructions.push_str(
                " Payment ops (Stripe + the merchant's orders database): lookup_customer, list_payments and get_order_history by customer e-mail; \
                 issue_refund always previews first and refunds only when called again with the preview's confirmation_token (after the user agrees); \
                 create_payment_link, revenue_summary, flag_for_review. Resources customer://{email} and payment://{charge_id}; prompts daily_revenue_report and find_refund_candidates.",
            );
        }
        ServerConfig::new(server_capabilities())
            .with_server_info(implementation)
            .with_instructions(instructions)
    }
}

impl ServerHandler for PaywardenMcp {
    fn get_info(&self) -> ServerConfig {
        self.info.get_or_init(|| self.server_info()).clone()
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourceTemplatesResult, McpError> {
        let mut result = rmcp::model::ListResourceTemplatesResult::default();
        if self.serves_ops() {
            result.resource_templates = ops::resource_templates();
        }
        if self.endpoint == Endpoint::Unified {
            result.resource_templates.push(
                rmcp::model::ResourceTemplate::new(
                    "paywarden://payments/{provider}/{payment_id}",
                    "payment_events",
                )
                .with_title("Payment events")
                .with_description(
                    "What the provider told paywarden about a payment (provider stripe: a PaymentIntent pi_...; opp: a payment id): the Stripe webhook events and OPP notifications received, oldest first. Subscribe to it (resources/subscribe) to hear when a new one arrives.",
                )
                .with_mime_type("application/json"),
            );
        }
        Ok(result)
    }

    async fn read_resource(
        &self,
        request: rmcp::model::ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ReadResourceResponse, McpError> {
        let result = if request
            .uri
            .starts_with(crate::events::subscriptions::PAYMENT_URI_PREFIX)
        {
            match self.caller(&context) {
                Ok(caller) => self.read_payment_events(&caller, &request.uri).await,
                Err(e) => Err(e),
            }
        } else if self.serves_ops() {
            match self.caller(&context) {
                Ok(caller) => self.read_ops_resource(&caller, &request.uri).await,
                Err(e) => Err(e),
            }
        } else {
            // rmcp turns -32002 into -32602 for 2026-07-28 peers (SEP-2164); `data.uri` names it.
            Err(McpError::resource_not_found(
                format!(
                    "unknown resource {:?}: this endpoint serves no resources",
                    request.uri
                ),
                Some(serde_json::json!({ "uri": request.uri })),
            ))
        };
        let arguments = serde_json::json!({ "uri": request.uri });
        self.audit_request(&context, "resources/read", arguments, &result)
            .await?;
        result.map(Into::into).map_err(masked)
    }

    /// `resources/subscribe` (session clients): a payment resource
    /// (`paywarden://payments/{stripe|opp}/{id}`, or `payment://{pi_...}`) of the caller's
    /// entity; `notifications/resources/updated` follows when a provider event updates it.
    #[allow(deprecated)] // 2025-era subscriptions; 2026-07-28 clients use subscriptions/listen
    async fn subscribe(
        &self,
        request: rmcp::model::SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let caller = self.caller(&context)?;
        let result = if crate::events::parse_payment_uri(&request.uri).is_some() {
            self.state.subscriptions.subscribe(
                &caller.entity_id,
                session_id(&context),
                &request.uri,
                context.peer.clone(),
            );
            Ok(())
        } else {
            Err(McpError::invalid_params(
                format!(
                    "cannot subscribe to {:?}: subscribe to a payment, paywarden://payments/{{stripe|opp}}/{{payment id}} (or payment://{{pi_...}})",
                    request.uri
                ),
                Some(serde_json::json!({ "uri": request.uri })),
            ))
        };
        self.audit_request(
            &context,
            "resources/subscribe",
            serde_json::json!({ "uri": request.uri }),
            &result,
        )
        .await?;
        result
    }

    /// `subscriptions/listen` (2026-07-28): accepts the payment URIs among the requested
    /// `resourceSubscriptions` (see [`Self::subscribe`]); nothing else is offered.
    fn accepted_subscription_filter(
        &self,
        requested: &rmcp::model::SubscriptionFilter,
    ) -> Option<rmcp::model::SubscriptionFilter> {
        let mut accepted = rmcp::model::SubscriptionFilter::new();
        let uris: Vec<String> = requested
            .resource_subscriptions
            .iter()
            .flatten()
            .filter(|uri| crate::events::parse_payment_uri(uri).is_some())
            .cloned()
            .collect();
        accepted.resource_subscriptions = (!uris.is_empty()).then_some(uris);
        Some(accepted)
    }

    /// Runs one `subscriptions/listen` stream: `notifications/resources/updated` for the
    /// accepted payment URIs of the caller's entity, until the client cancels it.
    async fn listen(&self, context: rmcp::service::SubscriptionContext) -> Result<(), McpError> {
        let caller = self.caller(context.request_context())?;
        let uris = context
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        let id = self
            .state
            .subscriptions
            .listen(&caller.entity_id, &uris, context.sink().clone());
        context.cancelled().await;
        self.state.subscriptions.end_listen(id);
        Ok(())
    }

    /// `resources/unsubscribe`: ends this session's subscription to a payment URI (none:
    /// nothing); any other URI is invalid params, as for `resources/subscribe`.
    #[allow(deprecated)] // 2025-era subscriptions
    async fn unsubscribe(
        &self,
        request: rmcp::model::UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let caller = self.caller(&context)?;
        if crate::events::parse_payment_uri(&request.uri).is_none() {
            return Err(McpError::invalid_params(
                format!(
                    "cannot unsubscribe from {:?}: only payments (paywarden://payments/{{stripe|opp}}/{{payment id}}, payment://{{pi_...}}) can be subscribed to",
                    request.uri
                ),
                Some(serde_json::json!({ "uri": request.uri })),
            ));
        }
        self.state.subscriptions.unsubscribe(
            &caller.entity_id,
            session_id(&context).as_deref(),
            &request.uri,
        );
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListPromptsResult, McpError> {
        let mut result = rmcp::model::ListPromptsResult::default();
        if self.serves_ops() {
            result.prompts = ops::prompts();
        }
        Ok(result)
    }

    async fn get_prompt(
        &self,
        request: rmcp::model::GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetPromptResponse, McpError> {
        if !self.serves_ops() {
            return Err(McpError::invalid_params(
                format!(
                    "unknown prompt {:?}: this endpoint serves no prompts",
                    request.name
                ),
                None,
            ));
        }
        ops::prompt(&request.name, request.arguments.as_ref()).map(Into::into)
    }

    async fn complete(
        &self,
        request: rmcp::model::CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CompleteResult, McpError> {
        let result = if self.serves_ops() {
            match self.caller(&context) {
                Ok(caller) => Ok(rmcp::model::CompleteResult::new(
                    self.complete_ops(&caller, &request.argument.name, &request.argument.value)
                        .await,
                )),
                Err(e) => Err(e),
            }
        } else {
            Ok(rmcp::model::CompleteResult::default())
        };
        // The argument under its own name, so that an `email` is masked as one.
        let mut arguments = serde_json::json!({ "ref": request.r#ref });
        arguments[request.argument.name.as_str()] =
            serde_json::Value::String(request.argument.value.clone());
        self.audit_request(&context, "completion/complete", arguments, &result)
            .await?;
        result.map_err(masked)
    }

    async fn call_tool(
        &self,
        mut request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if let Some(arguments) = request.arguments.as_mut() {
            schema::drop_null_arguments(arguments);
        }
        if !self.tool_router.has_route(&request.name) {
            let mut names: Vec<String> = self
                .tool_router
                .list_all()
                .into_iter()
                .map(|t| t.name.to_string())
                .collect();
            names.sort();
            let error = McpError::invalid_params(
                format!(
                    "unknown tool {:?}: this server has {}",
                    request.name,
                    names.join(", ")
                ),
                None,
            );
            let arguments =
                serde_json::Value::Object(request.arguments.clone().unwrap_or_default());
            self.audit_request(
                &context,
                &request.name,
                arguments,
                &Err::<(), _>(error.clone()),
            )
            .await?;
            return Err(masked(error));
        }
        // The 2026-07-28 answer to a confirmation or human-approval question (SEP-2322
        // input_required): a confirmation state opens only for its entity, tool and arguments.
        if let Some(sealed) = request.request_state.clone() {
            return match self
                .finish_confirmation_question(&sealed, &request, context)
                .await
            {
                Ok(answer) => answer,
                // Boxed, as in `get_task` and `cancel_task`: an approval's answer runs the
                // approved call's whole pipeline (~39 KB of future state), and inline it would
                // make every request's future that large, copied into each request's task
                // (docs/performance.md, "Handler futures kept small").
                Err(context) => {
                    Box::pin(self.finish_approval_question(&sealed, &request, &context)).await
                }
            };
        }
        let wants_task = Self::wants_tasks(&context);
        let wants_question = self.can_ask_statelessly(&context);
        let wants_confirmation = self.can_confirm_statelessly(&context);
        let caller_context =
            (wants_task || wants_question || wants_confirmation).then(|| self.caller(&context));
        let name = request.name.to_string();
        let arguments = request.arguments.clone().unwrap_or_default();
        let tcc = ToolCallContext::new(self, request, context);
        let response = self.tool_router.call(tcc).await?;
        let (CallToolResponse::Complete(result), Some(Ok(caller))) = (&response, caller_context)
        else {
            return Ok(response);
        };
        // A call whose result waits (a person, a shopper, a provider) becomes a task. The call
        // has run: if the task or the question cannot be stored, the client still gets its
        // result (the two-step confirmation, the approval id), never an error.
        if wants_task {
            match self.task_for(&caller, &name, &arguments, result).await {
                Ok(Some(task)) => return Ok(task.into()),
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e.message, "task not stored; plain result"),
            }
        }
        if wants_confirmation {
            match self
                .confirmation_question(&caller.entity_id, &name, &arguments, result)
                .await
            {
                Ok(Some(question)) => return Ok(question.into()),
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e.message, "question not stored; plain result"),
            }
        }
        if wants_question {
            let hash = retries::request_hash(&name, &arguments);
            if let Some(question) = approval_question(result, hash, &self.state.approval_questions)
            {
                return Ok(question.into());
            }
        }
        Ok(response)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let mut tools = self.tool_router.list_all();
        if self.endpoint == Endpoint::IfthenpayCompat {
            ifthenpay::seed_order(&mut tools);
        }
        Ok(ListToolsResult {
            tools,
            ..Default::default()
        })
    }

    fn supported_protocol_versions(
        &self,
    ) -> std::borrow::Cow<'static, [rmcp::model::ProtocolVersion]> {
        if self.endpoint == Endpoint::IfthenpayCompat {
            std::borrow::Cow::Borrowed(IFTHENPAY_COMPAT_VERSIONS)
        } else {
            std::borrow::Cow::Borrowed(rmcp::model::ProtocolVersion::KNOWN_VERSIONS)
        }
    }

    async fn get_task(
        &self,
        request: rmcp::model::GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetTaskResult, McpError> {
        // Boxed: see `call_tool`'s approval answer.
        Box::pin(self.get_stored_task(&request.task_id, context)).await
    }

    async fn cancel_task(
        &self,
        request: rmcp::model::CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        // Boxed: see `call_tool`'s approval answer.
        Box::pin(self.cancel_stored_task(&request.task_id, context)).await
    }

    async fn update_task(
        &self,
        request: rmcp::model::UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.update_stored_task(&request.task_id, context).await
    }

    fn get_tool(&self, name: &str) -> Option<rmcp::model::Tool> {
        self.tool_router.get(name).cloned()
    }

    /// `logging/setLevel` (2025 era): accepted. paywarden sends no log notifications (its logs
    /// go to stderr and the audit trail), so there is nothing to filter.
    #[allow(deprecated)] // logging: deprecated by SEP-2577, still part of 2025-11-25
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        tracing::debug!(level = ?request.level, "logging/setLevel");
        Ok(())
    }
}

/// The Streamable HTTP session of a request (`Mcp-Session-Id`), `None` for stdio.
fn session_id(context: &RequestContext<RoleServer>) -> Option<String> {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.headers.get("mcp-session-id"))
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

impl PaywardenMcp {
    /// Reads a payment resource `paywarden://payments/{provider}/{id}`: the provider events
    /// paywarden received about that payment of the caller's entity, oldest first
    /// (`{"provider", "paymentId", "events": [...]}`); another entity's payment reads as empty.
    async fn read_payment_events(
        &self,
        caller: &Caller,
        uri: &str,
    ) -> Result<rmcp::model::ReadResourceResult, McpError> {
        let Some((provider, id)) = crate::events::parse_payment_uri(uri) else {
            return Err(McpError::resource_not_found(
                format!("unknown resource {uri:?}: payments are paywarden://payments/{{stripe|opp}}/{{payment id}}"),
                Some(serde_json::json!({ "uri": uri })),
            ));
        };
        let events = self
            .state
            .opp
            .pipeline()
            .store()
            .events_for(&caller.entity_id, id)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "store failure");
                McpError::internal_error("paywarden's database failed; retry later", None)
            })?;
        let events: Vec<_> = events
            .into_iter()
            .filter(|e| e.event.provider == provider)
            .collect();
        let body = serde_json::json!({ "provider": provider, "paymentId": id, "events": events });
        Ok(rmcp::model::ReadResourceResult::new(vec![
            rmcp::model::ResourceContents::text(body.to_string(), uri)
                .with_mime_type("application/json"),
        ]))
    }
}

/// What paywarden declares, on every endpoint: tools; prompts, resources and completions (the
/// ops toolset's, and empty where it isn't served: rmcp answers their list methods anyway, and
/// answering an undeclared capability fails MCP conformance, SEP-2575); logging (2025-era
/// `logging/setLevel`); the `io.modelcontextprotocol/tasks` extension (SEP-2663, [`tasks`]).
pub fn server_capabilities() -> ServerCapabilities {
    #[allow(deprecated)] // logging: deprecated by SEP-2577, still part of 2025-11-25
    let mut capabilities = ServerCapabilities::builder()
        .enable_logging()
        .enable_completions()
        .enable_prompts()
        .enable_resources()
        .enable_resources_subscribe()
        .enable_tools()
        .build();
    // Tasks (SEP-2663): calls that wait on a person or a provider ([`tasks`]).
    capabilities
        .extensions
        .get_or_insert_with(Default::default)
        .insert(
            rmcp::model::TASKS_EXTENSION_ID.to_string(),
            JsonObject::new(),
        );
    capabilities
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Answer {
        total: i64,
        currency: &'static str,
        days: Vec<(&'static str, i64)>,
        note: &'static str,
    }

    const ANSWER: Answer = Answer {
        total: 150,
        currency: "EUR",
        days: Vec::new(),
        note: "quote \" and \u{e9}",
    };

    /// A result serialized once goes out as the same JSON a `Value` would have given (keys in
    /// field order), in the text and as `structuredContent`, and reads back as that value.
    #[test]
    fn a_result_serialized_once_is_sent_and_read_as_its_value() {
        let outcome =
            ToolOutcome::serialized(Some("[SANDBOX]"), "Revenue", &ANSWER, Default::default())
                .unwrap();
        let value = serde_json::to_value(&ANSWER).unwrap();
        assert_eq!(outcome.structured, serde_json::Value::Null);
        assert_eq!(*outcome.structured_value(), value);
        assert_eq!(
            outcome.text,
            format!(
                "[SANDBOX]\nRevenue\n{}",
                serde_json::to_string(&ANSWER).unwrap()
            )
        );
        let rendered = render(Ok(outcome.clone())).unwrap();
        assert_eq!(rendered.structured_content, None);
        assert_eq!(rendered.structured_value().as_deref(), Some(&value));
        let wire = serde_json::to_value(&rendered).unwrap();
        assert_eq!(wire["structuredContent"], value);
        assert_eq!(wire["content"][0]["text"], outcome.text.as_str());
        // What a client receives: the same result, with the value in `structured_content`.
        let received: CallToolResult = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(received.structured_content.as_ref(), Some(&value));
        // Written out field by field as the derive did: a result without structured content
        // or flags has neither key.
        let plain = serde_json::to_value(CallToolResult::success(vec![])).unwrap();
        assert_eq!(
            plain,
            serde_json::json!({"resultType": "complete", "content": [], "isError": false})
        );
        // Changed in place, it is parsed first.
        let mut changed = rendered;
        changed.structured_value_mut().unwrap()["total"] = 1.into();
        assert!(changed.structured_content_json.is_none());
        assert_eq!(
            serde_json::to_value(&changed).unwrap()["structuredContent"]["total"],
            1
        );
        let mut outcome = outcome;
        outcome.structured_mut()["total"] = 2.into();
        assert_eq!(outcome.structured_json, None);
        assert_eq!(outcome.structured["total"], 2);
    }

    /// The size of the future a method of [`PaywardenMcp`] returns, without calling it.
    fn future_size<A, B, F: std::future::Future>(_: fn(&'static PaywardenMcp, A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// rmcp spawns the future of every request as a task of its own, so its whole state is
    /// allocated and copied once per request. The approval paths run a money-moving call's
    /// whole pipeline and are boxed; inline, they made every request's future ~43 KB in a
    /// release build (docs/performance.md, "Handler futures kept small").
    #[test]
    fn a_requests_future_stays_small_whatever_the_request_might_run() {
        let request = future_size(<PaywardenMcp as rmcp::Service<RoleServer>>::handle_request);
        let call_tool = future_size(<PaywardenMcp as ServerHandler>::call_tool);
        let get_task = future_size(<PaywardenMcp as ServerHandler>::get_task);
        let cancel_task = future_size(<PaywardenMcp as ServerHandler>::cancel_task);
        for (what, size) in [
            ("a request", request),
            ("tools/call", call_tool),
            ("tasks/get", get_task),
            ("tasks/cancel", cancel_task),
        ] {
            assert!(size <= 16 * 1024, "{what}'s future is {size} bytes");
        }
    }
}
