//! The ifthenpay toolset's operations on the pipeline: seven payment-request creations
//! (Multibanco, MB WAY, Payshop, card, PinPay, Cofidis Pay, PIX), the MB WAY status read, the
//! payments list, and the callbacks ifthenpay sends when a shopper pays.
//!
//! Each tool takes the seed's snake_case arguments; amounts are JSON numbers in EUR (BRL for
//! PIX) parsed exactly into integer minor units (the number's shortest decimal text, never
//! float arithmetic). Creations are money-moving calls for the safety layer: they pass the
//! policy (`toolset = "ifthenpay"`), are refused in read-only mode, and run under an idempotency
//! key derived from the tool, the caller's entity and the order id, so a retried creation
//! returns the first reference instead of creating a second one.
//!
//! Tenants: every request paywarden records belongs to the entity that created it (an
//! authenticated entity, or `key:<id>` for an anonymous caller passing a key of its own, never
//! mixing with an entity). With keys the server holds (`[ifthenpay]`, or an entity's own
//! `[entities.ifthenpay]`), `mbway_check_status` answers only for the caller's own requests and
//! `payments_list` shows only the payments of the caller's own requests, although ifthenpay's
//! backoffice returns the whole merchant account. A caller that passes its own key gets what
//! ifthenpay answers for that key, as in the seed. Results are the seed's output objects, as
//! `structuredContent` and as the JSON text of `content[0]`; a key ifthenpay refuses is the tool
//! error `Invalid key or API error: ...`. Keys never reach the audit log, a result or an error.

use std::collections::HashMap;

use chrono::{NaiveDate, NaiveDateTime, Utc};
use paywarden_domain::{Currency, Money};
use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use std::future::Future;

use crate::pipeline::{
    operation::{
        Assessment, Call, Checked, NotReconciled, Operation, Sent, Stop, TransactionLease,
    },
    reconcile::Intent,
    safety::{binding_hash, PreviewView},
    AuditFacts, Caller, Pipeline, ServiceError, Settlement, ToolOutcome,
};
use crate::{
    config::IfthenpayConfig,
    connectors::ifthenpay::{IfthenpayClient, IfthenpayError, PaymentsQuery},
    policy::{Decision, PolicyInput},
    store::{IfthenpayCallback, NewIfthenpayRequest},
};

mod callback;
mod create;
mod prepare;
mod reads;
mod refused;
mod types;
mod validate;

pub use callback::*;
pub use types::*;
pub use validate::*;

/// The toolset's name in configuration, policy and the audit log.
pub const TOOLSET: &str = "ifthenpay";

/// The seed's nine tools.
pub const TOOLS: [&str; 9] = [
    "multibanco_create_reference",
    "mbway_request_payment",
    "mbway_check_status",
    "payshop_create_reference",
    "creditcard_create_payment",
    "pinpay_create_payment",
    "cofidis_create_payment",
    "pix_create_payment",
    "payments_list",
];

/// The tools that create a payment request (money-moving for the safety layer: hidden and
/// refused in read-only mode, subject to policy and idempotency).
pub const CREATION_TOOLS: [&str; 7] = [
    "multibanco_create_reference",
    "mbway_request_payment",
    "payshop_create_reference",
    "creditcard_create_payment",
    "pinpay_create_payment",
    "cofidis_create_payment",
    "pix_create_payment",
];

/// The largest amount a tool accepts: 999,999.99 (Multibanco's eight-digit amount field).
const MAX_AMOUNT_MINOR: i64 = 99_999_999;

/// The ifthenpay toolset's service.
#[derive(Clone)]
pub struct IfthenpayService {
    pipeline: Pipeline,
    client: Option<IfthenpayClient>,
    keys: Keys,
    /// Entities' own key sets (`[entities.ifthenpay]`), by entity id.
    entity_keys: std::sync::Arc<HashMap<String, Keys>>,
    anti_phishing_key: Option<SecretString>,
    /// Entities' own anti-phishing keys, by entity id.
    entity_anti_phishing_keys: std::sync::Arc<HashMap<String, SecretString>>,
    entities: Vec<crate::toolsets::ops::KnownEntity>,
    sandbox: bool,
    key_ids: crate::audit_anchor::KeyIds,
    /// Unauthenticated callback attempts: counted, one recorded per window ([`refused`]).
    refused_callbacks: std::sync::Arc<refused::RefusedCallbacks>,
}

