//! `issue_refund`: check on fresh state, gate, execution at Stripe, the order record.

use super::*;

impl OpsService {
    /// `issue_refund`: the seed's preview → confirm → refund, on paywarden's safety pipeline.
    /// Without a confirmation token (or approved approval) it previews and moves nothing; the
    /// model's `confirmed: true` alone never moves money.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] for malformed arguments (audited);
    /// [`ServiceError::Store`]. Refusals, previews and approval requests are outcomes.
    pub async fn issue_refund(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        params: IssueRefundParams,
    ) -> Result<ToolOutcome, ServiceError> {
        let tool = "issue_refund";
        let command = match self
            .admit_write(caller, tool, arguments, validate_refund(params))
            .await
        {
            Ok(c) => c,
            Err(refused) => return refused,
        };
        // Refunds Stripe had left pending are brought up to date first.
        self.refresh_pending_refunds(Some(&caller.entity_id)).await;
        let op = Refund {
            service: self,
            command,
        };
        let command = &op.command;
        // With no key of its own, a confirmed or approved call is keyed by its token or
        // approval: a retry of it can never refund twice, and two separately confirmed partial
        // refunds never share a key.
        let call = Call {
            toolset: TOOLSET,
            tool,
            arguments,
            binding: binding_hash(tool, arguments),
            idempotency_key: command.idempotency_key.as_deref(),
            confirmation_token: command.confirmation_token.as_deref(),
            approval_id: command.approval_id.as_deref(),
            argument_names: ("confirmation_token", "approval_id"),
            floor: Decision::Confirm,
            output_defaults: serde_json::json!({}),
        };
        self.pipeline.run(caller, call, &op).await
    }

    /// Executes an approved `issue_refund` approval (for `get_approval`), exactly once.
    ///
    /// # Errors
    /// [`ServiceError`] as [`OpsService::issue_refund`].
    pub async fn execute_approval(
        &self,
        caller: &Caller,
        approval: &crate::store::Approval,
    ) -> Result<ToolOutcome, ServiceError> {
        let mut arguments = approval.arguments.clone();
        if let serde_json::Value::Object(map) = &mut arguments {
            map.insert("approval_id".into(), approval.id.clone().into());
        }
        let params: IssueRefundParams = serde_json::from_value(arguments.clone()).map_err(|e| {
            invalid(format!(
                "approval {} holds unreadable arguments: {e}",
                approval.id
            ))
        })?;
        self.issue_refund(caller, &arguments, params).await
    }

