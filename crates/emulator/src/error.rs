//! The crate-boundary error type.

use std::path::PathBuf;

/// Everything that can go wrong opening or running the emulator. Request-level problems
/// (bad parameters, rejections) are not errors: they are OPP JSON responses.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The [`crate::EmulatorConfig`] is unusable (no entities, empty or duplicate entity ids or
    /// tokens). The message says which entry and what to change.
    #[error("invalid emulator configuration: {0}")]
    Config(String),
    /// The SQLite file could not be opened or created (missing parent directory, permissions,
    /// not a SQLite file).
    #[error("cannot open the emulator database {}: {source}", path.display())]
    Open {
        /// The configured `database_path`.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: sqlx::Error,
    },
    /// The embedded schema migrations could not be applied (e.g. the file was written by a newer,
    /// incompatible emulator).
    #[error("cannot migrate the emulator database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query against the SQLite file failed (disk full, locked for longer than the busy
    /// timeout, ...). Surfaces on the wire as HTTP 500.
    #[error("emulator database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row could not be read back (unknown payment type or currency, bad timestamp):
    /// the file was edited by hand or by something else. Surfaces on the wire as HTTP 500.
    #[error("the emulator database holds a row it cannot read: {0}")]
    Corrupt(String),
    /// Listening or accepting connections failed.
    #[error("emulator I/O error: {0}")]
    Io(#[from] std::io::Error),
}