impl std::fmt::Debug for IfthenpayService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IfthenpayService")
            .field(
                "base_url",
                &self.client.as_ref().map(IfthenpayClient::base_url),
            )
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

impl IfthenpayService {
    /// The service over `pipeline`. `client` is `None` when neither a base URL nor the emulator
    /// is available (tools then answer a tool error saying so). `sandbox`: the emulator answers;
    /// then the demo anti-phishing key applies unless configured. `entities` may use the keys
    /// held in `config` (the configured entities, or the demo ones with the emulator).
    pub fn new(
        pipeline: Pipeline,
        client: Option<IfthenpayClient>,
        config: &IfthenpayConfig,
        sandbox: bool,
        entities: Vec<crate::toolsets::ops::KnownEntity>,
    ) -> Self {
        let keys = Keys {
            mb: config.mb_key.clone(),
            mbway: config.mbway_key.clone(),
            payshop: config.payshop_key.clone(),
            ccard: config.ccard_key.clone(),
            gateway: config.gateway_key.clone(),
            cofidis: config.cofidis_key.clone(),
            pix: config.pix_key.clone(),
            backoffice: config.bo_key.clone(),
        };
        let anti_phishing_key = config.anti_phishing_key.clone().or_else(|| {
            sandbox.then(|| {
                SecretString::from(paywarden_emulator::IFTHENPAY_ANTI_PHISHING_KEY.to_string())
            })
        });
        let entity_keys = entities
            .iter()
            .filter_map(|e| e.ifthenpay.as_ref().map(|k| (e.id.clone(), k.keys())))
            .collect();
        let entity_anti_phishing_keys = entities
            .iter()
            .filter_map(|e| {
                let key = e.ifthenpay.as_ref()?.anti_phishing_key.clone()?;
                Some((e.id.clone(), key))
            })
            .collect();
        Self {
            pipeline,
            client,
            keys,
            entity_keys: std::sync::Arc::new(entity_keys),
            anti_phishing_key,
            entity_anti_phishing_keys: std::sync::Arc::new(entity_anti_phishing_keys),
            entities,
            sandbox,
            key_ids: crate::audit_anchor::KeyIds::ephemeral(),
            refused_callbacks: std::sync::Arc::default(),
        }
    }

    /// Names provider keys by `key_ids` (HMAC-SHA-256 under the server's secret) in records,
    /// audit entries and idempotency keys. Without it, ids are keyed by a secret of this
    /// process only, and change at every start.
    #[must_use]
    pub fn with_key_ids(mut self, key_ids: crate::audit_anchor::KeyIds) -> Self {
        self.key_ids = key_ids;
        self
    }

    /// The keyed id of a provider key, as records and `key:<id>` entities carry it.
    pub fn key_id(&self, key: &str) -> String {
        self.key_ids.id(key)
    }

