//! Snapshots of the applied state in bounded chunks, so that neither the node that sends one
//! nor the node that receives one ever holds the whole database in memory.
//!
//! A snapshot is a sequence of [`Record`]s: the members' addresses, every enclave record and
//! every item of every table. Enclave records travel in plaintext, because each node seals
//! them with its own root key; items travel as they are stored, encrypted with their enclave's
//! data key (which the enclave record carries), so item plaintexts never leave `kes.db`.
//!
//! - The sender reads from one redb read transaction ([`SnapshotReader`]): a consistent view
//!   of the applied state, while writes go on. It yields chunks of about [`CHUNK_BYTES`],
//!   picking up after the last key it produced.
//! - The receiver stages each chunk in the `raft_snapshot` table, encrypted with its root key
//!   ([`Store::stage_snapshot_chunk`]); only when the last chunk arrived does the consensus core
//!   ask to install, and [`Store::install_staged`] replaces every table inside the transaction
//!   that persists that step. A half-received snapshot therefore never touches live data.
//! - Backups (`backup.rs`) are the same chunks, encrypted with the root key.
use std::ops::Bound;

use kes_core::consensus::SnapshotMeta;
use kes_core::crypto::RANDOM_LEN;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::raft::{Addresses, Applied, APPLIED, LOG, RAFT};
use super::{codec, io_err, read_enclave, Store, StoreError, Tx, ENCLAVES, TABLES};

/// The size a chunk aims for: large enough to keep a link busy, small enough to be nothing
/// in memory.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// Received chunks of the snapshot being installed, by sequence number.
const STAGE: TableDefinition<u32, &[u8]> = TableDefinition::new("raft_snapshot");

/// One element of a snapshot.
#[derive(Serialize, Deserialize)]
pub(crate) enum Record {
    /// The members' addresses at the snapshot's index (always the first record).
    Addresses(Addresses),
    /// An enclave name and its encoded record, in plaintext (it holds the enclave's data key).
    Enclave(String, Vec<u8>),
    /// An item as stored: its table, `<enclave>/<name>` and the ciphertext under the
    /// enclave's data key.
    Item(String, String, Vec<u8>),
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Record::Enclave(_, bytes) = self {
            bytes.zeroize();
        }
    }
}

/// Where a [`SnapshotReader`] continues.
enum Cursor {
    Start,
    /// Enclave records after the given name.
    Enclaves(Option<String>),
    /// Items of `TABLES[i]` after the given key.
    Items(usize, Option<String>),
    Done,
}

/// Produces a snapshot chunk by chunk from one consistent view of the database.
pub struct SnapshotReader {
    txn: redb::ReadTransaction,
    /// To open enclave records (a copy of the store's root key, zeroized on drop).
    root: kes_core::crypto::SecretKey,
    cursor: Cursor,
    /// Chunks produced so far.
    pub chunks: u32,
}

impl Store {
    /// Starts a snapshot of the applied state as it is now.
    pub fn snapshot_reader(&self) -> Result<SnapshotReader, StoreError> {
        Ok(SnapshotReader {
            txn: self.db.begin_read().map_err(io_err)?,
            root: self.root.clone(),
            cursor: Cursor::Start,
            chunks: 0,
        })
    }
}

impl SnapshotReader {
    /// The next chunk (an encoded `Vec<Record>` of about `max` bytes), or `None` when the
    /// snapshot is complete.
    pub fn next_chunk(&mut self, max: usize) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let mut records = Vec::new();
        let mut size = 0;
        while size < max {
            match &self.cursor {
                Cursor::Done => break,
                Cursor::Start => {
                    let raft = self.txn.open_table(RAFT).map_err(io_err)?;
                    let addresses = match raft.get(APPLIED).map_err(io_err)? {
                        Some(v) => Applied::decode(v.value())?.addresses,
                        None => Addresses::new(),
                    };
                    records.push(Record::Addresses(addresses));
                    self.cursor = Cursor::Enclaves(None);
                }
                Cursor::Enclaves(after) => {
                    let t = self.txn.open_table(ENCLAVES.def()).map_err(io_err)?;
                    let next = first_after(&t, after.as_deref())?;
                    match next {
                        Some(name) => {
                            let rec = read_enclave(&t, &self.root, &name)?;
                            let bytes = codec::encode_enclave(&rec).map_err(StoreError::Io)?;
                            size += name.len() + bytes.len();
                            records.push(Record::Enclave(name.clone(), bytes.to_vec()));
                            self.cursor = Cursor::Enclaves(Some(name));
                        }
                        None => self.cursor = Cursor::Items(0, None),
                    }
                }
                Cursor::Items(i, after) => {
                    let Some(table) = TABLES.get(*i) else {
                        self.cursor = Cursor::Done;
                        continue;
                    };
                    let t = self.txn.open_table(table.def()).map_err(io_err)?;
                    let mut last = None;
                    let range = match after {
                        Some(a) => t.range::<&str>((Bound::Excluded(a.as_str()), Bound::Unbounded)),
                        None => t.range::<&str>(..),
                    }
                    .map_err(io_err)?;
                    for row in range {
                        let (key, value) = row.map_err(io_err)?;
                        let (key, value) = (key.value().to_string(), value.value().to_vec());
                        size += key.len() + value.len();
                        records.push(Record::Item(table.name.into(), key.clone(), value));
                        last = Some(key);
                        if size >= max {
                            break;
                        }
                    }
                    self.cursor = match last {
                        Some(key) if size >= max => Cursor::Items(*i, Some(key)),
                        _ => Cursor::Items(*i + 1, None),
                    };
                }
            }
        }
        if records.is_empty() {
            return Ok(None);
        }
        self.chunks += 1;
        Ok(Some(Zeroizing::new(
            postcard::to_allocvec(&records).map_err(io_err)?,
        )))
    }
}

