//! Typed outcomes: who called, what a call produced, why it could not run, and what a provider call settled.

use super::*;

/// Who is calling: the entity (tenant) and the credentials it presented.
#[derive(Clone)]
pub struct Caller {
    /// The entity id (OPP `entityId`).
    pub entity_id: String,
    /// The caller's token, passed on to the provider; never logged.
    pub token: SecretString,
    /// The MCP client's declared name, when known.
    pub client_name: Option<String>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("entity_id", &self.entity_id)
            .field("token", &"[redacted]")
            .field("client_name", &self.client_name)
            .finish()
    }
}

/// What a tool call produced, ready for any toolset to render.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    /// Structured result (the tool's output schema) for successes; for tool errors a JSON
    /// object describing the error. `Null` when the result was serialized once instead
    /// ([`ToolOutcome::structured_json`]).
    pub structured: serde_json::Value,
    /// The structured result already serialized, for a success whose answer was built once
    /// ([`ToolOutcome::serialized`]): sent as it is as `structuredContent`, and `structured` is
    /// `Null`. Read either with [`ToolOutcome::structured_value`].
    pub structured_json: Option<SerializedJson>,
    /// Whether this is a tool error (`isError: true`).
    pub is_error: bool,
    /// Text for `content[0]`: what happened, and for errors what to do.
    pub text: String,
    /// Facts for the audit log.
    pub audit: AuditFacts,
}

impl ToolOutcome {
    /// A success whose structured result `output` is serialized once: the compact JSON is
    /// both `structuredContent` (sent as it is, never turned into a [`serde_json::Value`]) and
    /// the end of the text: `banner` (when given), `text` and the JSON on their own lines, as
    /// [`crate::pipeline::audit::text_with_json`] writes them, with an object's keys in the
    /// order of its type's fields (serde's derive) rather than sorted (a `Value`'s map).
    ///
    /// # Errors
    /// [`serde_json::Error`] when `output` cannot be serialized (a map with non-string keys).
    pub fn serialized<T: serde::Serialize>(
        banner: Option<&str>,
        text: &str,
        output: &T,
        audit: AuditFacts,
    ) -> Result<ToolOutcome, serde_json::Error> {
        let json = serde_json::value::to_raw_value(output)?;
        Ok(ToolOutcome {
            text: super::audit::text_with_serialized(banner, text, json.get()),
            structured: serde_json::Value::Null,
            structured_json: Some(SerializedJson(json)),
            is_error: false,
            audit,
        })
    }

    /// The structured result as a [`serde_json::Value`]: `structured`, or the serialized
    /// result parsed (JSON serde_json wrote always parses; `Null` if it did not).
    pub fn structured_value(&self) -> std::borrow::Cow<'_, serde_json::Value> {
        match &self.structured_json {
            Some(json) => std::borrow::Cow::Owned(
                serde_json::from_str(json.0.get()).unwrap_or(serde_json::Value::Null),
            ),
            None => std::borrow::Cow::Borrowed(&self.structured),
        }
    }

    /// The structured result to change in place: a serialized one is parsed into
    /// `structured` first (and `structured_json` cleared).
    pub fn structured_mut(&mut self) -> &mut serde_json::Value {
        if let Some(json) = self.structured_json.take() {
            self.structured = serde_json::from_str(json.0.get()).unwrap_or(serde_json::Value::Null);
        }
        &mut self.structured
    }

    /// What an idempotency key stores of this outcome, for a replay: a JSON object with
    /// `structured` (the structured result), `audit` (the [`AuditFacts`] a replay reports) and
    /// the text. A text that ends with a line break and `structured` as compact JSON (every
    /// success's: [`crate::pipeline::audit::text_with_json`]) is stored as `text_head`, the text
    /// without that ending, so that the result's JSON is stored once rather than twice (as an
    /// object, and escaped again inside the text); any other text, and any result holding a
    /// floating-point number (whose JSON might not read back to the same digits), is stored
    /// whole as `text`. [`crate::store::stored_text`] gives the text back, byte for
    /// byte.
    pub fn key_record(&self) -> serde_json::Value {
        let structured = self.structured_value().into_owned();
        let mut record = serde_json::Map::new();
        record.insert(
            "audit".into(),
            serde_json::to_value(&self.audit).unwrap_or_default(),
        );
        let head = (!holds_float(&structured))
            .then(|| structured.to_string())
            .and_then(|json| {
                self.text
                    .strip_suffix(json.as_str())
                    .and_then(|t| t.strip_suffix('\n'))
                    .map(str::to_owned)
            });
        match head {
            Some(head) => record.insert("text_head".into(), serde_json::Value::String(head)),
            None => record.insert("text".into(), serde_json::Value::String(self.text.clone())),
        };
        record.insert("structured".into(), structured);
        serde_json::Value::Object(record)
    }
}

/// Whether `value` holds a floating-point number anywhere.
fn holds_float(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(items) => items.iter().any(holds_float),
        serde_json::Value::Object(map) => map.values().any(holds_float),
        _ => false,
    }
}

/// A structured result serialized once (compact JSON), compared by its text.
#[derive(Debug, Clone)]
pub struct SerializedJson(
    /// The JSON as serde_json wrote it (`serde_json::value::to_raw_value`).
    pub Box<serde_json::value::RawValue>,
);

impl PartialEq for SerializedJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

/// The audit-relevant facts of an outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuditFacts {
    /// `ok`, `rejected`, `error`.
    pub outcome: String,
    /// Provider result code.
    pub result_code: Option<String>,
    /// Provider request id.
    pub provider_request_id: Option<String>,
    /// Transaction created or read.
    pub transaction_id: Option<String>,
    /// For an executed money movement: the receipt to sign once its audit row exists
    /// ([`Pipeline::write`]; set by [`Pipeline::attach_receipt`]).
    #[serde(skip)]
    pub receipt: Option<Box<crate::receipts::ReceiptDraft>>,
}

