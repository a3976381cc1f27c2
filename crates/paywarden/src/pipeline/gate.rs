//! The safety gate every toolset's money-moving call passes after its own checks and before
//! the provider call: the policy verdict (fail closed), then `deny`, a claimed approval,
//! `confirm` (a preview and a single-use token, or the token's use) and `human` (a stored
//! approval request only an operator can decide).
//!
//! A toolset computes the policy facts and the [`PreviewView`] of its operation, asks
//! [`Pipeline::gate`], and executes only on [`Gate::Execute`]; after executing it settles what
//! the gate claimed with [`Pipeline::finish_gated`]: an approval records its outcome, unless
//! nothing was sent (a refusal of the credentials, an unreachable provider, a busy lease), in
//! which case the approval and the confirmation token are given back for a retry.

use chrono::{Duration as ChronoDuration, Utc};

use super::{approvals::ApprovalAsk, limits::Reserve};
use super::{
    safety::{new_token, token_hash, ConfirmationView, PreviewView},
    AuditFacts, Caller, Pipeline, ServiceError, Settlement, ToolOutcome,
};
use crate::{
    policy::{Decision, PolicyInput, Verdict},
    store::{ApprovalError, Confirmation, ConfirmationError, StoreError},
};

/// What the gate decided.
#[derive(Debug)]
pub enum Gate {
    /// Run the operation now: the policy allows it, a valid confirmation token was presented
    /// (and is now used up), or an approved approval was claimed; settle the [`Claims`] with
    /// [`Pipeline::finish_gated`] afterwards.
    Execute(Claims),
    /// Stop with this outcome: a preview with a confirmation token, an approval request, or a
    /// refusal (denied by policy, a refused token or approval).
    Stop(ToolOutcome, Settlement),
}

/// What the gate took for one execution.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The approval claimed (now `executing`), when a person approved this.
    pub approval_id: Option<String>,
    /// SHA-256 (hex) of the confirmation token used up, when the caller confirmed a preview.
    pub confirmation: Option<String>,
    /// The cumulative-limit reservation taken for this call; `None` when it has no amount.
    pub reservation: Option<String>,
    /// The verdict and what it judged, for the movement's receipt
    /// ([`Pipeline::attach_receipt`]); `None` on claims that do not execute.
    pub receipt: Option<crate::receipts::ReceiptBasis>,
}

fn receipt_basis(verdict: &Verdict, preview: &PreviewView) -> crate::receipts::ReceiptBasis {
    crate::receipts::ReceiptBasis {
        decision: verdict.decision,
        rule: verdict.rule.clone(),
        amount_minor: preview.amount_minor,
        currency: preview.currency.clone(),
        reference_id: preview.reference_id.clone(),
        operation: preview.operation.clone(),
    }
}

/// One money-moving call at the gate.
#[derive(Debug)]
pub struct GateRequest<'a> {
    /// Who calls.
    pub caller: &'a Caller,
    /// Toolset (`opp`, `ops`, `ifthenpay`).
    pub toolset: &'a str,
    /// Tool name.
    pub tool: &'a str,
    /// The call's arguments as sent (control arguments are removed before binding).
    pub arguments: &'a serde_json::Value,
    /// [`super::safety::binding_hash`] of the arguments.
    pub binding: &'a str,
    /// What will move.
    pub preview: PreviewView,
    /// The policy's facts about this call.
    pub policy: PolicyInput,
    /// The least the tool itself demands (`Confirm` for the seed's two-step `issue_refund`):
    /// a weaker verdict is raised to it.
    pub floor: Decision,
    /// The caller's confirmation token, if any.
    pub confirmation_token: Option<&'a str>,
    /// The caller's approval id, if any.
    pub approval_id: Option<&'a str>,
    /// How this toolset names the control arguments in its tools: `("confirmationToken",
    /// "approvalId")` for `opp`, `("confirmation_token", "approval_id")` for the others.
    pub argument_names: (&'a str, &'a str),
    /// Fields every stop output carries as well (e.g. `{"balances": null}`), so it matches the
    /// tool's output schema.
    pub output_defaults: serde_json::Value,
    /// The call's idempotency key ([`derived_key`]): on [`Gate::Execute`] the reservation and
    /// the claimed approval are recorded on it, so whoever settles the key settles them too.
    pub key: Option<&'a str>,
}

