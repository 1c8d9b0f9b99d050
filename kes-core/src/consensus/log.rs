//! The core's window onto the log.
//!
//! The shell stores the whole log; the core keeps only what it needs to decide: the commit
//! index (which is also the applied index, see the module docs), the term of the entry at the
//! commit index, the configuration in force there, and the entries above it (at most
//! [`WINDOW`](super::WINDOW) of them). Every node keeps `last_index <= commit + WINDOW`: a
//! leader stops accepting proposals when its window is full and a follower accepts entries only
//! while they fit, so the bound holds on every node whatever the history.

use heapless::Vec;

use super::message::{Body, Config, Entry, Index, NameId, SnapshotMeta, Term};
use super::WINDOW;

#[derive(Clone, Debug)]
pub(super) struct Log<C> {
    commit: Index,
    commit_term: Term,
    committed_config: Config,
    /// Entries `commit + 1 ..= last_index`, in order.
    entries: Vec<Entry<C>, WINDOW>,
}

impl<C: Clone> Log<C> {
    pub(super) fn new(applied: SnapshotMeta) -> Self {
        Log {
            commit: applied.index,
            commit_term: applied.term,
            committed_config: applied.config,
            entries: Vec::new(),
        }
    }

    pub(super) fn commit(&self) -> Index {
        self.commit
    }
    pub(super) fn commit_term(&self) -> Term {
        self.commit_term
    }
    pub(super) fn committed_config(&self) -> &Config {
        &self.committed_config
    }
    pub(super) fn last_index(&self) -> Index {
        self.commit + self.entries.len() as Index
    }
    pub(super) fn last_term(&self) -> Term {
        self.entries.last().map_or(self.commit_term, |e| e.term)
    }
    /// Entries above the commit index.
    pub(super) fn pending(&self) -> &[Entry<C>] {
        &self.entries
    }
    pub(super) fn has_room(&self) -> bool {
        !self.entries.is_full()
    }

    /// The term of the entry at `index`, if the core knows it (the commit index or above).
    pub(super) fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.commit {
            Some(self.commit_term)
        } else {
            self.entry(index).map(|e| e.term)
        }
    }

    pub(super) fn entry(&self, index: Index) -> Option<&Entry<C>> {
        if index <= self.commit {
            return None;
        }
        self.entries.get((index - self.commit - 1) as usize)
    }

    /// Appends `entry`, which must have index `last_index + 1`. Returns false if the window is
    /// full.
    pub(super) fn push(&mut self, entry: Entry<C>) -> bool {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        self.entries.push(entry).is_ok()
    }

    /// Removes the entries from `index` on. Only uncommitted entries can be removed.
    pub(super) fn truncate_from(&mut self, index: Index) {
        assert!(index > self.commit, "truncating committed entry {index}");
        self.entries.truncate((index - self.commit - 1) as usize);
    }

    /// Advances the commit index to `index` (clamped to the last index), handing each newly
    /// committed entry to `apply` in order.
    pub(super) fn commit_to(&mut self, index: Index, mut apply: impl FnMut(Entry<C>)) {
        let index = index.min(self.last_index());
        if index <= self.commit {
            return;
        }
        let n = (index - self.commit) as usize;
        let rest: Vec<Entry<C>, WINDOW> = self.entries.iter().skip(n).cloned().collect();
        let done = core::mem::replace(&mut self.entries, rest);
        for entry in done.into_iter().take(n) {
            self.commit = entry.index;
            self.commit_term = entry.term;
            if let Some(config) = config_of(&entry) {
                self.committed_config = config;
            }
            apply(entry);
        }
    }

    /// Replaces everything up to `meta.index` by a snapshot. Entries above it are kept if the
    /// entry at `meta.index` matches (Raft's rule), otherwise the whole window is dropped.
    pub(super) fn restore(&mut self, meta: SnapshotMeta) {
        let keep = self.term_at(meta.index) == Some(meta.term);
        let rest: Vec<Entry<C>, WINDOW> = if keep {
            self.entries
                .iter()
                .filter(|e| e.index > meta.index)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        self.entries = rest;
        self.commit = meta.index;
        self.commit_term = meta.term;
        self.committed_config = meta.config;
    }

    /// The latest configuration in the log, committed or not: the one a node acts on.
    pub(super) fn config(&self) -> Config {
        self.entries
            .iter()
            .rev()
            .find_map(config_of)
            .unwrap_or_else(|| self.committed_config.clone())
    }

    /// Whether an uncommitted configuration entry is in the window.
    pub(super) fn config_pending(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.body, Body::Config { .. }))
    }

    /// Whether any entry above the applied (= commit) index touches `name`.
    pub(super) fn touches(&self, name: NameId) -> bool {
        self.entries.iter().any(|e| e.touches(name))
    }
}

/// The configuration an entry creates, if it is a configuration entry.
pub(super) fn config_of<C>(entry: &Entry<C>) -> Option<Config> {
    match &entry.body {
        Body::Config {
            members, forced, ..
        } => Some(Config {
            index: entry.index,
            members: members.clone(),
            forced: *forced,
        }),
        _ => None,
    }
}
