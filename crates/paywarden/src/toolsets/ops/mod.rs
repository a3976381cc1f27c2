//! The `ops` toolset's service: the Payment Ops seed's tools (Stripe joined with the merchant's
//! own orders database) on paywarden's pipeline.
//!
//! paywarden holds the Stripe key, so it authenticates the caller itself (the entity's token,
//! stored as its SHA-256) before any tool runs, and every record is scoped by entity.
//! `issue_refund` keeps the seed's two steps but never trusts the model's `confirmed`
//! boolean: its first call returns a preview and a single-use confirmation token (or, when the
//! policy says so, an approval request for a person), and only the same call carrying that
//! token (or an approved approval) moves money. The refund window, the refundable remainder
//! (Stripe's `amount_refunded` is the truth) and the customer named are checked before the
//! preview and again under a per-order lease right before Stripe is called. Stripe gets an
//! `Idempotency-Key` derived from paywarden's key, so a retry never refunds twice, and two
//! separately confirmed partial refunds of one order never collide.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use paywarden_domain::{Currency, Money};
use schemars::JsonSchema;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use std::future::Future;

use crate::pipeline::{
    operation::{
        Assessment, Call, Checked, NotReconciled, Operation, Sent, Stop, TransactionLease,
    },
    reconcile::{Found, Intent, Reconciler},
    safety::{binding_hash, token_hash, PreviewView},
    AuditFacts, Caller, Pipeline, ServiceError, Settlement, ToolOutcome,
};
use crate::{
    connectors::stripe::{
        PaymentIntent, PaymentIntentStatus, Refund, RefundReason, RefundRequest, RefundStatus,
        StripeClient, StripeError,
    },
    policy::Decision,
    store::{CustomerRecord, OrderRecord, OrderStatus},
};

mod reads;
mod reconciliation;
mod refund_status;
mod refunds;
mod types;
mod validate;
mod writes;

pub use types::*;
pub use validate::*;

/// The toolset's name.
pub const TOOLSET: &str = "ops";

/// An entity paywarden knows (`[[entities]]`): its id, the SHA-256 (hex) of its token, and
/// optionally ifthenpay keys of its own (`[entities.ifthenpay]`, used instead of the global
/// `[ifthenpay]` keys for this entity; never serialised).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownEntity {
    /// Entity id (the `X-Entity-Id` header).
    pub id: String,
    /// Hex SHA-256 of its token (the `X-Token` header); the token itself is never stored.
    pub token_sha256: String,
    /// The entity's own ifthenpay keys.
    #[serde(default, skip_serializing)]
    pub ifthenpay: Option<crate::toolsets::ifthenpay::EntityKeys>,
}

/// The ops service: orders database + Stripe connector on the pipeline.
#[derive(Debug, Clone)]
pub struct OpsService {
    pipeline: Pipeline,
    stripe: StripeClient,
    entities: Arc<Vec<KnownEntity>>,
}

// ---------------------------------------------------------------------------------------------
// Parameters (the seed's names, snake_case) and outputs
// ---------------------------------------------------------------------------------------------

