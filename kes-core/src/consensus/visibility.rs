//! Two-phase visibility: when a read may be answered on this node.
//!
//! A read of some names may be served by any member, from its own applied state, when:
//! 1. the node is a member of its latest configuration (a node that appended a configuration
//!    excluding it, or was told it is not a member, refuses: `ReadError::NotMember`);
//! 2. no entry above the applied index touches any of the names (such an entry's outcome is not
//!    known here yet, or it is known but not applied); the read *waits* until the entry is
//!    committed and applied, or truncated;
//! 3. the node's commit index is not below a commit index a leader told it about (otherwise it
//!    lacks committed entries, e.g. after being force-removed and added back);
//! 4. with `read_lease` on, the node holds a lease (see the module docs); the read waits for one.
//!
//! A waiting read fails after `read_timeout` with the reason it was still waiting. Since the
//! commit index is the applied index here (the shell applies in the same transaction that
//! persists), condition 2 is "no uncommitted entry touches the names".
//!
//! Why this is linearizable: an entry commits only once every node of the configuration holds it,
//! so by the time any node applies (exposes) a write, every member holds it as pending or applied,
//! and none answers from a state without it.

use super::message::{NameId, Names};
use super::node::{Node, WaitingRead};
use super::outcome::{ReadError, ReadId};
use super::output::Output;

impl<C: Clone> Node<C> {
    /// Whether a read of `names` may be served now (`Ok`) and, if not, why.
    pub fn read_status(&self, names: &[NameId]) -> Result<(), ReadError> {
        if !self.is_member() {
            return Err(ReadError::NotMember);
        }
        if let Some(entry) = self
            .log
            .pending()
            .iter()
            .find(|e| names.iter().any(|&n| e.touches(n)))
        {
            return Err(ReadError::Pending { index: entry.index });
        }
        if self.log.commit() < self.leader_commit {
            return Err(ReadError::CatchingUp);
        }
        if !self.has_lease() {
            return Err(ReadError::NoLease);
        }
        Ok(())
    }

    /// Whether an entry above the applied index touches `name` on this node.
    pub fn is_pending(&self, name: NameId) -> bool {
        self.log.touches(name)
    }

    /// Whether the optional read lease currently allows reads (always true without it).
    pub fn has_lease(&self) -> bool {
        if self.params.read_lease.is_none() {
            return true;
        }
        let config = self.log.config();
        if config.members.len() == 1 && config.contains(self.id) {
            return true;
        }
        self.now < self.lease_until
    }

    pub(super) fn read(&mut self, id: ReadId, names: Names, out: &mut impl Output<C>) {
        match self.read_status(&names) {
            Ok(()) => {
                out.read(id, Ok(()));
            }
            Err(ReadError::NotMember) => {
                out.read(id, Err(ReadError::NotMember));
            }
            Err(_) => {
                let deadline = self.now + self.params.read_timeout;
                if self
                    .reads
                    .push(WaitingRead {
                        id,
                        names,
                        deadline,
                    })
                    .is_err()
                {
                    out.read(id, Err(ReadError::Busy));
                }
            }
        }
    }

    /// Releases the waiting reads that may now be served (and fails those that never will).
    pub(super) fn release_reads(&mut self, out: &mut impl Output<C>) {
        let mut i = 0;
        while i < self.reads.len() {
            match self.read_status(&self.reads[i].names) {
                Ok(()) => {
                    let read = self.reads.remove(i);
                    out.read(read.id, Ok(()));
                }
                Err(ReadError::NotMember) => {
                    let read = self.reads.remove(i);
                    out.read(read.id, Err(ReadError::NotMember));
                }
                Err(_) => i += 1,
            }
        }
    }

    pub(super) fn expire_reads(&mut self, out: &mut impl Output<C>) {
        let mut i = 0;
        while i < self.reads.len() {
            if self.reads[i].deadline > self.now {
                i += 1;
                continue;
            }
            let read = self.reads.remove(i);
            let why = self
                .read_status(&read.names)
                .err()
                .unwrap_or(ReadError::Busy);
            out.read(read.id, Err(why));
        }
    }
}
