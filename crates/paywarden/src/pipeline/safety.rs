//! The safety layer's shared parts: what a previewed, confirmed or approved operation looks
//! like to the caller, how arguments are bound to a token or an approval, and the settings.
//!
//! Decisions come from the policy ([`crate::policy`]): `allow` executes, `confirm` returns a
//! preview and a single-use token bound to the entity, tool and canonical arguments, `human`
//! creates a stored approval request that only an operator can decide, `deny` refuses.

use std::sync::Arc;

use rand::RngCore;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{config::SafetyConfig, policy::Policy};

/// Argument names that steer the safety layer rather than describe the operation; they are
/// left out when arguments are bound to a token, an approval or an idempotency key.
/// (camelCase for the `opp` toolset, snake_case for the others; `confirmed` is the ops seed's
/// model-set boolean, which never authorises anything on its own.)
pub const CONTROL_ARGUMENTS: &[&str] = &[
    "confirmationToken",
    "approvalId",
    "idempotencyKey",
    "confirmation_token",
    "approval_id",
    "idempotency_key",
    "confirmed",
];

/// The safety settings and policy a pipeline applies.
#[derive(Debug, Clone)]
pub struct Safety {
    /// The policy in force.
    pub policy: Arc<Policy>,
    /// Settings (TTLs, refund window, read-only, toolsets).
    pub config: SafetyConfig,
    /// Base URL for approval links, e.g. `http://127.0.0.1:8080`: from configuration, or set
    /// once the listener is bound.
    pub public_url: Arc<std::sync::OnceLock<String>>,
}

impl Safety {
    /// The base URL approval links use.
    pub fn public_url(&self) -> &str {
        self.public_url
            .get()
            .map(String::as_str)
            .unwrap_or("http://127.0.0.1:8080")
    }
}

/// What an operation will do, shown before it runs (in a confirmation preview, an approval
/// request and the approval page).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewView {
    /// Tool that will run.
    pub tool: String,
    /// Human-readable operation, e.g. "refund (RF)".
    pub operation: String,
    /// Entity (merchant account) acting.
    pub entity: String,
    /// The referenced transaction.
    pub reference_id: String,
    /// Its OPP payment type.
    pub reference_payment_type: String,
    /// Amount that will move, decimal string in `currency`.
    pub amount: String,
    /// The same in integer minor units.
    pub amount_minor: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// Who pays.
    pub from: String,
    /// Who receives.
    pub to: String,
    /// True when the offline emulator is the provider.
    pub sandbox: bool,
}

/// A confirmation request: call the same tool again with the same arguments and this token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmationView {
    /// Single-use token; send it as `confirmationToken` with the same arguments.
    pub token: String,
    /// Expiry (UTC, RFC 3339).
    pub expires_at: String,
    /// The policy rule that asked for confirmation.
    pub rule: String,
    /// The rule's message.
    pub message: String,
    /// What will move.
    pub preview: PreviewView,
}

/// An approval request that a person decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalView {
    /// Approval id (`apr_...`); send it as `approvalId` with the same arguments once approved,
    /// or poll `get_approval`.
    pub id: String,
    /// pending, approved, denied, expired, executing or executed.
    pub status: String,
    /// The approval page for an operator.
    pub url: String,
    /// Expiry (UTC, RFC 3339).
    pub expires_at: String,
    /// The policy rule that asked for a person.
    pub rule: String,
    /// The rule's message.
    pub message: String,
    /// Who decided, when decided.
    pub decided_by: Option<String>,
    /// When it was decided (UTC, RFC 3339).
    pub decided_at: Option<String>,
    /// What will move (an object: operation, amount, currency, reference, entity...).
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub preview: serde_json::Value,
}

/// Arguments without the control arguments, canonicalised and hashed with the tool name:
/// what a token, an approval or an idempotency key is bound to.
pub fn binding_hash(tool: &str, arguments: &serde_json::Value) -> String {
    let mut bound = arguments.clone();
    if let serde_json::Value::Object(map) = &mut bound {
        for control in CONTROL_ARGUMENTS {
            map.remove(*control);
        }
    }
    super::request_hash(tool, &bound)
}

/// A new random confirmation token (`pwc_` + 64 hex characters) and its SHA-256 (hex), the
/// only form paywarden stores.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = format!("pwc_{}", hex::encode(bytes));
    let hash = token_hash(&token);
    (token, hash)
}

/// SHA-256 (hex) of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_arguments_do_not_change_the_binding() {
        let a = serde_json::json!({"referenceId": "x", "amount": "1.00", "currency": "EUR"});
        let mut b = a.clone();
        b["confirmationToken"] = "pwc_1".into();
        b["idempotencyKey"] = "k".into();
        assert_eq!(binding_hash("t", &a), binding_hash("t", &b));
        let mut c = a.clone();
        c["amount"] = "2.00".into();
        assert_ne!(binding_hash("t", &a), binding_hash("t", &c));
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let (t1, h1) = new_token();
        let (t2, _) = new_token();
        assert_ne!(t1, t2);
        assert_eq!(token_hash(&t1), h1);
        assert!(t1.starts_with("pwc_") && t1.len() == 68);
        assert!(!h1.contains(&t1[4..]));
    }
}
