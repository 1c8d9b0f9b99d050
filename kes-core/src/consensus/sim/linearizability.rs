//! A linearizability checker for a key-value store of registers whose writes carry unique
//! values. Linearizability is local, so each key is checked alone.
//!
//! An operation has a call time and, if the client saw an answer, a return time. A write whose
//! outcome the client never learned has no return time: it may take effect at any point after
//! its call, or never (linearizing it after every other operation is the same as never).
//!
//! With unique values every read names the write it saw, and the check is Gibbons and Korach's
//! (Testing shared memories, 1997): exact and O(n log n), however many operations overlap. A
//! write and the reads of its value form a *cluster*, which any linearization lays out in one
//! stretch (the write, then its reads, before the next write). Let `f` be the earliest return in
//! a cluster and `s` its latest call. If `f < s`, the cluster's stretch covers all of `(f, s)`,
//! its *forward zone*: no operation of another cluster can take effect in there. Otherwise its
//! operations are all under way during `[s, f]`, its *backward zone*, and the cluster can take
//! effect at any one point of it. A history is linearizable if and only if every read returns
//! after the call of the write it saw, no two forward zones overlap, and no backward zone lies
//! inside a forward zone. The initial value (`None`) is the cluster of a write before everything.
//!
//! This replaced a Wing–Gong search with Lowe's memoization (what Porcupine does), which is
//! exponential in the writes that overlap: 23 concurrent writes on one key, the first of which
//! was read last, ran a fuzz target out of memory. The tests keep that search as the reference
//! the zones are compared with.
//!
//! Times must be distinct (every call and return its own tick), as both simulators make them.

use alloc::collections::BTreeMap;
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

/// A time, with room for the initial value's write before everything and for the answer to a
/// write of unknown outcome after everything.
type Time = i128;
const BEFORE: Time = Time::MIN;
const NEVER: Time = Time::MAX;