/// The idempotency key of a money-moving call: the caller's own, else one derived from its
/// confirmation token (`confirm:` + the token's SHA-256) or approval (`approval:` + id), so a
/// confirmed or approved call can never execute twice, and two separately confirmed calls never
/// share a key. A derived key also names the call it stands for (`:` + 16 hex of the SHA-256 of
/// `tool` and the argument `binding`), so a call with other arguments or another tool presenting
/// the same token or approval gets a key of its own (the gate refuses it there) and can never
/// block the rightful call's key. `None` for a first call without a key (it only previews or
/// asks).
pub fn derived_key(
    idempotency_key: Option<&str>,
    confirmation_token: Option<&str>,
    approval_id: Option<&str>,
    tool: &str,
    binding: &str,
) -> Option<String> {
    use sha2::{Digest, Sha256};
    let call = || {
        let digest = hex::encode(Sha256::digest(format!("{tool}\n{binding}").as_bytes()));
        digest[..16].to_string()
    };
    idempotency_key
        .map(String::from)
        .or_else(|| confirmation_token.map(|t| format!("confirm:{}:{}", token_hash(t), call())))
        .or_else(|| approval_id.map(|a| format!("approval:{a}:{}", call())))
}

pub(super) fn strength(d: Decision) -> u8 {
    match d {
        Decision::Allow => 0,
        Decision::Confirm => 1,
        Decision::Human => 2,
        Decision::Deny => 3,
    }
}

impl Pipeline {
    /// Applies policy, confirmation and approval to one money-moving call.
    ///
    /// # Errors
    /// [`ServiceError::Store`] when paywarden's database fails. Refusals are
    /// [`Gate::Stop`] outcomes.
    pub async fn gate(&self, request: GateRequest<'_>) -> Result<Gate, ServiceError> {
        let caller = request.caller;
        let key = request.key;
        let gate = self.gate_unattached(request).await?;
        // The reservation is already on the key (recorded in the reservation's own transaction,
        // `decide_and_reserve` / `reserve_limit`; a claimed key row is always new, so both
        // columns start empty): only a claimed approval still needs recording.
        if let (
            Gate::Execute(
                claims @ Claims {
                    approval_id: Some(_),
                    ..
                },
            ),
            Some(key),
        ) = (&gate, key)
        {
            self.store()
                .attach_to_idempotent(
                    &caller.entity_id,
                    key,
                    claims.reservation.as_deref(),
                    claims.approval_id.as_deref(),
                )
                .await?;
        }
        Ok(gate)
    }

