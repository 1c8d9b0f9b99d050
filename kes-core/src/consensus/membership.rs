//! Membership changes, one node at a time.
//!
//! A configuration is a log entry, and every node acts on the *latest* configuration in its log,
//! committed or not (Raft §6 single-server changes). The leader refuses a new change while one
//! is uncommitted in its log, and never removes itself.
//!
//! - **Expand** (`Change::Add`): the new node is a replication target from the moment the entry
//!   is appended; it is caught up with a snapshot. Since it is in the latest configuration,
//!   nothing commits until it holds everything: the change commits when every node of the new
//!   configuration holds it.
//! - **Shrink** (`Change::Remove`): the leaving node stays a target, and the entry (and
//!   everything before it) commits only when every node of the *old* configuration holds it. The
//!   leaving node stops serving reads as soon as it appends the entry (it is no longer a member of
//!   its latest configuration), so nothing commits without it while it still serves reads.
//! - **Forced shrink** (`Change::ForceRemove`): commits with the remaining nodes only. Without
//!   `read_lease` a removed node that is in fact alive behind a partition keeps serving (stale)
//!   reads until it hears from the cluster: that is the documented hazard. With `read_lease`,
//!   the leader holds every commit until `read_lease` has passed since all remaining nodes
//!   acknowledged the entry in its term, by which time the removed node's lease has expired.
//! - **A stuck change** (a node it needs died before acknowledging it) is got out of the way by
//!   a forced removal of that node on top of it: of the node being added (the expand is
//!   abandoned), of the node being removed (the shrink goes through), or of another member
//!   (the change completes without it). It commits like any forced shrink, with the remaining
//!   nodes only, and carries the stuck entry with it. A forced removal waives the
//!   acknowledgement of the node it removes and of no other: a pending shrink still needs the
//!   leaving node's, so that the leaving node appends its removal (and stops serving) before
//!   anything commits without it. If the leaving node is gone too, its own forced removal is
//!   accepted on top of the other one; no other change is accepted while one is pending.
//! - A node that asks for votes but is not a member gets `NotMember` back and stops campaigning
//!   and serving (until a leader replicates to it again, e.g. after it is re-added).

use heapless::Vec;

use super::log::config_of;
use super::message::{Body, Config, Index, NodeId};
use super::node::{push_bounded, Change, Node};
use super::outcome::{ProposalId, ProposeError};
use super::output::Output;
use super::MAX_NODES;

impl<C: Clone> Node<C> {
    /// The nodes the leader replicates to: the latest configuration, plus the nodes of the
    /// configuration before each uncommitted non-forced change (they must acknowledge it).
    pub(super) fn replication_targets(&self) -> Vec<NodeId, MAX_NODES> {
        let mut targets = self.log.config().members;
        let mut prev = self.log.committed_config().clone();
        for entry in self.log.pending() {
            let Some(config) = config_of(entry) else {
                continue;
            };
            if !config.forced {
                for m in prev.members.iter() {
                    if !targets.contains(m) {
                        push_bounded(&mut targets, *m);
                    }
                }
            }
            prev = config;
        }
        targets.retain(|&m| m != self.id);
        targets
    }

    pub(super) fn propose_change(
        &mut self,
        id: ProposalId,
        change: Change,
        command: C,
        out: &mut impl Output<C>,
    ) {
        let result = self.validate_change(change).and_then(|members| {
            let forced = matches!(change, Change::ForceRemove(_));
            self.append_proposal(
                id,
                Body::Config {
                    members,
                    forced,
                    command,
                },
                out,
            )
        });
        if let Err(e) = result {
            out.proposal(id, Err(e));
        }
    }

