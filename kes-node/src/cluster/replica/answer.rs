//! Who waits for a write, and how its outcome reaches them: a client of this node, or one of
//! another node that forwarded the write (its answer travels back as a [`WireOutcome`]).
use kes_core::consensus::{NodeId, Term};

use super::clock::Millis;
use crate::cluster::frame::WireOutcome;
use crate::store::{IoFailure, LostAnswer, Refusal, StoreError, Unavailable};

/// Who waits for a write.
pub(super) enum Waiter<W> {
    /// A client of this node.
    Local(W),
    /// A client of another node that forwarded the write (its forward id).
    Remote(NodeId, u64),
}

/// A client's write this node forwarded to the leader, waiting for its answer.
pub(super) struct Forwarded<W> {
    pub waiter: W,
    /// The leader it went to, and this node's term then.
    pub leader: NodeId,
    pub term: Term,
    /// [`super::Links::breaks`] toward the leader when it left.
    pub breaks: u64,
    /// When it stops waiting: the timeout, or soon after the answer may have been lost.
    pub deadline: Millis,
    /// Why the answer may be lost, once it may.
    pub lost: Option<LostAnswer>,
}

/// A shrink of the leader `old`, waiting for another leader until the deadline.
pub(super) struct Held<W> {
    pub waiter: W,
    pub old: NodeId,
    pub deadline: Millis,
}

/// A write's outcome as the peer protocol carries it back to the node that forwarded it.
pub(super) fn to_wire(outcome: &Result<(), StoreError>) -> WireOutcome {
    match outcome {
        Ok(()) => WireOutcome::Ok,
        Err(StoreError::NotFound) => WireOutcome::NotFound,
        Err(StoreError::Exists) => WireOutcome::Exists,
        Err(StoreError::NoEnclave) => WireOutcome::NoEnclave,
        Err(StoreError::Refused(why)) => WireOutcome::Refused(why.to_string()),
        Err(StoreError::Unavailable(why)) => WireOutcome::Unavailable(why.to_string()),
        Err(StoreError::NoSpace(why)) => WireOutcome::Unavailable(why.to_string()),
        Err(e) => WireOutcome::Failed(e.to_string()),
    }
}

/// The outcome the leader sent back for a forwarded write.
pub(super) fn from_wire(outcome: WireOutcome) -> Result<(), StoreError> {
    match outcome {
        WireOutcome::Ok => Ok(()),
        WireOutcome::NotFound => Err(StoreError::NotFound),
        WireOutcome::Exists => Err(StoreError::Exists),
        WireOutcome::NoEnclave => Err(StoreError::NoEnclave),
        WireOutcome::Refused(m) => Err(StoreError::Refused(Refusal::Peer(m))),
        WireOutcome::Unavailable(m) => Err(StoreError::Unavailable(Unavailable::Peer(m))),
        WireOutcome::Failed(m) => Err(StoreError::Io(IoFailure::Peer(m))),
        WireOutcome::HandingOver => Err(StoreError::Unavailable(Unavailable::HandingOver)),
    }
}
