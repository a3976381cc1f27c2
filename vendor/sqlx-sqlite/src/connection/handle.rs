use std::ffi::CString;
use std::os::raw::c_int;
use std::ptr;
use std::ptr::NonNull;

use crate::error::Error;
use libsqlite3_sys::{
    sqlite3, sqlite3_close, sqlite3_exec, sqlite3_get_autocommit, sqlite3_last_insert_rowid,
    sqlite3_busy_timeout, sqlite3_column_int, sqlite3_column_text, sqlite3_db_name,
    sqlite3_finalize, sqlite3_prepare_v2, sqlite3_step, sqlite3_stmt, sqlite3_txn_state, SQLITE_BUSY, SQLITE_LOCKED_SHAREDCACHE, SQLITE_OK,
    SQLITE_ROW, SQLITE_TXN_WRITE,
};

use crate::{statement::unlock_notify, SqliteError};

/// Managed handle to the raw SQLite3 database handle.
/// The database handle will be closed when this is dropped and no `ConnectionHandleRef`s exist.
#[derive(Debug)]
pub(crate) struct ConnectionHandle {
    db: NonNull<sqlite3>,
    /// paywarden's patch: the connection's busy timeout (`PRAGMA busy_timeout`) as
    /// [`Self::pause_busy_handler`] last read it, so that it is read once instead of before
    /// every statement run on the caller's thread. Forgotten ([`Self::forget_busy_timeout`])
    /// whenever SQL that names a pragma is prepared (SQLite applies `PRAGMA busy_timeout = N`
    /// when it compiles it) or run on the connection ([`Self::forget_if_pragma`]), and whenever
    /// the raw handle is handed out: the ways sqlx gives to change it after `establish`. Code
    /// given the raw handle that changes the timeout later (a hook, an application-defined
    /// function) is not seen. Never read while paused: pauses do not nest.
    busy_timeout: Option<c_int>,
}

// A SQLite3 handle is safe to send between threads, provided not more than
// one is accessing it at the same time. This is upheld as long as [SQLITE_CONFIG_MULTITHREAD] is
// enabled and [SQLITE_THREADSAFE] was enabled when sqlite was compiled. We refuse to work
// if these conditions are not upheld.

// <https://www.sqlite.org/c3ref/threadsafe.html>

// <https://www.sqlite.org/c3ref/c_config_covering_index_scan.html#sqliteconfigmultithread>

unsafe impl Send for ConnectionHandle {}

impl ConnectionHandle {
    #[inline]
    pub(super) unsafe fn new(ptr: *mut sqlite3) -> Self {
        Self {
            db: NonNull::new_unchecked(ptr),
            busy_timeout: None,
        }
    }

    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut sqlite3 {
        self.db.as_ptr()
    }

    pub(crate) fn as_non_null_ptr(&self) -> NonNull<sqlite3> {
        self.db
    }

    /// paywarden's patch: forgets the busy timeout read before (the next
    /// [`Self::pause_busy_handler`] reads it again).
    pub(crate) fn forget_busy_timeout(&mut self) {
        self.busy_timeout = None;
    }

    /// paywarden's patch: forgets the busy timeout read before when `sql` names a pragma
    /// (`pragma`, any case, anywhere in the text: `PRAGMA busy_timeout = ...`, a pragma
    /// function, or only a mention; a false alarm costs one read).
    pub(crate) fn forget_if_pragma(&mut self, sql: &[u8]) {
        if self.busy_timeout.is_some() && names_pragma(sql) {
            self.busy_timeout = None;
        }
    }

    /// Whether a transaction is open on the connection (it is not in autocommit mode).
    /// paywarden's patch: moved here from `LockedSqliteHandle`, for the worker's `Begin`.
    pub(crate) fn in_transaction(&mut self) -> bool {
        // SAFETY: we have exclusive access to the database handle
        unsafe { sqlite3_get_autocommit(self.as_ptr()) == 0 }
    }

    /// paywarden's patch: whether the main database's transaction holds its write lock
    /// (`sqlite3_txn_state(db, "main")` is `SQLITE_TXN_WRITE`).
    pub(crate) fn main_writes(&mut self) -> bool {
        // SAFETY: we have exclusive access to the database handle
        unsafe { sqlite3_txn_state(self.as_ptr(), c"main".as_ptr()) == SQLITE_TXN_WRITE }
    }

    /// paywarden's patch: whether a database other than `main` and `temp` is attached (its
    /// locks are not the main database's: in rollback-journal or shared-cache mode a read of
    /// it can wait, and a shared-cache lock waits in `unlock_notify` on the running thread).
    pub(crate) fn has_attached(&mut self) -> bool {
        // SAFETY: we have exclusive access to the database handle
        unsafe { !sqlite3_db_name(self.as_ptr(), 2).is_null() }
    }

    /// paywarden's patch: whether the main database is in WAL mode (`PRAGMA
    /// main.journal_mode`), where a statement of a transaction holding the write lock never
    /// waits for a lock (in rollback-journal mode a cache spill waits for readers). `false`
    /// when it cannot be read.
    pub(crate) fn in_wal_mode(&mut self) -> bool {
        self.pragma(c"PRAGMA main.journal_mode", |stmt| {
            // SAFETY: `stmt` is on a row; the text is copied before the next step.
            let text = unsafe { sqlite3_column_text(stmt, 0) };
            !text.is_null()
                && unsafe { std::ffi::CStr::from_ptr(text.cast()) }
                    .to_bytes()
                    .eq_ignore_ascii_case(b"wal")
        })
        .unwrap_or(false)
    }

