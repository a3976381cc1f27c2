// Modified for paywarden (2026-12-05): sqlx-sqlite 0.8.6 with vendor/sqlx-sqlite.patch applied,
// which answers `ConnectionWorker::ping` of an idle worker without a round trip through the
// worker thread; checks that a custom `BEGIN` statement opened a transaction on the worker's
// thread instead of in a second round trip, rolling back one that failed after opening it; and
// runs on the caller's thread, without the worker, what cannot wait for a lock: a `BEGIN` or
// `COMMIT` that SQLite answers without its busy handler, the statements of a transaction that
// holds the write lock, and queries outside a transaction or in a WAL read transaction within a
// time budget, run again on the worker when they meet a lock or run past it (see docs/performance.md, "sqlx's ping on
// release", "One round trip per BEGIN", "Write transactions on the caller's thread" and
// "Queries on the caller's thread", in the paywarden repository).

use std::borrow::Cow;
use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::ffi::c_void;
use std::os::raw::c_int;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_intrusive::sync::{Mutex, MutexGuard};
use libsqlite3_sys::{
    sqlite3, sqlite3_busy_timeout, sqlite3_next_stmt, sqlite3_progress_handler, sqlite3_stmt_busy,
    sqlite3_stmt_readonly, sqlite3_txn_state, SQLITE_INTERRUPT, SQLITE_TXN_WRITE,
};
use tracing::span::Span;

use sqlx_core::describe::Describe;
use sqlx_core::error::Error;
use sqlx_core::transaction::{
    begin_ansi_transaction_sql, commit_ansi_transaction_sql, rollback_ansi_transaction_sql,
};
use sqlx_core::Either;

use crate::connection::describe::describe;
use crate::connection::establish::EstablishParams;
use crate::connection::execute::{self, CurrentRow, ExecuteIter};
use crate::connection::handle::{has_primary_code, is_busy, names_pragma};
use crate::connection::ConnectionState;
use crate::statement::starts_as_query;
use crate::{Sqlite, SqliteArguments, SqliteQueryResult, SqliteRow, SqliteStatement};

use super::serialize::{deserialize, serialize, SchemaName, SqliteOwnedBuf};

// Each SQLite connection has a dedicated thread.

// TODO: Tweak this so that we can use a thread pool per pool of SQLite3 connections to reduce
//       OS resource usage. Low priority because a high concurrent load for SQLite3 is very
//       unlikely.

pub(crate) struct ConnectionWorker {
    command_tx: CommandSender,
    /// Mutex for locking access to the database.
    pub(crate) shared: Arc<WorkerSharedState>,
}

pub(crate) struct WorkerSharedState {
    transaction_depth: AtomicUsize,
    cached_statements_size: AtomicUsize,
    /// paywarden's patch: whether statements may run on the caller's thread (not on a
    /// shared-cache connection: `EstablishParams::shared_cache`).
    inline: bool,
    /// paywarden's patch: `SqliteConnectOptions::inline_read_budget`.
    inline_read_budget: Option<Duration>,
    /// paywarden's patch: whether the open transaction was begun on the caller's thread on a
    /// database in WAL mode, so that its statements may run there once it holds the write
    /// lock (`ConnectionWorker::inline`); set by every `BEGIN` at depth 0.
    wal_transaction: AtomicBool,
    /// paywarden's patch: the connection was left in a state nothing can repair (a failed
    /// `BEGIN` whose transaction could not be rolled back on the caller's thread): nothing
    /// more runs there, and `ping` fails so that the pool closes it.
    poisoned: AtomicBool,
    pub(crate) conn: Mutex<ConnectionState>,
}

impl WorkerSharedState {
    pub(crate) fn get_transaction_depth(&self) -> usize {
        self.transaction_depth.load(Ordering::Acquire)
    }

    pub(crate) fn get_cached_statements_size(&self) -> usize {
        self.cached_statements_size.load(Ordering::Acquire)
    }
}

enum Command {
    Prepare {
        query: Box<str>,
        tx: oneshot::Sender<Result<SqliteStatement<'static>, Error>>,
    },
    Describe {
        query: Box<str>,
        tx: oneshot::Sender<Result<Describe<Sqlite>, Error>>,
    },
    Execute {
        query: Box<str>,
        arguments: Option<SqliteArguments<'static>>,
        persistent: bool,
        tx: flume::Sender<Result<Either<SqliteQueryResult, SqliteRow>, Error>>,
        limit: Option<usize>,
    },
    Serialize {
        schema: Option<SchemaName>,
        tx: oneshot::Sender<Result<SqliteOwnedBuf, Error>>,
    },
    Deserialize {
        schema: Option<SchemaName>,
        data: SqliteOwnedBuf,
        read_only: bool,
        tx: oneshot::Sender<Result<(), Error>>,
    },
    Begin {
        tx: rendezvous_oneshot::Sender<Result<(), Error>>,
        statement: Option<Cow<'static, str>>,
    },
    Commit {
        tx: rendezvous_oneshot::Sender<Result<(), Error>>,
    },
    Rollback {
        tx: Option<rendezvous_oneshot::Sender<Result<(), Error>>>,
    },
    ClearCache {
        tx: oneshot::Sender<()>,
    },
    Ping {
        tx: oneshot::Sender<()>,
    },
    Shutdown {
        tx: oneshot::Sender<()>,
    },
}

