//! Group commit: the core's steps of one event-loop round are persisted together, in one
//! durable transaction (one fsync), before anything they ask for leaves the node; then their
//! messages go out, their clients are answered and their reads released.
use kes_core::consensus::{Body, Input, ReadError, StepOutput};

use super::route::is_request;
use super::storage::Storage;
use super::{Links, Replica, Write};

impl<W: Write, R> Replica<W, R> {
    /// Feeds one input to the core. Its storage work joins the batch that
    /// [`Replica::flush`] persists in one transaction; nothing it asks for leaves this node
    /// before that.
    pub(super) fn step(&mut self, input: Input<Vec<u8>>) {
        let mut ready = StepOutput::default();
        if let Input::Propose { id, .. } | Input::ChangeMembership { id, .. } = &input {
            self.health.unflushed.push(id.0);
        }
        self.node.step(self.now, input, &mut ready);
        let staged = if ready.restore.is_some() {
            self.incoming.take_complete()
        } else {
            None
        };
        self.batch.push((ready, staged));
    }

    /// Persists everything the steps since the last flush asked for in one durable
    /// transaction (group commit), then sends their messages and answers their clients.
    pub fn flush(&mut self, now: super::Millis, links: &mut dyn Links, store: &dyn Storage) {
        self.now = now;
        self.flush_batch(links, store);
    }

    fn flush_batch(&mut self, links: &mut dyn Links, store: &dyn Storage) {
        if !self.core_trusted(links, store) {
            return;
        }
        while !self.batch.is_empty() {
            let batch = if self.group_commit {
                std::mem::take(&mut self.batch)
            } else {
                // One transaction per step: measures what group commit buys.
                vec![self.batch.remove(0)]
            };
            let refs: Vec<crate::store::ReadyRef<'_>> =
                batch.iter().map(|(r, s)| (r, *s)).collect();
            let installs = refs.iter().any(|(_, s)| s.is_some());
            match store.persist_batch(&refs) {
                Ok(outcomes) => {
                    self.persist_succeeded();
                    if installs {
                        self.incoming.persisted();
                    }
                    for (index, outcome) in outcomes {
                        self.outcomes.insert(index, outcome);
                    }
                }
                Err(err) => {
                    // Continuing from the core's state would acknowledge what is not on
                    // disk: it is rebuilt from kes.db instead (see `persist.rs`).
                    self.persist_failed(links, store, err);
                    return;
                }
            }
            for (ready, _) in &batch {
                self.carry_out(links, store, ready);
            }
            // Commits made room in the window: queued writes go next (and are persisted by
            // the next round of this loop).
            self.drain_backlog(links);
        }
        self.ship_expansion(store);
        self.note_removal();
    }

    /// When this node stops being a member (removed by a shrink, or it learns it was
    /// force-removed), `.cluster.json` is rewritten without it, so that the file says so.
    fn note_removal(&mut self) {
        let member = self.is_member();
        if member == self.was_member {
            return;
        }
        self.was_member = member;
        if member || self.joining {
            return;
        }
        let mut rest = self.addresses.clone();
        rest.remove(&self.id);
        eprintln!(
            "kes-node: this node ({}) is not a member of the cluster any more: it was removed; \
             it serves no requests",
            self.name_of(self.id)
        );
        self.mirror = Some(rest);
    }

    /// The addresses of the newest configuration: `applied`, unless a configuration entry
    /// appended after it is still pending (applying an older one must not forget it).
    fn newest_addresses(&self, applied: crate::store::Addresses) -> crate::store::Addresses {
        self.node
            .pending_entries()
            .iter()
            .rev()
            .find_map(|e| match &e.body {
                Body::Config { command, .. } => crate::store::decode_addresses(command).ok(),
                _ => None,
            })
            .unwrap_or(applied)
    }

    /// Does what a persisted step asked for, in the order the core's `Output` contract
    /// prescribes (its storage part is durable already).
    fn carry_out(
        &mut self,
        links: &mut dyn Links,
        store: &dyn Storage,
        ready: &StepOutput<Vec<u8>>,
    ) {
        if ready
            .apply
            .iter()
            .any(|e| matches!(e.body, Body::Config { .. }))
        {
            if let Ok(addresses) = store.applied_addresses() {
                self.mirror = Some(addresses.clone());
                self.remember(&addresses);
                let newest = self.newest_addresses(addresses);
                self.set_addresses(newest);
            }
        }
        // A configuration takes effect when appended: dial new members at once.
        for entry in &ready.append {
            if let Body::Config { command, .. } = &entry.body {
                if let Ok(addresses) = crate::store::decode_addresses(command) {
                    self.set_addresses(addresses);
                }
            }
        }
        if ready.restore.is_some() {
            if let Ok(addresses) = store.applied_addresses() {
                self.remember(&addresses);
                let newest = self.newest_addresses(addresses);
                self.set_addresses(newest);
            }
        }
        for env in &ready.messages {
            let to = match is_request(&env.message) {
                true => self.request_to(env.to),
                false => self.answer_to(env.to),
            };
            links.send(to, &super::Frame::Raft(Box::new(env.clone())));
        }
        for env in &ready.snapshots {
            self.start_snapshot(store, env);
        }
        for (id, result) in &ready.proposals {
            let outcome = match result {
                Ok(index) => self.outcomes.remove(index).unwrap_or(Ok(())),
                Err(err) => Err(self.unavailable(err)),
            };
            if let Some(waiter) = self.proposals.remove(&id.0) {
                self.answer(links, waiter, outcome);
            }
        }
        for (id, result) in &ready.reads {
            if let Some(reader) = self.reads.remove(&id.0) {
                let decision = result.as_ref().map(|_| ()).map_err(read_refusal);
                self.released.push((reader, decision));
            }
        }
        // Outcomes of entries nobody waits for here (other leaders' proposals) are dropped.
        if self.proposals.is_empty() {
            self.outcomes.clear();
        }
    }
}

/// Why the core refused a read, for the client.
fn read_refusal(err: &ReadError) -> String {
    match err {
        ReadError::NotMember => "cluster: this node is not a member of the cluster".to_string(),
        ReadError::Busy => "cluster: too many reads are waiting; retry".to_string(),
        ReadError::Pending { index } => {
            format!("cluster: a write to this name (log index {index}) is still undecided; retry")
        }
        ReadError::NoLease => "cluster: this node holds no read lease".to_string(),
        ReadError::CatchingUp => {
            "cluster: this node is catching up with the leader; retry".to_string()
        }
    }
}
