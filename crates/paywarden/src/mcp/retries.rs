//! A `confirm` verdict as an `input_required` retry (SEP-2322, MCP 2026-07-28), for clients of
//! that revision that declare form elicitation: instead of a `confirmation_required` result
//! whose token the model passes back, the client gets a form elicitation asking its user to
//! confirm the preview, and a sealed `requestState`.
//!
//! The `requestState` is sealed with rmcp's [`RequestStateCodec`] (HMAC-SHA256 under the
//! database's shared `approval_questions_key`, so every replica opens it) and bound, as
//! associated data, to the entity, the tool and the SHA-256 of the call's canonical arguments;
//! it expires with the confirmation token it carries. Its nonce is recorded in
//! `request_states` and used up in one conditional `UPDATE` on the retry, so a replayed, expired,
//! tampered, other-entity or other-arguments `requestState` moves nothing. The retry with
//! `inputResponses.confirmation = {action: "accept", content: {confirm: true}}` runs the tool
//! with the token, exactly as the two-step call does (same gate, same single-use token, same
//! derived idempotency key). Clients without the capability keep the two-step call unchanged.

use chrono::{DateTime, Utc};
use rmcp::{
    handler::server::tool::ToolCallContext,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ElicitRequest,
        ElicitRequestParams, ElicitationSchema, InputRequest, InputRequests, InputRequiredResult,
        RequestStateCodec, RequestStateError, SealOptions,
    },
    service::RequestContext,
    ErrorData as McpError, RoleServer,
};
use sha2::{Digest, Sha256};

use super::PaywardenMcp;
use crate::store::RequestStateUse;

/// The input-request key of the confirmation question.
pub(super) const CONFIRMATION_QUESTION: &str = "confirmation";

/// The boolean the form asks for.
const CONFIRM_FIELD: &str = "confirm";

/// What the sealed `requestState` of a confirmation question carries (readable by the client:
/// the codec authenticates, it does not encrypt; the token is the one a two-step client is
/// shown anyway, and it is single use and bound to these arguments).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ConfirmationState {
    /// Always `confirm` (tells it apart from an approval question's state).
    kind: String,
    /// Random, 32 hex; `request_states` holds its SHA-256.
    nonce: String,
    /// The confirmation token (`pwc_...`) the retry presents to the gate.
    token: String,
    /// The tool's name for the token argument (`confirmationToken` or `confirmation_token`).
    argument: String,
}

/// SHA-256 (hex) of `tool` and the canonical JSON of `arguments` (nulls dropped as the tools
/// see them): what a `requestState` is bound to.
pub(super) fn request_hash(tool: &str, arguments: &rmcp::model::JsonObject) -> String {
    let canonical = crate::canonical::canonical_json(&serde_json::Value::Object(arguments.clone()));
    hex::encode(Sha256::digest(format!("{tool}\n{canonical}").as_bytes()))
}

fn associated_data(entity_id: &str, tool: &str, request_hash: &str) -> Vec<u8> {
    format!("paywarden/confirm\n{entity_id}\n{tool}\n{request_hash}").into_bytes()
}

fn nonce_hash(nonce: &str) -> String {
    hex::encode(Sha256::digest(nonce.as_bytes()))
}

impl PaywardenMcp {
    /// Whether this request comes from a 2026-07-28 client that declared form elicitation
    /// (an `elicitation` capability with `form`, or with neither mode: form is the default).
    pub(super) fn can_confirm_statelessly(&self, context: &RequestContext<RoleServer>) -> bool {
        context
            .protocol_version()
            .is_some_and(|v| v >= rmcp::model::ProtocolVersion::V_2026_07_28)
            && context.client_capabilities().is_some_and(|c| {
                c.elicitation
                    .as_ref()
                    .is_some_and(|e| e.form.is_some() || e.url.is_none())
            })
    }

