//! SQLite: the process's writes share write transactions (docs/performance.md, "Shared write
//! transactions").
//!
//! The process's writers take turns (FIFO) at one writer connection ([`Batches::turn`]). The
//! first writer of a batch opens it with `BEGIN IMMEDIATE`; every writer's transaction
//! ([`super::Store::begin_write`]) is a savepoint inside it (`SAVEPOINT`, then `RELEASE` to
//! keep it or `ROLLBACK TO` to undo it). A writer that released its savepoint while others
//! wait for the turn hands the turn on and then waits for whichever comes first: the batch's
//! outcome, or the turn again. Who gets the turn while its batch is still open commits it
//! (`COMMIT`) and tells every writer of the batch the outcome. So concurrent writes share one
//! `BEGIN`, one `COMMIT`, and the WAL frames of the pages they touch; a writer with nobody
//! waiting commits at once.
//!
//! What holds:
//! - **Nobody is answered before its batch's `COMMIT` returned.** [`Batches::settle`] returns
//!   only with the outcome of the `COMMIT` that holds the write; a failed `COMMIT` (the batch is
//!   then rolled back) fails every write of the batch. Durability (the WAL's fsync) is waited
//!   for after it, as before ([`super::durability`]).
//! - **A write that rolls back leaves no trace**, and the batch's other writes stay:
//!   `ROLLBACK TO` its savepoint. A writer dropped mid-way (an error returned with `?`, a
//!   cancelled future) queues the same rollback on the connection's worker, which runs it
//!   before anything else on the connection (sqlx's `start_rollback`); a batch left with no
//!   write in it is rolled back whole, so it does not keep SQLite's write lock.
//! - **A batch is committed even when its writers go away**: a writer cancelled while it waits
//!   for the outcome leaves a task that commits the batch if nobody else did.
//! - **No write can bypass the batch**: the writer connection is reached only through the
//!   turn. Single statements ([`super::Store::write_conn`]) run in the batch too, without a
//!   savepoint (a failing statement undoes only itself, SQLite's default `ABORT`), and
//!   [`super::WriteConn::written`] waits for the batch's `COMMIT` like a transaction's commit.
//! - A batch takes at most [`MAX_WRITES`] writes; the writer that fills it commits it at once.
//!
//! PostgreSQL does not batch: its writers of different rows proceed together.

use std::sync::Arc;

