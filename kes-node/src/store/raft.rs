//! The consensus state in `kes.db`: the hard state (term, vote), the applied point (index,
//! term, configuration and the members' addresses) and the log entries above it, each entry
//! encrypted with the root key like every other value.
//!
//! [`Store::persist`] carries out the storage part of one consensus step (collected in a
//! [`StepOutput`]) in a single durable transaction: hard state, truncation, appended entries
//! and the application of committed entries to the tables. So the applied state and the log can never disagree after a crash.
use std::collections::BTreeMap;

use kes_core::consensus::{
    Body, Config, Entry, HardState, Index, NodeId, SnapshotMeta, StepOutput,
};
use kes_core::crypto::RANDOM_LEN;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{apply, codec, io_err, ConsensusDefect, Corruption, Refusal, Store, StoreError};

fn corrupted(defect: ConsensusDefect) -> StoreError {
    StoreError::Corrupted(Corruption::Consensus(defect))
}

pub(crate) const RAFT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft");
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const HARD_STATE: &str = "hard_state";
pub(crate) const APPLIED: &str = "applied";

/// The members' addresses: the shell's part of a configuration entry.
pub(crate) type Addresses = BTreeMap<NodeId, String>;

/// A log entry as the shell keeps it: the command is the encoded [`Command`] (or, for
/// configuration entries, the encoded [`Addresses`]).
pub(crate) type LogEntry = Entry<Vec<u8>>;

/// One step's storage work and, if it installs a snapshot, how many chunks of it are staged
/// (see `snapshot.rs`).
pub(crate) type ReadyRef<'a> = (&'a StepOutput<Vec<u8>>, Option<u32>);

/// The outcome of each applied command entry, by log index.
pub(crate) type Outcomes = Vec<(Index, Result<(), StoreError>)>;

/// What a node needs to restart its consensus state.
pub struct RaftState {
    pub hard_state: HardState,
    pub applied: SnapshotMeta,
    pub addresses: Addresses,
    pub entries: Vec<LogEntry>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Applied {
    pub meta: SnapshotMeta,
    pub addresses: Addresses,
}

/// Encodes a configuration's addresses for a configuration entry.
pub(crate) fn encode_addresses(a: &Addresses) -> Vec<u8> {
    postcard::to_allocvec(a).unwrap_or_default()
}

pub(crate) fn decode_addresses(bytes: &[u8]) -> Result<Addresses, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| corrupted(ConsensusDefect::Addresses(e.to_string())))
}

fn log_aad(index: Index) -> String {
    format!("raft_log/{index}")
}

impl Applied {
    pub(crate) fn decode(bytes: &[u8]) -> Result<Applied, StoreError> {
        postcard::from_bytes(bytes).map_err(|e| corrupted(ConsensusDefect::Applied(e.to_string())))
    }
}

impl Store {
    /// The stored consensus state, or `None` for a database that never ran consensus.
    pub fn raft_state(&self) -> Result<Option<RaftState>, StoreError> {
        super::guard::guarded(
            || "reading the cluster state".into(),
            || self.raft_state_unguarded(),
        )
    }

