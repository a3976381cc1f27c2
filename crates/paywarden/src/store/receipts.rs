//! Signed receipts ([`crate::receipts`]) as stored: one row per executed money movement, scoped
//! by entity, keyed by receipt id; `body` is the signed receipt's JSON exactly as it was issued.

use sqlx::Row;

use super::{Store, StoreError, WriteStatement};

/// One stored receipt's index columns and body.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReceipt {
    /// The receipt id (`rcpt_<uuid>`).
    pub id: String,
    /// The entity whose movement it records.
    pub entity_id: String,
    /// When it was issued (UTC, RFC 3339).
    pub issued_at: String,
    /// The tool that moved money.
    pub tool: String,
    /// The provider's id of what moved.
    pub transaction_id: Option<String>,
    /// The `seq` of the execution's audit row.
    pub audit_seq: i64,
    /// The signed receipt (JSON).
    pub body: serde_json::Value,
}

impl Store {
    /// Stores a receipt.
    ///
    /// # Errors
    /// [`StoreError`] on database failure (a duplicate id included).
    pub async fn insert_receipt(&self, receipt: &StoredReceipt) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO receipts (id, entity_id, issued_at, tool, transaction_id, audit_seq, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&receipt.id)
        .bind(&receipt.entity_id)
        .bind(&receipt.issued_at)
        .bind(&receipt.tool)
        .bind(&receipt.transaction_id)
        .bind(receipt.audit_seq)
        .bind(serde_json::to_string(&receipt.body)?)
        .write_on(self)
        .await?;
        Ok(())
    }

    /// The receipt `id`; with `entity_id`, only when it belongs to that entity.
    ///
    /// # Errors
    /// [`StoreError`] on database failure or an unreadable stored body.
    pub async fn receipt(
        &self,
        id: &str,
        entity_id: Option<&str>,
    ) -> Result<Option<StoredReceipt>, StoreError> {
        let row = sqlx::query("SELECT * FROM receipts WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        let found = row.map(|r| from_row(&r)).transpose()?;
        Ok(found.filter(|r| entity_id.is_none_or(|e| e == r.entity_id)))
    }

    /// Every receipt, oldest first; `entity_id` limits them to one entity.
    ///
    /// # Errors
    /// [`StoreError`] on database failure or an unreadable stored body.
    pub async fn receipts(
        &self,
        entity_id: Option<&str>,
    ) -> Result<Vec<StoredReceipt>, StoreError> {
        let rows = match entity_id {
            Some(e) => {
                sqlx::query("SELECT * FROM receipts WHERE entity_id = $1 ORDER BY audit_seq")
                    .bind(e)
                    .fetch_all(self.pool())
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM receipts ORDER BY audit_seq")
                    .fetch_all(self.pool())
                    .await?
            }
        };
        rows.iter().map(from_row).collect()
    }
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<StoredReceipt, StoreError> {
    let body: String = row.try_get("body")?;
    Ok(StoredReceipt {
        id: row.try_get("id")?,
        entity_id: row.try_get("entity_id")?,
        issued_at: row.try_get("issued_at")?,
        tool: row.try_get("tool")?,
        transaction_id: row.try_get("transaction_id")?,
        audit_seq: row.try_get("audit_seq")?,
        body: serde_json::from_str(&body)?,
    })
}
