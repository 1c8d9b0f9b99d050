//! Policy matching (spec §3.1): a policy is a set of allowed and a set of denied URL-path
//! patterns. A pattern ending in `*` matches every path with that prefix (crossing `/`);
//! any other pattern matches only itself; the empty pattern matches nothing. Deny wins, and
//! a path no allow pattern matches is refused.
//!
//! Upstream's unmerged stateful server called `match(path, pattern)` with the arguments
//! swapped, so only exact patterns worked (spec §3.3); here the pattern is always first.

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
pub fn is_subset<'a, PA, PD, OA, OD>(p_allow: PA, p_deny: PD, o_allow: OA, o_deny: OD) -> bool
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
