//! The audit log: one row per tool call, hash-chained.
//!
//! `hash = hex(SHA-256(prev_hash || "\n" || canonical_json(entry)))`, with `prev_hash` of the
//! first row = 64 zeros. Canonical JSON ([`crate::canonical`]) sorts keys, so the same entry
//! always hashes the same.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Store, StoreError, WriteStatement};

/// The PostgreSQL advisory lock key that serialises audit appends across processes
/// (an arbitrary constant: "pwaudit" in ASCII).
const AUDIT_CHAIN_LOCK: i64 = 0x0070_7761_7564_6974;

/// The simple query that begins an audit group's transaction on PostgreSQL and takes
/// [`AUDIT_CHAIN_LOCK`] in it (one round trip), written once.
static AUDIT_BEGIN_POSTGRES: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("BEGIN; SELECT pg_advisory_xact_lock({AUDIT_CHAIN_LOCK})"));

/// The chain's first `prev_hash`.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a caller appends: one tool call and its outcome. [`Store::append_audit`] masks secrets and
/// personal data in it ([`crate::mask::audit_entry`]) before it is stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    /// The entity that made the call.
    pub entity_id: String,
    /// The MCP client's declared name, when known.
    pub client_name: Option<String>,
    /// Toolset, e.g. `opp`.
    pub toolset: String,
    /// Tool name.
    pub tool: String,
    /// Arguments as JSON, secrets removed.
    pub arguments: serde_json::Value,
    /// `ok`, `rejected`, `error` or `replay`.
    pub outcome: String,
    /// Provider result code, when there was one.
    pub result_code: Option<String>,
    /// Provider request id (OPP `ndc`).
    pub provider_request_id: Option<String>,
    /// The transaction created or read.
    pub transaction_id: Option<String>,
    /// A short message (the error, for failures).
    pub message: Option<String>,
    /// How long the call took, in milliseconds.
    pub duration_ms: i64,
    /// Whether the provider was the offline emulator.
    pub sandbox: bool,
}

/// A stored audit row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// When it was appended (UTC, RFC 3339).
    pub at: String,
    /// The entry.
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// The previous row's hash.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

/// Where `verify` found the chain broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The first row whose hash or link does not match.
    pub seq: i64,
    /// What does not match.
    pub reason: String,
}

/// A row's hash: SHA-256 (hex) of `prev_hash`, a line break and the canonical JSON
/// ([`crate::canonical`]) of the entry with its `at`: the bytes of
/// `canonical_json(to_value(entry) + {"at": at})`, written from the fields in key order without
/// building that value (test `a_rows_hashed_bytes_are_the_canonical_json_of_the_entry_and_its_time`).
fn chain_hash(prev_hash: &str, at: &str, entry: &AuditEntry) -> Result<String, StoreError> {
    use crate::canonical::{scalar, write};
    // Every field by name: a field added to `AuditEntry` does not compile until it is hashed.
    let AuditEntry {
        entity_id,
        client_name,
        toolset,
        tool,
        arguments,
        outcome,
        result_code,
        provider_request_id,
        transaction_id,
        message,
        duration_ms,
        sandbox,
    } = entry;
    let mut out: Vec<u8> = Vec::with_capacity(512);
    // The keys in byte order, as `canonical_json` sorts them.
    out.extend_from_slice(b"{\"arguments\":");
    write(arguments, &mut out);
    out.extend_from_slice(b",\"at\":");
    scalar(at, &mut out);
    out.extend_from_slice(b",\"client_name\":");
    scalar(client_name, &mut out);
    out.extend_from_slice(b",\"duration_ms\":");
    scalar(duration_ms, &mut out);
    out.extend_from_slice(b",\"entity_id\":");
    scalar(entity_id, &mut out);
    out.extend_from_slice(b",\"message\":");
    scalar(message, &mut out);
    out.extend_from_slice(b",\"outcome\":");
    scalar(outcome, &mut out);
    out.extend_from_slice(b",\"provider_request_id\":");
    scalar(provider_request_id, &mut out);
    out.extend_from_slice(b",\"result_code\":");
    scalar(result_code, &mut out);
    out.extend_from_slice(b",\"sandbox\":");
    scalar(sandbox, &mut out);
    out.extend_from_slice(b",\"tool\":");
    scalar(tool, &mut out);
    out.extend_from_slice(b",\"toolset\":");
    scalar(toolset, &mut out);
    out.extend_from_slice(b",\"transaction_id\":");
    scalar(transaction_id, &mut out);
    out.push(b'}');
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(&out);
    Ok(hex::encode(hasher.finalize()))
}

