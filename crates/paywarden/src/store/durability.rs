//! SQLite durability by group fsync of the write-ahead log.
//!
//! With `PRAGMA synchronous = FULL` SQLite fsyncs the WAL inside every `COMMIT`, while the
//! committing connection holds the file's one write lock (and this process's write turn,
//! [`super::Store::begin_write`]): every writer waits for every earlier writer's fsync. Here the
//! connections run `synchronous = NORMAL` (a commit appends its frames to the WAL without an
//! fsync, SQLite's documented WAL setting: durable across a crash of the process, not of the
//! machine) and every write waits, after its `COMMIT` returned and the write turn was given
//! back, until the WAL has been fsynced by paywarden ([`WalSync::committed`]). One fsync covers
//! every commit that returned before it started, so concurrent writers share one; nobody is
//! answered before theirs.
//!
//! Why this is as durable as `FULL` (SQLite's file format, <https://sqlite.org/wal.html> and
//! <https://sqlite.org/pragma.html#pragma_synchronous>):
//! - A commit's frames are in the WAL file (written with `write`, in the page cache) when
//!   `COMMIT` returns; `fdatasync` on any descriptor of that file makes them durable.
//! - The WAL is a log: recovery replays its longest valid prefix of committed frames, so a
//!   commit that is durable makes every earlier commit durable with it. A write that read
//!   another's commit before that commit was synced is itself synced after it.
//! - A checkpoint (`NORMAL`: the WAL is synced before, the database file after) moves frames
//!   into the database file; SQLite rewinds the WAL only after a completed checkpoint, so a
//!   commit is always either still in the WAL or already synced into the database file. When
//!   the WAL file does not exist (the last connection checkpointed and removed it), the
//!   database file is synced instead.
//! - The file is opened again for every fsync, so a WAL that SQLite removed and re-created is
//!   never mistaken for the old one.
//!
//! What is visible is not always durable yet: another connection can read a commit during the
//! fsync that makes it durable (at most one fsync's time). Every tool call writes its own
//! audit row, after what it read, and is answered only once that row is durable, so no answer
//! rests on a commit that a crash could take back.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// The group fsync of one SQLite database's write-ahead log, shared by a store's clones.
#[derive(Debug)]
pub(crate) struct WalSync {
    /// The database file (`PRAGMA database_list`'s `main`).
    database: PathBuf,
    /// Its write-ahead log: the database file's path plus `-wal` (SQLite's naming).
    wal: PathBuf,
    /// Commits noted so far, each after its `COMMIT` returned.
    noted: AtomicU64,
    /// How many noted commits are durable. Held while an fsync runs, so the writers that
    /// commit meanwhile share the next one.
    synced: tokio::sync::Mutex<u64>,
}

impl WalSync {
    /// The group fsync of the SQLite database file at `database`.
    pub(crate) fn new(database: &Path) -> Self {
        let mut wal = database.as_os_str().to_owned();
        wal.push("-wal");
        Self {
            database: database.to_path_buf(),
            wal: PathBuf::from(wal),
            noted: AtomicU64::new(0),
            synced: tokio::sync::Mutex::new(0),
        }
    }

    /// Commits noted so far (tests).
    #[cfg(test)]
    pub(crate) fn noted(&self) -> u64 {
        self.noted.load(Ordering::SeqCst)
    }

    /// Noted commits known durable (tests).
    #[cfg(test)]
    pub(crate) async fn synced(&self) -> u64 {
        *self.synced.lock().await
    }

    /// Returns once the commit that just returned on this process (call it after `COMMIT`,
    /// or after an autocommit statement, returned) is durable: at once when an fsync that
    /// started after it already finished, else after the next one, which this caller runs
    /// for every commit noted before it starts.
    ///
    /// # Errors
    /// The fsync's I/O error: whether the commit survives a crash of the machine is then
    /// unknown (it survives one of the process).
    pub(crate) async fn committed(&self) -> std::io::Result<()> {
        let ticket = self.noted.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = self.synced.lock().await;
        if *synced >= ticket {
            return Ok(());
        }
        let target = self.noted.load(Ordering::SeqCst);
        let (wal, database) = (self.wal.clone(), self.database.clone());
        tokio::task::spawn_blocking(move || sync_log(&wal, &database))
            .await
            .map_err(std::io::Error::other)??;
        *synced = target;
        Ok(())
    }
}

/// `fdatasync` of the WAL file, or of the database file when there is no WAL file.
fn sync_log(wal: &Path, database: &Path) -> std::io::Result<()> {
    match std::fs::File::open(wal) {
        Ok(file) => file.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::File::open(database)?.sync_data()
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_commit_is_covered_by_an_fsync_that_started_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        std::fs::write(&db, b"").unwrap();
        let sync = WalSync::new(&db);
        assert_eq!(sync.wal, dir.path().join("x.db-wal"));
        // No WAL file yet: the database file is synced.
        sync.committed().await.unwrap();
        std::fs::write(&sync.wal, b"frames").unwrap();
        sync.committed().await.unwrap();
        assert_eq!(*sync.synced.lock().await, 2);
        // A missing database file is an error, not a silent success.
        let gone = WalSync::new(&dir.path().join("missing.db"));
        assert!(gone.committed().await.is_err());
    }
}
