use crate::connection::{ConnectionHandle, ConnectionState};
use crate::error::Error;
use crate::logger::QueryLogger;
use crate::statement::{StatementHandle, VirtualStatement};
#[cfg(feature = "any")]
use crate::type_info::DataType;
use crate::{SqliteArguments, SqliteColumn, SqliteQueryResult, SqliteRow};
#[cfg(feature = "any")]
use libsqlite3_sys::SQLITE_NULL;
use log::LevelFilter;
#[cfg(feature = "any")]
use sqlx_core::any::{AnyColumn, AnyRow, AnyTypeInfo, AnyTypeInfoKind, AnyValue, AnyValueKind};
use sqlx_core::connection::LogSettings;
use sqlx_core::ext::ustr::UStr;
use sqlx_core::Either;
use sqlx_core::HashMap;
use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;

/// paywarden's patch: how [`ExecuteIter`] reads the row a statement stands on: as a
/// [`SqliteRow`] (each value copied with `sqlite3_value_dup`, as 0.8.6 does), or, for the `Any`
/// driver, straight into an [`AnyRow`], with the values `AnyRow::try_from(&SqliteRow)` would
/// give and without the intermediate copy (docs/performance.md, "Rows read once").
pub(crate) trait CurrentRow: Sized {
    /// The row `statement` stands on (after a `sqlite3_step` that answered `SQLITE_ROW`).
    fn current(
        statement: &StatementHandle,
        columns: &Arc<Vec<SqliteColumn>>,
        column_names: &Arc<HashMap<UStr, usize>>,
    ) -> Result<Self, Error>;
}

impl CurrentRow for SqliteRow {
    fn current(
        statement: &StatementHandle,
        columns: &Arc<Vec<SqliteColumn>>,
        column_names: &Arc<HashMap<UStr, usize>>,
    ) -> Result<Self, Error> {
        Ok(SqliteRow::current(statement, columns, column_names))
    }
}

#[cfg(feature = "any")]
impl CurrentRow for AnyRow {
    /// What `AnyRow::map_from` gives for the [`SqliteRow`] of this statement, read with the
    /// `sqlite3_column_*` functions: each column as `AnyColumn::try_from` converts it; a value's
    /// type is its storage class (`sqlite3_column_type`), or the column's type when it is
    /// `NULL`, as `SqliteValueRef::type_info` answers; integers as `i64`, reals as `f64`, text
    /// checked as UTF-8 and blobs copied, as sqlx-sqlite's `Decode` impls read them.
    fn current(
        statement: &StatementHandle,
        columns: &Arc<Vec<SqliteColumn>>,
        column_names: &Arc<HashMap<UStr, usize>>,
    ) -> Result<Self, Error> {
        let mut row = AnyRow {
            column_names: Arc::clone(column_names),
            columns: Vec::with_capacity(columns.len()),
            values: Vec::with_capacity(columns.len()),
        };
        for (i, col) in columns.iter().enumerate() {
            let any_col = AnyColumn::try_from(col)?;
            let code = statement.column_type(i);
            let null = code == SQLITE_NULL;
            let type_info = if null {
                AnyTypeInfo::try_from(&col.type_info)
            } else {
                AnyTypeInfo::try_from(&crate::SqliteTypeInfo(DataType::from_code(code)))
            }
            .map_err(|e| Error::ColumnDecode {
                index: col.ordinal.to_string(),
                source: e.into(),
            })?;
            let kind = match type_info.kind {
                k if null => AnyValueKind::Null(k),
                AnyTypeInfoKind::Null => AnyValueKind::Null(AnyTypeInfoKind::Null),
                AnyTypeInfoKind::Integer => AnyValueKind::Integer(statement.column_int(i)),
                AnyTypeInfoKind::BigInt => AnyValueKind::BigInt(statement.column_int64(i)),
                AnyTypeInfoKind::Double => AnyValueKind::Double(statement.column_double(i)),
                AnyTypeInfoKind::Blob => {
                    AnyValueKind::Blob(statement.column_blob(i).to_vec().into())
                }
                AnyTypeInfoKind::Text => AnyValueKind::Text(
                    statement
                        .column_text(i)
                        .map_err(Error::decode)?
                        .to_owned()
                        .into(),
                ),
                // `from_code` gives none of the others for a value that is not `NULL`.
                other => {
                    return Err(Error::ColumnDecode {
                        index: col.ordinal.to_string(),
                        source: format!("SQLite has no value of the Any type {other:?}").into(),
                    })
                }
            };
            row.columns.push(any_col);
            row.values.push(AnyValue { kind });
        }
        Ok(row)
    }
}

pub struct ExecuteIter<'a, R = SqliteRow> {
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

    /// paywarden's patch: the rows it reads ([`CurrentRow`]).
    rows: PhantomData<fn() -> R>,
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
/// `queries_only` ([`ExecuteIter::refused`]), reading rows as `R`.
pub(crate) fn iter_with<'a, R: CurrentRow>(
    conn: &'a mut ConnectionState,
    query: &'a str,
    args: Cow<'a, Option<SqliteArguments<'a>>>,
    persistent: bool,
    queries_only: bool,
) -> Result<ExecuteIter<'a, R>, Error> {
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
        rows: PhantomData,
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

impl<R: CurrentRow> ExecuteIter<'_, R> {
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

impl<R: CurrentRow> Iterator for ExecuteIter<'_, R> {
    type Item = Result<Either<SqliteQueryResult, R>, Error>;

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

                Some(
                    R::current(statement.handle, statement.columns, statement.column_names)
                        .map(Either::Right),
                )
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

impl<R> Drop for ExecuteIter<'_, R> {
    fn drop(&mut self) {
        self.statement.reset().ok();
    }
}
