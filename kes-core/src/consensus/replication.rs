//! Log replication and the all-node commit rule (Raft §5.3, with the commit rule changed).
//!
//! Leader side:
//! - For each replication target it keeps `next` (the next index to send, optimistic) and
//!   `matched` (the highest index acknowledged *in this term*; reset to 0 on election).
//! - It sends `AppendEntries` (at most `MAX_BATCH` entries from `next`) on every proposal, on
//!   every heartbeat and whenever a follower is behind after a response. A rejection moves
//!   `next` back to the follower's hint; if the follower lacks an entry at or below the
//!   leader's commit index (a joining node) the leader asks the shell to send a snapshot.
//! - **Commit rule**: index `c` commits when every member of the latest configuration has
//!   matched `c`; an uncommitted (non-forced) configuration entry at `e` additionally needs
//!   every member of the configuration before it to have matched `min(c, e)`. A forced shrink
//!   at `e` needs the removed node for `c < e` only (so entries commit without it only together
//!   with its removal; that includes a stuck configuration entry below it whose old
//!   configuration still had the node, see `membership.rs`), and waives no other node's
//!   acknowledgement (a pending shrink below it still needs the leaving node's). With
//!   `read_lease` on the leader holds all commits until `read_lease` has passed since every
//!   remaining member acknowledged the last forced shrink. When the commit index advances the
//!   leader applies and immediately tells every target (the commit notice), not only on the
//!   next heartbeat.
//!
//! Follower side (Raft's rules exactly): reject a lower term; check `prev_index`/`prev_term`
//! (entries at or below the follower's commit index match by construction); skip matching
//! entries; truncate from the first *conflicting* entry only (never a matching suffix, so a stale
//! duplicate cannot erase newer entries); append the rest while the window has room; commit to
//! `min(leader commit, last index verified by this message)`.

use heapless::Vec;

use super::log::config_of;
use super::message::{Entry, Index, Message, Names, NodeId, SnapshotMeta, Term, Time};
use super::node::{push_bounded, Node, Proposal, Role};
use super::outcome::{ProposalId, ProposeError};
use super::output::Output;
use super::{Body, MAX_BATCH};

impl<C: Clone> Node<C> {
    pub(super) fn match_of(&self, id: NodeId) -> Index {
        if id == self.id {
            return self.log.last_index();
        }
        self.progress
            .iter()
            .find(|p| p.id == id)
            .map_or(0, |p| p.matched)
    }

    pub(super) fn broadcast_append(&mut self, out: &mut impl Output<C>) {
        self.sync_progress();
        for i in 0..self.progress.len() {
            let id = self.progress[i].id;
            self.send_append(id, out);
        }
        self.heartbeat_deadline = self.now + self.params.heartbeat_interval.max(1);
    }

    pub(super) fn send_append(&mut self, to: NodeId, out: &mut impl Output<C>) {
        let commit = self.log.commit();
        let last = self.log.last_index();
        let Some(p) = self.progress.iter_mut().find(|p| p.id == to) else {
            return;
        };
        p.next = p.next.clamp(commit + 1, last + 1);
        let prev_index = p.next - 1;
        let prev_term = self.log.term_at(prev_index).unwrap_or(0);
        let mut entries: Vec<Entry<C>, MAX_BATCH> = Vec::new();
        let mut index = p.next;
        while index <= last && !entries.is_full() {
            if let Some(entry) = self.log.entry(index) {
                push_bounded(&mut entries, entry.clone());
            }
            index += 1;
        }
        p.next = index;
        // A lease only for a follower known to hold every committed entry (our no-op).
        let echo = if self.noop_index > 0 && p.matched >= self.noop_index {
            p.echo
        } else {
            None
        };
        let message = Message::AppendEntries {
            term: self.term,
            prev_index,
            prev_term,
            entries,
            commit,
            sent_at: self.now,
            echo,
        };
        self.send(to, message, out);
    }

