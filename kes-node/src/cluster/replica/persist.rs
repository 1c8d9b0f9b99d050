//! What a node does when it cannot persist a step (a full disk, a failing device).
//!
//! The consensus core changes its state in memory when it steps (appends entries, counts its
//! own copy of them, takes a vote) and relies on the shell to make that durable before any of
//! it leaves the node. When the transaction fails, nothing of the batch is on disk, so the
//! in-memory core is ahead of what this node may claim: it must not answer a vote, acknowledge
//! an entry, or (as leader) count its own copy toward a commit. So the node drops that state
//! and rebuilds the core from `kes.db`, exactly as a restart would, without stopping: no
//! message of the failed batch was sent, every client waiting on this node gets an answer, and
//! reads go on from the applied state. Until the rebuild succeeds (the database may need to be
//! reopened first), every later batch is discarded the same way.
use kes_core::consensus::{Body, Input, Node};

use super::health::LOG_AGAIN;
use super::storage::Storage;
use super::{Links, Replica, Write};
use crate::store::{StoreError, Unavailable};

impl<W: Write, R> Replica<W, R> {
    /// Handles a failed persist of a batch (see the module docs).
    pub(super) fn persist_failed(
        &mut self,
        links: &mut dyn Links,
        store: &dyn Storage,
        err: StoreError,
    ) {
        let why = err.to_string();
        let again = match &self.health.logged {
            Some((last, at)) => *last != why || self.now >= at + LOG_AGAIN,
            None => true,
        };
        if again {
            eprintln!(
                "kes-node: cannot persist the cluster state: {why}: writes fail on this node \
                 until it can; reads go on"
            );
            self.health.logged = Some((why.clone(), self.now));
        }
        let not_stored = match err {
            StoreError::NoSpace(why) => StoreError::NoSpace(why),
            err => StoreError::Unavailable(Unavailable::NotStored(Box::new(err))),
        };
        self.abandon(links, &not_stored, &why);
        self.health.needs_reset = true;
        self.reset_core(store);
    }

    /// Notes a successful persist; logs the recovery once.
    pub(super) fn persist_succeeded(&mut self) {
        self.health.unflushed.clear();
        if self.health.logged.take().is_some() {
            eprintln!("kes-node: the cluster state is persisted again: writes resume");
        }
    }

    /// Answers everyone who waits on the core's state of before the failure: proposals of the
    /// failed batch with `not_stored`, older ones (stored and perhaps replicated, so they may
    /// still commit) as unknown, waiting reads with a retry.
    fn abandon(&mut self, links: &mut dyn Links, not_stored: &StoreError, why: &str) {
        self.batch.clear();
        for id in std::mem::take(&mut self.health.unflushed) {
            self.answer_proposal(links, id, Err(not_stored.clone()));
        }
        for (input, _) in std::mem::take(&mut self.backlog) {
            if let Input::Propose { id, .. } = input {
                self.answer_proposal(links, id.0, Err(not_stored.clone()));
            }
        }
        let older: Vec<u64> = self.proposals.keys().copied().collect();
        for id in older {
            let unknown = StoreError::Unavailable(Unavailable::OutcomeUnknown(why.into()));
            self.answer_proposal(links, id, Err(unknown));
        }
        for (_, reader) in std::mem::take(&mut self.reads) {
            let refused = format!("cluster: this node could not persist its state ({why}); retry");
            self.released.push((reader, Err(refused)));
        }
        self.outcomes.clear();
        // Snapshots being sent hold read transactions, which keep kes.db from being reopened;
        // the core asks for them again once rebuilt.
        self.outgoing.clear();
        self.incoming = Default::default();
    }

    /// Answers proposal `id`'s waiter, if any.
    fn answer_proposal(&mut self, links: &mut dyn Links, id: u64, outcome: Result<(), StoreError>) {
        if let Some(waiter) = self.proposals.remove(&id) {
            self.answer(links, waiter, outcome);
        }
    }

    /// True once the core reflects what is on disk. While a rebuild is due and fails, the
    /// batch is discarded and its waiters answered.
    pub(super) fn core_trusted(&mut self, links: &mut dyn Links, store: &dyn Storage) -> bool {
        if !self.health.needs_reset {
            return true;
        }
        if self.reset_core(store) {
            return true;
        }
        let why = "the cluster state is being reloaded from kes.db after a failed write";
        self.abandon(links, &StoreError::Unavailable(Unavailable::Reloading), why);
        false
    }

    /// Rebuilds the consensus core from `kes.db` (after reopening it if needed).
    fn reset_core(&mut self, store: &dyn Storage) -> bool {
        let state = match store.heal().and_then(|()| store.raft_state()) {
            Ok(Some(state)) => state,
            Ok(None) => {
                eprintln!("kes-node: cannot reload the cluster state: kes.db holds none");
                return false;
            }
            Err(err) => {
                eprintln!("kes-node: cannot reload the cluster state: {err}");
                return false;
            }
        };
        let random = self.rng.next();
        let node = match Node::new(
            self.id,
            self.params,
            self.now,
            random,
            state.hard_state,
            state.applied,
            &state.entries,
        ) {
            Ok(node) => node,
            Err(err) => {
                eprintln!("kes-node: cannot reload the cluster state: {err}");
                return false;
            }
        };
        self.node = node;
        // The newest configuration: the applied one, or one appended after it.
        self.set_addresses(state.addresses);
        for entry in &state.entries {
            if let Body::Config { command, .. } = &entry.body {
                if let Ok(addresses) = crate::store::decode_addresses(command) {
                    self.set_addresses(addresses);
                }
            }
        }
        self.health.needs_reset = false;
        // A cluster of one elects itself at once, as at start.
        if self.node.is_member() && self.addresses.values().filter(|a| !a.is_empty()).count() == 1 {
            self.elect_alone();
        }
        true
    }
}
