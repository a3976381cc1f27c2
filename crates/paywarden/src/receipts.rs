//! Signed receipts: every executed money movement (an OPP back-office operation, a Stripe
//! refund through `issue_refund`) returns one in its result (`structuredContent.receipt`) and
//! paywarden stores it (the `receipts` table). A receipt shows someone who cannot see
//! paywarden (a customer, an auditor, a dispute reviewer) what moved and why, and proves it:
//!
//! ```json
//! {"type":"paywarden.receipt.v1","id":"rcpt_<uuid>","issued_at":"2026-05-01T10:00:00.000000Z",
//!  "entity":"8a8294174b7ecb28014b9699220015ca","client":"claude-code","toolset":"opp",
//!  "tool":"perform_refund","operation":"refund (RF)","sandbox":true,
//!  "request":{"referenceId":"8ac7...","amount":"12.50","currency":"EUR","confirmationToken":"[redacted]"},
//!  "amount":{"minor":1250,"currency":"EUR"},"reference_id":"8ac7...",
//!  "policy":{"decision":"confirm","rule":"confirm-refunds"},
//!  "authorization":{"kind":"confirmation","confirmation_token_sha256":"<64 hex>",
//!                   "approval_id":null,"decided_by":null,"decided_at":null},
//!  "provider":{"name":"opp","transaction_id":"8ac7...","request_id":"<ndc>","result_code":"000.100.110"},
//!  "audit":{"seq":42,"hash":"<64 hex>"},
//!  "key_id":"<16 hex>","public_key":"<base64>","sig":"<base64>"}
//! ```
//!
//! - `request` is the call's arguments as the audit row stores them ([`crate::mask::arguments`]:
//!   secrets such as the confirmation token, keys and card numbers removed, personal data
//!   masked).
//! - `amount` is integer minor units with the ISO 4217 currency (what the gate previewed and the
//!   policy judged).
//! - `authorization` is how the movement was allowed: `policy` (the policy allowed it outright),
//!   `confirmation` (the SHA-256 of the single-use token the caller presented; never the
//!   token) or `approval` (the approval id and the operator who decided it, and when).
//! - `provider` holds the provider's ids: OPP's transaction `id` and request id (`ndc`); Stripe's
//!   refund id and `Request-Id`.
//! - `audit` is the position of the execution's row in the audit chain ([`crate::store`]): its
//!   `seq` and `hash`, so the receipt and `paywarden audit export` corroborate each other.
//!
//! `sig` is the Ed25519 signature (RFC 8032) of the canonical JSON ([`crate::canonical`]: keys
//! sorted, no white space) of the receipt without `sig`. For receipts (ASCII keys, strings,
//! booleans, nulls and integers below 2^53) that form is byte for byte RFC 8785 (JCS); a
//! non-integer number in `request` would be written as serde_json writes it. The key is the
//! audit signing key ([`crate::audit_anchor`], outside the database): one key to keep and to
//! publish. Its messages cannot be confused with checkpoints: each names its own `type`, and
//! each verifier checks it. `key_id` names the key; `public_key` embeds it so a receipt can be
//! checked with nothing else, but only a key obtained independently (`paywarden audit
//! public-key`, or `GET /.well-known/paywarden/receipt-keys.json` from the server) proves who
//! signed it: [`verify`] takes trusted keys for that.

use std::fmt;

use axum::{routing::get, Json, Router};
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::Decision;

/// The `type` of every receipt this version issues.
pub const RECEIPT_TYPE: &str = "paywarden.receipt.v1";
/// Where the server publishes the receipt-signing public keys.
pub const KEYS_PATH: &str = "/.well-known/paywarden/receipt-keys.json";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// What the gate knew when it let a movement execute ([`crate::pipeline::gate::Claims`]): the
/// verdict and what it judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptBasis {
    /// The policy's decision for the call.
    pub decision: Decision,
    /// The rule that decided.
    pub rule: String,
    /// What moves, in integer minor units of `currency`.
    pub amount_minor: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// The referenced payment (OPP transaction, Stripe PaymentIntent).
    pub reference_id: String,
    /// Human-readable operation, e.g. "refund (RF)".
    pub operation: String,
}

