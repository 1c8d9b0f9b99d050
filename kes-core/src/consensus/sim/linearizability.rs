//! A Wing–Gong linearizability checker with Lowe's memoization (the algorithm Porcupine uses),
//! for a key-value store of registers. Linearizability is local, so each key is checked alone.
//!
//! An operation has a call time and, if the client saw an answer, a return time. A write whose
//! outcome the client never learned has no return time: it may take effect at any point after
//! its call, or never (linearizing it after every other operation is the same as never).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec;
use alloc::vec::Vec;

/// One client operation on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub key: u8,
    pub kind: Kind,
    pub call: u64,
    /// `None`: the outcome is unknown (only for writes).
    pub ret: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Set the register to a value (values are unique per history).
    Write(u64),
    /// Observed the register's value (`None`: never written).
    Read(Option<u64>),
}

/// Checks a whole history; on failure returns the key whose history is not linearizable.
pub fn check(history: &[Operation]) -> Result<(), u8> {
    let mut by_key: BTreeMap<u8, Vec<Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key).or_default().push(op.clone());
    }
    for (key, ops) in by_key {
        if !check_register(&ops) {
            return Err(key);
        }
    }
    Ok(())
}

/// Whether the operations on one register are linearizable (initial value `None`).
pub fn check_register(ops: &[Operation]) -> bool {
    // A write of unknown outcome whose (unique) value no read saw can always be linearized last,
    // i.e. dropped: this keeps histories with many timed-out writes from blowing up the search.
    let observed: BTreeSet<u64> = ops
        .iter()
        .filter_map(|o| match o.kind {
            Kind::Read(Some(v)) => Some(v),
            _ => None,
        })
        .collect();
    let ops: Vec<Operation> = ops
        .iter()
        .filter(|o| o.ret.is_some() || matches!(o.kind, Kind::Write(v) if observed.contains(&v)))
        .cloned()
        .collect();
    let ops = &ops[..];
    let n = ops.len();
    if n == 0 {
        return true;
    }
    let words = n.div_ceil(64);
    let mut done = vec![0u64; words];
    let mut seen: BTreeSet<(Vec<u64>, Option<u64>)> = BTreeSet::new();
    search(ops, &mut done, None, 0, &mut seen)
}

fn is_done(done: &[u64], i: usize) -> bool {
    done[i / 64] & (1 << (i % 64)) != 0
}

fn search(
    ops: &[Operation],
    done: &mut [u64],
    value: Option<u64>,
    count: usize,
    seen: &mut BTreeSet<(Vec<u64>, Option<u64>)>,
) -> bool {
    if count == ops.len() {
        return true;
    }
    // Every remaining operation returns no earlier than this.
    let min_ret = (0..ops.len())
        .filter(|&i| !is_done(done, i))
        .map(|i| ops[i].ret.unwrap_or(u64::MAX))
        .min()
        .unwrap_or(u64::MAX);
    if min_ret == u64::MAX {
        // Only writes of unknown outcome remain: they may all take effect after everything.
        return true;
    }
    if !seen.insert((done.to_vec(), value)) {
        return false;
    }
    for i in 0..ops.len() {
        if is_done(done, i) || ops[i].call > min_ret {
            continue;
        }
        let next = match ops[i].kind {
            Kind::Write(v) => Some(v),
            Kind::Read(observed) => {
                if observed != value {
                    continue;
                }
                value
            }
        };
        done[i / 64] |= 1 << (i % 64);
        if search(ops, done, next, count + 1, seen) {
            return true;
        }
        done[i / 64] &= !(1 << (i % 64));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: u64, call: u64, ret: Option<u64>) -> Operation {
        Operation {
            key: 0,
            kind: Kind::Write(v),
            call,
            ret,
        }
    }
    fn r(v: Option<u64>, call: u64, ret: u64) -> Operation {
        Operation {
            key: 0,
            kind: Kind::Read(v),
            call,
            ret: Some(ret),
        }
    }

    #[test]
    fn accepts_and_rejects() {
        assert!(check_register(&[w(1, 0, Some(1)), r(Some(1), 2, 3)]));
        // A read after a completed write must see it.
        assert!(!check_register(&[w(1, 0, Some(1)), r(None, 2, 3)]));
        // Concurrent read may see either.
        assert!(check_register(&[
            w(1, 0, Some(5)),
            r(None, 1, 2),
            r(Some(1), 3, 4)
        ]));
        // No going back: once seen, always seen.
        assert!(!check_register(&[
            w(1, 0, Some(9)),
            r(Some(1), 1, 2),
            r(None, 3, 4)
        ]));
        // Unknown writes may or may not take effect.
        assert!(check_register(&[w(1, 0, None), r(None, 2, 3)]));
        assert!(check_register(&[w(1, 0, None), r(Some(1), 2, 3)]));
        assert!(!check_register(&[
            w(1, 0, None),
            r(Some(1), 2, 3),
            r(None, 4, 5)
        ]));
    }
}
