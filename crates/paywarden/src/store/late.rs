//! Late outcomes: keys released after their settle window with the provider showing nothing,
//! watched in case the operation still arrives (see migration `0009_unknown_outcomes`), and the
//! lookups reconciliation needs to record what a provider did exactly once.

use chrono::{DateTime, Duration, Utc};
use sqlx::{any::AnyRow, Row};

use super::{idempotency::ts, Store, StoreError, WriteStatement};

/// How long a released key is watched for a late arrival.
pub const LATE_WATCH: Duration = Duration::hours(24);

/// What a late arrival turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateKind {
    /// The key was sent again after it was released, and the first request arrived too: the
    /// provider executed the operation twice.
    Duplicate,
    /// The first request arrived after the key was released; nothing else was sent under it.
    Arrival,
}

impl LateKind {
    /// `late_duplicate` or `late_arrival`, as stored and audited.
    pub fn as_str(self) -> &'static str {
        match self {
            LateKind::Duplicate => "late_duplicate",
            LateKind::Arrival => "late_arrival",
        }
    }
}

/// A watched key, and what arrived for it, if anything.
#[derive(Debug, Clone, PartialEq)]
pub struct LateOutcome {
    /// uuid.
    pub id: String,
    /// The entity.
    pub entity_id: String,
    /// The idempotency key that was released.
    pub key: String,
    /// Its toolset.
    pub toolset: String,
    /// Its tool.
    pub tool: String,
    /// The key's request binding ([`crate::pipeline::safety::binding_hash`]).
    pub request_hash: String,
    /// What had been sent (a [`crate::pipeline::reconcile::Intent`] as JSON).
    pub intent: serde_json::Value,
    /// When the key was released.
    pub released_at: DateTime<Utc>,
    /// Until when it is watched.
    pub watch_until: DateTime<Utc>,
    /// `late_duplicate` or `late_arrival`, once found.
    pub kind: Option<String>,
    /// The provider transaction that arrived late.
    pub transaction_id: Option<String>,
    /// When it was found.
    pub found_at: Option<DateTime<Utc>>,
    /// When an operator acknowledged it, and who.
    pub acknowledged: Option<(DateTime<Utc>, String)>,
}

fn time(row: &AnyRow, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let raw: Option<String> = row.try_get(column)?;
    raw.map(|raw| {
        DateTime::parse_from_rfc3339(&raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                StoreError::Database(sqlx::Error::Decode(
                    format!("late_outcomes.{column} {raw:?}: {e}").into(),
                ))
            })
    })
    .transpose()
}

fn late_from_row(row: &AnyRow) -> Result<LateOutcome, StoreError> {
    let intent: String = row.try_get("intent")?;
    let acknowledged_by: Option<String> = row.try_get("acknowledged_by")?;
    Ok(LateOutcome {
        id: row.try_get("id")?,
        entity_id: row.try_get("entity_id")?,
        key: row.try_get("idempotency_key")?,
        toolset: row.try_get("toolset")?,
        tool: row.try_get("tool")?,
        request_hash: row.try_get("request_hash")?,
        intent: serde_json::from_str(&intent)?,
        released_at: time(row, "released_at")?.unwrap_or_else(Utc::now),
        watch_until: time(row, "watch_until")?.unwrap_or_else(Utc::now),
        kind: row.try_get("kind")?,
        transaction_id: row.try_get("transaction_id")?,
        found_at: time(row, "found_at")?,
        acknowledged: time(row, "acknowledged_at")?
            .map(|t| (t, acknowledged_by.unwrap_or_default())),
    })
}

impl Store {
    /// Watches released key `record` (its call had sent `intent`, in `toolset`) for
    /// [`LATE_WATCH`].
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn watch_late(
        &self,
        record: &super::KeyRecord,
        toolset: &str,
        intent: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        sqlx::query(
            "INSERT INTO late_outcomes (id, entity_id, idempotency_key, toolset, tool, request_hash, intent, released_at, watch_until) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(&record.entity_id)
        .bind(&record.key)
        .bind(toolset)
        .bind(&record.tool)
        .bind(&record.request_hash)
        .bind(serde_json::to_string(intent)?)
        .bind(ts(now))
        .bind(ts(now + LATE_WATCH))
        .write_on(self)
        .await?;
        Ok(())
    }

    /// The watched keys of `entity_id` in `toolset` still to look at: within their watch, and
    /// nothing found yet.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn late_to_check(
        &self,
        entity_id: &str,
        toolset: &str,
    ) -> Result<Vec<LateOutcome>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM late_outcomes WHERE entity_id = $1 AND toolset = $2 \
             AND watch_until > $3 AND transaction_id IS NULL ORDER BY released_at",
        )
        .bind(entity_id)
        .bind(toolset)
        .bind(ts(Utc::now()))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(late_from_row).collect()
    }

    /// Records what arrived late for watched key `id`.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn record_late_found(
        &self,
        id: &str,
        kind: LateKind,
        transaction_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE late_outcomes SET kind = $1, transaction_id = $2, found_at = $3 WHERE id = $4 AND transaction_id IS NULL",
        )
        .bind(kind.as_str())
        .bind(transaction_id)
        .bind(ts(Utc::now()))
        .bind(id)
        .write_on(self)
        .await?;
        Ok(())
    }

    /// Every watched key still watched or with a late arrival, newest first.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn late_outcomes(&self) -> Result<Vec<LateOutcome>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM late_outcomes WHERE watch_until > $1 OR transaction_id IS NOT NULL \
             ORDER BY released_at DESC",
        )
        .bind(ts(Utc::now()))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(late_from_row).collect()
    }

    /// Late arrivals no operator has acknowledged yet (what `/readyz` warns about).
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn unacknowledged_late(&self) -> Result<Vec<LateOutcome>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM late_outcomes WHERE transaction_id IS NOT NULL AND acknowledged_at IS NULL \
             ORDER BY found_at",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(late_from_row).collect()
    }

    /// An operator acknowledges late arrival `id` (a watched key's id, or the transaction id
    /// that arrived). Returns whether one was acknowledged.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn acknowledge_late(&self, id: &str, by: &str) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE late_outcomes SET acknowledged_at = $1, acknowledged_by = $2 \
             WHERE (id = $3 OR transaction_id = $3) AND transaction_id IS NOT NULL AND acknowledged_at IS NULL",
        )
        .bind(ts(Utc::now()))
        .bind(by)
        .bind(id)
        .write_on(self)
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    /// Whether a movement of provider transaction `transaction_id` is recorded for `entity_id`.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn movement_recorded(
        &self,
        entity_id: &str,
        transaction_id: &str,
    ) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM movements WHERE entity_id = $1 AND transaction_id = $2",
        )
        .bind(entity_id)
        .bind(transaction_id)
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }

    /// Whether the audit log has a row of `entity_id` with `outcome` for provider transaction
    /// `transaction_id` (reconciliation writes the row a dead call could not).
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn audited(
        &self,
        entity_id: &str,
        transaction_id: &str,
        outcome: &str,
    ) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_log WHERE entity_id = $1 AND transaction_id = $2 AND outcome = $3",
        )
        .bind(entity_id)
        .bind(transaction_id)
        .bind(outcome)
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }
}