    fn raft_state_unguarded(&self) -> Result<Option<RaftState>, StoreError> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let raft = match txn.open_table(RAFT) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(err) => return Err(io_err(err)),
        };
        let Some(applied) = raft.get(APPLIED).map_err(io_err)? else {
            return Ok(None);
        };
        let applied = Applied::decode(applied.value())?;
        let hard_state = match raft.get(HARD_STATE).map_err(io_err)? {
            Some(v) => postcard::from_bytes(v.value())
                .map_err(|e| corrupted(ConsensusDefect::HardState(e.to_string())))?,
            None => HardState::default(),
        };
        let mut entries = Vec::new();
        if let Ok(log) = txn.open_table(LOG) {
            for row in log.range(applied.meta.index + 1..).map_err(io_err)? {
                let (index, value) = row.map_err(io_err)?;
                let index = index.value();
                let plaintext = self
                    .root
                    .decrypt(value.value(), log_aad(index).as_bytes())
                    .map_err(|_| corrupted(ConsensusDefect::EntryUndecryptable(index)))?;
                let entry: LogEntry = postcard::from_bytes(&plaintext).map_err(|e| {
                    corrupted(ConsensusDefect::EntryUndecodable(index, e.to_string()))
                })?;
                entries.push(entry);
            }
        }
        Ok(Some(RaftState {
            hard_state,
            applied: applied.meta,
            addresses: applied.addresses,
            entries,
        }))
    }

    /// Writes the initial consensus state of a new cluster (nothing applied yet).
    pub fn init_raft(&self, config: Config, addresses: &Addresses) -> Result<(), StoreError> {
        let tx = self.begin()?;
        {
            let mut raft = tx.txn.open_table(RAFT).map_err(io_err)?;
            let applied = Applied {
                meta: SnapshotMeta {
                    index: 0,
                    term: 0,
                    config,
                },
                addresses: addresses.clone(),
            };
            let bytes = postcard::to_allocvec(&applied).map_err(io_err)?;
            raft.insert(APPLIED, bytes.as_slice()).map_err(io_err)?;
        }
        tx.commit()
    }

    /// Carries out the storage part of a batch of steps, in order, in one durable
    /// transaction (one fsync for all: group commit), and returns the outcome of every applied
    /// command entry. An entry whose command fails (a name that already exists, say) fails the
    /// same way on every node; its outcome goes to the client. The data next to a step is
    /// the count of staged chunks of the snapshot that came with an `InstallSnapshot` (installed
    /// if `ready.restore`).
    pub fn persist_batch(&self, batch: &[ReadyRef<'_>]) -> Result<Outcomes, StoreError> {
        super::guard::guarded(
            || "persisting the cluster state".into(),
            || self.persist_batch_unguarded(batch),
        )
    }

    fn persist_batch_unguarded(&self, batch: &[ReadyRef<'_>]) -> Result<Outcomes, StoreError> {
        let mut outcomes = Vec::new();
        if !batch.iter().any(|(r, _)| r.needs_write()) {
            return Ok(outcomes);
        }
        let mut deleted_enclaves = Vec::new();
        let mut tx = self.begin()?;
        for (ready, snapshot) in batch {
            self.persist_one(
                &mut tx,
                ready,
                *snapshot,
                &mut outcomes,
                &mut deleted_enclaves,
            )?;
        }
        tx.commit()?;
        if !deleted_enclaves.is_empty() {
            let mut cache = self.enclave_keys.lock().unwrap_or_else(|e| e.into_inner());
            for name in deleted_enclaves {
                cache.remove(&name);
            }
        }
        Ok(outcomes)
    }

    /// [`Store::persist_batch`] for one step.
    pub fn persist(
        &self,
        ready: &StepOutput<Vec<u8>>,
        snapshot: Option<u32>,
    ) -> Result<Outcomes, StoreError> {
        self.persist_batch(&[(ready, snapshot)])
    }

    fn persist_one(
        &self,
        tx: &mut super::Tx<'_>,
        ready: &StepOutput<Vec<u8>>,
        snapshot: Option<u32>,
        outcomes: &mut Outcomes,
        deleted_enclaves: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        {
            let mut raft = tx.txn.open_table(RAFT).map_err(io_err)?;
            if let Some(hs) = &ready.hard_state {
                let bytes = postcard::to_allocvec(hs).map_err(io_err)?;
                raft.insert(HARD_STATE, bytes.as_slice()).map_err(io_err)?;
            }
        }
        if let (Some(meta), Some(chunks)) = (&ready.restore, snapshot) {
            self.install_staged(tx, chunks, meta)?;
            // The tables were replaced wholesale: their digests are computed anew.
            tx.digest.rehash = true;
        }
        {
            let mut log = tx.txn.open_table(LOG).map_err(io_err)?;
            if let Some(from) = ready.truncate_from {
                let doomed: Vec<u64> = log
                    .range(from..)
                    .map_err(io_err)?
                    .filter_map(|r| r.ok().map(|(k, _)| k.value()))
                    .collect();
                for i in doomed {
                    log.remove(i).map_err(io_err)?;
                }
            }
            for entry in &ready.append {
                self.put_log_entry(&mut log, entry)?;
            }
        }
        if !ready.apply.is_empty() {
            let mut applied = {
                let raft = tx.txn.open_table(RAFT).map_err(io_err)?;
                let value = raft
                    .get(APPLIED)
                    .map_err(io_err)?
                    .ok_or_else(|| corrupted(ConsensusDefect::NoApplied))?;
                Applied::decode(value.value())?
            };
            for entry in &ready.apply {
                match &entry.body {
                    Body::Noop => {}
                    Body::Command { command, .. } => {
                        let outcome = match codec::decode_command(command) {
                            Ok(cmd) => {
                                if let crate::command::Command::DeleteEnclave { name } = &cmd {
                                    deleted_enclaves.push(name.clone());
                                }
                                apply::apply(tx, &cmd)
                            }
                            Err(why) => Err(corrupted(ConsensusDefect::Command(entry.index, why))),
                        };
                        outcomes.push((entry.index, outcome));
                    }
                    Body::Config {
                        members,
                        forced,
                        command,
                    } => {
                        applied.meta.config = Config {
                            index: entry.index,
                            members: members.clone(),
                            forced: *forced,
                        };
                        applied.addresses = decode_addresses(command)?;
                    }
                }
                applied.meta.index = entry.index;
                applied.meta.term = entry.term;
            }
            let bytes = postcard::to_allocvec(&applied).map_err(io_err)?;
            tx.txn
                .open_table(RAFT)
                .map_err(io_err)?
                .insert(APPLIED, bytes.as_slice())
                .map_err(io_err)?;
            // Applied entries are never needed again: every member holds them, and a joining
            // node gets a snapshot.
            let mut log = tx.txn.open_table(LOG).map_err(io_err)?;
            let done: Vec<u64> = log
                .range(..=applied.meta.index)
                .map_err(io_err)?
                .filter_map(|r| r.ok().map(|(k, _)| k.value()))
                .collect();
            for i in done {
                log.remove(i).map_err(io_err)?;
            }
        }
        Ok(())
    }

    /// Stores a log entry, encrypted with the root key.
    fn put_log_entry(
        &self,
        log: &mut redb::Table<'_, u64, &[u8]>,
        entry: &LogEntry,
    ) -> Result<(), StoreError> {
        let plaintext = zeroize::Zeroizing::new(postcard::to_allocvec(entry).map_err(io_err)?);
        let random: [u8; RANDOM_LEN] = crate::random::bytes();
        let value = self
            .root
            .encrypt(&random, &plaintext, log_aad(entry.index).as_bytes());
        log.insert(entry.index, value.as_slice()).map_err(io_err)?;
        Ok(())
    }

    /// The addresses of the configuration at the applied point.
    pub fn applied_addresses(&self) -> Result<Addresses, StoreError> {
        Ok(self.raft_state()?.map(|s| s.addresses).unwrap_or_default())
    }
}

impl Store {
    /// Offline recovery (`kes-node cluster recover --force`): makes `keep` the configuration,
    /// whatever the log says. The other members become tombstones (their ids are never
    /// reused). Pending log entries stay, so the nodes of `keep` decide them by the ordinary
    /// protocol once they run (a pending entry may have been acknowledged; nothing is
    /// dropped); pending *configuration* entries become no-ops at the same index and term, so
    /// logs still match across the kept nodes. Returns the new addresses.
    pub fn force_configuration(&self, keep: &[NodeId]) -> Result<Addresses, StoreError> {
        let state = self
            .raft_state()?
            .ok_or(StoreError::Refused(Refusal::NeverClustered))?;
        let mut addresses = state.addresses.clone();
        // The newest configuration is the last one in the log, if any.
        for entry in &state.entries {
            if let Body::Config { command, .. } = &entry.body {
                addresses = decode_addresses(command)?;
            }
        }
        let mut members = kes_core::consensus::Members::new();
        for id in keep {
            if !matches!(addresses.get(id), Some(a) if !a.is_empty()) {
                return Err(StoreError::Refused(Refusal::NotAMember(*id)));
            }
            members
                .push(*id)
                .map_err(|_| StoreError::Refused(Refusal::TooManyNodes))?;
        }
        for (id, addr) in addresses.iter_mut() {
            if !keep.contains(id) {
                addr.clear();
            }
        }
        let tx = self.begin()?;
        {
            let mut raft = tx.txn.open_table(RAFT).map_err(io_err)?;
            let applied = Applied {
                meta: SnapshotMeta {
                    config: Config {
                        index: state.applied.index,
                        members,
                        forced: false,
                    },
                    ..state.applied
                },
                addresses: addresses.clone(),
            };
            let bytes = postcard::to_allocvec(&applied).map_err(io_err)?;
            raft.insert(APPLIED, bytes.as_slice()).map_err(io_err)?;
        }
        {
            let mut log = tx.txn.open_table(LOG).map_err(io_err)?;
            for entry in state.entries {
                if !matches!(entry.body, Body::Config { .. }) {
                    continue;
                }
                let noop = LogEntry {
                    body: Body::Noop,
                    ..entry
                };
                self.put_log_entry(&mut log, &noop)?;
            }
        }
        tx.commit()?;
        Ok(addresses)
    }
}
