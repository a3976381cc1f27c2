use crate::connection::{ConnectionHandle, ConnectionState};
use crate::error::Error;
use crate::logger::QueryLogger;
use crate::statement::{StatementHandle, VirtualStatement};
use crate::{SqliteArguments, SqliteQueryResult, SqliteRow};
use log::LevelFilter;
use sqlx_core::connection::LogSettings;
use sqlx_core::Either;
use std::borrow::Cow;

pub struct ExecuteIter<'a> {
    handle: &'a mut ConnectionHandle,
    statement: &'a mut VirtualStatement,
    logger: QueryLogger<'a>,
    // paywarden's patch: borrowed for a query run on the caller's thread, which keeps them to
    // send to the worker if it has to (`execute_inline`).
    args: Cow<'a, Option<SqliteArguments<'a>>>,

    /// paywarden's patch: run only queries (`StatementHandle::is_query`); at the first
    /// statement that is not one, stop before running it, with `refused` set.
    queries_only: bool,
    refused: bool,

    /// since a `VirtualStatement` can encompass multiple actual statements,
    /// this keeps track of the number of arguments so far
    args_used: usize,

    goto_next: bool,
}

pub(crate) fn iter<'a>(
    conn: &'a mut ConnectionState,
    query: &'a str,
    args: Option<SqliteArguments<'a>>,
    persistent: bool,
) -> Result<ExecuteIter<'a>, Error> {
    iter_with(conn, query, Cow::Owned(args), persistent, false)
}

/// paywarden's patch: [`iter`] with the arguments borrowed or owned, running only queries when
/// `queries_only` ([`ExecuteIter::refused`]).
pub(crate) fn iter_with<'a>(
    conn: &'a mut ConnectionState,
    query: &'a str,
    args: Cow<'a, Option<SqliteArguments<'a>>>,
    persistent: bool,
    queries_only: bool,
) -> Result<ExecuteIter<'a>, Error> {
    // fetch the cached statement or allocate a new one
    let statement = conn.statements.get(query, persistent)?;
    // paywarden's patch: SQL that may set the busy timeout (also when SQLite prepares it
    // again, after a schema change).
    if statement.names_pragma {
        conn.handle.forget_busy_timeout();
    }

    let logger = QueryLogger::new(query, conn.log_settings.clone());

    Ok(ExecuteIter {
        handle: &mut conn.handle,
        statement,
        logger,
        args,
        queries_only,
        refused: false,
        args_used: 0,
        goto_next: true,
    })
}

fn bind(
    statement: &mut StatementHandle,
    arguments: &Option<SqliteArguments<'_>>,
    offset: usize,
) -> Result<usize, Error> {
    let mut n = 0;

    if let Some(arguments) = arguments {
        n = arguments.bind(statement, offset)?;
    }

    Ok(n)
}

impl ExecuteIter<'_> {
    /// paywarden's patch: whether the iteration stopped at a statement that is not a query,
    /// before running it (only with `queries_only`).
    pub(crate) fn refused(&self) -> bool {
        self.refused
    }

    /// paywarden's patch: resets the statement now (as dropping the iterator does), so that it
    /// holds no read snapshot while the last row is handed over.
    pub(crate) fn reset_statement(&mut self) {
        self.statement.reset().ok();
    }

    /// paywarden's patch: this run is discarded and runs again on the worker, which logs it:
    /// it is not logged (sqlx's `QueryLogger` logs when dropped).
    pub(crate) fn discard_log(&mut self) {
        let mut off = LogSettings::default();
        off.statements_level = LevelFilter::Off;
        off.slow_statements_level = LevelFilter::Off;
        std::mem::forget(std::mem::replace(&mut self.logger, QueryLogger::new("", off)));
    }

    pub fn finish(&mut self) -> Result<(), Error> {
        for res in self {
            let _ = res?;
        }

        Ok(())
    }
}

impl Iterator for ExecuteIter<'_> {
    type Item = Result<Either<SqliteQueryResult, SqliteRow>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let statement = if self.goto_next {
            // paywarden's patch: with `queries_only`, a statement is prepared only if its text
            // can be a query (SQLite runs some PRAGMAs as it prepares them), and run only if
            // it is one.
            if self.queries_only && self.statement.next_is_unprepared_non_query() {
                self.refused = true;
                return None;
            }
            let statement = match self.statement.prepare_next(self.handle) {
                Ok(Some(statement)) => statement,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };

            if self.queries_only && !statement.handle.is_query() {
                self.refused = true;
                return None;
            }

            self.goto_next = false;

            // sanity check: ensure the VM is reset and the bindings are cleared
            if let Err(e) = statement.handle.reset() {
                return Some(Err(e.into()));
            }

            statement.handle.clear_bindings();

            match bind(statement.handle, &self.args, self.args_used) {
                Ok(args_used) => self.args_used += args_used,
                Err(e) => return Some(Err(e)),
            }

            statement
        } else {
            self.statement.current()?
        };

        match statement.handle.step() {
            Ok(true) => {
                self.logger.increment_rows_returned();

                Some(Ok(Either::Right(SqliteRow::current(
                    statement.handle,
                    statement.columns,
                    statement.column_names,
                ))))
            }
            Ok(false) => {
                let last_insert_rowid = self.handle.last_insert_rowid();

                let changes = statement.handle.changes();
                self.logger.increase_rows_affected(changes);

                let done = SqliteQueryResult {
                    changes,
                    last_insert_rowid,
                };

                self.goto_next = true;

                Some(Ok(Either::Left(done)))
            }
            Err(e) => Some(Err(e.into())),
        }
    }
}

impl Drop for ExecuteIter<'_> {
    fn drop(&mut self) {
        self.statement.reset().ok();
    }
}
