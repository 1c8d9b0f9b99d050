//! Policy matching (spec §3.1): a policy is a set of allowed and a set of denied URL-path
//! patterns. A pattern ending in `*` matches every path with that prefix (crossing `/`);
//! any other pattern matches only itself; the empty pattern matches nothing. Deny wins, and
//! a path no allow pattern matches is refused.
//!
//! Upstream's unmerged stateful server called `match(path, pattern)` with the arguments
//! swapped, so only exact patterns worked (spec §3.3); here the pattern is always first.

#[cfg(feature = "alloc")]
use alloc::collections::BTreeSet;
#[cfg(feature = "alloc")]
use core::ops::Bound;

/// Does `pattern` match `s`?
pub fn matches(pattern: &str, s: &str) -> bool {
    match pattern.strip_suffix('*') {
        _ if pattern.is_empty() => false,
        Some(prefix) => s.starts_with(prefix),
        None => s == pattern,
    }
}

/// May a caller with this policy request `path`? Deny patterns are checked first.
pub fn verify<'a, A, D>(allow: A, deny: D, path: &str) -> bool
where
    A: IntoIterator<Item = &'a str>,
    D: IntoIterator<Item = &'a str>,
{
    if deny.into_iter().any(|p| matches(p, path)) {
        return false;
    }
    allow.into_iter().any(|p| matches(p, path))
}

/// Is policy `p` (allow `p_allow`, deny `p_deny`) a subset of policy `o`: does `o` allow
/// everything `p` allows? This is how a child identity's policy is checked against its parent's,
/// so it must never say yes wrongly. For every allow rule `a` of `p`:
/// - some allow rule of `o` must match every path `a` matches, and
/// - every deny rule `d` of `o` that overlaps `a` must be matched by a deny rule of `p` over the
///   whole overlap (the narrower of `a` and `d`).
///
/// Upstream's rule checks only deny rules narrower than `a`; a parent's deny rule that is
/// broader than the child's allow rule (or a prefix deny over an exact allow) slipped through,
/// letting a child reach paths its parent may not. The vectors of upstream's tests still hold.
///
/// The rule read literally compares every allow rule of `p` with every deny rule of `o` and
/// then with every deny rule of `p`: cubic, and a policy may have tens of thousands of rules
/// (a tenant allowed to create policies made one check take seconds of the event loop). Here
/// each set is indexed once (`Index`: sorted sets) and each question is a few lookups per character of
/// the pattern asked about, so the check is about linear in the size of both policies.
///
/// Without the `alloc` feature there is nothing to index with, and the rule is applied as
/// read ([`is_subset_pairwise`]); the tests check that both always agree.
pub fn is_subset<'a, PA, PD, OA, OD>(p_allow: PA, p_deny: PD, o_allow: OA, o_deny: OD) -> bool
where
    PA: IntoIterator<Item = &'a str>,
    PD: IntoIterator<Item = &'a str> + Clone,
    OA: IntoIterator<Item = &'a str> + Clone,
    OD: IntoIterator<Item = &'a str> + Clone,
{
    #[cfg(feature = "alloc")]
    return is_subset_indexed(p_allow, p_deny, o_allow, o_deny);
    #[cfg(not(feature = "alloc"))]
    return is_subset_pairwise(p_allow, p_deny, o_allow, o_deny);
}

/// [`is_subset`] as the rule reads: every allow rule of `p` against every deny rule of `o`,
/// and each overlap against every deny rule of `p`. Cubic: for small policies, and as the
/// reference the indexed form is tested (and fuzzed) against.
pub fn is_subset_pairwise<'a, PA, PD, OA, OD>(
    p_allow: PA,
    p_deny: PD,
    o_allow: OA,
    o_deny: OD,
) -> bool
where
    PA: IntoIterator<Item = &'a str>,
    PD: IntoIterator<Item = &'a str> + Clone,
    OA: IntoIterator<Item = &'a str> + Clone,
    OD: IntoIterator<Item = &'a str> + Clone,
{
    p_allow.into_iter().all(|a| {
        let covered = o_allow.clone().into_iter().any(|o| covers(o, a));
        let denies_kept = o_deny.clone().into_iter().all(|d| {
            // Two patterns overlap exactly when one covers the other; the overlap is the
            // narrower one.
            let overlap = if covers(a, d) {
                d
            } else if covers(d, a) {
                a
            } else {
                return true;
            };
            p_deny.clone().into_iter().any(|pd| covers(pd, overlap))
        });
        covered && denies_kept
    })
}

/// [`is_subset`] over indexed sets (see [`Index`]).
#[cfg(feature = "alloc")]
fn is_subset_indexed<'a>(
    p_allow: impl IntoIterator<Item = &'a str>,
    p_deny: impl IntoIterator<Item = &'a str>,
    o_allow: impl IntoIterator<Item = &'a str>,
    o_deny: impl IntoIterator<Item = &'a str>,
) -> bool {
    let p_deny = Index::new(p_deny);
    let o_allow = Index::new(o_allow);
    // A deny rule `d` of `o` that is narrower than some `a` must be covered by `p`'s deny rules
    // itself (the overlap is `d`): only those that are not matter, and they are found by `a`.
    let mut uncovered = Index::default();
    let o_deny = Index::new(o_deny.into_iter().inspect(|d| {
        if !p_deny.covers_some(d) {
            uncovered.insert(d);
        }
    }));
    p_allow.into_iter().all(|a| {
        // A deny rule broader than `a` (or `a` itself): the overlap is `a`.
        let broader_kept = !o_deny.covers_some(a) || p_deny.covers_some(a);
        o_allow.covers_some(a) && broader_kept && !uncovered.some_within(a)
    })
}