    async fn gate_unattached(&self, request: GateRequest<'_>) -> Result<Gate, ServiceError> {
        let GateRequest {
            caller,
            toolset,
            tool,
            arguments,
            binding,
            preview,
            policy,
            floor,
            confirmation_token,
            approval_id,
            argument_names,
            output_defaults,
            key,
        } = request;
        let mut verdict = match self.safety().policy.evaluate(&policy) {
            Ok(v) => v,
            // Fail closed: a rule that cannot be evaluated never lets money move.
            Err(e) => {
                return Ok(Gate::Stop(
                    self.error_outcome(
                        "policy_error",
                        &format!("{tool} is refused: the policy could not be evaluated ({e}); nothing was sent."),
                        None,
                    ),
                    Settlement::NotSent,
                ))
            }
        };
        if strength(verdict.decision) < strength(floor) {
            verdict = Verdict {
                decision: floor,
                rule: format!("{tool}-two-step"),
                message: format!(
                    "{tool} always shows a preview first; it moves money only after confirmation (policy said: {})",
                    verdict.message
                ),
                explanation: verdict.explanation,
            };
        }
        if verdict.decision == Decision::Deny {
            return Ok(self.denied(tool, &verdict));
        }
        // An approval id is the strongest authority: a person said yes to exactly this.
        if let Some(id) = approval_id {
            return match self
                .store()
                .claim_approval_leased(id, &caller.entity_id, binding, self.key_lease())
                .await
            {
                Ok(approval) => match stale(&approval.preview, &preview) {
                    // A person approved exactly this: no cap re-check, but the amount is
                    // reserved so concurrent calls count it.
                    None => Ok(Gate::Execute(Claims {
                        approval_id: Some(id.to_string()),
                        confirmation: None,
                        reservation: self.reserve_unchecked(caller, &policy, key).await?,
                        receipt: Some(receipt_basis(&verdict, &preview)),
                    })),
                    // What a person approved is not what would move now (the payment changed
                    // since): the approval is spent, nothing is sent.
                    Some(change) => {
                        let outcome = self.error_outcome(
                            "approval_stale",
                            &format!("{tool} is refused: {change} since approval {id} was requested, so it no longer matches what would move. Nothing was sent; call {tool} again to request a new approval."),
                            None,
                        );
                        let claims = Claims {
                            approval_id: Some(id.to_string()),
                            ..Claims::default()
                        };
                        self.finish_gated(&claims, &outcome, Settlement::Final)
                            .await?;
                        Ok(Gate::Stop(outcome, Settlement::Final))
                    }
                },
                Err(ApprovalError::Store(e)) => Err(ServiceError::Store(e)),
                Err(refused) => Ok(Gate::Stop(
                    self.error_outcome(
                        "approval_refused",
                        &format!("{tool} is refused: {refused}. Nothing was sent."),
                        None,
                    ),
                    Settlement::NotSent,
                )),
            };
        }
        // About to execute (allowed, or confirmed with a token): the daily total is evaluated
        // again under the entity's limit lock, on moved + reserved, and this call's amount is
        // reserved in the same step, so concurrent calls can never race past a cumulative rule.
        let executes_now = verdict.decision == Decision::Allow
            || (verdict.decision == Decision::Confirm && confirmation_token.is_some());
        let mut reserved = None;
        if executes_now {
            match self
                .reserve_checked(caller, &policy, (floor, &verdict), tool, key)
                .await?
            {
                Reserve::Reserved(r) => reserved = r,
                Reserve::Stricter(stricter) => verdict = stricter,
                Reserve::Stop(outcome) => return Ok(Gate::Stop(outcome, Settlement::NotSent)),
            }
        }
        let gate = self
            .gate_verdict(
                GateVerdict {
                    caller,
                    toolset,
                    tool,
                    arguments,
                    binding,
                    preview,
                    confirmation_token,
                    argument_names,
                    output_defaults,
                },
                verdict,
                reserved.clone(),
            )
            .await;
        // A reservation whose call does not execute is released at once.
        match (&gate, reserved) {
            (Ok(Gate::Execute(_)), _) | (_, None) => {}
            (_, Some(r)) => self.store().release_reservation(&r).await?,
        }
        gate
    }

