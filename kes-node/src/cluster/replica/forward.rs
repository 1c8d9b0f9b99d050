//! Client writes: the leader proposes them; a follower forwards them to the leader over its
//! peer link and relays the answer; without a reachable leader a write waits (bounded) for
//! one. Also the dispatch of frames that arrive from peers.
//!
//! A forwarded write waits for the leader's answer up to its timeout (two minutes for a
//! membership change, which may ship a snapshot first). Once a link between this node and
//! the leader broke after the write left ([`Links::breaks`] moved), another term began
//! without that leader, or this node stopped hearing from the leader, the answer may be lost:
//! the write then waits at most one election timeout more (a leader that got it may still
//! answer over another or a redialed link) and its client gets a `503` that says the outcome
//! is unknown. Never "failed": the leader may have committed it, and the old leader's entry
//! may still commit under the new one. Every forwarded write leaves the pending map on its
//! answer, at its timeout, or at the end of that grace, whichever comes first.
use kes_core::consensus::Names;
use kes_core::consensus::{Input, NodeId, ProposalId, Role, MAX_NAMES};

use super::answer::{from_wire, to_wire, Forwarded, Waiter};
use super::storage::Storage;
use super::{
    Links, Millis, Replica, Write, FORWARD_TIMEOUT, LEADERLESS_WAIT, MEMBERSHIP_FORWARD_TIMEOUT,
};
use crate::cluster::frame::{Frame, WireOutcome};
use crate::command::Command;
use crate::store::{codec, IoFailure, LostAnswer, StoreError, Unavailable};

/// The gate names of the items a command touches (the core bounds them at [`MAX_NAMES`]).
pub(super) fn names_of(cmd: &Command) -> Names {
    let mut names = Names::new();
    for n in cmd.touches().iter().take(MAX_NAMES) {
        let _ = names.push(n.id());
    }
    names
}

impl<W: Write, R> Replica<W, R> {
    /// Proposes a client's write (or forwards it to the leader). Its outcome comes back
    /// through [`Replica::take_decided`].
    pub fn propose(&mut self, now: Millis, links: &mut dyn Links, store: &dyn Storage, waiter: W) {
        self.now = now;
        self.propose_until(links, store, waiter, now + LEADERLESS_WAIT);
    }

    /// Proposes or forwards; without a reachable leader the write waits until `deadline`.
    pub(super) fn propose_until(
        &mut self,
        links: &mut dyn Links,
        store: &dyn Storage,
        waiter: W,
        deadline: Millis,
    ) {
        let cmd = waiter.command();
        let command = match codec::encode_command(cmd) {
            Ok(c) => c.to_vec(),
            Err(e) => {
                self.completions
                    .push((waiter, Err(StoreError::Io(IoFailure::Encode(e)))));
                return;
            }
        };
        if let Err(err) = store.check_room(cmd) {
            self.completions.push((waiter, Err(err)));
            return;
        }
        let names = names_of(cmd);
        if self.node.role() == Role::Leader {
            if self.removes_self(waiter.command()) {
                self.hand_over_local(waiter);
                return;
            }
            if let Command::Expand { endpoint } = waiter.command() {
                let endpoint = endpoint.clone();
                self.begin_expand(links, Waiter::Local(waiter), &endpoint);
                return;
            }
            let id = self.next();
            let input = match self.membership_input(links, store, waiter.command(), id) {
                Some(Ok(input)) => input,
                Some(Err(err)) => {
                    self.completions.push((waiter, Err(err)));
                    return;
                }
                None => Input::Propose {
                    id: ProposalId(id),
                    names,
                    command,
                },
            };
            self.proposals.insert(id, Waiter::Local(waiter));
            self.submit(input);
            return;
        }
        match self.node.leader() {
            Some(leader) if leader != self.id => {
                let id = self.next();
                let timeout = match waiter.command() {
                    Command::Expand { .. } | Command::Shrink { .. } => MEMBERSHIP_FORWARD_TIMEOUT,
                    _ => FORWARD_TIMEOUT,
                };
                let frame = Frame::Forward { id, command };
                let breaks = links.breaks(self.answer_to(leader));
                if links.send(self.answer_to(leader), &frame) {
                    let forwarded = Forwarded {
                        waiter,
                        leader,
                        term: self.node.term(),
                        breaks,
                        deadline: self.now + timeout,
                        lost: None,
                    };
                    self.forwards.insert(id, forwarded);
                } else if self.now >= deadline {
                    let why = Unavailable::LeaderUnreachable(leader);
                    self.completions
                        .push((waiter, Err(StoreError::Unavailable(why))));
                } else {
                    // Its link is down: the leader is restarting, or an election will replace it.
                    self.leaderless.push((waiter, deadline));
                }
            }
            _ if self.now >= deadline => {
                self.completions
                    .push((waiter, Err(StoreError::Unavailable(Unavailable::NoLeader))));
            }
            // An election is under way: hold the write until a leader is known.
            _ => self.leaderless.push((waiter, deadline)),
        }
    }

