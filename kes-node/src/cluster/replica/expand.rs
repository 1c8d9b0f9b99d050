//! A safe expand: the leader prepares the new node *before* it appends the configuration that
//! adds it, so that an expand that cannot succeed changes nothing (spec: "the leader ships the
//! snapshot to the new node first, then commits the configuration").
//!
//! One expansion at a time runs through these stages, each with a deadline:
//!
//! 1. **Check**: the endpoint is well formed and new, no membership change is pending, and
//!    every member answered the leader recently (a change it cannot acknowledge would be stuck).
//! 2. **Dial**: a peer link to the endpoint. It must open (TLS and Hello verified: the node holds
//!    the cluster's HSM key and accepts the peer) and the node must say it waits to join
//!    (its Hello carries the joining placeholder id, or the id it is about to get, after an
//!    earlier attempt that shipped the snapshot but did not append).
//! 3. **Ship**: the core's `InstallSnapshot` for the new id with a snapshot of the applied state
//!    (`snapshots.rs` streams it over that link).
//! 4. **Confirm**: the node answers the snapshot (an `AppendResponse` covering its index).
//!
//! Only then is the configuration proposed; it commits like before, once every node of the new
//! configuration holds it. Any failure before answers the client with why (`400` for what the
//! operator must fix: nothing listens, the node refuses the peer, it is not waiting to join;
//! `503` for what may pass: a pending change, an unreachable member, a timeout) and leaves the
//! configuration as it was.
use kes_core::consensus::{Message, NodeId, Role};

use super::answer::Waiter;
use super::expansion::{Expansion, Stage};
use super::storage::Storage;
use super::{Dialed, Links, Millis, Replica, Write, JOINING_ID};
use crate::cluster::file;
use crate::cluster::frame::Failure;
use crate::command::Command;
use crate::store::{Refusal, StoreError, Unavailable};

/// How long the new node has to accept the peer link and say it waits to join.
const HANDSHAKE: Millis = 5_000;
/// How long the new node has to confirm the snapshot after the last chunk went out.
const CONFIRM: Millis = 10_000;

fn refused(why: String) -> StoreError {
    StoreError::Refused(Refusal::Membership(why))
}

fn unavailable(why: String) -> StoreError {
    StoreError::Unavailable(Unavailable::Cluster(why))
}

impl<W: Write, R> Replica<W, R> {
    /// The leader was asked to add `endpoint`: checks what can be checked at once and starts
    /// preparing the node, or answers `waiter` with why not.
    pub(super) fn begin_expand(
        &mut self,
        links: &mut dyn Links,
        waiter: Waiter<W>,
        endpoint: &str,
    ) {
        match self.check_expand(endpoint) {
            Ok((id, endpoint)) => {
                self.expansion = Some(Expansion {
                    waiter,
                    id,
                    endpoint,
                    stage: Stage::Dial,
                    deadline: self.now + HANDSHAKE,
                });
            }
            Err(err) => self.answer(links, waiter, Err(err)),
        }
    }

    /// Stage 1: the new node's id and normalized endpoint, or why the expand is refused.
    fn check_expand(&self, endpoint: &str) -> Result<(NodeId, String), StoreError> {
        let endpoint = file::normalize(endpoint).map_err(refused)?;
        if self.addresses.values().any(|a| *a == endpoint) {
            return Err(StoreError::Exists);
        }
        if let Some(running) = &self.expansion {
            return Err(unavailable(format!(
                "cluster: another expand is under way ({}); retry when it is done",
                running.describe()
            )));
        }
        if let Some(change) = self.pending_change() {
            return Err(unavailable(format!(
                "cluster: a membership change is pending ({change}): wait for it to commit, \
                 or get it out of the way with a forced shrink of that node"
            )));
        }
        let unreachable = self.unreachable_members();
        if !unreachable.is_empty() {
            return Err(unavailable(format!(
                "cluster: node(s) {} unreachable: an expand needs every member to acknowledge \
                 it; bring them back or remove them with a forced shrink first",
                unreachable.join(", ")
            )));
        }
        Ok((self.next_new_id(), endpoint))
    }

    /// Members (other than this leader) it has not heard from for an election timeout.
    pub(super) fn unreachable_members(&self) -> Vec<String> {
        self.unreachable_ids()
            .into_iter()
            .map(|id| self.name_of(id))
            .collect()
    }

    /// The ids of [`Self::unreachable_members`].
    pub(super) fn unreachable_ids(&self) -> Vec<NodeId> {
        let config = self.node.config();
        self.node
            .peers()
            .filter(|(id, _, heard)| {
                config.contains(*id) && self.now >= heard + self.params.election_timeout
            })
            .map(|(id, _, _)| id)
            .collect()
    }