/// The row counts of one `INSERT` of audit rows (largest first; see `insert_statements`).
const INSERT_CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// The columns of one audit row, in the order `insert_audit_rows` binds them.
const AUDIT_COLUMNS: usize = 16;

/// `INSERT INTO audit_log ... VALUES (...), (...)` for `engine`, one per size of
/// [`INSERT_CHUNKS`] (largest first), built once per engine.
///
/// PostgreSQL's placeholders are numbered (`$1`, `$2`, ...). SQLite's are anonymous (`?`), bound
/// in the order they appear (the order `insert_audit_rows` binds): SQLite keeps the names of
/// named or numbered parameters in a list that it searches from the start for each one
/// (`sqlite3_bind_parameter_name`, which sqlx-sqlite calls for every parameter it binds), so
/// binding the 1,024 numbered parameters of a 64-row statement cost about half a million list
/// steps; a frame-pointer profile of audited reads found 1.7 % of the server's CPU there
/// (docs/performance.md, "Where an audited read's CPU goes").
///
/// On SQLite the statement is `INSERT OR FAIL`: SQLite gives a statement that writes more than
/// one row (a multi-row `VALUES`) and can abort partway (the `seq` key's uniqueness check, whose
/// default conflict resolution is `ABORT`) a statement journal, into which it copies every page
/// before the statement first changes it, so that an abort can undo the statement's earlier rows
/// without ending the transaction (`sqlite3MayAbort` and `sqlite3MultiWrite` in SQLite's code
/// generator; "Temporary Files Used By SQLite", 2.5, <https://sqlite.org/tempfiles.html>). With
/// `FAIL` a failed row stops the statement and leaves its earlier rows in place ("The ON
/// CONFLICT Clause", <https://sqlite.org/lang_conflict.html>), so no statement journal is kept;
/// nothing is lost by it, because a failed statement fails the whole group's transaction, which
/// is rolled back (`insert_audit_rows` returns the error before its commit). Measured: 2.5 % of
/// the server's CPU under audited reads went to that journal (docs/performance.md, "The audit
/// insert without a statement journal"). PostgreSQL has no such journal and keeps `INSERT`.
pub(super) fn insert_statements(engine: super::Engine) -> &'static [(usize, String)] {
    static POSTGRES: std::sync::OnceLock<Vec<(usize, String)>> = std::sync::OnceLock::new();
    static SQLITE: std::sync::OnceLock<Vec<(usize, String)>> = std::sync::OnceLock::new();
    let statements = match engine {
        super::Engine::Postgres => &POSTGRES,
        super::Engine::Sqlite => &SQLITE,
    };
    statements.get_or_init(|| {
        INSERT_CHUNKS
            .iter()
            .map(|&n| {
                let rows: Vec<String> = (0..n)
                    .map(|row| {
                        let placeholders: Vec<String> = (1..=AUDIT_COLUMNS)
                            .map(|column| match engine {
                                super::Engine::Postgres => {
                                    format!("${}", row * AUDIT_COLUMNS + column)
                                }
                                super::Engine::Sqlite => "?".to_string(),
                            })
                            .collect();
                        format!("({})", placeholders.join(", "))
                    })
                    .collect();
                let verb = match engine {
                    super::Engine::Postgres => "INSERT",
                    super::Engine::Sqlite => "INSERT OR FAIL",
                };
                let sql = format!(
                    "{verb} INTO audit_log (seq, at, entity_id, client_name, toolset, tool, arguments, outcome, \
                     result_code, provider_request_id, transaction_id, message, duration_ms, sandbox, prev_hash, hash) VALUES {}",
                    rows.join(", ")
                );
                (n, sql)
            })
            .collect()
    })
}

/// The most appends one group commit writes; more waiting callers form the next group.
const MAX_GROUP: usize = 256;

/// An append waiting for its group commit, and where its answer goes.
struct Pending {
    entry: AuditEntry,
    answer: tokio::sync::oneshot::Sender<Result<AuditAppended, StoreError>>,
}