    /// Finds the order, checks the customer, the refund window and Stripe's refundable
    /// remainder. `Ok(Err(..))` is a refusal to return as is.
    pub(super) async fn check_refund(
        &self,
        caller: &Caller,
        command: &RefundCommand,
    ) -> Result<Result<CheckedRefund, (ToolOutcome, Settlement)>, ServiceError> {
        let tool = "issue_refund";
        let refuse = |kind: &str, message: String| {
            let mut o = self.pipeline.error_outcome(kind, &message, None);
            o.audit.outcome = "rejected".into();
            Ok(Err((o, Settlement::Final)))
        };
        let store = self.pipeline.store();
        let customer = match store
            .customer_by_email(&caller.entity_id, &command.email)
            .await?
        {
            Some(c) => c,
            None => {
                return refuse(
                    "not_found",
                    format!(
                        "No customer found with email '{}'. Nothing was refunded.",
                        command.email
                    ),
                )
            }
        };
        let order = match &command.charge_id {
            Some(id) => {
                // A charge id (ch_...) is resolved to its PaymentIntent, which orders record.
                let pi_id = if id.starts_with("ch_") {
                    match self.stripe.charge(id).await {
                        Ok(ch) => ch.payment_intent.unwrap_or_else(|| id.clone()),
                        Err(StripeError::NotFound { .. }) => id.clone(),
                        Err(e) => return Ok(Err(self.stripe_failure(tool, &e, StripeCall::Read))),
                    }
                } else {
                    id.clone()
                };
                match store.order_by_charge(&caller.entity_id, &pi_id).await? {
                    Some(o) if o.customer_id == customer.id => o,
                    Some(_) => {
                        return refuse(
                            "wrong_customer",
                            format!(
                                "Charge `{id}` belongs to another customer, not {}. Nothing was refunded; check the charge with list_payments for this customer.",
                                command.email
                            ),
                        )
                    }
                    None => {
                        return refuse(
                            "not_found",
                            format!(
                                "No order found with charge ID `{id}` for {}. Use a PaymentIntent id (pi_...) from list_payments.",
                                command.email
                            ),
                        )
                    }
                }
            }
            None => match store
                .orders_of(&caller.entity_id, &customer.id)
                .await?
                .into_iter()
                .find(|o| o.status == OrderStatus::Paid)
            {
                Some(o) => o,
                None => {
                    return refuse(
                        "not_found",
                        format!("No paid orders found for {} to refund.", command.email),
                    )
                }
            },
        };
        let window = self.pipeline.safety().config.refund_window_days;
        let age = (Utc::now() - order.created_at).num_days();
        if Utc::now() - order.created_at > ChronoDuration::days(window) {
            return refuse(
                "refund_window",
                format!(
                    "Refund denied by the {window}-day refund rule: charge `{}` is {age} days old. paywarden refuses refunds of older charges whatever is asked; handle this case outside the agent.",
                    order.stripe_charge_id.as_deref().unwrap_or(&order.id)
                ),
            );
        }
        let Some(pi_id) = order.stripe_charge_id.clone() else {
            return refuse(
                "not_found",
                format!("Order {} has no Stripe payment to refund.", order.id),
            );
        };
        let pi = match self.stripe.payment_intent(&pi_id).await {
            Ok(pi) => pi,
            Err(e) => return Ok(Err(self.stripe_failure(tool, &e, StripeCall::Read))),
        };
        if customer.stripe_customer_id.is_some() && pi.customer != customer.stripe_customer_id {
            return refuse(
                "wrong_customer",
                format!(
                    "Stripe says PaymentIntent `{pi_id}` belongs to another customer than {}. Nothing was refunded.",
                    command.email
                ),
            );
        }
        if pi.status != PaymentIntentStatus::Succeeded {
            return refuse(
                "not_refundable",
                format!(
                    "PaymentIntent `{pi_id}` is {}, not succeeded: there is nothing to refund.",
                    pi.status.as_str()
                ),
            );
        }
        let (charge_amount, refunded_before) = match &pi.latest_charge {
            Some(ch) => match self.stripe.charge(ch).await {
                Ok(c) => (c.amount.minor_units(), c.amount_refunded.minor_units()),
                Err(e) => return Ok(Err(self.stripe_failure(tool, &e, StripeCall::Read))),
            },
            None => (pi.amount_received.minor_units(), order.refunded_cents),
        };
        let refundable = (charge_amount - refunded_before).max(0);
        let (remainder, currency) = money(refundable, &order.currency);
        if refundable == 0 {
            return refuse(
                "already_refunded",
                format!(
                    "Charge `{pi_id}` is already refunded in full (order status {}). Nothing was refunded.",
                    if order.status == OrderStatus::Refunded { "refunded" } else { "refunded at Stripe" }
                ),
            );
        }
        let amount_cents = command.amount_cents.unwrap_or(refundable);
        if amount_cents > refundable {
            return refuse(
                "amount_too_large",
                format!(
                    "amount_cents {amount_cents} is more than the refundable remainder of charge `{pi_id}`: {refundable} ({remainder} {currency}). Nothing was refunded; ask for at most {refundable}."
                ),
            );
        }
        Ok(Ok(CheckedRefund {
            customer,
            order,
            payment_intent: pi_id,
            amount_cents,
            refunded_before,
            charge_amount,
        }))
    }

