//! Refund status (issue 14): refund_log rows whose Stripe refund is `pending`, and settling them
//! once Stripe says how they ended. A `failed` or `canceled` refund is undone in one transaction:
//! its refund_log row keeps the final status, the order's refunded amount goes back down (and
//! its status with it), and a compensating movement `<refund id>:reversed` of minus the amount,
//! dated like the original, takes it out of the cumulative-limit total.

use sqlx::Row;

use super::orders::refund_row;
use super::{RefundLogRecord, Store, StoreError};

/// A refund_log row with the entity it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRefund {
    /// The entity.
    pub entity_id: String,
    /// The row.
    pub refund: RefundLogRecord,
}

impl Store {
    /// refund_log rows still `pending` or `requires_action` (of `entity_id`, or of every entity), oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn pending_refunds(
        &self,
        entity_id: Option<&str>,
    ) -> Result<Vec<EntityRefund>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM refund_log WHERE status IN ('pending', 'requires_action') AND ($1 = '' OR entity_id = $1) \
             ORDER BY created_at, id",
        )
        .bind(entity_id.unwrap_or(""))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(EntityRefund {
                    entity_id: row.try_get("entity_id")?,
                    refund: refund_row(row)?,
                })
            })
            .collect()
    }

    /// Settles the `pending` refund_log row of Stripe refund `stripe_refund_id` with `status`
    /// (`succeeded`, `failed`, `canceled`); `failed` and `canceled` undo it (module docs).
    /// Returns the row as it was when it was settled here, `None` when there is no pending row
    /// (already settled: settling is idempotent).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn settle_refund(
        &self,
        entity_id: &str,
        stripe_refund_id: &str,
        status: &str,
    ) -> Result<Option<RefundLogRecord>, StoreError> {
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query(&format!(
            "SELECT * FROM refund_log WHERE entity_id = $1 AND stripe_refund_id = $2 \
             AND status IN ('pending', 'requires_action'){}",
            self.for_update()
        ))
        .bind(entity_id)
        .bind(stripe_refund_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let mut refund = refund_row(&row)?;
        sqlx::query("UPDATE refund_log SET status = $1 WHERE entity_id = $2 AND id = $3")
            .bind(status)
            .bind(entity_id)
            .bind(&refund.id)
            .execute(&mut *tx)
            .await?;
        if status == "failed" || status == "canceled" {
            sqlx::query(
                "UPDATE orders SET \
                 refunded_cents = CASE WHEN refunded_cents > $1 THEN refunded_cents - $1 ELSE 0 END, \
                 status = CASE WHEN refunded_cents - $1 >= amount_cents THEN 'refunded' \
                               WHEN refunded_cents - $1 > 0 THEN 'partially_refunded' ELSE 'paid' END \
                 WHERE entity_id = $2 AND id = $3",
            )
            .bind(refund.amount_cents)
            .bind(entity_id)
            .bind(&refund.order_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO movements (entity_id, toolset, tool, reference_id, transaction_id, amount_minor, currency, at) \
                 SELECT entity_id, toolset, tool, reference_id, transaction_id || ':reversed', -amount_minor, currency, at \
                 FROM movements WHERE entity_id = $1 AND transaction_id = $2 AND NOT EXISTS \
                 (SELECT 1 FROM movements WHERE entity_id = $1 AND transaction_id = $3)",
            )
            .bind(entity_id)
            .bind(stripe_refund_id)
            .bind(format!("{stripe_refund_id}:reversed"))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        refund.status = status.to_string();
        Ok(Some(refund))
    }
}