    /// Writes held for want of a leader go to the leader once one is known, or fail after
    /// their deadline.
    pub(super) fn retry_leaderless(&mut self, links: &mut dyn Links, store: &dyn Storage) {
        if self.leaderless.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.leaderless);
        let leader_known = self.node.leader().is_some();
        for (waiter, deadline) in held {
            if leader_known {
                self.propose_until(links, store, waiter, deadline);
            } else if self.now >= deadline {
                self.completions
                    .push((waiter, Err(StoreError::Unavailable(Unavailable::NoLeader))));
            } else {
                self.leaderless.push((waiter, deadline));
            }
        }
    }

    /// Forwarded writes whose answer did not come in time, or may be lost and did not come
    /// within the grace that follows (see the module docs).
    pub(super) fn expire_forwards(&mut self, links: &dyn Links) {
        let now = self.now;
        let grace = self.params.election_timeout;
        let lost: Vec<(u64, LostAnswer)> = (self.forwards.iter())
            .filter(|(_, f)| f.lost.is_none())
            .filter_map(|(id, f)| Some((*id, self.answer_lost(links, f)?)))
            .collect();
        for (id, cause) in lost {
            if let Some(f) = self.forwards.get_mut(&id) {
                f.lost = Some(cause);
                f.deadline = f.deadline.min(now + grace);
            }
        }
        let expired: Vec<u64> = (self.forwards.iter())
            .filter(|(_, f)| now >= f.deadline)
            .map(|(k, _)| *k)
            .collect();
        for id in expired {
            let Some(f) = self.forwards.remove(&id) else {
                continue;
            };
            // The new leader, if one is known by now and is another node (the old one may
            // have been elected again meanwhile).
            let new = self.node.leader().filter(|l| *l != f.leader);
            let why = match f.lost {
                None => Unavailable::LeaderSilent,
                Some(cause) => Unavailable::AnswerLost {
                    leader: f.leader,
                    cause: match cause {
                        LostAnswer::LeaderChanged(_) => LostAnswer::LeaderChanged(new),
                        broke => broke,
                    },
                    change: matches!(
                        f.waiter.command(),
                        Command::Expand { .. } | Command::Shrink { .. }
                    ),
                },
            };
            self.completions
                .push((f.waiter, Err(StoreError::Unavailable(why))));
        }
    }

    /// Why the answer to forwarded write `f` may be lost, if it may: a link with its leader
    /// broke since it left; or this node no longer follows that leader: a later term has
    /// another leader or none yet (the old leader learns its entry's fate only from the new
    /// one, and may be cut off from it), or in the same term this node stopped hearing from it
    /// for an election timeout (the core forgets the leader when its election timer fires: a
    /// link that stays open but carries nothing never breaks).
    fn answer_lost(&self, links: &dyn Links, f: &Forwarded<W>) -> Option<LostAnswer> {
        if links.breaks(self.answer_to(f.leader)) != f.breaks {
            return Some(LostAnswer::LinkBroke);
        }
        let leader = self.node.leader();
        if leader == Some(f.leader) {
            return None;
        }
        Some(match self.node.term() > f.term {
            true => LostAnswer::LeaderChanged(leader),
            false => LostAnswer::NotHeard,
        })
    }

    /// Handles a frame that arrived from peer `from`.
    pub fn on_frame(
        &mut self,
        now: Millis,
        links: &mut dyn Links,
        store: &dyn Storage,
        from: NodeId,
        frame: Frame,
    ) {
        self.now = now;
        match frame {
            Frame::Hello { .. } => {}
            Frame::Raft(env) => {
                self.learn_id(env.to);
                self.observe_expansion(links, store, env.from, &env.message);
                if env.to == self.id {
                    self.step(Input::Message(*env));
                }
            }
            Frame::SnapshotChunk { stream, seq, data } => {
                self.incoming.chunk(store, stream, seq, data);
            }
            Frame::SnapshotEnd {
                stream,
                chunks,
                envelope,
            } => {
                self.learn_id(envelope.to);
                if envelope.to == self.id && self.incoming.end(stream, chunks) {
                    self.step(Input::Message(*envelope));
                    self.incoming.stepped();
                }
            }
            Frame::Forward { id, command } => self.on_forward(links, store, from, id, command),
            Frame::ForwardResult { id, outcome } => {
                // Only the node a write went to answers it (ids are this run's, see
                // `first_id` in mod.rs).
                if self.forwards.get(&id).is_none_or(|f| f.leader != from) {
                    return;
                }
                if let Some(f) = self.forwards.remove(&id) {
                    if matches!(outcome, WireOutcome::HandingOver) {
                        self.hold_for_new_leader(f.waiter, from);
                    } else {
                        self.completions.push((f.waiter, from_wire(outcome)));
                    }
                }
            }
        }
    }

    /// A follower forwarded a client's write to this node.
    fn on_forward(
        &mut self,
        links: &mut dyn Links,
        store: &dyn Storage,
        from: NodeId,
        id: u64,
        command: Vec<u8>,
    ) {
        if self.node.role() != Role::Leader {
            let outcome = WireOutcome::Unavailable("cluster: not the leader; retry".into());
            links.send(self.answer_to(from), &Frame::ForwardResult { id, outcome });
            return;
        }
        let cmd = match codec::decode_command(&command) {
            Ok(cmd) => cmd,
            Err(_) => return,
        };
        if let Err(err) = store.check_room(&cmd) {
            let outcome = to_wire(&Err(err));
            links.send(self.answer_to(from), &Frame::ForwardResult { id, outcome });
            return;
        }
        if self.removes_self(&cmd) {
            self.hand_over_remote(links, from, id);
            return;
        }
        if let Command::Expand { endpoint } = &cmd {
            self.begin_expand(links, Waiter::Remote(from, id), endpoint);
            return;
        }
        let pid = self.next();
        let input = match self.membership_input(links, store, &cmd, pid) {
            Some(Ok(input)) => input,
            Some(Err(err)) => {
                let outcome = to_wire(&Err(err));
                links.send(self.answer_to(from), &Frame::ForwardResult { id, outcome });
                return;
            }
            None => Input::Propose {
                id: ProposalId(pid),
                names: names_of(&cmd),
                command,
            },
        };
        self.proposals.insert(pid, Waiter::Remote(from, id));
        self.submit(input);
    }
}