/// An appended audit row, as its append returns it once the row is durable: its place in the
/// chain (`seq`, from 1) and its chain `hash` (lowercase hex SHA-256 over the previous row's
/// hash, the row's time and its canonical JSON, [`chain_hash`]). A receipt names both, so the
/// append hands the hash back rather than the receipt reading the row again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditAppended {
    /// The row's `seq`.
    pub seq: i64,
    /// The row's `hash`.
    pub hash: String,
}

/// The appends of concurrent callers waiting to be written together (group commit), whether
/// this process's audit writer task is running, and the writer's tasks (so that shutdown can
/// wait for them, [`Store::drain_audit`]). Shared by a [`Store`]'s clones.
#[derive(Default)]
pub(crate) struct AuditQueue {
    state: std::sync::Mutex<QueueState>,
    tasks: tokio_util::task::TaskTracker,
}

/// What [`AuditQueue`] guards.
#[derive(Default)]
struct QueueState {
    /// Appends not yet taken into a group, oldest first.
    pending: std::collections::VecDeque<Pending>,
    /// Whether a writer task is running; it takes every pending append before it ends.
    writing: bool,
}

impl std::fmt::Debug for AuditQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditQueue").finish_non_exhaustive()
    }
}

impl AuditQueue {
    /// Whether a writer runs, and how many appends wait to be taken into a group (tests).
    #[cfg(test)]
    pub(crate) fn status(&self) -> (bool, usize) {
        let state = self.state();
        (state.writing, state.pending.len())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // A panic while holding this lock cannot leave the state half-changed (push, drain
        // and the flag are single steps).
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The audit writer task's claim on the running mark, made before the task is spawned and
/// moved into it. If the task ends without clearing the mark itself (unwound by a panic
/// outside a group), dropping the claim clears it and starts another writer for what is still
/// queued. If the task was never polled (its runtime was shutting down), it clears the mark and
/// fails what is queued (`AuditAppendAborted`) instead of spawning on a closed runtime again.
struct Writing {
    store: Store,
    /// The task has started.
    polled: bool,
    /// The writer found nothing waiting and cleared the mark itself.
    finished: bool,
}

impl Writing {
    /// Claims the running mark in `state` (the queue's, held by the caller), if no writer holds
    /// it (`None` otherwise).
    fn claim(state: &mut QueueState, store: &Store) -> Option<Self> {
        (!std::mem::replace(&mut state.writing, true)).then(|| Self {
            store: store.clone(),
            polled: false,
            finished: false,
        })
    }

    /// Spawns the writer task with this claim on the current runtime; without one, the claim
    /// is dropped unpolled (the mark cleared, what is queued failed).
    fn spawn(self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let tasks = self.store.audit_queue().tasks.clone();
            // Boxed: the writer's future is KiBs, and tokio copies a task's whole stage when
            // it spawns and finishes (docs/performance.md, "Spawned futures boxed").
            tasks.spawn_on(Box::pin(write_audit_groups(self)), &runtime);
        }
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut state = self.store.audit_queue().state();
        state.writing = false;
        if state.pending.is_empty() {
            return;
        }
        if self.polled {
            // Ended with appends still waiting: start another, so they are written without
            // waiting for a later append.
            let writer = Writing::claim(&mut state, &self.store);
            drop(state);
            if let Some(writer) = writer {
                writer.spawn();
            }
        } else {
            // The runtime dropped the task unpolled: nothing here will write them.
            let abandoned = state.pending.drain(..).count();
            drop(state);
            tracing::error!(
                appends = abandoned,
                "the audit writer could not start (the runtime is shutting down); these appends are not written"
            );
        }
    }
}

/// This process's audit writer (see [`Store::append_audit`]): takes the waiting appends, up to
/// [`MAX_GROUP`] at a time, and commits each group in one transaction, until none is waiting.
/// Each group then waits for its fsync and is answered in a task of its own, so the next group
/// is committed meanwhile: it reads the head the last one committed, and its own fsync (which
/// starts after its commit) covers both, since the log is replayed in order. Nobody is answered
/// before an fsync that started after their commit.
async fn write_audit_groups(mut writing: Writing) {
    use futures::FutureExt;
    writing.polled = true;
    let store = writing.store.clone();
    loop {
        // Let the tasks that are ready to run go first, so that the appends they are about to
        // make join this group instead of each paying for a group of its own. On an idle
        // runtime this returns at once; on a busy one it is what keeps groups large when
        // commits get faster (docs/performance.md, "One round trip per BEGIN").
        tokio::task::yield_now().await;
        let group: Vec<Pending> = {
            let mut state = store.audit_queue().state();
            if state.pending.is_empty() {
                state.writing = false;
                writing.finished = true;
                break;
            }
            let n = state.pending.len().min(MAX_GROUP);
            state.pending.drain(..n).collect()
        };
        // A panic while writing a group drops its answers (its callers get
        // AuditAppendAborted); the writer goes on with the next group.
        match std::panic::AssertUnwindSafe(store.commit_audit_group(group))
            .catch_unwind()
            .await
        {
            Ok(committed) => {
                let answering = store.clone();
                store.audit_queue().tasks.spawn(Box::pin(async move {
                    answering.answer_when_durable(committed).await
                }));
            }
            Err(_) => tracing::error!(
                "writing an audit group failed (a panic); its callers are told it was aborted"
            ),
        }
    }
}

impl Store {
    /// Appends an entry to the audit chain, atomically with reading the chain's head; returns
    /// its `seq` once its row is committed (durable). Appends from every process on the
    /// database are serialised (SQLite: the write transaction; PostgreSQL: a
    /// transaction-scoped advisory lock), and `seq` is the head's plus one, so the chain stays
    /// one gap-free chain.
    ///
    /// Group commit: the appends of concurrent callers in this process are written together
    /// by one writer task, up to 256 in one transaction (one fsync), which reads the head under
    /// the same lock as a single append. The append that finds no writer running starts one
    /// before it waits, so a caller whose future is dropped while waiting still has its row
    /// written. The writer commits the next group while the last one waits for its fsync.
    ///
    /// # Errors
    /// [`StoreError`] on database failure (a failed group is retried one append at a time, so
    /// each caller gets its own append's outcome), [`StoreError::AuditAppendAborted`] when the
    /// writing task ended without an answer.
    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<i64, StoreError> {
        self.append_audit_row(entry).await.map(|row| row.seq)
    }

