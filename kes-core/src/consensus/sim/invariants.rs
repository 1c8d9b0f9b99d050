//! The invariants the simulator checks: after every event (one leader per term, committed
//! entries on every member, acknowledged writes kept), on every commit (log matching: every node
//! commits the same entry at each index; a shrink commits only once the node it removes holds
//! it, unless that node was removed by force) and at the end (linearizability of the history).

use alloc::format;
use alloc::vec::Vec;

use super::cluster::{Cluster, Cmd, Result};
use super::linearizability::Operation;
use crate::consensus::{Body, Config, Entry, NodeId, Role};

impl Cluster {
    /// Log matching up to the commit index: every applied entry equals the committed one.
    pub(super) fn observe_commit(&mut self, i: usize, entry: Entry<Cmd>) -> Result {
        let index = entry.index as usize;
        if index <= self.committed.len() {
            if self.committed[index - 1] != entry {
                return Err(format!(
                    "n{i} committed {:?} but {:?} was committed at the same index",
                    entry,
                    self.committed[index - 1]
                ));
            }
        } else if index == self.committed.len() + 1 {
            if let Body::Config {
                members, forced, ..
            } = &entry.body
            {
                // A node a shrink removes appends its removal (and stops serving) before the
                // shrink commits, unless the operator removed it by force.
                let left = (self.committed_config.members.iter())
                    .filter(|&&m| !members.contains(&m) && !self.force_removed.contains(&m));
                for &m in left.filter(|_| !*forced) {
                    if self.nodes[m as usize].disk.log.get(index - 1) != Some(&entry) {
                        return Err(format!(
                            "shrink at {index} committed without n{m}, which it removes"
                        ));
                    }
                }
                self.committed_config = Config {
                    index: entry.index,
                    members: members.clone(),
                    forced: *forced,
                };
                self.counters.config_commits += 1;
                if *forced {
                    self.counters.forced_commits += 1;
                }
            }
            self.log(|| format!("commit {entry:?} (first seen on n{i})"));
            self.committed.push(entry);
        } else {
            return Err(format!(
                "n{i} committed {index} beyond the committed log {}",
                self.committed.len()
            ));
        }
        Ok(())
    }

    /// The invariants, checked after every event.
    pub fn check(&mut self) -> Result {
        // At most one leader per term.
        for i in 0..self.nodes.len() {
            if let Some(node) = &self.nodes[i].node {
                if node.role() == Role::Leader {
                    let term = node.term();
                    let leader = *self.leaders.entry(term).or_insert_with(|| {
                        self.counters.elections += 1;
                        i as NodeId
                    });
                    if leader != i as NodeId {
                        return Err(format!(
                            "two leaders in term {}: n{leader} and n{i}",
                            node.term()
                        ));
                    }
                }
            }
        }
        // Every committed entry is on every node of the configuration (on its disk).
        if let Some(last) = self.committed.last() {
            for &m in self.committed_config.members.iter() {
                let disk = &self.nodes[m as usize].disk;
                if disk.log.get(last.index as usize - 1) != Some(last) {
                    return Err(format!(
                        "committed entry {} is missing on member n{m}",
                        last.index
                    ));
                }
            }
        }
        // No acknowledged write is lost (the committed log never changes once observed, and
        // every applied entry is compared with it; here: still there).
        for &(index, key, value) in &self.acked {
            let entry = &self.committed[index as usize - 1];
            if !matches!(&entry.body, Body::Command { command, .. } if *command == Cmd { key, value })
            {
                return Err(format!("acknowledged write k{key}={value} at {index} lost"));
            }
        }
        Ok(())
    }

    /// Linearizability of the recorded client history.
    pub fn check_history(&self) -> Result {
        let history: Vec<Operation> = self.history.iter().flatten().cloned().collect();
        super::linearizability::check(&history)
            .map_err(|key| format!("history of k{key} is not linearizable"))
    }
}
