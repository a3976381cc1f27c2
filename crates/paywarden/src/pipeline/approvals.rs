//! Approval requests at the gate: the stored request a person decides, and its caller-facing view.

use chrono::{Duration as ChronoDuration, Utc};

use super::gate::with_defaults;
use super::{
    redact,
    safety::{ApprovalView, PreviewView, CONTROL_ARGUMENTS},
    AuditFacts, Caller, Pipeline, ServiceError, Settlement, ToolOutcome,
};
use crate::{
    policy::Verdict,
    store::{Approval, NewApproval, StoreError},
};

impl Pipeline {
    /// The caller-facing view of an approval request, with its page URL.
    pub fn approval_view(&self, approval: &Approval) -> ApprovalView {
        let stamp = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        ApprovalView {
            id: approval.id.clone(),
            status: approval.status.as_str().to_string(),
            url: format!(
                "{}/approvals/{}",
                self.safety().public_url().trim_end_matches('/'),
                approval.id
            ),
            expires_at: stamp(approval.expires_at),
            rule: approval.rule.clone(),
            message: approval.message.clone(),
            decided_by: approval.decided_by.clone(),
            decided_at: approval.decided_at.map(stamp),
            preview: approval.preview.clone(),
        }
    }
}

impl Pipeline {
    pub(super) async fn request_approval(
        &self,
        ask: ApprovalAsk<'_>,
        defaults: serde_json::Value,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let ApprovalAsk {
            caller,
            toolset,
            tool,
            arguments,
            binding,
            verdict,
            preview,
            argument,
        } = ask;
        let mut bound = redact(arguments);
        if let serde_json::Value::Object(map) = &mut bound {
            for control in CONTROL_ARGUMENTS {
                map.remove(*control);
            }
        }
        let approval = self
            .store()
            .create_approval(NewApproval {
                entity_id: caller.entity_id.clone(),
                client_name: caller.client_name.clone(),
                toolset: toolset.into(),
                tool: tool.into(),
                arguments: bound,
                request_hash: binding.to_string(),
                preview: serde_json::to_value(&preview).map_err(StoreError::from)?,
                rule: verdict.rule.clone(),
                message: verdict.message.clone(),
                ttl: ChronoDuration::seconds(self.safety().config.approval_ttl_secs),
            })
            .await?;
        let view = self.approval_view(&approval);
        let structured = with_defaults(
            serde_json::json!({
                "status": "approval_pending",
                "confirmation": null,
                "approval": view,
                "sandbox": self.sandbox(),
                "idempotentReplay": false,
            }),
            defaults,
        );
        let text = format!(
            "APPROVAL REQUIRED (policy rule {:?}: {}). Nothing has moved. A person must approve {} {} {} from {} to {} at {} (or with `paywarden approvals approve {}`); you cannot approve it yourself. Then call {tool} again with the same arguments plus {argument} {:?}, or poll get_approval.\n{structured}",
            verdict.rule,
            verdict.message,
            preview.operation,
            preview.amount,
            preview.currency,
            preview.from,
            preview.to,
            view.url,
            approval.id,
            approval.id,
        );
        Ok((
            ToolOutcome {
                structured_json: None,
                structured,
                is_error: false,
                text: self.decorate(&text),
                audit: AuditFacts {
                    outcome: "approval_requested".into(),
                    transaction_id: Some(approval.id.clone()),
                    ..AuditFacts::default()
                },
            },
            Settlement::NotSent,
        ))
    }
}

/// What an approval request is made of.
pub(super) struct ApprovalAsk<'a> {
    pub(super) caller: &'a Caller,
    pub(super) toolset: &'a str,
    pub(super) tool: &'a str,
    pub(super) arguments: &'a serde_json::Value,
    pub(super) binding: &'a str,
    pub(super) verdict: &'a Verdict,
    pub(super) preview: PreviewView,
    pub(super) argument: &'a str,
}
