//! Membership as the replica sees it: the consensus input for an expand or shrink, the id a
//! joining node learns, whether this node is a member, and the texts that name nodes and
//! pending changes in errors and in `cluster info`.
use kes_core::consensus::{Change, HardState, Input, Node, NodeId, ProposalId, ProposeError};

use super::storage::Storage;
use super::{Links, Replica, Write};
use crate::cluster::file;
use crate::command::Command;
use crate::store::{Addresses, Refusal, StoreError, Unavailable};

impl<W: Write, R> Replica<W, R> {
    /// The consensus input for a membership command (`None` for any other command): the
    /// change and the new members' addresses, or why the change is refused.
    pub(super) fn membership_input(
        &self,
        links: &dyn Links,
        store: &dyn Storage,
        cmd: &Command,
        id: u64,
    ) -> Option<Result<Input<Vec<u8>>, StoreError>> {
        let mut addresses = self.addresses.clone();
        let change = match cmd {
            Command::Expand { endpoint } => {
                let endpoint = match file::normalize(endpoint) {
                    Ok(e) => e,
                    Err(why) => return Some(Err(StoreError::Refused(Refusal::Membership(why)))),
                };
                if addresses.values().any(|a| *a == endpoint) {
                    return Some(Err(StoreError::Exists));
                }
                let new = self.next_new_id();
                addresses.insert(new, endpoint);
                Change::Add(new)
            }
            Command::Shrink { endpoint, force } => {
                let endpoint = file::normalize(endpoint).unwrap_or_else(|_| endpoint.clone());
                let find = |a: &Addresses| a.iter().find(|(_, a)| **a == endpoint).map(|(i, _)| *i);
                // A node that a pending shrink removes is no longer in the latest addresses,
                // but a forced shrink of it gets that shrink through (see `membership.rs`).
                let pending_removal = || {
                    let committed = store.applied_addresses().ok()?;
                    find(&committed).filter(|_| *force)
                };
                let Some(gone) = find(&addresses).or_else(pending_removal) else {
                    return Some(Err(StoreError::NotFound));
                };
                // Its agreement travels on the link this node dialed to it.
                let reachable =
                    matches!(links.dialed(self.request_to(gone)), super::Dialed::Open(_));
                if !*force && !reachable {
                    let why = format!(
                        "node {gone} ({endpoint}) is unreachable: a shrink needs its agreement; \
                         if it is gone for good, remove it with force"
                    );
                    return Some(Err(StoreError::Unavailable(Unavailable::Cluster(why))));
                }
                // The other members too: a plain shrink commits only with every node's
                // acknowledgement, and appended while one is dead it leaves a configuration
                // whose majority needs the dead node; once its leader restarts no one can be
                // elected to take the forced shrink of the dead node (fuzz input in
                // `tests/sim.rs`).
                let silent = self.unreachable_ids();
                let others: Vec<String> = self
                    .node
                    .config()
                    .members
                    .iter()
                    .copied()
                    .filter(|&id| id != gone && id != self.id)
                    .filter(|&id| {
                        silent.contains(&id)
                            || !matches!(links.dialed(self.request_to(id)), super::Dialed::Open(_))
                    })
                    .map(|id| self.name_of(id))
                    .collect();
                // (While a change is pending, the core's refusal names it instead.)
                if !*force && !others.is_empty() && self.pending_change().is_none() {
                    let why = format!(
                        "cluster: node(s) {} unreachable: a shrink needs every member to \
                         acknowledge it; bring them back or remove them with a forced shrink first",
                        others.join(", ")
                    );
                    return Some(Err(StoreError::Unavailable(Unavailable::Cluster(why))));
                }
                addresses.insert(gone, String::new());
                if *force {
                    Change::ForceRemove(gone)
                } else {
                    Change::Remove(gone)
                }
            }
            _ => return None,
        };
        let command = crate::store::encode_addresses(&addresses);
        Some(Ok(Input::ChangeMembership {
            id: ProposalId(id),
            change,
            command,
        }))
    }

