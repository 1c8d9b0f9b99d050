//! A simulated disk for `kes.db`: a redb storage backend in memory that remembers what was
//! synced, so that a crash loses exactly the writes since the last `sync_data` (what a power
//! cut does to a file whose page cache was not flushed).
//!
//! The disk outlives the node: a crash drops the node's `Store` (and with it redb's caches)
//! and [`Disk::crash`] rolls the bytes back to the last synced image; a restart opens a new
//! `Store` on the same disk, so redb's own recovery runs as it would on a real file.
use std::sync::{Arc, Mutex, MutexGuard};

/// The bytes of one disk: what the node sees, and what survives a crash.
#[derive(Debug, Default)]
struct Bytes {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync, replayed onto `durable` at the next one (cheaper than
    /// copying the whole image at every sync).
    unsynced: Vec<(u64, Vec<u8>)>,
    /// The length set since the last sync, if it changed.
    len: Option<u64>,
    syncs: u64,
    /// Bumped by a crash: handles of an older generation (the crashed node's redb, which may
    /// still write while it is dropped) reach nothing any more.
    generation: u64,
}

/// A handle on one node's disk; clones share it (the backend handed to redb is a clone).
#[derive(Clone, Debug, Default)]
pub struct Disk {
    bytes: Arc<Mutex<Bytes>>,
    generation: u64,
}

impl Disk {
    pub fn new() -> Disk {
        Disk::default()
    }

    fn bytes(&self) -> MutexGuard<'_, Bytes> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bytes if this handle is current (not from before a crash).
    fn current(&self) -> Option<MutexGuard<'_, Bytes>> {
        Some(self.bytes()).filter(|b| b.generation == self.generation)
    }

    /// A crash: everything written since the last sync is gone, and so is every handle on
    /// the disk; the returned one is the new machine's.
    pub fn crash(&self) -> Disk {
        let mut guard = self.bytes();
        let b = &mut *guard;
        // Undo what was not synced (cheaper than copying the whole image).
        let (live, durable) = (&mut b.live, &b.durable);
        if live.len() < durable.len() {
            live.extend_from_slice(&durable[live.len()..]);
        }
        for (offset, data) in b.unsynced.drain(..) {
            let start = (offset as usize).min(durable.len());
            let end = (offset as usize + data.len()).min(durable.len());
            live[start..end].copy_from_slice(&durable[start..end]);
        }
        live.truncate(durable.len());
        b.len = None;
        b.generation += 1;
        Disk {
            bytes: self.bytes.clone(),
            generation: b.generation,
        }
    }

    /// How many syncs (durable commits make one or two) happened so far.
    pub fn syncs(&self) -> u64 {
        self.bytes().syncs
    }

    /// Bytes written but not synced.
    pub fn unsynced_bytes(&self) -> usize {
        self.bytes().unsynced.iter().map(|(_, d)| d.len()).sum()
    }
}

/// Sets the length of `v`, zero-filling growth (with calloc and memcpy, not byte by byte:
/// unoptimized test builds run this on megabytes).
fn resize(v: &mut Vec<u8>, len: usize) {
    if len <= v.len() {
        v.truncate(len);
    } else {
        v.extend_from_slice(&vec![0; len - v.len()]);
    }
}

fn out_of_range() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "read beyond the end of the disk",
    )
}

fn gone() -> std::io::Error {
    std::io::Error::other("the machine crashed")
}

impl redb::StorageBackend for Disk {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.current().ok_or_else(gone)?.live.len() as u64)
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        let b = self.current().ok_or_else(gone)?;
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let end = start.checked_add(len).ok_or_else(out_of_range)?;
        b.live
            .get(start..end)
            .map(<[u8]>::to_vec)
            .ok_or_else(out_of_range)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let Some(mut b) = self.current() else {
            return Ok(());
        };
        let n = usize::try_from(len).map_err(|_| out_of_range())?;
        resize(&mut b.live, n);
        // A shrink drops the writes beyond the new end; a replayed write must not regrow it.
        for (offset, data) in b.unsynced.iter_mut() {
            let end = (*offset as usize).saturating_add(data.len()).min(n);
            data.truncate(end.saturating_sub(*offset as usize));
        }
        b.len = Some(len);
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> Result<(), std::io::Error> {
        let Some(mut b) = self.current() else {
            return Ok(());
        };
        let b = &mut *b;
        if let Some(len) = b.len.take() {
            resize(&mut b.durable, len as usize);
        }
        for (offset, data) in b.unsynced.drain(..) {
            let start = offset as usize;
            let end = start + data.len();
            if b.durable.len() < end {
                resize(&mut b.durable, end);
            }
            b.durable[start..end].copy_from_slice(&data);
        }
        b.syncs += 1;
        debug_assert_eq!(b.durable.len(), b.live.len());
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let Some(mut b) = self.current() else {
            return Ok(());
        };
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let end = start.checked_add(data.len()).ok_or_else(out_of_range)?;
        if b.live.len() < end {
            return Err(out_of_range());
        }
        b.live[start..end].copy_from_slice(data);
        b.unsynced.push((offset, data.to_vec()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use redb::StorageBackend;

    use super::Disk;

    #[test]
    fn a_crash_keeps_what_was_synced_and_nothing_else() {
        let disk = Disk::new();
        disk.set_len(8).unwrap();
        disk.write(0, b"abcd").unwrap();
        disk.sync_data(false).unwrap();
        disk.write(4, b"efgh").unwrap();
        disk.write(0, b"ABCD").unwrap();
        disk.set_len(16).unwrap();
        assert_eq!(disk.unsynced_bytes(), 8);
        let after = disk.crash();
        assert_eq!(after.len().unwrap(), 8);
        assert_eq!(after.read(0, 8).unwrap(), b"abcd\0\0\0\0");
        // The crashed machine's handle reaches nothing any more.
        disk.write(0, b"zzzz").unwrap();
        disk.sync_data(false).unwrap();
        assert!(disk.read(0, 4).is_err());
        assert_eq!(after.read(0, 4).unwrap(), b"abcd");
    }

    #[test]
    fn a_store_reopens_after_a_crash_with_its_commits() {
        let hsm = crate::hsm::SoftHsmDevice(kes_core::hsm::SoftHsm::from_key(
            kes_core::crypto::SecretKey::new(kes_core::crypto::Cipher::Aes256, [7; 32]),
        ));
        let disk = Disk::new();
        let store = crate::store::Store::open_backend(disk.clone(), &hsm).unwrap();
        store
            .apply(&crate::command::Command::CreatePolicy {
                enclave: "default".into(),
                name: "p".into(),
                policy: crate::records::PolicyRecord {
                    allow: vec!["/v1/key/create/*".into()],
                    deny: Vec::new(),
                    created_at: time::OffsetDateTime::UNIX_EPOCH,
                    created_by: String::new(),
                },
                replace: false,
            })
            .unwrap();
        let disk = disk.crash();
        drop(store);
        let store = crate::store::Store::open_backend(disk.clone(), &hsm).unwrap();
        assert_eq!(
            store.policy("default", "p").unwrap().allow,
            ["/v1/key/create/*"]
        );
        assert!(disk.syncs() > 0);
    }
}