/// Whether the operations on one register are linearizable (initial value `None`). A history
/// whose writes repeat a value is outside what this check decides: it is refused (`false`).
pub fn check_register(ops: &[Operation]) -> bool {
    let ret = |o: &Operation| o.ret.map_or(NEVER, Time::from);
    // Each write's (call, return).
    let mut writes: BTreeMap<u64, (Time, Time)> = BTreeMap::new();
    for o in ops {
        if let Kind::Write(v) = o.kind {
            if writes.insert(v, (Time::from(o.call), ret(o))).is_some() {
                return false;
            }
        }
    }
    // Each cluster's (earliest return, latest call), by the value its write wrote.
    let mut clusters: BTreeMap<Option<u64>, (Time, Time)> = BTreeMap::new();
    for o in ops {
        // (A read that was never answered says nothing.)
        let (Kind::Read(seen), Some(_)) = (&o.kind, o.ret) else {
            continue;
        };
        let (call, returned) = (Time::from(o.call), ret(o));
        let (write_call, write_ret) = match seen {
            None => (BEFORE, BEFORE),
            Some(v) => match writes.get(v) {
                Some(w) => *w,
                None => return false, // a value no one wrote
            },
        };
        if returned < write_call {
            return false; // it saw a write that was not even called yet
        }
        let (first_ret, last_call) = clusters.entry(*seen).or_insert((write_ret, write_call));
        *first_ret = (*first_ret).min(returned);
        *last_call = (*last_call).max(call);
    }
    // A write no read saw is a cluster of its own; one of unknown outcome can always be
    // linearized last, i.e. dropped.
    for (v, (call, returned)) in writes {
        if returned != NEVER {
            clusters.entry(Some(v)).or_insert((returned, call));
        }
    }
    let mut forward: Vec<(Time, Time)> =
        clusters.values().copied().filter(|(f, s)| f < s).collect();
    forward.sort_unstable();
    if forward.windows(2).any(|z| z[1].0 < z[0].1) {
        return false;
    }
    // A backward zone `[s, f]` can only lie inside the forward zone that starts last before `s`
    // (the forward zones are disjoint).
    clusters.values().filter(|(f, s)| f >= s).all(|&(f, s)| {
        let before = forward.partition_point(|z| z.0 < s);
        before == 0 || f >= forward[before - 1].1
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::sim::Rng;

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
        // A value no one wrote, a read that returned before its write was called, a value
        // written twice (outside what the check decides).
        assert!(!check_register(&[w(1, 0, Some(1)), r(Some(2), 2, 3)]));
        assert!(!check_register(&[r(Some(1), 0, 1), w(1, 2, Some(3))]));
        assert!(!check_register(&[w(1, 0, Some(1)), w(1, 2, Some(3))]));
        // Two writes overlapping a read each, in an order no single sequence allows: the read
        // of 1 returns before the read of 2 is called, and vice versa for the reads after.
        assert!(!check_register(&[
            w(1, 0, Some(20)),
            w(2, 1, Some(21)),
            r(Some(1), 2, 3),
            r(Some(2), 4, 5),
            r(Some(1), 6, 7),
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

    /// The shape of the fuzz input that ran the search out of memory (`tests/sim.rs`): `n`
    /// writes on one key, all overlapping, reads of the initial value while they are under way
    /// (so none took effect yet), then, once all returned, reads of the first one's value (it
    /// took effect last).
    fn concurrent_writes(n: u64) -> Vec<Operation> {
        let mut ops: Vec<Operation> = (0..n).map(|v| w(v + 1, v + 1, Some(3 * n + v))).collect();
        // The first write returns last.
        ops[0].ret = Some(5 * n);
        ops.extend((0..n).map(|c| r(None, n + 1 + 2 * c, n + 2 + 2 * c)));
        ops.extend((0..4).map(|c| r(Some(1), 6 * n + 2 * c, 6 * n + 2 * c + 1)));
        ops
    }

    #[test]
    fn many_concurrent_writes_stay_cheap() {
        for n in [23, 1_000, 20_000] {
            let ops = concurrent_writes(n);
            assert!(check_register(&ops), "{n} writes");
            // ... and the check still sees it when such a history goes wrong: a later read of
            // a value overwritten by the value read before it, or of the initial value.
            let mut stale = ops.clone();
            stale.push(r(Some(2), 7 * n, 7 * n + 1));
            assert!(!check_register(&stale), "{n} writes, stale read");
            let mut initial = ops.clone();
            initial.push(r(None, 7 * n, 7 * n + 1));
            assert!(!check_register(&initial), "{n} writes, initial value read");
            // A write that finished before the reads of the initial value began.
            let mut early = ops;
            early.push(w(0, 2 * n, Some(2 * n + 1)));
            early.push(r(None, 2 * n + 2, 2 * n + 3));
            assert!(!check_register(&early), "{n} writes, early write");
        }
    }

    /// The reference: the Wing–Gong search with Lowe's memoization (exponential in the
    /// operations that overlap, so only for small histories).
    fn search_register(ops: &[Operation]) -> bool {
        let observed: Vec<u64> = ops
            .iter()
            .filter_map(|o| match o.kind {
                Kind::Read(Some(v)) => Some(v),
                _ => None,
            })
            .collect();
        let ops: Vec<Operation> = ops
            .iter()
            .filter(|o| {
                o.ret.is_some() || matches!(o.kind, Kind::Write(v) if observed.contains(&v))
            })
            .cloned()
            .collect();
        let mut seen = alloc::collections::BTreeSet::new();
        search(&ops, 0, None, &mut seen)
    }

    /// Whether the operations not in `done` can follow, from register value `value`.
    fn search(
        ops: &[Operation],
        done: u32,
        value: Option<u64>,
        seen: &mut alloc::collections::BTreeSet<(u32, Option<u64>)>,
    ) -> bool {
        let open = |i: usize| done & (1 << i) == 0;
        let min_ret = (0..ops.len())
            .filter(|&i| open(i))
            .map(|i| ops[i].ret.unwrap_or(u64::MAX))
            .min();
        let Some(min_ret) = min_ret.filter(|&m| m != u64::MAX) else {
            return true; // done, or only writes of unknown outcome left (they go last)
        };
        if !seen.insert((done, value)) {
            return false;
        }
        (0..ops.len())
            .filter(|&i| open(i) && ops[i].call < min_ret)
            .any(|i| match ops[i].kind {
                Kind::Write(v) => search(ops, done | 1 << i, Some(v), seen),
                Kind::Read(v) => v == value && search(ops, done | 1 << i, value, seen),
            })
    }

    /// A random history of up to 9 operations with distinct times: linearizable by
    /// construction (each operation takes effect at a random point of its interval, a write of
    /// unknown outcome maybe never), then maybe spoiled by changing what one read saw.
    fn random_history(rng: &mut Rng) -> Vec<Operation> {
        let n = 1 + (rng.next_u64() % 9) as usize;
        let mut times: Vec<u64> = (1..=2 * n as u64).collect();
        for i in (1..times.len()).rev() {
            times.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        // (point of effect, operation index); a write that never takes effect has none.
        let mut points: Vec<(u64, usize)> = Vec::new();
        let mut ops = Vec::new();
        for i in 0..n {
            let (call, ret) = (
                times[2 * i].min(times[2 * i + 1]),
                times[2 * i].max(times[2 * i + 1]),
            );
            let point = 10 * call + 1 + rng.next_u64() % (10 * (ret - call) - 1);
            let write = rng.next_u64().is_multiple_of(2);
            let unknown = write && rng.next_u64().is_multiple_of(4);
            if !(unknown && rng.next_u64().is_multiple_of(2)) {
                points.push((point, i));
            }
            ops.push(Operation {
                key: 0,
                kind: if write {
                    Kind::Write(i as u64 + 1)
                } else {
                    Kind::Read(None)
                },
                call,
                ret: (!unknown).then_some(ret),
            });
        }
        points.sort_unstable();
        let mut value = None;
        for (_, i) in points {
            match ops[i].kind {
                Kind::Write(v) => value = Some(v),
                Kind::Read(_) => ops[i].kind = Kind::Read(value),
            }
        }
        if rng.next_u64().is_multiple_of(2) {
            let reads: Vec<usize> = (0..n)
                .filter(|&i| matches!(ops[i].kind, Kind::Read(_)))
                .collect();
            if !reads.is_empty() {
                let i = reads[(rng.next_u64() % reads.len() as u64) as usize];
                let v = rng.next_u64() % (n as u64 + 2);
                ops[i].kind = Kind::Read((v > 0).then_some(v));
            }
        }
        ops
    }

    #[test]
    fn zones_agree_with_the_search() {
        let mut rng = Rng::new(11);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..50_000 {
            let ops = random_history(&mut rng);
            let expected = search_register(&ops);
            assert_eq!(check_register(&ops), expected, "{ops:?}");
            if expected {
                yes += 1;
            } else {
                no += 1;
            }
        }
        // Both answers are common.
        assert!(yes > 10_000 && no > 10_000, "{yes} linearizable, {no} not");
    }
}
