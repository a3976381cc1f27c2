//! Idempotency keys of money-moving calls, stored per (entity, key) with a hash of the request.
//!
//! `begin` claims a key atomically (a primary-key insert), so two concurrent calls with one key
//! cannot both proceed; `complete` stores the first outcome, which every retry then receives.

use chrono::Utc;
use sqlx::Row;

use super::{Store, StoreError};

/// What `begin` decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// The key is new: this call proceeds and must `complete` (or `abandon`) it.
    Proceed,
    /// The key was used before with the same request: here is the first outcome.
    Replay {
        /// The stored outcome (JSON), as the first call answered.
        response: serde_json::Value,
        /// Whether the first outcome was a tool error.
        is_error: bool,
    },
}

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// Same key, different request.
    #[error("idempotency key {key:?} was already used by {tool} with different arguments; use a new key for a new operation, or resend the original arguments to get the original result")]
    Mismatch {
        /// The key.
        key: String,
        /// The tool that first used it.
        tool: String,
    },
    /// The first call with this key has not finished.
    #[error("a call with idempotency key {key:?} is still in progress; wait for it and retry with the same key to get its result")]
    InProgress {
        /// The key.
        key: String,
    },
    /// The first call's outcome is unknown (the provider timed out) and the provider could not
    /// be asked yet.
    #[error("the call with idempotency key {key:?} timed out at the provider and its outcome is still unknown (the provider could not be asked); nothing was sent again. Retry later with the same key, or look the transaction up with get_transactions")]
    Unknown {
        /// The key.
        key: String,
    },
    /// Database failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for IdempotencyError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(e))
    }
}

impl Store {
    /// Claims `key` for `entity_id` and a request whose canonical hash is `request_hash`.
    ///
    /// # Errors
    /// [`IdempotencyError`]: the key belongs to another request, is in progress, or its first
    /// outcome is unknown.
    pub async fn begin_idempotent(
        &self,
        entity_id: &str,
        key: &str,
        tool: &str,
        request_hash: &str,
    ) -> Result<Begin, IdempotencyError> {
        let now = Utc::now().to_rfc3339();
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (entity_id, idempotency_key, tool, request_hash, state, created_at) \
             VALUES ($1, $2, $3, $4, 'in_progress', $5) ON CONFLICT (entity_id, idempotency_key) DO NOTHING",
        )
        .bind(entity_id)
        .bind(key)
        .bind(tool)
        .bind(request_hash)
        .bind(&now)
        .execute(self.pool())
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Begin::Proceed);
        }
        let row = sqlx::query(
            "SELECT tool, request_hash, state, response, is_error FROM idempotency_keys \
             WHERE entity_id = $1 AND idempotency_key = $2",
        )
        .bind(entity_id)
        .bind(key)
        .fetch_one(self.pool())
        .await?;
        let stored_tool: String = row.try_get("tool")?;
        let stored_hash: String = row.try_get("request_hash")?;
        if stored_hash != request_hash || stored_tool != tool {
            return Err(IdempotencyError::Mismatch {
                key: key.to_string(),
                tool: stored_tool,
            });
        }
        let state: String = row.try_get("state")?;
        match state.as_str() {
            "completed" => {
                let response: Option<String> = row.try_get("response")?;
                let is_error = super::get_bool(&row, "is_error")?;
                let response = serde_json::from_str(response.as_deref().unwrap_or("null"))
                    .map_err(StoreError::from)?;
                Ok(Begin::Replay {
                    response,
                    is_error: is_error.unwrap_or(false),
                })
            }
            "unknown" => Err(IdempotencyError::Unknown {
                key: key.to_string(),
            }),
            _ => Err(IdempotencyError::InProgress {
                key: key.to_string(),
            }),
        }
    }

    /// Stores the first outcome of `key`.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn complete_idempotent(
        &self,
        entity_id: &str,
        key: &str,
        response: &serde_json::Value,
        is_error: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'completed', response = $1, is_error = $2, completed_at = $3 \
             WHERE entity_id = $4 AND idempotency_key = $5",
        )
        .bind(serde_json::to_string(response)?)
        .bind(is_error)
        .bind(Utc::now().to_rfc3339())
        .bind(entity_id)
        .bind(key)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Marks `key`'s outcome unknown (the provider timed out after the request may have
    /// arrived): retries are refused until someone looks at the provider.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn mark_idempotent_unknown(
        &self,
        entity_id: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE idempotency_keys SET state = 'unknown' WHERE entity_id = $1 AND idempotency_key = $2")
            .bind(entity_id)
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Releases `key` when the call failed before the provider could have acted, so a retry
    /// can run.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn abandon_idempotent(&self, entity_id: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE entity_id = $1 AND idempotency_key = $2 AND state = 'in_progress'")
            .bind(entity_id)
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The state (`in_progress`, `completed`, `unknown`) and request hash of `key`, if used.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn idempotency_state(
        &self,
        entity_id: &str,
        key: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT state, request_hash FROM idempotency_keys WHERE entity_id = $1 AND idempotency_key = $2",
        )
        .bind(entity_id)
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            Some(row) => Some((row.try_get("state")?, row.try_get("request_hash")?)),
            None => None,
        })
    }

    /// Forgets a key whose outcome was unknown, once the provider said the operation never
    /// happened, so a retry runs it.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn forget_unknown_idempotent(
        &self,
        entity_id: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE entity_id = $1 AND idempotency_key = $2 AND state = 'unknown'")
            .bind(entity_id)
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Settles a key whose outcome was unknown with the outcome the provider reported.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn settle_unknown_idempotent(
        &self,
        entity_id: &str,
        key: &str,
        response: &serde_json::Value,
        is_error: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'completed', response = $1, is_error = $2, completed_at = $3 \
             WHERE entity_id = $4 AND idempotency_key = $5 AND state = 'unknown'",
        )
        .bind(serde_json::to_string(response)?)
        .bind(is_error)
        .bind(Utc::now().to_rfc3339())
        .bind(entity_id)
        .bind(key)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