/// A receipt still to be signed: attached to an executed outcome
/// ([`crate::pipeline::AuditFacts::receipt`]) and completed by the pipeline once the execution's
/// audit row exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptDraft {
    /// What the gate judged.
    pub basis: ReceiptBasis,
    /// The approval claimed, when a person approved the movement.
    pub approval_id: Option<String>,
    /// SHA-256 (hex) of the confirmation token used, when the caller confirmed a preview.
    pub confirmation: Option<String>,
    /// The provider's name (`opp`, `stripe`).
    pub provider: String,
}

/// An amount: integer minor units and the ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReceiptAmount {
    /// Minor units (cents; yen for JPY).
    pub minor: i64,
    /// ISO 4217 currency code.
    pub currency: String,
}

/// The policy's verdict on the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReceiptPolicy {
    /// `allow`, `confirm` or `human`.
    pub decision: String,
    /// The rule that decided.
    pub rule: String,
}

/// How the movement was authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizationKind {
    /// The policy allowed it outright.
    Policy,
    /// The caller confirmed a preview with a single-use token.
    Confirmation,
    /// An operator approved it.
    Approval,
}

/// Who or what let the movement happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReceiptAuthorization {
    /// `policy`, `confirmation` or `approval`.
    pub kind: AuthorizationKind,
    /// SHA-256 (hex) of the confirmation token (never the token).
    pub confirmation_token_sha256: Option<String>,
    /// The approval request's id.
    pub approval_id: Option<String>,
    /// The operator who approved it.
    pub decided_by: Option<String>,
    /// When the operator decided (UTC, RFC 3339).
    pub decided_at: Option<String>,
}

/// The provider's ids of the movement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReceiptProvider {
    /// `opp` or `stripe`.
    pub name: String,
    /// The transaction the provider created (OPP `id`, Stripe refund id).
    pub transaction_id: Option<String>,
    /// The provider's request id (OPP `ndc`, Stripe `Request-Id`).
    pub request_id: Option<String>,
    /// The provider's result code or status.
    pub result_code: Option<String>,
}

/// The execution's row in the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReceiptAudit {
    /// The row's position, from 1.
    pub seq: i64,
    /// The row's hash (64 hex).
    pub hash: String,
}

/// A signed receipt of one executed money movement (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Receipt {
    /// [`RECEIPT_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// `rcpt_<uuid>`.
    pub id: String,
    /// When it was issued (UTC, RFC 3339).
    pub issued_at: String,
    /// The entity (merchant account) that moved money.
    pub entity: String,
    /// The MCP client's declared name, when known.
    pub client: Option<String>,
    /// Toolset (`opp`, `ops`).
    pub toolset: String,
    /// The tool that moved money.
    pub tool: String,
    /// Human-readable operation, e.g. "refund (RF)".
    pub operation: String,
    /// True when the offline emulator was the provider (no real money moved).
    pub sandbox: bool,
    /// The call's arguments, secrets removed and personal data masked.
    pub request: serde_json::Value,
    /// What moved.
    pub amount: ReceiptAmount,
    /// The referenced payment.
    pub reference_id: String,
    /// The policy's verdict.
    pub policy: ReceiptPolicy,
    /// How it was authorised.
    pub authorization: ReceiptAuthorization,
    /// The provider's ids.
    pub provider: ReceiptProvider,
    /// The execution's audit row.
    pub audit: ReceiptAudit,
    /// The signing key's id (16 hex characters of SHA-256 of the public key).
    pub key_id: String,
    /// The signing public key (base64 of 32 bytes).
    pub public_key: String,
    /// Base64 Ed25519 signature of the canonical JSON of every other field.
    pub sig: String,
}

/// Signs receipts with the audit signing key.
#[derive(Clone)]
pub struct ReceiptSigner {
    key: SigningKey,
}

impl fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiptSigner")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

/// The signed bytes of a receipt as JSON: the canonical JSON of every member but `sig`.
fn message(receipt: &serde_json::Value) -> String {
    let mut unsigned = receipt.clone();
    if let serde_json::Value::Object(map) = &mut unsigned {
        map.remove("sig");
    }
    crate::canonical::canonical_json(&unsigned)
}

impl ReceiptSigner {
    /// A signer with `key` ([`crate::audit_anchor::AuditSigner::receipt_signer`]).
    pub(crate) fn new(key: SigningKey) -> Self {
        Self { key }
    }

    /// The key's id.
    pub fn key_id(&self) -> String {
        crate::audit_anchor::key_id_of(&self.key.verifying_key())
    }