    fn validate_change(&self, change: Change) -> Result<super::Members, ProposeError> {
        if self.role != super::Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.log.config_pending() {
            return self.override_pending(change);
        }
        let mut members = self.log.config().members;
        match change {
            Change::Add(n) => {
                if members.contains(&n) || members.push(n).is_err() {
                    return Err(ProposeError::InvalidChange);
                }
                members.sort_unstable();
            }
            Change::Remove(n) | Change::ForceRemove(n) => {
                if !members.contains(&n) || n == self.id {
                    return Err(ProposeError::InvalidChange);
                }
                members.retain(|&m| m != n);
            }
        }
        Ok(members)
    }

    /// A change while another one is pending: only a forced removal (of a dead node the
    /// pending change waits for), so that a change stuck on a dead node can always be got out
    /// of the way. Removing the node the pending change adds abandons the expand; removing the
    /// node it removes gets the shrink through; removing another member completes the change
    /// without it (but a shrink still waits for the leaving node, see [`Node::forced_removals`]),
    /// and on top of that removal the leaving node may be removed by force too. Like any forced
    /// shrink this assumes the node is gone: without the removed nodes, every configuration in
    /// the log is one change away from the others, so majorities intersect. Nothing else is
    /// accepted until the forced removals commit.
    fn override_pending(&self, change: Change) -> Result<super::Members, ProposeError> {
        let Change::ForceRemove(n) = change else {
            return Err(ProposeError::InvalidChange);
        };
        if n == self.id {
            return Err(ProposeError::InvalidChange);
        }
        let committed = self.log.committed_config();
        let mut configs = self.log.pending().iter().filter_map(config_of);
        match (configs.next(), configs.next(), configs.next()) {
            (Some(pending), None, None) if !pending.forced => {
                let mut members = pending.members.clone();
                if members.contains(&n) {
                    members.retain(|&m| m != n);
                    Ok(members)
                } else if committed.contains(n) {
                    Ok(members)
                } else {
                    Err(ProposeError::InvalidChange)
                }
            }
            // A shrink overridden by the forced removal of another member still waits for the
            // leaving node: if it is gone too, remove it by force as well.
            (Some(shrink), Some(forced), None) if !shrink.forced && forced.forced => {
                let leaving = dropped(committed, &shrink);
                let waived = self.forced_removals().iter().any(|&(_, m)| m == n);
                if leaving == Some(n) && !waived {
                    Ok(forced.members)
                } else {
                    Err(ProposeError::InvalidChange)
                }
            }
            _ => Err(ProposeError::InvalidChange),
        }
    }

    /// The node each pending forced configuration removes, with its index: the member of the
    /// configuration before it that it drops or, if it drops none, the node the pending shrink
    /// below it removes (that shrink's forced override). A forced configuration waives the
    /// acknowledgement of that node only: earlier entries commit without it together with the
    /// forced configuration. (Waiving every node the forced configuration lacks would let a
    /// pending shrink commit without the leaving node when the override removed another member:
    /// the leaving node, lagging, would never append its removal and would go on serving reads.)
    pub(super) fn forced_removals(&self) -> Vec<(Index, NodeId), MAX_NODES> {
        let mut removals = Vec::new();
        let mut prev = self.log.committed_config().clone();
        let mut leaving = None;
        for config in self.log.pending().iter().filter_map(config_of) {
            if config.forced {
                if let Some(n) = dropped(&prev, &config).or(leaving) {
                    push_bounded(&mut removals, (config.index, n));
                }
            } else {
                leaving = dropped(&prev, &config);
            }
            prev = config;
        }
        removals
    }

    pub(super) fn handle_not_member(&mut self, config_index: Index) {
        // A leader was just counted a member by a majority: stale news. (A follower that acts on
        // stale news is corrected by the next AppendEntries of a leader, which clears it.)
        if self.role == super::Role::Leader {
            return;
        }
        if config_index > self.log.config().index {
            self.removed_at = Some(
                self.removed_at
                    .map_or(config_index, |r| r.max(config_index)),
            );
        }
    }
}

/// The member of `before` that `after` drops, if any (changes are one node at a time).
fn dropped(before: &Config, after: &Config) -> Option<NodeId> {
    before.members.iter().copied().find(|&m| !after.contains(m))
}