/// The first key of `t` after `after` (the first key if `None`).
fn first_after(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    after: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let mut range = match after {
        Some(a) => t.range::<&str>((Bound::Excluded(a), Bound::Unbounded)),
        None => t.range::<&str>(..),
    }
    .map_err(io_err)?;
    match range.next() {
        Some(row) => Ok(Some(row.map_err(io_err)?.0.value().to_string())),
        None => Ok(None),
    }
}

fn stage_aad(seq: u32) -> String {
    format!("raft_snapshot/{seq}")
}

impl Store {
    /// Stages chunk `seq` of an incoming snapshot; chunk 0 discards what an earlier,
    /// unfinished snapshot left. Not synced: a crash loses the stage, and the leader starts over.
    pub fn stage_snapshot_chunk(&self, seq: u32, chunk: &[u8]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(io_err)?;
        txn.set_durability(redb::Durability::None);
        if seq == 0 {
            txn.delete_table(STAGE).map_err(io_err)?;
        }
        {
            let random: [u8; RANDOM_LEN] = crate::random::bytes();
            let value = self.root.encrypt(&random, chunk, stage_aad(seq).as_bytes());
            let mut t = txn.open_table(STAGE).map_err(io_err)?;
            t.insert(seq, value.as_slice()).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)
    }

    /// Replaces every table with the staged snapshot (inside the transaction of a persist)
    /// and drops the stage. `chunks` is how many chunks the sender said it sent.
    pub(crate) fn install_staged(
        &self,
        tx: &mut Tx<'_>,
        chunks: u32,
        meta: &SnapshotMeta,
    ) -> Result<(), StoreError> {
        let mut install = Installer::start(tx)?;
        for seq in 0..chunks {
            let chunk = {
                let t = install.tx.txn.open_table(STAGE).map_err(io_err)?;
                let value = t.get(seq).map_err(io_err)?.ok_or_else(|| {
                    StoreError::Corrupted(format!("snapshot chunk {seq} is missing"))
                })?;
                Zeroizing::new(
                    self.root
                        .decrypt(value.value(), stage_aad(seq).as_bytes())
                        .map_err(|_| {
                            StoreError::Corrupted(format!("snapshot chunk {seq} does not decrypt"))
                        })?,
                )
            };
            install.chunk(&chunk)?;
        }
        install.tx.txn.delete_table(STAGE).map_err(io_err)?;
        install.finish(meta)
    }
}

/// Writes the records of a snapshot into a transaction whose tables it emptied first.
pub(crate) struct Installer<'t, 's> {
    pub tx: &'t mut Tx<'s>,
    addresses: Option<Addresses>,
}

impl<'t, 's> Installer<'t, 's> {
    /// Empties every table, the log included.
    pub fn start(tx: &'t mut Tx<'s>) -> Result<Self, StoreError> {
        tx.removes_keys = true;
        for table in TABLES.iter().chain([&ENCLAVES]) {
            tx.txn.delete_table(table.def()).map_err(io_err)?;
        }
        tx.txn.delete_table(LOG).map_err(io_err)?;
        tx.store
            .enclave_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(Installer {
            tx,
            addresses: None,
        })
    }

    /// Installs one chunk's records.
    pub fn chunk(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let records: Vec<Record> = postcard::from_bytes(chunk)
            .map_err(|e| StoreError::Corrupted(format!("snapshot chunk does not decode: {e}")))?;
        for record in &records {
            match record {
                Record::Addresses(a) => self.addresses = Some(a.clone()),
                Record::Enclave(name, bytes) => {
                    let rec = codec::decode_enclave(bytes).map_err(StoreError::Corrupted)?;
                    self.tx.create_enclave(name, &rec)?;
                }
                Record::Item(table, key, value) => {
                    let Some(table) = TABLES.iter().find(|t| t.name == table.as_str()) else {
                        return Err(StoreError::Corrupted(format!(
                            "snapshot names an unknown table '{table}'"
                        )));
                    };
                    let mut t = self.tx.txn.open_table(table.def()).map_err(io_err)?;
                    t.insert(key.as_str(), value.as_slice()).map_err(io_err)?;
                }
            }
        }
        Ok(())
    }

    /// Records the applied point (`meta`) with the snapshot's addresses.
    pub fn finish(self, meta: &SnapshotMeta) -> Result<(), StoreError> {
        let Some(addresses) = self.addresses else {
            return Err(StoreError::Corrupted(
                "snapshot has no address record".into(),
            ));
        };
        let applied = Applied {
            meta: meta.clone(),
            addresses,
        };
        let bytes = postcard::to_allocvec(&applied).map_err(io_err)?;
        self.tx
            .txn
            .open_table(RAFT)
            .map_err(io_err)?
            .insert(APPLIED, bytes.as_slice())
            .map_err(io_err)?;
        Ok(())
    }
}