    /// Callback attempts with a wrong anti-phishing key since the server started (answered
    /// 403; one per minute recorded and audited, the rest only counted).
    pub fn refused_callbacks(&self) -> u64 {
        self.refused_callbacks.total()
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Whether the offline emulator answers.
    pub fn sandbox(&self) -> bool {
        self.sandbox
    }

    /// Whether paywarden holds any ifthenpay key (callers must then authenticate to use them).
    pub fn holds_keys(&self) -> bool {
        [
            KeyKind::Mb,
            KeyKind::Mbway,
            KeyKind::Payshop,
            KeyKind::Ccard,
            KeyKind::Gateway,
            KeyKind::Cofidis,
            KeyKind::Pix,
            KeyKind::Backoffice,
        ]
        .into_iter()
        .any(|k| self.held_anywhere(k))
    }

    /// Whether `[ifthenpay]` or any entity's own key set holds a key of `kind`.
    fn held_anywhere(&self, kind: KeyKind) -> bool {
        self.keys.get(kind).is_some() || self.entity_keys.values().any(|k| k.get(kind).is_some())
    }

    /// The keys `entity` may use: its own key set when it has one, else `[ifthenpay]`'s.
    fn keys_of(&self, entity: &str) -> &Keys {
        self.entity_keys.get(entity).unwrap_or(&self.keys)
    }

    /// The key argument of `tool` (`mb_key` for `multibanco_create_reference`, ...).
    pub fn key_argument(tool: &str) -> Option<&'static str> {
        let kind = match tool {
            "multibanco_create_reference" => KeyKind::Mb,
            "mbway_request_payment" | "mbway_check_status" => KeyKind::Mbway,
            "payshop_create_reference" => KeyKind::Payshop,
            "creditcard_create_payment" => KeyKind::Ccard,
            "pinpay_create_payment" => KeyKind::Gateway,
            "cofidis_create_payment" => KeyKind::Cofidis,
            "pix_create_payment" => KeyKind::Pix,
            "payments_list" => KeyKind::Backoffice,
            _ => return None,
        };
        Some(kind.argument())
    }

    /// Whether paywarden holds the key that `argument` names (so calls may omit it).
    pub fn holds_key(&self, argument: &str) -> bool {
        [
            KeyKind::Mb,
            KeyKind::Mbway,
            KeyKind::Payshop,
            KeyKind::Ccard,
            KeyKind::Gateway,
            KeyKind::Cofidis,
            KeyKind::Pix,
            KeyKind::Backoffice,
        ]
        .into_iter()
        .any(|k| k.argument() == argument && self.held_anywhere(k))
    }

    /// Whether `entity_id`/`token` is an entity allowed to use the configured keys (constant
    /// time on the token hash).
    pub fn authenticates(&self, entity_id: &str, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        let hash = crate::pipeline::safety::token_hash(token);
        self.entities.iter().any(|e| {
            e.id == entity_id && bool::from(e.token_sha256.as_bytes().ct_eq(hash.as_bytes()))
        })
    }

    fn authenticated_entity(&self, identity: &Identity) -> Option<String> {
        match identity {
            Identity::Anonymous { .. } => None,
            Identity::Local(caller) => Some(caller.entity_id.clone()),
            Identity::Claimed(caller) => self
                .authenticates(&caller.entity_id, caller.token.expose_secret())
                .then(|| caller.entity_id.clone()),
        }
    }

    fn client_name(identity: &Identity) -> Option<String> {
        match identity {
            Identity::Anonymous { client_name } => client_name.clone(),
            Identity::Claimed(c) | Identity::Local(c) => c.client_name.clone(),
        }
    }

    /// The caller the pipeline audits and scopes by.
    fn pipeline_caller(identity: &Identity, entity: &str) -> Caller {
        Caller {
            entity_id: entity.to_string(),
            token: SecretString::from(String::new()),
            client_name: Self::client_name(identity),
        }
    }

