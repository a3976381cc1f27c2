//! MCP 2026-07-28 state kept by the server (`migrations/*/0012_request_states.sql`):
//! the single use of the sealed `requestState` values of `input_required` results (SEP-2322),
//! and the Tasks (SEP-2663, `io.modelcontextprotocol/tasks`) a caller's long-waiting calls
//! became. Both are scoped to the entity they were issued to: another entity's id reads as
//! unknown.

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::Row;

use super::{Store, StoreError, WriteStatement};

fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// What a task waits on, and so where its status is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// An approval request a person decides (`approvals` row; `subject` = approval id).
    Approval,
    /// An ifthenpay payment request awaiting payment (`ifthenpay_requests`; `subject` = row id).
    Ifthenpay,
    /// A Stripe refund that is `pending` (`refund_log`; `subject` = Stripe refund id `re_...`).
    StripeRefund,
    /// An OPP transaction in a pending result family (`subject` = OPP transaction id).
    Opp,
}

impl TaskKind {
    /// The stored name (`approval`, `ifthenpay`, `stripe_refund`, `opp`).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Approval => "approval",
            TaskKind::Ifthenpay => "ifthenpay",
            TaskKind::StripeRefund => "stripe_refund",
            TaskKind::Opp => "opp",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "approval" => TaskKind::Approval,
            "ifthenpay" => TaskKind::Ifthenpay,
            "stripe_refund" => TaskKind::StripeRefund,
            "opp" => TaskKind::Opp,
            other => {
                return Err(StoreError::Json(serde::de::Error::custom(format!(
                    "unknown task kind {other:?}"
                ))))
            }
        })
    }
}

/// A stored task.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTask {
    /// `tsk_` + 32 hex.
    pub id: String,
    /// The entity it belongs to.
    pub entity_id: String,
    /// The tool whose call it is.
    pub tool: String,
    /// What it waits on.
    pub kind: TaskKind,
    /// The approval id, ifthenpay_requests row id, Stripe refund id or OPP transaction id.
    pub subject: String,
    /// The tool's result (a `CallToolResult` as JSON) when the task was created.
    pub result: serde_json::Value,
    /// UTC RFC 3339.
    pub created_at: String,
    /// UTC RFC 3339.
    pub updated_at: String,
    /// Time to live from creation, in milliseconds; `None`: unlimited.
    pub ttl_ms: Option<i64>,
    /// UTC RFC 3339, once `tasks/cancel` cancelled it.
    pub cancelled_at: Option<String>,
    /// What cancelling did (for `statusMessage`).
    pub status_note: Option<String>,
    /// The status `tasks/get` last reported (`working`, `input_required`, `completed`,
    /// `failed`); `None` before the first report. Once `completed` or `failed`, [`Self::result`]
    /// is the final result.
    pub last_status: Option<String>,
}

fn task_of(row: &sqlx::any::AnyRow) -> Result<StoredTask, StoreError> {
    let result: String = row.try_get("result")?;
    Ok(StoredTask {
        id: row.try_get("id")?,
        entity_id: row.try_get("entity_id")?,
        tool: row.try_get("tool")?,
        kind: TaskKind::parse(&row.try_get::<String, _>("kind")?)?,
        subject: row.try_get("subject")?,
        result: serde_json::from_str(&result)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        ttl_ms: row.try_get("ttl_ms")?,
        cancelled_at: row.try_get("cancelled_at")?,
        status_note: row.try_get("status_note")?,
        last_status: row.try_get("last_status")?,
    })
}

/// Why a sealed `requestState` was not redeemed.
#[derive(Debug, thiserror::Error)]
pub enum RequestStateUse {
    /// Unknown here, issued to another entity or for another call, expired, or already used.
    #[error("this requestState was already used, has expired, or belongs to another call")]
    Refused,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Records an issued `requestState`: the SHA-256 (hex) of its nonce, who it was issued to,
    /// for which tool and canonical arguments (`request_hash`), and until when.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn issue_request_state(
        &self,
        nonce_hash: &str,
        entity_id: &str,
        tool: &str,
        request_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO request_states (nonce_hash, entity_id, tool, request_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(nonce_hash)
        .bind(entity_id)
        .bind(tool)
        .bind(request_hash)
        .bind(stamp(Utc::now()))
        .bind(stamp(expires_at))
        .write_on(self)
        .await?;
        Ok(())
    }

