//! Leader election, as in Raft §5.2 and §5.4.1.
//!
//! ```text
//!           timeout, member             majority of               majority of
//!                                       pre-votes                 votes
//! Follower ----------------> PreCandidate ------> Candidate ------------> Leader
//!    ^  ^                         |                   |  (timeout:           |
//!    |  +---- AppendEntries ------+-------------------+   pre-vote again)    |
//!    +--------------------------- higher term -------------------------------+
//! ```
//!
//! - A follower or candidate whose election deadline passes and that is a member of its latest
//!   configuration first asks every other member for a *pre-vote* for `term + 1` (would you
//!   vote for me?), changing nothing; only with pre-votes from a majority does it start term
//!   `term + 1`, vote for itself (persisted before any request is sent) and ask every other
//!   member. A node grants a pre-vote on the same log check, unless it is a leader or heard
//!   from one within the election timeout. So a node that cannot win never bumps terms.
//! - A node grants at most one vote per term, only to a member of its latest configuration, and
//!   only if the candidate's log is at least as up to date as its own (last term, then last
//!   index). A vote is persisted before it is sent. A request from a node that a *committed*
//!   configuration excludes is answered with `NotMember` and its term is ignored, so a removed
//!   node cannot disrupt the cluster (with an uncommitted change, or no configuration yet,
//!   a node votes as in Raft: the candidate may still be needed).
//! - A candidate with votes from a majority of its latest configuration becomes leader, resets
//!   every match index and appends a no-op of its own term.
//! - The election deadline is `now + election_timeout + random % election_timeout`, the random
//!   number coming from the shell with each tick.

use heapless::Vec;

use super::message::{Body, Entry, Index, Message, NodeId, Term};
use super::node::{push_bounded, Node, Progress, Role};
use super::output::Output;

impl<C: Clone> Node<C> {
    pub(super) fn reset_election_timer(&mut self) {
        let t = self.params.election_timeout.max(1);
        self.election_deadline = self.now + t + self.random % t;
        // Stir, so consecutive resets within one tick differ.
        self.random = self
            .random
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }

    /// Whether this node counts itself a member of the cluster.
    pub fn is_member(&self) -> bool {
        let config = self.log.config();
        config.contains(self.id) && !matches!(self.removed_at, Some(r) if r > config.index)
    }

    /// The election timeout passed: start a pre-vote round (or, without pre-votes, an
    /// election).
    pub(super) fn campaign(&mut self, out: &mut impl Output<C>) {
        self.reset_election_timer();
        if !self.is_member() {
            return;
        }
        if !self.params.pre_vote {
            self.start_election(out);
            return;
        }
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        push_bounded(&mut self.votes, self.id);
        if self.votes.len() >= self.log.config().majority() {
            self.start_election(out);
            return;
        }
        self.request_votes(self.term + 1, true, false, out);
    }

    fn start_election(&mut self, out: &mut impl Output<C>) {
        self.start_election_as(false, out);
    }

    /// An election because the leader handed over (see `transfer.rs`).
    pub(super) fn start_election_for_transfer(&mut self, out: &mut impl Output<C>) {
        self.start_election_as(true, out);
    }

    fn start_election_as(&mut self, transfer: bool, out: &mut impl Output<C>) {
        self.term += 1;
        self.voted_for = Some(self.id);
        self.persist_hard_state(out);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        push_bounded(&mut self.votes, self.id);
        if self.votes.len() >= self.log.config().majority() {
            self.become_leader(out);
            return;
        }
        self.request_votes(self.term, false, transfer, out);
    }

