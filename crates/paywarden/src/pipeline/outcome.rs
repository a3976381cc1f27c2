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
