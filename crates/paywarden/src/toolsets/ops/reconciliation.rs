//! How a Stripe refund whose answer was lost is found at Stripe and recorded.

use super::*;

impl Reconciler for OpsService {
    type Op = Refund;

    fn found(refund: &Refund) -> Found {
        Found {
            transaction_id: refund.id.clone(),
            succeeded: !matches!(refund.status, RefundStatus::Failed | RefundStatus::Canceled),
        }
    }

    /// The refunds of exactly `intent`'s PaymentIntent, amount and currency that carry the
    /// key's marker (metadata `paywarden_key`).
    async fn find(&self, _caller: &Caller, intent: &Intent) -> Result<Vec<Refund>, String> {
        let refunds = self
            .stripe
            .refunds_for(&intent.reference_id)
            .await
            .map_err(|e| e.to_string())?;
        let mut found: Vec<Refund> = refunds
            .data
            .into_iter()
            .filter(|r| {
                r.metadata.get("paywarden_key") == Some(&intent.marker)
                    && r.payment_intent.as_deref() == Some(intent.reference_id.as_str())
                    && intent
                        .amount_minor
                        .is_none_or(|a| r.amount.minor_units() == a)
                    && r.amount.currency().code() == intent.currency
            })
            .collect();
        found.sort_by_key(|r| r.created);
        Ok(found)
    }

    /// Records a refund found at Stripe as `issue_refund` would have (refund_log, the order's
    /// refunded amount, the movement; each once).
    async fn record(
        &self,
        caller: &Caller,
        intent: &Intent,
        refund: &Refund,
    ) -> Result<ToolOutcome, ServiceError> {
        let field = |name: &str| {
            intent
                .extra
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        if !Self::found(refund).succeeded {
            let mut outcome = self.pipeline.error_outcome(
                "provider_rejected",
                &format!(
                    "issue_refund: Stripe refund {} of {} {} is {}: nothing was refunded.",
                    refund.id,
                    refund.amount.to_decimal_string(),
                    refund.amount.currency().code(),
                    refund.status.as_str()
                ),
                None,
            );
            outcome.audit.outcome = "rejected".into();
            outcome.audit.transaction_id = Some(refund.id.clone());
            return Ok(outcome);
        }
        let store = self.pipeline.store();
        let order = store.order(&caller.entity_id, &field("orderId")).await?;
        let customer = store
            .customer_by_email(&caller.entity_id, &field("email"))
            .await?;
        let (Some(order), Some(customer)) = (order, customer) else {
            // The order is gone from paywarden's database: the movement is still recorded.
            store
                .record_movement(
                    &caller.entity_id,
                    TOOLSET,
                    "issue_refund",
                    &intent.reference_id,
                    &refund.id,
                    refund.amount.minor_units(),
                    refund.amount.currency().code(),
                )
                .await?;
            return Ok(self.ok(
                serde_json::json!({"status": "executed", "stripe_refund_id": refund.id}),
                format!(
                    "Stripe made refund {} of {} {}; its order is no longer in paywarden's database.",
                    refund.id,
                    refund.amount.to_decimal_string(),
                    refund.amount.currency().code()
                ),
                AuditFacts {
                    transaction_id: Some(refund.id.clone()),
                    ..AuditFacts::default()
                },
            ));
        };
        let checked = CheckedRefund {
            refunded_before: order.refunded_cents,
            charge_amount: order.amount_cents,
            payment_intent: intent.reference_id.clone(),
            amount_cents: refund.amount.minor_units(),
            customer,
            order,
        };
        let command = RefundCommand {
            email: field("email"),
            charge_id: Some(intent.reference_id.clone()),
            amount_cents: Some(refund.amount.minor_units()),
            reason: field("reason"),
            confirmation_token: None,
            approval_id: None,
            idempotency_key: None,
        };
        self.record_refund(caller, &command, &checked, refund, None, REFUNDED_BY)
            .await
    }
}