impl ConnectionWorker {
    pub(crate) async fn establish(params: EstablishParams) -> Result<Self, Error> {
        let (establish_tx, establish_rx) = oneshot::channel();

        thread::Builder::new()
            .name(params.thread_name.clone())
            .spawn(move || {
                let (command_tx, command_rx) = flume::bounded(params.command_channel_size);
                let inline = !params.shared_cache();

                let conn = match params.establish() {
                    Ok(conn) => conn,
                    Err(e) => {
                        establish_tx.send(Err(e)).ok();
                        return;
                    }
                };

                let shared = Arc::new(WorkerSharedState {
                    transaction_depth: AtomicUsize::new(0),
                    cached_statements_size: AtomicUsize::new(0),
                    inline,
                    inline_read_budget: params.inline_read_budget,
                    wal_transaction: AtomicBool::new(false),
                    poisoned: AtomicBool::new(false),
                    // note: upstream, the worker unlocked the mutex in `Command::UnlockDb` and
                    // relocked it at once, which needed a fair mutex. paywarden's patch locks it
                    // per command (and `unlock_db` locks after a ping); fairness is kept.
                    conn: Mutex::new(conn, true),
                });
                if establish_tx
                    .send(Ok(Self {
                        command_tx: CommandSender {
                            tx: command_tx,
                            unfinished: Arc::new(AtomicUsize::new(0)),
                        },
                        shared: Arc::clone(&shared),
                    }))
                    .is_err()
                {
                    return;
                }

                // If COMMIT or ROLLBACK is processed but not acknowledged, there would be another
                // ROLLBACK sent when the `Transaction` drops. We need to ignore it otherwise we
                // would rollback an already completed transaction.
                let mut ignore_next_start_rollback = false;

                for (cmd, span, unfinished) in command_rx {
                    // paywarden's patch: the command counts as finished when this iteration
                    // ends, however it ends (after the answer was sent).
                    let _unfinished = unfinished;
                    // paywarden's patch: a connection left in a state nothing can repair
                    // (`WorkerSharedState::poisoned`) runs nothing more: every command but the
                    // shutdown is answered `WorkerCrashed` (never dropped unanswered: a dropped
                    // row channel reads as a statement that returned nothing), until the pool,
                    // whose ping now fails, closes the connection.
                    if shared.poisoned.load(Ordering::Acquire)
                        && !matches!(cmd, Command::Shutdown { .. })
                    {
                        refuse(cmd);
                        continue;
                    }
                    // paywarden's patch: the worker holds the connection only while it runs a
                    // command (declared after `_unfinished`, so released before the command
                    // counts as finished), so that a statement of a write transaction can run
                    // on the caller's thread between commands (`ConnectionWorker::inline`).
                    let mut conn = match shared.conn.try_lock() {
                        Some(conn) => conn,
                        None => futures_executor::block_on(shared.conn.lock()),
                    };
                    let _guard = span.enter();
                    match cmd {
                        Command::Prepare { query, tx } => {
                            tx.send(prepare(&mut conn, &query).map(|prepared| {
                                update_cached_statements_size(
                                    &conn,
                                    &shared.cached_statements_size,
                                );
                                prepared
                            }))
                            .ok();
                        }
                        Command::Describe { query, tx } => {
                            tx.send(describe(&mut conn, &query)).ok();
                        }
                        Command::Execute {
                            query,
                            arguments,
                            persistent,
                            tx,
                            limit
                        } => {
                            let iter = match execute::iter(&mut conn, &query, arguments, persistent)
                            {
                                Ok(iter) => iter,
                                Err(e) => {
                                    tx.send(Err(e)).ok();
                                    continue;
                                }
                            };
                            // paywarden's patch: the loop, shared with `execute_inline`.
                            let mut iter = iter;
                            run_statements(&mut iter, limit, |res| tx.send(res).is_ok());
                            drop(iter);

                            update_cached_statements_size(&conn, &shared.cached_statements_size);
                        }
                        Command::Begin { tx, statement } => {
                            let depth = shared.transaction_depth.load(Ordering::Acquire);
                            // paywarden's patch: the checks, shared with `begin_inline`; with
                            // the busy handler on, SQLite does not answer busy without waiting.
                            let res = begin_on(&shared, &mut conn, statement, true).and_then(
                                |began| if began { Ok(()) } else { Err(Error::BeginFailed) },
                            );
                            let res_ok = res.is_ok();

                            if tx.blocking_send(res).is_err() && res_ok {
                                // The BEGIN was processed but not acknowledged. This means no
                                // `Transaction` was created and so there is no way to commit /
                                // rollback this transaction. We need to roll it back
                                // immediately otherwise it would remain started forever.
                                if let Err(error) = conn
                                    .handle
                                    .exec(rollback_ansi_transaction_sql(depth + 1))
                                    .map(|_| {
                                        shared.transaction_depth.fetch_sub(1, Ordering::Release);
                                    })
                                {
                                    // The rollback failed. To prevent leaving the connection
                                    // in an inconsistent state we shutdown this worker which
                                    // causes any subsequent operation on the connection to fail.
                                    tracing::error!(%error, "failed to rollback cancelled transaction");
                                    break;
                                }
                            }
                        }
                        Command::Commit { tx } => {
                            let depth = shared.transaction_depth.load(Ordering::Acquire);

                            let res = if depth > 0 {
                                conn.handle
                                    .exec(commit_ansi_transaction_sql(depth))
                                    .map(|_| {
                                        shared.transaction_depth.fetch_sub(1, Ordering::Release);
                                    })
                            } else {
                                Ok(())
                            };
                            let res_ok = res.is_ok();

                            if tx.blocking_send(res).is_err() && res_ok {
                                // The COMMIT was processed but not acknowledged. This means that
                                // the `Transaction` doesn't know it was committed and will try to
                                // rollback on drop. We need to ignore that rollback.
                                ignore_next_start_rollback = true;
                            }
                        }
                        Command::Rollback { tx } => {
                            if ignore_next_start_rollback && tx.is_none() {
                                ignore_next_start_rollback = false;
                                continue;
                            }

                            let depth = shared.transaction_depth.load(Ordering::Acquire);

                            let res = if depth > 0 {
                                conn.handle
                                    .exec(rollback_ansi_transaction_sql(depth))
                                    .map(|_| {
                                        shared.transaction_depth.fetch_sub(1, Ordering::Release);
                                    })
                            } else {
                                Ok(())
                            };

                            let res_ok = res.is_ok();

                            if let Some(tx) = tx {
                                if tx.blocking_send(res).is_err() && res_ok {
                                    // The ROLLBACK was processed but not acknowledged. This means
                                    // that the `Transaction` doesn't know it was rolled back and
                                    // will try to rollback again on drop. We need to ignore that
                                    // rollback.
                                    ignore_next_start_rollback = true;
                                }
                            }
                        }
                        Command::Serialize { schema, tx } => {
                            tx.send(serialize(&mut conn, schema)).ok();
                        }
                        Command::Deserialize { schema, data, read_only, tx } => {
                            tx.send(deserialize(&mut conn, schema, data, read_only)).ok();
                        }
                        Command::ClearCache { tx } => {
                            conn.statements.clear();
                            update_cached_statements_size(&conn, &shared.cached_statements_size);
                            tx.send(()).ok();
                        }
                        Command::Ping { tx } => {
                            tx.send(()).ok();
                        }
                        Command::Shutdown { tx } => {
                            // drop the connection references before sending confirmation
                            // and ending the command loop
                            drop(conn);
                            drop(shared);
                            let _ = tx.send(());
                            return;
                        }
                    }
                }
            })?;

        establish_rx.await.map_err(|_| Error::WorkerCrashed)?
    }