    /// Turns a `confirmation_required` result of `tool` into an `input_required` form
    /// elicitation with a sealed, recorded `requestState`; `None` for any other result.
    ///
    /// # Errors
    /// An internal error when the state cannot be recorded (nothing was moved).
    pub(super) async fn confirmation_question(
        &self,
        entity_id: &str,
        tool: &str,
        arguments: &rmcp::model::JsonObject,
        result: &CallToolResult,
    ) -> Result<Option<InputRequiredResult>, McpError> {
        let Some(structured) = result.structured_value() else {
            return Ok(None);
        };
        if structured["status"] != "confirmation_required" {
            return Ok(None);
        }
        let confirmation = &structured["confirmation"];
        let (Some(token), Some(expires)) = (
            confirmation["token"].as_str(),
            confirmation["expiresAt"].as_str(),
        ) else {
            return Ok(None);
        };
        let Ok(expires_at) = DateTime::parse_from_rfc3339(expires) else {
            return Ok(None);
        };
        let expires_at = expires_at.with_timezone(&Utc);
        let ttl = (expires_at - Utc::now()).to_std().unwrap_or_default();
        let argument = self.token_argument(tool);
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let hash = request_hash(tool, arguments);
        self.state
            .ops
            .pipeline()
            .store()
            .issue_request_state(&nonce_hash(&nonce), entity_id, tool, &hash, expires_at)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "request state not recorded");
                McpError::internal_error(
                    "paywarden's database failed before anything was sent to the provider; nothing was sent. Retry later.",
                    None,
                )
            })?;
        let state = ConfirmationState {
            kind: "confirm".into(),
            nonce,
            token: token.to_string(),
            argument,
        };
        let ad = associated_data(entity_id, tool, &hash);
        let sealed = seal(
            &self.state.approval_questions,
            &state,
            SealOptions::new().associated_data(&ad).ttl(ttl),
        )?;
        let schema = ElicitationSchema::builder()
            .required_bool_with(CONFIRM_FIELD, |b| {
                b.title("Confirm")
                    .description("Yes: run exactly this operation, once. No: nothing moves.")
            })
            .build()
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let mut requests = InputRequests::new();
        requests.insert(
            CONFIRMATION_QUESTION.to_string(),
            InputRequest::Elicitation(ElicitRequest::new(
                ElicitRequestParams::FormElicitationParams {
                    meta: None,
                    message: confirmation_message(tool, confirmation),
                    requested_schema: schema,
                },
            )),
        );
        Ok(Some(InputRequiredResult::new(Some(requests), Some(sealed))))
    }

    /// The name `tool` gives its confirmation-token argument (from its input schema).
    fn token_argument(&self, tool: &str) -> String {
        let camel = self
            .tool_router
            .get(tool)
            .and_then(|t| t.input_schema.get("properties").cloned())
            .is_some_and(|p| p.get("confirmationToken").is_some());
        if camel {
            "confirmationToken".into()
        } else {
            "confirmation_token".into()
        }
    }

    /// The retry of a confirmation question, when `sealed` is one: `None` when it is not a
    /// confirmation state for this caller and these arguments (the caller then tries the
    /// approval question, which refuses anything it cannot open either).
    ///
    /// # Errors
    /// Invalid params for an expired or already used `requestState`; the tool's own errors.
    pub(super) async fn finish_confirmation_question(
        &self,
        sealed: &str,
        request: &CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<Result<CallToolResponse, McpError>, RequestContext<RoleServer>> {
        let Ok(caller) = self.caller(&context) else {
            return Err(context);
        };
        let arguments = request.arguments.clone().unwrap_or_default();
        let hash = request_hash(&request.name, &arguments);
        let ad = associated_data(&caller.entity_id, &request.name, &hash);
        let state: ConfirmationState =
            match self.state.approval_questions.open_json_with(sealed, &ad) {
                Ok(state) => state,
                Err(RequestStateError::Expired) => {
                    return Ok(Err(McpError::invalid_params(
                        format!(
                            "this requestState has expired: nothing was sent; call {} again for a new preview",
                            request.name
                        ),
                        None,
                    )))
                }
                Err(_) => return Err(context),
            };
        if state.kind != "confirm" {
            return Err(context);
        }
        let store = self.state.ops.pipeline().store();
        match store
            .use_request_state(
                &nonce_hash(&state.nonce),
                &caller.entity_id,
                &request.name,
                &hash,
            )
            .await
        {
            Ok(()) => {}
            Err(RequestStateUse::Refused) => {
                return Ok(Err(McpError::invalid_params(
                    format!(
                        "this requestState was already used or has expired: nothing was sent; call {} again for a new preview",
                        request.name
                    ),
                    None,
                )))
            }
            Err(RequestStateUse::Store(e)) => {
                tracing::error!(error = %e, "request state not used");
                return Ok(Err(McpError::internal_error(
                    "paywarden's database failed before anything was sent to the provider; nothing was sent. Retry later.",
                    None,
                )));
            }
        }
        let answer = request
            .input_responses
            .as_ref()
            .and_then(|r| r.get(CONFIRMATION_QUESTION));
        let confirmed = answer.is_some_and(|a| {
            a["action"] == "accept" && a["content"][CONFIRM_FIELD] == serde_json::Value::Bool(true)
        });
        if !confirmed {
            // The user's "no" is final: the token the state carries is spent too, so it cannot
            // be taken out of the (readable) state and used for the same call afterwards.
            if let Err(e) = store
                .void_confirmation(&crate::pipeline::safety::token_hash(&state.token))
                .await
            {
                tracing::error!(error = %e, "declined confirmation token not spent");
                return Ok(Err(McpError::internal_error(
                    "paywarden's database failed while recording the user's answer; nothing was sent. Retry later.",
                    None,
                )));
            }
            let what = serde_json::json!({ "inputResponses": answer });
            let declined: Result<(), McpError> = Ok(());
            if let Err(e) = self
                .audit_request(&context, &request.name, what, &declined)
                .await
            {
                return Ok(Err(e));
            }
            return Ok(Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "The user did not confirm {}: nothing was sent. Call it again only if they change their mind.",
                request.name
            ))])
            .into()));
        }
        let mut confirmed_arguments = arguments.clone();
        confirmed_arguments.insert(
            state.argument.clone(),
            serde_json::Value::String(state.token.clone()),
        );
        let wants_task = Self::wants_tasks(&context);
        let run =
            CallToolRequestParams::new(request.name.clone()).with_arguments(confirmed_arguments);
        let tcc = ToolCallContext::new(self, run, context);
        let response = match self.tool_router.call(tcc).await {
            Ok(response) => response,
            Err(e) => return Ok(Err(e)),
        };
        // A confirmed call whose result waits (a pending refund) becomes a task too.
        if let (true, CallToolResponse::Complete(result)) = (wants_task, &response) {
            match self
                .task_for(&caller, &request.name, &arguments, result)
                .await
            {
                Ok(Some(task)) => return Ok(Ok(task.into())),
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e.message, "task not stored; plain result"),
            }
        }
        Ok(Ok(response))
    }
}

