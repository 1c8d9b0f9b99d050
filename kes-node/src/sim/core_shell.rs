//! A minimal shell over the consensus core and the real `Store` (group commit through
//! `Store::persist_batch`, frames as in production), used by the simulator until the shipped
//! replica plugs into [`Shell`] itself. It forwards nothing: a write on a follower fails at
//! once, as does a membership change.
use std::collections::HashMap;

use kes_core::consensus::{
    Config, Input, Names, Node, NodeId, Params, ProposalId, ReadId, Role, StepOutput, MAX_NAMES,
};

use super::shell::{Decided, Links, Shell, View, Waiter};
use crate::cluster::peer::Frame;
use crate::command::Command;
use crate::item::ItemName;
use crate::store::{codec, Store, StoreError, Unavailable};

pub struct CoreShell {
    node: Node<Vec<u8>>,
    params: Params,
    batch: Vec<StepOutput<Vec<u8>>>,
    next_id: u64,
    proposals: HashMap<u64, Waiter>,
    reads: HashMap<u64, Waiter>,
    decided: Decided,
}

fn names_of(names: impl IntoIterator<Item = ItemName>) -> Names {
    let mut ids = Names::new();
    for n in names.into_iter().take(MAX_NAMES) {
        let _ = ids.push(n.id());
    }
    ids
}

impl CoreShell {
    fn step(&mut self, now: u64, input: Input<Vec<u8>>) {
        let mut ready = StepOutput::default();
        self.node.step(now, input, &mut ready);
        self.batch.push(ready);
    }

    fn flush(&mut self, store: &Store, links: &mut dyn Links) {
        let batch = std::mem::take(&mut self.batch);
        let refs: Vec<crate::store::ReadyRef<'_>> = batch.iter().map(|r| (r, None)).collect();
        let mut outcomes: HashMap<u64, Result<(), StoreError>> = match store.persist_batch(&refs) {
            Ok(outcomes) => outcomes.into_iter().collect(),
            Err(err) => panic!("an in-memory store failed to persist: {err}"),
        };
        for ready in &batch {
            for env in &ready.messages {
                links.send(env.to, &Frame::Raft(Box::new(env.clone())));
            }
            for (id, result) in &ready.proposals {
                let outcome = match result {
                    Ok(index) => outcomes.remove(index).unwrap_or(Ok(())),
                    Err(err) => Err(StoreError::Unavailable(Unavailable::Cluster(format!(
                        "{err:?}"
                    )))),
                };
                if let Some(w) = self.proposals.remove(&id.0) {
                    self.decided.writes.push((w, outcome));
                }
            }
            for (id, result) in &ready.reads {
                if let Some(w) = self.reads.remove(&id.0) {
                    let decision = result.as_ref().map(|_| ()).map_err(|e| format!("{e:?}"));
                    self.decided.reads.push((w, decision));
                }
            }
        }
    }
}

impl Shell for CoreShell {
    fn boot(
        store: &Store,
        id: Option<NodeId>,
        params: Params,
        now: u64,
        random: u64,
    ) -> Result<Self, String> {
        let id = id.ok_or("the core shell cannot join nodes")?;
        let state = store
            .raft_state()
            .map_err(|e| e.to_string())?
            .ok_or("no cluster state")?;
        let node = Node::new(
            id,
            params,
            now,
            random,
            state.hard_state,
            state.applied,
            &state.entries,
        )
        .map_err(|e| e.to_string())?;
        Ok(CoreShell {
            node,
            params,
            batch: Vec::new(),
            next_id: 1,
            proposals: HashMap::new(),
            reads: HashMap::new(),
            decided: Decided::default(),
        })
    }

    fn on_frame(&mut self, _: &Store, _: &mut dyn Links, now: u64, _: NodeId, frame: Frame) {
        if let Frame::Raft(env) = frame {
            if env.to == self.node.id() {
                self.step(now, Input::Message(*env));
            }
        }
    }

    fn on_link(&mut self, _: &Store, _: &mut dyn Links, _: u64, _: NodeId, _: bool) {}

    fn propose(&mut self, _: &Store, _: &mut dyn Links, now: u64, waiter: Waiter, cmd: Command) {
        if self.node.role() != Role::Leader {
            let why = "cluster: not the leader".to_string();
            self.decided.writes.push((
                waiter,
                Err(StoreError::Unavailable(Unavailable::Cluster(why))),
            ));
            return;
        }
        let command = codec::encode_command(&cmd)
            .expect("commands encode")
            .to_vec();
        self.next_id += 1;
        let id = self.next_id;
        self.proposals.insert(id, waiter);
        let names = names_of(cmd.touches());
        self.step(
            now,
            Input::Propose {
                id: ProposalId(id),
                names,
                command,
            },
        );
    }

    fn read(&mut self, _: &Store, _: &mut dyn Links, now: u64, waiter: Waiter, names: &[ItemName]) {
        self.next_id += 1;
        let id = self.next_id;
        self.reads.insert(id, waiter);
        let names = names_of(names.iter().cloned());
        self.step(
            now,
            Input::Read {
                id: ReadId(id),
                names,
            },
        );
    }

    fn round(&mut self, store: &Store, links: &mut dyn Links, now: u64, random: u64) {
        if now >= self.node.next_deadline() {
            self.step(now, Input::Tick { random });
        }
        self.flush(store, links);
    }

    fn next_deadline(&self) -> u64 {
        self.node.next_deadline()
    }

    fn take_decided(&mut self) -> Decided {
        std::mem::take(&mut self.decided)
    }

    fn view(&self) -> View {
        let config: Config = self.node.config();
        View {
            role: self.node.role(),
            term: self.node.term(),
            leader: self.node.leader(),
            commit: self.node.commit_index(),
            gating: self.params.read_lease.is_some() || !self.node.pending_entries().is_empty(),
            member: self.node.is_member(),
            members: config.members.iter().copied().collect(),
        }
    }
}
