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
//! - A failed fsync is never forgotten: Linux reports a write-back error to one fsync and may
//!   then drop the pages, so a later fsync's success would say nothing about them. After one
//!   failure every write of this process fails (the frames already written may be lost, and
//!   every later commit sits behind them in the log) until it is restarted and SQLite
//!   recovers the log from the disk, as PostgreSQL does after a failed fsync.
//!
//! What is visible is not always durable yet: another connection can read a commit during the
//! fsync that makes it durable (at most one fsync's time). Every tool call writes its own
//! audit row, after what it read, and is answered only once that row is durable, so no answer
//! rests on a commit that a crash could take back.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
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
    /// The first fsync failure, if any: from then on no write of this process is durable.
    failed: Arc<std::sync::Mutex<Option<String>>>,
    /// Tests: each fsync reports that it started and waits to be let through.
    #[cfg(test)]
    paused: Arc<std::sync::Mutex<Option<FsyncPause>>>,
}

/// What a paused fsync tells the test (`started`) and waits for (`release`).
#[cfg(test)]
#[derive(Debug)]
struct FsyncPause {
    started: std::sync::mpsc::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
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
            failed: Arc::default(),
            #[cfg(test)]
            paused: Arc::default(),
        }
    }

    /// Commits noted so far (tests).
    #[cfg(test)]
    pub(crate) fn noted(&self) -> u64 {
        self.noted.load(Ordering::SeqCst)
    }

    /// Holds back every fsync of this log while the guard lives: a write that waits for one
    /// waits until it is dropped (tests).
    #[cfg(test)]
    pub(crate) async fn hold_fsyncs(&self) -> tokio::sync::MutexGuard<'_, u64> {
        self.synced.lock().await
    }

    /// Pauses every later fsync of this log: each one sends on the first receiver when it
    /// starts (after it has read which commits it covers) and runs once the returned sender
    /// sends (tests).
    #[cfg(test)]
    pub(crate) fn pause_fsyncs(
        &self,
    ) -> (std::sync::mpsc::Receiver<()>, std::sync::mpsc::Sender<()>) {
        let (started, on_start) = std::sync::mpsc::channel();
        let (release, on_release) = std::sync::mpsc::channel();
        *self
            .paused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(FsyncPause {
            started,
            release: on_release,
        });
        (on_start, release)
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
    /// The fsync's I/O error, or that an earlier fsync of this process failed: the commit
    /// happened (other connections may see it) and survives a crash of the process, but
    /// whether it survives one of the machine is unknown.
    pub(crate) async fn committed(&self) -> std::io::Result<()> {
        let ticket = self.noted.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = self.synced.lock().await;
        self.check()?;
        if *synced >= ticket {
            return Ok(());
        }
        let target = self.noted.load(Ordering::SeqCst);
        let (wal, database) = (self.wal.clone(), self.database.clone());
        let failed = self.failed.clone();
        // The failure is recorded by the blocking task itself, so a caller dropped while it
        // runs cannot lose it.
        #[cfg(test)]
        let paused = self.paused.clone();
        tokio::task::spawn_blocking(move || {
            #[cfg(test)]
            if let Some(pause) = paused
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
            {
                let _ = pause.started.send(());
                let _ = pause.release.recv();
            }
            let synced = sync_log(&wal, &database);
            if let Err(e) = &synced {
                tracing::error!(error = %e, wal = %wal.display(), "the fsync of paywarden's database log failed: no write of this process is durable from now on; restart paywarden (SQLite recovers the log from the disk)");
                let mut failed = failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                failed.get_or_insert_with(|| e.to_string());
            }
            synced
        })
        .await
        .map_err(std::io::Error::other)?
        .map_err(|e| not_durable(&e.to_string()))?;
        *synced = target;
        Ok(())
    }

    /// Fails once an fsync has failed.
    fn check(&self) -> std::io::Result<()> {
        let failed = self
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match failed.as_deref() {
            Some(first) => Err(not_durable(first)),
            None => Ok(()),
        }
    }
}

/// The error of a write that was committed but whose fsync failed (now or before).
fn not_durable(cause: &str) -> std::io::Error {
    std::io::Error::other(format!(
        "the write was committed but paywarden's fsync of the database log failed ({cause}), so it may not survive a power loss; restart paywarden"
    ))
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
        // A missing database file is an error, not a silent success; and once an fsync has
        // failed, no later write is reported durable, even when a new fsync would succeed.
        let gone = WalSync::new(&dir.path().join("missing.db"));
        let first = gone.committed().await.unwrap_err().to_string();
        assert!(first.contains("may not survive a power loss"), "{first}");
        std::fs::write(dir.path().join("missing.db"), b"").unwrap();
        let later = gone.committed().await.unwrap_err().to_string();
        assert!(later.contains("restart paywarden"), "{later}");
        assert_eq!(*gone.synced.lock().await, 0);
    }
}