    /// Stages 2 and 4's deadlines, from [`Replica::tick`].
    pub(super) fn drive_expansion(&mut self, links: &mut dyn Links) {
        let Some(exp) = &mut self.expansion else {
            return;
        };
        let now = self.now;
        if self.node.role() != Role::Leader {
            return self
                .fail_expansion(links, StoreError::Unavailable(Unavailable::LostLeadership));
        }
        match exp.stage {
            Stage::Dial => {
                let (id, endpoint) = (exp.id, exp.endpoint.clone());
                exp.stage = Stage::Handshake;
                if let Err(err) = links.dial(id, &endpoint) {
                    let why = format!("cluster: cannot connect to {endpoint}: {err}");
                    self.fail_expansion(links, refused(why));
                }
            }
            Stage::Handshake => self.check_handshake(links),
            Stage::Ship => {}
            Stage::Shipping { index, chunks } => {
                let (id, endpoint, deadline) = (exp.id, exp.endpoint.clone(), exp.deadline);
                let sent = self.outgoing.get(&id).map(|o| o.chunks());
                if let Some(sent) = sent.filter(|s| *s != chunks) {
                    // Progress: the deadline counts from the last chunk.
                    if let Some(exp) = &mut self.expansion {
                        exp.stage = Stage::Shipping {
                            index,
                            chunks: sent,
                        };
                        exp.deadline = now + CONFIRM;
                    }
                } else if !links.open(self.request_to(id)) {
                    let why = format!(
                        "cluster: the link to {endpoint} broke while sending it the snapshot; retry"
                    );
                    self.fail_expansion(links, unavailable(why));
                } else if now >= deadline {
                    let why = format!(
                        "cluster: {endpoint} did not confirm the snapshot within {:?}; retry",
                        std::time::Duration::from_millis(CONFIRM)
                    );
                    self.fail_expansion(links, unavailable(why));
                }
            }
        }
    }

    /// Stage 2: the link opened (to a node waiting to join?), failed, or is late.
    fn check_handshake(&mut self, links: &mut dyn Links) {
        let Some(exp) = &self.expansion else {
            return;
        };
        let (id, endpoint, deadline) = (exp.id, exp.endpoint.clone(), exp.deadline);
        let outcome = match links.dialed(self.request_to(id)) {
            Dialed::Open(p) if p == JOINING_ID || p == id => Ok(true),
            Dialed::Open(p) => Err(refused(format!(
                "cluster: {endpoint} is not waiting to join: it runs as node {p} of a \
                 cluster; start it with an empty directory and --join"
            ))),
            Dialed::Opening if self.now < deadline => Ok(false),
            Dialed::Opening => Err(unavailable(format!(
                "cluster: {endpoint} did not complete the peer handshake within {:?}",
                std::time::Duration::from_millis(HANDSHAKE)
            ))),
            Dialed::Closed(failure) => Err(refused(match failure {
                Some(Failure::Unreachable(why)) => {
                    format!("cluster: cannot reach {endpoint}: {why}; is a node started there with --join?")
                }
                Some(Failure::Refused(why)) => {
                    format!("cluster: {endpoint} refused the peer connection: {why}")
                }
                Some(Failure::SameId(p)) => format!(
                    "cluster: {endpoint} is not waiting to join: it runs as node {p} of a \
                     cluster; start it with an empty directory and --join"
                ),
                None => format!("cluster: the peer connection to {endpoint} closed"),
            })),
        };
        match outcome {
            Ok(false) => {}
            Ok(true) => {
                // Frames on this link now belong to the new node (its Hello said "joining").
                links.claim(id);
                if let Some(exp) = &mut self.expansion {
                    exp.stage = Stage::Ship;
                }
            }
            Err(err) => self.fail_expansion(links, err),
        }
    }

    /// Stage 3, right after a flush (the store's applied state is the core's commit point).
    pub(super) fn ship_expansion(&mut self, store: &dyn Storage) {
        let Some(exp) = &mut self.expansion else {
            return;
        };
        if exp.stage != Stage::Ship || !self.batch.is_empty() {
            return;
        }
        let Some(env) = self.node.snapshot_for(exp.id) else {
            return; // not leading any more: `drive_expansion` answers
        };
        let Message::InstallSnapshot { meta, .. } = &env.message else {
            return;
        };
        exp.stage = Stage::Shipping {
            index: meta.index,
            chunks: 0,
        };
        exp.deadline = self.now + CONFIRM;
        let to = exp.id;
        self.outgoing.remove(&to);
        self.start_snapshot(store, &env);
    }

    /// Stage 4: a message from the node being prepared; its answer to the snapshot lets the
    /// configuration be proposed.
    pub(super) fn observe_expansion(
        &mut self,
        links: &mut dyn Links,
        store: &dyn Storage,
        from: NodeId,
        message: &Message<Vec<u8>>,
    ) {
        let Some(exp) = &self.expansion else {
            return;
        };
        let Stage::Shipping { index, .. } = exp.stage else {
            return;
        };
        let confirmed = matches!(message, Message::AppendResponse { success: true, index: i, .. } if *i >= index);
        if from != exp.id || !confirmed {
            return;
        }
        let Some(exp) = self.expansion.take() else {
            return;
        };
        let cmd = Command::Expand {
            endpoint: exp.endpoint.clone(),
        };
        let pid = self.next();
        match self.membership_input(links, store, &cmd, pid) {
            Some(Ok(input)) if self.next_new_id() == exp.id => {
                self.proposals.insert(pid, exp.waiter);
                self.submit(input);
            }
            Some(Err(err)) => self.answer(links, exp.waiter, Err(err)),
            _ => {
                let why = "cluster: the membership changed while the new node was prepared; retry";
                self.answer(links, exp.waiter, Err(unavailable(why.into())));
            }
        }
    }

    /// Gives up the running expansion: answers its client and closes its link.
    fn fail_expansion(&mut self, links: &mut dyn Links, err: StoreError) {
        let Some(exp) = self.expansion.take() else {
            return;
        };
        self.outgoing.remove(&exp.id);
        links.close(exp.id);
        self.answer(links, exp.waiter, Err(err));
    }
}