/// Why a call could not run at all (as opposed to a [`ToolOutcome`] with `is_error`).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Arguments are malformed: a JSON-RPC invalid-params error for the client.
    #[error("{0}")]
    InvalidArguments(String),
    /// paywarden's own storage failed before anything was sent to the provider.
    #[error("paywarden's database failed before anything was sent to the provider; nothing was sent ({0})")]
    Store(#[from] crate::store::StoreError),
    /// paywarden's own storage failed after the request may have reached the provider: the
    /// operation may have happened, and paywarden could not record what the provider did.
    #[error("paywarden's database failed after the request may have reached {provider}: the operation may have happened. Do not start a new operation: retry this exact call later with the same idempotency key (paywarden asks {provider} first and never sends it twice), or look it up with the toolset's lookup tool")]
    Unrecorded {
        /// The provider (`OPP`, `Stripe`).
        provider: String,
        /// What failed.
        source: crate::store::StoreError,
    },
}

impl ServiceError {
    /// Whether the request may have reached the provider.
    pub fn may_have_reached_provider(&self) -> bool {
        matches!(self, ServiceError::Unrecorded { .. })
    }
}

/// Whether a money-moving call's outcome is final (and may be replayed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The provider answered (success or rejection), or paywarden refused before sending:
    /// replay this outcome on retry.
    Final,
    /// Nothing was sent to the provider (it could not be reached, or paywarden refused before
    /// sending), or a creation the provider deduplicates by its own idempotency key: a retry may
    /// run.
    NotSent,
    /// The provider may or may not have acted (a timeout, a connection lost after connecting, an
    /// answer paywarden could not record): block the key until it is reconciled
    /// ([`reconcile`]).
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::stored_text;

    /// A key's record as the store keeps it: written as a JSON string, read back.
    fn stored_and_read(outcome: &ToolOutcome) -> serde_json::Value {
        serde_json::from_str(&outcome.key_record().to_string()).expect("a key record parses")
    }

    fn success(structured: serde_json::Value) -> ToolOutcome {
        ToolOutcome {
            text: audit::text_with_json(
                Some(SANDBOX_BANNER),
                "perform_refund succeeded: refund 20.00 EUR",
                &structured,
            ),
            structured,
            structured_json: None,
            is_error: false,
            audit: AuditFacts {
                outcome: "ok".into(),
                transaction_id: Some("8ac7a4c9".into()),
                ..AuditFacts::default()
            },
        }
    }

    #[test]
    fn a_successes_key_record_holds_its_json_once_and_gives_its_text_back_byte_for_byte() {
        let outcome = success(serde_json::json!({
            "amount": "20.00", "amountMinor": 2000, "idempotentReplay": false,
            "note": "quote \" backslash \\ line\nbreak \u{e9} \u{1F4B3}",
            "receipt": {"audit": {"seq": 2}, "sig": "VQfi+/="}, "list": [1, -2, null, true],
        }));
        let record = stored_and_read(&outcome);
        assert!(record.get("text").is_none(), "{record}");
        let head = record["text_head"].as_str().expect("text_head");
        assert!(
            !head.contains("amountMinor"),
            "the JSON is stored twice: {head}"
        );
        assert_eq!(stored_text(&record).as_deref(), Some(outcome.text.as_str()));
        assert_eq!(record["structured"], outcome.structured);
        assert_eq!(record["audit"]["transaction_id"], "8ac7a4c9");
        let json = record.to_string();
        assert_eq!(json.matches("amountMinor").count(), 1, "{json}");
    }

    #[test]
    fn a_text_that_does_not_end_with_its_json_or_a_result_with_a_float_is_stored_whole() {
        let mut error = success(serde_json::json!({"error": "refund_exceeds_remainder"}));
        error.text = "perform_refund refused: 20.00 EUR is more than the 10.00 EUR left".into();
        error.is_error = true;
        let float = success(serde_json::json!({"amount": 25.1, "ratio": 0.1}));
        let mut other = success(serde_json::json!({"a": 1}));
        other.text = format!("{SANDBOX_BANNER}\n{{\"a\":2}}");
        for outcome in [error, float, other] {
            let record = stored_and_read(&outcome);
            assert!(record.get("text_head").is_none(), "{record}");
            assert_eq!(record["text"], outcome.text.as_str());
            assert_eq!(stored_text(&record).as_deref(), Some(outcome.text.as_str()));
        }
    }

    #[test]
    fn a_result_serialized_in_its_fields_order_gives_its_text_back_byte_for_byte() {
        #[derive(serde::Serialize)]
        struct Output {
            zeta: &'static str,
            alpha: u32,
        }
        let outcome = ToolOutcome::serialized(
            Some(SANDBOX_BANNER),
            "revenue",
            &Output {
                zeta: "z",
                alpha: 2,
            },
            AuditFacts::default(),
        )
        .expect("serializes");
        assert!(outcome.text.ends_with("{\"zeta\":\"z\",\"alpha\":2}"));
        let record = stored_and_read(&outcome);
        assert_eq!(stored_text(&record).as_deref(), Some(outcome.text.as_str()));
    }

    #[test]
    fn a_record_stored_before_text_head_existed_gives_its_text() {
        let record = serde_json::json!({
            "structured": {"amount": "1.00"}, "text": "done\n{\"amount\":\"1.00\"}", "audit": {}
        });
        assert_eq!(
            stored_text(&record).as_deref(),
            Some("done\n{\"amount\":\"1.00\"}")
        );
        assert_eq!(stored_text(&serde_json::json!({"structured": {}})), None);
    }
}
