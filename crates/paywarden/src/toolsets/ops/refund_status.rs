//! Refund status tracking (issue 14). A card refund at Stripe can be `pending` (or
//! `requires_action`) and later `succeeded`, `failed` or `canceled` (Stripe's Refund object,
//! `status`; docs.stripe.com/refunds, "Failed refunds"). `issue_refund` reports such a refund
//! as `pending`, not done, and books it provisionally (refund_log row with its status, the
//! order's refunded amount, the movement counted against limits) so nothing can refund the same
//! money twice meanwhile. [`OpsService::refresh_pending_refunds`] asks Stripe about every pending
//! row (on the entity's next `issue_refund`, `get_order_history` or `payment://` read, and in
//! the server's recovery sweep for all entities) and settles it: `succeeded` marks it done,
//! `failed`/`canceled` undo the booking ([`crate::store::Store::settle_refund`]), each with an
//! audit row.
//!
//! Also here: [`unknown_refund_on`], which keeps a fresh refund of a charge from being sent
//! while another refund of the same charge has an unknown outcome.

use crate::connectors::stripe::RefundStatus;
use crate::store::{AuditEntry, KeyState, Store, StoreError};

use super::{OpsService, TOOLSET};
use crate::pipeline::reconcile::intent_of;

/// Whether `status` is not final yet (`pending`, `requires_action`).
pub fn is_pending(status: RefundStatus) -> bool {
    matches!(status, RefundStatus::Pending | RefundStatus::RequiresAction)
}

/// The idempotency key of another `issue_refund` of `payment_intent` (entity `entity_id`) whose
/// outcome is unknown, if any: `except_key` (the caller's own) is not counted.
///
/// # Errors
/// [`StoreError`] on database failure.
pub async fn unknown_refund_on(
    store: &Store,
    entity_id: &str,
    payment_intent: &str,
    except_key: &str,
) -> Result<Option<String>, StoreError> {
    Ok(store
        .open_idempotency_keys()
        .await?
        .into_iter()
        .find(|record| {
            record.entity_id == entity_id
                && record.key != except_key
                && record.state == KeyState::Unknown
                && intent_of(record).is_some_and(|i| {
                    i.toolset == TOOLSET
                        && i.operation == "refund"
                        && i.reference_id == payment_intent
                })
        })
        .map(|record| record.key))
}

impl OpsService {
    /// Asks Stripe about every pending refund_log row of `entity_id` (every entity's when
    /// `None`) and settles those Stripe has finished (module docs). Returns how many were
    /// settled; a refund Stripe cannot be asked about now stays pending (logged), and so does
    /// everything when the database fails (logged): the next call tries again.
    pub async fn refresh_pending_refunds(&self, entity_id: Option<&str>) -> usize {
        match self.refresh_pending_refunds_inner(entity_id).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "could not check pending Stripe refunds; trying again later");
                0
            }
        }
    }

    async fn refresh_pending_refunds_inner(
        &self,
        entity_id: Option<&str>,
    ) -> Result<usize, StoreError> {
        let store = self.pipeline().store();
        let mut settled = 0;
        for pending in store.pending_refunds(entity_id).await? {
            let Some(id) = pending.refund.stripe_refund_id.as_deref() else {
                continue;
            };
            let live = match self.stripe().refund(id).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, refund = id, "could not ask Stripe about a pending refund yet");
                    continue;
                }
            };
            if is_pending(live.status) {
                continue;
            }
            let status = live.status.as_str();
            let Some(row) = store.settle_refund(&pending.entity_id, id, status).await? else {
                continue;
            };
            settled += 1;
            let undone = live.status != RefundStatus::Succeeded;
            let message = if undone {
                format!(
                    "Stripe refund {id} of {} {} (order {}) ended {status}: the money was NOT refunded. Its booking is undone: refund_log row {} is marked {status}, the order's refunded amount and the movement are reversed.",
                    live.amount.to_decimal_string(),
                    live.amount.currency().code(),
                    row.order_id,
                    row.id
                )
            } else {
                format!(
                    "Stripe refund {id} of {} {} (order {}) was pending and has succeeded.",
                    live.amount.to_decimal_string(),
                    live.amount.currency().code(),
                    row.order_id
                )
            };
            if undone {
                tracing::warn!(
                    refund = id,
                    status,
                    "a pending Stripe refund failed; its booking is undone"
                );
            }
            store
                .append_audit(&AuditEntry {
                    entity_id: pending.entity_id.clone(),
                    client_name: None,
                    toolset: TOOLSET.into(),
                    tool: "issue_refund".into(),
                    arguments: serde_json::json!({
                        "stripeRefundId": id,
                        "refundLogId": row.id,
                        "orderId": row.order_id,
                    }),
                    outcome: if undone { "reversed" } else { "ok" }.into(),
                    result_code: Some(status.to_string()),
                    provider_request_id: None,
                    transaction_id: Some(id.to_string()),
                    message: Some(message),
                    duration_ms: 0,
                    sandbox: self.pipeline().sandbox(),
                })
                .await?;
        }
        Ok(settled)
    }
}
