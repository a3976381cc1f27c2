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
        let binding = binding_hash(tool, arguments);
        // With no key of its own, a confirmed or approved call is keyed by its token or
        // approval: a retry of it can never refund twice, and two separately confirmed partial
        // refunds never share a key.
        let key = derived_key(
            command.idempotency_key.as_deref(),
            command.confirmation_token.as_deref(),
            command.approval_id.as_deref(),
        );
        self.pipeline.check_late(self, caller, TOOLSET).await;
        self.refresh_pending_refunds(Some(&caller.entity_id)).await;
        if let Some(key) = &key {
            self.pipeline.reconcile(self, caller, key, &binding).await?;
        }
        self.pipeline
            .write(caller, TOOLSET, tool, arguments, key.as_deref(), || async {
                self.decide_refund(caller, &command, arguments, &binding, key.as_deref())
                    .await
            })
            .await
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

    pub(super) async fn decide_refund(
        &self,
        caller: &Caller,
        command: &RefundCommand,
        arguments: &serde_json::Value,
        binding: &str,
        key: Option<&str>,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let tool = "issue_refund";
        let checked = match self.check_refund(caller, command).await? {
            Ok(c) => c,
            Err(refusal) => return Ok(refusal),
        };
        let currency = checked.order.currency.to_ascii_uppercase();
        let (amount, _) = money(checked.amount_cents, &currency);
        let moved_today = self
            .pipeline
            .store()
            .moved_today(&caller.entity_id, &currency)
            .await?;
        let preview = PreviewView {
            tool: tool.into(),
            operation: "Stripe refund".into(),
            entity: caller.entity_id.clone(),
            reference_id: checked.payment_intent.clone(),
            reference_payment_type: "payment_intent".into(),
            amount,
            amount_minor: checked.amount_cents,
            currency: currency.clone(),
            from: format!("merchant entity {} (Stripe balance)", caller.entity_id),
            to: format!(
                "{} <{}> (order {}, reason: {})",
                checked.customer.name, checked.customer.email, checked.order.id, command.reason
            ),
            sandbox: self.pipeline.sandbox(),
        };
        let gate = self
            .pipeline
            .gate(GateRequest {
                caller,
                toolset: TOOLSET,
                tool,
                arguments,
                binding,
                preview,
                policy: PolicyInput {
                    toolset: TOOLSET.into(),
                    tool: tool.into(),
                    entity: caller.entity_id.clone(),
                    moves_money: true,
                    amount_minor: Some(checked.amount_cents),
                    currency: Some(currency),
                    transaction_age_days: Some((Utc::now() - checked.order.created_at).num_days()),
                    moved_today_minor: moved_today,
                    client: caller.client_name.clone(),
                },
                floor: Decision::Confirm,
                confirmation_token: command.confirmation_token.as_deref(),
                approval_id: command.approval_id.as_deref(),
                argument_names: ("confirmation_token", "approval_id"),
                output_defaults: serde_json::json!({}),
                key,
            })
            .await?;
        let claims = match gate {
            Gate::Stop(outcome, settlement) => return Ok((outcome, settlement)),
            Gate::Execute(claims) => claims,
        };
        let Some(key) = key else {
            // Unreachable in practice: execution needs a token or an approval, each of which
            // keys the call. Refuse rather than refund without a key.
            let outcome = self.pipeline.error_outcome(
                "internal",
                "issue_refund needs an idempotency key to execute; nothing was sent.",
                None,
            );
            self.pipeline
                .finish_gated(&claims, &outcome, Settlement::NotSent)
                .await?;
            return Ok((outcome, Settlement::NotSent));
        };
        // Under the lease, the checks run again on exactly the order and amount that were
        // previewed and agreed to, never on "the most recent paid order" afresh.
        let pinned = RefundCommand {
            charge_id: Some(checked.payment_intent.clone()),
            amount_cents: Some(checked.amount_cents),
            ..command.clone()
        };
        let (mut outcome, settlement) = self
            .execute_refund(caller, &pinned, &checked.order.id, key)
            .await?;
        self.pipeline
            .attach_receipt(&claims, &mut outcome, settlement, "stripe");
        self.pipeline
            .finish_gated(&claims, &outcome, settlement)
            .await
            .map_err(|e| match (e, settlement) {
                (ServiceError::Store(source), Settlement::Final | Settlement::Unknown) => {
                    self.pipeline.unrecorded(source)
                }
                (e, _) => e,
            })?;
        Ok((outcome, settlement))
    }

    /// Under the order's lease: check again on fresh Stripe state, refund at Stripe with the
    /// key's `Idempotency-Key`, then record the refund (order status, refund_log) and the
    /// movement.
    pub(super) async fn execute_refund(
        &self,
        caller: &Caller,
        command: &RefundCommand,
        order_id: &str,
        key: &str,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let tool = "issue_refund";
        let store = self.pipeline.store();
        let holder = uuid::Uuid::new_v4().to_string();
        let lease = ChronoDuration::milliseconds(
            i64::try_from(self.stripe.timeout().as_millis()).unwrap_or(i64::MAX / 8) * 4 + 5_000,
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let resource = format!("order:{order_id}");
        while !store
            .try_lock_transaction(&caller.entity_id, &resource, &holder, lease)
            .await?
        {
            if std::time::Instant::now() > deadline {
                return Ok((
                    self.pipeline.error_outcome(
                        "busy",
                        &format!("{tool}: another refund of order {order_id} has been running for 30 s; nothing was sent. Retry the same call."),
                        None,
                    ),
                    Settlement::NotSent,
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        }
        let result = self.execute_refund_locked(caller, command, key).await;
        // Past the send, a failure to give the lease back must not hide the outcome: the
        // lease runs out on its own.
        if let Err(e) = store
            .unlock_transaction(&caller.entity_id, &resource, &holder)
            .await
        {
            tracing::warn!(error = %e, "could not release a transaction lease; it runs out on its own");
        }
        result
    }

    pub(super) async fn execute_refund_locked(
        &self,
        caller: &Caller,
        command: &RefundCommand,
        key: &str,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let checked = match self.check_refund(caller, command).await? {
            Ok(c) => c,
            Err(refusal) => return Ok(refusal),
        };
        // Another refund of this charge whose outcome is unknown may have happened: refunding
        // again before it is reconciled could refund twice.
        if let Some(other) = super::refund_status::unknown_refund_on(
            self.pipeline.store(),
            &caller.entity_id,
            &checked.payment_intent,
            key,
        )
        .await?
        {
            let mut outcome = self.pipeline.error_outcome(
                "unknown_outcome_pending",
                &format!(
                    "issue_refund: an earlier refund of charge `{}` (idempotency key {other:?}) has an UNKNOWN outcome: Stripe may have made it. Nothing was sent. Retry that exact call first (paywarden asks Stripe and records what it finds), or wait for paywarden's sweep to reconcile it; then check the order with get_order_history before refunding again.",
                    checked.payment_intent
                ),
                None,
            );
            outcome.audit.outcome = "rejected".into();
            return Ok((outcome, Settlement::NotSent));
        }
        self.send_refund(caller, command, &checked, key).await
    }

    pub(super) async fn send_refund(
        &self,
        caller: &Caller,
        command: &RefundCommand,
        checked: &CheckedRefund,
        key: &str,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let tool = "issue_refund";
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
        let intent = Intent {
            toolset: TOOLSET.into(),
            tool: tool.into(),
            reference_id: checked.payment_intent.clone(),
            operation: "refund".into(),
            amount_minor: Some(checked.amount_cents),
            currency: checked.order.currency.to_ascii_uppercase(),
            marker: refund_marker(key),
            settle_window_ms: u64::try_from(self.pipeline.settle_window().as_millis())
                .unwrap_or(u64::MAX),
            extra: serde_json::json!({
                "orderId": checked.order.id,
                "email": checked.customer.email,
                "reason": command.reason,
            }),
        };
        self.pipeline
            .store()
            .record_idempotent_intent(
                &caller.entity_id,
                key,
                &serde_json::to_value(&intent).map_err(crate::store::StoreError::from)?,
            )
            .await?;
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
        let (refund, replayed) = match self
            .stripe
            .create_refund(&request, &stripe_idempotency_key(&caller.entity_id, key))
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(self.stripe_failure(tool, &e, StripeCall::Refund)),
        };
        match self
            .record_refund(caller, command, checked, &refund, replayed.request_id, by)
            .await
        {
            Ok(outcome) => Ok((outcome, Settlement::Final)),
            // Stripe refunded but paywarden could not record it: keep the key blocked as an
            // unknown outcome, so the retry finds the refund at Stripe (by its marker) and
            // records it instead of refunding again.
            Err(e) => {
                tracing::error!(error = %e, refund = %refund.id, "refund made at Stripe but not recorded yet");
                Ok((
                    self.pipeline.error_outcome(
                        "not_recorded",
                        &format!(
                            "issue_refund: Stripe made refund {} but paywarden could not record it ({e}). Retry this exact call: paywarden finds the refund at Stripe and records it; it never refunds twice.",
                            refund.id
                        ),
                        None,
                    ),
                    Settlement::Unknown,
                ))
            }
        }
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