    /// The gate's answer for a verdict the cumulative limits no longer change: execute (with
    /// `reservation`), preview with a confirmation token, or request an approval.
    async fn gate_verdict(
        &self,
        request: GateVerdict<'_>,
        verdict: Verdict,
        reservation: Option<String>,
    ) -> Result<Gate, ServiceError> {
        let GateVerdict {
            caller,
            toolset,
            tool,
            arguments,
            binding,
            preview,
            confirmation_token,
            argument_names,
            output_defaults,
        } = request;
        match verdict.decision {
            Decision::Allow => Ok(Gate::Execute(Claims {
                reservation,
                receipt: Some(receipt_basis(&verdict, &preview)),
                ..Claims::default()
            })),
            Decision::Deny => Ok(self.denied(tool, &verdict)),
            Decision::Confirm => match confirmation_token {
                None => self
                    .issue_confirmation(
                        caller,
                        tool,
                        binding,
                        &verdict,
                        preview,
                        argument_names.0,
                        output_defaults,
                    )
                    .await
                    .map(|(o, s)| Gate::Stop(o, s)),
                Some(token) => match self
                    .store()
                    .use_confirmation(&token_hash(token), &caller.entity_id, tool, binding)
                    .await
                {
                    Ok(confirmation) => match stale(&confirmation.preview, &preview) {
                        None => Ok(Gate::Execute(Claims {
                            approval_id: None,
                            confirmation: Some(token_hash(token)),
                            reservation,
                            receipt: Some(receipt_basis(&verdict, &preview)),
                        })),
                        // The preview the user agreed to is not what would move now.
                        Some(change) => Ok(Gate::Stop(
                            self.error_outcome(
                                "confirmation_stale",
                                &format!("{tool} is refused: {change} since the preview, so the confirmation no longer matches what would move. Nothing was sent; call {tool} again for a new preview and show it to the user."),
                                None,
                            ),
                            Settlement::NotSent,
                        )),
                    },
                    Err(ConfirmationError::Store(e)) => Err(ServiceError::Store(e)),
                    Err(refused) => Ok(Gate::Stop(
                        self.error_outcome(
                            "confirmation_refused",
                            &format!("{tool} is refused: {refused}. Nothing was sent."),
                            None,
                        ),
                        Settlement::NotSent,
                    )),
                },
            },
            Decision::Human => self
                .request_approval(
                    ApprovalAsk {
                        caller,
                        toolset,
                        tool,
                        arguments,
                        binding,
                        verdict: &verdict,
                        preview,
                        argument: argument_names.1,
                    },
                    output_defaults,
                )
                .await
                .map(|(o, s)| Gate::Stop(o, s)),
        }
    }

    /// The refusal of a call the policy denies (final: a retry is denied again).
    fn denied(&self, tool: &str, verdict: &Verdict) -> Gate {
        let mut outcome = self.error_outcome(
            "denied_by_policy",
            &format!(
                "{tool} is denied by policy rule {:?}: {}. Nothing was sent; do not retry.",
                verdict.rule, verdict.message
            ),
            None,
        );
        outcome.audit.outcome = "denied".into();
        Gate::Stop(outcome, Settlement::Final)
    }
}