/// A set of patterns indexed for [`covers`] questions: exact patterns as they are, prefix
/// patterns (`X*`) by `X`, in sorted sets. The empty pattern matches nothing, so it covers
/// nothing but itself; every pattern covers it.
#[cfg(feature = "alloc")]
#[derive(Default)]
struct Index<'a> {
    /// Whether the set has any pattern (even the empty one).
    any: bool,
    has_empty: bool,
    exact: BTreeSet<&'a str>,
    prefixes: BTreeSet<&'a str>,
}

#[cfg(feature = "alloc")]
impl<'a> Index<'a> {
    fn new(patterns: impl IntoIterator<Item = &'a str>) -> Index<'a> {
        let mut index = Index::default();
        for p in patterns {
            index.insert(p);
        }
        index
    }

    fn insert(&mut self, pattern: &'a str) {
        self.any = true;
        if pattern.is_empty() {
            self.has_empty = true;
        } else if let Some(prefix) = pattern.strip_suffix('*') {
            self.prefixes.insert(prefix);
        } else {
            self.exact.insert(pattern);
        }
    }

    /// Does some pattern of the set cover `inner` (`covers(p, inner)` for some `p`)?
    fn covers_some(&self, inner: &str) -> bool {
        if inner.is_empty() {
            return self.any;
        }
        // An exact pattern covers only itself; a prefix pattern `Y*` covers `inner` (exact,
        // or `X*`) when `Y` begins it (begins `X`): one lookup per prefix of it.
        let body = match inner.strip_suffix('*') {
            Some(x) => x,
            None if self.exact.contains(inner) => return true,
            None => inner,
        };
        body.char_indices()
            .map(|(i, _)| i)
            .chain(core::iter::once(body.len()))
            .any(|i| self.prefixes.contains(&body[..i]))
    }

    /// Does `outer` cover some pattern of the set (`covers(outer, p)` for some `p`)?
    fn some_within(&self, outer: &str) -> bool {
        if self.has_empty {
            return true;
        }
        match outer.strip_suffix('*') {
            _ if outer.is_empty() => false,
            // `X*` covers what begins with `X`: an exact pattern that does, or a prefix
            // pattern `Y*` whose `Y` does. Such strings sort right at or after `X`.
            Some(x) => {
                let begins = |set: &BTreeSet<&str>| {
                    set.range::<str, _>((Bound::Included(x), Bound::Unbounded))
                        .next()
                        .is_some_and(|p| p.starts_with(x))
                };
                begins(&self.exact) || begins(&self.prefixes)
            }
            None => self.exact.contains(outer),
        }
    }
}

/// Does `outer` match every path `inner` matches?
pub fn covers(outer: &str, inner: &str) -> bool {
    if inner.is_empty() {
        return true; // The empty pattern matches nothing.
    }
    match (inner.strip_suffix('*'), outer.strip_suffix('*')) {
        (None, _) => matches(outer, inner),
        (Some(x), Some(y)) => x.starts_with(y),
        (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        assert!(matches("/v1/key/*", "/v1/key/create/x"));
        assert!(matches("/v1/status", "/v1/status"));
        assert!(!matches("/v1/status", "/v1/status/"));
        assert!(!matches("", ""));
        assert!(
            !matches("/v1/k*y", "/v1/key"),
            "only a trailing star is special"
        );
        assert!(matches("*", "/anything"));
    }

    /// The indexed check and the rule as read agree on random policies over a small
    /// alphabet (with a star inside and at the end, the empty pattern, a 2-byte character),
    /// where overlaps, prefixes of prefixes and duplicates are common.
    #[test]
    fn indexed_subset_agrees_with_the_pairwise_rule() {
        use alloc::string::String;
        use alloc::vec::Vec;
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        const ALPHABET: [&str; 5] = ["a", "b", "/", "*", "é"];
        let policy = |next: &mut dyn FnMut(u64) -> u64| -> Vec<String> {
            (0..next(5))
                .map(|_| (0..next(5)).map(|_| ALPHABET[next(5) as usize]).collect())
                .collect()
        };
        let (mut yes, mut no) = (0, 0);
        for round in 0..200_000 {
            let sets: Vec<Vec<String>> = (0..4).map(|_| policy(&mut next)).collect();
            let s = |i: usize| sets[i].iter().map(String::as_str);
            let pairwise = is_subset_pairwise(s(0), s(1), s(2), s(3));
            let indexed = is_subset_indexed(s(0), s(1), s(2), s(3));
            assert_eq!(
                pairwise, indexed,
                "round {round}: allow {:?} deny {:?} within allow {:?} deny {:?}",
                sets[0], sets[1], sets[2], sets[3]
            );
            if pairwise {
                yes += 1;
            } else {
                no += 1;
            }
        }
        // Both answers were asked for often (the test would be weak otherwise).
        assert!(yes > 20_000 && no > 20_000, "yes {yes}, no {no}");
    }

    #[test]
    fn broad_parent_deny_is_not_escaped() {
        // Parent allows /v1/key/* but denies everything under /v1/key/decrypt/.
        let (o_allow, o_deny) = (["/v1/key/*"], ["/v1/key/decrypt/*"]);
        // A child asking for one key's decrypt must not be a subset.
        assert!(!is_subset(["/v1/key/decrypt/k1"], [], o_allow, o_deny));
        assert!(!is_subset(["/v1/key/decrypt/k*"], [], o_allow, o_deny));
        assert!(is_subset(["/v1/key/create/k*"], [], o_allow, o_deny));
        assert!(is_subset(
            ["/v1/key/*"],
            ["/v1/key/decrypt/*"],
            o_allow,
            o_deny
        ));
    }
}