    fn send_snapshot(&mut self, to: NodeId, out: &mut impl Output<C>) {
        let meta = SnapshotMeta {
            index: self.log.commit(),
            term: self.log.commit_term(),
            config: self.log.committed_config().clone(),
        };
        if let Some(p) = self.progress.iter_mut().find(|p| p.id == to) {
            p.next = meta.index + 1;
        }
        let message = Message::InstallSnapshot {
            term: self.term,
            meta,
            sent_at: self.now,
        };
        out.send_snapshot(super::Envelope {
            from: self.id,
            to,
            message,
        });
    }

    /// As leader: an `InstallSnapshot` of the applied state for `to`, a node that is not a
    /// member yet, so that the shell can ship a snapshot to a new node *before* the
    /// configuration that adds it is appended (a safe expand: nothing is appended unless the
    /// node took the snapshot). `None` if this node does not lead.
    pub fn snapshot_for(&self, to: NodeId) -> Option<super::Envelope<C>> {
        if self.role != Role::Leader {
            return None;
        }
        let meta = SnapshotMeta {
            index: self.log.commit(),
            term: self.log.commit_term(),
            config: self.log.committed_config().clone(),
        };
        Some(super::Envelope {
            from: self.id,
            to,
            message: Message::InstallSnapshot {
                term: self.term,
                meta,
                sent_at: self.now,
            },
        })
    }

    fn respond(
        &self,
        to: NodeId,
        success: bool,
        index: Index,
        echo: Time,
        out: &mut impl Output<C>,
    ) {
        let message = Message::AppendResponse {
            term: self.term,
            success,
            index,
            last_index: self.log.last_index(),
            echo,
            sent_at: self.now,
        };
        self.send(to, message, out);
    }