    /// A joining node learns its id from the first message the leader addresses to it. Only
    /// an expand sends it any: the shell's links carry messages for a node only over a link
    /// whose Hello named it, or that an expand claimed for it (`cluster/links.rs`); a member
    /// dialed at the address of a node waiting to join gets its link refused instead.
    pub(super) fn learn_id(&mut self, to: NodeId) {
        if !self.joining || to == super::JOINING_ID {
            return;
        }
        let random = self.rng.next();
        match Node::new(
            to,
            self.params,
            self.now,
            random,
            HardState::default(),
            Default::default(),
            &[],
        ) {
            Ok(node) => {
                self.node = node;
                self.id = to;
                self.joining = false;
            }
            Err(err) => eprintln!("kes-node: cannot join as node {to}: {err}"),
        }
    }

    /// True if this node may serve clients: it is a member of the configuration it holds.
    pub fn is_member(&self) -> bool {
        !self.joining && self.node.is_member()
    }

    /// The id the next node added gets. Ids are never reused: a removed node that still runs
    /// must not be mistaken for its successor, so removed ids stay as tombstones.
    pub(super) fn next_new_id(&self) -> NodeId {
        self.addresses.keys().max().map_or(0, |m| m + 1)
    }

    /// `N (host:port)`.
    pub(super) fn name_of(&self, id: NodeId) -> String {
        format!(
            "{id} ({})",
            self.addresses.get(&id).map(String::as_str).unwrap_or("?")
        )
    }

    /// A refused or failed proposal as the client sees it.
    pub(super) fn unavailable(&self, err: &ProposeError) -> StoreError {
        StoreError::Unavailable(Unavailable::Cluster(match err {
            ProposeError::NotLeader { .. } => {
                "cluster: this node lost its leadership; retry".into()
            }
            ProposeError::Busy => "cluster: too many writes in flight; retry".into(),
            ProposeError::InvalidChange => match self.pending_change() {
                Some(change) => format!(
                    "cluster: a membership change is pending ({change}): only a forced shrink of \
                     a node it waits for can override it"
                ),
                None => "cluster: invalid membership change".into(),
            },
            ProposeError::Overwritten => {
                "cluster: the write was overwritten by a new leader; retry".into()
            }
            ProposeError::Unavailable { unreachable } => format!(
                "cluster: write refused: node(s) {} unreachable",
                unreachable.iter().map(|id| self.name_of(*id)).collect::<Vec<_>>().join(", ")
            ),
            ProposeError::Timeout { unreachable } => format!(
                "cluster: write not committed yet: node(s) {} unreachable (it commits once they are back)",
                unreachable.iter().map(|id| self.name_of(*id)).collect::<Vec<_>>().join(", ")
            ),
            ProposeError::Unknown => "cluster: the outcome of the write is unknown".into(),
        }))
    }

    /// A membership change this node holds but has not applied, or the expand being prepared.
    pub fn pending_change(&self) -> Option<String> {
        if let Some(exp) = &self.expansion {
            return Some(exp.describe());
        }
        let latest = self.node.config();
        let committed = self.node.committed_config();
        if latest == *committed {
            return None;
        }
        let name = |id: &NodeId| match self.addresses.get(id).filter(|a| !a.is_empty()) {
            Some(a) => format!("node {id} ({a})"),
            None => format!("node {id}"),
        };
        let mut what: Vec<String> = Vec::new();
        for m in latest.members.iter().filter(|m| !committed.contains(**m)) {
            what.push(format!("adding {}", name(m)));
        }
        for m in committed.members.iter().filter(|m| !latest.contains(**m)) {
            what.push(format!("removing {}", name(m)));
        }
        if latest.forced {
            what.push("forced".into());
        }
        Some(format!(
            "{} (log index {}, not committed)",
            what.join(", "),
            latest.index
        ))
    }

    /// Whether [`Replica::pending_change`] is `Some`, without building its text.
    pub fn has_pending_change(&self) -> bool {
        self.expansion.is_some() || self.node.config() != *self.node.committed_config()
    }
}
