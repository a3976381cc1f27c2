//! paywarden's own storage: the audit log, idempotency keys, confirmations, approvals,
//! transaction leases, movements, the orders database and small metadata. Provider state lives
//! with the provider (or the emulator), not here.
//!
//! Two engines behind one code path (sqlx's `Any` driver):
//!
//! - **SQLite** (the default): one file, `paywarden.db` in the data directory, WAL mode.
//!   Cross-process exclusion comes from `BEGIN IMMEDIATE` write transactions. A commit does not
//!   fsync (`synchronous = NORMAL`); every write returns only once paywarden's fsync of the WAL
//!   covers it, one fsync for all the writes committed before it (`durability.rs`).
//! - **PostgreSQL** (`DATABASE_URL=postgres://...`): for several paywarden processes sharing
//!   one database. Cross-process exclusion comes from the database's own locks: row locks
//!   (`SELECT ... FOR UPDATE`) on the approval, confirmation and order being changed, and a
//!   transaction-scoped advisory lock serialising appends to the audit chain.
//!
//! SQL is written once with `$N` placeholders (SQLite accepts them too); the few places where
//! the engines differ ask [`Engine`]. Migrations live in `migrations/sqlite` and
//! `migrations/postgres`, with the same versions and the same meaning.

mod approvals;
mod audit;
mod batch;
mod durability;
mod events;
mod idempotency;
mod ifthenpay;
mod late;
mod mcp_state;
mod orders;
#[cfg(test)]
mod pg_ping_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(all(test, target_os = "linux"))]
mod read_tx_review_tests;
mod receipts;
mod refund_status;
mod safety;

use std::{fmt, path::Path};

use sqlx::{
    any::{AnyConnectOptions, AnyPoolOptions, AnyRow},
    migrate::Migrator,
    AnyPool, Executor, Row,
};

pub use approvals::{Approval, ApprovalError, ApprovalStatus, NewApproval, UnknownApprovalStatus};
pub use audit::{AuditAppended, AuditEntry, AuditRecord, ChainBreak, GENESIS};
pub use events::{NewProviderEvent, ProviderEvent};
pub use idempotency::{stored_text, Begin, IdempotencyError, KeyRecord, KeyState};
pub use ifthenpay::{IfthenpayCallback, IfthenpayRequest, NewIfthenpayRequest};
pub use late::{LateKind, LateOutcome, LATE_WATCH};
pub use mcp_state::{RequestStateUse, StoredTask, TaskKind};
pub use orders::{
    CustomerRecord, NewOrder, OrderRecord, OrderStatus, RefundLogRecord, RevenueLine, ReviewFlag,
};
pub use receipts::StoredReceipt;
pub use refund_status::EntityRefund;
pub use safety::{limit_lease_name, Confirmation, ConfirmationError, LimitDecision};

/// The SQLite migrations (the files of `migrations/sqlite`, embedded at build time).
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
/// The PostgreSQL migrations (the files of `migrations/postgres`, embedded at build time).
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, migrated or queried.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The database was migrated by a newer paywarden than this one; this binary refuses to
    /// touch it rather than misread it.
    #[error("the database schema is at version {database}, newer than this paywarden knows (up to version {binary}); run the newer paywarden, or restore a backup made before it migrated")]
    SchemaTooNew {
        /// The highest migration version applied to the database.
        database: i64,
        /// The highest migration version this binary carries.
        binary: i64,
    },
    /// The database URL is not one paywarden can use.
    #[error("unsupported database URL {0:?}: use sqlite:///path/to/paywarden.db or postgres://user@host:5432/dbname")]
    UnsupportedUrl(String),
    /// A stored JSON value could not be read back.
    #[error("stored JSON is unreadable: {0}")]
    Json(#[from] serde_json::Error),
    /// The task writing an audit append's group ended without answering; whether the row was
    /// written is unknown (`paywarden audit verify` and the log tell).
    #[error("the audit append was not answered (its group commit task ended)")]
    AuditAppendAborted,
}

/// Which database engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// An SQLite file (single machine; several processes may share the file).
    Sqlite,
    /// A PostgreSQL server (any number of paywarden processes and machines).
    Postgres,
}

impl Engine {
    /// `sqlite` or `postgres`.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }

    /// The engine of a database URL (`sqlite:...`, `postgres://...`, `postgresql://...`).
    ///
    /// # Errors
    /// [`StoreError::UnsupportedUrl`] for any other scheme.
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Engine::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Engine::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Engine::Sqlite => &SQLITE_MIGRATIONS,
            Engine::Postgres => &POSTGRES_MIGRATIONS,
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A database URL with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// Where the schema of a database stands relative to this binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The engine.
    pub engine: Engine,
    /// Versions applied to the database, ascending.
    pub applied: Vec<i64>,
    /// Versions this binary carries, ascending.
    pub known: Vec<i64>,
}

impl SchemaStatus {
    /// Versions this binary carries that the database does not have yet.
    pub fn pending(&self) -> Vec<i64> {
        self.known
            .iter()
            .copied()
            .filter(|v| !self.applied.contains(v))
            .collect()
    }
}

/// A handle to paywarden's database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    // Audit appends waiting for their group commit (audit::Store::append_audit).
    audit: std::sync::Arc<audit::AuditQueue>,
    // SQLite: this process's writers take turns here (FIFO) at its writer connection, where
    // their transactions share write transactions ([`Store::begin_write`],
    // [`Store::write_conn`], batch.rs).
    batches: std::sync::Arc<batch::Batches>,
    // SQLite with a database file: the group fsync every write waits for (durability.rs).
    wal_sync: Option<std::sync::Arc<durability::WalSync>>,
}

/// A connection to write on, holding (on SQLite) this process's turn at the writer connection
/// until it is dropped: [`WriteTx`] from [`Store::begin_write`], [`WriteConn`] from
/// [`Store::write_conn`]. Derefs to the connection, so `&mut *w` is an executor.
pub(crate) struct WithTurn<C> {
    conn: C,
    // What a commit waits for before it returns (SQLite with a file: the WAL's group fsync).
    wal_sync: Option<std::sync::Arc<durability::WalSync>>,
}

/// A write transaction from [`Store::begin_write`]: on SQLite a savepoint in the process's
/// shared write transaction, holding the turn (batch.rs); on PostgreSQL a transaction of its
/// own. Dropped without [`WriteTx::commit`] or [`WriteTx::rollback`], it is rolled back.
pub(crate) type WriteTx = WithTurn<TxConn>;

/// The connection of a [`WriteTx`].
pub(crate) enum TxConn {
    /// SQLite: a savepoint in the process's shared write transaction.
    Shared(batch::Member),
    /// PostgreSQL: a transaction of its own.
    Own(sqlx::Transaction<'static, sqlx::Any>),
}

/// The connection for single write statements from [`Store::write_conn`].
pub(crate) enum SoloConn {
    /// SQLite: the writer connection, holding the turn, in the shared write transaction.
    Writer(batch::Member),
    /// PostgreSQL: a pooled connection.
    Pooled(sqlx::pool::PoolConnection<sqlx::Any>),
}

/// A connection for single write statements from [`Store::write_conn`], holding (on SQLite)
/// this process's turn until [`WriteConn::written`].
pub(crate) type WriteConn = WithTurn<SoloConn>;

impl WriteConn {
    /// Gives the turn to the next writer and returns once the statements run on this
    /// connection are committed (SQLite: the shared write transaction that holds them,
    /// batch.rs) and durable (the WAL's group fsync). Dropped instead, the connection's
    /// statements may or may not be kept (on SQLite they are undone when no other write of
    /// their batch is kept): drop it only when nothing was written or nobody relies on it.
    ///
    /// # Errors
    /// The commit's error; or, after it, the fsync's (as [`sqlx::Error::Io`]).
    pub(crate) async fn written(self) -> Result<(), sqlx::Error> {
        let wal_sync = self.wal_sync.clone();
        if let SoloConn::Writer(member) = self.conn {
            member.release().await?;
        }
        durable(wal_sync.as_deref()).await.map_err(sqlx::Error::Io)
    }
}

impl WriteTx {
    /// Commits the transaction, gives the turn to the next writer, and returns once the
    /// commit is durable (SQLite: its shared transaction committed, batch.rs, and then the
    /// WAL's group fsync, [`durability`]).
    ///
    /// # Errors
    /// The commit's error; or, after it, the fsync's (as [`sqlx::Error::Io`]).
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        let wal_sync = self.wal_sync.clone();
        self.commit_unsynced().await?;
        durable(wal_sync.as_deref()).await.map_err(sqlx::Error::Io)
    }

    /// Commits the transaction (SQLite: once its shared transaction committed) and gives the
    /// turn to the next writer without waiting for the commit to be durable: the caller must
    /// wait for [`Store::written`] before it answers anyone or relies on the write. Only the
    /// audit chain's group commit uses it, so that a failed fsync is not mistaken for a failed
    /// transaction (which it retries).
    ///
    /// # Errors
    /// The commit's error.
    pub(crate) async fn commit_unsynced(self) -> Result<(), sqlx::Error> {
        match self.conn {
            TxConn::Shared(member) => member.release().await,
            TxConn::Own(tx) => tx.commit().await,
        }
    }

    /// Rolls the transaction back, then gives the turn to the next writer.
    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.conn {
            TxConn::Shared(member) => member.rollback().await,
            TxConn::Own(tx) => tx.rollback().await,
        }
    }
}

impl std::ops::Deref for TxConn {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        match self {
            Self::Shared(member) => member,
            Self::Own(tx) => tx,
        }
    }
}

impl std::ops::DerefMut for TxConn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Self::Shared(member) => member,
            Self::Own(tx) => tx,
        }
    }
}

impl std::ops::Deref for SoloConn {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        match self {
            Self::Writer(conn) => conn,
            Self::Pooled(conn) => conn,
        }
    }
}

impl std::ops::DerefMut for SoloConn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Self::Writer(conn) => conn,
            Self::Pooled(conn) => conn,
        }
    }
}

/// Returns once every commit that returned before the call is durable (nothing to wait for
/// without a [`durability::WalSync`]: PostgreSQL, whose `COMMIT` returns once it is durable,
/// or SQLite without a file).
async fn durable(wal_sync: Option<&durability::WalSync>) -> std::io::Result<()> {
    match wal_sync {
        Some(sync) => sync.committed().await,
        None => Ok(()),
    }
}

/// One write statement (`INSERT`, `UPDATE`, `DELETE`) of the store, run with
/// [`WriteStatement::write_on`]: on this process's write turn, and answered once durable.
pub(crate) trait WriteStatement {
    /// Runs the statement on a [`Store::write_conn`] (SQLite: in the shared write transaction,
    /// batch.rs; PostgreSQL: autocommit), gives the turn back, and returns its result once the
    /// write is committed and durable.
    ///
    /// # Errors
    /// The statement's error; or, after it ran, the fsync's (as [`sqlx::Error::Io`]).
    fn write_on(
        self,
        store: &Store,
    ) -> impl std::future::Future<Output = Result<sqlx::any::AnyQueryResult, sqlx::Error>> + Send;
}

