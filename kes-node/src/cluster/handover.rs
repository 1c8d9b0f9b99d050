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
use std::time::Instant;

use kes_core::consensus::{Input, NodeId};

use super::peer::{Frame, WireOutcome};
use super::{file, Cluster, ConnRef, LEADERLESS_WAIT};
use crate::api::Pending;
use crate::command::Command;
use crate::store::{Refusal, Store, StoreError, Unavailable};

/// A shrink of the leader `old`, waiting for another leader until the deadline.
pub struct Held {
    conn: ConnRef,
    pending: Box<Pending>,
    old: NodeId,
    deadline: Instant,
}

impl Cluster {
    /// Whether `cmd` removes this node.
    pub(super) fn removes_self(&self, cmd: &Command) -> bool {
        let Command::Shrink { endpoint, .. } = cmd else {
            return false;
        };
        let endpoint = file::normalize(endpoint).unwrap_or_else(|_| endpoint.clone());
        self.addresses.get(&self.id) == Some(&endpoint)
    }

    /// The leader was asked to remove itself: hand over, or say why not.
    fn start_handover(&mut self, store: &Store) -> Result<(), StoreError> {
        if self.node.config().members.len() < 2 {
            return Err(StoreError::Refused(Refusal::OnlyNode));
        }
        self.step(store, Input::TransferLeadership);
        Ok(())
    }

    /// A client of this node asks the leader (this node) to remove itself.
    pub(super) fn hand_over_local(&mut self, store: &Store, conn: ConnRef, pending: Box<Pending>) {
        match self.start_handover(store) {
            Ok(()) => self.held.push(Held {
                conn,
                pending,
                old: self.id,
                deadline: Instant::now() + LEADERLESS_WAIT,
            }),
            Err(err) => self.completions.push((conn, pending, Err(err))),
        }
    }

    /// A follower forwarded a shrink of this node, the leader: hand over and tell it to send
    /// the shrink to the next leader.
    pub(super) fn hand_over_remote(&mut self, store: &Store, from: NodeId, id: u64) {
        let outcome = match self.start_handover(store) {
            Ok(()) => WireOutcome::HandingOver,
            Err(err) => super::to_wire(&Err(err)),
        };
        self.send_to(from, &Frame::ForwardResult { id, outcome });
    }

    /// The leader `old` answered a forwarded shrink of itself with `HandingOver`.
    pub(super) fn hold_for_new_leader(
        &mut self,
        conn: ConnRef,
        pending: Box<Pending>,
        old: NodeId,
    ) {
        self.held.push(Held {
            conn,
            pending,
            old,
            deadline: Instant::now() + LEADERLESS_WAIT,
        });
    }

    /// Sends held shrinks to the new leader once there is one; fails them after the deadline.
    pub(super) fn release_held(&mut self, store: &Store) {
        if self.held.is_empty() {
            return;
        }
        let now = Instant::now();
        for h in std::mem::take(&mut self.held) {
            match self.node.leader() {
                Some(l) if l != h.old => {
                    self.propose_until(store, h.conn, h.pending, h.deadline);
                }
                _ if now >= h.deadline => {
                    let why = format!(
                        "cluster: node {} leads and could not hand over its leadership in time \
                         to be removed; retry",
                        h.old
                    );
                    self.completions.push((
                        h.conn,
                        h.pending,
                        Err(StoreError::Unavailable(Unavailable::Cluster(why))),
                    ));
                }
                _ => self.held.push(h),
            }
        }
    }
}