impl Pipeline {
    /// Settles what the gate claimed once the operation ran: with [`Settlement::NotSent`]
    /// (nothing reached the provider, or it refused the credentials, which moves nothing) the
    /// approval goes back to `approved` and the confirmation token becomes usable again, so
    /// the rightful caller can still run them; otherwise an approval records `outcome` and is
    /// `executed`. An [`Settlement::Unknown`] outcome keeps the approval `executing` and the
    /// amount reserved until reconciliation finds what the provider did
    /// ([`Pipeline::reconcile`]); otherwise the cumulative-limit reservation is released. Call
    /// it after the movement (if any) is recorded, so the daily total never drops below what
    /// moved.
    ///
    /// # Errors
    /// [`ServiceError::Store`].
    pub async fn finish_gated(
        &self,
        claims: &Claims,
        outcome: &ToolOutcome,
        settlement: Settlement,
    ) -> Result<(), ServiceError> {
        if let (Some(r), Settlement::Final | Settlement::NotSent) =
            (&claims.reservation, settlement)
        {
            self.store().release_reservation(r).await?;
        }
        if settlement == Settlement::NotSent {
            if let Some(id) = &claims.approval_id {
                self.store().release_approval(id).await?;
            }
            if let Some(hash) = &claims.confirmation {
                self.store().release_confirmation(hash).await?;
            }
            return Ok(());
        }
        if settlement == Settlement::Unknown {
            return Ok(());
        }
        if let Some(id) = &claims.approval_id {
            let record = serde_json::json!({
                "structured": outcome.structured_value(),
                "text": outcome.text,
                "isError": outcome.is_error,
            });
            self.store().finish_approval(id, &record).await?;
        }
        Ok(())
    }
}

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    async fn issue_confirmation(
        &self,
        caller: &Caller,
        tool: &str,
        binding: &str,
        verdict: &Verdict,
        preview: PreviewView,
        argument: &str,
        defaults: serde_json::Value,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let (token, hash) = new_token();
        let expires_at =
            Utc::now() + ChronoDuration::seconds(self.safety().config.confirmation_ttl_secs);
        self.store()
            .create_confirmation(
                &hash,
                &Confirmation {
                    entity_id: caller.entity_id.clone(),
                    tool: tool.to_string(),
                    request_hash: binding.to_string(),
                    preview: serde_json::to_value(&preview).map_err(StoreError::from)?,
                    rule: verdict.rule.clone(),
                    expires_at,
                },
            )
            .await?;
        let expires = expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let view = ConfirmationView {
            token: token.clone(),
            expires_at: expires.clone(),
            rule: verdict.rule.clone(),
            message: verdict.message.clone(),
            preview: preview.clone(),
        };
        let structured = with_defaults(
            serde_json::json!({
                "status": "confirmation_required",
                "confirmation": view,
                "approval": null,
                "sandbox": self.sandbox(),
                "idempotentReplay": false,
            }),
            defaults,
        );
        let text = format!(
            "CONFIRMATION REQUIRED (policy rule {:?}: {}). Nothing has moved yet. Preview: {} {} {} from {} to {} (reference {} {}). Show this to the user; only if they agree, call {tool} again with exactly the same arguments plus {argument} {token:?} (valid until {expires}, single use).\n{structured}",
            verdict.rule,
            verdict.message,
            preview.operation,
            preview.amount,
            preview.currency,
            preview.from,
            preview.to,
            preview.reference_payment_type,
            preview.reference_id,
        );
        Ok((
            ToolOutcome {
                structured_json: None,
                structured,
                is_error: false,
                text: self.decorate(&text),
                audit: AuditFacts {
                    outcome: "confirmation_required".into(),
                    ..AuditFacts::default()
                },
            },
            Settlement::NotSent,
        ))
    }
}

/// The parts of a [`GateRequest`] the verdict step needs.
struct GateVerdict<'a> {
    caller: &'a Caller,
    toolset: &'a str,
    tool: &'a str,
    arguments: &'a serde_json::Value,
    binding: &'a str,
    preview: PreviewView,
    confirmation_token: Option<&'a str>,
    argument_names: (&'a str, &'a str),
    output_defaults: serde_json::Value,
}

/// What changed between the preview a person saw (`agreed`, as stored with the token or the
/// approval) and the operation as it would run now: the referenced payment, the amount in minor
/// units or the currency. `None` when they are the same.
fn stale(agreed: &serde_json::Value, now: &PreviewView) -> Option<String> {
    let field = |name: &str| agreed.get(name).cloned().unwrap_or(serde_json::Value::Null);
    if field("referenceId") != now.reference_id.as_str() {
        return Some(format!(
            "the payment changed (previewed {}, now {})",
            field("referenceId"),
            now.reference_id
        ));
    }
    if field("amountMinor") != now.amount_minor || field("currency") != now.currency.as_str() {
        return Some(format!(
            "the amount changed (previewed {} {}, now {} {})",
            field("amount").as_str().unwrap_or("?"),
            field("currency").as_str().unwrap_or("?"),
            now.amount,
            now.currency
        ));
    }
    None
}

/// `output` with every field of `defaults` it lacks.
pub(super) fn with_defaults(
    mut output: serde_json::Value,
    defaults: serde_json::Value,
) -> serde_json::Value {
    if let (serde_json::Value::Object(out), serde_json::Value::Object(extra)) =
        (&mut output, defaults)
    {
        for (k, v) in extra {
            out.entry(k).or_insert(v);
        }
    }
    output
}