    /// Uses up an issued `requestState`, once: only when it was issued to `entity_id` for
    /// `tool` and `request_hash`, has not expired and was not used before (one conditional
    /// `UPDATE`, so two concurrent retries have exactly one winner, on any replica).
    ///
    /// # Errors
    /// [`RequestStateUse::Refused`]; [`RequestStateUse::Store`].
    pub async fn use_request_state(
        &self,
        nonce_hash: &str,
        entity_id: &str,
        tool: &str,
        request_hash: &str,
    ) -> Result<(), RequestStateUse> {
        let now = stamp(Utc::now());
        let done = sqlx::query(
            "UPDATE request_states SET used_at = $1 WHERE nonce_hash = $2 AND entity_id = $3 \
             AND tool = $4 AND request_hash = $5 AND used_at IS NULL AND expires_at > $1",
        )
        .bind(&now)
        .bind(nonce_hash)
        .bind(entity_id)
        .bind(tool)
        .bind(request_hash)
        .write_on(self)
        .await
        .map_err(StoreError::from)?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(RequestStateUse::Refused)
        }
    }

    /// Stores a new task of `entity_id` and returns it.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Json`].
    pub async fn create_task(
        &self,
        entity_id: &str,
        tool: &str,
        kind: TaskKind,
        subject: &str,
        result: &serde_json::Value,
        ttl_ms: Option<i64>,
    ) -> Result<StoredTask, StoreError> {
        let id = format!("tsk_{}", hex::encode(rand::random::<[u8; 16]>()));
        let now = stamp(Utc::now());
        sqlx::query(
            "INSERT INTO tasks (id, entity_id, tool, kind, subject, result, created_at, updated_at, ttl_ms, last_status) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, 'working')",
        )
        .bind(&id)
        .bind(entity_id)
        .bind(tool)
        .bind(kind.as_str())
        .bind(subject)
        .bind(serde_json::to_string(result)?)
        .bind(&now)
        .bind(ttl_ms)
        .write_on(self)
        .await?;
        self.task(entity_id, &id)
            .await?
            .ok_or_else(|| StoreError::Database(sqlx::Error::RowNotFound))
    }

    /// `entity_id`'s task `id`; `None` when there is none (or it is another entity's).
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Json`].
    pub async fn task(&self, entity_id: &str, id: &str) -> Result<Option<StoredTask>, StoreError> {
        let row = sqlx::query("SELECT * FROM tasks WHERE id = $1 AND entity_id = $2")
            .bind(id)
            .bind(entity_id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(task_of).transpose()
    }

    /// Records that `entity_id`'s task `id` now has `status` (and, for `completed` or `failed`,
    /// its final `result` and status `note`), unless that was already the status last recorded or the task is
    /// cancelled or final. Returns the new `updated_at` (UTC RFC 3339) when this call changed
    /// it, `None` when the status is unchanged (one conditional `UPDATE`: two replicas polling
    /// at once record, and audit, a change once).
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Json`].
    pub async fn note_task_status(
        &self,
        entity_id: &str,
        id: &str,
        status: &str,
        result: Option<&serde_json::Value>,
        note: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let now = stamp(Utc::now());
        let result = result.map(serde_json::to_string).transpose()?;
        let done = sqlx::query(
            "UPDATE tasks SET last_status = $1, updated_at = $2, result = COALESCE($3, result), \
             status_note = COALESCE($6, status_note) \
             WHERE id = $4 AND entity_id = $5 AND cancelled_at IS NULL \
             AND (last_status IS NULL OR (last_status <> $1 \
                  AND last_status NOT IN ('completed', 'failed')))",
        )
        .bind(status)
        .bind(&now)
        .bind(result)
        .bind(id)
        .bind(entity_id)
        .bind(note)
        .write_on(self)
        .await?;
        Ok((done.rows_affected() == 1).then_some(now))
    }

    /// Marks `entity_id`'s task `id` cancelled with `note`, unless it already was; returns
    /// whether this call cancelled it.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn cancel_task(
        &self,
        entity_id: &str,
        id: &str,
        note: &str,
    ) -> Result<bool, StoreError> {
        let now = stamp(Utc::now());
        let done = sqlx::query(
            "UPDATE tasks SET cancelled_at = $1, updated_at = $1, status_note = $2 \
             WHERE id = $3 AND entity_id = $4 AND cancelled_at IS NULL",
        )
        .bind(&now)
        .bind(note)
        .bind(id)
        .bind(entity_id)
        .write_on(self)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// `entity_id`'s ifthenpay request made by `tool` for `order_id` (unique per entity and
    /// tool), newest first.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn ifthenpay_request_for_order(
        &self,
        entity_id: &str,
        tool: &str,
        order_id: &str,
    ) -> Result<Option<super::IfthenpayRequest>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM ifthenpay_requests WHERE entity_id = $1 AND tool = $2 AND order_id = $3 \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(entity_id)
        .bind(tool)
        .bind(order_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(super::ifthenpay::request_of).transpose()?)
    }

    /// The ifthenpay request with row id `id` (a task's subject: the task, not this row, is
    /// what is scoped to the caller; the row may belong to a `key:<id>` entity).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn ifthenpay_request_row(
        &self,
        id: i64,
    ) -> Result<Option<super::IfthenpayRequest>, StoreError> {
        let row = sqlx::query("SELECT * FROM ifthenpay_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(super::ifthenpay::request_of).transpose()?)
    }

    /// The status refund_log holds for `entity_id`'s Stripe refund `stripe_refund_id`
    /// (`pending`, `requires_action`, `succeeded`, `failed`, `canceled`), if it has that row.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn refund_status_of(
        &self,
        entity_id: &str,
        stripe_refund_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT status FROM refund_log WHERE entity_id = $1 AND stripe_refund_id = $2",
        )
        .bind(entity_id)
        .bind(stripe_refund_id)
        .fetch_optional(self.pool())
        .await?)
    }
}
