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
    /// The register.
    pub key: u8,
    /// A write of a value or a read that observed one.
    pub kind: Kind,
    /// The logical time the client called.
    pub call: u64,
    /// The logical time the client got the answer; `None`: the outcome is unknown (only for
    /// writes).
    pub ret: Option<u64>,
}

/// What an [`Operation`] did.
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
    // A read that may go next and sees the current value can go next without loss of
    // generality (it changes nothing, and taking it only relaxes the others' constraints), so
    // take all such reads at once: concurrent reads then cost nothing.
    let mut greedy = Vec::new();
    loop {
        let min_ret = min_return(ops, done);
        let next = (0..ops.len()).find(|&i| {
            !is_done(done, i) && ops[i].call < min_ret && ops[i].kind == Kind::Read(value)
        });
        let Some(i) = next else {
            break;
        };
        done[i / 64] |= 1 << (i % 64);
        greedy.push(i);
    }
    let found = branch(ops, done, value, count + greedy.len(), seen);
    for i in greedy {
        done[i / 64] &= !(1 << (i % 64));
    }
    found
}

/// The earliest return among the operations not linearized yet.
fn min_return(ops: &[Operation], done: &[u64]) -> u64 {
    (0..ops.len())
        .filter(|&i| !is_done(done, i))
        .map(|i| ops[i].ret.unwrap_or(u64::MAX))
        .min()
        .unwrap_or(u64::MAX)
}

fn branch(
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
    let min_ret = min_return(ops, done);
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
            // Reads of the current value were taken greedily; others cannot go now.
            Kind::Read(_) => continue,
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

    #[test]
    fn large_histories_stay_cheap() {
        // Many writes of unknown outcome nobody saw cost nothing.
        let mut many: Vec<Operation> = (0..60).map(|v| w(v + 10, v, None)).collect();
        many.push(r(None, 100, 101));
        assert!(check_register(&many));
        // Many concurrent reads cost nothing either.
        let mut reads: Vec<Operation> = (0..200).map(|c| r(Some(1), 10 + c, 1000 + c)).collect();
        reads.push(w(1, 0, Some(5)));
        reads.extend((0..50).map(|c| r(None, 1 + c % 3, 2000 + c)));
        assert!(check_register(&reads));
        reads.push(r(None, 6, 3000));
        assert!(!check_register(&reads));
    }
}
