//! A redb storage backend that never writes to its file.
//!
//! `Store::open` first checks the HSM key against an existing `kes.db` through this backend, so
//! a refused open (wrong HSM key, missing sealed root key, unknown format version) provably
//! leaves the file untouched. redb writes even when only reading: opening a database sets the
//! "recovery required" flag in its header, and closing it may commit allocator state. Those
//! writes land in an in-memory overlay of 4 KiB blocks here and are discarded on drop.
use std::collections::hash_map::{Entry, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

const BLOCK: u64 = 4096;

/// A copy-on-write view of a redb file: reads see the file plus earlier writes, writes stay in
/// memory.
#[derive(Debug)]
pub(super) struct ReadOnlyFile {
    file: File,
    state: Mutex<Overlay>,
}

#[derive(Debug)]
struct Overlay {
    /// The length redb believes the file has.
    len: u64,
    /// Written blocks by index.
    blocks: HashMap<u64, Box<[u8]>>,
}

impl ReadOnlyFile {
    pub(super) fn new(file: File) -> io::Result<ReadOnlyFile> {
        let len = file.metadata()?.len();
        Ok(ReadOnlyFile {
            file,
            state: Mutex::new(Overlay {
                len,
                blocks: HashMap::new(),
            }),
        })
    }

    /// Block `index` as the file has it (zero past its end).
    fn file_block(&self, index: u64) -> io::Result<Box<[u8]>> {
        let mut buf = vec![0u8; BLOCK as usize].into_boxed_slice();
        let mut filled = 0;
        while filled < buf.len() {
            match self
                .file
                .read_at(&mut buf[filled..], index * BLOCK + filled as u64)?
            {
                0 => break,
                n => filled += n,
            }
        }
        Ok(buf)
    }

    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, Overlay>> {
        self.state
            .lock()
            .map_err(|_| io::Error::other("overlay lock poisoned"))
    }
}

impl redb::StorageBackend for ReadOnlyFile {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.lock()?.len)
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
        let state = self.lock()?;
        let end = offset + len as u64;
        if end > state.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end",
            ));
        }
        if state.blocks.is_empty() {
            let mut buf = vec![0u8; len];
            self.file.read_exact_at(&mut buf, offset)?;
            return Ok(buf);
        }
        let mut out = Vec::with_capacity(len);
        let mut pos = offset;
        while pos < end {
            let index = pos / BLOCK;
            let from = (pos % BLOCK) as usize;
            let to = (end - index * BLOCK).min(BLOCK) as usize;
            match state.blocks.get(&index) {
                Some(block) => out.extend_from_slice(&block[from..to]),
                None => out.extend_from_slice(&self.file_block(index)?[from..to]),
            }
            pos = index * BLOCK + to as u64;
        }
        Ok(out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut state = self.lock()?;
        if len < state.len {
            // Bytes past the new end must read as zero if the file grows again.
            let first = len / BLOCK;
            state.blocks.retain(|&i, _| i <= first);
            if let Some(block) = state.blocks.get_mut(&first) {
                block[(len % BLOCK) as usize..].fill(0);
            }
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> Result<(), io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut state = self.lock()?;
        let end = offset + data.len() as u64;
        let mut pos = offset;
        while pos < end {
            let index = pos / BLOCK;
            let from = (pos % BLOCK) as usize;
            let to = (end - index * BLOCK).min(BLOCK) as usize;
            let block = match state.blocks.entry(index) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(self.file_block(index)?),
            };
            let src = (pos - offset) as usize;
            block[from..to].copy_from_slice(&data[src..src + (to - from)]);
            pos = index * BLOCK + to as u64;
        }
        state.len = state.len.max(end);
        Ok(())
    }
}