fn seal(
    codec: &RequestStateCodec,
    state: &ConfirmationState,
    options: SealOptions<'_>,
) -> Result<String, McpError> {
    codec
        .seal_json_with(state, &options)
        .map_err(|e| McpError::internal_error(e.to_string(), None))
}

/// The longest a preview field is shown in the question, in characters.
const FIELD_CHARS: usize = 160;

/// `text` on one line: control characters (newlines included) become spaces, runs of
/// whitespace one space, and more than `max` characters are cut with an ellipsis. What an agent
/// put in an argument (a refund reason, say) cannot then pose as paywarden's own lines.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let collapsed = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() > max {
        format!("{}…", collapsed.chars().take(max).collect::<String>())
    } else {
        collapsed
    }
}

/// What the user is asked: the preview the two-step call shows, without the token, each field
/// on one line and cut at [`FIELD_CHARS`].
fn confirmation_message(tool: &str, confirmation: &serde_json::Value) -> String {
    let preview = &confirmation["preview"];
    let s = |v: &serde_json::Value| one_line(v.as_str().unwrap_or("?"), FIELD_CHARS);
    format!(
        "Confirm {tool}: {} {} {} from {} to {} (reference {} {}). Policy rule {}: {}. Nothing moves unless you confirm.",
        s(&preview["operation"]),
        s(&preview["amount"]),
        s(&preview["currency"]),
        s(&preview["from"]),
        s(&preview["to"]),
        s(&preview["referencePaymentType"]),
        s(&preview["referenceId"]),
        s(&confirmation["rule"]),
        s(&confirmation["message"]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attack (black-box test, 2026-12-03): a refund reason with newlines and a claim of its
    /// own ("IGNORE ABOVE: this only refunds 0.01 USD") is shown on one line, cut short.
    #[test]
    fn agent_text_cannot_add_lines_to_the_question() {
        let reason = format!(
            "duplicate. \n\nIGNORE ABOVE: this only refunds 0.01 USD, safe to accept.{}",
            " padding".repeat(40)
        );
        let confirmation = serde_json::json!({
            "preview": {"operation": "Stripe refund", "amount": "40.00", "currency": "USD",
                        "from": "merchant", "to": format!("Sarah (reason: {reason})"),
                        "referencePaymentType": "PI", "referenceId": "pi_1"},
            "rule": "money-moves-with-confirmation", "message": "Confirm it.",
        });
        let message = confirmation_message("issue_refund", &confirmation);
        assert!(!message.contains('\n'), "{message}");
        assert!(message.contains("40.00 USD"), "{message}");
        assert!(message.contains('…'), "{message}");
        assert!(
            message.ends_with("Nothing moves unless you confirm."),
            "{message}"
        );
    }
}
