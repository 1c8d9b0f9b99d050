//! The read gate (spec: two-phase visibility): a read of names that an undecided entry
//! touches waits until this node learns the entry's outcome; with a read lease, every read
//! asks the core whether the lease still holds. The decision for reader `R` comes back
//! through [`Replica::take_decided`], at once or when the writes it waits for are decided.
use kes_core::consensus::{Input, Names, ReadId, MAX_NAMES};

use super::{Millis, Replica, Write};
use crate::item::ItemName;

impl<W: Write, R> Replica<W, R> {
    /// Asks whether a read of `names` may be answered now.
    pub fn read(&mut self, now: Millis, reader: R, names: &[ItemName]) {
        self.now = now;
        let mut ids = Names::new();
        for n in names.iter().take(MAX_NAMES) {
            let _ = ids.push(n.id());
        }
        let id = self.next();
        self.reads.insert(id, reader);
        self.step(Input::Read {
            id: ReadId(id),
            names: ids,
        });
    }

    /// True while reads must pass the gate: this node holds entries it has not applied, or
    /// it serves reads only under a lease (which the core checks on every read).
    pub fn has_pending(&self) -> bool {
        self.params.read_lease.is_some() || !self.node.pending_entries().is_empty()
    }
}
