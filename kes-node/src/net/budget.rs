//! The memory budget for buffered input and output across all connections (`limits.memory`):
//! each connection charges what it holds (its input buffer, the body being read, the output
//! not yet taken by the socket) and, while the total is over the budget, connections other
//! than the admin's stop reading and answering until it drains: backpressure, not failure.
use std::cell::Cell;

/// Shared by the event loop's connections (one thread).
#[derive(Debug)]
pub(super) struct Budget {
    used: Cell<usize>,
    limit: usize,
}

impl Budget {
    pub(super) fn new(limit: usize) -> Budget {
        Budget {
            used: Cell::new(0),
            limit,
        }
    }

    /// True while connections hold more than the budget.
    pub(super) fn over(&self) -> bool {
        self.used.get() >= self.limit
    }

    /// Moves a connection's charge from `*charged` to `held`.
    pub(super) fn charge(&self, charged: &mut usize, held: usize) {
        self.used.set(
            self.used
                .get()
                .saturating_sub(*charged)
                .saturating_add(held),
        );
        *charged = held;
    }

    #[cfg(test)]
    pub(super) fn used(&self) -> usize {
        self.used.get()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn charges_move() {
        let b = super::Budget::new(100);
        let (mut a, mut c) = (0, 0);
        b.charge(&mut a, 60);
        b.charge(&mut c, 50);
        assert!(b.over());
        b.charge(&mut a, 10);
        assert_eq!(b.used(), 60);
        assert!(!b.over());
    }
}