    /// [`Store::append_audit`], answering with the row's `seq` and its chain `hash`.
    ///
    /// # Errors
    /// As [`Store::append_audit`].
    pub async fn append_audit_row(&self, entry: &AuditEntry) -> Result<AuditAppended, StoreError> {
        // Whoever appends, no secret or personal data reaches the row (crate::mask).
        let entry = crate::mask::audit_entry(entry);
        let (answer, answered) = tokio::sync::oneshot::channel();
        let writer = {
            let mut state = self.audit_queue().state();
            state.pending.push_back(Pending { entry, answer });
            Writing::claim(&mut state, self)
        };
        if let Some(writer) = writer {
            writer.spawn();
        }
        answered
            .await
            .unwrap_or(Err(StoreError::AuditAppendAborted))
    }

    /// Waits until every audit append queued so far is written and answered (or failed): no
    /// writer running, nothing queued, no group waiting for its fsync. Call it at shutdown,
    /// after the last call was served or cancelled, so that the rows of cancelled callers are
    /// written before the process exits.
    pub async fn drain_audit(&self) {
        let tasks = &self.audit_queue().tasks;
        tasks.close();
        tasks.wait().await;
        tasks.reopen();
    }

    /// Writes `group` in one transaction; if that transaction fails, writes each append on its
    /// own so every caller gets its own outcome. Returns each append with its outcome, not yet
    /// durable (see [`Store::answer_when_durable`]).
    async fn commit_audit_group(
        &self,
        group: Vec<Pending>,
    ) -> Vec<(Pending, Result<AuditAppended, StoreError>)> {
        if group.is_empty() {
            return Vec::new();
        }
        let entries: Vec<&AuditEntry> = group.iter().map(|p| &p.entry).collect();
        match self.insert_audit_rows(&entries).await {
            Ok(rows) => group
                .into_iter()
                .zip(rows)
                .map(|(pending, row)| (pending, Ok(row)))
                .collect(),
            Err(error) if group.len() == 1 => group
                .into_iter()
                .next()
                .map(|p| (p, Err(error)))
                .into_iter()
                .collect(),
            Err(_) => {
                let mut answers = Vec::with_capacity(group.len());
                for pending in group {
                    let result = self
                        .insert_audit_rows(&[&pending.entry])
                        .await
                        .and_then(|rows| {
                            rows.into_iter()
                                .next()
                                .ok_or(StoreError::AuditAppendAborted)
                        });
                    answers.push((pending, result));
                }
                answers
            }
        }
    }

