//! The backlog: the core holds at most [`WINDOW`] uncommitted entries; the leader queues
//! further proposals here (bounded in time by their deadline) and proposes them as commits
//! make room. If leadership moves meanwhile, the queued writes are answered with a retry.
use kes_core::consensus::{Input, Role, WINDOW};

use super::{Links, Replica, Write, LEADERLESS_WAIT};
use crate::store::{StoreError, Unavailable};

impl<W: Write, R> Replica<W, R> {
    /// Proposes, or queues the proposal while the core's window of uncommitted entries is full
    /// (the queue drains as entries commit; see `batch.rs`).
    pub(super) fn submit(&mut self, input: Input<Vec<u8>>) {
        let full = self.node.pending_entries().len() + 1 >= WINDOW;
        if matches!(input, Input::Propose { .. }) && (full || !self.backlog.is_empty()) {
            self.backlog.push_back((input, self.now + LEADERLESS_WAIT));
            return;
        }
        self.step(input);
    }

    /// Proposes queued writes while the window has room.
    pub(super) fn drain_backlog(&mut self, links: &mut dyn Links) {
        while !self.backlog.is_empty() && self.node.pending_entries().len() + 1 < WINDOW {
            if self.node.role() != Role::Leader {
                // Leadership moved: tell the waiting clients to retry.
                for (input, _) in std::mem::take(&mut self.backlog) {
                    if let Input::Propose { id, .. } = input {
                        self.fail_proposal(links, id.0, Unavailable::LostLeadership);
                    }
                }
                return;
            }
            if let Some((input, _)) = self.backlog.pop_front() {
                self.step(input);
            }
        }
    }

    /// Queued writes that found no room before their deadline.
    pub(super) fn expire_backlog(&mut self, links: &mut dyn Links) {
        while self.backlog.front().is_some_and(|(_, d)| self.now >= *d) {
            if let Some((Input::Propose { id, .. }, _)) = self.backlog.pop_front() {
                self.fail_proposal(links, id.0, Unavailable::Busy);
            }
        }
    }

    /// Answers a proposal's waiter with `503 why`.
    pub(super) fn fail_proposal(&mut self, links: &mut dyn Links, id: u64, why: Unavailable) {
        if let Some(waiter) = self.proposals.remove(&id) {
            self.answer(links, waiter, Err(StoreError::Unavailable(why)));
        }
    }

    /// Proposals queued for room in the window.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }
}
