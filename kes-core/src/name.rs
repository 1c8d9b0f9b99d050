//! Validation of names (keys, policies, identities) and of listing patterns (spec §4.1).
//!
//! Both checks work on bytes: every accepted character is ASCII, so any byte outside
//! `[0-9A-Za-z_-]` (including every byte of a multi-byte UTF-8 character) rejects the
//! string, and lengths are byte lengths, as upstream measures them.
//!
//! | input        | name | pattern |
//! |--------------|------|---------|
//! | `""`         | no   | yes     |
//! | `"_"`        | no   | no      |
//! | `"*"`        | no   | yes     |
//! | `"my-key"`   | yes  | yes     |
//! | `"my*"`      | no   | yes     |
//! | `"app-"`     | no   | no      |
//! | `"*-*"`      | no   | no      |
//! | 81 bytes     | no   | no      |

/// Longest accepted name or pattern, in bytes.
pub const MAX_LEN: usize = 80;

/// A valid name: 1..=80 bytes of `[0-9A-Za-z_-]`, no `-` first or last, and not the single `_`.
pub fn valid_name(s: &str) -> bool {
    if s.is_empty() || s == "_" || s.len() > MAX_LEN {
        return false;
    }
    let last = s.len() - 1;
    s.bytes().enumerate().all(|(i, b)| match b {
        b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' | b'_' => true,
        b'-' => i > 0 && i < last,
        _ => false,
    })
}

/// A valid listing pattern: like a name, but may be empty, may be `*`, and may end in `*`.
///
/// `*` is allowed only as the last character, and `-` is still refused first or last, so
/// `a-*` is valid while `app-` and `-*` are not.
pub fn valid_pattern(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    // The empty pattern is deliberately valid: upstream never checks for it and lists everything.
    if s == "_" || s.len() > MAX_LEN {
        return false;
    }
    let last = s.len().saturating_sub(1);
    s.bytes().enumerate().all(|(i, b)| match b {
        b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' | b'_' => true,
        b'-' => i > 0 && i < last,
        b'*' => i == last,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a_times(n: usize) -> &'static str {
        static A: [u8; 81] = [b'a'; 81];
        core::str::from_utf8(&A[..n]).unwrap()
    }

    #[test]
    fn edges() {
        assert!(valid_name(a_times(80)));
        assert!(!valid_name(a_times(81)));
        assert!(!valid_name("-a"));
        assert!(!valid_name("a-"));
        assert!(!valid_name("-"));
        assert!(valid_name("__"));
        assert!(valid_pattern(""));
        assert!(valid_pattern("a-*"));
        assert!(!valid_pattern("-*"));
        assert!(!valid_pattern("-"));
        assert!(!valid_pattern("app-"));
        assert!(!valid_pattern("**"));
        assert!(valid_pattern("_*"));
        assert!(valid_pattern(a_times(80)));
        assert!(!valid_pattern(a_times(81)));
    }
}