    /// The public key, base64.
    pub fn public_key(&self) -> String {
        crate::audit_anchor::public_key_text(&self.key.verifying_key())
    }

    /// Fills in `receipt`'s key fields and signs it.
    ///
    /// # Errors
    /// [`serde_json::Error`] when it cannot be serialised (it always can).
    pub fn sign(&self, mut receipt: Receipt) -> Result<Receipt, serde_json::Error> {
        receipt.kind = RECEIPT_TYPE.into();
        receipt.key_id = self.key_id();
        receipt.public_key = self.public_key();
        receipt.sig = String::new();
        let signature = self
            .key
            .sign(message(&serde_json::to_value(&receipt)?).as_bytes());
        receipt.sig = b64().encode(signature.to_bytes());
        Ok(receipt)
    }

    /// The published key list (`GET` [`KEYS_PATH`]): JWKS-like, one Ed25519 key with its id.
    pub fn key_set(&self) -> serde_json::Value {
        let key = self.key.verifying_key();
        serde_json::json!({
            "keys": [{
                "kid": self.key_id(),
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_bytes()),
                "public_key": self.public_key(),
            }]
        })
    }

    /// `GET` [`KEYS_PATH`]: the key set, public (no credentials).
    pub fn router(&self) -> Router {
        let keys = self.key_set();
        Router::new().route(KEYS_PATH, get(move || async move { Json(keys) }))
    }
}

/// Why a receipt does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Not a JSON object.
    #[error("it is not a paywarden receipt: {0}")]
    NotAReceipt(String),
    /// Another `type`.
    #[error("its type is {0:?}, not {RECEIPT_TYPE:?}")]
    WrongType(String),
    /// `sig` is missing or not an Ed25519 signature.
    #[error("its signature (sig) is missing or malformed")]
    BadSignatureField,
    /// The embedded key is missing or malformed.
    #[error("its public_key is missing or not an Ed25519 public key")]
    BadEmbeddedKey,
    /// `key_id` does not name the embedded key.
    #[error("its key_id {0:?} does not name its public_key (edited)")]
    KeyIdMismatch(String),
    /// The signature does not match: edited after signing, or signed by another key.
    #[error("its signature does not match its content: it was edited after signing (or signed by another key)")]
    Edited,
    /// Signed, but by none of the trusted keys.
    #[error("it is signed by key id {0}, which is none of the trusted public keys given")]
    Untrusted(String),
}

/// Checks a receipt (as parsed JSON): its type, and its signature by the embedded key; with
/// `trusted` keys, also that one of them is that key. Returns the signing key's id.
///
/// # Errors
/// [`ReceiptError`] naming what is wrong.
pub fn verify(
    receipt: &serde_json::Value,
    trusted: &[VerifyingKey],
) -> Result<String, ReceiptError> {
    let Some(map) = receipt.as_object() else {
        return Err(ReceiptError::NotAReceipt("not a JSON object".into()));
    };
    let text = |name: &str| map.get(name).and_then(|v| v.as_str());
    match text("type") {
        Some(RECEIPT_TYPE) => {}
        Some(other) => return Err(ReceiptError::WrongType(other.chars().take(80).collect())),
        None => return Err(ReceiptError::NotAReceipt("no \"type\" member".into())),
    }
    let signature = text("sig")
        .and_then(|s| b64().decode(s.trim()).ok())
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or(ReceiptError::BadSignatureField)?;
    let embedded = text("public_key")
        .and_then(|k| crate::audit_anchor::parse_public_key(k).ok())
        .ok_or(ReceiptError::BadEmbeddedKey)?;
    let key_id = crate::audit_anchor::key_id_of(&embedded);
    if text("key_id") != Some(key_id.as_str()) {
        return Err(ReceiptError::KeyIdMismatch(
            text("key_id")
                .unwrap_or_default()
                .chars()
                .take(80)
                .collect(),
        ));
    }
    embedded
        .verify(message(receipt).as_bytes(), &signature)
        .map_err(|_| ReceiptError::Edited)?;
    if !trusted.is_empty() && !trusted.contains(&embedded) {
        return Err(ReceiptError::Untrusted(key_id));
    }
    Ok(key_id)
}

