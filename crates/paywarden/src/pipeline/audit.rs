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
            structured_json: None,
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

    /// A result's text: the sandbox banner when the provider is the emulator, `text`, a line
    /// break and `structured` as compact JSON ([`text_with_json`]).
    pub fn text_with_json(&self, text: &str, structured: &serde_json::Value) -> String {
        text_with_json(self.sandbox.then_some(&*self.banner), text, structured)
    }

    /// A success whose structured result `output` is serialized once, with the sandbox
    /// banner when the provider is the emulator ([`ToolOutcome::serialized`]): the text
    /// [`Pipeline::text_with_json`] gives, except that an object's keys come in the order of
    /// its type's fields (a `Value`'s come sorted); `structuredContent` is that same JSON.
    ///
    /// # Errors
    /// [`crate::store::StoreError::Json`] when `output` cannot be serialized.
    pub fn serialized_outcome<T: serde::Serialize>(
        &self,
        text: &str,
        output: &T,
        audit: AuditFacts,
    ) -> Result<ToolOutcome, crate::store::StoreError> {
        Ok(ToolOutcome::serialized(
            self.sandbox.then_some(&*self.banner),
            text,
            output,
            audit,
        )?)
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
        self.audit_row(caller, toolset, tool, arguments, result.as_ref(), started)
            .await
            .map(|row| row.seq)
    }

    /// [`Pipeline::audit`], answering with the appended row's `seq` and chain hash (a
    /// receipt names both).
    pub(super) async fn audit_row(
        &self,
        caller: &Caller,
        toolset: &str,
        tool: &str,
        arguments: &serde_json::Value,
        result: Result<&ToolOutcome, &ServiceError>,
        started: Instant,
    ) -> Result<crate::store::AuditAppended, ServiceError> {
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
        Ok(self.store.append_audit_row(&entry).await?)
    }
}

/// `banner` and a line break (when given), `text`, a line break and `structured` as compact
/// JSON: the bytes of `format!("{banner}\n{text}\n{structured}")` ([`text_with_serialized`]).
pub(crate) fn text_with_json(
    banner: Option<&str>,
    text: &str,
    structured: &serde_json::Value,
) -> String {
    text_with_serialized(banner, text, &structured.to_string())
}

/// `banner` and a line break (when given), `text`, a line break and `json` (a result's
/// compact JSON, already serialized): a result's text, built in one allocation.
pub(crate) fn text_with_serialized(banner: Option<&str>, text: &str, json: &str) -> String {
    let mut out =
        String::with_capacity(banner.map_or(0, |b| b.len() + 1) + text.len() + 1 + json.len());
    if let Some(banner) = banner {
        out.push_str(banner);
        out.push('\n');
    }
    out.push_str(text);
    out.push('\n');
    out.push_str(json);
    out
}

pub(super) fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.starts_with("[SANDBOX"))
        .unwrap_or_default()
        .chars()
        .take(500)
        .collect()
}