    /// paywarden's patch: runs `query` (no rows) with SQLite's busy handler off, so that a
    /// lock held by another connection answers at once instead of waiting: `Ok(true)` when it
    /// ran; `Ok(false)` when nothing was done: SQLite answered `SQLITE_BUSY` (any extended
    /// code), or the busy timeout to put back could not be read (then it did not run). The
    /// connection's busy timeout (`PRAGMA busy_timeout`) is put back afterwards.
    pub(crate) fn exec_without_waiting(&mut self, query: &str) -> Result<bool, Error> {
        let Some(timeout) = self.pause_busy_handler() else {
            return Ok(false);
        };
        let res = self.exec(query);
        self.resume_busy_handler(timeout);
        match res {
            Ok(()) => Ok(true),
            Err(e) if is_busy(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// paywarden's patch: turns SQLite's busy handler off (a lock held by another connection
    /// answers `SQLITE_BUSY` at once) and returns the busy timeout to put back with
    /// [`Self::resume_busy_handler`]; `None` (nothing changed) when it cannot be read.
    pub(crate) fn pause_busy_handler(&mut self) -> Option<c_int> {
        let timeout = match self.busy_timeout {
            Some(timeout) => timeout,
            None => {
                // SAFETY (the closure): `stmt` is on a row.
                let timeout = self
                    .pragma(c"PRAGMA busy_timeout", |stmt| unsafe { sqlite3_column_int(stmt, 0) })?;
                self.busy_timeout = Some(timeout);
                timeout
            }
        };
        // SAFETY: we have exclusive access to the database handle
        unsafe { sqlite3_busy_timeout(self.as_ptr(), 0) };
        Some(timeout)
    }

    /// paywarden's patch: puts back the busy timeout [`Self::pause_busy_handler`] returned.
    pub(crate) fn resume_busy_handler(&mut self, timeout: c_int) {
        // SAFETY: we have exclusive access to the database handle
        unsafe { sqlite3_busy_timeout(self.as_ptr(), timeout) };
    }

    /// paywarden's patch: the first row of a one-row `PRAGMA`, read by `read`; `None` when it
    /// cannot be prepared or gives no row.
    fn pragma<T>(&mut self, sql: &std::ffi::CStr, read: impl FnOnce(*mut sqlite3_stmt) -> T) -> Option<T> {
        let mut stmt: *mut sqlite3_stmt = ptr::null_mut();
        // SAFETY: we have exclusive access to the database handle; the statement is finalized
        // before returning.
        unsafe {
            if sqlite3_prepare_v2(self.as_ptr(), sql.as_ptr(), -1, &mut stmt, ptr::null_mut())
                != SQLITE_OK
            {
                return None;
            }
            let value = (sqlite3_step(stmt) == SQLITE_ROW).then(|| read(stmt));
            sqlite3_finalize(stmt);
            value
        }
    }

    pub(crate) fn last_insert_rowid(&mut self) -> i64 {
        // SAFETY: we have exclusive access to the database handle
        unsafe { sqlite3_last_insert_rowid(self.as_ptr()) }
    }

    pub(crate) fn last_error(&mut self) -> Option<SqliteError> {
        // SAFETY: we have exclusive access to the database handle
        unsafe { SqliteError::try_new(self.as_ptr()) }
    }

    #[track_caller]
    pub(crate) fn expect_error(&mut self) -> SqliteError {
        self.last_error()
            .expect("expected error code to be set in current context")
    }

    pub(crate) fn exec(&mut self, query: impl Into<String>) -> Result<(), Error> {
        let query = query.into();
        self.forget_if_pragma(query.as_bytes());
        let query = CString::new(query).map_err(|_| err_protocol!("query contains nul bytes"))?;

        // SAFETY: we have exclusive access to the database handle
        unsafe {
            loop {
                let status = sqlite3_exec(
                    self.as_ptr(),
                    query.as_ptr(),
                    // callback if we wanted result rows
                    None,
                    // callback data
                    ptr::null_mut(),
                    // out-pointer for the error message, we just use `SqliteError::new()`
                    ptr::null_mut(),
                );

                match status {
                    SQLITE_OK => return Ok(()),
                    SQLITE_LOCKED_SHAREDCACHE => unlock_notify::wait(self.as_ptr())?,
                    _ => return Err(SqliteError::new(self.as_ptr()).into()),
                }
            }
        }
    }
}

impl Drop for ConnectionHandle {
    fn drop(&mut self) {
        unsafe {
            // https://sqlite.org/c3ref/close.html
            let status = sqlite3_close(self.db.as_ptr());
            if status != SQLITE_OK {
                // this should *only* happen due to an internal bug in SQLite where we left
                // SQLite handles open
                panic!("{}", SqliteError::new(self.db.as_ptr()));
            }
        }
    }
}

/// paywarden's patch: whether `sql` contains `pragma`, in any case.
pub(crate) fn names_pragma(sql: &[u8]) -> bool {
    sql.windows(6).any(|w| w.eq_ignore_ascii_case(b"pragma"))
}

/// paywarden's patch: whether `error` is SQLite's `SQLITE_BUSY` (any extended code).
pub(crate) fn is_busy(error: &Error) -> bool {
    has_primary_code(error, SQLITE_BUSY)
}

/// paywarden's patch: whether `error` is a SQLite error whose primary result code (the low 8
/// bits of the extended code) is `code`.
pub(crate) fn has_primary_code(error: &Error, code: c_int) -> bool {
    match error {
        Error::Database(e) => e
            .code()
            .and_then(|c| c.parse::<c_int>().ok())
            .is_some_and(|c| c & 0xff == code),
        _ => false,
    }
}