    pub(crate) async fn prepare(&mut self, query: &str) -> Result<SqliteStatement<'static>, Error> {
        self.oneshot_cmd(|tx| Command::Prepare {
            query: query.into(),
            tx,
        })
        .await?
    }

    pub(crate) async fn describe(&mut self, query: &str) -> Result<Describe<Sqlite>, Error> {
        self.oneshot_cmd(|tx| Command::Describe {
            query: query.into(),
            tx,
        })
        .await?
    }

    pub(crate) async fn execute(
        &mut self,
        query: &str,
        args: Option<SqliteArguments<'_>>,
        chan_size: usize,
        persistent: bool,
        limit: Option<usize>,
    ) -> Result<flume::Receiver<Result<Either<SqliteQueryResult, SqliteRow>, Error>>, Error> {
        let (tx, rx) = flume::bounded(chan_size);

        self.command_tx
            .send_async((
                Command::Execute {
                    query: query.into(),
                    arguments: args.map(SqliteArguments::into_static),
                    persistent,
                    tx,
                    limit,
                },
                Span::current(),
            ))
            .await
            .map_err(|_| Error::WorkerCrashed)?;

        Ok(rx)
    }

    pub(crate) async fn begin(
        &mut self,
        statement: Option<Cow<'static, str>>,
    ) -> Result<(), Error> {
        if let Some(done) = self.begin_inline(&statement) {
            return done;
        }
        self.oneshot_cmd_with_ack(|tx| Command::Begin { tx, statement })
            .await?
    }

    pub(crate) async fn commit(&mut self) -> Result<(), Error> {
        if let Some(done) = self.commit_inline() {
            return done;
        }
        self.oneshot_cmd_with_ack(|tx| Command::Commit { tx })
            .await?
    }

    /// paywarden's patch: the connection locked for work on the caller's thread, when every
    /// command sent to the worker has finished (so nothing queued is overtaken) and it is not
    /// a shared-cache connection.
    fn idle(&self) -> Option<MutexGuard<'_, ConnectionState>> {
        if !self.shared.inline
            || self.shared.poisoned.load(Ordering::Acquire)
            || self.command_tx.unfinished.load(Ordering::Acquire) != 0
            || self.command_tx.is_disconnected()
        {
            return None;
        }
        self.shared.conn.try_lock()
    }

    /// paywarden's patch: `begin` on the caller's thread, as the worker's `Begin` command would
    /// run it ([`begin_on`]), when it needs no waiting: the worker is idle ([`Self::idle`]) and
    /// the statement, run with the busy handler off, did not answer `SQLITE_BUSY` (a `BEGIN
    /// IMMEDIATE` whose write lock another connection holds). `None`: the worker runs it (and
    /// waits in the busy handler). Synchronous, so a cancelled caller cannot leave a
    /// transaction it does not know of.
    fn begin_inline(&self, statement: &Option<Cow<'static, str>>) -> Option<Result<(), Error>> {
        // A custom statement of several statements goes to the worker: one that answered busy
        // part-way may have run (and committed) the statements before, which the worker would
        // then run again.
        if statement
            .as_deref()
            .is_some_and(|sql| sql.trim().trim_end_matches(';').contains(';'))
        {
            return None;
        }
        let mut conn = self.idle()?;
        match begin_on(&self.shared, &mut conn, statement.clone(), false) {
            Ok(true) => Some(Ok(())),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// paywarden's patch: `commit` on the caller's thread, as the worker's `Commit` command
    /// would run it, when the worker is idle ([`Self::idle`]) and the `COMMIT` (busy handler
    /// off) did not answer `SQLITE_BUSY` (which leaves the transaction open; the worker then
    /// commits it, waiting in the busy handler). In WAL mode a `COMMIT` takes no lock it does
    /// not hold, so it runs here; it may run SQLite's automatic checkpoint.
    fn commit_inline(&self) -> Option<Result<(), Error>> {
        let mut conn = self.idle()?;
        let depth = self.shared.transaction_depth.load(Ordering::Acquire);
        if depth == 0 {
            return Some(Ok(()));
        }
        match conn.handle.exec_without_waiting(&commit_ansi_transaction_sql(depth)) {
            Ok(true) => {
                self.shared.transaction_depth.fetch_sub(1, Ordering::Release);
                Some(Ok(()))
            }
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }

    pub(crate) async fn rollback(&mut self) -> Result<(), Error> {
        self.oneshot_cmd_with_ack(|tx| Command::Rollback { tx: Some(tx) })
            .await?
    }

    pub(crate) fn start_rollback(&mut self) -> Result<(), Error> {
        self.command_tx
            .send((Command::Rollback { tx: None }, Span::current()))
            .map_err(|_| Error::WorkerCrashed)
    }

    /// paywarden's patch (vendor/sqlx-sqlite.patch): sqlx-core pings every connection as it
    /// returns to the pool, which for SQLite was a wake-up of the worker thread and one of the
    /// caller per statement. An idle worker (alive, every command it was sent finished, no
    /// transaction open) needs no round trip to tell. Otherwise (a dropped transaction's
    /// rollback or a cancelled statement still queued or running) the ping goes through the
    /// worker as before, so the pool gets the connection back only once that work is done.
    pub(crate) async fn ping(&mut self) -> Result<(), Error> {
        if self.command_tx.is_disconnected() || self.shared.poisoned.load(Ordering::Acquire) {
            return Err(Error::WorkerCrashed);
        }
        if self.command_tx.unfinished.load(Ordering::Acquire) == 0
            && self.shared.get_transaction_depth() == 0
        {
            return Ok(());
        }
        self.oneshot_cmd(|tx| Command::Ping { tx }).await
    }

    pub(crate) async fn deserialize(
        &mut self,
        schema: Option<SchemaName>,
        data: SqliteOwnedBuf,
        read_only: bool,
    ) -> Result<(), Error> {
        self.oneshot_cmd(|tx| Command::Deserialize {
            schema,
            data,
            read_only,
            tx,
        })
        .await?
    }

    pub(crate) async fn serialize(
        &mut self,
        schema: Option<SchemaName>,
    ) -> Result<SqliteOwnedBuf, Error> {
        self.oneshot_cmd(|tx| Command::Serialize { schema, tx })
            .await?
    }

    async fn oneshot_cmd<F, T>(&mut self, command: F) -> Result<T, Error>
    where
        F: FnOnce(oneshot::Sender<T>) -> Command,
    {
        let (tx, rx) = oneshot::channel();

        self.command_tx
            .send_async((command(tx), Span::current()))
            .await
            .map_err(|_| Error::WorkerCrashed)?;

        rx.await.map_err(|_| Error::WorkerCrashed)
    }

    async fn oneshot_cmd_with_ack<F, T>(&mut self, command: F) -> Result<T, Error>
    where
        F: FnOnce(rendezvous_oneshot::Sender<T>) -> Command,
    {
        let (tx, rx) = rendezvous_oneshot::channel();

        self.command_tx
            .send_async((command(tx), Span::current()))
            .await
            .map_err(|_| Error::WorkerCrashed)?;

        rx.recv().await.map_err(|_| Error::WorkerCrashed)
    }

    pub(crate) async fn clear_cache(&mut self) -> Result<(), Error> {
        self.oneshot_cmd(|tx| Command::ClearCache { tx }).await
    }

    /// paywarden's patch: the worker holds the connection only while it runs a command, so
    /// the handle is locked out of it once every command sent before has finished (a ping
    /// through the worker waits for them; the caller's `&mut` keeps new ones from being sent
    /// while the guard lives).
    pub(crate) async fn unlock_db(&mut self) -> Result<MutexGuard<'_, ConnectionState>, Error> {
        self.oneshot_cmd(|tx| Command::Ping { tx }).await?;
        Ok(self.shared.conn.lock().await)
    }

    /// paywarden's patch: the connection, locked for a statement on the caller's thread
    /// ([`execute_inline`]), when the worker is idle ([`Self::idle`]: every command sent to it
    /// has finished, so the statement does not overtake one) and either
    /// - ([`InlineMode::Write`]) a transaction begun on the caller's thread on a database in
    ///   WAL mode is open and holds the main database's write lock with no other database
    ///   attached (`ConnectionHandle::main_writes`, `has_attached`: it began with `BEGIN
    ///   IMMEDIATE` or has written). Such a statement reads its transaction's snapshot and
    ///   writes under the lock it holds, so it never enters the busy handler; running it here
    ///   spares the worker thread's wake-up and the caller's while the write lock is held; or
    /// - ([`InlineMode::Read`]) no transaction is open, or a transaction begun on the caller's
    ///   thread on a database in WAL mode is open without the main database's write lock (a
    ///   read transaction: its statements so far only read), no other database is attached
    ///   (its locks are not the main database's), the connection has an inline read budget
    ///   (`SqliteConnectOptions::inline_read_budget`), `query` starts as a query
    ///   (`starts_as_query`: writes go straight to the worker) and names no pragma
    ///   (`names_pragma`: a table-valued pragma reads or sets the busy timeout `ReadLimits`
    ///   changes, or writes through statements of its own), and the application set no
    ///   progress handler: a query may run here within the budget. In a WAL read transaction a
    ///   query reads the transaction's snapshot (taken by its first read, here or on the
    ///   worker) and, once that is taken, cannot meet a lock; SQLite rolls nothing back for a
    ///   read-only statement it interrupts or answers busy, so the transaction and its
    ///   snapshot stay as they were for the worker's run of it. A query that writes through
    ///   statements of its own (an FTS3/4 `optimize()`) is never interrupted once it writes
    ///   ([`deadline_passed`]), since that would roll the whole transaction back; should
    ///   SQLite still end the transaction, the statement answers an error and the connection
    ///   is closed ([`execute_inline`]) rather than run again outside it.
    ///
    /// `None` otherwise: the statement goes to the worker.
    pub(crate) fn inline(&self, query: &str) -> Option<Inline<'_>> {
        let in_transaction = self.shared.get_transaction_depth() != 0;
        if in_transaction && !self.shared.wal_transaction.load(Ordering::Acquire) {
            return None;
        }
        // The budget and the query's text are checked before the lock, so that a write
        // outside a transaction (it never runs here) does not take it. A text that names a
        // pragma stays on the worker: a table-valued pragma (`pragma_busy_timeout`,
        // `pragma_optimize`) is a query that reads or sets what `ReadLimits` changes, or
        // writes through statements of its own.
        let budget = self
            .shared
            .inline_read_budget
            .filter(|_| starts_as_query(query) && !names_pragma(query.as_bytes()));
        if !in_transaction && budget.is_none() {
            return None;
        }
        let mut conn = self.idle()?;
        if in_transaction && conn.handle.main_writes() {
            // A write transaction: every statement runs here, unless a database is attached
            // (its lock is not the one the transaction holds): then all go to the worker.
            return (!conn.handle.has_attached()).then_some(Inline {
                conn,
                mode: InlineMode::Write,
            });
        }
        if conn.handle.has_attached() || conn.has_progress_handler() {
            return None;
        }
        Some(Inline {
            conn,
            mode: InlineMode::Read {
                budget: budget?,
                in_transaction,
            },
        })
    }

    /// Send a command to the worker to shut down the processing thread.
    ///
    /// A `WorkerCrashed` error may be returned if the thread has already stopped.
    pub(crate) fn shutdown(&mut self) -> impl Future<Output = Result<(), Error>> {
        let (tx, rx) = oneshot::channel();

        let send_res = self
            .command_tx
            .send((Command::Shutdown { tx }, Span::current()))
            .map_err(|_| Error::WorkerCrashed);

        async move {
            send_res?;

            // wait for the response
            rx.await.map_err(|_| Error::WorkerCrashed)
        }
    }
}