    pub(super) async fn record_refund(
        &self,
        caller: &Caller,
        command: &RefundCommand,
        checked: &CheckedRefund,
        refund: &crate::connectors::stripe::Refund,
        request_id: Option<String>,
        by: &str,
    ) -> Result<ToolOutcome, ServiceError> {
        let store = self.pipeline.store();
        let amount = refund.amount.minor_units();
        let total = (checked.refunded_before + amount).min(checked.charge_amount);
        let log = store
            .record_refund(
                &caller.entity_id,
                &checked.order.id,
                &refund.id,
                amount,
                total,
                &command.reason,
                by,
                refund.status.as_str(),
            )
            .await?;
        store
            .record_movement(
                &caller.entity_id,
                TOOLSET,
                "issue_refund",
                &checked.payment_intent,
                &refund.id,
                amount,
                refund.amount.currency().code(),
            )
            .await?;
        let order = store
            .order(&caller.entity_id, &checked.order.id)
            .await?
            .unwrap_or_else(|| checked.order.clone());
        let view = order_view(&order);
        let pending = super::refund_status::is_pending(refund.status);
        let output = IssueRefundOutput {
            status: if pending { "pending" } else { "executed" }.into(),
            refund: Some(RefundView {
                stripe_refund_id: refund.id.clone(),
                amount_cents: amount,
                amount: refund.amount.to_decimal_string(),
                currency: refund.amount.currency().code().to_string(),
                status: refund.status.as_str().to_string(),
                payment_intent_id: checked.payment_intent.clone(),
            }),
            order: Some(view.clone()),
            refund_log_id: Some(log.id.clone()),
            refunded_by: Some(by.to_string()),
            confirmation: None,
            approval: None,
            sandbox: self.pipeline.sandbox(),
            idempotent_replay: false,
            receipt: None,
        };
        let structured = serde_json::to_value(&output).map_err(crate::store::StoreError::from)?;
        let text = if pending {
            format!(
                "Stripe accepted refund {} of {} {} to {} ({}) but it is {}: NOT done yet. It is booked provisionally (order {} is {}; refund_log {}) and counts against limits; paywarden asks Stripe again on the next read of this order and in its sweep, and undoes the booking if Stripe fails or cancels it. Do not refund again.",
                refund.id,
                refund.amount.to_decimal_string(),
                refund.amount.currency().code(),
                checked.customer.name,
                checked.customer.email,
                refund.status.as_str(),
                order.id,
                view.status,
                log.id,
            )
        } else {
            format!(
            "Refunded {} {} to {} ({}) — Stripe refund {} ({}). Order {} is now {}; logged in refund_log as {} (reason: {}).",
            refund.amount.to_decimal_string(),
            refund.amount.currency().code(),
            checked.customer.name,
            checked.customer.email,
            refund.id,
            refund.status.as_str(),
            order.id,
            view.status,
            log.id,
            command.reason
        )
        };
        Ok(self.ok(
            structured,
            text,
            AuditFacts {
                outcome: "ok".into(),
                result_code: Some(refund.status.as_str().to_string()),
                provider_request_id: request_id,
                transaction_id: Some(refund.id.clone()),
                receipt: None,
            },
        ))
    }
}

/// `issue_refund` as the pipeline runs it ([`Operation`]).
struct Refund<'a> {
    service: &'a OpsService,
    command: RefundCommand,
}