impl<'q> WriteStatement for sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    async fn write_on(self, store: &Store) -> Result<sqlx::any::AnyQueryResult, sqlx::Error> {
        // SQLite: in the shared write transaction (batch.rs), which holds the write lock, so
        // the statement runs on this thread (vendor/sqlx-sqlite.patch); one statement needs
        // no savepoint of its own (a failing one undoes only itself). PostgreSQL: autocommit.
        let mut conn = store.write_conn().await?;
        let done = self.execute(&mut *conn).await?;
        conn.written().await?;
        Ok(done)
    }
}

impl<C: std::ops::Deref<Target = sqlx::AnyConnection>> std::ops::Deref for WithTurn<C> {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl<C: std::ops::DerefMut<Target = sqlx::AnyConnection>> std::ops::DerefMut for WithTurn<C> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

/// How long (µs) a query of the store outside a transaction may run on the calling task's
/// thread before it is sent to its connection's worker thread (`inline_read_budget_us`,
/// paywarden's sqlx-sqlite patch; docs/performance.md, "Queries on the caller's thread"). The
/// store's queries take 10-250 µs and call no function with side effects; a longer one runs
/// again on the worker.
pub(crate) const INLINE_READ_BUDGET_US: u64 = 200;

/// The URL the store's SQLite pool connects with: `url`, creating the file when it has no
/// query (`mode=rwc`), with [`INLINE_READ_BUDGET_US`] unless it names a budget itself.
pub(crate) fn sqlite_pool_url(url: &str) -> String {
    let mut url = if url.contains('?') {
        url.to_string()
    } else {
        format!("{url}?mode=rwc")
    };
    let query = url.split_once('?').map_or("", |(_, query)| query);
    if !url::form_urlencoded::parse(query.as_bytes()).any(|(key, _)| key == "inline_read_budget_us")
    {
        url.push_str(&format!("&inline_read_budget_us={INLINE_READ_BUDGET_US}"));
    }
    url
}

/// A file path as an `sqlite://` URL that creates the file when missing (`%`, `?` and `#` in
/// the path are percent-encoded, as sqlx decodes them), e.g. `sqlite:///data/paywarden.db?mode=rwc`.
pub fn sqlite_url(path: &Path) -> String {
    let raw = path.to_string_lossy();
    let mut encoded = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '%' => encoded.push_str("%25"),
            '?' => encoded.push_str("%3F"),
            '#' => encoded.push_str("%23"),
            c => encoded.push(c),
        }
    }
    format!("sqlite://{encoded}?mode=rwc")
}

/// The file of a SQLite pool's main database (`PRAGMA database_list`); `None` for an
/// in-memory or temporary database, which has nothing to make durable.
async fn database_file(pool: &AnyPool) -> Result<Option<std::path::PathBuf>, sqlx::Error> {
    let rows = sqlx::query("PRAGMA database_list").fetch_all(pool).await?;
    for row in rows {
        let name: String = row.try_get("name")?;
        let file: String = row.try_get("file")?;
        if name == "main" && !file.is_empty() {
            return Ok(Some(file.into()));
        }
    }
    Ok(None)
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and applies migrations.
    ///
    /// # Errors
    /// [`StoreError`] when the file cannot be created or migrated, or
    /// [`StoreError::SchemaTooNew`] when a newer paywarden migrated it.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::connect(&sqlite_url(path)).await
    }

    /// Connects to the database at `url` (`sqlite://PATH[?mode=rwc]`, `postgres://...`) and
    /// applies pending migrations (on PostgreSQL under sqlx's migration lock, so replicas
    /// starting together migrate once).
    ///
    /// # Errors
    /// [`StoreError::UnsupportedUrl`]; [`StoreError::Database`] when it cannot connect;
    /// [`StoreError::SchemaTooNew`]; [`StoreError::Migration`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let store = Self::connect_unmigrated(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects to the database at `url` without touching its schema.
    ///
    /// # Errors
    /// [`StoreError::UnsupportedUrl`]; [`StoreError::Database`] when it cannot connect.
    pub async fn connect_unmigrated(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let engine = Engine::of_url(url)?;
        let url = match engine {
            Engine::Sqlite => sqlite_pool_url(url),
            Engine::Postgres => url.to_string(),
        };
        let options: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(match engine {
                Engine::Sqlite => 8,
                Engine::Postgres => 16,
            })
            // sqlx pings a connection each time it leaves the pool by default: on SQLite a
            // round trip to the connection's worker thread before every statement, for a file
            // that cannot have gone away (~7 % of an audited read's CPU, docs/performance.md).
            // PostgreSQL keeps the check: a server restart leaves dead connections behind.
            .test_before_acquire(engine == Engine::Postgres)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        // `synchronous = NORMAL`: a commit does not fsync; every write of the
                        // store waits for the WAL's group fsync instead (durability.rs).
                        // `recursive_triggers = ON`: a row that a `REPLACE` conflict resolution
                        // deletes fires its delete triggers (SQLite fires them only with this
                        // on, "The ON CONFLICT Clause"), so the daily totals kept by triggers
                        // (`order_days`, `movement_days`) cannot count a replaced row twice.
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA recursive_triggers = ON;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let wal_sync = match engine {
            Engine::Sqlite => database_file(&pool)
                .await?
                .map(|file| std::sync::Arc::new(durability::WalSync::new(&file))),
            Engine::Postgres => None,
        };
        Ok(Self {
            pool,
            engine,
            audit: std::sync::Arc::default(),
            batches: std::sync::Arc::default(),
            wal_sync,
        })
    }

    /// Returns once every write this process committed so far is durable: call it after an
    /// autocommit write statement ([`Store::write_conn`]) returned, before anything relies on
    /// it. [`WriteTx::commit`] and [`WriteStatement::write_on`] call it themselves.
    ///
    /// # Errors
    /// The fsync's error (as [`sqlx::Error::Io`]).
    pub(crate) async fn written(&self) -> Result<(), sqlx::Error> {
        durable(self.wal_sync.as_deref())
            .await
            .map_err(sqlx::Error::Io)
    }

    /// (commits noted, commits known durable) of this store's group fsync; `None` without one
    /// (tests).
    #[cfg(test)]
    pub(crate) async fn durability(&self) -> Option<(u64, u64)> {
        let sync = self.wal_sync.as_ref()?;
        let noted = sync.noted();
        Some((noted, sync.synced().await))
    }

    /// The engine this store talks to.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The schema versions applied to the database and known to this binary.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn schema_status(&self) -> Result<SchemaStatus, StoreError> {
        let exists: i64 = match self.engine {
            Engine::Sqlite => sqlx::query_scalar(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            )
            .fetch_one(&self.pool)
            .await?,
            Engine::Postgres => sqlx::query_scalar(
                "SELECT count(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'",
            )
            .fetch_one(&self.pool)
            .await?,
        };
        let applied = if exists > 0 {
            sqlx::query_scalar(
                "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
            )
            .fetch_all(&self.pool)
            .await?
        } else {
            Vec::new()
        };
        Ok(SchemaStatus {
            engine: self.engine,
            applied,
            known: self.engine.migrator().iter().map(|m| m.version).collect(),
        })
    }

    /// Applies pending migrations; returns the versions it applied.
    ///
    /// # Errors
    /// [`StoreError::SchemaTooNew`] when the database has a version this binary does not know
    /// (nothing is changed then); [`StoreError::Migration`]; [`StoreError::Database`].
    pub async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        let before = self.schema_status().await?;
        let binary = before.known.iter().copied().max().unwrap_or(0);
        if let Some(&database) = before.applied.iter().max() {
            if database > binary || before.applied.iter().any(|v| !before.known.contains(v)) {
                return Err(StoreError::SchemaTooNew { database, binary });
            }
        }
        let pending = before.pending();
        if !pending.is_empty() {
            self.engine.migrator().run(&self.pool).await?;
            // sqlx's migrator commits on the pool, outside the store's writes.
            self.written().await?;
        }
        Ok(pending)
    }

    /// Checks the database answers a trivial query (for readiness probes).
    ///
    /// # Errors
    /// [`StoreError::Database`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let one: i64 = sqlx::query_scalar("SELECT CAST(1 AS BIGINT)")
            .fetch_one(&self.pool)
            .await?;
        debug_assert_eq!(one, 1);
        Ok(())
    }

    /// Closes every connection of this store (and of its clones); later queries fail.
    pub async fn close(&self) {
        self.pool.close().await;
        self.batches.close().await;
    }

    /// Reads a metadata value.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// A 32-byte secret named `name`, created at random the first time any process asks and
    /// the same for every process on this database afterwards (stored hex-encoded in `meta`).
    /// Replicas use it for what must verify across them (the approval page's CSRF tokens).
    ///
    /// # Errors
    /// [`StoreError::Database`]; [`StoreError::Json`] when the stored value is not 64 hex
    /// digits.
    pub async fn shared_secret(&self, name: &str) -> Result<[u8; 32], StoreError> {
        let key = format!("secret:{name}");
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(&key)
            .bind(hex::encode(rand::random::<[u8; 32]>()))
            .write_on(self)
            .await?;
        let stored = self.meta(&key).await?.unwrap_or_default();
        let mut secret = [0u8; 32];
        hex::decode_to_slice(&stored, &mut secret).map_err(|e| {
            StoreError::Json(serde::de::Error::custom(format!(
                "meta {key:?} is not 64 hex digits: {e}"
            )))
        })?;
        Ok(secret)
    }

    /// Writes a metadata value.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .write_on(self)
            .await?;
        Ok(())
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The audit appends waiting for their group commit.
    pub(crate) fn audit_queue(&self) -> &audit::AuditQueue {
        &self.audit
    }

    /// Begins a transaction that will write rows it first reads: `BEGIN IMMEDIATE` on SQLite
    /// (the write lock up front, so two processes cannot both read-then-write); a plain
    /// transaction on PostgreSQL, where the reads take row locks ([`Store::for_update`]).
    ///
    /// On SQLite the process's writers first take turns in order ([`Store::write_turn`]), so
    /// they never meet inside SQLite's busy handler, which retries by sleeping (up to 100 ms a
    /// time) and under load left writers asleep while the lock was free (docs/performance.md).
    /// Other processes on the file still wait in the busy handler (`busy_timeout`).
    pub(crate) async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let turn = self.write_turn().await;
        self.begin_on_turn(turn).await
    }

    /// [`Store::begin_write`] whose transaction PostgreSQL begins with `begin`, a simple query
    /// (no parameters) that starts with `BEGIN` and may go on with more statements, all in one
    /// round trip (sqlx's `begin_with`; a `begin` that leaves no transaction open fails with
    /// `sqlx::Error::BeginFailed`). On SQLite `begin` is not sent: the transaction is the
    /// write turn's shared one, as for [`Store::begin_write`].
    ///
    /// # Errors
    /// As [`Store::begin_write`], and the database's error for a statement of `begin`.
    pub(crate) async fn begin_write_with(
        &self,
        begin: &'static str,
    ) -> Result<WriteTx, sqlx::Error> {
        match self.write_turn().await {
            Some(turn) => self.begin_on_turn(Some(turn)).await,
            None => Ok(WithTurn {
                conn: TxConn::Own(self.pool.begin_with(begin).await?),
                wal_sync: self.wal_sync.clone(),
            }),
        }
    }

    /// [`Store::begin_write`], giving up (`Ok(None)`, nothing begun) when this process's
    /// write turn has not come by `deadline` (SQLite; PostgreSQL has no turn to wait for).
    ///
    /// # Errors
    /// As [`Store::begin_write`].
    pub(crate) async fn begin_write_until(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<Option<WriteTx>, sqlx::Error> {
        let Ok(turn) = tokio::time::timeout_at(deadline, self.write_turn()).await else {
            return Ok(None);
        };
        self.begin_on_turn(turn).await.map(Some)
    }

    async fn begin_on_turn(&self, turn: Option<batch::Turn>) -> Result<WriteTx, sqlx::Error> {
        let conn = match turn {
            Some(turn) => TxConn::Shared(self.batches.join(turn, &self.pool).await?),
            None => TxConn::Own(self.pool.begin().await?),
        };
        Ok(WithTurn {
            conn,
            wal_sync: self.wal_sync.clone(),
        })
    }

    /// A connection for single write statements (`INSERT`, `UPDATE`, `DELETE`, with
    /// `RETURNING`), holding this process's turn at SQLite's writer connection (in the shared
    /// write transaction, batch.rs) until [`WriteConn::written`]:
    /// `let mut conn = store.write_conn().await?; ... .fetch_one(&mut *conn).await?;
    /// conn.written().await?;` before anything relies on the write (on PostgreSQL the
    /// statements are autocommit). [`WriteStatement::write_on`] does it for `execute`. Nothing
    /// that writes may be awaited while it is held (the turn is not re-entrant).
    pub(crate) async fn write_conn(&self) -> Result<WriteConn, sqlx::Error> {
        let conn = match self.write_turn().await {
            Some(turn) => SoloConn::Writer(self.batches.solo(turn, &self.pool).await?),
            None => SoloConn::Pooled(self.pool.acquire().await?),
        };
        Ok(WithTurn {
            conn,
            wal_sync: self.wal_sync.clone(),
        })
    }

    /// This process's turn at SQLite's writer connection (FIFO); none on PostgreSQL, whose
    /// row locks let writers of different rows proceed together.
    async fn write_turn(&self) -> Option<batch::Turn> {
        match self.engine {
            Engine::Sqlite => Some(self.batches.turn().await),
            Engine::Postgres => None,
        }
    }

    /// The row-locking suffix of a `SELECT` inside [`Store::begin_write`]: ` FOR UPDATE` on
    /// PostgreSQL, nothing on SQLite (whose write transaction already excludes other writers).
    pub(crate) fn for_update(&self) -> &'static str {
        match self.engine {
            Engine::Sqlite => "",
            Engine::Postgres => " FOR UPDATE",
        }
    }
}