    /// Resolves the key of a call: the argument, else the configured key for an authenticated
    /// caller (its own key set when it has one, else `[ifthenpay]`'s). A [`Refusal`] holds a
    /// tool-error outcome or an invalid-arguments error; neither quotes the key.
    fn resolve_key(
        &self,
        identity: &Identity,
        kind: KeyKind,
        argument: Option<&str>,
    ) -> Result<ResolvedKey, Refusal> {
        let authenticated = self.authenticated_entity(identity);
        if let Some(key) = argument {
            if key.trim().is_empty() || key.len() > 100 || key.chars().any(char::is_control) {
                return Err(bad(invalid(format!(
                    "{} must be the ifthenpay key (letters, digits and '-')",
                    kind.argument()
                ))));
            }
            let id = self.key_id(key);
            let entity = authenticated.unwrap_or_else(|| format!("key:{id}"));
            return Ok(ResolvedKey {
                key: SecretString::from(key.to_string()),
                id,
                entity,
                held: false,
            });
        }
        let configured = match &authenticated {
            Some(entity) => self.keys_of(entity).get(kind),
            None => self
                .keys
                .get(kind)
                .or_else(|| self.entity_keys.values().find_map(|k| k.get(kind))),
        };
        let Some(configured) = configured else {
            return Err(bad(invalid(format!(
                "{} is required: this server holds no ifthenpay {} for this caller",
                kind.argument(),
                kind.argument()
            ))));
        };
        match authenticated {
            Some(entity) => Ok(ResolvedKey {
                id: self.key_id(configured.expose_secret()),
                key: configured.clone(),
                entity,
                held: true,
            }),
            None => Err(Box::new(Ok(self.error(
                "unauthenticated",
                &format!(
                    "Authentication required: {} was omitted, and this server's own ifthenpay key may only be used by an authenticated entity. Send X-Entity-Id and X-Token headers of an allowed entity, or pass {}.",
                    kind.argument(),
                    kind.argument()
                ),
            )))),
        }
    }

    /// A tool-error outcome: the message as `content[0].text`.
    fn error(&self, kind: &str, message: &str) -> ToolOutcome {
        ToolOutcome {
            structured_json: None,
            structured: json!({"error": {"kind": kind, "message": message}, "sandbox": self.sandbox}),
            is_error: true,
            text: message.to_string(),
            audit: AuditFacts {
                outcome: if kind == "denied_by_policy" {
                    "denied".into()
                } else {
                    "error".into()
                },
                ..AuditFacts::default()
            },
        }
    }

    /// A success outcome: the output as `structuredContent` and as the JSON text (fields in the
    /// seed's order).
    fn success<T: Serialize>(&self, output: &T, request_id: Option<String>) -> ToolOutcome {
        ToolOutcome {
            structured_json: None,
            text: serde_json::to_string(output).unwrap_or_default(),
            structured: to_value(output),
            is_error: false,
            audit: AuditFacts {
                outcome: "ok".into(),
                provider_request_id: request_id.clone(),
                transaction_id: request_id,
                ..AuditFacts::default()
            },
        }
    }

    /// The tool error for a connector failure, and whether the call may have happened.
    fn provider_failure(&self, e: IfthenpayError) -> (ToolOutcome, Settlement) {
        match e {
            IfthenpayError::Rejected { code, message } => {
                let mut outcome = self.error(
                    "provider_rejected",
                    &format!("Invalid key or API error: {message}"),
                );
                outcome.audit.outcome = "rejected".into();
                outcome.audit.result_code = Some(code);
                (outcome, Settlement::Final)
            }
            IfthenpayError::Timeout(_) => (
                self.error(
                    "provider_timeout",
                    &format!("API error: {e}. Retry with the same arguments: paywarden will not create a second request for this order_id."),
                ),
                Settlement::Unknown,
            ),
            IfthenpayError::Unreachable { .. } => (
                self.error("provider_unreachable", &format!("API error: {e}. Nothing was created; retry later.")),
                Settlement::NotSent,
            ),
            IfthenpayError::UnexpectedResponse { .. } => (
                self.error("provider_error", &format!("API error: {e}")),
                Settlement::Final,
            ),
        }
    }

    fn unconfigured(&self) -> ToolOutcome {
        self.error(
            "not_configured",
            "API error: ifthenpay is not configured on this server (set ifthenpay.base_url, or run with the offline emulator).",
        )
    }