impl Operation for Refund<'_> {
    type Checked = CheckedRefund;
    type Error = StripeError;
    type Reconciler = OpsService;

    fn reconciler(&self) -> Option<&OpsService> {
        Some(self.service)
    }

    fn check(&self, caller: &Caller) -> impl Future<Output = Checked<CheckedRefund>> + Send {
        self.service.check_refund(caller, &self.command)
    }

    fn assess(&self, caller: &Caller, checked: &CheckedRefund) -> Assessment {
        let currency = checked.order.currency.to_ascii_uppercase();
        let (amount, _) = money(checked.amount_cents, &currency);
        Assessment {
            preview: PreviewView {
                tool: "issue_refund".into(),
                operation: "Stripe refund".into(),
                entity: caller.entity_id.clone(),
                reference_id: checked.payment_intent.clone(),
                reference_payment_type: "payment_intent".into(),
                amount,
                amount_minor: checked.amount_cents,
                currency,
                from: format!("merchant entity {} (Stripe balance)", caller.entity_id),
                to: format!(
                    "{} <{}> (order {}, reason: {})",
                    checked.customer.name,
                    checked.customer.email,
                    checked.order.id,
                    self.command.reason
                ),
                sandbox: self.service.pipeline.sandbox(),
            },
            transaction_age_days: Some((Utc::now() - checked.order.created_at).num_days()),
        }
    }

    fn lease(&self, _: &Caller, checked: &CheckedRefund) -> Option<TransactionLease> {
        let order_id = &checked.order.id;
        Some(TransactionLease {
            resource: format!("order:{order_id}"),
            duration: ChronoDuration::milliseconds(
                i64::try_from(self.service.stripe.timeout().as_millis()).unwrap_or(i64::MAX / 8)
                    * 4
                    + 5_000,
            ),
            busy: format!("issue_refund: another refund of order {order_id} has been running for 30 s; nothing was sent. Retry the same call."),
        })
    }

    /// Under the order's lease, the checks run again on exactly the order and amount that were
    /// previewed and agreed to, never on "the most recent paid order" afresh; another refund of
    /// the charge whose outcome is unknown refuses this one.
    async fn recheck(
        &self,
        caller: &Caller,
        agreed: CheckedRefund,
        key: Option<&str>,
    ) -> Checked<CheckedRefund> {
        let service = self.service;
        let Some(key) = key else {
            // Unreachable in practice: execution needs a token or an approval, each of which
            // keys the call. Refuse rather than refund without a key.
            let outcome = service.pipeline.error_outcome(
                "internal",
                "issue_refund needs an idempotency key to execute; nothing was sent.",
                None,
            );
            return Ok(Err((outcome, Settlement::NotSent)));
        };
        let pinned = RefundCommand {
            charge_id: Some(agreed.payment_intent.clone()),
            amount_cents: Some(agreed.amount_cents),
            ..self.command.clone()
        };
        let checked = match service.check_refund(caller, &pinned).await? {
            Ok(c) => c,
            Err(refusal) => return Ok(Err(refusal)),
        };
        // Another refund of this charge whose outcome is unknown may have happened: refunding
        // again before it is reconciled could refund twice.
        if let Some(other) = super::refund_status::unknown_refund_on(
            service.pipeline.store(),
            &caller.entity_id,
            &checked.payment_intent,
            key,
        )
        .await?
        {
            let mut outcome = service.pipeline.error_outcome(
                "unknown_outcome_pending",
                &format!(
                    "issue_refund: an earlier refund of charge `{}` (idempotency key {other:?}) has an UNKNOWN outcome: Stripe may have made it. Nothing was sent. Retry that exact call first (paywarden asks Stripe and records what it finds), or wait for paywarden's sweep to reconcile it; then check the order with get_order_history before refunding again.",
                    checked.payment_intent
                ),
                None,
            );
            outcome.audit.outcome = "rejected".into();
            return Ok(Err((outcome, Settlement::NotSent)));
        }
        Ok(Ok(checked))
    }

    fn intent(&self, _: &Caller, checked: &CheckedRefund, key: &str) -> Option<Intent> {
        Some(Intent {
            toolset: TOOLSET.into(),
            tool: "issue_refund".into(),
            reference_id: checked.payment_intent.clone(),
            operation: "refund".into(),
            amount_minor: Some(checked.amount_cents),
            currency: checked.order.currency.to_ascii_uppercase(),
            marker: refund_marker(key),
            settle_window_ms: 0,
            extra: serde_json::json!({
                "orderId": checked.order.id,
                "email": checked.customer.email,
                "reason": self.command.reason,
            }),
        })
    }

    /// Refunds at Stripe with the key's `Idempotency-Key`, then records the refund (order
    /// status, refund_log) and the movement.
    async fn send(
        &self,
        caller: &Caller,
        checked: CheckedRefund,
        key: Option<&str>,
    ) -> Sent<StripeError> {
        let service = self.service;
        let command = &self.command;
        // `recheck` refuses a call without a key.
        let key = key.unwrap_or_default();
        let by = REFUNDED_BY;
        let mut metadata = BTreeMap::new();
        metadata.insert("order_id".to_string(), checked.order.id.clone());
        metadata.insert("paywarden_key".to_string(), refund_marker(key));
        metadata.insert("refunded_by".to_string(), by.to_string());
        metadata.insert(
            "client".to_string(),
            actor_label(caller).chars().take(500).collect(),
        );
        metadata.insert(
            "reason".to_string(),
            command.reason.chars().take(500).collect(),
        );
        let reason = RefundReason::from_wire(&command.reason);
        let request = RefundRequest {
            payment_intent: checked.payment_intent.clone(),
            amount: Some(checked.amount_cents),
            reason: Some(if reason.is_requestable() {
                reason
            } else {
                RefundReason::RequestedByCustomer
            }),
            metadata,
        };
        let (refund, replayed) = match service
            .stripe
            .create_refund(&request, &stripe_idempotency_key(&caller.entity_id, key))
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        match service
            .record_refund(caller, command, &checked, &refund, replayed.request_id, by)
            .await
        {
            Ok(outcome) => Ok(Ok((outcome, Settlement::Final))),
            // Stripe refunded but paywarden could not record it: keep the key blocked as an
            // unknown outcome, so the retry finds the refund at Stripe (by its marker) and
            // records it instead of refunding again.
            Err(e) => {
                tracing::error!(error = %e, refund = %refund.id, "refund made at Stripe but not recorded yet");
                Ok(Ok((
                    service.pipeline.error_outcome(
                        "not_recorded",
                        &format!(
                            "issue_refund: Stripe made refund {} but paywarden could not record it ({e}). Retry this exact call: paywarden finds the refund at Stripe and records it; it never refunds twice.",
                            refund.id
                        ),
                        None,
                    ),
                    Settlement::Unknown,
                )))
            }
        }
    }

    fn failure(&self, error: StripeError) -> Stop {
        self.service
            .stripe_failure("issue_refund", &error, StripeCall::Refund)
    }

    fn receipt_provider(&self) -> Option<&'static str> {
        Some("stripe")
    }
}