impl OpsService {
    /// The ops service over `pipeline`, sending to Stripe through `stripe`; `entities` are the
    /// callers paywarden accepts for this toolset.
    pub fn new(pipeline: Pipeline, stripe: StripeClient, entities: Vec<KnownEntity>) -> Self {
        Self {
            pipeline,
            stripe,
            entities: Arc::new(entities),
        }
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The Stripe connector.
    pub fn stripe(&self) -> &StripeClient {
        &self.stripe
    }

    /// Whether `caller` is an entity paywarden knows, with its token (compared as SHA-256, in
    /// constant time).
    pub fn authenticates(&self, caller: &Caller) -> bool {
        use subtle::ConstantTimeEq;
        let presented = token_hash(caller.token.expose_secret());
        self.entities.iter().any(|e| {
            e.id == caller.entity_id
                && bool::from(presented.as_bytes().ct_eq(e.token_sha256.as_bytes()))
        })
    }

    fn unauthenticated(&self, tool: &str) -> ToolOutcome {
        let mut outcome = self.pipeline.error_outcome(
            "unauthenticated",
            &format!(
                "{tool} is refused: paywarden holds the Stripe key for this toolset and does not know this entity with this token. Check X-Entity-Id and X-Token (or PAYWARDEN_ENTITY_ID / PAYWARDEN_TOKEN for stdio)."
            ),
            None,
        );
        outcome.audit.outcome = "unauthenticated".into();
        outcome
    }

    /// Runs a read tool: authentication, `run`, audit.
    async fn read<F, Fut>(
        &self,
        caller: &Caller,
        tool: &str,
        arguments: &serde_json::Value,
        run: F,
    ) -> Result<ToolOutcome, ServiceError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<ToolOutcome, ServiceError>>,
    {
        let authenticated = self.authenticates(caller);
        self.pipeline
            .read(caller, TOOLSET, tool, arguments, || async {
                if !authenticated {
                    return Ok(self.unauthenticated(tool));
                }
                run().await
            })
            .await
    }

    /// Admission of a write tool: malformed arguments, an unknown caller and read-only mode are
    /// answered (and audited) here; `Ok` carries the validated request on.
    async fn admit_write<T>(
        &self,
        caller: &Caller,
        tool: &str,
        arguments: &serde_json::Value,
        validated: Result<T, ServiceError>,
    ) -> Result<T, Result<ToolOutcome, ServiceError>> {
        let refusal = match validated {
            Err(e) => Err(e),
            Ok(_) if !self.authenticates(caller) => Ok(self.unauthenticated(tool)),
            Ok(_)
                if self.pipeline.safety().config.read_only
                    && crate::catalog::hidden_in_read_only(tool) =>
            {
                Ok(self.pipeline.error_outcome(
                "read_only",
                &format!("{tool} is refused: this paywarden runs in read-only mode, where no tool moves money or writes to a provider."),
                None,
            ))
            }
            Ok(v) => return Ok(v),
        };
        Err(self
            .pipeline
            .read(caller, TOOLSET, tool, arguments, || async { refusal })
            .await)
    }

    fn ok(&self, structured: serde_json::Value, text: String, facts: AuditFacts) -> ToolOutcome {
        ToolOutcome {
            structured_json: None,
            text: self.pipeline.text_with_json(&text, &structured),
            structured,
            is_error: false,
            audit: AuditFacts {
                outcome: "ok".into(),
                ..facts
            },
        }
    }

    /// A success whose structured result `output` is serialized once
    /// ([`ToolOutcome::serialized`]), never turned into a [`serde_json::Value`].
    fn ok_serialized<T: serde::Serialize>(
        &self,
        output: &T,
        text: &str,
    ) -> Result<ToolOutcome, ServiceError> {
        Ok(self.pipeline.serialized_outcome(
            text,
            output,
            AuditFacts {
                outcome: "ok".into(),
                ..AuditFacts::default()
            },
        )?)
    }

    fn not_found(&self, what: &str) -> ToolOutcome {
        let mut o = self.pipeline.error_outcome("not_found", what, None);
        o.audit.outcome = "rejected".into();
        o
    }

    /// A Stripe failure as a tool error that says whether the request may have reached Stripe,
    /// for a `call` of the given kind.
    fn stripe_failure(
        &self,
        tool: &str,
        error: &StripeError,
        call: StripeCall,
    ) -> (ToolOutcome, Settlement) {
        // The request may have reached Stripe, which may have acted: what that means per call.
        let indeterminate = match call {
            StripeCall::Read => (
                "Nothing changed (this was a read). Try again later.",
                Settlement::NotSent,
            ),
            StripeCall::Refund => (
                "The request may have reached Stripe, so the outcome is UNKNOWN: do not start a new refund. Retry this exact call (same arguments and token or idempotency_key): paywarden asks Stripe first and never refunds twice.",
                Settlement::Unknown,
            ),
            // Retried under the same Stripe Idempotency-Key, Stripe answers with what it created.
            StripeCall::Create => (
                "The request may have reached Stripe, which may have created it: the outcome is unknown. Retry this exact call with the same idempotency_key: Stripe then returns what it created, never a second one (without an idempotency_key a retry may create a second one).",
                Settlement::NotSent,
            ),
        };
        let (kind, advice, settlement) = match error {
            StripeError::Timeout(_) => ("provider_timeout", indeterminate.0, indeterminate.1),
            StripeError::Unreachable { .. } => (
                "provider_unreachable",
                "Nothing was sent. Check that Stripe (or the emulator) is reachable, then retry.",
                Settlement::NotSent,
            ),
            StripeError::ConnectionLost { .. } => {
                ("provider_connection_lost", indeterminate.0, indeterminate.1)
            }
            StripeError::Authentication { .. } | StripeError::InvalidKey { .. } | StripeError::LiveKeyRefused { .. } => (
                "provider_authentication",
                "paywarden's Stripe key was refused: an operator must fix STRIPE_API_KEY / [stripe] api_key. Nothing was done.",
                Settlement::Final,
            ),
            StripeError::PermissionDenied { .. } => (
                "provider_permission",
                "The restricted Stripe key lacks this permission: an operator must grant it. Nothing was done.",
                Settlement::Final,
            ),
            StripeError::NotFound { .. } => ("not_found", "Check the id with list_payments.", Settlement::Final),
            // Stripe documents a 5xx answer to a write as indeterminate: it may have acted. A
            // 409 means a request under the same Idempotency-Key is still running at Stripe:
            // it may yet act.
            StripeError::Api { status, .. } if *status >= 500 || *status == 409 => {
                ("provider_error", indeterminate.0, indeterminate.1)
            }
            // Stripe documents 429 as not processed: certain that nothing happened.
            StripeError::RateLimited { .. } => (
                "provider_rate_limited",
                "Stripe did not process it (rate limited, HTTP 429, after paywarden's bounded retries): nothing was done. Retry the same call in a few seconds.",
                Settlement::NotSent,
            ),
            StripeError::Api { .. } => ("provider_rejected", "Stripe refused it; nothing was done.", Settlement::Final),
            StripeError::UnexpectedResponse { .. } if call == StripeCall::Read => (
                "provider_error",
                "Stripe's answer could not be read; nothing changed (this was a read). Try again later.",
                Settlement::NotSent,
            ),
            StripeError::UnexpectedResponse { .. } => ("provider_error", indeterminate.0, indeterminate.1),
            StripeError::InvalidArgument { .. } => ("invalid_request", "Nothing was sent: fix the arguments.", Settlement::NotSent),
        };
        let request_id = match error {
            StripeError::Api { request_id, .. }
            | StripeError::Authentication { request_id, .. }
            | StripeError::PermissionDenied { request_id, .. }
            | StripeError::NotFound { request_id, .. }
            | StripeError::RateLimited { request_id, .. }
            | StripeError::UnexpectedResponse { request_id, .. } => request_id.clone(),
            _ => None,
        };
        let code = match error {
            StripeError::Api { code, .. } => code.clone(),
            _ => None,
        };
        let mut outcome = self.pipeline.error_outcome(
            kind,
            &format!("{tool} failed: {error}. {advice}"),
            code.as_deref(),
        );
        outcome.audit.provider_request_id = request_id;
        (outcome, settlement)
    }

    async fn customer_or_outcome(
        &self,
        caller: &Caller,
        email: &str,
    ) -> Result<Result<CustomerRecord, ToolOutcome>, ServiceError> {
        Ok(
            match self
                .pipeline
                .store()
                .customer_by_email(&caller.entity_id, email)
                .await?
            {
                Some(c) => Ok(c),
                None => Err(self.not_found(&format!(
                    "No customer found with email '{email}' in the orders database. Check the address (lookup_customer takes the exact e-mail)."
                ))),
            },
        )
    }

    /// The customer `who` names, checked against this entity's orders database; a customer
    /// named both ways must be one customer.
    async fn customer_ref_or_outcome(
        &self,
        caller: &Caller,
        who: &CustomerRef,
    ) -> Result<Result<CustomerRecord, ToolOutcome>, ServiceError> {
        let (by_email, by_stripe) = match who {
            CustomerRef::Email(e) => (Some(e.as_str()), None),
            CustomerRef::StripeCustomer(c) => (None, Some(c.as_str())),
            CustomerRef::Both { email, stripe } => (Some(email.as_str()), Some(stripe.as_str())),
        };
        let found_by_stripe = match by_stripe {
            Some(id) => match self
                .pipeline
                .store()
                .customer_by_stripe_id(&caller.entity_id, id)
                .await?
            {
                Some(c) => Some(c),
                None => {
                    return Ok(Err(self.not_found(&format!(
                        "No customer with Stripe customer id '{id}' in the orders database. Send the id lookup_customer returned (stripe_customer_id), or the customer's e-mail."
                    ))))
                }
            },
            None => None,
        };
        match (by_email, found_by_stripe) {
            (None, Some(c)) => Ok(Ok(c)),
            (Some(email), found) => {
                let by_mail = match self.customer_or_outcome(caller, email).await? {
                    Ok(c) => c,
                    Err(o) => return Ok(Err(o)),
                };
                match found {
                    Some(c) if c.id != by_mail.id => Err(invalid(
                        "email and customer name two different customers; send one of them",
                    )),
                    _ => Ok(Ok(by_mail)),
                }
            }
            (None, None) => Err(invalid(
                "send the customer as email (e.g. sarah@example.com) or customer (the Stripe customer id cus_... that lookup_customer returns)",
            )),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Reads
    // -----------------------------------------------------------------------------------------
}

/// What kind of Stripe request failed, for what its failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StripeCall {
    /// A read: nothing changes at Stripe.
    Read,
    /// A refund: money may have moved; an unknown outcome is reconciled.
    Refund,
    /// A creation (product, price, payment link) under Stripe's own Idempotency-Key.
    Create,
}

/// paywarden's derived reference of idempotency key `key` on a Stripe refund (metadata
/// `paywarden_key`): how a refund whose answer paywarden never heard is recognised at Stripe.
fn refund_marker(key: &str) -> String {
    token_hash(key)[..32].to_string()
}
