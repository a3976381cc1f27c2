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

/// `banner` and a line break (when given), `text`, a line break and `structured` as compact
/// JSON: the bytes of `format!("{banner}\n{text}\n{structured}")`, written into one buffer
/// instead of formatted twice (a read's answer is built once per call and its JSON is most of
/// it: docs/performance.md, "Where an audited read's CPU goes").
pub(crate) fn text_with_json(
    banner: Option<&str>,
    text: &str,
    structured: &serde_json::Value,
) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(banner.map_or(0, str::len) + text.len() + 4096);
    if let Some(banner) = banner {
        out.extend_from_slice(banner.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
    if let Err(e) = serde_json::to_writer(&mut out, structured) {
        // Writing a `Value` into a `Vec` cannot fail.
        tracing::error!(error = %e, "could not write a result's JSON");
    }
    // The banner, `text` and serde_json's output are UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

pub(super) fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.starts_with("[SANDBOX"))
        .unwrap_or_default()
        .chars()
        .take(500)
        .collect()
}
