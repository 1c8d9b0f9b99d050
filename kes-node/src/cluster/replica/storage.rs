//! What the replica needs from storage, and nothing more: [`Store`] implements it over redb
//! (a file in production, redb's in-memory backend in tests and the simulator). A driver may
//! wrap a `Store` to inject faults (a failing persist, a disk that fills up) without the
//! replica knowing.
use crate::command::Command;
use crate::store::{Addresses, Outcomes, RaftState, ReadyRef, SnapshotReader, Store, StoreError};

/// The replica's storage.
pub trait Storage {
    /// The stored consensus state: hard state, applied point, addresses, log above it.
    fn raft_state(&self) -> Result<Option<RaftState>, StoreError>;
    /// Persists the storage part of a batch of steps in one durable transaction and applies
    /// their committed entries; the outcome of every applied command, by log index.
    fn persist_batch(&self, batch: &[ReadyRef<'_>]) -> Result<Outcomes, StoreError>;
    /// The members' addresses of the applied configuration.
    fn applied_addresses(&self) -> Result<Addresses, StoreError>;
    /// Whether there is room on disk for `cmd` (deletes always pass).
    fn check_room(&self, cmd: &Command) -> Result<(), StoreError>;
    /// Stages chunk `seq` of a snapshot being received.
    fn stage_snapshot_chunk(&self, seq: u32, chunk: &[u8]) -> Result<(), StoreError>;
    /// A consistent view of the applied state to stream as a snapshot.
    fn snapshot_reader(&self) -> Result<SnapshotReader, StoreError>;
    /// Reopens the database after a failed write, if needed.
    fn heal(&self) -> Result<(), StoreError>;
}

impl Storage for Store {
    fn raft_state(&self) -> Result<Option<RaftState>, StoreError> {
        Store::raft_state(self)
    }
    fn persist_batch(&self, batch: &[ReadyRef<'_>]) -> Result<Outcomes, StoreError> {
        Store::persist_batch(self, batch)
    }
    fn applied_addresses(&self) -> Result<Addresses, StoreError> {
        Store::applied_addresses(self)
    }
    fn check_room(&self, cmd: &Command) -> Result<(), StoreError> {
        Store::check_room(self, cmd)
    }
    fn stage_snapshot_chunk(&self, seq: u32, chunk: &[u8]) -> Result<(), StoreError> {
        Store::stage_snapshot_chunk(self, seq, chunk)
    }
    fn snapshot_reader(&self) -> Result<SnapshotReader, StoreError> {
        Store::snapshot_reader(self)
    }
    fn heal(&self) -> Result<(), StoreError> {
        Store::heal(self)
    }
}
