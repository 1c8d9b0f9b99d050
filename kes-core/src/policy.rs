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
/// everything `p` allows? Every allow rule of `p` must be covered by an allow rule of `o`, and
/// for every deny rule of `o` that cuts into one of `p`'s allow rules, `p` must deny at least
/// as much. This is how a child identity's policy is checked against its parent's.
pub fn is_subset<'a, PA, PD, OA, OD>(p_allow: PA, p_deny: PD, o_allow: OA, o_deny: OD) -> bool
where
    PA: IntoIterator<Item = &'a str>,
    PD: IntoIterator<Item = &'a str> + Clone,
    OA: IntoIterator<Item = &'a str> + Clone,
    OD: IntoIterator<Item = &'a str> + Clone,
{
    p_allow.into_iter().all(|a| {
        let covered = o_allow.clone().into_iter().any(|o| matches(o, a));
        let denies_kept = o_deny
            .clone()
            .into_iter()
            .filter(|d| matches(a, d))
            .all(|d| p_deny.clone().into_iter().any(|pd| matches(pd, d)));
        covered && denies_kept
    })
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
}
