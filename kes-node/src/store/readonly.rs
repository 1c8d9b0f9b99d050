//! A redb storage backend that reads a file and refuses every write.
//!
//! `Store::open` first checks the HSM key against an existing `kes.db` through this backend, so
//! a refused open (wrong HSM key, missing sealed root key, unknown format version) provably
//! leaves the file untouched: redb may otherwise write bookkeeping (allocator state, repair) when
//! a database is opened or closed.
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// A read-only view of a redb file.
#[derive(Debug)]
pub(super) struct ReadOnlyFile {
    file: File,
}

impl ReadOnlyFile {
    pub(super) fn new(file: File) -> ReadOnlyFile {
        ReadOnlyFile { file }
    }
}

fn refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "kes.db is opened read-only for the HSM key check",
    )
}

impl redb::StorageBackend for ReadOnlyFile {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.file.metadata()?.len())
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    fn set_len(&self, _len: u64) -> Result<(), io::Error> {
        Err(refused())
    }

    fn sync_data(&self, _eventual: bool) -> Result<(), io::Error> {
        // Nothing was written, so there is nothing to sync.
        Ok(())
    }

    fn write(&self, _offset: u64, _data: &[u8]) -> Result<(), io::Error> {
        Err(refused())
    }
}
