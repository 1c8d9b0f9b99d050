//! The free-space floor of `kes.db`'s disk (`store.min_free` in the config).
//!
//! Client writes are refused with `507 Insufficient Storage` while the file system holding
//! `kes.db` has less room than the floor, before the disk is actually full. What stays
//! below the floor is kept for the cluster's own small writes (votes, terms, entries other
//! nodes already accepted), so that a node never has to fail those for a client's data.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{NoSpace, Store, StoreError};
use crate::command::Command;

/// The default floor: 64 MiB.
pub(crate) const DEFAULT_MIN_FREE: u64 = 64 << 20;

/// The floor and where it is measured.
pub(crate) struct Floor {
    /// The directory holding `kes.db` (`None` in memory: no floor).
    dir: Option<PathBuf>,
    bytes: AtomicU64,
}

impl Floor {
    pub(crate) fn new(dir: Option<&Path>) -> Floor {
        Floor {
            dir: dir.map(Path::to_path_buf),
            bytes: AtomicU64::new(DEFAULT_MIN_FREE),
        }
    }
}

/// Bytes available to the server on the file system holding `dir`.
pub(crate) fn available(dir: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether `cmd` is refused below the floor: anything that stores more. Deletions and
/// membership changes pass, so that an operator can still make room or move nodes.
pub(crate) fn needs_room(cmd: &Command) -> bool {
    !matches!(
        cmd,
        Command::DeleteKey { .. }
            | Command::DeletePolicy { .. }
            | Command::DeleteIdentity { .. }
            | Command::DeleteSecret { .. }
            | Command::DeleteEnclave { .. }
            | Command::Expand { .. }
            | Command::Shrink { .. }
    )
}

impl Store {
    /// Sets the free-space floor (0: none).
    pub fn set_min_free(&self, bytes: u64) {
        self.floor.bytes.store(bytes, Ordering::Relaxed);
    }

    /// [`Store::check_space`] for a client's write that stores more (see [`needs_room`]).
    pub fn check_room(&self, cmd: &Command) -> Result<(), StoreError> {
        if needs_room(cmd) {
            self.check_space()
        } else {
            Ok(())
        }
    }

    /// `Err(NoSpace)` while the disk of `kes.db` has less room than the floor. A disk whose
    /// room cannot be measured does not stop writes (the write itself then says what is wrong).
    pub fn check_space(&self) -> Result<(), StoreError> {
        let floor = self.floor.bytes.load(Ordering::Relaxed);
        let Some(dir) = &self.floor.dir else {
            return Ok(());
        };
        if floor == 0 {
            return Ok(());
        }
        match available(dir) {
            Ok(free) if free < floor => {
                Err(StoreError::NoSpace(NoSpace::BelowFloor { free, floor }))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::error::human;
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 19), "1.5 MiB");
        assert!(available(Path::new("/")).is_ok());
    }
}
