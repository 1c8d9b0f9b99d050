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
use super::{codec, encode_failed, io_err, read_enclave, Store, StoreError, Table, Tx};
use super::{ConsensusDefect, Corruption, ENCLAVES, TABLES};

fn corrupted(defect: ConsensusDefect) -> StoreError {
    StoreError::Corrupted(Corruption::Consensus(defect))
}

/// The size a chunk aims for: large enough to keep a link busy, small enough to be nothing
/// in memory.
pub(crate) const CHUNK_BYTES: usize = 256 * 1024;

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
    /// The applied point this view holds (`None` for a database that never ran consensus).
    pub fn applied(&self) -> Result<Option<SnapshotMeta>, StoreError> {
        let raft = self.txn.open_table(RAFT).map_err(io_err)?;
        let applied = raft.get(APPLIED).map_err(io_err)?;
        applied
            .map(|v| Applied::decode(v.value()).map(|a| a.meta))
            .transpose()
    }

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
                    let Some(t) = open_or_empty(&self.txn, ENCLAVES)? else {
                        self.cursor = Cursor::Items(0, None);
                        continue;
                    };
                    let next = first_after(&t, after.as_deref())?;
                    match next {
                        Some(name) => {
                            let rec = read_enclave(&t, &self.root, &name)?;
                            let bytes = codec::encode_enclave(&rec).map_err(encode_failed)?;
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
                    let Some(t) = open_or_empty(&self.txn, *table)? else {
                        self.cursor = Cursor::Items(*i + 1, None);
                        continue;
                    };
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

/// Opens a table of the snapshot's view; `None` if it does not exist, which reads as empty.
/// (Databases that installed a snapshot before its installer created every table lack the
/// tables that were empty in that snapshot.)
fn open_or_empty(
    txn: &redb::ReadTransaction,
    table: Table,
) -> Result<Option<redb::ReadOnlyTable<&'static str, &'static [u8]>>, StoreError> {
    match txn.open_table(table.def()) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(err) => Err(io_err(err)),
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
                let value = t
                    .get(seq)
                    .map_err(io_err)?
                    .ok_or_else(|| corrupted(ConsensusDefect::ChunkMissing(seq)))?;
                Zeroizing::new(
                    self.root
                        .decrypt(value.value(), stage_aad(seq).as_bytes())
                        .map_err(|_| corrupted(ConsensusDefect::ChunkUndecryptable(seq)))?,
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
    /// Empties every table, the log included. Each table is created again at once, empty: a
    /// table that the snapshot has no record for must still exist afterwards, or this node
    /// could not produce snapshots and backups itself (nor open the table for reading).
    pub(super) fn start(tx: &'t mut Tx<'s>) -> Result<Self, StoreError> {
        tx.removes_keys = true;
        for table in TABLES.iter().chain([&ENCLAVES]) {
            tx.txn.delete_table(table.def()).map_err(io_err)?;
            tx.txn.open_table(table.def()).map_err(io_err)?;
        }
        tx.txn.delete_table(LOG).map_err(io_err)?;
        tx.txn.open_table(LOG).map_err(io_err)?;
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
    pub(super) fn chunk(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let records: Vec<Record> = postcard::from_bytes(chunk)
            .map_err(|e| corrupted(ConsensusDefect::ChunkUndecodable(e.to_string())))?;
        for record in &records {
            match record {
                Record::Addresses(a) => self.addresses = Some(a.clone()),
                Record::Enclave(name, bytes) => {
                    let rec = codec::decode_enclave(bytes)
                        .map_err(|why| corrupted(ConsensusDefect::SnapshotEnclave(why)))?;
                    self.tx.create_enclave(name, &rec)?;
                }
                Record::Item(table, key, value) => {
                    let Some(table) = TABLES.iter().find(|t| t.name == table.as_str()) else {
                        return Err(corrupted(ConsensusDefect::UnknownTable(table.clone())));
                    };
                    let mut t = self.tx.txn.open_table(table.def()).map_err(io_err)?;
                    t.insert(key.as_str(), value.as_slice()).map_err(io_err)?;
                }
            }
        }
        Ok(())
    }

    /// Records the applied point (`meta`) with the snapshot's addresses.
    pub(super) fn finish(self, meta: &SnapshotMeta) -> Result<(), StoreError> {
        let Some(addresses) = self.addresses else {
            return Err(corrupted(ConsensusDefect::NoAddresses));
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

#[cfg(test)]
mod tests {
    use kes_core::consensus::{SnapshotMeta, StepOutput};
    use kes_core::crypto::{Cipher, SecretKey};
    use kes_core::hsm::SoftHsm;

    use super::super::{Addresses, Store, DEFAULT_ENCLAVE, TABLES};
    use crate::hsm::SoftHsmDevice;

    fn hsm(byte: u8) -> SoftHsmDevice {
        SoftHsmDevice(SoftHsm::from_key(SecretKey::new(
            Cipher::Aes256,
            [byte; 32],
        )))
    }

    /// A new store in a fresh directory (removed by the caller).
    fn fresh(tag: &str, byte: u8) -> (std::path::PathBuf, Store) {
        let dir = std::env::temp_dir().join(format!(
            "kes-node-snapshot-{tag}-{}-{:x}",
            std::process::id(),
            u64::from_le_bytes(crate::random::bytes())
        ));
        let store = Store::open(&dir, &hsm(byte)).unwrap();
        (dir, store)
    }

    /// Ships `from`'s applied state into `to` as a joining node would receive it.
    fn ship(from: &Store, to: &Store, index: u64) {
        to.init_raft(Default::default(), &Addresses::new()).unwrap();
        let mut reader = from.snapshot_reader().unwrap();
        let mut seq = 0;
        while let Some(chunk) = reader.next_chunk(super::CHUNK_BYTES).unwrap() {
            to.stage_snapshot_chunk(seq, &chunk).unwrap();
            seq += 1;
        }
        let ready = StepOutput::<Vec<u8>> {
            restore: Some(SnapshotMeta {
                index,
                ..Default::default()
            }),
            ..Default::default()
        };
        to.persist(&ready, Some(seq)).unwrap();
    }

    /// A snapshot of a fresh database (every table but `enclave` empty) installs with every
    /// table present, so the node that installed it ships snapshots and backups itself, and
    /// so on down a chain of joins.
    #[test]
    fn snapshot_of_empty_tables_round_trips_through_a_chain() {
        let mut addresses = Addresses::new();
        addresses.insert(0, "127.0.0.1:7373".into());
        let (dirs, stores): (Vec<_>, Vec<_>) =
            (0..4u8).map(|i| fresh(&format!("chain{i}"), i + 1)).unzip();
        stores[0].init_raft(Default::default(), &addresses).unwrap();
        for i in 1..4 {
            ship(&stores[i - 1], &stores[i], i as u64);
            let txn = stores[i].db.begin_read().unwrap();
            for table in TABLES {
                assert!(
                    txn.open_table(table.def()).is_ok(),
                    "node {i}: table '{}' missing after install",
                    table.name
                );
            }
            assert!(stores[i].backup().is_ok(), "node {i}: backup failed");
            assert!(stores[i]
                .list_policies(DEFAULT_ENCLAVE, "")
                .unwrap()
                .is_empty());
        }
        // The last node holds the first one's default enclave and the addresses.
        let created = |s: &Store| s.enclave(DEFAULT_ENCLAVE).unwrap().created_at;
        assert_eq!(created(&stores[0]), created(&stores[3]));
        let state = stores[3].raft_state().unwrap().unwrap();
        assert_eq!(state.addresses, addresses);
        drop(stores);
        for dir in dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// A database that installed a snapshot before the fix lacks the tables that were empty
    /// in it: its snapshots read those tables as empty instead of failing.
    #[test]
    fn missing_tables_read_as_empty() {
        let (dir, store) = fresh("missing", 1);
        store
            .init_raft(Default::default(), &Addresses::new())
            .unwrap();
        let txn = store.db.begin_write().unwrap();
        for table in TABLES {
            txn.delete_table(table.def()).unwrap();
        }
        txn.commit().unwrap();
        let mut reader = store.snapshot_reader().unwrap();
        let mut chunks = 0;
        while reader.next_chunk(super::CHUNK_BYTES).unwrap().is_some() {
            chunks += 1;
        }
        assert_eq!(chunks, 1);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