/// paywarden's patch: the sender of a worker's commands. Each command travels with an
/// [`Unfinished`] that counts it from before it is queued until it is dropped: by the worker
/// once it has finished the command, or with the message wherever else the message is dropped
/// (a failed send, a send future dropped before the message was queued, a queue dropped
/// with the worker). So each command is counted exactly once, whatever happens to it.
struct CommandSender {
    tx: flume::Sender<Message>,
    unfinished: Arc<AtomicUsize>,
}

/// A command as the worker receives it.
type Message = (Command, Span, Unfinished);

impl CommandSender {
    fn message(&self, (command, span): (Command, Span)) -> Message {
        self.unfinished.fetch_add(1, Ordering::AcqRel);
        (command, span, Unfinished(Arc::clone(&self.unfinished)))
    }

    fn send(&self, msg: (Command, Span)) -> Result<(), flume::SendError<Message>> {
        self.tx.send(self.message(msg))
    }

    async fn send_async(&self, msg: (Command, Span)) -> Result<(), flume::SendError<Message>> {
        self.tx.send_async(self.message(msg)).await
    }

    fn is_disconnected(&self) -> bool {
        self.tx.is_disconnected()
    }
}

/// paywarden's patch: one command counted as unfinished until this is dropped.
struct Unfinished(Arc<AtomicUsize>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn prepare(conn: &mut ConnectionState, query: &str) -> Result<SqliteStatement<'static>, Error> {
    // prepare statement object (or checkout from cache)
    let statement = conn.statements.get(query, true)?;

    let mut parameters = 0;
    let mut columns = None;
    let mut column_names = None;

    while let Some(statement) = statement.prepare_next(&mut conn.handle)? {
        parameters += statement.handle.bind_parameter_count();

        // the first non-empty statement is chosen as the statement we pull columns from
        if !statement.columns.is_empty() && columns.is_none() {
            columns = Some(Arc::clone(statement.columns));
            column_names = Some(Arc::clone(statement.column_names));
        }
    }

    Ok(SqliteStatement {
        sql: Cow::Owned(query.to_string()),
        columns: columns.unwrap_or_default(),
        column_names: column_names.unwrap_or_default(),
        parameters,
    })
}