use sqlx::{Any, AnyConnection, AnyPool, TransactionManager};
use tokio::sync::{watch, Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

type Tm = <Any as sqlx::Database>::TransactionManager;

/// The most writes one shared transaction holds; the writer that adds the last commits it.
pub(crate) const MAX_WRITES: usize = 64;

/// The outcome of a batch's `COMMIT`: the error's text when it failed.
type Outcome = Result<(), Arc<str>>;

/// The turn, the writer connection behind it, and the open batch.
#[derive(Debug, Default)]
pub(crate) struct Batches {
    // The turn (tokio's mutex is FIFO) and the writer connection: opened by the pool at its
    // first use (with the pool's settings) and detached from it, so that the pool's
    // connections all stay for reads.
    turn: Arc<Mutex<Option<AnyConnection>>>,
    // Changed only by the turn's holder.
    state: std::sync::Mutex<State>,
    // Tasks waiting for the turn: a writer that keeps its write with nobody waiting commits
    // at once instead of handing the turn on.
    waiting: std::sync::atomic::AtomicUsize,
}

/// Counts a task among those waiting for the turn until it has it (or stops waiting).
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(waiting: &'a std::sync::atomic::AtomicUsize) -> Self {
        waiting.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

#[derive(Debug)]
struct State {
    // The open batch's number; a new batch gets the next.
    id: u64,
    // A batch is open on the writer connection (`BEGIN IMMEDIATE` ran, no `COMMIT` yet).
    open: bool,
    // Writes of the open batch that released their savepoints (kept, waiting for `COMMIT`).
    writes: usize,
    // Where the open batch's outcome is told.
    outcome: watch::Sender<Option<Outcome>>,
    // The writer connection failed in a way that leaves its state unknown: the next turn
    // holder closes it and takes another.
    broken: bool,
}

impl Default for State {
    fn default() -> Self {
        Self {
            id: 0,
            open: false,
            writes: 0,
            outcome: watch::channel(None).0,
            broken: false,
        }
    }
}

/// The turn, held (on SQLite): the writer connection, when it has been taken.
pub(crate) type Turn = OwnedMutexGuard<Option<AnyConnection>>;

/// A writer in the open batch, holding the turn: a transaction (its savepoint, from
/// [`Batches::join`]) or single statements (from [`Batches::solo`], no savepoint). Dropped
/// without [`Member::release`] or [`Member::rollback`], its savepoint is rolled back, and a
/// batch with no kept write is rolled back whole.
pub(crate) struct Member {
    conn: OwnedMappedMutexGuard<Option<AnyConnection>, AnyConnection>,
    batches: Arc<Batches>,
    // Its savepoint is open (a transaction's, not yet released or rolled back).
    savepoint: bool,
    // Counted among the batch's kept writes.
    kept: bool,
}

impl Batches {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for the turn (FIFO).
    pub(crate) async fn turn(&self) -> Turn {
        let _waiting = Waiting::new(&self.waiting);
        self.turn.clone().lock_owned().await
    }

    /// Closes the writer connection (after the pool was closed, so no other is opened): an open
    /// batch is rolled back and its writers told it failed.
    pub(crate) async fn close(&self) {
        let mut turn = self.turn().await;
        {
            let mut state = self.state();
            if std::mem::take(&mut state.open) {
                state.writes = 0;
                state
                    .outcome
                    .send_replace(Some(Err(Arc::from("the store was closed"))));
            }
        }
        if let Some(conn) = turn.take() {
            // Closing discards what the connection had not committed.
            let _ = sqlx::Connection::close(conn).await;
        }
    }

    /// The writer connection on a held turn: the kept one, or one from `pool`.
    async fn connection(&self, turn: &mut Turn, pool: &AnyPool) -> Result<(), sqlx::Error> {
        if std::mem::take(&mut self.state().broken) {
            // Dropped, the connection closes (SQLite discards what it had not committed).
            drop(turn.take());
            let mut state = self.state();
            state.open = false;
            state.writes = 0;
        }
        if turn.is_none() {
            **turn = Some(pool.acquire().await?.detach());
        }
        Ok(())
    }

    /// Opens a batch on a held turn's connection when none is open.
    async fn open(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        let open = self.state().open;
        if !open || Tm::get_transaction_depth(conn) == 0 {
            Tm::begin(conn, Some("BEGIN IMMEDIATE".into())).await?;
            let mut state = self.state();
            state.id += 1;
            state.open = true;
            state.writes = 0;
            state.outcome = watch::channel(None).0;
        }
        Ok(())
    }

    /// Begins a writer's transaction on a held turn: the batch opened if none is, then a
    /// savepoint in it.
    ///
    /// # Errors
    /// The `BEGIN IMMEDIATE`'s or the `SAVEPOINT`'s error; nothing is left begun.
    pub(crate) async fn join(
        self: &Arc<Self>,
        turn: Turn,
        pool: &AnyPool,
    ) -> Result<Member, sqlx::Error> {
        self.enter(turn, pool, true).await
    }

    /// The writer connection for single write statements on a held turn, in the open batch
    /// (opened if none is): a statement that fails undoes only itself (SQLite's default
    /// `ABORT`); [`Member::release`] keeps what ran and waits for the batch's `COMMIT`.
    ///
    /// # Errors
    /// The `BEGIN IMMEDIATE`'s error, or no connection from the pool.
    pub(crate) async fn solo(
        self: &Arc<Self>,
        turn: Turn,
        pool: &AnyPool,
    ) -> Result<Member, sqlx::Error> {
        self.enter(turn, pool, false).await
    }

    async fn enter(
        self: &Arc<Self>,
        mut turn: Turn,
        pool: &AnyPool,
        savepoint: bool,
    ) -> Result<Member, sqlx::Error> {
        self.connection(&mut turn, pool).await?;
        let Some(conn) = turn.as_mut() else {
            return Err(sqlx::Error::PoolClosed);
        };
        self.open(conn).await?;
        if savepoint {
            if let Err(e) = Tm::begin(conn, None).await {
                self.close_if_empty(conn).await;
                return Err(e);
            }
        }
        let conn =
            OwnedMutexGuard::try_map(turn, Option::as_mut).map_err(|_| sqlx::Error::PoolClosed)?;
        Ok(Member {
            conn,
            batches: self.clone(),
            savepoint,
            kept: false,
        })
    }

    /// Rolls the open batch back when no write of it is kept (so it does not hold SQLite's
    /// write lock for nobody).
    async fn close_if_empty(&self, conn: &mut AnyConnection) {
        let empty = {
            let state = self.state();
            state.open && state.writes == 0
        };
        if empty {
            if Tm::rollback(conn).await.is_err() {
                self.state().broken = true;
            }
            self.state().open = false;
        }
    }

    /// Commits the open batch on the held turn's connection and tells its writers.
    async fn commit_open(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        let result = Tm::commit(conn).await;
        if result.is_err()
            && Tm::get_transaction_depth(conn) > 0
            && Tm::rollback(conn).await.is_err()
        {
            self.state().broken = true;
        }
        let outcome: Outcome = match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(Arc::from(e.to_string())),
        };
        let mut state = self.state();
        state.open = false;
        state.writes = 0;
        state.outcome.send_replace(Some(outcome));
        result
    }

    /// Waits for batch `id`'s outcome; when the turn comes first with the batch still open,
    /// commits it.
    async fn settle(
        self: &Arc<Self>,
        id: u64,
        mut outcome: watch::Receiver<Option<Outcome>>,
    ) -> Result<(), sqlx::Error> {
        let mut pending = Pending {
            batches: Some(self.clone()),
            id,
        };
        let told = async {
            loop {
                if let Some(told) = outcome.borrow_and_update().clone() {
                    return Some(told);
                }
                if outcome.changed().await.is_err() {
                    return None;
                }
            }
        };
        let committed = tokio::select! {
            biased;
            told = told => Some(told_result(told)),
            turn = self.turn() => self.commit_if_open(turn, id).await,
        };
        pending.batches = None;
        // The turn came after another holder committed the batch: it told the outcome before
        // it let go of the turn.
        committed.unwrap_or_else(|| told_result(outcome.borrow().clone()))
    }

    /// On a held turn: commits batch `id` if it is still open (`Some` with the `COMMIT`'s
    /// result); `None` when another holder committed it.
    async fn commit_if_open(&self, mut turn: Turn, id: u64) -> Option<Result<(), sqlx::Error>> {
        let still_open = {
            let state = self.state();
            state.open && state.id == id
        };
        match turn.as_mut() {
            Some(conn) if still_open => Some(self.commit_open(conn).await),
            _ => None,
        }
    }
}

/// What a writer of a batch answers for the batch's told outcome (`None`: never told, which
/// the store does not do: a batch's sender is replaced only after it told).
fn told_result(told: Option<Outcome>) -> Result<(), sqlx::Error> {
    match told {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(sqlx::Error::Protocol(format!(
            "the shared write transaction's COMMIT failed: {e}"
        ))),
        None => Err(sqlx::Error::Protocol(
            "the shared write transaction ended without an outcome".into(),
        )),
    }
}

/// A kept write waiting for its batch's outcome, or committing it; dropped before the outcome
/// came (the writer was cancelled), it leaves a task that commits the batch if nobody else
/// did (a `COMMIT` that already ran finds nothing left to commit and succeeds) and tells its
/// writers.
struct Pending {
    batches: Option<Arc<Batches>>,
    id: u64,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let (Some(batches), Ok(runtime)) =
            (self.batches.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let id = self.id;
        runtime.spawn(async move {
            let turn = batches.turn().await;
            let _ = batches.commit_if_open(turn, id).await;
        });
    }
}

impl Member {
    /// Keeps the write (`RELEASE` of its savepoint, if it has one), gives the turn on, and
    /// returns once the batch that holds it has committed: by this writer when nobody waits
    /// for the turn, the batch is full or the turn comes back to it first; by another writer
    /// otherwise.
    ///
    /// # Errors
    /// The `RELEASE`'s error (the write is rolled back), or the batch's `COMMIT`'s.
    pub(crate) async fn release(mut self) -> Result<(), sqlx::Error> {
        if self.savepoint {
            Tm::commit(&mut self.conn).await?;
            self.savepoint = false;
        }
        self.kept = true;
        let batches = self.batches.clone();
        let (id, outcome, full) = {
            let mut state = batches.state();
            state.writes += 1;
            (
                state.id,
                state.outcome.subscribe(),
                state.writes >= MAX_WRITES,
            )
        };
        // Full, or nobody to share it with: commit now (committing early is always safe).
        let alone = batches.waiting.load(std::sync::atomic::Ordering::Acquire) == 0;
        if full || alone {
            // Cancelled mid-`COMMIT` (one sent to the connection's worker runs anyway), it
            // leaves the task that finishes the batch and tells its writers.
            let mut pending = Pending {
                batches: Some(batches.clone()),
                id,
            };
            let committed = batches.commit_open(&mut self.conn).await;
            pending.batches = None;
            return committed;
        }
        drop(self);
        batches.settle(id, outcome).await
    }

    /// Undoes the write (`ROLLBACK TO` its savepoint); the batch's other writes stay. A batch
    /// with no write left in it is rolled back whole.
    ///
    /// # Errors
    /// The `ROLLBACK TO`'s error.
    pub(crate) async fn rollback(mut self) -> Result<(), sqlx::Error> {
        let rolled = if self.savepoint {
            Tm::rollback(&mut self.conn).await
        } else {
            Ok(())
        };
        self.savepoint = false;
        if rolled.is_err() {
            self.batches.state().broken = true;
        }
        let batches = self.batches.clone();
        batches.close_if_empty(&mut self.conn).await;
        rolled
    }
}

impl std::ops::Deref for Member {
    type Target = AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl std::ops::DerefMut for Member {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if self.savepoint {
            // Queued on the connection's worker, which runs it before any later statement.
            Tm::start_rollback(&mut self.conn);
        }
        let mut state = self.batches.state();
        if state.open && state.writes == 0 {
            // Nothing of the batch is kept: roll it back whole (also queued, after the first).
            Tm::start_rollback(&mut self.conn);
            state.open = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::store::Store;

    async fn store_with_table(dir: &std::path::Path) -> Store {
        let store = Store::open(&dir.join("p.db")).await.unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .execute(store.pool())
            .await
            .unwrap();
        store
    }

    async fn rows(store: &Store) -> Vec<String> {
        sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(store.pool())
            .await
            .unwrap()
    }

    /// One writer's transaction: inserts `k`, then commits, rolls back, or fails (dropped);
    /// after a commit, whether another connection of the pool sees the row.
    async fn write(store: Store, k: &'static str, end: &'static str) -> Result<bool, String> {
        let mut tx = store.begin_write().await.map_err(|e| e.to_string())?;
        sqlx::query("INSERT INTO t (k) VALUES ($1)")
            .bind(k)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        match end {
            "commit" => tx.commit().await.map_err(|e| e.to_string())?,
            "rollback" => {
                tx.rollback().await.map_err(|e| e.to_string())?;
                return Ok(false);
            }
            _ => return Err("dropped".into()),
        }
        let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t WHERE k = $1")
            .bind(k)
            .fetch_one(store.pool())
            .await
            .map_err(|e| e.to_string())?;
        Ok(seen == 1)
    }

    fn batches_opened(store: &Store) -> u64 {
        store.batches.state().id
    }

    #[tokio::test]
    async fn queued_writers_share_one_commit_and_each_returns_with_its_row_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_table(dir.path()).await;
        let before = batches_opened(&store);
        // The turn held here, six writers queue behind it.
        let turn = store.batches.turn().await;
        let mut writers = Vec::new();
        for (k, end) in [
            ("a", "commit"),
            ("b", "commit"),
            ("c", "rollback"),
            ("d", "commit"),
            ("e", "drop"),
            ("f", "commit"),
        ] {
            writers.push((k, tokio::spawn(write(store.clone(), k, end))));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(turn);
        for (k, writer) in writers {
            let answer = writer.await.unwrap();
            match k {
                "c" => assert_eq!(answer, Ok(false)),
                "e" => assert_eq!(answer, Err("dropped".into())),
                // Committed, and visible to other connections, when its commit returned.
                _ => assert_eq!(answer, Ok(true), "{k}"),
            }
        }
        // The rolled-back and the dropped writes left nothing; the others all stayed.
        assert_eq!(rows(&store).await, ["a", "b", "d", "f"]);
        assert_eq!(
            batches_opened(&store) - before,
            1,
            "the six writers shared one transaction"
        );
        // A lone writer commits at once, in a batch of its own.
        assert_eq!(write(store.clone(), "g", "commit").await, Ok(true));
        assert_eq!(batches_opened(&store) - before, 2);
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_writer_of_the_batch_and_keeps_none_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_table(dir.path()).await;
        // A deferred foreign key is checked at COMMIT, not at a savepoint's RELEASE.
        sqlx::query("CREATE TABLE parent (id TEXT PRIMARY KEY)")
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query(
            "CREATE TABLE child (p TEXT REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
        )
        .execute(store.pool())
        .await
        .unwrap();
        let turn = store.batches.turn().await;
        let good = tokio::spawn(write(store.clone(), "a", "commit"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let bad = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin_write().await?;
                sqlx::query("INSERT INTO child (p) VALUES ('missing')")
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(turn);
        let good = good.await.unwrap();
        let bad = bad.await.unwrap();
        assert!(
            good.as_ref().is_err_and(|e| e.contains("FOREIGN KEY")),
            "{good:?}"
        );
        assert!(bad.is_err(), "{bad:?}");
        assert!(rows(&store).await.is_empty());
        let children: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM child")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(children, 0);
        // The writer connection goes on.
        assert_eq!(write(store.clone(), "b", "commit").await, Ok(true));
    }

    /// A writer of `a` that has released its savepoint and waits for its batch's outcome,
    /// and the turn, held here right behind it (its batch cannot commit meanwhile).
    async fn writer_waiting_in_a_batch(
        store: &Store,
    ) -> (tokio::task::JoinHandle<Result<bool, String>>, super::Turn) {
        let turn = store.batches.turn().await;
        let writer = tokio::spawn(write(store.clone(), "a", "commit"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let next = {
            let batches = store.batches.clone();
            tokio::spawn(async move { batches.turn().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(turn);
        let turn = next.await.unwrap();
        assert_eq!(
            store.batches.state().writes,
            1,
            "the write waits in the batch"
        );
        (writer, turn)
    }

    #[tokio::test]
    async fn a_writer_is_not_answered_before_its_batch_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_table(dir.path()).await;
        let (writer, turn) = writer_waiting_in_a_batch(&store).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !writer.is_finished(),
            "the writer was answered before its batch committed"
        );
        assert!(rows(&store).await.is_empty());
        drop(turn);
        assert_eq!(writer.await.unwrap(), Ok(true));
    }

    #[tokio::test]
    async fn a_writer_cancelled_while_it_waits_for_the_commit_is_still_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_table(dir.path()).await;
        let (writer, turn) = writer_waiting_in_a_batch(&store).await;
        writer.abort();
        assert!(writer.await.unwrap_err().is_cancelled());
        assert!(rows(&store).await.is_empty(), "not committed yet");
        drop(turn);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while rows(&store).await.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the cancelled writer's batch was never committed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(rows(&store).await, ["a"]);
    }

    #[tokio::test]
    async fn single_statements_share_the_batch_and_are_answered_once_it_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_table(dir.path()).await;
        let before = batches_opened(&store);
        let turn = store.batches.turn().await;
        let writer = tokio::spawn(write(store.clone(), "a", "commit"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let solo = |k: &'static str, keep: bool| {
            let store = store.clone();
            tokio::spawn(async move {
                let insert = sqlx::query("INSERT INTO t (k) VALUES ($1)").bind(k);
                let mut conn = store.write_conn().await?;
                let inserted = insert.execute(&mut *conn).await;
                if inserted.is_ok() && keep {
                    conn.written().await?;
                } else {
                    // A statement that fails (here: the key exists) undoes only itself.
                    return inserted.map(|_| false);
                }
                let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t WHERE k = $1")
                    .bind(k)
                    .fetch_one(store.pool())
                    .await?;
                Ok::<_, sqlx::Error>(seen == 1)
            })
        };
        let b = solo("b", true);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let duplicate = solo("a", true);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let c = solo("c", true);
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(turn);
        assert_eq!(writer.await.unwrap(), Ok(true));
        assert!(b.await.unwrap().unwrap(), "b committed when answered");
        assert!(duplicate.await.unwrap().is_err());
        assert!(c.await.unwrap().unwrap(), "c committed when answered");
        assert_eq!(rows(&store).await, ["a", "b", "c"]);
        assert_eq!(batches_opened(&store) - before, 1, "one shared transaction");
        // A connection dropped without `written` when nothing else of its batch is kept: its
        // statement is undone and no transaction is left open.
        assert!(!solo("d", false).await.unwrap().unwrap());
        assert!(!store.batches.state().open, "no batch is left open");
        assert_eq!(write(store.clone(), "e", "commit").await, Ok(true));
        assert_eq!(rows(&store).await, ["a", "b", "c", "e"]);
    }
}
