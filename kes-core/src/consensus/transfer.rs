//! Leadership transfer (Raft thesis §3.10), so that a leader can be removed from the cluster:
//! the core never removes the leader itself, so the shell first hands leadership to another
//! member and then lets the new leader propose the removal.
//!
//! 1. [`Input::TransferLeadership`](super::Input::TransferLeadership) at the leader picks the
//!    member of its latest configuration that has matched the most (ties: the lowest id),
//!    preferring members the committed configuration has too, and stops taking proposals
//!    (`Busy`) for one election timeout.
//! 2. As soon as that member holds the leader's whole log, the leader sends it `TimeoutNow`.
//! 3. The member starts an election at once (no pre-vote), flagging its vote requests as a
//!    transfer, so followers that heard from the leader recently still vote (they would
//!    otherwise ignore it: leader stickiness). The usual rules decide the votes: one per
//!    term, only for an up-to-date log. So the transfer changes *when* an election happens,
//!    never who may win it: election safety is Raft's.
//! 4. The old leader sees the higher term and steps down. If nothing happens within the
//!    election timeout, the transfer is abandoned and the leader takes proposals again.
use super::message::{Message, NodeId, Term};
use super::node::{Node, Role, Transfer};
use super::output::Output;

impl<C: Clone> Node<C> {
    /// Starts a transfer (leader only; a no-op otherwise or without another member).
    pub(super) fn transfer_leadership(&mut self, out: &mut impl Output<C>) {
        if self.role != Role::Leader || self.transfer.is_some() {
            return;
        }
        // A member of the latest configuration that the committed one has too, if any: a node
        // that only a pending expand adds may hold the most of the log, yet the others, which
        // may not hold that configuration yet, do not count it as a voter: it could not win.
        let config = self.log.config();
        let committed = self.log.committed_config();
        let best = |voter: &dyn Fn(NodeId) -> bool| {
            self.progress
                .iter()
                .filter(|p| config.contains(p.id) && voter(p.id))
                .max_by_key(|p| (p.matched, core::cmp::Reverse(p.id)))
                .map(|p| p.id)
        };
        let target = best(&|id| committed.contains(id)).or_else(|| best(&|_| true));
        let Some(target) = target else {
            return;
        };
        self.transfer = Some(Transfer {
            target,
            until: self.now + self.params.election_timeout.max(1),
            sent: false,
        });
        self.maybe_send_timeout_now(out);
        if matches!(self.transfer, Some(Transfer { sent: false, .. })) {
            self.send_append(target, out);
        }
    }

    /// Sends `TimeoutNow` once the transfer's target holds the whole log.
    pub(super) fn maybe_send_timeout_now(&mut self, out: &mut impl Output<C>) {
        let Some(t) = self.transfer else {
            return;
        };
        if t.sent || self.match_of(t.target) < self.log.last_index() {
            return;
        }
        self.transfer = Some(Transfer { sent: true, ..t });
        self.send(t.target, Message::TimeoutNow { term: self.term }, out);
    }

    /// A transfer that did not produce a new leader in time is abandoned.
    pub(super) fn expire_transfer(&mut self) {
        if self.transfer.is_some_and(|t| self.now >= t.until) {
            self.transfer = None;
        }
    }

    /// The leader of `term` asks this node to take over.
    pub(super) fn handle_timeout_now(
        &mut self,
        from: NodeId,
        term: Term,
        out: &mut impl Output<C>,
    ) {
        if term != self.term
            || self.role != Role::Follower
            || self.leader != Some(from)
            || !self.is_member()
        {
            return;
        }
        self.reset_election_timer();
        self.start_election_for_transfer(out);
    }
}