fn update_cached_statements_size(conn: &ConnectionState, size: &AtomicUsize) {
    size.store(conn.statements.len(), Ordering::Release);
}

/// paywarden's patch: a connection locked for a statement on the caller's thread
/// ([`ConnectionWorker::inline`]).
pub(crate) struct Inline<'a> {
    conn: MutexGuard<'a, ConnectionState>,
    mode: InlineMode,
}

/// paywarden's patch: why a statement may run on the caller's thread.
enum InlineMode {
    /// A statement of a write transaction that holds its lock: it cannot wait for one.
    Write,
    /// A query outside a transaction (`in_transaction` false) or in a WAL read transaction,
    /// interrupted once `budget` is spent (unless it has begun to write: [`deadline_passed`]).
    Read {
        budget: Duration,
        in_transaction: bool,
    },
}

/// paywarden's patch: how often (in SQLite virtual machine instructions) a query on the
/// caller's thread checks its deadline.
const DEADLINE_CHECK_INSTRUCTIONS: c_int = 1000;

/// paywarden's patch: runs `query` on the caller's thread on a connection that
/// [`ConnectionWorker::inline`] locked, as the worker's `Execute` command would
/// ([`run_statements`]: the same statement cache, at most `limit` rows, stopping at the first
/// error), and returns what the worker would have sent, in order, its rows read as `R`
/// (`CurrentRow`: the `Any` driver's rows without a `SqliteRow` in between); or `None`, having
/// changed nothing, when the worker has to run it (then `arguments` go to the worker).
///
/// It runs to the end before returning: the rows are held in memory at once, and a caller
/// that stops reading early does not stop the later statements of a multi-statement query.
/// - In a write transaction ([`InlineMode::Write`]) every statement runs here.
/// - Outside a transaction, or in a WAL read transaction ([`InlineMode::Read`]), only queries run here
///   (`StatementHandle::is_query`), with SQLite's busy handler off and a progress handler
///   that interrupts the statement once the budget is spent. `None` (the results so far
///   discarded: they came from queries only, so running them again repeats nothing) when a
///   statement is not a query (it did not run), meets a lock (`SQLITE_BUSY`), or is
///   interrupted at the deadline; also when the busy timeout cannot be read.
pub(crate) fn execute_inline<R: CurrentRow>(
    worker: &ConnectionWorker,
    inline: &mut Inline<'_>,
    query: &str,
    arguments: &Option<SqliteArguments<'_>>,
    persistent: bool,
    limit: Option<usize>,
) -> Option<Vec<Result<Either<SqliteQueryResult, R>, Error>>> {
    let conn = &mut *inline.conn;
    // A query's deadline; `None` for the statements of a write transaction.
    let (deadline, in_transaction) = match inline.mode {
        InlineMode::Write => (None, true),
        InlineMode::Read {
            budget,
            in_transaction,
        } => (
            Some(Deadline {
                at: Instant::now().checked_add(budget),
                passed: Cell::new(false),
                db: conn.handle.as_ptr(),
            }),
            in_transaction,
        ),
    };
    let mut results = Vec::new();
    let complete = {
        // Declared before the statements, so dropped after them.
        let _limits = match &deadline {
            Some(deadline) => Some(ReadLimits::set(conn, deadline)?),
            None => None,
        };
        let (refused, mut iter) = match execute::iter_with(
            conn,
            query,
            Cow::Borrowed(arguments),
            persistent,
            deadline.is_some(),
        ) {
            Err(e) => {
                results.push(Err(e));
                (false, None)
            }
            Ok(mut iter) => {
                let refused = run_statements(&mut iter, limit, |res| {
                    results.push(res);
                    true
                });
                (refused, Some(iter))
            }
        };
        // A query stands unless a limit stopped it: a statement that is not a query, the
        // deadline, or a lock (`SQLITE_BUSY`) or interruption met on the way.
        let complete = deadline.as_ref().is_none_or(|deadline| {
            !refused
                && !deadline.passed.get()
                && !results.iter().any(|res| match res {
                    Err(e) => is_busy(e) || has_primary_code(e, SQLITE_INTERRUPT),
                    Ok(_) => false,
                })
        });
        if let (false, Some(iter)) = (complete, iter.as_mut()) {
            iter.discard_log();
        }
        complete
    };
    update_cached_statements_size(conn, &worker.shared.cached_statements_size);
    if in_transaction && !conn.handle.in_transaction() {
        // SQLite ended the transaction (it rolls back the whole transaction when a statement
        // that writes fails with `SQLITE_NOMEM`, `SQLITE_IOERR` or `SQLITE_FULL`): running
        // the query again, on the worker, would run it outside the transaction the caller
        // holds. The connection cannot be trusted with the caller's transaction any more.
        return Some(vec![Err(poison(
            &worker.shared,
            Error::Protocol(
                "SQLite ended the transaction while a statement ran on the caller's thread; \
                 the connection is closed (paywarden's sqlx-sqlite patch)"
                    .into(),
            ),
        ))]);
    }
    complete.then_some(results)
}

