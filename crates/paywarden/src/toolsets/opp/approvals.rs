//! OPP approvals run through `get_approval`, and the outcomes of rejections and provider failures.

use super::{backoffice::Backoffice, *};

impl OppService {
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
                        // Under the approval's own idempotency key (`approval:<id>`): a
                        // concurrent follow-up call with approvalId replays instead of running
                        // twice.
                        let mut bound = args.clone();
                        if let serde_json::Value::Object(map) = &mut bound {
                            map.insert("approvalId".into(), approval.id.clone().into());
                        }
                        // The same operation as re-calling the tool with approvalId: OPP's
                        // rules on fresh state, the policy, the approval claimed only if what
                        // would move now is what the person approved.
                        let op = Backoffice { service: self, command };
                        let call = Call {
                            toolset: TOOLSET,
                            tool: &approval.tool,
                            arguments: &bound,
                            binding: approval.request_hash.clone(),
                            idempotency_key: None,
                            confirmation_token: None,
                            approval_id: Some(&approval.id),
                            argument_names: ("confirmationToken", "approvalId"),
                            floor: Decision::Allow,
                            output_defaults: serde_json::json!({ "balances": null }),
                        };
                        self.pipeline.run(caller, call, &op).await
                    }
                    ApprovalStatus::Executed => {
                        let outcome = approval.outcome.clone().unwrap_or_default();
                        let mut structured = outcome.get("structured").cloned().unwrap_or_default();
                        if let serde_json::Value::Object(map) = &mut structured {
                            map.insert("idempotentReplay".into(), serde_json::Value::Bool(true));
                        }
                        let stored = crate::store::stored_text(&outcome).unwrap_or_default();
                        let text: &str = &stored;
                        let text = text
                            .strip_prefix(crate::pipeline::SANDBOX_BANNER)
                            .map(|t| t.trim_start_matches('\n'))
                            .unwrap_or(text);
                        Ok(ToolOutcome {
                            structured_json: None,
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
                            ApprovalStatus::Denied if view.decided_by.as_deref().is_some_and(|d| d.starts_with("agent:")) => format!("Approval {} was WITHDRAWN by the agent (tasks/cancel): nothing will move. Ask for a new approval only if the user still wants it.", approval.id),
                            ApprovalStatus::Denied => format!("Approval {} was DENIED by {}: nothing will move. Do not retry this operation.", approval.id, view.decided_by.as_deref().unwrap_or("an operator")),
                            ApprovalStatus::Expired => format!("Approval {} EXPIRED without a decision: nothing moved. Ask again only if the user still wants it.", approval.id),
                            _ => format!("Approval {} is {}: waiting for a person at {}.", approval.id, view.status, view.url),
                        };
                        Ok(ToolOutcome {
                            structured_json: None,
                            text: self.pipeline.text_with_json(&text, &structured),
                            structured,
                            is_error: false,
                            audit: AuditFacts { outcome: "ok".into(), transaction_id: Some(approval.id.clone()), ..AuditFacts::default() },
                        })
                    }
                }
            })
            .await
    }

    pub(super) fn rejection_outcome(
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
            structured_json: None,
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
    pub(super) fn provider_failure(
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
            // Refused before it was processed: nothing happened, and it may be retried.
            OppError::Throttled { result, .. } => (
                "throttled",
                format!(
                    "{tool} failed: {error}. Nothing was done: OPP is throttling requests; this is retryable, retry the same call in a few seconds."
                ),
                Settlement::NotSent,
                result.as_ref().map(|r| r.code.clone()),
            ),
            OppError::AmountFormat(reason) => (
                "invalid_amount",
                format!("{tool} failed: {reason}. Nothing was sent."),
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
}
