//! The open redb database, reopened after a failed write.
//!
//! redb stops using a database after any I/O error (a full disk, say): every later write
//! transaction fails with "previous I/O error" and reads that miss its cache fail too, until
//! the database is closed and opened again. What is on disk is still the last committed state
//! (redb never overwrites the committed root in place), so reopening is safe and loses
//! nothing. [`Db`] does that on the next use after a failure, so a node whose disk filled up
//! goes on serving reads and accepts writes again once there is room, without a restart.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use redb::{Database, ReadTransaction, StorageError, TransactionError, WriteTransaction};

use super::{IoFailure, NoSpace, StoreError};

/// A redb database that reopens itself after an I/O error.
pub(crate) struct Db {
    /// The file, or `None` for an in-memory database (which cannot be reopened).
    path: Option<PathBuf>,
    /// `None` while a reopen failed (every use retries it).
    inner: RwLock<Option<Database>>,
    /// Set when a commit failed: the next use reopens first.
    failed: AtomicBool,
}

impl Db {
    pub(crate) fn new(db: Database, path: Option<PathBuf>) -> Db {
        Db {
            path,
            inner: RwLock::new(Some(db)),
            failed: AtomicBool::new(false),
        }
    }

    fn read_lock(&self) -> RwLockReadGuard<'_, Option<Database>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A read transaction on the last committed state.
    // The same signature as redb's own, so that callers are unchanged.
    #[allow(clippy::result_large_err)]
    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, TransactionError> {
        self.heal().map_err(closed)?;
        match &*self.read_lock() {
            Some(db) => db.begin_read(),
            None => Err(closed("kes.db is closed")),
        }
    }

    /// A write transaction; reopens the database first if an earlier write failed.
    #[allow(clippy::result_large_err)]
    pub(crate) fn begin_write(&self) -> Result<WriteTransaction, TransactionError> {
        self.heal().map_err(closed)?;
        let first = match &*self.read_lock() {
            Some(db) => db.begin_write(),
            None => return Err(closed("kes.db is closed")),
        };
        match first {
            // An operation inside an earlier transaction failed (not its commit).
            Err(TransactionError::Storage(StorageError::PreviousIo)) => {
                self.failed.store(true, Ordering::Release);
                self.heal().map_err(closed)?;
                match &*self.read_lock() {
                    Some(db) => db.begin_write(),
                    None => Err(closed("kes.db is closed")),
                }
            }
            other => other,
        }
    }

    /// Notes a failed commit: the database is reopened before its next use.
    pub(crate) fn commit_failed(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// Reopens the database if a write failed since it was opened (or a reopen failed).
    pub(crate) fn heal(&self) -> Result<(), IoFailure> {
        if !self.failed.load(Ordering::Acquire) && self.read_lock().is_some() {
            return Ok(());
        }
        let Some(path) = &self.path else {
            // In memory: nothing to reopen; redb's own error answers.
            return Ok(());
        };
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if !self.failed.load(Ordering::Acquire) && inner.is_some() {
            return Ok(()); // Another caller reopened it meanwhile.
        }
        // Closing releases the file's lock, unless a reader (a snapshot or backup being
        // streamed) still holds it: then the reopen fails and the next use tries again.
        drop(inner.take());
        match Database::builder().open(path) {
            Ok(db) => {
                *inner = Some(db);
                self.failed.store(false, Ordering::Release);
                eprintln!("kes-node: {} reopened after a failed write", path.display());
                Ok(())
            }
            Err(err) => Err(IoFailure::Reopen {
                path: path.display().to_string(),
                why: err.to_string(),
            }),
        }
    }
}

fn closed(why: impl std::fmt::Display) -> TransactionError {
    TransactionError::Storage(StorageError::Io(std::io::Error::other(why.to_string())))
}

/// True for the errors of a full disk (or an exhausted quota).
pub(crate) fn is_no_space(err: &std::io::Error) -> bool {
    // ENOSPC and EDQUOT on Linux.
    matches!(err.raw_os_error(), Some(28) | Some(122))
}

/// The store error for a failed commit: [`StoreError::NoSpace`] for a full disk.
pub(crate) fn commit_error(err: redb::CommitError) -> StoreError {
    let err: redb::Error = err.into();
    match &err {
        redb::Error::Io(io) if is_no_space(io) => {
            StoreError::NoSpace(NoSpace::DiskFull(io.to_string()))
        }
        _ => StoreError::Io(IoFailure::Db(err.to_string())),
    }
}