    /// Runs one ifthenpay tool: parse, validate, resolve the key, policy and idempotency for
    /// creations, the connector call, records, audit.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] (audited) for an unknown tool or malformed arguments;
    /// [`ServiceError::Store`] when paywarden's database fails. Refusals (policy, read-only,
    /// provider) are tool-error outcomes.
    pub async fn call(
        &self,
        identity: &Identity,
        tool: &str,
        arguments: &serde_json::Map<String, Value>,
    ) -> Result<ToolOutcome, ServiceError> {
        let args = Value::Object(arguments.clone());
        let audited_refusal = |entity: String, result: Result<ToolOutcome, ServiceError>| {
            let caller = Self::pipeline_caller(identity, &entity);
            let args = args.clone();
            async move {
                self.pipeline
                    .read(&caller, TOOLSET, tool, &args, || async { result })
                    .await
            }
        };
        let fallback_entity = self
            .authenticated_entity(identity)
            .unwrap_or_else(|| "anonymous".to_string());
        let prepared = match self.prepare(identity, tool, &args) {
            Ok(p) => p,
            Err(refusal) => return audited_refusal(fallback_entity, *refusal).await,
        };
        match prepared {
            Prepared::Create(key, creation) => {
                self.create(identity, tool, &args, key, creation).await
            }
            Prepared::MbwayStatus(key, request_id) => {
                let caller = Self::pipeline_caller(identity, &key.entity);
                self.pipeline
                    .read(&caller, TOOLSET, tool, &args, || async {
                        Ok(self.mbway_status(&key, &request_id).await?)
                    })
                    .await
            }
            Prepared::List(key, query) => {
                let caller = Self::pipeline_caller(identity, &key.entity);
                self.pipeline
                    .read(&caller, TOOLSET, tool, &args, || async {
                        Ok(self.payments_list(&key, &query).await?)
                    })
                    .await
            }
        }
    }

    /// The caller under which a request of `identity` that is not one of the tools is audited:
    /// the authenticated entity, else `anonymous` (an unverified `X-Entity-Id` writes nothing
    /// into that entity's record).
    pub fn audit_caller(&self, identity: &Identity) -> Caller {
        let entity = self
            .authenticated_entity(identity)
            .unwrap_or_else(|| "anonymous".to_string());
        Self::pipeline_caller(identity, &entity)
    }

    /// Puts a call of a tool this toolset does not have (or hides, in read-only mode) on the
    /// audit record, under the caller's scope, as an error.
    ///
    /// # Errors
    /// [`ServiceError::Store`] when the audit log cannot be written.
    pub async fn audit_unknown_tool(
        &self,
        identity: &Identity,
        tool: &str,
        arguments: &Value,
    ) -> Result<(), ServiceError> {
        let caller = self.audit_caller(identity);
        let refusal = Err(invalid(format!("tool not found: {tool}")));
        match self
            .pipeline
            .read(&caller, TOOLSET, tool, arguments, || async { refusal })
            .await
        {
            Err(e @ ServiceError::Store(_)) => Err(e),
            _ => Ok(()),
        }
    }
}

/// Why a call stops before the provider: a tool-error outcome (`Ok`) or invalid arguments.
type Refusal = Box<Result<ToolOutcome, ServiceError>>;

fn bad(e: ServiceError) -> Refusal {
    Box::new(Err(e))
}

/// A creation's result: (output as JSON text, request id, Multibanco entity, reference).
type Created = (String, Option<String>, Option<String>, Option<String>);

enum Prepared {
    Create(ResolvedKey, Creation),
    MbwayStatus(ResolvedKey, String),
    List(ResolvedKey, PaymentsQuery),
}

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The text of a replayed result: the first call's JSON text (fields in the seed's order) with
/// `"idempotentReplay":true` appended, so that it and `structured` (which says so too) hold
/// the same data; `structured` as JSON should the first text not be a JSON object.
fn replay_text(original: &str, structured: &Value) -> String {
    let original = original.trim();
    let spliced = original.strip_suffix('}').map(|head| {
        let head = head.trim_end();
        let separator = if head.ends_with('{') { "" } else { "," };
        format!("{head}{separator}\"idempotentReplay\":true}}")
    });
    match spliced {
        Some(text) if serde_json::from_str::<Value>(&text).ok().as_ref() == Some(structured) => {
            text
        }
        _ => structured.to_string(),
    }
}