    /// Accepting a message from the leader of our term: follow it, reset the election timer,
    /// and (with `read_lease`) extend the lease from our own earlier send time it echoes.
    fn heard_from_leader(
        &mut self,
        from: NodeId,
        term: Term,
        echo: Option<Time>,
        out: &mut impl Output<C>,
    ) {
        self.become_follower(term, Some(from), out);
        self.reset_election_timer();
        self.removed_at = None;
        self.leader_contact = self.now;
        if let (Some(lease), Some(echo)) = (self.params.read_lease, echo) {
            let until = (echo + lease).saturating_sub(self.params.clock_drift);
            self.lease_until = self.lease_until.max(until);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        term: Term,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry<C>, MAX_BATCH>,
        leader_commit: Index,
        sent_at: Time,
        echo: Option<Time>,
        out: &mut impl Output<C>,
    ) {
        if term < self.term {
            self.respond(from, false, prev_index, sent_at, out);
            return;
        }
        if self.role == Role::Leader && term == self.term {
            // Two leaders in one term cannot happen; ignore rather than corrupt state.
            return;
        }
        self.heard_from_leader(from, term, echo, out);
        self.leader_commit = self.leader_commit.max(leader_commit);
        // A joining node has no configuration yet: it waits for a snapshot.
        let joining = self.log.committed_config().members.is_empty();
        if joining || prev_index > self.log.last_index() {
            self.respond(from, false, prev_index, sent_at, out);
            return;
        }
        // Entries at or below our commit index are committed, hence on the leader too.
        if prev_index >= self.log.commit() && self.log.term_at(prev_index) != Some(prev_term) {
            self.respond(from, false, prev_index, sent_at, out);
            return;
        }
        let mut matched = prev_index;
        for entry in entries {
            if entry.index <= self.log.commit() {
                matched = matched.max(entry.index);
                continue;
            }
            match self.log.term_at(entry.index) {
                Some(t) if t == entry.term => {
                    matched = entry.index;
                    continue;
                }
                Some(_) => self.truncate_from(entry.index, out),
                None => {}
            }
            if entry.index != self.log.last_index() + 1 {
                break;
            }
            if !self.log.has_room() {
                self.commit_to(leader_commit.min(matched), out);
                if !self.log.has_room() {
                    break;
                }
            }
            // The window has room (checked above); the entry is persisted only if held.
            if !self.log.push(entry.clone()) {
                break;
            }
            matched = entry.index;
            out.append(entry);
        }
        self.commit_to(leader_commit.min(matched), out);
        self.respond(from, true, matched, sent_at, out);
    }

    pub(super) fn handle_snapshot(
        &mut self,
        from: NodeId,
        term: Term,
        meta: SnapshotMeta,
        sent_at: Time,
        out: &mut impl Output<C>,
    ) {
        if term < self.term {
            self.respond(from, false, meta.index, sent_at, out);
            return;
        }
        if self.role == Role::Leader && term == self.term {
            return;
        }
        self.heard_from_leader(from, term, None, out);
        self.leader_commit = self.leader_commit.max(meta.index);
        let joining = self.log.committed_config().members.is_empty();
        if meta.index > self.log.commit() || (joining && !meta.config.members.is_empty()) {
            let keep = self.log.term_at(meta.index) == Some(meta.term);
            // Proposals below the snapshot: this node cannot tell their outcome any more.
            self.proposals.retain(|p| {
                if p.index > meta.index && keep {
                    return true;
                }
                let result = if p.index > meta.index {
                    ProposeError::Overwritten
                } else {
                    ProposeError::Unknown
                };
                out.proposal(p.id, Err(result));
                false
            });
            let index = meta.index;
            self.log.restore(meta.clone());
            out.restore(meta);
            if !keep {
                out.truncate(index + 1);
            }
        }
        self.respond(
            from,
            true,
            self.log.commit().min(self.log.last_index()),
            sent_at,
            out,
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        term: Term,
        success: bool,
        index: Index,
        last_index: Index,
        echo: Time,
        sent_at: Time,
        out: &mut impl Output<C>,
    ) {
        if term > self.term {
            self.become_follower(term, None, out);
            return;
        }
        if self.role != Role::Leader || term != self.term {
            return;
        }
        let commit = self.log.commit();
        let last = self.log.last_index();
        let Some(p) = self.progress.iter_mut().find(|p| p.id == from) else {
            return;
        };
        // Any response in our term was sent by a node that had not yet moved to a later term.
        if let Some(lease) = self.params.read_lease {
            let until = (echo + lease).saturating_sub(self.params.clock_drift);
            self.lease_until = self.lease_until.max(until);
        }
        p.echo = Some(p.echo.map_or(sent_at, |e| e.max(sent_at)));
        p.last_heard = self.now;
        if success {
            let index = index.min(last);
            p.matched = p.matched.max(index);
            p.next = p.next.max(index + 1);
            let behind = p.next <= last;
            self.maybe_commit(out);
            self.maybe_send_timeout_now(out);
            if behind {
                self.send_append(from, out);
            }
        } else {
            if index < p.matched {
                return; // stale
            }
            if index <= commit || last_index < commit {
                self.send_snapshot(from, out);
            } else {
                p.next = (commit + 1).max(index.min(last_index + 1));
                self.send_append(from, out);
            }
        }
    }

    /// Applies the commit rule (see the module docs) and, if the commit index moved, applies
    /// and sends the commit notice.
    pub(super) fn maybe_commit(&mut self, out: &mut impl Output<C>) {
        let commit = self.log.commit();
        let mut c = self.log.last_index();
        let latest = self.log.config();
        for &m in latest.members.iter() {
            c = c.min(self.match_of(m));
        }
        let mut prev = self.log.committed_config().clone();
        let mut forced_acked = self.forced_acked;
        let removals = self.forced_removals();
        // With `read_lease`, only the last forced configuration is timed: its members are
        // those of any forced one below it, so they acknowledged those no later.
        let last_forced = (self.log.pending().iter().filter_map(config_of))
            .filter(|config| config.forced)
            .map(|config| config.index)
            .last();
        for entry in self.log.pending() {
            let Some(config) = config_of(entry) else {
                continue;
            };
            if !config.forced {
                for &m in prev.members.iter() {
                    // A later forced removal of `m` itself (a stuck change got out of the way)
                    // lets this entry commit without `m`, together with that removal; a forced
                    // removal of another node does not (see `forced_removals`).
                    let removed_later = removals
                        .iter()
                        .any(|&(i, n)| n == m && i > entry.index && c >= i);
                    let matched = self.match_of(m);
                    if matched < entry.index && !removed_later {
                        c = c.min(matched);
                    }
                }
            } else {
                // Forced: the removed node is not needed for the entry itself and what follows,
                // but it is below it, so nothing commits without it unless its removal does.
                if c < entry.index {
                    for &m in prev.members.iter() {
                        c = c.min(self.match_of(m));
                    }
                }
            }
            let timed = config.forced && last_forced == Some(entry.index);
            if let (true, Some(lease)) = (timed, self.params.read_lease) {
                if forced_acked.map(|(i, _)| i) != Some(entry.index)
                    && config
                        .members
                        .iter()
                        .all(|&m| self.match_of(m) >= entry.index)
                {
                    forced_acked = Some((entry.index, self.now));
                }
                let elapsed = matches!(forced_acked, Some((i, t)) if i == entry.index && self.now >= t + lease);
                if !elapsed {
                    c = c.min(commit);
                }
            }
            prev = config;
        }
        self.forced_acked = forced_acked;
        if c > commit {
            self.commit_to(c, out);
            self.broadcast_append(out);
        }
    }

    pub(super) fn propose(
        &mut self,
        id: ProposalId,
        names: Names,
        command: C,
        out: &mut impl Output<C>,
    ) {
        let body = Body::Command { names, command };
        if let Err(e) = self.append_proposal(id, body, out) {
            out.proposal(id, Err(e));
        }
    }

    /// Appends a client entry as leader, tracks it and replicates it.
    pub(super) fn append_proposal(
        &mut self,
        id: ProposalId,
        body: Body<C>,
        out: &mut impl Output<C>,
    ) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.noop_pending
            || !self.log.has_room()
            || self.proposals.is_full()
            || self.transfer.is_some()
        {
            return Err(ProposeError::Busy);
        }
        // Fail fast and cleanly while a node that must store the entry is unreachable (not for
        // membership changes: a forced shrink is how a dead node is removed).
        let mut unreachable = super::Members::new();
        let is_command = matches!(body, Body::Command { .. });
        for p in self.progress.iter().filter(|_| is_command) {
            if self.now >= p.last_heard + self.params.election_timeout {
                push_bounded(&mut unreachable, p.id);
            }
        }
        if !unreachable.is_empty() {
            return Err(ProposeError::Unavailable { unreachable });
        }
        let entry = Entry {
            term: self.term,
            index: self.log.last_index() + 1,
            body,
        };
        let (index, term) = (entry.index, entry.term);
        if !self.append_own(entry, out) {
            return Err(ProposeError::Busy);
        }
        let deadline = self.now + self.params.write_timeout;
        push_bounded(
            &mut self.proposals,
            Proposal {
                id,
                index,
                term,
                deadline,
            },
        );
        self.broadcast_append(out);
        Ok(())
    }

    pub(super) fn expire_proposals(&mut self, out: &mut impl Output<C>) {
        let now = self.now;
        let mut i = 0;
        while i < self.proposals.len() {
            if self.proposals[i].deadline > now {
                i += 1;
                continue;
            }
            let p = self.proposals.swap_remove(i);
            let mut unreachable = super::Members::new();
            if self.role == Role::Leader {
                for t in self.replication_targets() {
                    if self.match_of(t) < p.index {
                        push_bounded(&mut unreachable, t);
                    }
                }
            }
            out.proposal(p.id, Err(ProposeError::Timeout { unreachable }));
        }
    }
}