/// paywarden's patch: the deadline of a query on the caller's thread, read by
/// [`deadline_passed`].
struct Deadline {
    /// `None`: the budget reaches past what `Instant` can hold (no deadline).
    at: Option<Instant>,
    /// Set by the handler when it interrupts the statement.
    passed: Cell<bool>,
    /// The connection running the query.
    db: *mut sqlite3,
}

/// paywarden's patch: SQLite's progress handler for a query on the caller's thread: non-zero
/// (interrupt the statement, `SQLITE_INTERRUPT`) once its deadline has passed, unless the
/// query has begun to write ([`writing`]): SQLite rolls back the whole transaction when it
/// interrupts a statement that writes (`sqlite3VdbeHalt`: only a read-only statement's
/// interruption leaves it), and a query can write through statements of its own (an FTS3/4
/// `optimize()`), so such a query runs to its end here, past the budget, and its results
/// stand.
extern "C" fn deadline_passed(deadline: *mut c_void) -> c_int {
    // SAFETY: the handler is registered with a pointer to a `Deadline` that outlives the
    // registration (`ReadLimits`); it is only ever shared (`passed` is a `Cell`), and SQLite
    // calls the handler on the thread running the statement, which is the `Deadline`'s.
    let deadline = unsafe { &*deadline.cast_const().cast::<Deadline>() };
    if deadline.at.is_some_and(|at| Instant::now() >= at) && !writing(deadline.db) {
        deadline.passed.set(true);
        1
    } else {
        0
    }
}

