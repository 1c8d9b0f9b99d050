//! Validation of names (keys, policies, identities) and of listing patterns (spec §4.1).

/// A valid name: 1..=80 bytes of `[0-9A-Za-z_-]`, no `-` first or last, and not the single `_`.
pub fn valid_name(s: &str) -> bool {
    todo!("{s}")
}

/// A valid listing pattern: like a name, but may be empty, may be `*`, and may end in `*`.
pub fn valid_pattern(s: &str) -> bool {
    todo!("{s}")
}