    /// Answers each caller of a committed group once its rows are durable. A failed fsync
    /// fails the appends it was to make durable, which are committed and therefore never
    /// written again.
    async fn answer_when_durable(
        &self,
        committed: Vec<(Pending, Result<AuditAppended, StoreError>)>,
    ) {
        let durable = super::durable(self.wal_sync.as_deref()).await;
        for (pending, result) in committed {
            let result = match (&durable, result) {
                // The same fsync error for every append of the group (io::Error is not Clone).
                (Err(e), Ok(_)) => Err(StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                    e.kind(),
                    e.to_string(),
                )))),
                (_, result) => result,
            };
            let _ = pending.answer.send(result);
        }
    }

    /// Appends `entries` (already masked) in one transaction under the chain lock, chained in
    /// order; returns their `seq`s and hashes, in the order of `entries`.
    async fn insert_audit_rows(
        &self,
        entries: &[&AuditEntry],
    ) -> Result<Vec<AuditAppended>, StoreError> {
        let mut tx = match self.engine() {
            // One appender at a time across every process on this database: the lock is held
            // until this transaction commits or rolls back. It is taken in the simple query
            // that begins the transaction (one round trip, not two); the head is read by the
            // next statement, whose snapshot is taken once the lock is held.
            super::Engine::Postgres => self.begin_write_with(AUDIT_BEGIN_POSTGRES.as_str()).await?,
            // The write transaction is the lock.
            super::Engine::Sqlite => self.begin_write().await?,
        };
        let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (mut seq, mut prev_hash) = match head {
            Some(row) => (
                row.try_get::<i64, _>("seq")?,
                row.try_get::<String, _>("hash")?,
            ),
            None => (0, GENESIS.to_string()),
        };
        // Chain every row first, then insert them in a few multi-row statements: one round trip
        // (and, on SQLite, one hop to sqlx's worker thread) per chunk instead of per row. The
        // chunk sizes are fixed so each connection's prepared-statement cache holds at most
        // four shapes of this statement.
        let mut rows = Vec::with_capacity(entries.len());
        for entry in entries {
            seq += 1;
            let at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let hash = chain_hash(&prev_hash, &at, entry)?;
            let arguments = serde_json::to_string(&entry.arguments)?;
            rows.push((
                seq,
                at,
                *entry,
                arguments,
                std::mem::replace(&mut prev_hash, hash.clone()),
                hash,
            ));
        }
        let mut rest = rows.as_slice();
        // The largest statement that fits; the smallest is one row, so one always does.
        while let Some((size, sql)) = insert_statements(self.engine())
            .iter()
            .find(|(n, _)| !rest.is_empty() && *n <= rest.len())
        {
            let (chunk, tail) = rest.split_at(*size);
            let mut query = sqlx::query(sql.as_str());
            for (seq, at, entry, arguments, prev, hash) in chunk {
                query = query
                    .bind(*seq)
                    .bind(at)
                    .bind(&entry.entity_id)
                    .bind(&entry.client_name)
                    .bind(&entry.toolset)
                    .bind(&entry.tool)
                    .bind(arguments)
                    .bind(&entry.outcome)
                    .bind(&entry.result_code)
                    .bind(&entry.provider_request_id)
                    .bind(&entry.transaction_id)
                    .bind(&entry.message)
                    .bind(entry.duration_ms)
                    .bind(entry.sandbox)
                    .bind(prev)
                    .bind(hash);
            }
            query.execute(&mut *tx).await?;
            rest = tail;
        }
        let appended = rows
            .into_iter()
            .map(|(seq, _, _, _, _, hash)| AuditAppended { seq, hash })
            .collect();
        // Durable once commit_audit_group's Store::written returns.
        tx.commit_unsynced().await?;
        Ok(appended)
    }

    /// Every audit row, oldest first; `entity_id` limits it to one entity.
    ///
    /// # Errors
    /// [`StoreError`] on database failure or unreadable stored JSON.
    pub async fn audit_records(
        &self,
        entity_id: Option<&str>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = match entity_id {
            Some(e) => {
                sqlx::query("SELECT * FROM audit_log WHERE entity_id = $1 ORDER BY seq")
                    .bind(e)
                    .fetch_all(self.pool())
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM audit_log ORDER BY seq")
                    .fetch_all(self.pool())
                    .await?
            }
        };
        rows.into_iter()
            .map(|row| {
                let arguments: String = row.try_get("arguments")?;
                Ok(AuditRecord {
                    seq: row.try_get("seq")?,
                    at: row.try_get("at")?,
                    entry: AuditEntry {
                        entity_id: row.try_get("entity_id")?,
                        client_name: row.try_get("client_name")?,
                        toolset: row.try_get("toolset")?,
                        tool: row.try_get("tool")?,
                        arguments: serde_json::from_str(&arguments)?,
                        outcome: row.try_get("outcome")?,
                        result_code: row.try_get("result_code")?,
                        provider_request_id: row.try_get("provider_request_id")?,
                        transaction_id: row.try_get("transaction_id")?,
                        message: row.try_get("message")?,
                        duration_ms: row.try_get("duration_ms")?,
                        sandbox: super::get_bool(&row, "sandbox")?.unwrap_or(false),
                    },
                    prev_hash: row.try_get("prev_hash")?,
                    hash: row.try_get("hash")?,
                })
            })
            .collect()
    }

    /// The chain's head as one statement reads it: `(seq, hash)` of the newest entry, or
    /// `(0, GENESIS)` when the log is empty. `seq` is also the number of entries (the chain is
    /// gap-free), so a checkpoint of it anchors both the head and the length; every appender
    /// commits under the chain lock, so a reader never sees a head whose predecessors are
    /// missing.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(self.pool())
            .await?;
        Ok(match head {
            Some(row) => (row.try_get("seq")?, row.try_get("hash")?),
            None => (0, GENESIS.to_string()),
        })
    }

    /// The metadata value `key`, first set to `value` when absent (the first process to ask
    /// wins; every later one reads that value). Used to record which audit signing key this
    /// database's checkpoints are signed with.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn meta_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .write_on(self)
            .await?;
        Ok(self.meta(key).await?.unwrap_or_else(|| value.to_string()))
    }

    /// Checks the whole chain; `Ok(None)` when intact, else the first broken row.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn verify_audit(&self) -> Result<Option<ChainBreak>, StoreError> {
        let mut expected_prev = GENESIS.to_string();
        for (expected_seq, record) in (1..).zip(self.audit_records(None).await?) {
            if record.seq != expected_seq {
                return Ok(Some(ChainBreak {
                    seq: expected_seq,
                    reason: format!(
                        "entry {expected_seq} is missing (the next entry is {})",
                        record.seq
                    ),
                }));
            }
            if record.prev_hash != expected_prev {
                return Ok(Some(ChainBreak {
                    seq: record.seq,
                    reason: "its prev_hash does not match the previous entry's hash".into(),
                }));
            }
            let hash = chain_hash(&record.prev_hash, &record.at, &record.entry)?;
            if hash != record.hash {
                return Ok(Some(ChainBreak {
                    seq: record.seq,
                    reason: "its content does not match its hash (edited)".into(),
                }));
            }
            expected_prev = record.hash;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_binds_audit_rows_to_anonymous_placeholders_and_postgres_to_numbered_ones() {
        for (n, sql) in insert_statements(crate::store::Engine::Sqlite) {
            assert_eq!(sql.matches('?').count(), n * AUDIT_COLUMNS, "{sql}");
            assert!(!sql.contains('$'), "numbered parameters: {sql}");
        }
        for (n, sql) in insert_statements(crate::store::Engine::Postgres) {
            let last = n * AUDIT_COLUMNS;
            assert!(sql.contains(&format!("${last})")), "{sql}");
            assert!(!sql.contains(&format!("${}", last + 1)), "{sql}");
            assert!(!sql.contains('?'), "{sql}");
        }
    }

    #[tokio::test]
    async fn a_group_whose_insert_fails_partway_leaves_none_of_its_rows_and_each_caller_its_own_outcome(
    ) {
        // SQLite's audit insert is `INSERT OR FAIL` (no statement journal): a row that fails
        // stops the statement with the rows before it still written. They must go with the
        // group's rolled-back transaction before each append is retried on its own; kept, they
        // would be written twice and their callers answered with the wrong `seq`s.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("paywarden.db")).await.unwrap();
        sqlx::query(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_log WHEN NEW.tool = 'poison' \
             BEGIN SELECT RAISE(FAIL, 'poisoned row'); END",
        )
        .execute(store.pool())
        .await
        .unwrap();
        // Four appends: one statement of four rows, the third refused.
        let (group, mut answers): (Vec<Pending>, Vec<_>) = ["a", "b", "poison", "d"]
            .into_iter()
            .map(|tool| {
                let (answer, answered) = tokio::sync::oneshot::channel();
                (
                    Pending {
                        entry: crate::store::tests::audit_entry(tool),
                        answer,
                    },
                    answered,
                )
            })
            .unzip();
        store
            .answer_when_durable(store.commit_audit_group(group).await)
            .await;
        let mut outcomes = Vec::new();
        for answered in &mut answers {
            outcomes.push(answered.await.unwrap());
        }
        assert_eq!(outcomes[0].as_ref().unwrap().seq, 1);
        assert_eq!(outcomes[1].as_ref().unwrap().seq, 2);
        assert!(
            outcomes[2]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("poisoned row"),
            "{:?}",
            outcomes[2]
        );
        assert_eq!(outcomes[3].as_ref().unwrap().seq, 3);
        let records = store.audit_records(None).await.unwrap();
        // Each caller is answered with its own row's chain hash, as stored (a receipt names it).
        let answered: Vec<AuditAppended> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok().cloned())
            .collect();
        let stored: Vec<AuditAppended> = records
            .iter()
            .map(|r| AuditAppended {
                seq: r.seq,
                hash: r.hash.clone(),
            })
            .collect();
        assert_eq!(answered, stored);
        let rows: Vec<(i64, String)> = records.into_iter().map(|r| (r.seq, r.entry.tool)).collect();
        assert_eq!(
            rows,
            vec![
                (1, "a".to_string()),
                (2, "b".to_string()),
                (3, "d".to_string())
            ]
        );
        assert_eq!(store.verify_audit().await.unwrap(), None);
    }

    #[test]
    fn a_rows_hashed_bytes_are_the_canonical_json_of_the_entry_and_its_time() {
        // The definition the chain was written with (and that rows written by earlier builds
        // verify against): the entry as a JSON value, its `at` added, canonical JSON, SHA-256.
        fn by_definition(prev_hash: &str, at: &str, entry: &AuditEntry) -> String {
            let mut value = serde_json::to_value(entry).unwrap();
            value
                .as_object_mut()
                .unwrap()
                .insert("at".into(), serde_json::Value::String(at.to_string()));
            let mut hasher = Sha256::new();
            hasher.update(prev_hash.as_bytes());
            hasher.update(b"\n");
            hasher.update(crate::canonical::canonical_json(&value).as_bytes());
            hex::encode(hasher.finalize())
        }
        let some = |s: &str| Some(s.to_string());
        let full = AuditEntry {
            entity_id: "8ac7a4c9000000000000000000000001".into(),
            client_name: some("Claude \"Desktop\" \u{e9}\u{1F600}"),
            toolset: "opp".into(),
            tool: "perform_refund".into(),
            arguments: serde_json::json!({
                "z": [1, -2.5, null, true, {"b": "x", "a": "tab\t"}],
                "amount": "10.00",
                "": {},
                "referenceId": "8ac7a4a1"
            }),
            outcome: "ok".into(),
            result_code: some("000.100.110"),
            provider_request_id: some("ndc-1"),
            transaction_id: some("8ac7a4a2"),
            message: some("line\nbreak and \u{2028}"),
            duration_ms: -3,
            sandbox: true,
        };
        let empty = AuditEntry {
            entity_id: String::new(),
            client_name: None,
            toolset: String::new(),
            tool: String::new(),
            arguments: serde_json::Value::Null,
            outcome: String::new(),
            result_code: None,
            provider_request_id: None,
            transaction_id: None,
            message: None,
            duration_ms: i64::MAX,
            sandbox: false,
        };
        for (prev, at, entry) in [
            (GENESIS, "2026-12-05T18:00:00.123456Z", &full),
            ("ab", "", &empty),
            (
                GENESIS,
                "2026-12-05T18:00:00Z",
                &AuditEntry {
                    arguments: serde_json::json!("text"),
                    ..full.clone()
                },
            ),
        ] {
            assert_eq!(
                chain_hash(prev, at, entry).unwrap(),
                by_definition(prev, at, entry),
                "{entry:?}"
            );
        }
    }
}
