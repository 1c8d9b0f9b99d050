//! Where a step's outputs go: the [`Output`] sink that [`Node::step`](super::Node::step) calls,
//! in the manner of smoltcp's and quinn-proto's sans-IO interfaces.
//!
//! The core never builds a batch of its own: each thing it decides (persist the hard state,
//! append an entry, send a message, answer a client) is one call on the shell's sink, made at
//! the moment the core decides it. So the core needs no buffer for them, has no capacity to
//! overflow and drops nothing; how much to hold and how to batch is the shell's business.
//! `StepOutput` (feature `alloc`) is a ready-made sink that collects one or more steps into
//! `Vec`s, for shells that want a batch to carry out.

use super::message::{Entry, Envelope, HardState, Index, SnapshotMeta};
use super::outcome::{ProposalId, ProposeError, ReadError, ReadId};

/// What the core asks the shell to do, one call per decision, during
/// [`Node::step`](super::Node::step).
///
/// # The contract
///
/// The calls of one step fall in three groups, and the shell carries them out group by group:
///
/// 1. **Persist** — [`hard_state`](Output::hard_state), [`restore`](Output::restore),
///    [`truncate`](Output::truncate), [`append`](Output::append), [`apply`](Output::apply).
///    They are operations on the durable state, to be carried out *in the order they were
///    called* and *atomically*: after a crash, either all of a step's persistence calls took
///    effect or none did (one durable transaction, fsynced). Several consecutive steps may
///    share one transaction (group commit) as long as their order is kept.
/// 2. **Send** — [`send`](Output::send), [`send_snapshot`](Output::send_snapshot). Nothing of a
///    step may leave the node before its persistence group is durable: a vote or an
///    acknowledgement promises that the state it reports is on disk.
/// 3. **Answer** — [`proposal`](Output::proposal), [`read`](Output::read). Also only after
///    the persistence group is durable: an `Ok` proposal was applied in it, and a released read
///    is answered from the state it left.
///
/// The calls of the groups interleave while the core runs (it may append, then send, then
/// apply), so a shell buffers groups 2 and 3 until group 1 is durable; `StepOutput` does
/// exactly that. Crashing anywhere in between is safe: the transaction happened or not, and a
/// message that was never sent is just a lost message.
///
/// A sink may drop *messages* (groups 2) when it has no room: the protocol tolerates any loss.
/// It must not drop persistence calls or answers; the core has already acted on them.
///
/// # Order within the persistence group
///
/// - `hard_state` may be called more than once in a step; the latest call wins.
/// - `restore` installs the snapshot that arrived with the message being handled. It comes
///   before any `truncate`, `append` or `apply` of the same step.
/// - `truncate(from)` removes every stored log entry at index `from` or above, including any
///   appended earlier in the same step (or batch).
/// - `append` adds an entry at the end of the log; its index is one above the log's last.
/// - `apply` hands over a committed entry, in index order, each after its own `append` (which
///   may be in the same step). The shell applies it to its state machine and records its index
///   and term as the applied point. Applying in the same transaction that persists the appends
///   is what keeps *commit index = applied index* (see the module docs).
pub trait Output<C> {
    /// Persist the term and vote (the latest call of a step wins).
    fn hard_state(&mut self, state: HardState);
    /// Install the snapshot that came with the `InstallSnapshot` being handled, with this
    /// metadata (its index, term and configuration become the applied point).
    fn restore(&mut self, meta: SnapshotMeta);
    /// Remove the log entries at `from` and above.
    fn truncate(&mut self, from: Index);
    /// Append `entry` to the log.
    fn append(&mut self, entry: Entry<C>);
    /// Apply the committed `entry` to the state machine and record it as applied.
    fn apply(&mut self, entry: Entry<C>);
    /// Send a message to a peer (after the step's persistence is durable).
    fn send(&mut self, envelope: Envelope<C>);
    /// Send an `InstallSnapshot` together with a snapshot of the applied state (as of the
    /// step's persistence).
    fn send_snapshot(&mut self, envelope: Envelope<C>);
    /// The outcome of a write proposed with this id: the index it was applied at, or why not.
    fn proposal(&mut self, id: ProposalId, result: Result<Index, ProposeError>);
    /// The decision on a read: `Ok` means it may be answered from the applied state now.
    fn read(&mut self, id: ReadId, result: Result<(), ReadError>);
}

