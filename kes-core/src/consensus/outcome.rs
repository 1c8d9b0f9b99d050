//! What the node reports to the shell about client operations: the handles of writes and reads
//! and why one did not go through. Below both the node and its output sink.
use super::message::{Index, Members, NodeId};

/// The shell's handle for a client write, returned with its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProposalId(pub u64);

/// The shell's handle for a client read, returned when the read may be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadId(pub u64);

/// Why a write did not (or may not) commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is the last one it heard of. Nothing was appended.
    NotLeader {
        /// The leader this node last heard of.
        leader: Option<NodeId>,
    },
    /// Too many writes in flight; nothing was appended. Retry later.
    Busy,
    /// These nodes have not answered for an election timeout, so the write could not commit;
    /// nothing was appended.
    Unavailable {
        /// The nodes not heard from.
        unreachable: Members,
    },
    /// The membership change is invalid (already a member, not a member, removes the leader, or
    /// another change is still pending). Nothing was appended.
    InvalidChange,
    /// The entry was replaced by another one: it will never commit.
    Overwritten,
    /// The entry did not commit in time; the nodes in `unreachable` had not stored it. It may
    /// still commit later.
    Timeout {
        /// The nodes that had not stored the entry.
        unreachable: Members,
    },
    /// This node lost track of the entry (it installed a snapshot); it may or may not have
    /// committed.
    Unknown,
}

/// Why a read may not be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// This node is not a member of the cluster (never joined, or removed).
    NotMember,
    /// Too many reads are waiting.
    Busy,
    /// An entry touching one of the names is still undecided on this node (the entry's index).
    Pending {
        /// The index of the undecided entry.
        index: Index,
    },
    /// `read_lease` is on and this node holds no lease (it cannot hear from a leader).
    NoLease,
    /// The leader has committed entries this node does not hold yet.
    CatchingUp,
}