/// paywarden's patch: whether a statement of `db` that writes is running
/// (`sqlite3_stmt_busy` and not `sqlite3_stmt_readonly`: a query's own statements, prepared
/// and stepped while it runs, are among the connection's statements) or a database of it
/// holds its write lock (`sqlite3_txn_state` is `SQLITE_TXN_WRITE`: a write has happened).
fn writing(db: *mut sqlite3) -> bool {
    // SAFETY: called from the progress handler, on the thread that holds the connection, with
    // the connection's own handle; `sqlite3_next_stmt` walks its statements without changing
    // them, and none is finalized while the handler runs.
    unsafe {
        if sqlite3_txn_state(db, std::ptr::null()) == SQLITE_TXN_WRITE {
            return true;
        }
        let mut stmt = sqlite3_next_stmt(db, std::ptr::null_mut());
        while !stmt.is_null() {
            if sqlite3_stmt_busy(stmt) != 0 && sqlite3_stmt_readonly(stmt) == 0 {
                return true;
            }
            stmt = sqlite3_next_stmt(db, stmt);
        }
        false
    }
}

/// paywarden's patch: while it lives, the connection's busy handler is off and
/// [`deadline_passed`] is its progress handler; dropping it removes the handler and puts the
/// busy timeout back (also on unwinding).
struct ReadLimits {
    db: *mut sqlite3,
    busy_timeout: c_int,
}

impl ReadLimits {
    /// `None` (nothing changed) when the busy timeout cannot be read.
    fn set(conn: &mut ConnectionState, deadline: &Deadline) -> Option<Self> {
        let busy_timeout = conn.handle.pause_busy_handler()?;
        let db = conn.handle.as_ptr();
        // SAFETY: we have exclusive access to the database handle; `deadline` outlives the
        // registration, which `drop` removes.
        unsafe {
            sqlite3_progress_handler(
                db,
                DEADLINE_CHECK_INSTRUCTIONS,
                Some(deadline_passed),
                std::ptr::from_ref(deadline).cast_mut().cast(),
            );
        }
        Some(Self { db, busy_timeout })
    }
}

impl Drop for ReadLimits {
    fn drop(&mut self) {
        // SAFETY: the connection is still locked by the caller of `ReadLimits::set` (this
        // guard lives inside that borrow).
        unsafe {
            sqlite3_progress_handler(self.db, 0, None, std::ptr::null_mut());
            sqlite3_busy_timeout(self.db, self.busy_timeout);
        }
    }
}

/// paywarden's patch: the loop of sqlx-sqlite's `Execute` command, shared by the worker and
/// [`execute_inline`]: hands each result to `send` in order until `send` answers `false`,
/// after the first error, or with the `limit`-th row (the statement is reset before that row
/// is handed over, as 0.8.6 did). Returns whether it stopped at a statement that is not a
/// query, without running it (`ExecuteIter::refused`).
fn run_statements<R: CurrentRow>(
    iter: &mut ExecuteIter<'_, R>,
    limit: Option<usize>,
    mut send: impl FnMut(Result<Either<SqliteQueryResult, R>, Error>) -> bool,
) -> bool {
    let mut rows_returned = 0;
    while let Some(res) = iter.next() {
        if matches!(&res, Ok(Either::Right(_))) {
            rows_returned += 1;
            if limit.is_some_and(|limit| rows_returned >= limit) {
                iter.reset_statement();
                send(res);
                return false;
            }
        }
        let has_error = res.is_err();
        if !send(res) || has_error {
            break;
        }
    }
    iter.refused()
}