#[cfg(feature = "alloc")]
pub use collect::StepOutput;

#[cfg(feature = "alloc")]
mod collect {
    use alloc::vec::Vec;

    use super::*;

    /// An [`Output`] that collects steps into growable lists, in the shape the contract
    /// prescribes: the persistence group normalized into fields (latest hard state, lowest
    /// truncation, appends that survive it, applied entries), then the messages and answers.
    ///
    /// It may collect one step or several (cleared by [`StepOutput::clear`]); for several,
    /// carry out `hard_state`, `restore`, `truncate_from`, `append`, `apply` in this order. A
    /// `restore` after appends of an earlier step in the same collector is not representable
    /// in these fields; collect such a step separately (the shell and the simulator collect
    /// one step per `StepOutput`).
    #[derive(Clone, Debug)]
    pub struct StepOutput<C> {
        /// The hard state to persist, if it changed.
        pub hard_state: Option<HardState>,
        /// The snapshot to install, if one was accepted.
        pub restore: Option<SnapshotMeta>,
        /// Remove the stored entries from this index on (before appending).
        pub truncate_from: Option<Index>,
        /// Entries to append to the log, in order.
        pub append: Vec<Entry<C>>,
        /// Committed entries to apply, in order.
        pub apply: Vec<Entry<C>>,
        /// Messages to send once the above is durable.
        pub messages: Vec<Envelope<C>>,
        /// `InstallSnapshot` messages to send, each with a snapshot of the applied state.
        pub snapshots: Vec<Envelope<C>>,
        /// Outcomes of writes.
        pub proposals: Vec<(ProposalId, Result<Index, ProposeError>)>,
        /// Decisions on reads.
        pub reads: Vec<(ReadId, Result<(), ReadError>)>,
    }

    impl<C> Default for StepOutput<C> {
        fn default() -> Self {
            StepOutput {
                hard_state: None,
                restore: None,
                truncate_from: None,
                append: Vec::new(),
                apply: Vec::new(),
                messages: Vec::new(),
                snapshots: Vec::new(),
                proposals: Vec::new(),
                reads: Vec::new(),
            }
        }
    }

    impl<C> StepOutput<C> {
        /// Empties every list (keeping their memory) and the optional fields.
        pub fn clear(&mut self) {
            self.hard_state = None;
            self.restore = None;
            self.truncate_from = None;
            self.append.clear();
            self.apply.clear();
            self.messages.clear();
            self.snapshots.clear();
            self.proposals.clear();
            self.reads.clear();
        }

        /// Whether nothing was collected.
        pub fn is_empty(&self) -> bool {
            !self.needs_write()
                && self.messages.is_empty()
                && self.snapshots.is_empty()
                && self.proposals.is_empty()
                && self.reads.is_empty()
        }

        /// Whether the persistence group is non-empty (a durable transaction is needed).
        pub fn needs_write(&self) -> bool {
            self.hard_state.is_some()
                || self.restore.is_some()
                || self.truncate_from.is_some()
                || !self.append.is_empty()
                || !self.apply.is_empty()
        }
    }

    impl<C> Output<C> for StepOutput<C> {
        fn hard_state(&mut self, state: HardState) {
            self.hard_state = Some(state);
        }
        fn restore(&mut self, meta: SnapshotMeta) {
            self.restore = Some(meta);
        }
        fn truncate(&mut self, from: Index) {
            self.truncate_from = Some(self.truncate_from.map_or(from, |i| i.min(from)));
            // Entries collected for appending at or above `from` are gone too.
            while self.append.last().is_some_and(|e| e.index >= from) {
                self.append.pop();
            }
        }
        fn append(&mut self, entry: Entry<C>) {
            self.append.push(entry);
        }
        fn apply(&mut self, entry: Entry<C>) {
            self.apply.push(entry);
        }
        fn send(&mut self, envelope: Envelope<C>) {
            self.messages.push(envelope);
        }
        fn send_snapshot(&mut self, envelope: Envelope<C>) {
            self.snapshots.push(envelope);
        }
        fn proposal(&mut self, id: ProposalId, result: Result<Index, ProposeError>) {
            self.proposals.push((id, result));
        }
        fn read(&mut self, id: ReadId, result: Result<(), ReadError>) {
            self.reads.push((id, result));
        }
    }
}
