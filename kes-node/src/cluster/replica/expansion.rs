//! The state of an expand being prepared: its stage, its deadline and who waits for it (see
//! `expand.rs` for the stages' logic).
use kes_core::consensus::{Index, NodeId};

use super::answer::Waiter;
use super::clock::Millis;

/// An expand being prepared.
pub(super) struct Expansion<W> {
    pub(super) waiter: Waiter<W>,
    /// The id the new node gets.
    pub(super) id: NodeId,
    pub(super) endpoint: String,
    pub(super) stage: Stage,
    pub(super) deadline: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// Not dialed yet (the next `maintain` dials).
    Dial,
    /// The link to the new node is opening.
    Handshake,
    /// The link is open and the node waits to join: ship a snapshot after the next flush.
    Ship,
    /// The snapshot with this index is on its way; `chunks` sent so far.
    Shipping { index: Index, chunks: u32 },
}

impl<W> Expansion<W> {
    /// What `cluster info` shows while the expansion runs.
    pub(super) fn describe(&self) -> String {
        let what = match self.stage {
            Stage::Dial | Stage::Handshake => "contacting",
            Stage::Ship | Stage::Shipping { .. } => "sending a snapshot to",
        };
        format!("expand: {what} node {} ({})", self.id, self.endpoint)
    }
}