/// paywarden's patch: sqlx-sqlite's `Begin` command, for the worker (`wait`: the busy
/// handler as the connection has it) and for `ConnectionWorker::begin_inline` (busy handler
/// off). `Ok(true)`: the transaction began and the depth went up; `Ok(false)`: SQLite answered
/// busy (only without `wait`) and nothing was left open; `Err`: as 0.8.6 answers
/// (`InvalidSavePointStatement` for a custom statement inside a transaction; the statement's
/// error), plus `BeginFailed` for a custom statement that opened no transaction. A custom
/// statement that opened a transaction and then failed or met a lock (e.g. `BEGIN IMMEDIATE;
/// <a bad statement>`) is rolled back here, or the connection would go back to its pool inside
/// it; if that rollback fails the connection is poisoned.
fn begin_on(
    shared: &WorkerSharedState,
    conn: &mut ConnectionState,
    statement: Option<Cow<'static, str>>,
    wait: bool,
) -> Result<bool, Error> {
    let depth = shared.transaction_depth.load(Ordering::Acquire);
    let custom = statement.is_some();
    let sql = match statement {
        // custom `BEGIN` statements are not allowed if we're already in a transaction (we
        // need to issue a `SAVEPOINT` instead)
        Some(_) if depth > 0 => return Err(Error::InvalidSavePointStatement),
        Some(statement) => statement,
        None => begin_ansi_transaction_sql(depth),
    };
    // A transaction the application opened with its own SQL (sqlx does not count it) is not
    // this statement's to roll back.
    let opened_before = conn.handle.in_transaction();
    let ran = if wait {
        conn.handle.exec(sql).map(|()| true)
    } else {
        conn.handle.exec_without_waiting(&sql)
    };
    let res = match ran {
        // A custom statement must have opened a transaction.
        Ok(true) if custom && !conn.handle.in_transaction() => Err(Error::BeginFailed),
        other => other,
    };
    if !matches!(res, Ok(true))
        && custom
        && depth == 0
        && !opened_before
        && conn.handle.in_transaction()
    {
        if let Err(error) = conn.handle.exec("ROLLBACK") {
            let rollback = poison(shared, error);
            // The statement's own error is the answer; after a busy answer, the rollback's.
            return Err(match res {
                Err(e) => e,
                Ok(_) => rollback,
            });
        }
    }
    if let Ok(true) = res {
        if depth == 0 {
            // Statements of a transaction begun on the caller's thread in WAL mode may run
            // there (`ConnectionWorker::inline`).
            let wal = !wait && conn.handle.in_wal_mode();
            shared.wal_transaction.store(wal, Ordering::Release);
        }
        shared.transaction_depth.fetch_add(1, Ordering::Release);
    }
    res
}

/// paywarden's patch: answers a command the worker will not run, on a poisoned connection,
/// with `WorkerCrashed` (a ping has no error to carry: its sender is dropped, which its caller
/// reads as `WorkerCrashed`). The worker shuts down as usual instead of refusing a shutdown.
fn refuse(cmd: Command) {
    match cmd {
        Command::Prepare { tx, .. } => drop(tx.send(Err(Error::WorkerCrashed))),
        Command::Describe { tx, .. } => drop(tx.send(Err(Error::WorkerCrashed))),
        Command::Execute { tx, .. } => drop(tx.send(Err(Error::WorkerCrashed))),
        Command::Begin { tx, .. } | Command::Commit { tx } => {
            let _ = tx.blocking_send(Err(Error::WorkerCrashed));
        }
        Command::Rollback { tx } => {
            if let Some(tx) = tx {
                let _ = tx.blocking_send(Err(Error::WorkerCrashed));
            }
        }
        Command::Serialize { tx, .. } => drop(tx.send(Err(Error::WorkerCrashed))),
        Command::Deserialize { tx, .. } => drop(tx.send(Err(Error::WorkerCrashed))),
        Command::ClearCache { tx } | Command::Ping { tx } => drop(tx),
        Command::Shutdown { tx } => drop(tx.send(())),
    }
}

/// paywarden's patch: marks the connection as beyond repair (see
/// `WorkerSharedState::poisoned`), logging `error`, which it returns.
fn poison(shared: &WorkerSharedState, error: Error) -> Error {
    tracing::error!(%error, "a SQLite connection was left inside a transaction it could not roll back; it will be closed");
    shared.poisoned.store(true, Ordering::Release);
    error
}

// A oneshot channel where send completes only after the receiver receives the value.
mod rendezvous_oneshot {
    use super::oneshot::{self, Canceled};

    pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
        let (inner_tx, inner_rx) = oneshot::channel();
        (Sender { inner: inner_tx }, Receiver { inner: inner_rx })
    }

    pub struct Sender<T> {
        inner: oneshot::Sender<(T, oneshot::Sender<()>)>,
    }

    impl<T> Sender<T> {
        pub async fn send(self, value: T) -> Result<(), Canceled> {
            let (ack_tx, ack_rx) = oneshot::channel();
            self.inner.send((value, ack_tx)).map_err(|_| Canceled)?;
            ack_rx.await
        }

        pub fn blocking_send(self, value: T) -> Result<(), Canceled> {
            futures_executor::block_on(self.send(value))
        }
    }

    pub struct Receiver<T> {
        inner: oneshot::Receiver<(T, oneshot::Sender<()>)>,
    }

    impl<T> Receiver<T> {
        pub async fn recv(self) -> Result<T, Canceled> {
            let (value, ack_tx) = self.inner.await?;
            ack_tx.send(()).map_err(|_| Canceled)?;
            Ok(value)
        }
    }
}