impl ReceiptDraft {
    /// The unsigned receipt of this draft's movement.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn into_receipt(
        self,
        caller: &crate::pipeline::Caller,
        toolset: &str,
        tool: &str,
        sandbox: bool,
        request: serde_json::Value,
        facts: &crate::pipeline::AuditFacts,
        audit: ReceiptAudit,
        approval: Option<&crate::store::Approval>,
    ) -> Receipt {
        let stamp = |t: chrono::DateTime<chrono::Utc>| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        };
        let kind = if self.approval_id.is_some() {
            AuthorizationKind::Approval
        } else if self.confirmation.is_some() {
            AuthorizationKind::Confirmation
        } else {
            AuthorizationKind::Policy
        };
        Receipt {
            kind: RECEIPT_TYPE.into(),
            id: format!("rcpt_{}", uuid::Uuid::new_v4()),
            issued_at: stamp(chrono::Utc::now()),
            entity: caller.entity_id.clone(),
            client: caller.client_name.clone(),
            toolset: toolset.into(),
            tool: tool.into(),
            operation: self.basis.operation,
            sandbox,
            request,
            amount: ReceiptAmount {
                minor: self.basis.amount_minor,
                currency: self.basis.currency,
            },
            reference_id: self.basis.reference_id,
            policy: ReceiptPolicy {
                decision: self.basis.decision.as_str().into(),
                rule: self.basis.rule,
            },
            authorization: ReceiptAuthorization {
                kind,
                confirmation_token_sha256: self.confirmation,
                approval_id: self.approval_id,
                decided_by: approval.and_then(|a| a.decided_by.clone()),
                decided_at: approval.and_then(|a| a.decided_at).map(stamp),
            },
            provider: ReceiptProvider {
                name: self.provider,
                transaction_id: facts.transaction_id.clone(),
                request_id: facts.provider_request_id.clone(),
                result_code: facts.result_code.clone(),
            },
            audit,
            key_id: String::new(),
            public_key: String::new(),
            sig: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(signer: &ReceiptSigner) -> serde_json::Value {
        let receipt = Receipt {
            kind: String::new(),
            id: "rcpt_1".into(),
            issued_at: "2026-05-01T10:00:00.000000Z".into(),
            entity: "e1".into(),
            client: None,
            toolset: "opp".into(),
            tool: "perform_refund".into(),
            operation: "refund (RF)".into(),
            sandbox: true,
            request: serde_json::json!({"amount": "12.50"}),
            amount: ReceiptAmount {
                minor: 1250,
                currency: "EUR".into(),
            },
            reference_id: "t1".into(),
            policy: ReceiptPolicy {
                decision: "confirm".into(),
                rule: "r".into(),
            },
            authorization: ReceiptAuthorization {
                kind: AuthorizationKind::Policy,
                confirmation_token_sha256: None,
                approval_id: None,
                decided_by: None,
                decided_at: None,
            },
            provider: ReceiptProvider {
                name: "opp".into(),
                transaction_id: Some("t2".into()),
                request_id: None,
                result_code: None,
            },
            audit: ReceiptAudit {
                seq: 3,
                hash: "ab".into(),
            },
            key_id: String::new(),
            public_key: String::new(),
            sig: String::new(),
        };
        serde_json::to_value(signer.sign(receipt).unwrap()).unwrap()
    }

    #[test]
    fn a_receipt_verifies_until_edited_and_only_with_its_key() {
        let signer = ReceiptSigner::new(SigningKey::from_bytes(&[7; 32]));
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        let receipt = sample(&signer);
        assert_eq!(verify(&receipt, &[]).unwrap(), signer.key_id());
        let ours = signer.key.verifying_key();
        assert!(verify(&receipt, &[ours]).is_ok());
        assert_eq!(
            verify(&receipt, &[other]),
            Err(ReceiptError::Untrusted(signer.key_id()))
        );
        let mut edited = receipt.clone();
        edited["amount"]["minor"] = 125_000.into();
        assert_eq!(verify(&edited, &[]), Err(ReceiptError::Edited));
        let mut added = receipt.clone();
        added["note"] = "x".into();
        assert_eq!(verify(&added, &[]), Err(ReceiptError::Edited));
        // Swapping in another key (and its id) does not make an edit verify.
        let forger = ReceiptSigner::new(SigningKey::from_bytes(&[9; 32]));
        edited["public_key"] = forger.public_key().into();
        edited["key_id"] = forger.key_id().into();
        assert_eq!(verify(&edited, &[]), Err(ReceiptError::Edited));
        assert_eq!(verify(&edited, &[ours]), Err(ReceiptError::Edited));
    }
}