    fn request_votes(
        &mut self,
        term: Term,
        pre_vote: bool,
        transfer: bool,
        out: &mut impl Output<C>,
    ) {
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let config = self.log.config();
        for &peer in config.members.iter().filter(|&&m| m != self.id) {
            let message = Message::RequestVote {
                term,
                last_index,
                last_term,
                pre_vote,
                transfer,
            };
            self.send(peer, message, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_request_vote(
        &mut self,
        from: NodeId,
        term: Term,
        last_index: Index,
        last_term: Term,
        pre_vote: bool,
        transfer: bool,
        out: &mut impl Output<C>,
    ) {
        let config = self.log.config();
        // Only a *committed* configuration that excludes the candidate proves it was removed.
        // Otherwise vote like any Raft node: an uncommitted change may yet be truncated and the
        // candidate be needed (and a joining node, with no configuration, may be needed too).
        let removed = !config.members.is_empty()
            && !config.contains(from)
            && config.index <= self.log.commit();
        if removed {
            let message = Message::NotMember {
                term: self.term,
                config_index: config.index,
            };
            self.send(from, message, out);
            return;
        }
        // Leader stickiness (Raft thesis §4.2.3): a follower that heard from a leader within the
        // minimum election timeout ignores a candidate, so a node that cannot hear the leader
        // (or was removed without knowing it) cannot depose a working leader.
        // A transfer is the leader's own wish, so stickiness does not apply (thesis §3.10).
        let sticky = !transfer
            && self.role == Role::Follower
            && self.leader.is_some()
            && self.now < self.leader_contact + self.params.election_timeout;
        let up_to_date = (last_term, last_index) >= (self.log.last_term(), self.log.last_index());
        if pre_vote {
            // Would we vote for it in `term`? Nothing changes here.
            let granted = term > self.term && up_to_date && !sticky && self.role != Role::Leader;
            let term = if granted { term } else { self.term };
            let message = Message::Vote {
                term,
                granted,
                pre_vote: true,
            };
            self.send(from, message, out);
            return;
        }
        if term > self.term && sticky {
            let message = Message::Vote {
                term: self.term,
                granted: false,
                pre_vote: false,
            };
            self.send(from, message, out);
            return;
        }
        if term > self.term {
            self.become_follower(term, None, out);
        }
        let granted = term == self.term
            && (self.voted_for.is_none() || self.voted_for == Some(from))
            && up_to_date
            && self.role != Role::Leader;
        if granted {
            if self.voted_for.is_none() {
                self.voted_for = Some(from);
                self.persist_hard_state(out);
            }
            self.reset_election_timer();
        }
        self.send(
            from,
            Message::Vote {
                term: self.term,
                granted,
                pre_vote: false,
            },
            out,
        );
    }

    pub(super) fn handle_vote(
        &mut self,
        from: NodeId,
        term: Term,
        granted: bool,
        pre_vote: bool,
        out: &mut impl Output<C>,
    ) {
        if pre_vote {
            if granted {
                if self.role != Role::PreCandidate || term != self.term + 1 {
                    return;
                }
            } else {
                // A refusal carries the voter's term: if it is ahead, catch up.
                if term > self.term {
                    self.become_follower(term, None, out);
                }
                return;
            }
        } else {
            if term > self.term {
                self.become_follower(term, None, out);
                return;
            }
            if self.role != Role::Candidate || term != self.term || !granted {
                return;
            }
        }
        let config = self.log.config();
        if !config.contains(from) || self.votes.contains(&from) {
            return;
        }
        push_bounded(&mut self.votes, from);
        if self.votes.len() >= config.majority() {
            if pre_vote {
                self.start_election(out);
                return;
            }
            self.become_leader(out);
        }
    }

    fn become_leader(&mut self, out: &mut impl Output<C>) {
        self.role = Role::Leader;
        self.leader = Some(self.id);
        // A majority of our configuration just counted us a member.
        self.removed_at = None;
        self.votes.clear();
        self.progress = Vec::new();
        self.forced_acked = None;
        self.lease_until = 0;
        self.sync_progress();
        self.noop_pending = true;
        self.append_noop(out);
        self.broadcast_append(out);
    }

    /// Appends the leader's no-op if the window has room (otherwise retried on each commit).
    pub(super) fn append_noop(&mut self, out: &mut impl Output<C>) {
        if !self.log.has_room() {
            return;
        }
        let entry = Entry {
            term: self.term,
            index: self.log.last_index() + 1,
            body: Body::Noop,
        };
        let index = entry.index;
        if self.append_own(entry, out) {
            self.noop_pending = false;
            self.noop_index = index;
        }
    }

    /// Makes `progress` hold exactly the current replication targets (new ones start at the
    /// end of the leader's log with nothing matched).
    pub(super) fn sync_progress(&mut self) {
        let targets = self.replication_targets();
        self.progress.retain(|p| targets.contains(&p.id));
        let next = self.log.last_index() + 1;
        for id in targets {
            if !self.progress.iter().any(|p| p.id == id) {
                push_bounded(
                    &mut self.progress,
                    Progress {
                        id,
                        next,
                        matched: 0,
                        echo: None,
                        last_heard: self.now,
                    },
                );
            }
        }
    }
}
