//! paywarden's own storage (sqlx; an SQLite file by default): the audit log, idempotency keys
//! and small metadata. Provider state lives with the provider (or the emulator), not here.

mod approvals;
mod audit;
mod idempotency;
mod ifthenpay;
mod orders;
mod safety;

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

pub use approvals::{Approval, ApprovalError, ApprovalStatus, NewApproval, UnknownApprovalStatus};
pub use audit::{AuditEntry, AuditRecord, ChainBreak};
pub use idempotency::{Begin, IdempotencyError};
pub use ifthenpay::{IfthenpayCallback, IfthenpayRequest, NewIfthenpayRequest};
pub use orders::{
    CustomerRecord, NewOrder, OrderRecord, OrderStatus, RefundLogRecord, RevenueLine, ReviewFlag,
};
pub use safety::{Confirmation, ConfirmationError};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, migrated or queried.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed (for example, a database written by a newer paywarden).
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored JSON value could not be read back.
    #[error("stored JSON is unreadable: {0}")]
    Json(#[from] serde_json::Error),
}

/// A handle to paywarden's database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and applies migrations.
    ///
    /// # Errors
    /// [`StoreError`] when the file cannot be created or migrated.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Reads a metadata value.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Writes a metadata value.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}
