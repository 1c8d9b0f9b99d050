//! What listings and policy answers share: `*` prefix patterns, the `{names, continue_at}`
//! body of a listing, and pattern sets as upstream marshals them.
use std::collections::BTreeMap;

use serde::Serialize;

/// Policy and identity listings treat a trailing `*` as "prefix" (spec §4.8).
pub(super) fn prefix_of(pattern: &str) -> &str {
    pattern.strip_suffix('*').unwrap_or(pattern)
}

/// `{"pattern":{}}` maps, as upstream's Go `map[string]struct{}` marshals.
pub(super) type PatternSet = BTreeMap<String, BTreeMap<String, ()>>;

pub(super) fn pattern_set(patterns: &[String]) -> PatternSet {
    patterns
        .iter()
        .map(|p| (p.clone(), BTreeMap::new()))
        .collect()
}

/// The body of a listing (`continue_at` is always empty: everything fits in one answer).
#[derive(Serialize)]
pub(super) struct NameList {
    pub names: Vec<String>,
    pub continue_at: &'static str,
}
