//! Audit: one row per call, and the texts of pipeline-made outcomes.

use super::*;

impl Pipeline {
    /// A tool-error outcome with a machine-readable `kind` and a message.
    pub fn error_outcome(
        &self,
        kind: &str,
        message: &str,
        result_code: Option<&str>,
    ) -> ToolOutcome {
        ToolOutcome {
            structured: serde_json::json!({
                "error": { "kind": kind, "message": message, "resultCode": result_code },
                "sandbox": self.sandbox,
            }),
            is_error: true,
            text: self.decorate(message),
            audit: AuditFacts {
                outcome: "error".into(),
                result_code: result_code.map(String::from),
                ..AuditFacts::default()
            },
        }
    }

    /// Prefixes text with the sandbox banner when the provider is the emulator.
    pub fn decorate(&self, text: &str) -> String {
        if self.sandbox {
            format!("{}\n{text}", self.banner)
        } else {
            text.to_string()
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn audit(
        &self,
        caller: &Caller,
        toolset: &str,
        tool: &str,
        arguments: &serde_json::Value,
        result: &Result<ToolOutcome, ServiceError>,
        started: Instant,
        _money_moving: bool,
    ) -> Result<i64, ServiceError> {
        let (facts, message) = match result {
            Ok(outcome) => (
                outcome.audit.clone(),
                outcome.is_error.then(|| first_line(&outcome.text)),
            ),
            Err(e) => (
                AuditFacts {
                    outcome: "error".into(),
                    ..AuditFacts::default()
                },
                Some(e.to_string()),
            ),
        };
        let entry = AuditEntry {
            entity_id: caller.entity_id.clone(),
            client_name: caller.client_name.clone(),
            toolset: toolset.to_string(),
            tool: tool.to_string(),
            arguments: redact(arguments),
            outcome: facts.outcome,
            result_code: facts.result_code,
            provider_request_id: facts.provider_request_id,
            transaction_id: facts.transaction_id,
            message,
            duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            sandbox: self.sandbox,
        };
        Ok(self.store.append_audit(&entry).await?)
    }
}

pub(super) fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.starts_with("[SANDBOX"))
        .unwrap_or_default()
        .chars()
        .take(500)
        .collect()
}