/// Reads a boolean column: PostgreSQL stores `BOOLEAN`, SQLite `INTEGER` 0/1.
pub(crate) fn get_bool(row: &AnyRow, column: &str) -> Result<Option<bool>, sqlx::Error> {
    match row.try_get::<Option<bool>, _>(column) {
        Ok(value) => Ok(value),
        Err(_) => Ok(row.try_get::<Option<i64>, _>(column)?.map(|v| v != 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;
    use std::time::{Duration, Instant};

    /// (commits noted, commits known durable) of a file store's group fsync.
    async fn durability(store: &Store) -> (u64, u64) {
        store
            .durability()
            .await
            .expect("a SQLite file has a WAL to sync")
    }

    #[tokio::test]
    async fn migrations_are_durable_before_open_returns() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("paywarden.db")).await.unwrap();
        let (noted, synced) = durability(&store).await;
        assert!(noted >= 1, "the migrations waited for an fsync");
        assert!(synced >= noted);
    }

    #[tokio::test]
    async fn every_kind_of_write_returns_only_after_the_wal_fsync_that_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("paywarden.db")).await.unwrap();
        // Commits no longer fsync in SQLite (paywarden's group fsync does), in WAL mode.
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(synchronous, 1, "synchronous = NORMAL");
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal");

        // An autocommit statement (WriteStatement::write_on).
        let (before, _) = durability(&store).await;
        store.set_meta("k", "v").await.unwrap();
        let (noted, synced) = durability(&store).await;
        assert_eq!(noted, before + 1, "the write noted its commit");
        assert!(
            synced >= noted,
            "answered before its fsync: {synced} < {noted}"
        );

        // The audit chain's group commit (WriteTx::commit_unsynced, then Store::written once
        // for the group).
        store
            .append_audit(&audit_entry("get_transaction"))
            .await
            .unwrap();
        let (after_audit, synced) = durability(&store).await;
        assert_eq!(after_audit, noted + 1);
        assert!(synced >= after_audit);

        // A write transaction of its own (WriteTx::commit): a cumulative-limit reservation.
        store.reserve_limit("e", "EUR", 100, None).await.unwrap();
        let (after_reserve, synced) = durability(&store).await;
        assert_eq!(after_reserve, after_audit + 1);
        assert!(synced >= after_reserve);
        let after_audit = after_reserve;

        // A statement that returns rows (`fetch_*` on Store::write_conn, then Store::written).
        store
            .record_provider_event(&NewProviderEvent {
                provider: "stripe".into(),
                event_id: "evt_1".into(),
                entity_id: "e".into(),
                payment_id: None,
                event_type: "refund.updated".into(),
                object_id: None,
                status: None,
                amount_minor: None,
                currency: None,
                outcome: "applied".into(),
                summary: serde_json::json!({}),
            })
            .await
            .unwrap();
        let (after_event, synced) = durability(&store).await;
        assert_eq!(after_event, after_audit + 1);
        assert!(synced >= after_event);

        // Concurrent writers share fsyncs, and every one of them is covered.
        let writes = (0..32).map(|i| {
            let store = store.clone();
            async move { store.set_meta(&format!("k{i}"), "v").await }
        });
        for done in futures::future::join_all(writes).await {
            done.unwrap();
        }
        let (end, synced) = durability(&store).await;
        assert_eq!(end, after_event + 32);
        assert!(synced >= end);
    }

    /// An audit entry for the group-commit tests (and pg_ping_tests).
    pub(super) fn audit_entry(tool: &str) -> AuditEntry {
        AuditEntry {
            entity_id: "e".into(),
            client_name: None,
            toolset: "opp".into(),
            tool: tool.into(),
            arguments: serde_json::json!({}),
            outcome: "ok".into(),
            result_code: None,
            provider_request_id: None,
            transaction_id: None,
            message: None,
            duration_ms: 1,
            sandbox: true,
        }
    }

    /// Committed audit rows, read on another connection.
    async fn audit_rows(store: &Store) -> i64 {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM audit_log")
            .fetch_one(store.pool())
            .await
            .unwrap()
    }

    /// Waits (up to 10 s) until `done` holds.
    async fn eventually<F, Fut>(what: &str, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done().await {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A store on a new SQLite file, its directory (removed when dropped) and its group fsync.
    async fn file_store() -> (
        tempfile::TempDir,
        Store,
        std::sync::Arc<durability::WalSync>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("paywarden.db")).await.unwrap();
        let sync = store
            .wal_sync
            .clone()
            .expect("a SQLite file has a WAL to sync");
        (dir, store, sync)
    }

    fn spawn_append(store: &Store, tool: &str) -> tokio::task::JoinHandle<Result<i64, StoreError>> {
        let (store, entry) = (store.clone(), audit_entry(tool));
        tokio::spawn(async move { store.append_audit(&entry).await })
    }

    #[tokio::test]
    async fn the_next_audit_group_is_committed_while_the_last_waits_for_its_fsync() {
        let (_dir, store, sync) = file_store().await;
        let noted_before = sync.noted();
        let (started, release) = sync.pause_fsyncs();
        // Waits until a paused fsync has started (it has read which commits it covers).
        let fsync_started = |started: std::sync::mpsc::Receiver<()>| async move {
            tokio::task::spawn_blocking(move || {
                started
                    .recv_timeout(Duration::from_secs(10))
                    .expect("an fsync started");
                started
            })
            .await
            .unwrap()
        };
        let first = spawn_append(&store, "first");
        // The first group is committed, and its fsync has started (and waits).
        let started = fsync_started(started).await;
        // The second group commits while the first one's fsync runs...
        let second = spawn_append(&store, "second");
        eventually(
            "the second append waited for the first group's fsync before committing",
            || async { audit_rows(&store).await == 2 && sync.noted() == noted_before + 2 },
        )
        .await;
        assert!(!first.is_finished(), "answered before its fsync");
        assert!(!second.is_finished(), "answered before its fsync");
        // ...and the first fsync, which started before the second commit, answers only the
        // first append.
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        let _started = fsync_started(started).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !second.is_finished(),
            "the second append was answered by an fsync that started before its commit"
        );
        release.send(()).unwrap();
        assert_eq!(second.await.unwrap().unwrap(), 2, "one chain, in order");
        let (noted, synced) = durability(&store).await;
        assert!(
            synced >= noted,
            "answered before the fsync: {synced} < {noted}"
        );
        assert!(store.verify_audit().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn more_appends_than_a_group_are_all_committed_and_answered_only_once_durable() {
        let (_dir, store, sync) = file_store().await;
        let held = sync.hold_fsyncs().await;
        let appends: Vec<_> = (0..300)
            .map(|i| spawn_append(&store, &format!("t{i}")))
            .collect();
        let noted_before = sync.noted();
        // More than one group (256 at most): all are committed while the fsync is held back,
        // and at least two groups wait for it.
        eventually("not every append was committed", || async {
            audit_rows(&store).await == 300
        })
        .await;
        eventually("fewer than two groups wait for the fsync", || async {
            sync.noted() >= noted_before + 2
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            appends.iter().all(|a| !a.is_finished()),
            "an append was answered before any fsync"
        );
        drop(held);
        let mut seqs = Vec::new();
        for append in appends {
            seqs.push(append.await.unwrap().unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=300).collect::<Vec<i64>>(),
            "each caller its own seq"
        );
        assert!(store.verify_audit().await.unwrap().is_none());
    }

    /// An audit entry whose every column holds a value of its own (`i`), none of them NULL.
    fn varied_audit_entry(i: i64) -> AuditEntry {
        AuditEntry {
            entity_id: format!("entity-{i}"),
            client_name: Some(format!("client-{i}")),
            toolset: format!("toolset-{i}"),
            tool: format!("tool-{i}"),
            arguments: serde_json::json!({ "i": i }),
            outcome: format!("outcome-{i}"),
            result_code: Some(format!("000.{i:03}.000")),
            provider_request_id: Some(format!("request-{i}")),
            transaction_id: Some(format!("transaction-{i}")),
            message: Some(format!("message {i}")),
            duration_ms: 1_000 + i,
            sandbox: i % 2 == 0,
        }
    }

    #[tokio::test]
    async fn sqlite_audit_inserts_cannot_abort_partway_so_keep_no_statement_journal() {
        // SQLite keeps a statement journal (a copy of every page before the statement first
        // changes it) for a statement that writes several rows and may abort partway: one with a
        // constraint check resolved by ABORT, or a function call (`sqlite3MayAbort`). EXPLAIN
        // shows a constraint check as a `Halt`/`HaltIfNull` with a constraint error code (P1) and
        // its resolution in P2 (OE_Rollback 1, OE_Abort 2, OE_Fail 3). Plain `INSERT` fails
        // here: the `seq` key's uniqueness and each NOT NULL column are checked with ABORT.
        let (_dir, store, _sync) = file_store().await;
        for (n, sql) in audit::insert_statements(Engine::Sqlite) {
            let explain_sql = format!("EXPLAIN {sql}");
            let mut explain = sqlx::query(&explain_sql);
            for _ in 0..n * 16 {
                explain = explain.bind(None::<String>);
            }
            let program = explain.fetch_all(store.pool()).await.unwrap();
            let mut checks = 0;
            for op in &program {
                let opcode: String = op.try_get("opcode").unwrap();
                let p1: i64 = op.try_get("p1").unwrap();
                let p2: i64 = op.try_get("p2").unwrap();
                assert!(
                    !opcode.contains("Function"),
                    "the {n}-row audit insert calls a function: {opcode}"
                );
                if matches!(opcode.as_str(), "Halt" | "HaltIfNull") && p1 != 0 {
                    checks += 1;
                    assert_ne!(
                        p2, 2,
                        "the {n}-row audit insert has a constraint check that aborts the statement ({opcode} {p1} {p2})"
                    );
                }
            }
            assert!(
                checks > 0,
                "the {n}-row audit insert's constraint checks are in its program"
            );
        }
    }

    #[tokio::test]
    async fn every_column_of_every_row_of_a_group_is_stored_where_it_belongs() {
        let (_dir, store, sync) = file_store().await;
        // Groups form while the fsync is held: the multi-row INSERTs of 64, 16, 4 and 1 rows.
        let held = sync.hold_fsyncs().await;
        let appends: Vec<_> = (0..150)
            .map(|i| {
                let store = store.clone();
                let entry = varied_audit_entry(i);
                tokio::spawn(async move { (store.append_audit(&entry).await, entry) })
            })
            .collect();
        eventually("not every append was committed", || async {
            audit_rows(&store).await == 150
        })
        .await;
        drop(held);
        let records: std::collections::HashMap<i64, AuditRecord> = store
            .audit_records(None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.seq, r))
            .collect();
        for append in appends {
            let (seq, entry) = append.await.unwrap();
            let record = &records[&seq.unwrap()];
            assert_eq!(
                record.entry,
                crate::mask::audit_entry(&entry),
                "row {}",
                record.seq
            );
        }
        assert!(store.verify_audit().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_append_whose_caller_is_gone_is_still_written_while_a_group_waits_for_its_fsync() {
        use futures::FutureExt;
        let (_dir, store, sync) = file_store().await;
        let held = sync.hold_fsyncs().await;
        let first = spawn_append(&store, "first");
        eventually("the first append was never committed", || async {
            audit_rows(&store).await == 1
        })
        .await;
        // A caller polled once, then dropped (a cancelled request).
        assert!(store
            .append_audit(&audit_entry("abandoned"))
            .now_or_never()
            .is_none());
        eventually("the abandoned caller's row was never written", || async {
            audit_rows(&store).await == 2
        })
        .await;
        drop(held);
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert!(store.verify_audit().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_cancelled_append_is_written_before_the_shutdown_drain_returns() {
        use futures::FutureExt;
        let (_dir, store, _sync) = file_store().await;
        // A caller polled once, then dropped (a call cancelled by the shutdown).
        assert!(store
            .append_audit(&audit_entry("cancelled"))
            .now_or_never()
            .is_none());
        store.drain_audit().await;
        assert_eq!(
            audit_rows(&store).await,
            1,
            "the drain returned before the row was written"
        );
        // The store takes appends again after a drain.
        assert_eq!(store.append_audit(&audit_entry("after")).await.unwrap(), 2);
    }

    #[test]
    fn appends_still_work_after_a_runtime_was_shut_down_in_the_middle_of_a_group() {
        let dir = tempfile::tempdir().unwrap();
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = first
            .block_on(Store::open(&dir.path().join("paywarden.db")))
            .unwrap();
        first.block_on(async {
            // The writer takes the first append and waits for the write turn (held here);
            // the second append waits in the queue behind it.
            let turn = store.batches.turn().await;
            for tool in ["first", "second"] {
                let (store, entry) = (store.clone(), audit_entry(tool));
                tokio::spawn(async move { store.append_audit(&entry).await });
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(store.audit_queue().status(), (true, 1));
            drop(turn);
        });
        // The runtime goes away with the writer in the middle of its group.
        drop(first);
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        second.block_on(async {
            let appended = tokio::time::timeout(
                Duration::from_secs(10),
                store.append_audit(&audit_entry("third")),
            )
            .await
            .expect("an append waited forever for a writer that is gone");
            appended.unwrap();
            assert!(store.verify_audit().await.unwrap().is_none());
        });
    }

    #[test]
    fn no_write_of_the_store_skips_the_wal_fsync() {
        // Every write goes through WriteTx::commit, WriteStatement::write_on, or a
        // Store::write_conn statement followed by WriteConn::written: a write_conn use without
        // `written()` in the next lines would answer before its commit and its fsync.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == "mod.rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = source.lines().collect();
            for (n, line) in lines.iter().enumerate() {
                let code = line.trim_start();
                if code.starts_with("//") || !code.contains("write_conn()") {
                    continue;
                }
                checked += 1;
                let next = lines[n..(n + 4).min(lines.len())].join("\n");
                assert!(
                    next.contains(".written().await"),
                    "{}:{}: a write on Store::write_conn without Store::written after it",
                    path.display(),
                    n + 1
                );
            }
            if path.file_name().is_none_or(|n| n != "audit.rs") {
                for (n, line) in lines.iter().enumerate() {
                    assert!(
                        !line.contains(".commit_unsynced("),
                        "{}:{}: only the audit group commit waits for the fsync itself",
                        path.display(),
                        n + 1
                    );
                }
            }
        }
        assert!(
            checked >= 2,
            "the check found the write_conn uses it is about"
        );
    }

    #[test]
    fn sqlite_migrations_keep_the_checksums_of_databases_made_before_the_move() {
        // SHA-384 of migrations/000N_*.sql as they were before they moved to migrations/sqlite
        // (0001-0004 by the PostgreSQL work, 0005 as the ifthenpay toolset added it):
        // databases created then must keep opening.
        let before = [
            "6bf1bb71cbefcef1194dff6e7b1c05b08b492fec4dd7915fe0dad0668fbe1d5d883f559afc332c95a060a38a5b98dbba",
            "fce70b18923f2f32c2751094e560e7b695afa5b644cb4e1c207b4bcc7bbfcd8c41ee54f68cb2a931eea68c275d572bc7",
            "a9e01e9bdc124141441b52ae2ae3a88500976d81865d5acedf853d27e176e3578061727086b4c11d4ba2e0f5e8c504cd",
            "f3b9601c53adf43032de7a7a5df72fc916b29024f3f74d6a54708fdf5b9028fb3d7a7f53b48193eb4aa77409286cb6e7",
            "7e09a3f071306d2c6ceae3e736deca3d39d3badbed9d39199ccb413ab1a60caf8981ae608941531f74364b5e2dbf1558",
        ];
        let now: Vec<(i64, String)> = SQLITE_MIGRATIONS
            .iter()
            .map(|m| (m.version, hex::encode(&m.checksum)))
            .collect();
        // Later migrations are added after these, never in their place, and versions run
        // 1, 2, 3, ... without a gap.
        assert!(now.len() >= before.len());
        assert!(now.iter().zip(1..).all(|((v, _), expected)| *v == expected));
        for ((version, checksum), (expected_version, old)) in now.iter().zip((1..).zip(before)) {
            assert_eq!(*version, expected_version);
            assert_eq!(checksum, old, "migration {version} changed");
        }
        for (version, expected) in now.iter().map(|(v, _)| *v).zip(1..) {
            assert_eq!(version, expected);
        }
        // Both engines know the same versions.
        let pg: Vec<i64> = POSTGRES_MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(pg, now.iter().map(|(v, _)| *v).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn an_sqlite_database_made_before_the_any_driver_opens_and_keeps_its_data() {
        // What the SQLite-only paywarden did: SqlitePool, the same migration files (then in
        // migrations/), a row written.
        use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paywarden.db");
        let old = SqlitePool::connect_with(
            SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
        let legacy = Migrator::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite"))
            .await
            .unwrap();
        legacy.run(&old).await.unwrap();
        sqlx::query("INSERT INTO meta (key, value) VALUES ('k', 'v')")
            .execute(&old)
            .await
            .unwrap();
        old.close().await;

        let store = Store::open(&path).await.unwrap();
        assert_eq!(store.meta("k").await.unwrap().as_deref(), Some("v"));
        let status = store.schema_status().await.unwrap();
        assert_eq!(status.applied, status.known);
        assert!(status.pending().is_empty());
    }

    /// Voluntary context switches so far of this process's threads named `name` (Linux).
    #[cfg(target_os = "linux")]
    pub(super) fn voluntary_switches(name: &str) -> u64 {
        let mut total = 0;
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            total += status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
        total
    }

    /// [`named_sqlite_connection`] in WAL mode (paywarden's journal mode).
    async fn wal_connection(
        dir: &Path,
        file: &str,
        worker: &'static str,
    ) -> sqlx::SqliteConnection {
        let mut conn = named_sqlite_connection(dir, file, worker).await;
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    }

    /// The checks after a statement met another connection's lock, held for 300 ms with one
    /// row written: it waited for the lock (250 ms or more), it sees the row (`rows` = 1),
    /// and `conn`'s busy timeout is still the 7000 ms the test set.
    async fn assert_waited_for_the_lock(
        conn: &mut sqlx::SqliteConnection,
        waited: Duration,
        rows: i64,
    ) {
        assert!(
            waited >= Duration::from_millis(250),
            "it answered after {waited:?}, while the lock was held"
        );
        assert_eq!(rows, 1, "it sees the other connection's commit");
        let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(conn)
            .await
            .unwrap();
        assert_eq!(timeout, 7000, "the busy timeout is put back");
    }

    /// Creates the tests' table `t (v INTEGER)`.
    async fn create_table_t(conn: &mut sqlx::SqliteConnection) {
        sqlx::query("CREATE TABLE t (v INTEGER)")
            .execute(conn)
            .await
            .unwrap();
    }

    /// A connection of its own to a new SQLite file `file` in `dir`, its worker thread named
    /// `worker` (so that [`voluntary_switches`] can count that thread's wake-ups).
    async fn named_sqlite_connection(
        dir: &Path,
        file: &str,
        worker: &'static str,
    ) -> sqlx::SqliteConnection {
        use sqlx::ConnectOptions;
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.join(file))
            .create_if_missing(true)
            .inline_read_budget(Some(Duration::from_micros(INLINE_READ_BUDGET_US)))
            .thread_name(move |_| worker.to_string())
            .connect()
            .await
            .unwrap()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn rows_read_on_the_callers_thread_are_the_rows_the_worker_gives_the_any_driver() {
        // vendor/sqlx-sqlite.patch ("Rows read once"): a query the `Any` driver runs on the
        // caller's thread reads its rows straight into `AnyRow`s; on the worker each row is a
        // `SqliteRow` converted by sqlx's `AnyRow::try_from`. Both must give the same columns,
        // the same values and the same errors, for every storage class, `NULL` in columns of
        // every declared type, and text that is not UTF-8. The inline connection's worker must
        // not have run the queries (or both sides would be the worker's).
        use futures::TryStreamExt;
        use sqlx_core::any::AnyConnectionBackend;
        const INLINE: &str = "pw-anyrow-inline";
        let dir = tempfile::tempdir().unwrap();
        let mut inline = wal_connection(dir.path(), "rows.db", INLINE).await;
        sqlx::query(
            "CREATE TABLE v (i INTEGER, r REAL, t TEXT, b BLOB, n NUMERIC, u, flag BOOLEAN, d DATETIME); \
             INSERT INTO v VALUES (1, 1.5, 'a', x'00ff', 10, 'x', 1, '2026-12-07'); \
             INSERT INTO v VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL); \
             INSERT INTO v VALUES (9223372036854775807, -0.0, '', x'', 2.5, 3, 0, NULL); \
             INSERT INTO v VALUES ('text', 'r', 7, 'blob as text', 'n', x'01', NULL, 5)",
        )
        .execute(&mut inline)
        .await
        .unwrap();
        let mut worker = {
            use sqlx::ConnectOptions;
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(dir.path().join("rows.db"))
                .inline_read_budget(None)
                .connect()
                .await
                .unwrap()
        };
        let queries = [
            "SELECT i, r, t, b, n, u FROM v ORDER BY rowid",
            "SELECT i FROM v WHERE i IS NULL",
            "SELECT flag FROM v ORDER BY rowid",
            "SELECT d FROM v WHERE d IS NULL",
            "SELECT 1 + 1 AS two, NULL AS none_here, 0.25 AS quarter, 'é' AS text, x'' AS empty",
            "SELECT CAST(x'ff' AS TEXT) AS not_utf8",
            "SELECT count(*) AS c, max(t) AS m FROM v",
            "SELECT i FROM v WHERE i > 1e30",
        ];
        async fn read(conn: &mut sqlx::SqliteConnection, sql: &str) -> Result<Vec<String>, String> {
            AnyConnectionBackend::fetch_many(conn, sql, false, None)
                .try_filter_map(|r| async move {
                    Ok(r.right()
                        .map(|row| format!("{:?} {:?}", row.columns, row.values)))
                })
                .try_collect()
                .await
                .map_err(|e| e.to_string())
        }
        let pause = || tokio::time::sleep(std::time::Duration::from_millis(1));
        let mut switches = 0;
        let mut answered = 0;
        for _ in 0..10 {
            for sql in queries {
                pause().await;
                let before = voluntary_switches(INLINE);
                let here = read(&mut inline, sql).await;
                pause().await;
                switches += voluntary_switches(INLINE) - before;
                let there = read(&mut worker, sql).await;
                assert_eq!(here, there, "{sql}");
                answered += usize::from(here.is_ok());
            }
        }
        // Three fail on both sides, 10 times each: the declared types sqlx's `Any` driver does
        // not convert (`BOOLEAN`, `DATETIME`) and the text that is not UTF-8.
        assert_eq!(answered, 50, "of 80 queries");
        assert!(
            switches < 40,
            "80 queries woke the inline connection's worker {switches} times"
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn an_idle_connection_is_pinged_without_waking_its_worker() {
        // vendor/sqlx-sqlite.patch: sqlx pings every connection that returns to the pool, and
        // sqlx-sqlite's ping was a round trip through the connection's worker thread. With the
        // patch, the ping of an idle worker (every command finished, no transaction open) does
        // not wake it. Its thread is named here so that its context switches can be counted
        // (one per wake-up: it sleeps on its command channel in between).
        const WORKER: &str = "pw-ping-idle";
        let dir = tempfile::tempdir().unwrap();
        let mut conn = named_sqlite_connection(dir.path(), "ping.db", WORKER).await;
        create_table_t(&mut conn).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;

        // A pause after each call, so that a worker it woke has gone back to sleep (and
        // counted a switch) before the next one, on a loaded machine too.
        let pause = || tokio::time::sleep(std::time::Duration::from_millis(1));
        let before = voluntary_switches(WORKER);
        for _ in 0..200 {
            conn.ping().await.unwrap();
            pause().await;
        }
        let pinged = voluntary_switches(WORKER) - before;
        assert!(
            pinged < 20,
            "200 pings woke the idle worker {pinged} times (sqlx-sqlite without vendor/sqlx-sqlite.patch?)"
        );
        // The count sees wake-ups: 50 statements the worker runs (writes outside a
        // transaction) wake it about 50 times.
        let before = voluntary_switches(WORKER);
        for _ in 0..50 {
            sqlx::query("INSERT INTO t VALUES (1)")
                .execute(&mut conn)
                .await
                .unwrap();
            pause().await;
        }
        let ran = voluntary_switches(WORKER) - before;
        assert!(ran >= 40, "50 statements woke the worker only {ran} times");
        conn.close().await.unwrap();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_write_transaction_runs_without_waking_the_worker() {
        // vendor/sqlx-sqlite.patch: every statement, BEGIN and COMMIT went to the connection's
        // worker thread and back: a wake-up of the worker and one of the caller each, while
        // SQLite's write lock was held. With the patch, a `BEGIN IMMEDIATE` that finds the
        // lock free, the statements of a transaction holding it, and its `COMMIT` run on the
        // caller's thread. 50 transactions of 5 steps each: 250 round trips without the patch.
        const WORKER: &str = "pw-write-inline";
        let dir = tempfile::tempdir().unwrap();
        let mut conn = wal_connection(dir.path(), "begin.db", WORKER).await;
        create_table_t(&mut conn).await;
        let pause = || tokio::time::sleep(std::time::Duration::from_millis(1));
        let before = voluntary_switches(WORKER);
        for i in 0..50 {
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
            pause().await;
            sqlx::query("INSERT INTO t VALUES ($1)")
                .bind(i)
                .execute(&mut *tx)
                .await
                .unwrap();
            let rows: Vec<i64> = sqlx::query_scalar("SELECT v FROM t ORDER BY v")
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            assert_eq!(rows, (0..=i).collect::<Vec<_>>());
            let last: Option<i64> = sqlx::query_scalar("SELECT max(v) FROM t")
                .fetch_optional(&mut *tx)
                .await
                .unwrap();
            assert_eq!(last, Some(i));
            pause().await;
            tx.commit().await.unwrap();
            pause().await;
        }
        let inline = voluntary_switches(WORKER) - before;
        assert!(
            inline < 25,
            "50 write transactions woke the worker {inline} times (sqlx-sqlite without vendor/sqlx-sqlite.patch?)"
        );
        // The count sees wake-ups: writes outside a transaction still go to the worker, 50 of
        // them about 50 times.
        let before = voluntary_switches(WORKER);
        for _ in 0..50 {
            sqlx::query("INSERT INTO t VALUES (-1)")
                .execute(&mut conn)
                .await
                .unwrap();
            pause().await;
        }
        let through_worker = voluntary_switches(WORKER) - before;
        assert!(
            through_worker >= 40,
            "50 statements woke the worker only {through_worker} times"
        );
        conn.close().await.unwrap();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn statements_that_could_wait_for_a_lock_still_go_to_the_worker() {
        // The statements of a write transaction run on the caller's thread only where no lock
        // can make them wait: in WAL mode, with no other database attached. In rollback-journal
        // mode a statement may spill the cache and wait for readers; a statement may write to
        // an attached database whose lock the transaction does not hold. Both go to the worker
        // (and a first result that is not a row is still `None` for `fetch_optional` on both
        // paths).
        let dir = tempfile::tempdir().unwrap();
        for (worker, wal, attach) in [
            ("pw-wait-journal", false, false),
            ("pw-wait-attach", true, true),
        ] {
            let mut conn =
                named_sqlite_connection(dir.path(), &format!("{worker}.db"), worker).await;
            if wal {
                sqlx::query("PRAGMA journal_mode = WAL")
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            if attach {
                sqlx::query(&format!(
                    "ATTACH DATABASE '{}' AS aux",
                    dir.path().join("aux.db").display()
                ))
                .execute(&mut conn)
                .await
                .unwrap();
            }
            create_table_t(&mut conn).await;
            let pause = || tokio::time::sleep(std::time::Duration::from_millis(1));
            let before = voluntary_switches(worker);
            for i in 0..50 {
                let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
                sqlx::query("INSERT INTO t VALUES ($1)")
                    .bind(i)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                pause().await;
                tx.commit().await.unwrap();
            }
            let switches = voluntary_switches(worker) - before;
            assert!(
                switches >= 40,
                "{worker}: 50 inserts woke the worker only {switches} times"
            );
            conn.close().await.unwrap();
        }
        // `fetch_optional` of a multi-statement query answers as sqlx-sqlite 0.8.6 does on the
        // worker, on the caller's thread too: the first row for a SQLite connection, the first
        // result (here the insert's, so no row) through the `Any` driver.
        let mut conn = wal_connection(dir.path(), "first.db", "pw-first-result").await;
        create_table_t(&mut conn).await;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let first: Option<i64> = sqlx::query_scalar("INSERT INTO t VALUES (1); SELECT v FROM t")
            .fetch_optional(&mut *tx)
            .await
            .unwrap();
        assert_eq!(first, Some(1));
        tx.rollback().await.unwrap();
        conn.close().await.unwrap();
        sqlx::any::install_default_drivers();
        let mut any = sqlx::AnyConnection::connect(&sqlite_url(&dir.path().join("first.db")))
            .await
            .unwrap();
        let mut tx = any.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let first = sqlx::query("INSERT INTO t VALUES (1); SELECT v FROM t")
            .fetch_optional(&mut *tx)
            .await
            .unwrap();
        assert!(
            first.is_none(),
            "the first result is the insert's, not a row"
        );
        tx.rollback().await.unwrap();
        any.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_begin_immediate_that_meets_another_writer_waits_for_it_on_the_worker() {
        // The patch runs `BEGIN IMMEDIATE` on the caller's thread with the busy handler off;
        // when another connection holds the write lock it must not fail (nor block the
        // caller's thread): the worker runs it and waits in the busy handler, as before. The
        // connection's busy timeout is the same afterwards.
        let dir = tempfile::tempdir().unwrap();
        let mut holder = wal_connection(dir.path(), "busy.db", "pw-busy-holder").await;
        let mut waiter = named_sqlite_connection(dir.path(), "busy.db", "pw-busy-waiter").await;
        create_table_t(&mut holder).await;
        sqlx::query("PRAGMA busy_timeout = 7000")
            .execute(&mut waiter)
            .await
            .unwrap();
        let mut held = holder.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *held)
            .await
            .unwrap();
        let started = Instant::now();
        let (began, ()) = tokio::join!(
            async {
                let mut tx = waiter.begin_with("BEGIN IMMEDIATE").await?;
                let waited = started.elapsed();
                let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO t VALUES (2)")
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>((waited, rows))
            },
            async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                held.commit().await.unwrap();
            }
        );
        let (waited, rows) =
            began.expect("the second writer waits for the lock instead of failing");
        assert_waited_for_the_lock(&mut waiter, waited, rows).await;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut holder)
            .await
            .unwrap();
        assert_eq!(total, 2);
        holder.close().await.unwrap();
        waiter.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_dropped_write_transaction_is_rolled_back_before_the_next_one_runs() {
        // A transaction dropped without commit queues its rollback on the worker; the next
        // transaction on the connection must not run on the caller's thread ahead of it
        // (the patch runs statements there only when every queued command has finished).
        let dir = tempfile::tempdir().unwrap();
        let mut conn = named_sqlite_connection(dir.path(), "drop.db", "pw-drop-tx").await;
        sqlx::query("CREATE TABLE t (v INTEGER UNIQUE)")
            .execute(&mut conn)
            .await
            .unwrap();
        for i in 0..20 {
            {
                let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
                sqlx::query("INSERT INTO t VALUES ($1)")
                    .bind(i)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                // Dropped here: its rollback goes to the worker.
            }
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            assert_eq!(
                rows, 0,
                "round {i}: the dropped transaction's insert is gone"
            );
            // A failing statement inside the transaction answers its error and leaves the
            // transaction usable.
            sqlx::query("INSERT INTO t VALUES (100)")
                .execute(&mut *tx)
                .await
                .unwrap();
            let duplicate = sqlx::query("INSERT INTO t VALUES (100)")
                .execute(&mut *tx)
                .await;
            assert!(
                matches!(duplicate, Err(sqlx::Error::Database(_))),
                "{duplicate:?}"
            );
            tx.rollback().await.unwrap();
        }
        conn.close().await.unwrap();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_query_outside_a_transaction_runs_without_waking_the_worker() {
        // vendor/sqlx-sqlite.patch: a query outside a transaction went to the connection's
        // worker thread and back (a wake-up of each). With the patch, and the budget the
        // store's pool URL sets (`sqlite_pool_url`), it runs on the caller's thread when the
        // worker is idle; without a budget (`inline_read_budget_us=0`, sqlx's default) it goes
        // to the worker as in sqlx-sqlite 0.8.6.
        use sqlx::ConnectOptions;
        use std::str::FromStr;
        let dir = tempfile::tempdir().unwrap();
        for (worker, budget) in [("pw-read-inline", None), ("pw-read-worker", Some(0))] {
            let mut url = sqlite_url(&dir.path().join(format!("{worker}.db")));
            if let Some(budget) = budget {
                url.push_str(&format!("&inline_read_budget_us={budget}"));
            }
            let mut conn = sqlx::sqlite::SqliteConnectOptions::from_str(&sqlite_pool_url(&url))
                .unwrap()
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .thread_name(move |_| worker.to_string())
                .connect()
                .await
                .unwrap();
            create_table_t(&mut conn).await;
            let pause = || tokio::time::sleep(std::time::Duration::from_millis(1));
            // Only the queries' wake-ups count: each round's write goes to the worker.
            let mut read_switches = 0;
            for i in 0..50_i64 {
                sqlx::query("INSERT INTO t VALUES ($1)")
                    .bind(i)
                    .execute(&mut conn)
                    .await
                    .unwrap();
                pause().await;
                let before = voluntary_switches(worker);
                let rows: Vec<i64> = sqlx::query_scalar("SELECT v FROM t WHERE v <= $1 ORDER BY v")
                    .bind(i)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                assert_eq!(rows, (0..=i).collect::<Vec<_>>());
                let last: Option<i64> =
                    sqlx::query_scalar("WITH m AS (SELECT max(v) AS v FROM t) SELECT v FROM m")
                        .fetch_optional(&mut conn)
                        .await
                        .unwrap();
                assert_eq!(last, Some(i));
                pause().await;
                read_switches += voluntary_switches(worker) - before;
            }
            if budget.is_none() {
                assert!(
                    read_switches < 25,
                    "100 queries woke the worker {read_switches} times (sqlx-sqlite without vendor/sqlx-sqlite.patch?)"
                );
            } else {
                assert!(
                    read_switches >= 80,
                    "100 queries on the worker woke it only {read_switches} times"
                );
            }
            conn.close().await.unwrap();
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_query_in_a_read_transaction_runs_without_waking_the_worker_and_reads_its_snapshot() {
        // vendor/sqlx-sqlite.patch: in a WAL transaction that has not written (the OPP
        // emulator's search: a count and a page that must agree) a query went to the worker
        // thread and back, although it cannot meet a lock once the transaction has its
        // snapshot. With the patch it runs on the caller's thread within the read budget, as a
        // query outside a transaction does; and it still reads the transaction's snapshot: a
        // row another connection commits between two queries of the transaction is not seen
        // by the second, whichever thread runs it.
        let dir = tempfile::tempdir().unwrap();
        for (worker, budget) in [("pw-rtx-inline", true), ("pw-rtx-worker", false)] {
            let file = format!("{worker}.db");
            let mut conn = if budget {
                wal_connection(dir.path(), &file, worker).await
            } else {
                use sqlx::ConnectOptions;
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.path().join(&file))
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .thread_name(move |_| worker.to_string())
                    .connect()
                    .await
                    .unwrap()
            };
            create_table_t(&mut conn).await;
            let mut writer = wal_connection(dir.path(), &file, "pw-rtx-writer").await;
            let pause = || tokio::time::sleep(std::time::Duration::from_millis(1));
            let mut switches = 0;
            for i in 0..50_i64 {
                sqlx::query("INSERT INTO t VALUES ($1)")
                    .bind(i)
                    .execute(&mut conn)
                    .await
                    .unwrap();
                pause().await;
                let before = voluntary_switches(worker);
                let mut tx = conn.begin().await.unwrap();
                let counted: i64 = sqlx::query_scalar("SELECT count(*) FROM t WHERE v < 1000")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
                assert_eq!(counted, i + 1);
                // Committed by another connection after the transaction took its snapshot.
                sqlx::query("INSERT INTO t VALUES ($1)")
                    .bind(1000 + i)
                    .execute(&mut writer)
                    .await
                    .unwrap();
                let rows: Vec<i64> = sqlx::query_scalar("SELECT v FROM t ORDER BY v")
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap();
                let snapshot: Vec<i64> = (0..=i).chain(1000..1000 + i).collect();
                assert_eq!(rows, snapshot, "round {i}: the transaction's snapshot");
                tx.commit().await.unwrap();
                pause().await;
                switches += voluntary_switches(worker) - before;
            }
            if budget {
                assert!(
                    switches < 25,
                    "100 queries in read transactions woke the worker {switches} times"
                );
            } else {
                assert!(
                    switches >= 80,
                    "100 queries in read transactions on the worker woke it only {switches} times"
                );
            }
            writer.close().await.unwrap();
            conn.close().await.unwrap();
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_query_past_its_budget_in_a_read_transaction_runs_on_the_worker_in_its_snapshot() {
        // A query of a read transaction that runs past its budget on the caller's thread is
        // interrupted there and run again on the worker: in the same transaction (SQLite rolls
        // nothing back for a read-only statement it interrupts), so it reads the snapshot the
        // transaction's first query took, not a row committed since.
        const WORKER: &str = "pw-rtx-long";
        let dir = tempfile::tempdir().unwrap();
        let mut conn = wal_connection(dir.path(), "rtx-long.db", WORKER).await;
        create_table_t(&mut conn).await;
        let mut writer = wal_connection(dir.path(), "rtx-long.db", "pw-rtx-long-writer").await;
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut conn)
            .await
            .unwrap();
        let mut tx = conn.begin().await.unwrap();
        let counted: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(counted, 1);
        sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut writer)
            .await
            .unwrap();
        let before = voluntary_switches(WORKER);
        let (count, rows): (i64, i64) = sqlx::query_as(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) \
             SELECT count(*), (SELECT count(*) FROM t) FROM c",
        )
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!((count, rows), (2_000_000, 1), "the transaction's snapshot");
        let deadline = Instant::now() + Duration::from_secs(10);
        while voluntary_switches(WORKER) <= before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            voluntary_switches(WORKER) > before,
            "the worker did not run the long query"
        );
        // A write in the read transaction goes to the worker and upgrades it to a writer: the
        // other connection's commit since the snapshot makes that a busy snapshot error, as in
        // sqlx-sqlite 0.8.6, and the transaction can still be rolled back.
        let write = sqlx::query("INSERT INTO t VALUES (3)")
            .execute(&mut *tx)
            .await;
        assert!(matches!(write, Err(sqlx::Error::Database(_))), "{write:?}");
        tx.rollback().await.unwrap();
        let rows: Vec<i64> = sqlx::query_scalar("SELECT v FROM t ORDER BY v")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(rows, vec![1, 2]);
        writer.close().await.unwrap();
        conn.close().await.unwrap();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "current_thread")]
    async fn a_query_past_its_budget_runs_on_the_worker_without_holding_the_callers_thread() {
        // A query outside a transaction runs on the caller's thread for at most its budget
        // (200 µs by default); one that takes longer is interrupted there and run again on
        // the worker. On this one-thread runtime a ticker keeps running while a query of
        // ~hundreds of milliseconds is answered (it would not tick at all if the query ran
        // on the runtime's thread), the answer is complete, and the worker ran it.
        const WORKER: &str = "pw-read-long";
        let dir = tempfile::tempdir().unwrap();
        let mut conn = wal_connection(dir.path(), "long.db", WORKER).await;
        sqlx::query("PRAGMA busy_timeout = 7000")
            .execute(&mut conn)
            .await
            .unwrap();
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        let before = voluntary_switches(WORKER);
        let started = Instant::now();
        let (count, sum): (i64, i64) = sqlx::query_as(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) \
             SELECT count(*), sum(x) FROM c",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let took = started.elapsed();
        assert_eq!((count, sum), (3_000_000, 3_000_000 * 3_000_001 / 2));
        let ticked = ticks.load(std::sync::atomic::Ordering::Relaxed);
        ticker.abort();
        // The worker sleeps on its command channel again after it sends the answer, and
        // only then counts a switch: on a loaded machine that may come after the caller has
        // read the answer, so wait for it (a worker that never ran the query never counts
        // one).
        let deadline = Instant::now() + Duration::from_secs(10);
        while voluntary_switches(WORKER) <= before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            voluntary_switches(WORKER) > before,
            "the worker did not run the long query"
        );
        // The ticker ticks every 2 ms while the query runs elsewhere; a query held on this
        // thread for `took` would let it tick at most once.
        assert!(
            ticked >= 3 && took >= Duration::from_millis(20),
            "the caller's thread was held: {ticked} ticks in {took:?}"
        );
        let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(timeout, 7000, "the busy timeout is put back");
        conn.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_query_that_meets_a_lock_waits_for_it_on_the_worker() {
        // In rollback-journal mode a reader meets a writer's lock: the query, run on the
        // caller's thread with the busy handler off, answers SQLITE_BUSY there; it must not
        // fail, but wait on the worker in the busy handler as in sqlx-sqlite 0.8.6, and see
        // the writer's commit. The busy timeout is the same afterwards.
        let dir = tempfile::tempdir().unwrap();
        let mut holder = named_sqlite_connection(dir.path(), "lock.db", "pw-lock-holder").await;
        let mut reader = named_sqlite_connection(dir.path(), "lock.db", "pw-lock-reader").await;
        create_table_t(&mut holder).await;
        sqlx::query("PRAGMA busy_timeout = 7000")
            .execute(&mut reader)
            .await
            .unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut reader)
            .await
            .unwrap();
        assert_eq!(rows, 0);
        let mut held = holder.begin_with("BEGIN EXCLUSIVE").await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *held)
            .await
            .unwrap();
        let started = Instant::now();
        let (read, ()) = tokio::join!(
            async {
                let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
                    .fetch_one(&mut reader)
                    .await?;
                Ok::<_, sqlx::Error>((started.elapsed(), rows))
            },
            async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                held.commit().await.unwrap();
            }
        );
        let (waited, rows) = read.expect("the query waits for the lock instead of failing");
        assert_waited_for_the_lock(&mut reader, waited, rows).await;
        holder.close().await.unwrap();
        reader.close().await.unwrap();
    }

    #[tokio::test]
    async fn statements_that_are_not_queries_run_once_and_only_on_the_worker() {
        // Only queries run on the caller's thread outside a transaction, since a query that
        // cannot finish there is run again on the worker. A multi-statement string with a
        // write, a `WITH ... INSERT`, and PRAGMAs that set something must run exactly once,
        // on both drivers; the answers are the same as on the worker.
        let dir = tempfile::tempdir().unwrap();
        let mut conn = wal_connection(dir.path(), "once.db", "pw-once").await;
        create_table_t(&mut conn).await;
        for i in 0..20_i64 {
            let counts: Vec<i64> = sqlx::query_scalar(
                "SELECT count(*) FROM t; INSERT INTO t VALUES (1); SELECT count(*) FROM t",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            assert_eq!(counts, vec![2 * i, 2 * i + 1], "round {i}");
            sqlx::query("WITH x(v) AS (VALUES (2)) INSERT INTO t SELECT v FROM x")
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(total, 40, "each write ran once");
        // A write between queries, before a query that runs past the budget (so the string is
        // run again on the worker): the write runs once. Twice, so that the second run finds
        // the statements the worker prepared in the statement cache.
        for round in 1..=2_i64 {
            let counts: Vec<i64> = sqlx::query_scalar(
                "SELECT 1; INSERT INTO t VALUES (5); \
                 WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) \
                 SELECT count(*) FROM c",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            assert_eq!(counts, vec![1, 300_000]);
            let fives: i64 = sqlx::query_scalar("SELECT count(*) FROM t WHERE v = 5")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert_eq!(fives, round, "round {round}: the insert ran once");
        }
        sqlx::query("PRAGMA busy_timeout = 4321")
            .execute(&mut conn)
            .await
            .unwrap();
        let _: Vec<i64> = sqlx::query_scalar("SELECT v FROM t LIMIT 3")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            timeout, 4321,
            "a PRAGMA that sets the busy timeout keeps it"
        );
        // A bad query answers its error, and the connection goes on.
        let bad = sqlx::query("SELECT no_such_column FROM t")
            .fetch_all(&mut conn)
            .await;
        assert!(
            matches!(bad, Err(sqlx::Error::Database(_))),
            "{:?}",
            bad.err()
        );
        conn.close().await.unwrap();
        sqlx::any::install_default_drivers();
        let mut any = sqlx::AnyConnection::connect(&sqlite_pool_url(&sqlite_url(
            &dir.path().join("once.db"),
        )))
        .await
        .unwrap();
        let rows = sqlx::query("SELECT count(*) FROM t; INSERT INTO t VALUES (3)")
            .fetch_all(&mut any)
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        let first: Option<i64> = sqlx::query_scalar("SELECT count(*) FROM t WHERE v = 3")
            .fetch_optional(&mut any)
            .await
            .unwrap();
        assert_eq!(first, Some(1), "the insert ran once through the Any driver");
        any.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_custom_begin_that_opens_no_transaction_fails_and_leaves_the_connection_usable() {
        // The check the patch moved into the worker: a custom statement that does not open a
        // transaction is `BeginFailed`, and the connection is left outside any transaction
        // (sqlx-sqlite 0.8.6 counted it as one, so the next custom BEGIN on the connection
        // was refused as a savepoint statement).
        let dir = tempfile::tempdir().unwrap();
        let mut conn = named_sqlite_connection(dir.path(), "begin.db", "pw-begin-fails").await;
        let failed = conn.begin_with("SELECT 1").await.map(|_| ());
        assert!(
            matches!(failed, Err(sqlx::Error::BeginFailed)),
            "{failed:?}"
        );
        create_table_t(&mut conn).await;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(rows, 0, "the rollback undid the insert");
        conn.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_custom_begin_that_fails_after_opening_a_transaction_leaves_none_open() {
        // vendor/sqlx-sqlite.patch: a custom statement that opened a transaction and then
        // failed was answered with its error and left the connection inside that transaction
        // (with the write lock, for BEGIN IMMEDIATE), counted as outside any; nothing ended it.
        let dir = tempfile::tempdir().unwrap();
        let mut conn = named_sqlite_connection(dir.path(), "begin.db", "pw-begin-bad").await;
        let failed = conn
            .begin_with("BEGIN IMMEDIATE; SELECT no_such_column")
            .await
            .map(|_| ());
        assert!(
            matches!(failed, Err(sqlx::Error::Database(_))),
            "{failed:?}"
        );
        // Another connection can take the write lock, and this one can begin again.
        let mut other = named_sqlite_connection(dir.path(), "begin.db", "pw-begin-other").await;
        sqlx::query("CREATE TABLE t (v INTEGER)")
            .execute(&mut other)
            .await
            .expect("the failed BEGIN IMMEDIATE still holds the write lock");
        let tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .expect("the connection is still inside the failed BEGIN's transaction");
        tx.rollback().await.unwrap();
        conn.close().await.unwrap();
        other.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_custom_begin_of_several_statements_that_meets_a_writer_runs_them_once() {
        // `sqlite3_exec` commits the statements before the one that answers busy: a custom
        // BEGIN of several statements must not be tried on the caller's thread (busy handler
        // off) and then run again on the worker. Here its first statement writes to the temp
        // database (no lock on the main one) and its `BEGIN IMMEDIATE` meets another writer.
        let dir = tempfile::tempdir().unwrap();
        let mut holder = wal_connection(dir.path(), "multi.db", "pw-multi-holder").await;
        let mut conn = named_sqlite_connection(dir.path(), "multi.db", "pw-multi-begin").await;
        create_table_t(&mut holder).await;
        sqlx::query("CREATE TEMP TABLE x (v INTEGER)")
            .execute(&mut conn)
            .await
            .unwrap();
        let held = holder.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let (began, ()) = tokio::join!(
            async {
                let tx = conn
                    .begin_with("INSERT INTO temp.x VALUES (1); BEGIN IMMEDIATE")
                    .await?;
                tx.rollback().await
            },
            async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                held.commit().await.unwrap();
            }
        );
        began.expect("the BEGIN waits for the other writer");
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM temp.x")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(rows, 1, "the statement before the BEGIN ran once");
        holder.close().await.unwrap();
        conn.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_custom_begin_inside_the_applications_own_transaction_leaves_it_open() {
        // A custom BEGIN on a connection inside a transaction the application opened with its
        // own SQL (which sqlx does not count) fails, as in sqlx-sqlite 0.8.6; the patch's
        // rollback of a failed custom BEGIN must not end that transaction and its writes.
        let dir = tempfile::tempdir().unwrap();
        let mut conn = wal_connection(dir.path(), "raw.db", "pw-raw-tx").await;
        create_table_t(&mut conn).await;
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        sqlx::query("INSERT INTO t VALUES (7)")
            .execute(&mut conn)
            .await
            .unwrap();
        let nested = conn.begin_with("BEGIN IMMEDIATE").await.map(|_| ());
        assert!(
            matches!(nested, Err(sqlx::Error::Database(_))),
            "{nested:?}"
        );
        sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
        let rows: Vec<i64> = sqlx::query_scalar("SELECT v FROM t")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            rows,
            vec![7],
            "the application's transaction kept its insert"
        );
        conn.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_busy_connection_goes_back_to_the_pool_only_when_its_worker_is_done() {
        // What sqlx's ping on release is for: a cancelled statement still running on the
        // worker must finish before the pool hands the connection to someone else. Here it
        // waits in SQLite's busy handler for a write lock held elsewhere, and the ping (the
        // patch's round trip for a worker that is not idle) answers only after the lock is
        // released and the statement is done.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paywarden.db");
        let store = Store::open(&path).await.unwrap();
        let mut holder = sqlx::AnyConnection::connect(&sqlite_url(&path))
            .await
            .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut holder)
            .await
            .unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        // The statement reaches the worker, which then waits in SQLite's busy handler (10 s);
        // the caller gives up on it after 200 ms.
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            sqlx::query("INSERT INTO meta (key, value) VALUES ('k', 'v')").execute(&mut *conn),
        )
        .await;
        assert!(waiting.is_err(), "the INSERT waits for the write lock");
        let mut ping = tokio::spawn(async move {
            let pinged = conn.ping().await;
            (pinged, conn)
        });
        let early = tokio::time::timeout(std::time::Duration::from_millis(500), &mut ping).await;
        assert!(
            early.is_err(),
            "the ping answered while the worker was still busy with the cancelled INSERT"
        );
        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
        let (pinged, conn) = ping.await.unwrap();
        pinged.unwrap();
        drop(conn);
        // The cancelled INSERT ran once the lock was free.
        assert_eq!(store.meta("k").await.unwrap().as_deref(), Some("v"));
        holder.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_limit_decision_gives_up_waiting_for_the_write_turn_at_its_deadline() {
        // On SQLite the daily-limit decision queues at the write turn (no entity gate), so
        // its wait must end at the caller's deadline (the pipeline then answers `busy`,
        // "nothing was sent"), not whenever the writes ahead of it are done.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("paywarden.db")).await.unwrap();
        let ahead = store.begin_write().await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(200);
        let decided = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            store.decide_and_reserve("e1", "EUR", 100, None, deadline, |_| None::<()>),
        )
        .await
        .expect("the decision waited past its deadline for the write turn")
        .unwrap();
        assert!(matches!(decided, LimitDecision::TimedOut), "{decided:?}");
        assert!(tokio::time::Instant::now() >= deadline);
        ahead.rollback().await.unwrap();
        // With the turn free, the same decision reserves.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let decided = store
            .decide_and_reserve("e1", "EUR", 100, None, deadline, |_| None::<()>)
            .await
            .unwrap();
        assert!(matches!(decided, LimitDecision::Reserved(_)), "{decided:?}");
    }

    #[tokio::test]
    async fn a_dropped_transaction_is_rolled_back_before_its_connection_is_used_again() {
        // The rollback a dropped transaction queues runs before the next user of the
        // connection (one connection here, so it is the same one) begins: the worker runs its
        // commands in order, and the patched ping of a worker with a transaction open goes
        // through it. Guards that argument across sqlx upgrades.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paywarden.db");
        Store::open(&path).await.unwrap();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect(&sqlite_url(&path))
            .await
            .unwrap();
        for n in 0..100 {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
            sqlx::query("INSERT INTO meta (key, value) VALUES ($1, 'dropped')")
                .bind(format!("k{n}"))
                .execute(&mut *tx)
                .await
                .unwrap();
            drop(tx);
            // A new transaction, not a savepoint inside the dropped one.
            let mut next = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
            let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM meta WHERE value = 'dropped'")
                .fetch_one(&mut *next)
                .await
                .unwrap();
            assert_eq!(kept, 0, "round {n}: the dropped transaction's row is gone");
            next.commit().await.unwrap();
        }
    }

    #[tokio::test]
    async fn the_busy_timeout_put_back_is_the_one_set_last_however_it_was_set() {
        // The patched sqlx-sqlite reads a connection's busy timeout once and keeps it for the
        // statements it runs on the caller's thread with the busy handler off (and puts back
        // afterwards). Set anew between them, through a PRAGMA statement, a PRAGMA inside a
        // transaction's own BEGIN, the raw handle, or a PRAGMA only prepared, the new one is
        // what they put back.
        extern "C" {
            fn sqlite3_busy_timeout(
                db: *mut std::ffi::c_void,
                ms: std::ffi::c_int,
            ) -> std::ffi::c_int;
        }
        // Statements run on the caller's thread: queries, and a transaction begun there. The
        // first reads the busy timeout (reading it with `PRAGMA busy_timeout` forgets it).
        async fn on_the_callers_thread(conn: &mut sqlx::SqliteConnection) {
            for _ in 0..3 {
                let _: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
            }
            let tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
            tx.commit().await.unwrap();
        }
        async fn busy_timeout(conn: &mut sqlx::SqliteConnection) -> i64 {
            sqlx::query_scalar("PRAGMA busy_timeout")
                .fetch_one(&mut *conn)
                .await
                .unwrap()
        }
        let dir = tempfile::tempdir().unwrap();
        let mut conn = wal_connection(dir.path(), "timeout.db", "pw-busy-timeout").await;
        create_table_t(&mut conn).await;
        on_the_callers_thread(&mut conn).await;
        assert_eq!(busy_timeout(&mut conn).await, 5000, "sqlx's default");

        on_the_callers_thread(&mut conn).await;
        sqlx::query("pragma BUSY_TIMEOUT = 2345")
            .execute(&mut conn)
            .await
            .unwrap();
        on_the_callers_thread(&mut conn).await;
        assert_eq!(
            busy_timeout(&mut conn).await,
            2345,
            "after a PRAGMA statement"
        );

        on_the_callers_thread(&mut conn).await;
        let tx = conn
            .begin_with("PRAGMA busy_timeout = 3456; BEGIN IMMEDIATE")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        on_the_callers_thread(&mut conn).await;
        assert_eq!(
            busy_timeout(&mut conn).await,
            3456,
            "after a PRAGMA in a BEGIN"
        );

        on_the_callers_thread(&mut conn).await;
        {
            let mut handle = conn.lock_handle().await.unwrap();
            // SAFETY: the handle is locked for this block, and the timeout is a plain setting.
            unsafe { sqlite3_busy_timeout(handle.as_raw_handle().as_ptr().cast(), 4567) };
        }
        on_the_callers_thread(&mut conn).await;
        assert_eq!(busy_timeout(&mut conn).await, 4567, "after the raw handle");

        // SQLite applies the PRAGMA when it compiles it: prepared, never run.
        on_the_callers_thread(&mut conn).await;
        {
            use sqlx::Executor;
            conn.prepare("PRAGMA busy_timeout = 5678").await.unwrap();
        }
        on_the_callers_thread(&mut conn).await;
        assert_eq!(
            busy_timeout(&mut conn).await,
            5678,
            "after a prepared PRAGMA"
        );
    }

    #[test]
    fn the_bundled_sqlite_allocates_through_jemalloc() {
        // crates/paywarden/Cargo.toml: jemalloc built unprefixed defines C's malloc/free, so
        // SQLite's allocations do not take glibc's arena locks (docs/performance.md, "The
        // allocator: jemalloc"). SQLite's default memory methods call `malloc`; the symbol the
        // C code of this binary resolves `malloc` to must be jemalloc's. Built prefixed (the
        // feature off), jemalloc's is `_rjem_malloc` and `malloc` is glibc's: this fails.
        use std::ffi::{c_int, c_void};
        extern "C" {
            fn malloc(size: usize) -> *mut c_void;
            fn sqlite3_malloc(n: c_int) -> *mut c_void;
            fn sqlite3_free(p: *mut c_void);
        }
        let c_malloc = malloc as *const () as usize;
        let jemalloc = tikv_jemalloc_sys::malloc as *const () as usize;
        assert_eq!(
            c_malloc, jemalloc,
            "C's malloc is not jemalloc's: is `unprefixed_malloc_on_supported_platforms` on?"
        );
        // And a block SQLite allocates is one jemalloc can size (its usable size covers the
        // request), which a block from another heap would not give.
        // SAFETY: sqlite3_malloc returns memory (or null) that sqlite3_free releases; the
        // size query reads jemalloc's own metadata for a block that, by the check above, it
        // allocated.
        unsafe {
            let p = sqlite3_malloc(100);
            assert!(!p.is_null());
            let usable = tikv_jemalloc_sys::malloc_usable_size(p);
            sqlite3_free(p);
            assert!(
                usable >= 100,
                "jemalloc sizes SQLite's block at {usable} bytes"
            );
        }
    }

    #[tokio::test]
    async fn the_bundled_sqlite_keeps_no_memory_statistics() {
        // .cargo/config.toml builds SQLite with SQLITE_DEFAULT_MEMSTATUS=0: with statistics on,
        // every sqlite3_malloc/sqlite3_free takes one process-wide mutex (docs/performance.md).
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("paywarden.db")).await.unwrap();
        let options: Vec<String> = sqlx::query("PRAGMA compile_options")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get::<String, _>(0).unwrap())
            .collect();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "SQLite was built without LIBSQLITE3_FLAGS=-DSQLITE_DEFAULT_MEMSTATUS=0: {options:?}"
        );
    }

    #[test]
    fn the_store_pool_url_sets_the_inline_read_budget_unless_it_names_one() {
        use std::str::FromStr;
        assert_eq!(
            sqlite_pool_url("sqlite:///d/paywarden.db"),
            "sqlite:///d/paywarden.db?mode=rwc&inline_read_budget_us=200"
        );
        assert_eq!(
            sqlite_pool_url("sqlite:///d/p.db?mode=ro"),
            "sqlite:///d/p.db?mode=ro&inline_read_budget_us=200"
        );
        assert_eq!(
            sqlite_pool_url("sqlite:///d/p.db?inline_read_budget_us=0"),
            "sqlite:///d/p.db?inline_read_budget_us=0"
        );
        assert_eq!(
            sqlite_pool_url("sqlite:///d/p.db?inline%5Fread%5Fbudget%5Fus=0"),
            "sqlite:///d/p.db?inline%5Fread%5Fbudget%5Fus=0"
        );
        for url in [
            "sqlite:///d/p.db?mode=rwc",
            "sqlite:///d/p.db?inline_read_budget_us=0",
        ] {
            sqlx::sqlite::SqliteConnectOptions::from_str(&sqlite_pool_url(url)).unwrap();
        }
        // A budget that is not whole microseconds is refused with what to give instead.
        let bad = sqlx::sqlite::SqliteConnectOptions::from_str(
            "sqlite:///d/p.db?inline_read_budget_us=0.2ms",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(bad.contains("whole microseconds"), "{bad}");
    }

    #[test]
    fn urls_name_their_engine_and_never_show_a_password() {
        assert_eq!(Engine::of_url("sqlite:///x.db").unwrap(), Engine::Sqlite);
        assert_eq!(Engine::of_url("postgres://h/db").unwrap(), Engine::Postgres);
        assert_eq!(
            Engine::of_url("postgresql://h/db").unwrap(),
            Engine::Postgres
        );
        let err = Engine::of_url("mysql://u:hunter2@h/db").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert_eq!(
            redact_url("postgres://pw:hunter2@db:5432/p"),
            "postgres://pw:***@db:5432/p"
        );
        assert_eq!(
            sqlite_url(Path::new("/a?b#c%d.db")),
            "sqlite:///a%3Fb%23c%25d.db?mode=rwc"
        );
    }
}
