//! Removing the leader: the core never removes its own leader, so a shrink of the leader
//! first hands leadership to another member (`Input::TransferLeadership`, see
//! `kes_core::consensus` `transfer.rs`) and then goes to the new leader like any write.
//!
//! - At the leader, the client's shrink waits here until another node leads, then is
//!   forwarded to it.
//! - A follower that forwarded a shrink of the leader gets `HandingOver` back and waits here
//!   too, then sends the shrink to the new leader (or proposes it, if it is the new leader).
//!
//! If no new leader shows up in time the client gets `503`, and the old leader, its
//! transfer abandoned, goes on leading.
use kes_core::consensus::{Input, NodeId};

use super::answer::{to_wire, Held};
use super::storage::Storage;
use super::{file_normalize, Links, Replica, Write, LEADERLESS_WAIT};
use crate::cluster::frame::{Frame, WireOutcome};
use crate::command::Command;
use crate::store::{Refusal, StoreError, Unavailable};

impl<W: Write, R> Replica<W, R> {
    /// Whether `cmd` removes this node.
    pub(super) fn removes_self(&self, cmd: &Command) -> bool {
        let Command::Shrink { endpoint, .. } = cmd else {
            return false;
        };
        self.addresses.get(&self.id) == Some(&file_normalize(endpoint))
    }

    /// The leader was asked to remove itself: hand over, or say why not.
    fn start_handover(&mut self) -> Result<(), StoreError> {
        if self.node.config().members.len() < 2 {
            return Err(StoreError::Refused(Refusal::OnlyNode));
        }
        self.step(Input::TransferLeadership);
        Ok(())
    }

    /// A client of this node asks the leader (this node) to remove itself.
    pub(super) fn hand_over_local(&mut self, waiter: W) {
        match self.start_handover() {
            Ok(()) => self.held.push(Held {
                waiter,
                old: self.id,
                deadline: self.now + LEADERLESS_WAIT,
            }),
            Err(err) => self.completions.push((waiter, Err(err))),
        }
    }

    /// A follower forwarded a shrink of this node, the leader: hand over and tell it to send
    /// the shrink to the next leader.
    pub(super) fn hand_over_remote(&mut self, links: &mut dyn Links, from: NodeId, id: u64) {
        let outcome = match self.start_handover() {
            Ok(()) => WireOutcome::HandingOver,
            Err(err) => to_wire(&Err(err)),
        };
        links.send(self.answer_to(from), &Frame::ForwardResult { id, outcome });
    }

    /// The leader `old` answered a forwarded shrink of itself with `HandingOver`.
    pub(super) fn hold_for_new_leader(&mut self, waiter: W, old: NodeId) {
        self.held.push(Held {
            waiter,
            old,
            deadline: self.now + LEADERLESS_WAIT,
        });
    }

    /// Sends held shrinks to the new leader once there is one; fails them after the deadline.
    pub(super) fn release_held(&mut self, links: &mut dyn Links, store: &dyn Storage) {
        if self.held.is_empty() {
            return;
        }
        for h in std::mem::take(&mut self.held) {
            match self.node.leader() {
                Some(l) if l != h.old => {
                    self.propose_until(links, store, h.waiter, h.deadline);
                }
                _ if self.now >= h.deadline => {
                    let why = format!(
                        "cluster: node {} leads and could not hand over its leadership in time \
                         to be removed; retry",
                        h.old
                    );
                    self.completions.push((
                        h.waiter,
                        Err(StoreError::Unavailable(Unavailable::Cluster(why))),
                    ));
                }
                _ => self.held.push(h),
            }
        }
    }
}
